// SessionPool on a queue shared through a real redis-server: three pools as three
// separate Node processes (test-support/pool-host.js) running the fake agent. Every
// request completes exactly once, each host keeps to its capacity, priority holds
// across hosts, a SIGKILLed host's requests run elsewhere after its lease, a Redis
// restart loses nothing, and a cancel reaches the host that runs the request. The
// test also watches the queue's own events (the internal SharedQueue) as the record
// of who took what, in which order.
import ClaudeSessionSpawner, { SessionPool, type PooledSessionRequest } from 'claude-session-spawner'

import { FAKE_AGENT, makeConfig, runNode, tempDir, within } from './support'

const { RedisServer } = require('../test-support/redis-server')
const { startHosts, watchQueue } = require('../test-support/hosts')
const { SharedQueue } = require('../lib/shared-queue')

type Priority = PooledSessionRequest['priority']
const PRIORITIES: Priority[] = ['critical', 'high', 'medium', 'low']

jest.setTimeout(90_000)

let redis: any
beforeAll(async () => {
  redis = await RedisServer.start()
})
afterAll(async () => {
  await redis?.stop()
})

let names = 0
function freshName(): string {
  names += 1
  return `pool-${process.pid}-${names}`
}

const started: any[] = []
afterEach(async () => {
  // A host that does not exit once disconnected fails the test, and is killed.
  for (const h of started.splice(0)) await within(h.stop(), `host ${h.name} to exit`).catch(async (e) => {
    await h.kill()
    throw e
  })
})

async function hosts(count: number, options: Record<string, unknown>) {
  const list = await startHosts(count, { url: redis.url, agent: FAKE_AGENT, leaseMs: 2000, pollIntervalMs: 200, ...options })
  started.push(...list)
  return list
}

type Watcher = {
  events: Array<{ name: string; [key: string]: any }>
  until(what: string, check: () => boolean, ms?: number): Promise<void>
  close(): void
}

/** The queue's own events, in the order Redis recorded them. */
function watch(name: string): Promise<Watcher> {
  return watchQueue(redis.url, name)
}

function config(dir: string, steps: string[]) {
  return makeConfig(dir, { environmentVariables: { FAKE_AGENT_STEPS: steps.join(';') } })
}

/** Sends a request to `host` and waits until it is in the shared queue. */
async function submit(host: any, requestId: string, priority: Priority, cfg: unknown) {
  host.send({ op: 'request', requestId, priority, config: cfg })
  const m = await host.waitFor(`${requestId} queued`, (x: any) => x.requestId === requestId && (x.ev === 'queued' || x.ev === 'rejected'))
  if (m.ev === 'rejected') throw new Error(`${requestId} rejected: ${m.code} ${m.message}`)
  return m
}

function count<T>(items: T[], key: (t: T) => string): Map<string, number> {
  const m = new Map<string, number>()
  for (const item of items) m.set(key(item), (m.get(key(item)) ?? 0) + 1)
  return m
}

