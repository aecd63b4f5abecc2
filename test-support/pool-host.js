'use strict'
// One host of a shared-queue pool, as its own Node process, driven over IPC by a
// test or benchmark (`child_process.fork`). Argument: JSON
// `{ url, name, host, capacity, leaseMs, pollIntervalMs, agent }`, or `spawner` (its
// options) in place of `agent`.
//
// In:  { op: 'request', requestId, priority, config }   -> 'queued' | 'rejected'
//      { op: 'cancel', requestId }                        -> 'cancel-result'
//      { op: 'status' }                                   -> 'status'
//      { op: 'drain', timeoutMs } | { op: 'close' }       -> 'drained' | 'closed'
//      { op: 'burst', count, prefix, config }             -> 'burst-done' { ms }
//      { op: 'block', ms }                                -> 'unblocked' (JavaScript's thread busy that long)
// Out: 'ready', 'queued', 'rejected', 'allocated', 'completed', 'failed', the pool's
//      queue events, and 'active' (this host's live sessions, on every change), with
//      the time (`at`, ms since the epoch) where it matters.
// It exits when the parent disconnects.

const { ClaudeSessionSpawner, SessionPool } = require('..')

const options = JSON.parse(process.argv[2])
// The fake agent running the steps in each request's FAKE_AGENT_STEPS, unless told otherwise.
const spawner = new ClaudeSessionSpawner(options.spawner ?? { claudePath: options.agent, protocol: 'text', extraArgs: ['env-steps'] })
const pool = new SessionPool(spawner, {
  maxConcurrentSessions: options.capacity,
  defaultSessionTimeout: 0,
  maxQueueSize: options.maxQueueSize ?? 10_000,
  queue: {
    kind: 'redis',
    url: options.url,
    name: options.name,
    host: options.host,
    leaseMs: options.leaseMs,
    pollIntervalMs: options.pollIntervalMs,
    connectTimeoutMs: options.connectTimeoutMs,
    responseTimeoutMs: options.responseTimeoutMs,
  },
})

function send(message) {
  if (process.connected) process.send(message)
}

let active = 0
spawner.on('session-spawned', ({ sessionId }) => send({ ev: 'active', n: ++active, sessionId, change: 'spawned', at: Date.now() }))
spawner.on('session-ended', ({ sessionId, status }) => send({ ev: 'active', n: --active, sessionId, change: 'ended', state: status.state, at: Date.now() }))
for (const name of ['queue-unavailable', 'queue-reconnected', 'lease-lost', 'queue-error']) {
  pool.on(name, (e) => send({ ev: name, detail: e.error ? `${e.error.code}: ${e.error.message}` : e.requestId ?? null, at: Date.now() }))
}

const dateless = (status) => ({ state: status.state, sessionId: status.sessionId, exitCode: status.exitCode ?? null })

process.on('message', (m) => {
  switch (m.op) {
    case 'request': {
      const request = {
        requestId: m.requestId,
        priority: m.priority,
        queuedAt: new Date(),
        config: m.config,
        onAllocated: (sessionId) => send({ ev: 'allocated', requestId: m.requestId, sessionId }),
        onCompleted: (status) => send({ ev: 'completed', requestId: m.requestId, status: dateless(status) }),
        onFailed: (error) => send({ ev: 'failed', requestId: m.requestId, code: error.code, message: error.message }),
      }
      pool.on('request-queued', function queued(e) {
        if (e.requestId !== m.requestId) return
        pool.off('request-queued', queued)
        send({ ev: 'queued', requestId: m.requestId, position: e.position })
      })
      pool.requestSession(request).then(
        (result) => send({ ev: 'resolved', requestId: m.requestId, sessionId: result.sessionId, host: result.host }),
        (error) => send({ ev: 'rejected', requestId: m.requestId, code: error.code, message: error.message, type: error.constructor.name }),
      )
      break
    }
    case 'burst': {
      // `count` requests at once, all from here; reports when the last has completed.
      const started = process.hrtime.bigint()
      let left = m.count
      for (let i = 0; i < m.count; i++) {
        pool
          .requestSession({
            requestId: `${m.prefix}-${i}`,
            priority: ['critical', 'high', 'medium', 'low'][i % 4],
            queuedAt: new Date(),
            config: m.config,
            onCompleted: () => {
              if (--left === 0) send({ ev: 'burst-done', ms: Number(process.hrtime.bigint() - started) / 1e6 })
            },
            onFailed: (error) => send({ ev: 'burst-failed', requestId: `${m.prefix}-${i}`, message: error.message }),
          })
          .catch(() => {})
      }
      break
    }
    case 'cancel':
      pool.cancelRequestAsync(m.requestId).then(
        (result) => send({ ev: 'cancel-result', requestId: m.requestId, result }),
        (error) => send({ ev: 'cancel-result', requestId: m.requestId, error: error.message }),
      )
      break
    case 'status':
      pool.getPoolStatusAsync().then((s) => send({ ev: 'status', status: { ...s, activeSessions: s.activeSessions.length } }))
      break
    case 'drain':
      pool.drain(m.timeoutMs).then(() => send({ ev: 'drained' }))
      break
    case 'close':
      pool.close().then(() => send({ ev: 'closed' }))
      break
    case 'block': {
      // A long synchronous task: this host's leases must be kept without JavaScript.
      const until = Date.now() + m.ms
      while (Date.now() < until) {
        // busy
      }
      send({ ev: 'unblocked', at: Date.now() })
      break
    }
  }
})
process.on('disconnect', () => {
  pool.close().finally(() => process.exit(0))
})

send({ ev: 'ready', host: pool.host })
