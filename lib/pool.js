'use strict'
// SessionPool: the native pool (Rust: queue order, slots, retries, draining,
// rate-limit pauses, wait estimates, the sessions themselves) as an EventEmitter with
// the TypeScript module's API. This class checks and converts arguments, keeps what
// only JavaScript can hold (a request's callbacks, its config until it is admitted,
// its promise), and turns the pool's deliveries into events and settlements.
// Requests are numbered here (numbers are reused once a request is over, so they
// index an array); only the number and the priority's index cross into Rust per
// request, which keeps enqueueing cheap at tens of thousands of requests.

const { EventEmitter } = require('node:events')
const native = require('./native')
const { ClaudeSessionSpawner } = require('./spawner')
const convert = require('./convert')
const { encodeConfig, daemonEnv } = require('./encode')
const { kAttach, kDeliver, kNative, kSession, emitSafely, runCallback } = require('./internal')
const { SharedPool } = require('./shared-pool')

/** Index of each priority in the core's `Priority::ALL`. */
const PRIORITY_INDEX = new Map([
  ['critical', 0],
  ['high', 1],
  ['medium', 2],
  ['low', 3],
])

const CALLBACKS = ['onAllocated', 'onCompleted', 'onFailed']

/** The request's `queuedAt`, or now when it has none (the contract lets it be omitted). */
function queuedAtOf(request) {
  const at = request.queuedAt
  return at instanceof Date && !Number.isNaN(at.getTime()) ? at : new Date()
}

function typeError(message, field) {
  const error = new TypeError(message)
  error.code = 'ERR_INVALID_CONFIG'
  if (field) error.field = field
  return error
}

function poolError(message, code, extra) {
  return Object.assign(code === 'ERR_INVALID_CONFIG' ? new TypeError(message) : new Error(message), { code }, extra)
}

class SessionPool extends EventEmitter {
  #spawner
  #native = null
  #h
  /** request number -> entry, for requests queued or holding a slot */
  #entries = []
  #freeNumbers = []
  /** requestId -> entry, while the request is queued or holds a slot */
  #byId = new Map()
  #draining = null
  #drained
  /** With `config.queue`: the host's part in the shared queue, which does the work. */
  #shared = null

