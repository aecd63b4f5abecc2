'use strict'
// SharedQueue: a handle on a request queue that several hosts share (in Redis) or
// that one process keeps (local), over the native NativeSharedQueue. Internal
// plumbing for SessionPool, not part of the package's API: it is not exported from
// the package root or the typings.
//
// This module owns two things the native handle cannot do: results and errors as
// objects of the caller's realm (Dates, TypeErrors), and the native event
// subscription, which exists only while the emitter has listeners for queue events.

const { EventEmitter } = require('node:events')
const native = require('./native')
const convert = require('./convert')

const EVENTS = ['queued', 'allocated', 'started', 'completed', 'failed', 'cancelled', 'requeued', 'lagged']

const kConstruct = Symbol('SharedQueue.construct')

function argError(message, field) {
  return Object.assign(new TypeError(message), { code: 'ERR_INVALID_ARG', field })
}

function encodeOptions(options) {
  if (options === undefined || options === null) return undefined
  if (typeof options !== 'object' || Array.isArray(options)) throw argError('options must be an object', 'options')
  return JSON.stringify(options)
}

/** Awaits a native promise; its errors, thrown or rejected, come out of this realm. */
async function settle(fn) {
  try {
    return await fn()
  } catch (e) {
    throw convert.error(e)
  }
}

function toDate(ms) {
  return new Date(ms)
}

/** The native payload, rebuilt with this realm's objects; a queue-made failure has host null. */
function eventPayload(name, p) {
  switch (name) {
    case 'queued':
      return { id: p.id, priority: p.priority }
    case 'allocated':
      return { id: p.id, host: p.host, attempt: p.attempt }
    case 'started':
      return { id: p.id, host: p.host, attempt: p.attempt, detail: p.detail }
    case 'completed':
      return { id: p.id, host: p.host, detail: p.detail }
    case 'failed':
      return { id: p.id, host: p.host ?? null, detail: p.detail }
    case 'cancelled':
      return { id: p.id }
    case 'requeued':
      return { id: p.id, attempt: p.attempt }
    case 'lagged':
      return { missed: p.missed }
    default:
      return { ...p }
  }
}

class SharedQueue extends EventEmitter {
  #native
  #subscribed = false
  #closed = false

  /** The queue `name` in the Redis at `url`; `options`: `{ connectTimeoutMs, responseTimeoutMs }`. */
  static async connectRedis(url, name, options) {
    const handle = await settle(() => native.NativeSharedQueue.connectRedis(url, name, encodeOptions(options)))
    return new SharedQueue(kConstruct, handle)
  }

  /** The in-process queue `name`, shared by every handle of that name in this process. */
  static local(name) {
    return new SharedQueue(kConstruct, convert.call(() => native.NativeSharedQueue.local(name)))
  }