test('60 requests of mixed priority from three hosts all complete exactly once, each host within its capacity', async () => {
  const name = freshName()
  const dir = tempDir()
  const watcher = await watch(name)
  const list = await hosts(3, { name, capacities: [2, 3, 4] })
  const ids: string[] = []
  await Promise.all(
    list.map(async (host: any, h: number) => {
      for (let i = 0; i < 20; i++) {
        const id = `r-${h}-${i}`
        ids.push(id)
        await submit(host, id, PRIORITIES[(i + h) % 4], config(dir, [`sleep:${20 + ((i * 7) % 60)}`, 'exit:0']))
      }
    }),
  )
  await watcher.until('60 completions', () => watcher.events.filter((e) => e.name === 'completed').length >= 60)
  // The requesting host saw each of its own requests complete, once.
  for (const [h, host] of list.entries()) {
    const own = ids.filter((id) => id.startsWith(`r-${h}-`))
    for (const id of own) await host.waitFor(`${id} completed`, (m: any) => m.ev === 'completed' && m.requestId === id)
    const completions = count(host.messages.filter((m: any) => m.ev === 'completed'), (m: any) => m.requestId)
    expect([...completions.values()].every((n) => n === 1)).toBe(true)
    expect(completions.size).toBe(20)
    expect(host.maxActive()).toBeLessThanOrEqual(host.capacity)
  }
  const completed = count(watcher.events.filter((e) => e.name === 'completed'), (e) => e.id)
  expect(completed.size).toBe(60)
  // Some ran on another host than the one that asked, whose callbacks still ran (above).
  const ranElsewhere = watcher.events.filter((e) => e.name === 'completed' && !e.id.startsWith(`r-${e.host.slice(-1)}-`))
  expect(ranElsewhere.length).toBeGreaterThan(0)
  expect([...completed.values()].every((n) => n === 1)).toBe(true)
  expect(new Set(ids)).toEqual(new Set(completed.keys()))
  // Work went to every host, and each run is a session on the host that took it.
  const takers = new Set(watcher.events.filter((e) => e.name === 'allocated').map((e) => e.host))
  expect(takers).toEqual(new Set(list.map((h: any) => h.name)))
  expect(watcher.events.filter((e) => e.name === 'allocated').length).toBe(60)
  expect(watcher.events.some((e) => e.name === 'failed' || e.name === 'requeued')).toBe(false)
  watcher.close()
})

test('priority order holds across hosts: with every slot busy, the queue is served critical first, first come first served within a priority', async () => {
  const name = freshName()
  const dir = tempDir()
  const watcher = await watch(name)
  const list = await hosts(3, { name, capacity: 1 })
  const gate = `${dir}/open`
  // Blockers hold the three slots until the gate file exists.
  for (const [h, host] of list.entries()) {
    await submit(host, `blocker-${h}`, 'low', config(dir, [`wait-file:${gate}`, 'exit:0']))
  }
  await watcher.until('the blockers to start', () => watcher.events.filter((e) => e.name === 'started').length === 3)
  const order: Array<{ id: string; priority: Priority }> = []
  for (let i = 0; i < 16; i++) {
    const priority = PRIORITIES[(i * 3) % 4]
    const id = `p-${i}-${priority}`
    order.push({ id, priority })
    await submit(list[i % 3], id, priority, config(dir, ['sleep:10', 'exit:0']))
  }
  require('node:fs').writeFileSync(gate, '')
  await watcher.until('all to complete', () => watcher.events.filter((e) => e.name === 'completed').length === 19)
  const taken = watcher.events.filter((e) => e.name === 'allocated' && e.id.startsWith('p-')).map((e) => e.id)
  const expected = PRIORITIES.flatMap((p) => order.filter((o) => o.priority === p).map((o) => o.id))
  expect(taken).toEqual(expected)
  watcher.close()
})

test('a SIGKILLed host: its requests run again on the others once its lease lapses, and none completes twice', async () => {
  const name = freshName()
  const dir = tempDir()
  const watcher = await watch(name)
  const list = await hosts(3, { name, capacity: 2, leaseMs: 1500 })
  const [a, b, c] = list
  const ids: string[] = []
  for (let i = 0; i < 18; i++) {
    const id = `k-${i}`
    ids.push(id)
    await submit(list[i % 3], id, PRIORITIES[i % 4], config(dir, ['sleep:400', 'exit:0']))
  }
  // Kill b while it runs sessions.
  await b.waitFor('b to run a session', (m: any) => m.ev === 'active' && m.n > 0)
  const runningOnB = () => {
    const startedOnB = watcher.events.filter((e) => e.name === 'started' && e.host === b.name).map((e) => e.id)
    const done = new Set(watcher.events.filter((e) => e.name === 'completed').map((e) => e.id))
    return startedOnB.filter((id) => !done.has(id))
  }
  await watcher.until('b to hold a started request', () => runningOnB().length > 0)
  const orphaned = runningOnB()
  await b.kill()
  await watcher.until('18 completions', () => watcher.events.filter((e) => e.name === 'completed').length >= 18, 60_000)
  const completed = watcher.events.filter((e) => e.name === 'completed')
  const perId = count(completed, (e) => e.id)
  expect(new Set(perId.keys())).toEqual(new Set(ids))
  expect([...perId.values()].every((n) => n === 1)).toBe(true)
  for (const id of orphaned) {
    const done = completed.find((e) => e.id === id)!
    expect([a.name, c.name]).toContain(done.host)
    expect(watcher.events.some((e) => e.name === 'requeued' && e.id === id && e.attempt === 2)).toBe(true)
  }
  expect(completed.some((e) => e.host === b.name && orphaned.includes(e.id))).toBe(false)
  watcher.close()
})

