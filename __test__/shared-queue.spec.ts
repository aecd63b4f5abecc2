// The shared request queue as JavaScript reaches it (lib/shared-queue.js over the
// native NativeSharedQueue): the same behaviour tests on the in-process queue and on
// a real redis-server started here, then what only Redis has (an unreachable server,
// a second process), and that a queue handle never keeps Node alive by itself.
import { EventEmitter } from 'node:events'
import * as fs from 'node:fs'
import * as net from 'node:net'
import * as path from 'node:path'

import { type NodeRun, nextEvent, runNode, tempDir, within } from './support'

const { RedisServer, freePort } = require('../test-support/redis-server')

// Internal, so not in the typings.
const { SharedQueue } = require('../lib/shared-queue')

const SHARED_QUEUE = path.join(__dirname, '..', 'lib', 'shared-queue.js')
const LONG_LEASE = 60_000
const SHORT_LEASE = 200

type Queue = EventEmitter & {
  kind: string
  push(id: string, priority: string, payload: string, attempt: number): Promise<{ position: number; queueLength: number }>
  take(host: string, leaseMs: number): Promise<any>
  renew(host: string, id: string, leaseMs: number): Promise<{ held: boolean; cancelRequested: boolean }>
  started(host: string, id: string, detail: string): Promise<void>
  finish(host: string, id: string, outcome: string, executionMs: number, detail?: string): Promise<void>
  release(host: string, id: string): Promise<void>
  requeueExpired(maxAttempts: number): Promise<any[]>
  cancel(id: string): Promise<string>
  snapshot(): Promise<any>
  lookup(id: string): Promise<any>
  announce(host: string, capacity: number, ttlMs: number): Promise<void>
  leave(host: string): Promise<void>
  close(): void
}

/** `connected_clients` from INFO (counting the connection that asks). */
function connectedClients(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1')
    let reply = ''
    socket.on('error', reject)
    socket.on('connect', () => socket.write('INFO clients\r\n'))
    socket.on('data', (d) => {
      reply += d
      const found = /connected_clients:(\d+)/.exec(reply)
      if (found) {
        socket.destroy()
        resolve(Number(found[1]))
      }
    })
  })
}