  constructor(token, handle) {
    if (token !== kConstruct) throw new TypeError('use SharedQueue.connectRedis() or SharedQueue.local()')
    super()
    this.#native = handle
    // 'newListener' comes before the listener is added, 'removeListener' after it is gone.
    this.on('newListener', (event) => {
      if (EVENTS.includes(event)) this.#subscribe()
    })
    this.on('removeListener', (event) => {
      if (EVENTS.includes(event) && !this.#listening()) this.#unsubscribe()
    })
  }

  /** `local` or `redis`. */
  get kind() {
    return this.#native.kind
  }

  /**
   * `{ position, queueLength }`; position from 1. With `limit`, refused
   * (`ERR_POOL_QUEUE_FULL`) when that many requests are waiting already.
   */
  async push(id, priority, payload, attempt, limit) {
    const { position, queueLength } = await settle(() => this.#native.push(id, priority, payload, attempt, limit))
    return { position, queueLength }
  }

  /**
   * The next request under a lease of `leaseMs` for `host`, or null. `note` is what
   * the host of an earlier attempt passed to `started` (null if none did).
   */
  async take(host, leaseMs) {
    const t = await settle(() => this.#native.take(host, leaseMs))
    if (t === null || t === undefined) return null
    return {
      id: t.id,
      priority: t.priority,
      payload: t.payload,
      attempt: t.attempt,
      enqueuedAt: toDate(t.enqueuedAt),
      leaseExpiresAt: toDate(t.leaseExpiresAt),
      note: t.note ?? null,
    }
  }

  /** `{ held, cancelRequested }`: not held means the host must stop the session. */
  async renew(host, id, leaseMs) {
    const { held, cancelRequested } = await settle(() => this.#native.renew(host, id, leaseMs))
    return { held, cancelRequested }
  }

  /**
   * The holder's session on `id` started: `detail` becomes the request's note (a host
   * that takes the request over after a lapse or release gets it as `note`) and goes
   * out in a 'started' event. Anyone but the holder: ERR_QUEUE_NOT_HOLDER.
   */
  async started(host, id, detail) {
    await settle(() => this.#native.started(host, id, detail))
  }

  /** `outcome`: 'completed' or 'failed' (with `detail`), or 'cancelled'. */
  async finish(host, id, outcome, executionMs, detail) {
    await settle(() => this.#native.finish(host, id, outcome, executionMs, detail))
  }

  /** Back to the front of its priority; `note`, if given, replaces the one the next attempt reads. */
  async release(host, id, note) {
    await settle(() => this.#native.release(host, id, note))
  }

  /** What became of lapsed leases: `{ id, host, fate, attempt? , attempts? }`. */
  async requeueExpired(maxAttempts) {
    const expired = await settle(() => this.#native.requeueExpired(maxAttempts))
    return Array.from(expired, ({ id, host, fate, attempt, attempts }) => {
      if (fate === 'requeued') return { id, host, fate, attempt }
      if (fate === 'failed') return { id, host, fate, attempts }
      return { id, host, fate }
    })
  }

  /** 'removed', 'flagged' or 'unknown'. */
  async cancel(id) {
    return settle(() => this.#native.cancel(id))
  }

  /**
   * Where request `id` stands, or how it ended, for a host that may have missed its
   * events: `{ state: 'queued', position, attempt }` (position from 1),
   * `{ state: 'leased', host, attempt }`, `{ state: 'finished', event }` with the
   * terminal event as listeners get it plus its `name` (`{ name: 'completed', id, host,
   * detail }`, `{ name: 'failed', id, host, detail }` with host null when the queue
   * failed it, or `{ name: 'cancelled', id }`), kept for an hour by the queue's clock,
   * or `{ state: 'unknown' }`.
   */
  async lookup(id) {
    const s = await settle(() => this.#native.lookup(id))
    switch (s.state) {
      case 'queued':
        return { state: s.state, position: s.position, attempt: s.attempt }
      case 'leased':
        return { state: s.state, host: s.host, attempt: s.attempt }
      case 'finished':
        return { state: s.state, event: { name: s.event.name, ...eventPayload(s.event.name, s.event) } }
      default:
        return { state: 'unknown' }
    }
  }

  /** `host` is live with `capacity` sessions for `ttlMs` from now (by the queue's clock); again refreshes. */
  async announce(host, capacity, ttlMs) {
    await settle(() => this.#native.announce(host, capacity, ttlMs))
  }

  /** `host` is no longer live. */
  async leave(host) {
    await settle(() => this.#native.leave(host))
  }

  /**
   * `{ queued: [{ id, priority, attempt, enqueuedAt }], leased, meanExecutionMs, hosts, capacity }`:
   * meanExecutionMs is null until one finished; hosts and capacity count the live announced hosts.
   */
  async snapshot() {
    const s = await settle(() => this.#native.snapshot())
    return {
      queued: Array.from(s.queued, (e) => ({ id: e.id, priority: e.priority, attempt: e.attempt, enqueuedAt: toDate(e.enqueuedAt) })),
      leased: s.leased,
      meanExecutionMs: s.meanExecutionMs ?? null,
      hosts: s.hosts,
      capacity: s.capacity,
    }
  }

  /** No more events; later operations reject with ERR_QUEUE_CLOSED. */
  close() {
    this.#closed = true
    this.#unsubscribe()
    this.#native.close()
  }

  #listening() {
    return EVENTS.some((event) => this.listenerCount(event) > 0)
  }

  #subscribe() {
    if (this.#subscribed || this.#closed) return
    convert.call(() => this.#native.subscribe((name, payload) => this.#deliver(name, payload)))
    this.#subscribed = true
  }

  #unsubscribe() {
    if (!this.#subscribed) return
    this.#subscribed = false
    this.#native.unsubscribe()
  }

  #deliver(name, payload) {
    if (!this.#subscribed) return
    if (name === 'native-error') {
      const error = Object.assign(new Error(String(payload)), { code: 'ERR_NATIVE' })
      if (this.listenerCount('error') > 0) this.emit('error', error)
      else process.emitWarning(error)
      return
    }
    this.emit(name, eventPayload(name, payload))
  }
}

module.exports = { SharedQueue }