test('Redis restarted mid-run: the hosts reconnect and no request is lost', async () => {
  const name = freshName()
  const dir = tempDir()
  const list = await hosts(3, { name, capacity: 2, leaseMs: 5000 })
  const ids: string[] = []
  for (let i = 0; i < 24; i++) {
    const id = `x-${i}`
    ids.push(id)
    await submit(list[i % 3], id, PRIORITIES[i % 4], config(dir, ['sleep:150', 'exit:0']))
  }
  await list[0].waitFor('a session to run', (m: any) => m.ev === 'active' && m.n > 0)
  await redis.kill()
  // While it is down: new requests reject, naming the URL; running sessions go on.
  await list[1].waitFor('the outage to be noticed', (m: any) => m.ev === 'queue-unavailable')
  list[1].send({ op: 'request', requestId: 'while-down', priority: 'high', config: config(dir, ['exit:0']) })
  const refused = await list[1].waitFor('while-down to reject', (m: any) => m.requestId === 'while-down' && m.ev === 'rejected')
  expect(refused.code).toBe('ERR_QUEUE_UNAVAILABLE')
  expect(refused.message).toContain(redis.url)
  await redis.revive()
  for (const host of list) await host.waitFor('the reconnection', (m: any) => m.ev === 'queue-reconnected')
  for (const [h, host] of list.entries()) {
    for (const id of ids.filter((_, i) => i % 3 === h)) {
      await host.waitFor(`${id} completed`, (m: any) => m.requestId === id && (m.ev === 'completed' || m.ev === 'failed'), 60_000)
    }
    expect(host.messages.filter((m: any) => m.ev === 'failed')).toEqual([])
    expect(count(host.messages.filter((m: any) => m.ev === 'completed'), (m: any) => m.requestId).size).toBe(8)
    expect(host.maxActive()).toBeLessThanOrEqual(2)
    // No session was stopped for the outage: each ran to its end.
    const ends = host.messages.filter((m: any) => m.ev === 'active' && m.change === 'ended')
    expect(ends.every((m: any) => m.state === 'completed')).toBe(true)
  }
  const snapshot = await (await SharedQueue.connectRedis(redis.url, name)).snapshot()
  expect(snapshot.queued).toEqual([])
  expect(snapshot.leased).toBe(0)
})

test('a cancel from another host stops the request where it runs, and the requester hears of it', async () => {
  const name = freshName()
  const dir = tempDir()
  const watcher = await watch(name)
  const list = await hosts(3, { name, capacity: 1 })
  await submit(list[0], 'long', 'high', config(dir, ['hang']))
  await watcher.until('long to start', () => watcher.events.some((e) => e.name === 'started' && e.id === 'long'))
  const runner = watcher.events.find((e) => e.name === 'started' && e.id === 'long')!.host
  const canceller = list.find((h: any) => h.name !== runner && h !== list[0]) ?? list.find((h: any) => h.name !== runner)
  canceller.send({ op: 'cancel', requestId: 'long' })
  expect(await canceller.waitFor('the cancel result', (m: any) => m.ev === 'cancel-result')).toMatchObject({ result: true })
  const failed = await list[0].waitFor('long to fail', (m: any) => m.ev === 'failed' && m.requestId === 'long')
  expect(failed).toMatchObject({ code: 'ERR_REQUEST_CANCELLED', message: 'Request cancelled' })
  const host = list.find((h: any) => h.name === runner)
  await host.waitFor('its session to end terminated', (m: any) => m.ev === 'active' && m.change === 'ended')
  expect(host.messages.find((m: any) => m.ev === 'active' && m.change === 'ended').state).toBe('terminated')
  expect(watcher.events.filter((e) => e.name === 'completed')).toEqual([])
  // An unknown id is not cancelled anywhere.
  canceller.send({ op: 'cancel', requestId: 'nobody' })
  expect(await canceller.waitFor('the second result', (m: any) => m.ev === 'cancel-result' && m.requestId === 'nobody')).toMatchObject({ result: false })
  watcher.close()
})

