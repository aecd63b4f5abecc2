'use strict'
// SharedQueue: a handle on a request queue that several hosts share (in Redis) or
// that one process keeps (local), over the native NativeSharedQueue, for tests and
// tools that watch or drive a queue directly (the pools' host loop is native). Not
// part of the package's API: not exported from the package root or the typings.
// Each operation is the Rust `RequestQueue`'s (see its docs); this module makes
// times `Date`s and errors of the caller's realm, and holds the native event
// subscription only while the emitter has listeners for queue events.

const { EventEmitter } = require('node:events')
const native = require('./native')
const convert = require('./convert')
const { isObject } = require('./encode')

const EVENTS = ['queued', 'allocated', 'started', 'completed', 'failed', 'cancelled', 'requeued', 'lagged']

const kConstruct = Symbol('SharedQueue.construct')

function queueOptions(options) {
  if (options === undefined || options === null) return undefined
  if (!isObject(options)) throw convert.typeError('options must be an object', 'options', 'ERR_INVALID_ARG')
  return JSON.stringify(options)
}

const { settle } = convert

/** A native object as one of this realm (its prototype the caller's `Object.prototype`). */
const plain = (o) => ({ ...o })

/** An event's payload as listeners get it: a failure the queue made itself has host null. */
function eventPayload(name, p) {
  const payload = plain(p)
  if (name === 'failed') payload.host ??= null
  return payload
}

class SharedQueue extends EventEmitter {
  #native
  #subscribed = false
  #closed = false

  /** The queue `name` in the Redis at `url`; `options`: `{ connectTimeoutMs, responseTimeoutMs }`. */
  static async connectRedis(url, name, options) {
    const handle = await settle(() => native.NativeSharedQueue.connectRedis(url, name, queueOptions(options)))
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
    this.on('newListener', (event) => EVENTS.includes(event) && this.#subscribe())
    this.on('removeListener', (event) => EVENTS.includes(event) && !this.#listening() && this.#unsubscribe())
  }

  /** `local` or `redis`. */
  get kind() { return this.#native.kind } // prettier-ignore

  /** `{ position, queueLength }`; with `limit`, ERR_POOL_QUEUE_FULL when that many wait already. */
  async push(id, priority, payload, attempt, limit) {
    return plain(await settle(() => this.#native.push(id, priority, payload, attempt, limit)))
  }

  /** The next request under a lease for `host`, or null; `note`: what an earlier attempt's host said. */
  async take(host, leaseMs) {
    const t = await settle(() => this.#native.take(host, leaseMs))
    if (t == null) return null
    return { ...t, enqueuedAt: new Date(t.enqueuedAt), leaseExpiresAt: new Date(t.leaseExpiresAt) }
  }

  /** `{ held, cancelRequested }`: not held means the host must stop the session. */
  async renew(host, id, leaseMs) {
    return plain(await settle(() => this.#native.renew(host, id, leaseMs)))
  }

  /** The holder's session started: `detail` becomes the request's note and goes out in `started`. */
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
    return Array.from(await settle(() => this.#native.requeueExpired(maxAttempts)), plain)
  }

  /** 'removed', 'flagged' or 'unknown'. */
  cancel(id) {
    return settle(() => this.#native.cancel(id))
  }

  /**
   * `{ state: 'queued', position, attempt }`, `{ state: 'leased', host, attempt }`,
   * `{ state: 'finished', event }` (the terminal event as listeners get it, with its
   * `name`) or `{ state: 'unknown' }`.
   */
  async lookup(id) {
    const s = plain(await settle(() => this.#native.lookup(id)))
    if (s.state === 'finished') s.event = eventPayload(s.event.name, s.event)
    return s
  }

  /** `host` is live with `capacity` sessions for `ttlMs` from now (by the queue's clock). */
  async announce(host, capacity, ttlMs) {
    await settle(() => this.#native.announce(host, capacity, ttlMs))
  }

  /** `host` is no longer live. */
  async leave(host) {
    await settle(() => this.#native.leave(host))
  }

  /** `{ queued: [{ id, priority, attempt, enqueuedAt }], leased, meanExecutionMs, hosts, capacity }`. */
  async snapshot() {
    const s = plain(await settle(() => this.#native.snapshot()))
    s.queued = Array.from(s.queued, (e) => ({ ...e, enqueuedAt: new Date(e.enqueuedAt) }))
    s.meanExecutionMs ??= null
    return s
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
