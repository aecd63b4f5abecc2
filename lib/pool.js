'use strict'
// SessionPool: the native pool (queue, slots, retries, draining, rate-limit pauses,
// wait estimates, its sessions; with `config.queue` the host loop of a shared queue)
// as an EventEmitter with the TypeScript module's API. This class checks arguments,
// keeps what only JavaScript can hold (callbacks, the config until admission, the
// promise), and turns the pool's deliveries into events and settlements. Without a
// shared queue, requests are numbered here (reused once over, indexing an array): only
// numbers cross into Rust per request, which keeps enqueueing cheap.

const { EventEmitter } = require('node:events')
const native = require('./native')
const { ClaudeSessionSpawner } = require('./spawner')
const convert = require('./convert')
const { encodeConfig, daemonEnv, isObject } = require('./encode')
const { kAttach, kDeliver, kNative, kSession, emitSafely, reportLater, runCallback } = require('./internal')

/** Index of each priority in the core's `Priority::ALL`. */
const PRIORITY_INDEX = new Map(['critical', 'high', 'medium', 'low'].map((p, i) => [p, i]))

const CALLBACKS = ['onAllocated', 'onCompleted', 'onFailed']
/** `poolSubmit` answers a queued request's `position + queueLength * QUEUED_SHIFT` (src/napi/pool.rs). */
const QUEUED_SHIFT = 2 ** 26

/** The request's `queuedAt`, or now when it has none (the contract lets it be omitted). */
const queuedAtOf = ({ queuedAt: at }) => (at instanceof Date && !Number.isNaN(at.getTime()) ? at : new Date())

const { typeError } = convert
const poolError = (message, code, extra) =>
  Object.assign(code === 'ERR_INVALID_CONFIG' ? new TypeError(message) : new Error(message), { code }, extra)

/** A payload's fields that are set (the contract's events have no undefined keys). */
function defined(payload) {
  for (const key of Object.keys(payload)) if (payload[key] === undefined) delete payload[key]
  return payload
}

/** A shared pool's status: its times as Dates. */
function sharedStatus(s) {
  s.activeSessions.forEach(convert.status)
  for (const q of s.queuedRequests) q.queuedAt = new Date(q.queuedAt)
  s.shared.asOf = new Date(s.shared.asOf)
  return s
}

class SessionPool extends EventEmitter {
  #spawner
  #native
  #h
  /** Without a shared queue: request number -> entry, for requests queued or holding a slot. */
  #entries = []
  #freeNumbers = []
  /** requestId -> entry, while the request is not settled */
  #byId = new Map()
  #draining = null
  #drained
  #closed = false