test('draining a host hands its queued and running work to the others instead of dropping it', async () => {
  const name = freshName()
  const dir = tempDir()
  const watcher = await watch(name)
  const [a, b] = await hosts(2, { name, capacity: 1 })
  await submit(a, 'held', 'high', config(dir, ['sleep:300', 'exit:0']))
  await watcher.until('held to start', () => watcher.events.some((e) => e.name === 'started' && e.id === 'held'))
  const runner = watcher.events.find((e) => e.name === 'started' && e.id === 'held')!.host
  const [draining, other] = runner === a.name ? [a, b] : [b, a]
  // Occupy the other host so the next request can only queue.
  await submit(other, 'busy', 'high', config(dir, ['sleep:600', 'exit:0']))
  await submit(draining, 'queued', 'medium', config(dir, ['sleep:10', 'exit:0']))
  draining.send({ op: 'drain', timeoutMs: 0 })
  await draining.waitFor('drained', (m: any) => m.ev === 'drained')
  await watcher.until('all three to complete', () => watcher.events.filter((e) => e.name === 'completed').length === 3)
  const byId = new Map(watcher.events.filter((e) => e.name === 'completed').map((e) => [e.id, e.host]))
  expect(byId.get('held')).toBe(other.name)
  expect(byId.get('queued')).toBe(other.name)
  // Handed over, not failed: the session on the other host is the same attempt, not the next.
  const starts = watcher.events.filter((e) => e.name === 'started' && e.id === 'held').map((e) => `${e.host}#${JSON.parse(e.detail).attempt}`)
  expect([...new Set(starts)]).toEqual([`${runner}#1`, `${other.name}#1`])
  // The requester still hears of its requests' ends after it drained.
  const requester = a
  await requester.waitFor('held completed', (m: any) => m.ev === 'completed' && m.requestId === 'held')
  // A drained host has left: the queue counts the other one only.
  other.send({ op: 'status' })
  const { status } = await other.waitFor('the status', (m: any) => m.ev === 'status')
  expect(status.shared).toMatchObject({ hosts: 1, capacity: 1, leased: 0, reachable: true })
  expect(status.queuedRequests).toEqual([])
  watcher.close()
})

/**
 * A TCP relay to Redis that can be cut like a network: `silent`, bytes both ways are
 * dropped and connections stay open (requests go unanswered, nothing is refused);
 * `refuse`, open connections are reset and new ones closed at once; `replies`, a
 * connection that sends a command containing `marker` is reset when Redis answers
 * it, so the command ran but its answer is lost. `restore()` relays again.
 */
