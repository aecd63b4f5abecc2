'use strict'
// SessionPool: the TypeScript module's pool API over the native scheduler. Rust
// decides (queue order, slots, retries, draining, rate-limit pauses, wait
// estimates); this class carries the decisions out with the spawner it was given,
// so the spawner's own events and completions stay exactly as for any session.
// Requests are numbered here (numbers are reused once a request is over, so they
// index an array); only the number and the priority's index cross into Rust, which
// keeps enqueueing cheap at tens of thousands of requests.

const { EventEmitter } = require('node:events')
const native = require('./native')
const { ClaudeSessionSpawner } = require('./spawner')
const convert = require('./convert')
const { kShared, runCallback } = require('./internal')
const { encodeConfig } = require('./encode')
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
  return Object.assign(new Error(message), { code }, extra)
}

class SessionPool extends EventEmitter {
  #spawner
  #hooks
  /** Keeps the native scheduler alive; `#h` names it to the native functions. */
  #scheduler
  #h
  /** request number -> entry, for requests queued or holding a slot */
  #entries = []
  #freeNumbers = []
  /** requestId -> entry, while the request is queued or holds a slot */
  #byId = new Map()
  /** sessionId -> entry */
  #sessions = new Map()
  #resumeTimer
  #draining
  /** The pool retries its requests' crashed sessions itself (autoRecovery). */
  #retries
  #idleWaiters = []
  /** With `config.queue`: the host's part in the shared queue, which does the work. */
  #shared = null

