'use strict'
// Enqueueing behind a full pool, and one getPoolStatus over the whole queue.
// node --expose-gc benches/pool-queue.js <native|linear> <requests>
//
// `native` is this package's SessionPool: capacity 1, held by a real agent process
// that waits, so every request queues. `linear` is the TypeScript module's algorithm
// as the pool issue describes it, written out here to be measured in the same run:
// a request is inserted by scanning the queue for its place, and each queued
// request's estimated wait is found with another scan of the queue.
const { EventEmitter } = require('node:events')
const fs = require('node:fs')
const { AGENT, workDir, config, spawnerPackage } = require('./common')

const PRIORITIES = ['low', 'medium', 'critical', 'high']
const WEIGHTS = { critical: 4, high: 3, medium: 2, low: 1 }
const MEAN_MS = 60_000

/** The linear-scan queue, with the same work per request as the native path does. */
class LinearPool extends EventEmitter {
  queue = []
  active = [{ sessionId: 'busy' }]
  requestSession(request) {
    return new Promise((resolve, reject) => {
      const entry = { request, resolve, reject }
      const weight = WEIGHTS[request.priority]
      let at = this.queue.findIndex((q) => WEIGHTS[q.request.priority] < weight)
      if (at === -1) at = this.queue.length
      this.queue.splice(at, 0, entry)
      this.emit('request-queued', { requestId: request.requestId, position: at + 1, queueLength: this.queue.length })
    })
  }
  getPoolStatus() {
    const queuedRequests = this.queue.map((q) => ({
      requestId: q.request.requestId,
      priority: q.request.priority,
      queuedAt: q.request.queuedAt,
      estimatedWaitTime: (this.queue.findIndex((other) => other === q) + 1) * MEAN_MS,
    }))
    return { capacity: 1, activeCount: 1, queuedCount: queuedRequests.length, queuedRequests }
  }
}

async function main() {
  const [variant, countText] = process.argv.slice(2)
  const count = Number(countText)
  const dir = workDir('pool')
  const cfg = config(dir)
  let pool
  let spawner
  if (variant === 'native') {
    const { default: ClaudeSessionSpawner, SessionPool } = spawnerPackage()
    spawner = new ClaudeSessionSpawner({ claudePath: AGENT, protocol: 'text', extraArgs: ['drain-stdin', 'hang'] })
    pool = new SessionPool(spawner, { maxConcurrentSessions: 1, defaultSessionTimeout: 0, maxQueueSize: count })
    await pool.requestSession({ requestId: 'busy', config: cfg, priority: 'low', queuedAt: new Date() })
  } else if (variant === 'linear') {
    pool = new LinearPool()
  } else {
    throw new Error(`unknown variant ${variant}`)
  }
  // A daemon listens to the pool; the listener is part of the cost of queueing.
  let queuedEvents = 0
  pool.on('request-queued', () => queuedEvents++)
  const requests = Array.from({ length: count }, (_, i) => ({
    requestId: `request-${i}`,
    config: cfg,
    priority: PRIORITIES[i % PRIORITIES.length],
    queuedAt: new Date(),
  }))
  const pending = new Array(count)
  // Each timed step starts from a collected heap, so it pays for its own garbage
  // rather than for what the step before left behind (run with --expose-gc).
  global.gc?.()
  const started = process.hrtime.bigint()
  for (let i = 0; i < count; i++) pending[i] = pool.requestSession(requests[i])
  const enqueued = process.hrtime.bigint()
  global.gc?.()
  const statusStarted = process.hrtime.bigint()
  const status = pool.getPoolStatus()
  const done = process.hrtime.bigint()
  if (status.queuedRequests.length !== count || queuedEvents !== count) {
    throw new Error(`queued ${status.queuedRequests.length} of ${count}, ${queuedEvents} events`)
  }
  for (const p of pending) p.catch(() => {})
  if (variant === 'native') {
    await pool.drain(0)
  }
  fs.rmSync(dir, { recursive: true, force: true })
  console.log(
    JSON.stringify({
      variant,
      requests: count,
      enqueueMs: Number(enqueued - started) / 1e6,
      statusMs: Number(done - statusStarted) / 1e6,
    }),
  )
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