  constructor(spawner, config) {
    super()
    if (!(spawner instanceof ClaudeSessionSpawner)) throw typeError('spawner must be a ClaudeSessionSpawner', 'spawner')
    if (!isObject(config)) throw typeError('config must be an object', 'config')
    this.#spawner = spawner
    this.#native = convert.call(() => new native.NativePool(spawner[kNative], JSON.stringify(config)))
    this.#h = this.#native.handle
    spawner[kAttach](this.#native.target, this)
  }

  /** With a shared queue: this pool's host name in it, else null. */
  get host() {
    return this.#native.host ?? null
  }

  requestSession(request) {
    if (this.#h === 0) return this.#requestShared(request)
    let entry
    let queued
    try {
      const priority = this.#check(request)
      const queuedAt = queuedAtOf(request)
      const number = this.#freeNumbers.length > 0 ? this.#freeNumbers.pop() : this.#entries.length
      queued = native.poolSubmit(this.#h, number, priority, queuedAt.getTime())
      entry = { number, request, requestId: request.requestId, priority: request.priority, queuedAt, allocated: false, resolve: null, reject: null }
    } catch (error) {
      return Promise.reject(convert.error(error))
    }
    const promise = this.#settledBy(entry)
    this.#entries[entry.number] = entry
    if (queued === 0) {
      this.#supply(entry.number)
    } else if (this.listenerCount('request-queued') > 0) {
      const queueLength = Math.floor(queued / QUEUED_SHIFT)
      try {
        this.emit('request-queued', { requestId: request.requestId, position: queued - queueLength * QUEUED_SHIFT, queueLength })
      } catch (error) {
        reportLater(error)
      }
    }
    return promise
  }

  /** On the shared queue: another host's session's completion settles with the request. */
  #requestShared(request) {
    let entry
    try {
      const priority = this.#check(request)
      const queuedAt = queuedAtOf(request)
      entry = { number: undefined, request, requestId: request.requestId, priority: request.priority, queuedAt, allocated: false, resolve: null, reject: null }
      this.#native.request(request.requestId, priority, queuedAt.getTime(), encodeConfig(request.config))
    } catch (error) {
      return Promise.reject(convert.error(error))
    }
    entry.completion = new Promise((resolve) => (entry.complete = resolve))
    return this.#settledBy(entry)
  }

  /** The promise `entry` settles, with the entry known by its id from now on. */
  #settledBy(entry) {
    this.#byId.set(entry.requestId, entry)
    return new Promise((resolve, reject) => {
      entry.resolve = resolve
      entry.reject = reject
    })
  }

  /** Validates a request; returns its priority's index. */
  #check(request) {
    if (typeof request !== 'object' || request === null) throw typeError('request must be an object', 'request')
    const { requestId } = request
    if (typeof requestId !== 'string' || requestId === '') {
      throw typeError('request.requestId must be a non-empty string', 'request.requestId')
    }
    if (this.#byId.has(requestId)) {
      throw typeError(`request.requestId ${JSON.stringify(requestId)} is already queued or active`, 'request.requestId')
    }
    const priority = PRIORITY_INDEX.get(request.priority)
    if (priority === undefined) {
      throw typeError("request.priority must be one of 'critical', 'high', 'medium', 'low'", 'request.priority')
    }
    if (typeof request.config !== 'object' || request.config === null) {
      throw typeError('request.config must be an object', 'request.config')
    }
    for (const name of CALLBACKS) {
      if (request[name] !== undefined && typeof request[name] !== 'function') {
        throw typeError(`request.${name} must be a function`, `request.${name}`)
      }
    }
    if (this.#closed) throw poolError('Pool is closed', 'ERR_POOL_CLOSED')
    if (this.#draining) throw poolError('Pool is draining: it admits no new requests', 'ERR_POOL_DRAINING')
    return priority
  }

  /** The native pool admitted request `number`: it gets the config, and its session starts. */
  #supply(number) {
    const entry = this.#entries[number]
    if (entry === undefined) return
    let json
    let problem
    try {
      json = encodeConfig(entry.request.config)
    } catch (error) {
      problem = error.message
    }
    this.#native.supply(number, json, problem, daemonEnv())
  }

  /** The pool's deliveries: events for listeners, and each request's settlement. */
  [kDeliver](name, p) {
    if (name === 'pool-supply') return this.#supply(p)
    const id = p?.requestId
    const entry = id === undefined ? undefined : this.#h === 0 ? this.#byId.get(id) : this.#entries[Number(id)]
    const requestId = entry?.requestId
    switch (name) {
      case 'request-queued':
        if (entry) entry.pushed = true
        return emitSafely(this, name, { requestId, position: p.position, queueLength: p.queueLength })
      case 'session-allocated': {
        if (entry === undefined) return
        emitSafely(this, name, defined({ requestId, sessionId: p.sessionId, host: p.host }))
        if (entry.allocated) return
        entry.allocated = true
        runCallback(this, entry.request, 'onAllocated', p.sessionId)
        const status = convert.status(p.status)
        entry.status = status
        const result = this.#h === 0 ? { sessionId: p.sessionId, status, completion: entry.completion, host: p.host } : this.#spawner[kSession](p.sessionId)
        return entry.resolve(result)
      }
      case 'session-released':
        return emitSafely(this, name, defined({ sessionId: p.sessionId, status: convert.status(p.status), requestId, host: p.host }))
      case 'session-recovering':
        return emitSafely(this, name, defined({ sessionId: p.sessionId, requestId, attempt: p.attempt, host: p.host }))
      case 'request-cancelled':
        return emitSafely(this, name, { requestId })
      case 'request-completed': {
        if (entry === undefined) return
        const status = convert.status(p.status)
        this.#finish(entry)
        // After the reactions to its allocation, which may have come in the same batch.
        return queueMicrotask(() => {
          runCallback(this, entry.request, 'onCompleted', status)
          entry.complete?.(status)
        })
      }
      case 'request-failed': {
        if (entry === undefined) return
        const status = p.status === undefined ? undefined : convert.status(p.status)
        this.#finish(entry)
        const error = poolError(p.message, p.code, status === undefined ? {} : { status })
        // A shared request the queue never took (full, unreachable) is refused: its
        // promise rejects, as a refusal of the in-process queue throws, with no onFailed.
        const refused = this.#h === 0 && !entry.pushed && !entry.allocated
        return queueMicrotask(() => {
          if (!refused) runCallback(this, entry.request, 'onFailed', error)
          if (!entry.allocated) entry.reject(error)
          entry.complete?.(status ?? entry.status ?? null)
        })
      }
      case 'pool-throttled':
        return emitSafely(this, name, { until: new Date(p.until), reason: p.reason })
      case 'pool-drained':
        emitSafely(this, name)
        return this.#drained?.()
      case 'queue-unavailable':
        return emitSafely(this, name, { error: poolError(p.message, p.code), host: p.host })
      case 'queue-reconnected':
      case 'queue-lagged':
        return emitSafely(this, name, { ...p })
      case 'lease-lost':
        return emitSafely(this, name, { requestId: p.requestId, sessionId: p.sessionId ?? null, host: p.host })
      case 'queue-error':
        return emitSafely(this, name, { error: poolError(p.message, p.code) })
      default:
        emitSafely(this, name)
    }
  }

  /** The request is over: it no longer holds its id (or its number). */
  #finish(entry) {
    this.#byId.delete(entry.requestId)
    if (entry.number === undefined) return
    this.#entries[entry.number] = undefined
    this.#freeNumbers.push(entry.number)
  }