  constructor(spawner, config) {
    super()
    if (!(spawner instanceof ClaudeSessionSpawner)) throw typeError('spawner must be a ClaudeSessionSpawner', 'spawner')
    if (typeof config !== 'object' || config === null || Array.isArray(config)) {
      throw typeError('config must be an object', 'config')
    }
    const json = JSON.stringify(config)
    this.#scheduler = convert.call(() => new native.NativeScheduler(json))
    this.#h = this.#scheduler.handle
    this.#retries = config.autoRecovery !== false
    this.#spawner = spawner
    this.#hooks = spawner[kShared]()
    const queue = convert.call(() => native.sharedQueueConfig(json))
    if (queue) {
      this.#shared = new SharedPool(this, spawner, config, queue, this.#scheduler)
      return
    }
    spawner.on('session-ended', (event) => this.#onEnded(event))
    spawner.on('session-rate-limited', (event) => this.#onRateLimited(event))
  }

  requestSession(request) {
    if (this.#shared) return this.#requestShared(request)
    let entry
    let position
    try {
      const priority = this.#check(request)
      const queuedAt = queuedAtOf(request)
      const number = this.#number()
      position = convert.call(() => native.schedulerSubmit(this.#h, number, priority, queuedAt.getTime()))
      entry = { number, request, requestId: request.requestId, priority: request.priority, queuedAt, allocated: false, done: false, resolve: null, reject: null }
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
      this.#start(entry)
    } else {
      // A pause with requests waiting keeps Node alive until they can be served.
      this.#resumeTimer?.ref()
      if (this.listenerCount('request-queued') > 0) {
        this.emit('request-queued', { requestId: request.requestId, position, queueLength: native.schedulerQueuedCount(this.#h) })
      }
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

  #number() {
    return this.#freeNumbers.length > 0 ? this.#freeNumbers.pop() : this.#entries.length
  }

  /** Spawns the session of a request that holds a slot. */
  #start(entry) {
    let config = entry.request.config
    const fallback = this.#scheduler.defaultSessionTimeout
    if (!(config.timeout > 0) && fallback > 0) config = { ...config, timeout: fallback }
    // The spawn happens now; its outcome is handled a microtask later, as spawnSession's.
    new Promise((resolve) => resolve(this.#hooks.spawnJson(encodeConfig(config), this.#retries))).then(
      (result) => {
        this.#sessions.set(result.sessionId, entry)
        this.emit('session-allocated', { requestId: entry.request.requestId, sessionId: result.sessionId })
        if (!entry.allocated) {
          entry.allocated = true
          this.#call(entry, 'onAllocated', result.sessionId)
          entry.resolve(result)
        }
      },
      (error) => {
        native.schedulerSpawnFailed(this.#h, entry.number)
        this.#fail(entry, error)
        this.#admitNext()
      },
    )
  }

  #admitNext() {
    for (const number of native.schedulerAdmitNext(this.#h)) this.#start(this.#entries[number])
    this.#wakeIdle()
  }

  #onEnded({ sessionId, status }) {
    const entry = this.#sessions.get(sessionId)
    if (entry === undefined) return
    this.#sessions.delete(sessionId)
    const outcome = native.schedulerSessionEnded(this.#h, entry.number, status.state, status.executionTime ?? 0)
    this.emit('session-released', { sessionId, status })
    const requestId = entry.request.requestId
    if (typeof outcome === 'number') {
      this.emit('session-recovering', { sessionId, requestId, attempt: outcome })
    } else if (outcome === 'gave-up') {
      const why = this.#draining ? 'the pool is draining' : 'no attempt is left'
      const message = `Request ${requestId} failed: its session ended ${status.state}${status.errorMessage ? ` (${status.errorMessage})` : ''} and ${why}`
      this.#fail(entry, poolError(message, 'ERR_POOL_GAVE_UP', { status }))
    } else {
      this.#finish(entry)
      this.#call(entry, 'onCompleted', status)
    }
    this.#admitNext()
  }

  #onRateLimited({ sessionId, until, reason }) {
    if (!this.#sessions.has(sessionId) || this.#draining) return
    if (!native.schedulerThrottle(this.#h, until.getTime())) return
    this.emit('pool-throttled', { until, reason })
    this.#scheduleResume(until.getTime())
  }

  #scheduleResume(at) {
    clearTimeout(this.#resumeTimer)
    this.#resumeTimer = setTimeout(() => {
      this.#resumeTimer = undefined
      if (native.schedulerResumeIfDue(this.#h, Date.now())) {
        this.emit('pool-resumed')
        this.#admitNext()
      } else {
        const until = native.schedulerThrottledUntil(this.#h)
        if (until != null) this.#scheduleResume(until)
      }
    }, Math.max(0, at - Date.now()))
    if (native.schedulerQueuedCount(this.#h) === 0) this.#resumeTimer.unref()
  }

  /** The request is over: it no longer holds its id. */
  #finish(entry) {
    if (entry.done) return false
    entry.done = true
    this.#entries[entry.number] = undefined
    this.#freeNumbers.push(entry.number)
    this.#byId.delete(entry.request.requestId)
    return true
  }

  #fail(entry, error) {
    if (!this.#finish(entry)) return
    this.#call(entry, 'onFailed', error)
    if (!entry.allocated) entry.reject(error)
  }

  /** A callback that throws is reported and changes nothing. */
  #call(entry, name, argument) {
    runCallback(this, entry.request, name, argument)
  }

  getPoolStatus() {
    if (this.#shared) return this.#shared.status()
    const { requests, estimatedWaits } = native.schedulerQueue(this.#h)
    const entries = this.#entries
    const queuedRequests = Array.from(requests, (number, i) => {
      const entry = entries[number]
      return { requestId: entry.requestId, priority: entry.priority, queuedAt: entry.queuedAt, estimatedWaitTime: estimatedWaits[i] }
    })
    const activeSessions = []
    for (const sessionId of this.#sessions.keys()) {
      const status = this.#spawner.getSessionStatus(sessionId)
      if (status) activeSessions.push(status)
    }
    const capacity = this.#scheduler.capacity
    const activeCount = native.schedulerActiveCount(this.#h)
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
    if (entry === undefined || !native.schedulerCancel(this.#h, entry.number)) return false
    this.#fail(entry, poolError('Request cancelled', 'ERR_REQUEST_CANCELLED'))
    this.emit('request-cancelled', { requestId })
    return true
  }

  drain(timeoutMs = 30000) {
    if (typeof timeoutMs !== 'number' || !(timeoutMs >= 0)) {
      return Promise.reject(typeError('timeoutMs must be a non-negative number of milliseconds', 'timeoutMs'))
    }
    if (this.#shared) {
      this.#draining ??= this.#shared.drain(timeoutMs)
      return this.#draining
    }
    if (this.#draining) return this.#draining
    this.#draining = this.#drain(timeoutMs)
    return this.#draining
  }

  async #drain(timeoutMs) {
    this.emit('pool-draining')
    clearTimeout(this.#resumeTimer)
    for (const number of native.schedulerDrain(this.#h)) {
      this.#fail(this.#entries[number], poolError('Pool is draining', 'ERR_POOL_DRAINING'))
    }
    let timer
    const deadline = new Promise((resolve) => {
      timer = setTimeout(resolve, timeoutMs, 'deadline')
    })
    const outcome = await Promise.race([this.#idle(), deadline])
    clearTimeout(timer)
    if (outcome === 'deadline') {
      for (const sessionId of [...this.#sessions.keys()]) {
        // A session that ended meanwhile is no error: it is what drain waits for.
        this.#spawner.terminateSession(sessionId, true).catch(() => {})
      }
      await this.#idle()
    }
    this.emit('pool-drained')
  }

  /** Resolves when no request holds a slot. */
  #idle() {
    if (native.schedulerActiveCount(this.#h) === 0) return Promise.resolve('idle')
    return new Promise((resolve) => this.#idleWaiters.push(resolve))
  }

  #wakeIdle() {
    if (native.schedulerActiveCount(this.#h) !== 0) return
    for (const resolve of this.#idleWaiters.splice(0)) resolve('idle')
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
    const activeCount = native.schedulerActiveCount(this.#h)
    return {
      ...this.#spawner.getMetricsSummary(),
      poolUtilization: (activeCount / this.#scheduler.capacity) * 100,
      queueLength: native.schedulerQueuedCount(this.#h),
      queueWaitTime: native.schedulerQueueWaitMs(this.#h),
    }
  }
}

module.exports = { SessionPool }