  constructor(spawner, config) {
    super()
    if (!(spawner instanceof ClaudeSessionSpawner)) throw typeError('spawner must be a ClaudeSessionSpawner', 'spawner')
    if (typeof config !== 'object' || config === null || Array.isArray(config)) {
      throw typeError('config must be an object', 'config')
    }
    const json = JSON.stringify(config)
    this.#spawner = spawner
    const queue = convert.call(() => native.sharedQueueConfig(json))
    if (queue) {
      const limits = { capacity: config.maxConcurrentSessions, defaultSessionTimeout: config.defaultSessionTimeout }
      this.#shared = new SharedPool(this, spawner, config, queue, limits)
      return
    }
    this.#native = convert.call(() => new native.NativePool(spawner[kNative], json))
    this.#h = this.#native.handle
    spawner[kAttach](this.#native.target, this)
  }

  requestSession(request) {
    if (this.#shared) return this.#requestShared(request)
    let entry
    let position
    try {
      const priority = this.#check(request)
      const queuedAt = queuedAtOf(request)
      const number = this.#freeNumbers.length > 0 ? this.#freeNumbers.pop() : this.#entries.length
      position = convert.call(() => native.poolSubmit(this.#h, number, priority, queuedAt.getTime()))
      entry = { number, request, requestId: request.requestId, priority: request.priority, queuedAt, allocated: false, resolve: null, reject: null }
    } catch (error) {
      return Promise.reject(error)
    }
    const promise = new Promise((resolve, reject) => {
      entry.resolve = resolve
      entry.reject = reject
    })
    this.#entries[entry.number] = entry
    this.#byId.set(request.requestId, entry)
    if (position === 0) {
      this.#supply(entry.number)
    } else if (this.listenerCount('request-queued') > 0) {
      emitSafely(this, 'request-queued', { requestId: request.requestId, position, queueLength: native.poolQueuedCount(this.#h) })
    }
    return promise
  }

  async #requestShared(request) {
    this.#check(request)
    const queuedAt = queuedAtOf(request)
    return this.#shared.request(request, queuedAt)
  }

  /** With a shared queue: this pool's host name in it, else null. */
  get host() {
    return this.#shared ? this.#shared.host : null
  }

  /** Validates a request; returns its priority's index. */
  #check(request) {
    if (typeof request !== 'object' || request === null) throw typeError('request must be an object', 'request')
    const { requestId } = request
    if (typeof requestId !== 'string' || requestId === '') {
      throw typeError('request.requestId must be a non-empty string', 'request.requestId')
    }
    if (this.#byId.has(requestId) || this.#shared?.has(requestId)) {
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
    const entry = p?.requestId === undefined ? undefined : this.#entries[Number(p.requestId)]
    switch (name) {
      case 'session-allocated':
        if (entry === undefined) return
        emitSafely(this, name, { requestId: entry.requestId, sessionId: p.sessionId })
        if (!entry.allocated) {
          entry.allocated = true
          runCallback(this, entry.request, 'onAllocated', p.sessionId)
          entry.resolve(this.#spawner[kSession](p.sessionId))
        }
        return
      case 'session-released':
        return emitSafely(this, name, { sessionId: p.sessionId, status: convert.status(p.status) })
      case 'session-recovering':
        return emitSafely(this, name, { sessionId: p.sessionId, requestId: entry?.requestId, attempt: p.attempt })
      case 'request-cancelled':
        return emitSafely(this, name, { requestId: entry?.requestId })
      case 'request-completed':
        if (entry === undefined) return
        this.#finish(entry)
        return runCallback(this, entry.request, 'onCompleted', convert.status(p.status))
      case 'request-failed': {
        if (entry === undefined) return
        this.#finish(entry)
        const error = poolError(p.message, p.code, p.status === undefined ? {} : { status: convert.status(p.status) })
        runCallback(this, entry.request, 'onFailed', error)
        if (!entry.allocated) entry.reject(error)
        return
      }
      case 'pool-throttled':
        return emitSafely(this, name, { until: new Date(p.until), reason: p.reason })
      case 'pool-drained':
        emitSafely(this, name)
        return this.#drained?.()
      default:
        emitSafely(this, name)
    }
  }

  /** The request is over: it no longer holds its id or its number. */
  #finish(entry) {
    this.#entries[entry.number] = undefined
    this.#freeNumbers.push(entry.number)
    this.#byId.delete(entry.requestId)
  }

  getPoolStatus() {
    if (this.#shared) return this.#shared.status()
    const { requests, estimatedWaits } = native.poolQueue(this.#h)
    const entries = this.#entries
    const queuedRequests = Array.from(requests, (number, i) => {
      const entry = entries[number]
      return { requestId: entry.requestId, priority: entry.priority, queuedAt: entry.queuedAt, estimatedWaitTime: estimatedWaits[i] }
    })
    const activeSessions = this.#native.activeSessions().map(convert.status)
    const capacity = this.#native.capacity
    const activeCount = native.poolActiveCount(this.#h)
    return {
      capacity,
      activeCount,
      idleCount: activeSessions.filter((s) => s.state === 'waiting_input').length,
      queuedCount: queuedRequests.length,
      utilization: (activeCount / capacity) * 100,
      activeSessions,
      queuedRequests,
    }
  }

  cancelRequest(requestId) {
    if (this.#shared) return this.#shared.cancel(requestId)
    const entry = typeof requestId === 'string' ? this.#byId.get(requestId) : undefined
    return entry !== undefined && convert.call(() => this.#native.cancel(entry.number))
  }

  drain(timeoutMs = 30000) {
    if (typeof timeoutMs !== 'number' || !(timeoutMs >= 0)) {
      return Promise.reject(typeError('timeoutMs must be a non-negative number of milliseconds', 'timeoutMs'))
    }
    if (this.#shared) {
      this.#draining ??= this.#shared.drain(timeoutMs)
      return this.#draining
    }
    // Settled by the pool's own `pool-drained`, which follows every event before it.
    this.#draining ??= new Promise((resolve) => {
      this.#drained = resolve
      convert.call(() => this.#native.drain(timeoutMs))
    })
    return this.#draining
  }

  /**
   * Added. The pool status with a fresh look at the shared queue (`getPoolStatus`
   * shows it as of the last tick); without a shared queue, the same as
   * `getPoolStatus()`.
   */
  async getPoolStatusAsync() {
    return this.#shared ? this.#shared.statusAsync() : this.getPoolStatus()
  }

  /**
   * Added. Cancels a request wherever it was made and wherever it runs (a running
   * one is stopped by its host); true when it was queued or running.
   */
  async cancelRequestAsync(requestId) {
    return this.#shared ? this.#shared.cancelAsync(requestId) : this.cancelRequest(requestId)
  }

  /**
   * Added. With a shared queue: hands back what this host holds (its sessions are
   * stopped and run again elsewhere), leaves the queue and closes the connection.
   * Without one: drains with no grace.
   */
  async close() {
    if (this.#shared) return this.#shared.close()
    await this.drain(0)
  }

  getMetrics() {
    if (this.#shared) return this.#shared.metrics()
    return {
      ...this.#spawner.getMetricsSummary(),
      poolUtilization: (native.poolActiveCount(this.#h) / this.#native.capacity) * 100,
      queueLength: native.poolQueuedCount(this.#h),
      queueWaitTime: native.poolQueueWaitMs(this.#h),
    }
  }
}

module.exports = { SessionPool }