  /** With a shared queue, the queue part is as of the last tick (see `getPoolStatusAsync`). */
  getPoolStatus() {
    if (this.#h === 0) return sharedStatus(convert.call(() => this.#native.sharedStatus()))
    const { activeSessions, ...status } = this.#native.localStatus()
    const { requests, estimatedWaits } = native.poolQueue(this.#h)
    const queuedRequests = Array.from(requests, (number, i) => {
      const { requestId, priority, queuedAt } = this.#entries[number]
      return { requestId, priority, queuedAt, estimatedWaitTime: estimatedWaits[i] }
    })
    return { ...status, queuedCount: queuedRequests.length, activeSessions: activeSessions.map(convert.status), queuedRequests }
  }

  /** Added. The status with a fresh look at a shared queue (without one, `getPoolStatus()`). */
  async getPoolStatusAsync() {
    if (this.#h !== 0) return this.getPoolStatus()
    return sharedStatus(await convert.settle(() => this.#native.sharedStatusAsync()))
  }

  /**
   * Without a shared queue: removes a queued request. With one: true when this host
   * made or runs the request, and the cancel goes to the queue.
   */
  cancelRequest(requestId) {
    if (typeof requestId !== 'string') return false
    if (this.#h === 0) return convert.call(() => this.#native.cancelShared(requestId))
    const entry = this.#byId.get(requestId)
    return entry !== undefined && convert.call(() => this.#native.cancel(entry.number))
  }

  /** Added. Cancels a request wherever it was made and runs; true when it was queued or running. */
  async cancelRequestAsync(requestId) {
    if (this.#h !== 0 || typeof requestId !== 'string') return this.cancelRequest(requestId)
    return convert.settle(() => this.#native.cancelAsync(requestId))
  }

  drain(timeoutMs = 30000) {
    if (typeof timeoutMs !== 'number' || !(timeoutMs >= 0)) {
      return Promise.reject(typeError('timeoutMs must be a non-negative number of milliseconds', 'timeoutMs'))
    }
    // Settled by the pool's own `pool-drained`, which follows every event before it.
    this.#draining ??= new Promise((resolve) => {
      this.#drained = resolve
      convert.call(() => this.#native.drain(timeoutMs))
    })
    return this.#draining
  }

  /**
   * Added. With a shared queue: hands back what this host holds (its sessions are
   * stopped and run again elsewhere), leaves the queue and closes the connection.
   * Without one: drains with no grace.
   */
  async close() {
    if (this.#h !== 0) return this.drain(0)
    this.#closed = true
    this.#draining ??= new Promise((resolve) => (this.#drained = resolve))
    await this.#native.close()
  }

  getMetrics() {
    const { summary, ...pool } = convert.call(() => this.#native.metrics())
    return { ...summary, ...pool }
  }
}

module.exports = { SessionPool }