async function relay(port: number) {
  const net = require('node:net')
  const sockets = new Set<any>()
  const spoke = new Set<any>()
  let cut: false | 'silent' | 'refuse' | 'replies' = false
  let marker = ''
  const server = net.createServer((client: any) => {
    if (cut === 'refuse') return client.destroy()
    const upstream = net.connect(port, '127.0.0.1')
    sockets.add(client).add(upstream)
    client.on('data', (d: Buffer) => {
      if (cut === 'silent' || cut === 'refuse') return
      if (cut === 'replies' && d.includes(marker)) spoke.add(client)
      upstream.write(d)
    })
    upstream.on('data', (d: Buffer) => {
      if (cut === 'replies' && spoke.has(client)) return close()
      if (!cut || cut === 'replies') client.write(d)
    })
    const close = () => {
      spoke.delete(client)
      sockets.delete(client)
      sockets.delete(upstream)
      client.destroy()
      upstream.destroy()
    }
    client.on('error', close).on('close', close)
    upstream.on('error', close).on('close', close)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `redis://127.0.0.1:${server.address().port}/`,
    cut: (mode: 'silent' | 'refuse' | 'replies' = 'silent', inCommand = '') => {
      cut = mode
      marker = inCommand
      spoke.clear()
      if (mode === 'refuse') for (const s of [...sockets]) s.destroy()
    },
    restore: () => (cut = false),
    close: () => {
      for (const s of sockets) s.destroy()
      return new Promise((resolve) => server.close(resolve))
    },
  }
}

test('a host cut off from Redis stops its session before its lease lapses, so the host that takes over never runs it at the same time', async () => {
  const name = freshName()
  const dir = tempDir()
  const watcher = await watch(name)
  const path = await relay(redis.port)
  const [cutOff] = await hosts(1, { name, capacity: 1, leaseMs: 1500, url: path.url, connectTimeoutMs: 300, responseTimeoutMs: 300 })
  await submit(cutOff, 'held', 'high', config(dir, ['sleep:4000', 'exit:0']))
  await watcher.until('held to start', () => watcher.events.some((e) => e.name === 'started' && e.id === 'held'))
  const [other] = await hosts(1, { name, hostPrefix: `${name}-other`, capacity: 1, leaseMs: 1500 })
  path.cut()
  await watcher.until('held to start on the other host', () => watcher.events.some((e) => e.name === 'started' && e.id === 'held' && e.host === other.name), 30_000)
  const takenAt = (await other.waitFor('its session', (m: any) => m.ev === 'active' && m.change === 'spawned')).at
  const lost = await cutOff.waitFor('lease-lost', (m: any) => m.ev === 'lease-lost')
  const ended = await cutOff.waitFor('its session to end', (m: any) => m.ev === 'active' && m.change === 'ended')
  expect(lost.detail).toBe('held')
  expect(ended.state).toBe('terminated')
  expect(ended.at).toBeLessThan(takenAt)
  await watcher.until('held to complete', () => watcher.events.some((e) => e.name === 'completed' && e.id === 'held'), 30_000)
  expect(watcher.events.filter((e) => e.name === 'completed').map((e) => e.host)).toEqual([other.name])
  await cutOff.kill()
  await path.close()
  watcher.close()
})

test('a requesting host that missed the end of its request (cut off while the event stream was trimmed) learns it from the queue once back', async () => {
  const name = freshName()
  const dir = tempDir()
  const gate = `${dir}/open`
  const watcher = await watch(name)
  const path = await relay(redis.port)
  const [requester] = await hosts(1, { name, hostPrefix: `${name}-r`, capacity: 1, url: path.url, connectTimeoutMs: 300, responseTimeoutMs: 300 })
  // Its own slot is taken, so its next request runs on the other host.
  await submit(requester, 'blocker', 'low', config(dir, ['hang']))
  await watcher.until('the blocker to start', () => watcher.events.some((e) => e.name === 'started' && e.id === 'blocker'))
  const [worker] = await hosts(1, { name, hostPrefix: `${name}-w`, capacity: 1 })
  await submit(requester, 'task', 'high', config(dir, [`wait-file:${gate}`, 'exit:0']))
  await watcher.until('task to start on the worker', () => watcher.events.some((e) => e.name === 'started' && e.id === 'task' && e.host === worker.name))

  path.cut('refuse')
  await requester.waitFor('the outage', (m: any) => m.ev === 'queue-unavailable')
  require('node:fs').writeFileSync(gate, '')
  await watcher.until('task to complete', () => watcher.events.some((e) => e.name === 'completed' && e.id === 'task'))
  expect(await redis.command('XTRIM', `css:{${name}}:events`, 'MAXLEN', '0')).toMatch(/^:[1-9]/)
  expect(requester.messages.some((m: any) => m.ev === 'completed' && m.requestId === 'task')).toBe(false)

  path.restore()
  const done = await requester.waitFor('task completed on the requester', (m: any) => m.ev === 'completed' && m.requestId === 'task', 30_000)
  expect(done.status.state).toBe('completed')
  await path.close()
  watcher.close()
})

test('maxQueueSize holds for the shared queue: Redis refuses the push itself, so requests beyond it are never queued, from any host', async () => {
  const name = freshName()
  const dir = tempDir()
  const watcher = await watch(name)
  const [a, b] = await hosts(2, { name, capacity: 1, maxQueueSize: 3 })
  await submit(a, 'busy-a', 'high', config(dir, ['hang']))
  await submit(b, 'busy-b', 'high', config(dir, ['hang']))
  await watcher.until('both to run', () => watcher.events.filter((e) => e.name === 'started').length === 2)
  // Both hosts push four each at once against the one limit of three waiting.
  for (let i = 0; i < 4; i++) {
    a.send({ op: 'request', requestId: `a${i}`, priority: 'low', config: config(dir, ['exit:0']) })
    b.send({ op: 'request', requestId: `b${i}`, priority: 'low', config: config(dir, ['exit:0']) })
  }
  const answers = []
  for (const [host, prefix] of [[a, 'a'], [b, 'b']] as const) {
    for (let i = 0; i < 4; i++) {
      answers.push(await host.waitFor(`${prefix}${i} answered`, (m: any) => m.requestId === `${prefix}${i}` && (m.ev === 'queued' || m.ev === 'rejected')))
    }
  }
  const refused = answers.filter((m: any) => m.ev === 'rejected')
  expect(answers.filter((m: any) => m.ev === 'queued')).toHaveLength(3)
  expect(refused).toHaveLength(5)
  for (const m of refused) expect(m).toMatchObject({ code: 'ERR_POOL_QUEUE_FULL', message: 'Session pool queue is full' })
  // Refused in the push: what was refused never entered the queue.
  const queued = new Set(watcher.events.filter((e) => e.name === 'queued').map((e) => e.id))
  for (const m of refused) expect(queued.has(m.requestId)).toBe(false)
  expect(watcher.events.filter((e) => e.name === 'cancelled')).toEqual([])
  watcher.close()
})

test('a request refused because the answer to its push was lost (Redis queued it) is cancelled once the queue answers, and never runs', async () => {
  const name = freshName()
  const dir = tempDir()
  const watcher = await watch(name)
  const path = await relay(redis.port)
  try {
    // Ticks seconds apart: no other command of the host's shares the lost push's moment.
    const [host] = await hosts(1, { name, capacity: 1, url: path.url, leaseMs: 30_000, pollIntervalMs: 5000, connectTimeoutMs: 300, responseTimeoutMs: 300 })
    // One request through first: Redis then has the push script, which the lost push runs.
    await submit(host, 'first', 'high', config(dir, ['exit:0']))
    await host.waitFor('first to complete', (m: any) => m.ev === 'completed' && m.requestId === 'first')

    path.cut('replies', 'lost')
    host.send({ op: 'request', requestId: 'lost', priority: 'high', config: config(dir, ['exit:0']) })
    const refused = await host.waitFor('the refusal', (m: any) => m.requestId === 'lost' && (m.ev === 'rejected' || m.ev === 'queued'))
    expect(refused).toMatchObject({ ev: 'rejected', code: 'ERR_QUEUE_UNAVAILABLE' })
    // Redis ran the push all the same.
    await watcher.until('lost to be in the queue', () => watcher.events.some((e) => e.name === 'queued' && e.id === 'lost'))

    path.restore()
    await watcher.until('lost to be cancelled', () => watcher.events.some((e) => e.name === 'cancelled' && e.id === 'lost'), 30_000)
    // The host is in use again: a new request runs; the refused one never did.
    await submit(host, 'next', 'high', config(dir, ['exit:0']))
    const done = await host.waitFor('next to complete', (m: any) => m.ev === 'completed' && m.requestId === 'next')
    expect(done.status.state).toBe('completed')
    // Cancelled in the queue, or taken by its own host and cancelled there: never started.
    const fate = watcher.events.filter((e) => e.id === 'lost').map((e) => e.name)
    expect([fate[0], fate[fate.length - 1]]).toEqual(['queued', 'cancelled'])
    expect(fate.filter((name) => name === 'started' || name === 'completed')).toEqual([])
  } finally {
    await path.close()
    watcher.close()
  }
})

describe('in this process', () => {
  const spawner = () => new ClaudeSessionSpawner({ claudePath: FAKE_AGENT, protocol: 'text', extraArgs: ['env-steps'] })
  const base = { maxConcurrentSessions: 1, defaultSessionTimeout: 0, maxQueueSize: 10 }

  test('a wrong queue config is a TypeError naming the field', () => {
    const bad: Array<[unknown, string]> = [
      ['redis://x', 'config.queue'],
      [{ kind: 'memory', url: 'redis://x', name: 'q' }, 'config.queue.kind'],
      [{ kind: 'redis', url: 'http://x', name: 'q' }, 'config.queue.url'],
      [{ kind: 'redis', url: 'redis://x', name: '' }, 'config.queue.name'],
      [{ kind: 'redis', url: 'redis://x', name: 'q', leaseMs: 5 }, 'config.queue.leaseMs'],
    ]
    for (const [queue, field] of bad) {
      let error: any
      try {
        new SessionPool(spawner(), { ...base, queue } as any)
      } catch (e) {
        error = e
      }
      expect(error).toBeInstanceOf(TypeError)
      expect(error.field).toBe(field)
      expect(error.message).toContain(field)
    }
  })

  test('a Redis that cannot be reached: requestSession rejects naming the URL; a bad request config is refused before it is queued', async () => {
    const { freePort } = require('../test-support/redis-server')
    const url = `redis://127.0.0.1:${await freePort()}/`
    const pool = new SessionPool(spawner(), { ...base, queue: { kind: 'redis', url, name: 'q', connectTimeoutMs: 300 } })
    const dir = tempDir()
    const error = await pool.requestSession({ requestId: 'r', priority: 'high', queuedAt: new Date(), config: config(dir, ['exit:0']) }).catch((e) => e)
    expect(error.code).toBe('ERR_QUEUE_UNAVAILABLE')
    expect(error.message).toContain(url)
    const bad = await pool
      .requestSession({ requestId: 'b', priority: 'high', queuedAt: new Date(), config: { ...config(dir, []), workingDirectory: 7 } as any })
      .catch((e) => e)
    expect(bad).toBeInstanceOf(TypeError)
    expect(bad.message).toContain('config.workingDirectory')
    await pool.close()
  })

  test('one pool on a shared queue runs requests and resolves like the in-process pool (output cut to 16 KiB in transit); it does not keep Node alive once idle', async () => {
    const dir = tempDir()
    const script = `${dir}/host.js`
    require('node:fs').writeFileSync(
      script,
      `const { ClaudeSessionSpawner, SessionPool } = require(${JSON.stringify(require.resolve('..'))})
const spawner = new ClaudeSessionSpawner({ claudePath: ${JSON.stringify(FAKE_AGENT)}, protocol: 'text', extraArgs: ['env-steps'] })
const pool = new SessionPool(spawner, { maxConcurrentSessions: 1, defaultSessionTimeout: 0, maxQueueSize: 10,
  queue: { kind: 'redis', url: ${JSON.stringify(redis.url)}, name: ${JSON.stringify(freshName())} } })
const config = ${JSON.stringify(config(dir, ['out:hello', 'exit:0']))}
config.charter.constraints.forbiddenPatterns = [/secret/i]
pool.requestSession({ requestId: 'one', priority: 'high', queuedAt: new Date(), config, onCompleted: (s) => console.log('completed', s.state, s.stdout.trim(), s.startTime instanceof Date) })
  .then((r) => r.completion).then((s) => console.log('completion', s.state))
const flood = { ...config, environmentVariables: { FAKE_AGENT_STEPS: 'flood-out:200000;out:the-end;exit:0' } }
pool.requestSession({ requestId: 'flood', priority: 'low', queuedAt: new Date(), config: flood, onCompleted: (s) =>
  console.log('flood', s.stdout.length, s.stdoutTruncated, s.stdout.trimEnd().endsWith('the-end'), s.host === pool.host) })
`,
    )
    const run = await runNode(script, 20_000)
    expect(run.stderr).toBe('')
    expect(run.code).toBe(0)
    expect(run.stdout).toContain('completed completed hello true')
    expect(run.stdout).toContain('completion completed')
    // What crosses hosts keeps the newest 16 KiB of the output.
    expect(run.stdout).toContain(`flood ${16 * 1024} true true true`)
  })
})