/** Polls `check` (async) until it holds, failing after `ms`. */
async function eventually(what: string, check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

let server: any
let redisUrl = ''
let redisPort = 0

beforeAll(async () => {
  server = await RedisServer.start()
  redisUrl = server.url
  redisPort = server.port
})

afterAll(async () => {
  await within(server?.stop() ?? Promise.resolve(), 'redis-server to stop')
})

const opened: Queue[] = []
afterEach(() => {
  for (const queue of opened.splice(0)) queue.close()
})

let names = 0
/** A queue name no other test uses. */
function freshName(): string {
  names += 1
  return `js-${process.pid}-${names}`
}

type Kind = 'local' | 'redis'

async function open(kind: Kind, name: string): Promise<Queue> {
  const queue: Queue = kind === 'local' ? SharedQueue.local(name) : await SharedQueue.connectRedis(redisUrl, name)
  opened.push(queue)
  return queue
}

/** Two hosts' handles on one fresh queue. */
async function twoHosts(kind: Kind): Promise<[Queue, Queue]> {
  const name = freshName()
  return [await open(kind, name), await open(kind, name)]
}

/** Polls requeueExpired until it reports something: leases lapse by the queue's clock. */
async function untilExpired(queue: Queue, maxAttempts: number): Promise<any[]> {
  const deadline = Date.now() + 10_000
  for (;;) {
    const expired = await queue.requeueExpired(maxAttempts)
    if (expired.length > 0) return expired
    if (Date.now() > deadline) throw new Error('no lease lapsed within 10 s')
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

describe.each<Kind>(['local', 'redis'])('SharedQueue (%s)', (kind) => {
  it('hands requests out by priority, then arrival', async () => {
    const [queue] = await twoHosts(kind)
    expect(queue.kind).toBe(kind)
    const pushes: Array<[string, string]> = [
      ['a', 'low'],
      ['b', 'high'],
      ['c', 'low'],
      ['d', 'critical'],
      ['e', 'high'],
    ]
    const positions = []
    for (const [id, priority] of pushes) positions.push((await queue.push(id, priority, `{"id":"${id}"}`, 1)).position)
    expect(positions).toEqual([1, 1, 3, 1, 3])
    const taken = []
    for (let i = 0; i < pushes.length; i++) taken.push(await queue.take('host-a', LONG_LEASE))
    expect(taken.map((t) => t.id)).toEqual(['d', 'b', 'e', 'a', 'c'])
    expect(taken[0]).toEqual({
      id: 'd',
      priority: 'critical',
      payload: '{"id":"d"}',
      attempt: 1,
      enqueuedAt: expect.any(Date),
      leaseExpiresAt: expect.any(Date),
      note: null,
    })
    expect(taken[0].leaseExpiresAt.getTime() - taken[0].enqueuedAt.getTime()).toBeGreaterThanOrEqual(LONG_LEASE - 1000)
    expect(await queue.take('host-a', LONG_LEASE)).toBeNull()
  })

  it('never gives one request to two hosts taking concurrently', async () => {
    const [a, b] = await twoHosts(kind)
    const ids = Array.from({ length: 40 }, (_, i) => `r${i}`)
    for (const id of ids) await a.push(id, 'medium', '{}', 1)
    const takenBy = new Map<string, string[]>()
    // Several takers per host at once, until the queue is empty.
    const taker = async (queue: Queue, host: string) => {
      for (;;) {
        const t = await queue.take(host, LONG_LEASE)
        if (t === null) return
        takenBy.set(t.id, [...(takenBy.get(t.id) ?? []), host])
      }
    }
    await within(Promise.all([0, 1, 2, 3].flatMap(() => [taker(a, 'host-a'), taker(b, 'host-b')])), 'the takers')
    expect([...takenBy.keys()].sort()).toEqual([...ids].sort())
    expect([...takenBy.values()].filter((hosts) => hosts.length !== 1)).toEqual([])
    expect((await a.snapshot()).leased).toBe(40)
  })

  it('a lapsed lease can neither renew nor finish, and comes back with attempt 2', async () => {
    const [a, b] = await twoHosts(kind)
    await a.push('lapsing', 'high', '{}', 1)
    const taken = await a.take('host-a', SHORT_LEASE)
    expect(taken.attempt).toBe(1)
    expect(await untilExpired(b, 3)).toEqual([{ id: 'lapsing', host: 'host-a', fate: 'requeued', attempt: 2 }])
    expect(await a.renew('host-a', 'lapsing', LONG_LEASE)).toEqual({ held: false, cancelRequested: false })
    const finishing = a.finish('host-a', 'lapsing', 'completed', 10, '{}')
    await expect(finishing).rejects.toBeInstanceOf(Error)
    await expect(finishing).rejects.toMatchObject({ code: 'ERR_QUEUE_NOT_HOLDER', message: expect.stringContaining('lapsing') })
    await expect(a.release('host-a', 'lapsing')).rejects.toMatchObject({ code: 'ERR_QUEUE_NOT_HOLDER' })
    const again = await b.take('host-b', LONG_LEASE)
    expect(again).toMatchObject({ id: 'lapsing', attempt: 2 })
  })

  it('cancel removes a queued request and flags a leased one for its holder', async () => {
    const [a, b] = await twoHosts(kind)
    await a.push('leased', 'high', '{}', 1)
    await a.push('queued', 'low', '{}', 1)
    expect((await b.take('host-b', LONG_LEASE)).id).toBe('leased')

    expect(await a.cancel('queued')).toBe('removed')
    expect((await a.snapshot()).queued).toEqual([])
    expect(await a.cancel('leased')).toBe('flagged')
    expect(await b.renew('host-b', 'leased', LONG_LEASE)).toEqual({ held: true, cancelRequested: true })
    await b.finish('host-b', 'leased', 'cancelled', 5)
    expect(await a.snapshot()).toMatchObject({ queued: [], leased: 0 })
    expect(await a.cancel('leased')).toBe('unknown')
    expect(await b.take('host-b', LONG_LEASE)).toBeNull()
  })

  it('snapshot shows the queue in order, the leases and the mean execution time', async () => {
    const [queue] = await twoHosts(kind)
    const before = Date.now()
    await queue.push('low-1', 'low', '{}', 1)
    await queue.push('crit-1', 'critical', '{}', 1)
    await queue.push('med-1', 'medium', '{}', 3)
    await queue.push('crit-2', 'critical', '{}', 1)
    expect(await queue.snapshot()).toEqual({
      queued: [
        { id: 'crit-1', priority: 'critical', attempt: 1, enqueuedAt: expect.any(Date) },
        { id: 'crit-2', priority: 'critical', attempt: 1, enqueuedAt: expect.any(Date) },
        { id: 'med-1', priority: 'medium', attempt: 3, enqueuedAt: expect.any(Date) },
        { id: 'low-1', priority: 'low', attempt: 1, enqueuedAt: expect.any(Date) },
      ],
      leased: 0,
      meanExecutionMs: null,
      hosts: 0,
      capacity: 0,
    })
    const { enqueuedAt } = (await queue.snapshot()).queued[0]
    // Redis's clock, on this machine: close to ours.
    expect(Math.abs(enqueuedAt.getTime() - before)).toBeLessThan(5_000)

    await queue.take('host-a', LONG_LEASE)
    await queue.take('host-a', LONG_LEASE)
    await queue.finish('host-a', 'crit-1', 'completed', 100, '{}')
    await queue.finish('host-a', 'crit-2', 'failed', 300, '{"message":"boom"}')
    await queue.take('host-a', LONG_LEASE)
    const after = await queue.snapshot()
    expect(after.queued.map((e: any) => e.id)).toEqual(['low-1'])
    expect(after.leased).toBe(1)
    expect(after.meanExecutionMs).toBe(200)
  })

  it("events reach a listener on another host's handle", async () => {
    const [a, b] = await twoHosts(kind)
    const seen: Array<[string, unknown]> = []
    for (const name of ['allocated', 'completed', 'failed', 'cancelled', 'requeued']) b.on(name, (p: unknown) => seen.push([name, p]))

    const allocated = nextEvent<any>(b, 'allocated', (p) => p.id === 'ok')
    const completed = nextEvent<any>(b, 'completed', (p) => p.id === 'ok')
    await a.push('ok', 'medium', '{}', 1)
    await a.take('host-a', LONG_LEASE)
    await a.finish('host-a', 'ok', 'completed', 1, '{"state":"completed"}')
    expect(await allocated).toEqual({ id: 'ok', host: 'host-a', attempt: 1 })
    expect(await completed).toEqual({ id: 'ok', host: 'host-a', detail: '{"state":"completed"}' })

    const failed = nextEvent<any>(b, 'failed', (p) => p.id === 'bad')
    await a.push('bad', 'medium', '{}', 1)
    await a.take('host-a', LONG_LEASE)
    await a.finish('host-a', 'bad', 'failed', 1, '{"message":"boom"}')
    expect(await failed).toEqual({ id: 'bad', host: 'host-a', detail: '{"message":"boom"}' })

    const cancelled = nextEvent<any>(b, 'cancelled', (p) => p.id === 'gone')
    await a.push('gone', 'low', '{}', 1)
    await a.cancel('gone')
    expect(await cancelled).toEqual({ id: 'gone' })

    const requeued = nextEvent<any>(b, 'requeued', (p) => p.id === 'slow')
    await a.push('slow', 'low', '{}', 1)
    await a.take('host-a', SHORT_LEASE)
    await untilExpired(a, 3)
    expect(await requeued).toEqual({ id: 'slow', attempt: 2 })
    expect(seen.every(([, p]) => Object.getPrototypeOf(p) === Object.prototype)).toBe(true)

    // Once the last listener is gone, nothing more arrives.
    b.removeAllListeners('allocated')
    for (const name of ['completed', 'failed', 'cancelled', 'requeued']) b.removeAllListeners(name)
    const count = seen.length
    const onA = nextEvent<any>(a, 'allocated', (p) => p.id === 'late')
    // Ahead of 'slow', which is back in the queue.
    await a.push('late', 'critical', '{}', 1)
    await a.take('host-a', LONG_LEASE)
    await onA
    expect(seen.length).toBe(count)
  })

  it('close stops the events and refuses later operations', async () => {
    const [a, b] = await twoHosts(kind)
    const seen: string[] = []
    b.on('allocated', (p: any) => seen.push(p.id))
    const first = nextEvent<any>(b, 'allocated', (p) => p.id === 'before')
    await a.push('before', 'low', '{}', 1)
    await a.take('host-a', LONG_LEASE)
    await first
    b.close()
    await expect(b.push('after', 'low', '{}', 1)).rejects.toMatchObject({ code: 'ERR_QUEUE_CLOSED' })
    await expect(b.snapshot()).rejects.toBeInstanceOf(Error)
    const onA = nextEvent<any>(a, 'allocated', (p) => p.id === 'after')
    await a.push('after', 'low', '{}', 1)
    await a.take('host-a', LONG_LEASE)
    await onA
    expect(seen).toEqual(['before'])
  })

  it('rejects wrongly typed arguments with TypeErrors naming them', async () => {
    const [queue] = await twoHosts(kind)
    const cases: Array<[string, () => Promise<unknown>]> = [
      ['priority', () => queue.push('x', 'urgent', '{}', 1)],
      ['id', () => queue.push('', 'low', '{}', 1)],
      ['payload', () => queue.push('x', 'low', { not: 'text' } as any, 1)],
      ['attempt', () => queue.push('x', 'low', '{}', 0)],
      ['leaseMs', () => queue.take('host-a', 0)],
      ['leaseMs', () => queue.take('host-a', -5)],
      ['leaseMs', () => queue.renew('host-a', 'x', Number.NaN)],
      ['host', () => queue.take(7 as any, 1000)],
      ['outcome', () => queue.finish('host-a', 'x', 'done', 1)],
      ['executionMs', () => queue.finish('host-a', 'x', 'completed', -1)],
      ['maxAttempts', () => queue.requeueExpired(1.5)],
      ['id', () => queue.cancel(undefined as any)],
      ['host', () => queue.started('', 'x', '{}')],
      ['id', () => queue.started('host-a', 7 as any, '{}')],
      ['detail', () => queue.started('host-a', 'x', undefined as any)],
      ['host', () => queue.announce(undefined as any, 1, 1000)],
      ['capacity', () => queue.announce('host-a', -1, 1000)],
      ['capacity', () => queue.announce('host-a', 1.5, 1000)],
      ['ttlMs', () => queue.announce('host-a', 1, 0)],
      ['host', () => queue.leave('')],
      ['id', () => queue.lookup('')],
      ['id', () => queue.lookup(7 as any)],
    ]
    for (const [field, call] of cases) {
      const attempt = call()
      await expect(attempt).rejects.toBeInstanceOf(TypeError)
      await expect(attempt).rejects.toMatchObject({ code: 'ERR_INVALID_ARG', field, message: expect.stringContaining(field) })
    }
    // Nothing was pushed or announced by the refused calls.
    expect(await queue.snapshot()).toMatchObject({ queued: [], hosts: 0, capacity: 0 })
  })

  it('started leaves a note for the host that takes the request over; only the holder may say it', async () => {
    const [a, b] = await twoHosts(kind)
    await a.push('noted', 'high', '{}', 1)
    expect((await a.take('host-a', SHORT_LEASE)).note).toBeNull()
    await expect(b.started('host-b', 'noted', 'x')).rejects.toMatchObject({ code: 'ERR_QUEUE_NOT_HOLDER' })
    await a.started('host-a', 'noted', '{"conversation":"c1"}')
    // host-a stops renewing: host-b takes over and learns the conversation.
    expect(await untilExpired(b, 3)).toEqual([{ id: 'noted', host: 'host-a', fate: 'requeued', attempt: 2 }])
    await expect(a.started('host-a', 'noted', 'late')).rejects.toMatchObject({ code: 'ERR_QUEUE_NOT_HOLDER' })
    expect(await b.take('host-b', LONG_LEASE)).toMatchObject({ id: 'noted', attempt: 2, note: '{"conversation":"c1"}' })
    await b.started('host-b', 'noted', '{"conversation":"c2"}')
    await b.release('host-b', 'noted')
    expect(await a.take('host-a', LONG_LEASE)).toMatchObject({ id: 'noted', attempt: 2, note: '{"conversation":"c2"}' })
    // Finished, the note is gone: the same id again is a new request.
    await a.finish('host-a', 'noted', 'completed', 10, '{}')
    await a.push('noted', 'high', '{}', 1)
    expect(await b.take('host-b', LONG_LEASE)).toMatchObject({ id: 'noted', attempt: 1, note: null })
  })

  it("queued and started events reach another host's listener", async () => {
    const [a, b] = await twoHosts(kind)
    const seen: Array<[string, unknown]> = []
    for (const name of ['queued', 'allocated', 'started', 'cancelled']) {
      b.on(name, (p: any) => {
        if (p.id === 'ev' || p.id === 'ev-cancelled') seen.push([name, p])
      })
    }
    await a.push('ev', 'high', '{}', 1)
    await a.take('host-a', LONG_LEASE)
    await a.started('host-a', 'ev', '{"conversation":"c1"}')
    await a.release('host-a', 'ev')
    // A release with a cancel pending is a cancel, not a queued.
    await a.push('ev-cancelled', 'low', '{}', 1)
    await a.take('host-a', LONG_LEASE) // 'ev', back at the front
    await a.take('host-a', LONG_LEASE)
    expect(await a.cancel('ev-cancelled')).toBe('flagged')
    await a.release('host-a', 'ev-cancelled')
    await eventually('the cancelled event', async () => seen.some(([name]) => name === 'cancelled'))
    expect(seen).toEqual([
      ['queued', { id: 'ev', priority: 'high' }],
      ['allocated', { id: 'ev', host: 'host-a', attempt: 1 }],
      ['started', { id: 'ev', host: 'host-a', attempt: 1, detail: '{"conversation":"c1"}' }],
      ['queued', { id: 'ev', priority: 'high' }],
      ['queued', { id: 'ev-cancelled', priority: 'low' }],
      ['allocated', { id: 'ev', host: 'host-a', attempt: 1 }],
      ['allocated', { id: 'ev-cancelled', host: 'host-a', attempt: 1 }],
      ['cancelled', { id: 'ev-cancelled' }],
    ])
    expect(seen.every(([, p]) => Object.getPrototypeOf(p) === Object.prototype)).toBe(true)
  })

  it('lookup tells where a request stands, or how it ended', async () => {
    const [a, b] = await twoHosts(kind)
    expect(await a.lookup('nobody')).toEqual({ state: 'unknown' })
    await a.push('first', 'high', '{}', 1)
    await a.push('second', 'high', '{}', 2)
    expect(await b.lookup('second')).toEqual({ state: 'queued', position: 2, attempt: 2 })
    await b.take('host-b', LONG_LEASE)
    expect(await a.lookup('first')).toEqual({ state: 'leased', host: 'host-b', attempt: 1 })
    expect(await a.lookup('second')).toEqual({ state: 'queued', position: 1, attempt: 2 })

    await b.finish('host-b', 'first', 'completed', 5, '{"state":"completed"}')
    const completed = await a.lookup('first')
    expect(completed).toEqual({
      state: 'finished',
      event: { name: 'completed', id: 'first', host: 'host-b', detail: '{"state":"completed"}' },
    })
    expect(Object.getPrototypeOf(completed) === Object.prototype && Object.getPrototypeOf(completed.event) === Object.prototype).toBe(true)
    await b.take('host-b', LONG_LEASE)
    await b.finish('host-b', 'second', 'failed', 5, '{"message":"boom"}')
    expect(await a.lookup('second')).toEqual({
      state: 'finished',
      event: { name: 'failed', id: 'second', host: 'host-b', detail: '{"message":"boom"}' },
    })
    await a.push('gone', 'low', '{}', 1)
    expect(await a.cancel('gone')).toBe('removed')
    expect(await b.lookup('gone')).toEqual({ state: 'finished', event: { name: 'cancelled', id: 'gone' } })

    // Failed by the queue after its last attempt: no host.
    await a.push('lapsing', 'medium', '{}', 1)
    await b.take('host-b', SHORT_LEASE)
    expect(await untilExpired(a, 1)).toEqual([{ id: 'lapsing', host: 'host-b', fate: 'failed', attempts: 1 }])
    expect(await b.lookup('lapsing')).toEqual({
      state: 'finished',
      event: { name: 'failed', id: 'lapsing', host: null, detail: 'gave up after 1 attempts: the lease of host host-b lapsed' },
    })

    // Pushed again, the id is live: its old end is forgotten.
    await a.push('first', 'low', '{}', 1)
    expect(await a.lookup('first')).toEqual({ state: 'queued', position: 1, attempt: 1 })
  })

  it('announced hosts make up the capacity until they leave or lapse', async () => {
    const [a, b] = await twoHosts(kind)
    const hosts = async () => {
      const { hosts, capacity } = await b.snapshot()
      return { hosts, capacity }
    }
    await a.announce('host-a', 4, LONG_LEASE)
    await b.announce('host-b', 2, LONG_LEASE)
    expect(await hosts()).toEqual({ hosts: 2, capacity: 6 })
    await a.announce('host-a', 8, LONG_LEASE)
    expect(await hosts()).toEqual({ hosts: 2, capacity: 10 })
    await b.leave('host-b')
    expect(await hosts()).toEqual({ hosts: 1, capacity: 8 })
    // Back for a short while: it lapses by the queue's clock.
    const ttl = 500
    const announced = Date.now()
    await b.announce('host-b', 3, ttl)
    const during = await hosts()
    if (Date.now() - announced < ttl) expect(during).toEqual({ hosts: 2, capacity: 11 })
    await eventually('host-b to lapse', async () => (await hosts()).hosts === 1)
    expect(await hosts()).toEqual({ hosts: 1, capacity: 8 })
  })
})

describe('SharedQueue (redis only)', () => {
  it('an unreachable Redis rejects with ERR_QUEUE_UNAVAILABLE naming the URL, within the connect timeout', async () => {
    const url = `redis://127.0.0.1:${await freePort()}/`
    const started = Date.now()
    const connecting = SharedQueue.connectRedis(url, freshName(), { connectTimeoutMs: 500 })
    await expect(within(connecting, 'the refusal', 5_000)).rejects.toMatchObject({
      code: 'ERR_QUEUE_UNAVAILABLE',
      message: expect.stringContaining(url),
    })
    await expect(connecting).rejects.toBeInstanceOf(Error)
    expect(Date.now() - started).toBeLessThan(5_000)
  })

  it('a server that accepts but never answers is unavailable within the response timeout', async () => {
    const sockets: net.Socket[] = []
    const silent = net.createServer((socket) => sockets.push(socket))
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
    const url = `redis://127.0.0.1:${(silent.address() as net.AddressInfo).port}/`
    try {
      const connecting = SharedQueue.connectRedis(url, freshName(), { connectTimeoutMs: 500, responseTimeoutMs: 300 })
      await expect(within(connecting, 'the timeout', 5_000)).rejects.toMatchObject({
        code: 'ERR_QUEUE_UNAVAILABLE',
        message: expect.stringContaining(url),
      })
    } finally {
      for (const socket of sockets) socket.destroy()
      await new Promise((resolve) => silent.close(resolve))
    }
  })

  it('close lets go of the handle\'s Redis connections', async () => {
    // Every earlier test closed its handles: only the connection asking remains.
    const alone = async () => (await connectedClients(redisPort)) === 1
    await eventually('the earlier handles to let go', alone)
    const queue = await SharedQueue.connectRedis(redisUrl, freshName())
    queue.on('allocated', () => {})
    // Commands and the event subscription, besides the asking one.
    expect(await connectedClients(redisPort)).toBeGreaterThanOrEqual(3)
    queue.close()
    await eventually('its connections to close', alone)
  })

  it('refuses bad connect options with TypeErrors naming them', async () => {
    await expect(SharedQueue.connectRedis(redisUrl, freshName(), { connectTimeoutMs: 0 })).rejects.toMatchObject({
      code: 'ERR_INVALID_ARG',
      field: 'options.connectTimeoutMs',
    })
    await expect(SharedQueue.connectRedis(redisUrl, freshName(), { retries: 3 })).rejects.toBeInstanceOf(TypeError)
    await expect(SharedQueue.connectRedis(42, freshName())).rejects.toMatchObject({ code: 'ERR_INVALID_ARG', field: 'url' })
  })

  it('a request pushed here is taken by another process, and its allocated event arrives here', async () => {
    const name = freshName()
    const queue = await open('redis', name)
    const allocated = nextEvent<any>(queue, 'allocated', (p) => p.id === 'cross')
    await queue.push('cross', 'high', '{"from":"parent"}', 1)
    const run = await runScript(`
const queue = await SharedQueue.connectRedis(${JSON.stringify(redisUrl)}, ${JSON.stringify(name)})
const taken = await queue.take('child-host', 60000)
console.log(JSON.stringify({ id: taken.id, payload: taken.payload }))
queue.close()
`)
    expect(run).toEqual({ code: 0, signal: null, stdout: '{"id":"cross","payload":"{\\"from\\":\\"parent\\"}"}\n', stderr: '' })
    expect(await allocated).toEqual({ id: 'cross', host: 'child-host', attempt: 1 })
    expect(await queue.snapshot()).toMatchObject({ queued: [], leased: 1 })
  })
})

/**
 * Runs `body` (inside an async function, with SharedQueue in scope) in a child Node,
 * which must exit by itself within `ms`; one that does not is killed, by its pid.
 */
function runScript(body: string, ms = 15_000): Promise<NodeRun> {
  const script = path.join(tempDir(), 'script.js')
  fs.writeFileSync(
    script,
    `const { SharedQueue } = require(${JSON.stringify(SHARED_QUEUE)})
;(async () => {
${body}
})().catch((e) => { console.error(e); process.exitCode = 1 })
`,
  )
  return runNode(script, ms)
}

describe('a queue handle does not keep Node alive', () => {
  it('a Redis handle that connected and pushed, never closed: the process exits by itself', async () => {
    const name = freshName()
    const run = await runScript(`
const queue = await SharedQueue.connectRedis(${JSON.stringify(redisUrl)}, ${JSON.stringify(name)})
console.log(JSON.stringify(await queue.push('left', 'low', '{}', 1)))
`)
    expect(run).toEqual({ code: 0, signal: null, stdout: '{"position":1,"queueLength":1}\n', stderr: '' })
    // It did push: the request is in Redis for the next host.
    const queue = await open('redis', name)
    expect((await queue.snapshot()).queued.map((e: any) => e.id)).toEqual(['left'])
  })

  it('a handle whose listeners came and went, or that still listens: the process exits by itself', async () => {
    const run = await runScript(`
for (const queue of [SharedQueue.local('idle'), await SharedQueue.connectRedis(${JSON.stringify(redisUrl)}, ${JSON.stringify(freshName())})]) {
  const onAllocated = (p) => console.log(queue.kind + ' allocated ' + p.id)
  const allocated = new Promise((resolve) => queue.once('allocated', resolve))
  queue.on('allocated', onAllocated)
  // Waiting for an event holds nothing, so this timer keeps the process up meanwhile.
  const hold = setTimeout(() => { console.log('no allocated event'); process.exit(2) }, 10000)
  await queue.push('r', 'low', '{}', 1)
  await queue.take('h', 60000)
  await allocated
  clearTimeout(hold)
  queue.off('allocated', onAllocated)
}
const listening = await SharedQueue.connectRedis(${JSON.stringify(redisUrl)}, ${JSON.stringify(freshName())})
listening.on('completed', () => console.log('unexpected event'))
console.log('listening')
`)
    expect(run).toEqual({ code: 0, signal: null, stdout: 'local allocated r\nredis allocated r\nlistening\n', stderr: '' })
  })
})
