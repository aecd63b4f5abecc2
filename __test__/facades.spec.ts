// The JavaScript classes are facades over the native core: a listener that throws,
// on any event of any class, is reported the way Node reports one (an uncaught
// exception, which daemons handle) and changes no outcome, count, slot or promise;
// and a shared-queue host keeps its leases while its JavaScript thread is blocked.
// Each workload runs in its own Node process with an `uncaughtException` handler, as
// a daemon has, and must exit by itself.
import * as fs from 'node:fs'
import * as path from 'node:path'

import { FAKE_AGENT, makeConfig, runNode, tempDir } from './support'

const { RedisServer } = require('../test-support/redis-server')
const { startHosts, watchQueue } = require('../test-support/hosts')

jest.setTimeout(90_000)

const ROOT = JSON.stringify(path.join(__dirname, '..'))

/** The top of a workload script: the package, the daemon's handler, throwing listeners. */
function prelude(dir: string): string {
  return `
const { ClaudeSessionSpawner, SessionPool, SessionRecoveryManager } = require(${ROOT})
const uncaught = []
process.on('uncaughtException', (error) => {
  uncaught.push(error.message)
  // Only the listeners' and callbacks' own throws are expected.
  if (!/^listener of |throws$/.test(error.message)) console.error(error.stack)
})
/** A listener on each event that throws, before any other listener. */
function throwing(emitter, names) {
  for (const name of names) emitter.on(name, () => { throw new Error('listener of ' + name) })
}
const base = ${JSON.stringify(makeConfig(dir))}
// JSON has no RegExp: the charter's pattern again, as the daemon gives it.
base.charter.constraints.forbiddenPatterns = [/secret/i]
const config = (steps) => ({ ...base, environmentVariables: { FAKE_AGENT_STEPS: steps.join(';') } })
const crashOnce = (name) => ['exit-if-exists:${dir}/' + name, 'touch:${dir}/' + name, 'signal:SEGV']
/** Resolves once check() holds (polled: the events that would say so throw). */
function until(check) {
  return new Promise((resolve) => {
    const timer = setInterval(() => { if (check()) { clearInterval(timer); resolve() } }, 10)
  })
}
const spawner = new ClaudeSessionSpawner({ claudePath: ${JSON.stringify(FAKE_AGENT)}, protocol: 'text', extraArgs: ['env-steps'] })
throwing(spawner, ['session-spawned', 'session-output', 'session-ended', 'session-timeout'])
/** requestId -> how it settled, in order: each must settle exactly once. */
const settled = {}
const note = (id, what) => (settled[id] ??= []).push(what)
function request(pool, requestId, steps, extra = {}) {
  return pool.requestSession({
    requestId, priority: 'medium', queuedAt: new Date(), config: config(steps),
    onAllocated: () => { throw new Error('onAllocated throws') },
    onCompleted: (status) => note(requestId, 'completed ' + status.state),
    onFailed: (error) => note(requestId, 'failed ' + error.code),
    ...extra,
  }).then(() => note(requestId, 'allocated'), (error) => note(requestId, 'rejected ' + error.code))
}
const POOL_EVENTS = ['session-allocated', 'session-released', 'request-queued', 'request-cancelled', 'session-recovering',
  'pool-draining', 'pool-drained', 'pool-throttled', 'pool-resumed', 'callback-error', 'queue-unavailable',
  'queue-reconnected', 'lease-lost', 'queue-error', 'queue-lagged']
`
}

function script(dir: string, body: string): string {
  const file = path.join(dir, 'workload.js')
  fs.writeFileSync(file, `${prelude(dir)}\n;(async () => {\n${body}\n})()`)
  return file
}

function outcome(run: { stdout: string; stderr: string; code: number | null }) {
  const line = run.stdout.split('\n').find((l) => l.startsWith('{'))
  if (!line) throw new Error(`no outcome; exit ${run.code}; output: ${run.stdout}${run.stderr}`)
  return JSON.parse(line)
}

test('listeners that throw on every event of the spawner, the pool and the recovery manager change nothing', async () => {
  const dir = tempDir()
  const file = script(
    dir,
    `
const pool = new SessionPool(spawner, { maxConcurrentSessions: 2, defaultSessionTimeout: 0, maxQueueSize: 100, maxRequestAttempts: 2 })
throwing(pool, POOL_EVENTS)
const manager = new SessionRecoveryManager(spawner, { retryDelay: 10, saveCrashDumps: false, maxRetries: 2 })
throwing(manager, ['crash-detected', 'crash-analyzed', 'recovery-attempt', 'recovery-respawned', 'recovery-succeeded',
  'recovery-attempt-failed', 'recovery-failed', 'recovery-deferred', 'recovery-throttled', 'recovery-abandoned'])
const ids = []
for (let i = 0; i < 9; i++) {
  const steps = i % 3 === 0 ? crashOnce('pooled-' + i) : i % 3 === 1 ? ['sleep:20', 'exit:0'] : ['exit:3']
  ids.push('r' + i)
  request(pool, 'r' + i, steps)
}
request(pool, 'doomed', ['exit:0'])
const cancelled = pool.cancelRequest('doomed')
// Two sessions outside the pool crash once; the manager brings them back.
for (const name of ['direct-a', 'direct-b']) await spawner.spawnSession(config(crashOnce(name)))
await until(() => ids.every((id) => (settled[id] ?? []).some((s) => s.startsWith('completed') || s.startsWith('failed'))))
await until(() => manager.getRecoveryStats().successfulRecoveries === 2)
await pool.drain(1000)
const status = pool.getPoolStatus()
console.log(JSON.stringify({ settled, cancelled, active: status.activeCount, queued: status.queuedCount,
  stats: manager.getRecoveryStats(), live: spawner.getActiveSessions().filter((s) => s.state === 'running').length, uncaught }))
`,
  )
  const run = await runNode(file, 60_000)
  expect(run.stderr).toBe('')
  expect(run.code).toBe(0)
  const out = outcome(run)
  // Every request settled exactly once, with the outcome its steps call for.
  for (let i = 0; i < 9; i++) {
    const expected = i % 3 === 2 ? 'completed failed' : 'completed completed'
    expect(out.settled[`r${i}`]).toEqual(['allocated', expected])
  }
  expect(out.cancelled).toBe(true)
  expect(out.settled.doomed).toEqual(['failed ERR_REQUEST_CANCELLED', 'rejected ERR_REQUEST_CANCELLED'])
  expect([out.active, out.queued, out.live]).toEqual([0, 0, 0])
  // The pool retried its own crashes; the manager recovered the two others and deferred the pool's.
  expect(out.stats).toMatchObject({ totalCrashes: 5, successfulRecoveries: 2, totalRecoveryAttempts: 2 })
  // The listeners did throw, and each throw was reported as an uncaught exception.
  for (const name of ['session-spawned', 'session-ended', 'session-allocated', 'session-released', 'request-queued',
    'session-recovering', 'request-cancelled', 'pool-draining', 'pool-drained', 'crash-detected', 'recovery-succeeded',
    'recovery-deferred', 'callback-error']) {
    expect(out.uncaught).toContain(`listener of ${name}`)
  }
})

describe('on a shared queue', () => {
  let redis: any
  beforeAll(async () => {
    redis = await RedisServer.start()
  })
  afterAll(async () => {
    await redis?.stop()
  })

  test('listeners that throw on every event of a shared-queue pool change nothing either', async () => {
    const dir = tempDir()
    const file = script(
      dir,
      `
const pool = new SessionPool(spawner, { maxConcurrentSessions: 2, defaultSessionTimeout: 0, maxQueueSize: 100, maxRequestAttempts: 2,
  queue: { kind: 'redis', url: ${JSON.stringify(redis.url)}, name: 'throwing-${process.pid}', leaseMs: 2000, pollIntervalMs: 100 } })
throwing(pool, POOL_EVENTS)
const ids = []
for (let i = 0; i < 8; i++) {
  const steps = i % 2 === 0 ? crashOnce('shared-' + i) : ['sleep:10', 'exit:0']
  ids.push('s' + i)
  request(pool, 's' + i, steps)
}
await until(() => ids.every((id) => (settled[id] ?? []).some((s) => s.startsWith('completed') || s.startsWith('failed'))))
const status = await pool.getPoolStatusAsync()
await pool.close()
console.log(JSON.stringify({ settled, active: status.activeCount, queued: status.queuedCount, leased: status.shared.leased, uncaught }))
`,
    )
    const run = await runNode(file, 60_000)
    expect(run.stderr).toBe('')
    expect(run.code).toBe(0)
    const out = outcome(run)
    for (let i = 0; i < 8; i++) expect(out.settled[`s${i}`]).toEqual(['allocated', 'completed completed'])
    expect([out.active, out.queued, out.leased]).toEqual([0, 0, 0])
    for (const name of ['session-allocated', 'session-released', 'request-queued', 'session-recovering', 'pool-draining', 'pool-drained']) {
      expect(out.uncaught).toContain(`listener of ${name}`)
    }
  })

  test("a host whose JavaScript thread is blocked for three lease periods keeps its lease: no other host starts its request, which completes once", async () => {
    const name = `blocked-${process.pid}`
    const dir = tempDir()
    const watcher = await watchQueue(redis.url, name)
    const options = { url: redis.url, agent: FAKE_AGENT, name, capacity: 1, leaseMs: 1000, pollIntervalMs: 100 }
    const [blocked] = await startHosts(1, { ...options, hostPrefix: `${name}-blocked` })
    let other: any
    try {
      const config = makeConfig(dir, { environmentVariables: { FAKE_AGENT_STEPS: 'sleep:2500;exit:0' } })
      blocked.send({ op: 'request', requestId: 'held', priority: 'high', config })
      await watcher.until('held to start', () => watcher.events.some((e: any) => e.name === 'started' && e.id === 'held'))
      const runner = watcher.events.find((e: any) => e.name === 'started' && e.id === 'held').host
      expect(runner).toBe(blocked.name)
      // Idle and polling: it would take the request if the lease lapsed.
      ;[other] = await startHosts(1, { ...options, hostPrefix: `${name}-other` })
      blocked.send({ op: 'block', ms: 3500 })
      await blocked.waitFor('the block to end', (m: any) => m.ev === 'unblocked', 30_000)
      await watcher.until('held to complete', () => watcher.events.some((e: any) => e.name === 'completed' && e.id === 'held'))
      const mine = watcher.events.filter((e: any) => e.id === 'held')
      expect(mine.filter((e: any) => e.name === 'started').map((e: any) => e.host)).toEqual([runner])
      expect(mine.filter((e: any) => e.name === 'completed').map((e: any) => e.host)).toEqual([runner])
      expect(mine.some((e: any) => e.name === 'requeued')).toBe(false)
      // The requester hears of it once its thread is free again.
      await blocked.waitFor('held to complete on the requester', (m: any) => m.ev === 'completed' && m.requestId === 'held')
    } finally {
      watcher.close()
      for (const h of [blocked, other]) await h?.stop()
    }
  })
})
