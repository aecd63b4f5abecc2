'use strict'
// A SessionPool whose queue is shared with pools on other hosts (`config.queue`).
// Redis decides (one atomic script per operation: who takes what, in which order,
// whose lease lapsed); this module carries the decisions out on one host:
//
// - as a requester: a request becomes data in the shared queue, and its callbacks
//   and promise settle from the events every host publishes (started, completed,
//   failed, cancelled), wherever it runs;
// - as a worker: while it has free slots it takes requests, runs their sessions
//   with its spawner, renews their leases on every tick, stops a session whose
//   lease it lost (or could not renew in time) and reports how it ended;
// - as a good citizen: it announces its capacity (for the shared wait estimate)
//   and puts lapsed leases of dead hosts back in the queue.
//
// Pool events are emitted on the host where the request was made; the spawner on
// the host that runs a session emits that session's own events, as always.

const crypto = require('node:crypto')
const os = require('node:os')
const native = require('./native')
const convert = require('./convert')
const { encodeConfig } = require('./encode')
const { SharedQueue } = require('./shared-queue')
const { kShared, runCallback } = require('./internal')

const RETRIED_STATES = ['timeout', 'crashed']
const DEFAULT_EXECUTION_MS = 60_000
/**
 * Characters of stdout and stderr a status keeps when it travels to the requesting
 * host: every end goes through Redis's event stream, which keeps thousands of them.
 * The whole output is in the session directory on the host that ran it.
 */
const PORTABLE_OUTPUT = 16 * 1024
/** How often a host asks the queue about its unsettled requests, events or not. */
const RECONCILE_EVERY_MS = 60_000

function poolError(message, code, extra) {
  return Object.assign(new Error(message), { code }, extra)
}

function isNotHolder(error) {
  return error?.code === 'ERR_QUEUE_NOT_HOLDER'
}

/** A status fit to travel: its output cut to the newest PORTABLE_OUTPUT characters. */
function portable(status, host) {
  const copy = { ...status, host }
  for (const key of ['stdout', 'stderr']) {
    const text = status[key]
    if (typeof text === 'string' && text.length > PORTABLE_OUTPUT) {
      copy[key] = text.slice(-PORTABLE_OUTPUT)
      copy[`${key}Truncated`] = true
    }
  }
  return copy
}

/** A status that travelled as JSON: its times are Dates again. */
function reviveStatus(s) {
  if (s === null || typeof s !== 'object') return s ?? null
  if (typeof s.startTime === 'string') s.startTime = new Date(s.startTime)
  if (typeof s.endTime === 'string') s.endTime = new Date(s.endTime)
  if (Array.isArray(s.violations)) {
    for (const v of s.violations) if (typeof v.timestamp === 'string') v.timestamp = new Date(v.timestamp)
  }
  return s
}

/**
 * The payload: a header line (JSON without newlines) and the config's JSON, which
 * the taking host hands to its spawner as it is.
 */
function encodePayload(header, configJson) {
  return `${JSON.stringify(header)}\n${configJson}`
}

function decodePayload(payload) {
  const cut = payload.indexOf('\n')
  if (cut < 0) throw new Error('payload has no header line')
  return { header: JSON.parse(payload.slice(0, cut)), configJson: payload.slice(cut + 1) }
}

class SharedPool {
  /** The SessionPool whose events this emits. */
  #pool
  #spawner
  #hooks
  #queueConfig
  #capacity
  #defaultTimeout
  /** `maxQueueSize` as the push's limit (checked by Redis in the push itself), or undefined. */
  #queueLimit
  #retries
  #host
  #queue = null
  #connecting = null
  /** requestId -> entry, for requests made here that are not settled. */
  #own = new Map()
  /** requestId -> run, for requests this host holds a lease on. */
  #held = new Map()
  /**
   * Requests refused here (requestSession rejected) that the queue may hold all the
   * same: a push whose answer was lost may have been run by Redis. They are cancelled
   * as soon as the queue answers, and never run here.
   */
  #withdrawn = new Set()
  #bySession = new Map()
  #taking = 0
  #pumping = false
  #pumpAgain = false
  #ticker
  #tickMs
  #ticking = false
  /** When the queue last answered after not answering (0 while it does not). */
  #reachableSince = 0
  #outage = false
  #snapshot = null
  #snapshotAt = 0
  #refreshing = null
  #draining = null
  #closed = false
  #pausedUntil = 0
  #resumeTimer
  #idleWaiters = []
  /** How long before a lease lapses (by our clock) its session is stopped if not renewed. */
  #margin
  #closing = false
  #reconciling = false
  #lastReconcile = 0
  #closingDone = null
  #listeners

  constructor(pool, spawner, poolConfig, queueConfig, limits) {
    this.#pool = pool
    this.#spawner = spawner
    this.#hooks = spawner[kShared]()
    this.#queueConfig = queueConfig
    this.#capacity = limits.capacity
    this.#defaultTimeout = limits.defaultSessionTimeout
    this.#queueLimit = Number.isFinite(poolConfig.maxQueueSize) ? poolConfig.maxQueueSize : undefined
    this.#retries = poolConfig.autoRecovery !== false
    this.#host = queueConfig.host ?? `${os.hostname()}/${process.pid}/${crypto.randomBytes(4).toString('hex')}`
    this.#tickMs = Math.max(50, Math.min(queueConfig.pollIntervalMs, Math.floor(queueConfig.leaseMs / 3)))
    // Renewals go out every tick; a run whose lease is not renewed within a margin of
    // two ticks before it lapses is stopped, so it is never running when another host
    // may take the request.
    this.#margin = Math.min(Math.floor(queueConfig.leaseMs / 3), Math.max(2 * this.#tickMs, 500))
    this.#ticker = setInterval(() => this.#tick(), this.#tickMs)
    this.#ticker.unref()
    this.#lastReconcile = Date.now()
    this.#listeners = {
      'session-ended': (event) => this.#onEnded(event),
      'session-rate-limited': (event) => this.#onRateLimited(event),
    }
    for (const [name, listener] of Object.entries(this.#listeners)) spawner.on(name, listener)
    this.#connect().catch(() => {})
  }

  get host() {
    return this.#host
  }

  // ---- requester ----

  has(requestId) {
    return this.#own.has(requestId) || this.#held.has(requestId)
  }

  async request(request, queuedAt) {
    if (this.#closed || this.#closing) throw poolError('Pool is closed', 'ERR_POOL_CLOSED')
    if (this.#draining) throw poolError('Pool is draining: it admits no new requests', 'ERR_POOL_DRAINING')
    let config = request.config
    if (!(config.timeout > 0) && this.#defaultTimeout > 0) config = { ...config, timeout: this.#defaultTimeout }
    const configJson = encodeConfig(config)
    // Refused here, by the host that makes the request, not by whichever takes it.
    convert.call(() => native.checkSessionConfig(configJson))
    const requestId = request.requestId
    const header = { v: 1, requestId, priority: request.priority, queuedAt: queuedAt.toISOString(), origin: this.#host }
    const entry = { request, requestId, queuedAt, allocated: false, done: false, pushed: false, sessionId: null, status: null }
    const promise = new Promise((resolve, reject) => {
      entry.resolve = resolve
      entry.reject = reject
    })
    entry.completion = new Promise((resolve) => {
      entry.complete = resolve
    })
    this.#own.set(requestId, entry)
    this.#hold()
    let pushed
    try {
      const queue = await this.#connect()
      pushed = await queue.push(requestId, request.priority, encodePayload(header, configJson), 1, this.#queueLimit)
    } catch (error) {
      this.#forget(entry)
      if (error?.code === 'ERR_POOL_QUEUE_FULL') throw poolError('Session pool queue is full', 'ERR_POOL_QUEUE_FULL')
      if (error?.code === 'ERR_QUEUE_UNAVAILABLE') {
        this.#opFailed(error)
        this.#withdraw(requestId)
      }
      throw error
    }
    this.#answered()
    entry.pushed = true
    if (this.#pool.listenerCount('request-queued') > 0) {
      this.#pool.emit('request-queued', { requestId, position: pushed.position, queueLength: pushed.queueLength })
    }
    this.#pump()
    return promise
  }

  /** The request is settled here: it no longer holds its id on this host. */
  #forget(entry) {
    if (entry.done) return false
    entry.done = true
    this.#own.delete(entry.requestId)
    this.#hold()
    return true
  }

  #call(entry, name, argument) {
    runCallback(this.#pool, entry.request, name, argument)
  }

  #fail(entry, error, status) {
    if (!this.#forget(entry)) return
    this.#call(entry, 'onFailed', error)
    if (!entry.allocated) entry.reject(error)
    entry.complete(status ?? entry.status)
  }

  /** An event's detail; one this code did not write is reported, not thrown from a listener. */
  #detail(id, detail) {
    try {
      const d = JSON.parse(detail)
      if (d !== null && typeof d === 'object') return d
    } catch {}
    this.#pool.emit('queue-error', { error: poolError(`request ${id}: an event's detail is not this package's JSON: ${String(detail).slice(0, 200)}`, 'ERR_QUEUE_MALFORMED') })
    return null
  }

  #onStarted({ id, detail }) {
    const entry = this.#own.get(id)
    if (entry === undefined) return
    const d = this.#detail(id, detail)
    if (d === null) return
    // Said twice (a retry of a `started` whose answer was lost): once is enough.
    if (d.sessionId === entry.sessionId) return
    const status = reviveStatus(d.status)
    const requestId = entry.requestId
    if (d.previous) {
      this.#pool.emit('session-released', { sessionId: d.previous.sessionId, status: reviveStatus(d.previous.status), requestId, host: d.host })
    }
    if (entry.sessionId !== null && entry.sessionId !== d.sessionId) {
      this.#pool.emit('session-recovering', { sessionId: entry.sessionId, requestId, attempt: d.attempt, host: d.host })
    }
    this.#allocate(entry, d.sessionId, status, d.host)
  }

  #allocate(entry, sessionId, status, host) {
    entry.sessionId = sessionId
    entry.status = status
    this.#pool.emit('session-allocated', { requestId: entry.requestId, sessionId, host })
    if (!entry.allocated) {
      entry.allocated = true
      this.#call(entry, 'onAllocated', sessionId)
      entry.resolve({ sessionId, status, completion: entry.completion, host })
    }
  }

  #onCompleted({ id, detail }) {
    const entry = this.#own.get(id)
    if (entry === undefined) return
    const d = this.#detail(id, detail) ?? {}
    const status = reviveStatus(d.status ?? null)
    // Its `started` never got through: the session is known only from here.
    if (!entry.allocated && d.sessionId) this.#allocate(entry, d.sessionId, status, d.host)
    if (!entry.allocated) {
      this.#fail(entry, poolError(`Request ${id} completed, but its end names no session`, 'ERR_QUEUE_MALFORMED'))
      return
    }
    if (d.sessionId) this.#pool.emit('session-released', { sessionId: d.sessionId, status, requestId: id, host: d.host })
    this.#forget(entry)
    this.#call(entry, 'onCompleted', status)
    entry.complete(status)
  }

  #onFailed({ id, host, detail }) {
    const entry = this.#own.get(id)
    if (entry === undefined) return
    let d
    try {
      d = JSON.parse(detail)
    } catch {
      d = { message: String(detail) }
    }
    const status = reviveStatus(d.status ?? null)
    if (d.sessionId && status && !entry.allocated) this.#allocate(entry, d.sessionId, status, host)
    if (d.sessionId && status) this.#pool.emit('session-released', { sessionId: d.sessionId, status, requestId: id, host })
    const message = host === null ? `Request ${id} failed: ${d.message ?? 'its attempts ran out'}` : d.message
    this.#fail(entry, poolError(message, d.code ?? 'ERR_POOL_GAVE_UP', status ? { status } : {}), status)
  }

  #onCancelled({ id }) {
    const entry = this.#own.get(id)
    if (entry === undefined) return
    this.#fail(entry, poolError('Request cancelled', 'ERR_REQUEST_CANCELLED'))
    this.#pool.emit('request-cancelled', { requestId: id })
  }

  /** True when this host knows the request (made or running here); the cancel then goes to the queue. */
  cancel(requestId) {
    if (typeof requestId !== 'string' || !this.has(requestId) || this.#queue === null) return false
    this.#queue.cancel(requestId).then(
      (result) => this.#cancelled(requestId, result),
      (e) => this.#opFailed(e),
    )
    return true
  }

  /** Cancels a request made on any host: true when it was queued or running. */
  async cancelAsync(requestId) {
    if (typeof requestId !== 'string') return false
    const queue = await this.#connect()
    const result = await queue.cancel(requestId)
    this.#cancelled(requestId, result)
    return result !== 'unknown'
  }

  /** A request refused here must not run anywhere: cancelled now, or once the queue answers. */
  #withdraw(requestId) {
    this.#withdrawn.add(requestId)
    this.#cancelWithdrawn()
  }

  #cancelWithdrawn() {
    const queue = this.#queue
    if (queue === null) return
    for (const requestId of this.#withdrawn) {
      queue.cancel(requestId).then(
        (result) => {
          this.#withdrawn.delete(requestId)
          this.#cancelled(requestId, result)
        },
        (e) => this.#opFailed(e),
      )
    }
  }

  #cancelled(requestId, result) {
    // A leased request: its holder learns it on its next renewal; if that is us, now.
    const run = this.#held.get(requestId)
    if (result === 'flagged' && run !== undefined) this.#stop(run, 'cancel')
  }

  /**
   * Asks the queue what became of this host's unsettled requests, for ends whose
   * events it may have missed (it fell behind, was cut off past the stream's length,
   * or Redis lost the newest writes): after `queue-lagged`, after an outage, and once
   * a minute.
   */
  async #reconcile() {
    if (this.#reconciling || this.#queue === null) return
    this.#reconciling = true
    this.#lastReconcile = Date.now()
    try {
      for (const entry of [...this.#own.values()]) {
        if (entry.done || !entry.pushed) continue
        let found
        try {
          found = await this.#queue.lookup(entry.requestId)
        } catch (error) {
          this.#opFailed(error)
          return
        }
        if (entry.done) continue
        if (found.state === 'finished') this.#replay(found.event)
        else if (found.state === 'unknown') {
          const message = `Request ${entry.requestId} is no longer in the shared queue and its end is not known there (Redis lost it, or its end is older than the queue keeps)`
          this.#fail(entry, poolError(message, 'ERR_QUEUE_LOST'))
        }
      }
    } finally {
      this.#reconciling = false
    }
  }

  #replay(event) {
    if (event.name === 'completed') this.#onCompleted(event)
    else if (event.name === 'failed') this.#onFailed(event)
    else if (event.name === 'cancelled') this.#onCancelled(event)
  }

  // ---- worker ----

  #canTake() {
    return (
      this.#queue !== null &&
      !this.#closed &&
      !this.#closing &&
      !this.#draining &&
      Date.now() >= this.#pausedUntil &&
      this.#running() + this.#taking < this.#capacity
    )
  }

  #running() {
    let n = 0
    for (const run of this.#held.values()) if (run.phase !== 'finishing') n++
    return n
  }

  async #pump() {
    if (this.#pumping) {
      this.#pumpAgain = true
      return
    }
    this.#pumping = true
    try {
      do {
        this.#pumpAgain = false
        while (this.#canTake()) {
          const sentAt = performance.now()
          let taken
          this.#taking++
          try {
            taken = await this.#queue.take(this.#host, this.#queueConfig.leaseMs)
          } catch (error) {
            this.#opFailed(error)
            return
          } finally {
            this.#taking--
          }
          if (taken === null) break
          this.#answered()
          this.#run(taken, sentAt)
        }
      } while (this.#pumpAgain && this.#canTake())
    } finally {
      this.#pumping = false
      this.#wakeIdle()
    }
  }

  #run(taken, sentAt) {
    const run = {
      id: taken.id,
      attempt: taken.attempt,
      configJson: null,
      sessionId: null,
      claudeSessionId: null,
      phase: 'running',
      stopping: null,
      // By our monotonic clock, from before the take was sent: never later than Redis's.
      heldUntil: sentAt + this.#queueConfig.leaseMs,
      fence: null,
      renewing: false,
      unannounced: null,
      announcing: false,
      ending: null,
      sending: false,
      previous: null,
      retry: null,
    }
    this.#held.set(run.id, run)
    this.#hold()
    // Refused to its requester (here) before the queue's answer got through.
    if (this.#withdrawn.delete(run.id)) {
      this.#end(run, 'cancelled', 0, null)
      return
    }
    // Taken while this host began to drain or close: straight back, unstarted.
    if (this.#draining || this.#closing || this.#closed) {
      this.#end(run, 'release', 0, null)
      return
    }
    this.#arm(run)
    let note = null
    try {
      run.configJson = decodePayload(taken.payload).configJson
      note = taken.note ? JSON.parse(taken.note) : null
    } catch (error) {
      this.#end(run, 'failed', 0, { message: `Request ${run.id} could not be read on host ${this.#host}: ${error.message}`, code: 'ERR_QUEUE_MALFORMED' })
      return
    }
    // In-place retries on the host that died counted too (the queue counts lapses);
    // a session stopped to be handed over did not fail, so its attempt goes on here.
    if (note && typeof note.attempt === 'number') run.attempt = Math.max(run.attempt, note.handedOver ? note.attempt : note.attempt + 1)
    if (run.attempt > this.#queueConfig.maxRequestAttempts) {
      const message = `Request ${run.id} failed: its session on host ${note.host} did not finish and no attempt is left`
      this.#end(run, 'failed', 0, { message, code: 'ERR_POOL_GAVE_UP' })
      return
    }
    this.#launch(run, note ? { conversation: note.claudeSessionId ?? null, host: note.host } : null)
  }

  /** Starts the run's session; `takeover`: an earlier attempt's conversation and host. */
  #launch(run, takeover) {
    let started
    try {
      started = takeover
        ? this.#hooks.spawnTakenOver(run.configJson, takeover.conversation, takeover.host, this.#retries)
        : this.#hooks.spawnJson(run.configJson, this.#retries)
    } catch (error) {
      const ended = run.previous ?? {}
      this.#end(run, 'failed', 0, { ...ended, message: `Request ${run.id} could not start on host ${this.#host}: ${error.message}`, code: error.code ?? 'ERR_SPAWN_FAILED' })
      return
    }
    run.sessionId = started.sessionId
    run.claudeSessionId = started.status.claudeSessionId ?? null
    this.#bySession.set(started.sessionId, run)
    const detail = {
      sessionId: started.sessionId,
      host: this.#host,
      attempt: run.attempt,
      claudeSessionId: run.claudeSessionId,
      status: portable(started.status, this.#host),
      resumed: started.resumed ?? false,
      note: started.note ?? null,
      previous: run.previous,
    }
    run.previous = null
    run.unannounced = JSON.stringify(detail)
    this.#announce(run)
  }

  #announce(run) {
    const detail = run.unannounced
    if (detail === null || this.#queue === null || run.announcing) return
    run.announcing = true
    this.#queue.started(this.#host, run.id, detail).then(
      () => {
        run.announcing = false
        if (run.unannounced === detail) run.unannounced = null
      },
      (error) => {
        run.announcing = false
        if (isNotHolder(error)) this.#lost(run)
        else this.#opFailed(error)
      },
    )
  }

  #onEnded({ sessionId, status }) {
    const run = this.#bySession.get(sessionId)
    if (run === undefined) return
    this.#bySession.delete(sessionId)
    run.sessionId = null
    const executionMs = status.executionTime ?? 0
    status = portable(status, this.#host)
    const ended = { sessionId, status, host: this.#host }
    if (run.stopping === 'lost') {
      this.#drop(run)
      return
    }
    // A session that got to its end is done, whatever was asked of it meanwhile.
    if (status.state === 'completed') {
      this.#end(run, 'completed', executionMs, ended)
      return
    }
    if (run.stopping === 'cancel') {
      this.#end(run, 'cancelled', executionMs, ended)
      return
    }
    const retried = RETRIED_STATES.includes(status.state)
    if (run.stopping === 'release' && status.state === 'terminated') {
      // Stopped to hand it over, not failed: the next host's attempt is this one again.
      const note = { host: this.#host, attempt: run.attempt, claudeSessionId: run.claudeSessionId, handedOver: true }
      this.#end(run, 'release', executionMs, ended, JSON.stringify(note))
      return
    }
    if (run.stopping === 'release' || (retried && (this.#draining || this.#closing))) {
      this.#end(run, 'release', executionMs, ended)
      return
    }
    if (this.#retries && retried && run.attempt < this.#queueConfig.maxRequestAttempts) {
      run.previous = { sessionId, status }
      run.attempt += 1
      // Not before a rate-limit pause is over: the retry would meet the same limit.
      const wait = this.#pausedUntil - Date.now()
      if (wait > 0) {
        run.retry = setTimeout(() => this.#retry(run), wait)
        run.retry.unref()
      } else {
        this.#retry(run)
      }
      return
    }
    const why = status.errorMessage ? ` (${status.errorMessage})` : ''
    const message = `Request ${run.id} failed: its session ended ${status.state}${why} and no attempt is left`
    this.#end(run, 'failed', executionMs, { ...ended, message, code: 'ERR_POOL_GAVE_UP' })
  }

  /** The in-place retry of a crashed or timed-out session, if the run is still ours to run. */
  #retry(run) {
    run.retry = null
    if (this.#held.get(run.id) !== run || run.phase === 'finishing') return
    const previous = run.previous
    if (run.stopping === 'lost' || performance.now() >= run.heldUntil - this.#margin) {
      this.#stop(run, 'lost')
      this.#drop(run)
      return
    }
    if (run.stopping === 'cancel') return this.#end(run, 'cancelled', 0, previous)
    if (run.stopping === 'release') return this.#end(run, 'release', 0, previous)
    this.#launch(run, { conversation: run.claudeSessionId, host: this.#host })
  }

  /**
   * Reports how the run ended (retried on every tick while Redis cannot be reached).
   * `note`: for a release, what the next attempt reads instead of the last `started`.
   */
  #end(run, outcome, executionMs, detail, note) {
    run.phase = 'finishing'
    clearTimeout(run.fence)
    run.ending = { outcome, executionMs, detail: JSON.stringify(detail), note }
    this.#sendEnding(run)
    this.#pump()
  }

  #sendEnding(run) {
    const ending = run.ending
    if (ending === null || this.#queue === null || run.sending) return
    run.sending = true
    const queue = this.#queue
    // A `started` that has not got through goes first, so the requester learns of the session.
    const announced =
      run.unannounced !== null && ending.outcome !== 'release'
        ? queue.started(this.#host, run.id, run.unannounced).then(() => {
            run.unannounced = null
          })
        : Promise.resolve()
    announced
      .then(() => {
        if (ending.outcome === 'release') return queue.release(this.#host, run.id, ending.note)
        if (ending.outcome === 'cancelled') return queue.finish(this.#host, run.id, 'cancelled', ending.executionMs)
        return queue.finish(this.#host, run.id, ending.outcome, ending.executionMs, ending.detail)
      })
      .then(
        () => {
          run.sending = false
          this.#drop(run)
        },
        (error) => {
          run.sending = false
          this.#opFailed(error)
          // Only an outage is worth another try; otherwise (not ours any more: the lease
          // lapsed and the queue moved on; or a refusal) the queue's lease rules decide.
          if (error?.code !== 'ERR_QUEUE_UNAVAILABLE') this.#drop(run)
        },
      )
  }

  #drop(run) {
    if (this.#held.get(run.id) !== run) return
    clearTimeout(run.fence)
    clearTimeout(run.retry)
    this.#held.delete(run.id)
    this.#hold()
    this.#wakeIdle()
    this.#pump()
  }

  /** Stops the run's session: `lost` (not ours any more), `cancel` or `release`. */
  #stop(run, why) {
    if (run.stopping === 'lost' || run.phase === 'finishing') return
    run.stopping = why
    if (why === 'lost') {
      clearTimeout(run.fence)
      this.#pool.emit('lease-lost', { requestId: run.id, sessionId: run.sessionId, host: this.#host })
    }
    if (run.sessionId !== null) this.#spawner.terminateSession(run.sessionId, why !== 'lost').catch(() => {})
    else if (run.retry !== null) {
      // Between two sessions: nothing to stop, the retry is not made.
      clearTimeout(run.retry)
      this.#retry(run)
    }
  }

  #lost(run) {
    if (run.phase === 'finishing') {
      this.#drop(run)
      return
    }
    this.#stop(run, 'lost')
  }

  /** The run's fence: stopped when its lease is about to lapse without a renewal. */
  #arm(run) {
    clearTimeout(run.fence)
    run.fence = setTimeout(() => {
      run.fence = null
      if (this.#held.get(run.id) === run && run.phase !== 'finishing') this.#stop(run, 'lost')
    }, Math.max(0, run.heldUntil - this.#margin - performance.now()))
    run.fence.unref()
  }

  #onRateLimited({ sessionId, until, reason }) {
    if (!this.#bySession.has(sessionId) || this.#draining || !this.#queueConfig.respectRateLimits) return
    const at = until.getTime()
    if (at <= this.#pausedUntil) return
    this.#pausedUntil = at
    this.#pool.emit('pool-throttled', { until, reason })
    clearTimeout(this.#resumeTimer)
    this.#resumeTimer = setTimeout(() => {
      this.#pool.emit('pool-resumed')
      this.#pump()
    }, Math.max(0, at - Date.now()))
    this.#resumeTimer.unref()
  }

  // ---- the tick: leases, ends to report, membership, lapsed leases, status ----

  #tick() {
    if (this.#closed) return
    if (this.#queue === null) {
      this.#connect().catch(() => {})
      return
    }
    // Renewals do not wait on each other or on the rest of the tick.
    for (const run of this.#held.values()) {
      if (run.phase === 'finishing') this.#sendEnding(run)
      else if (run.stopping !== 'lost') {
        this.#announce(run)
        this.#renew(run)
      }
    }
    this.#housekeeping()
  }

  async #housekeeping() {
    if (this.#ticking) return
    this.#ticking = true
    try {
      const queue = this.#queue
      const lease = this.#queueConfig.leaseMs
      if (!this.#draining && !this.#closing) {
        await queue.announce(this.#host, this.#capacity, lease).then(() => this.#answered(), (e) => this.#opFailed(e))
      }
      // Right after an outage, holders renew first: their leases ran on Redis's clock.
      if (this.#reachableSince > 0 && Date.now() - this.#reachableSince >= lease / 2) {
        await queue.requeueExpired(this.#queueConfig.maxRequestAttempts).catch((e) => this.#opFailed(e))
      }
      await this.#refresh().catch(() => {})
      this.#pump()
      if (this.#own.size > 0 && Date.now() - this.#lastReconcile >= RECONCILE_EVERY_MS) await this.#reconcile()
    } finally {
      this.#ticking = false
    }
  }

  async #renew(run) {
    if (run.renewing) return
    run.renewing = true
    const sentAt = performance.now()
    try {
      const { held, cancelRequested } = await this.#queue.renew(this.#host, run.id, this.#queueConfig.leaseMs)
      this.#answered()
      if (!held) this.#lost(run)
      else if (run.stopping !== 'lost' && run.phase !== 'finishing') {
        run.heldUntil = sentAt + this.#queueConfig.leaseMs
        this.#arm(run)
        if (cancelRequested) this.#stop(run, 'cancel')
      }
    } catch (error) {
      this.#opFailed(error)
    } finally {
      run.renewing = false
    }
  }

  #refresh() {
    if (this.#refreshing) return this.#refreshing
    if (this.#queue === null) return Promise.reject(this.#unavailable())
    this.#refreshing = this.#queue.snapshot().then(
      (snapshot) => {
        this.#refreshing = null
        this.#snapshot = snapshot
        this.#snapshotAt = Date.now()
        return snapshot
      },
      (error) => {
        this.#refreshing = null
        this.#opFailed(error)
        throw error
      },
    )
    return this.#refreshing
  }

  // ---- connection ----

  #connect() {
    if (this.#queue !== null) return Promise.resolve(this.#queue)
    if (this.#connecting) return this.#connecting
    const { url, name, connectTimeoutMs, responseTimeoutMs } = this.#queueConfig
    const options = {}
    if (connectTimeoutMs != null) options.connectTimeoutMs = connectTimeoutMs
    if (responseTimeoutMs != null) options.responseTimeoutMs = responseTimeoutMs
    this.#connecting = SharedQueue.connectRedis(url, name, options).then(
      (queue) => {
        this.#connecting = null
        if (this.#closed) {
          queue.close()
          throw poolError('Pool is closed', 'ERR_POOL_CLOSED')
        }
        this.#queue = queue
        this.#listen(queue)
        this.#answered()
        this.#pump()
        return queue
      },
      (error) => {
        this.#connecting = null
        this.#opFailed(error)
        throw error
      },
    )
    return this.#connecting
  }

  #listen(queue) {
    queue.on('started', (e) => this.#onStarted(e))
    queue.on('completed', (e) => this.#onCompleted(e))
    queue.on('failed', (e) => this.#onFailed(e))
    queue.on('cancelled', (e) => this.#onCancelled(e))
    queue.on('queued', () => this.#pump())
    queue.on('requeued', () => this.#pump())
    queue.on('lagged', ({ missed }) => {
      this.#pool.emit('queue-lagged', { missed })
      this.#reconcile()
    })
    queue.on('error', (error) => this.#pool.emit('queue-error', { error }))
  }

  #unavailable() {
    return poolError(`the shared queue at ${this.#queueConfig.url} is not connected`, 'ERR_QUEUE_UNAVAILABLE')
  }

  /** The queue answered: leave the outage, if in one. */
  #answered() {
    if (this.#reachableSince === 0) this.#reachableSince = Date.now()
    if (this.#outage) {
      this.#outage = false
      this.#pool.emit('queue-reconnected', { host: this.#host })
      this.#cancelWithdrawn()
      this.#reconcile()
    }
  }

  #opFailed(error) {
    if (error?.code !== 'ERR_QUEUE_UNAVAILABLE') {
      const expected = ['ERR_QUEUE_CLOSED', 'ERR_POOL_CLOSED', 'ERR_QUEUE_NOT_HOLDER']
      if (!expected.includes(error?.code)) this.#pool.emit('queue-error', { error })
      return
    }
    this.#reachableSince = 0
    if (!this.#outage) {
      this.#outage = true
      this.#pool.emit('queue-unavailable', { error, host: this.#host })
    }
  }

  // ---- status, drain, close ----

  status() {
    const snapshot = this.#snapshot ?? { queued: [], leased: 0, meanExecutionMs: null, hosts: 0, capacity: 0 }
    if (Date.now() - this.#snapshotAt > this.#tickMs) this.#refresh().catch(() => {})
    return this.#statusOf(snapshot)
  }

  async statusAsync() {
    await this.#connect()
    return this.#statusOf(await this.#refresh())
  }

  #statusOf(snapshot) {
    const mean = snapshot.meanExecutionMs ?? DEFAULT_EXECUTION_MS
    const sharedCapacity = snapshot.capacity > 0 ? snapshot.capacity : this.#capacity
    const queuedRequests = snapshot.queued.map((e, i) => ({
      requestId: e.id,
      priority: e.priority,
      queuedAt: e.enqueuedAt,
      estimatedWaitTime: (Math.floor(i / sharedCapacity) + 1) * mean,
      attempt: e.attempt,
    }))
    const activeSessions = []
    for (const run of this.#held.values()) {
      if (run.sessionId === null || run.phase === 'finishing') continue
      const status = this.#spawner.getSessionStatus(run.sessionId)
      if (status) activeSessions.push(status)
    }
    const activeCount = this.#running()
    return {
      capacity: this.#capacity,
      activeCount,
      idleCount: activeSessions.filter((s) => s.state === 'waiting_input').length,
      queuedCount: queuedRequests.length,
      utilization: (activeCount / this.#capacity) * 100,
      activeSessions,
      queuedRequests,
      shared: {
        host: this.#host,
        hosts: snapshot.hosts,
        capacity: snapshot.capacity,
        leased: snapshot.leased,
        reachable: this.#queue !== null && !this.#outage,
        asOf: new Date(this.#snapshotAt),
      },
    }
  }

  metrics() {
    const activeCount = this.#running()
    const queued = this.#snapshot?.queued ?? []
    const now = Date.now()
    const waited = queued.reduce((sum, e) => sum + (now - e.enqueuedAt.getTime()), 0)
    return {
      ...this.#spawner.getMetricsSummary(),
      poolUtilization: (activeCount / this.#capacity) * 100,
      queueLength: queued.length,
      queueWaitTime: queued.length === 0 ? 0 : waited / queued.length,
    }
  }

  drain(timeoutMs) {
    if (this.#draining) return this.#draining
    this.#draining = this.#drain(timeoutMs)
    return this.#draining
  }

  async #drain(timeoutMs) {
    this.#pool.emit('pool-draining')
    this.#hold()
    if ((await this.#idleWithin(timeoutMs)) === 'deadline') this.#handBack()
    // Ends that cannot be reported (Redis away) are given up after a lease: by then
    // the queue hands those requests on by itself.
    if ((await this.#idleWithin(this.#queueConfig.leaseMs)) === 'deadline') {
      for (const run of [...this.#held.values()]) this.#drop(run)
    }
    if (this.#queue !== null) await this.#queue.leave(this.#host).catch((e) => this.#opFailed(e))
    this.#pool.emit('pool-drained')
    this.#hold()
  }

  /**
   * Handed over, not dropped: each running request goes back to the front of its
   * priority (the last taken first, so their order stays), and the host that takes it
   * continues the conversation where it can.
   */
  #handBack() {
    for (const run of [...this.#held.values()].reverse()) this.#stop(run, 'release')
  }

  async #idleWithin(ms) {
    let timer
    const deadline = new Promise((resolve) => {
      timer = setTimeout(resolve, ms, 'deadline')
    })
    const outcome = await Promise.race([this.#idle(), deadline])
    clearTimeout(timer)
    return outcome
  }

  #idle() {
    if (this.#held.size === 0 && this.#taking === 0) return Promise.resolve('idle')
    return new Promise((resolve) => this.#idleWaiters.push(resolve))
  }

  #wakeIdle() {
    if (this.#held.size !== 0 || this.#taking !== 0) return
    for (const resolve of this.#idleWaiters.splice(0)) resolve('idle')
  }

  /**
   * Hands back what this host holds (stopping its sessions), leaves the queue and
   * closes the connection. Requests made here that are not settled reject with
   * ERR_POOL_CLOSED: they stay in the shared queue and run elsewhere.
   */
  close() {
    return (this.#closingDone ??= this.#close())
  }

  async #close() {
    this.#closing = true
    const draining = this.drain(0)
    this.#handBack()
    await draining
    this.#closed = true
    clearInterval(this.#ticker)
    clearTimeout(this.#resumeTimer)
    for (const [name, listener] of Object.entries(this.#listeners)) this.#spawner.off(name, listener)
    for (const entry of [...this.#own.values()]) {
      this.#fail(entry, poolError(`Pool is closed: request ${entry.requestId} stays in the shared queue for the other hosts`, 'ERR_POOL_CLOSED'))
    }
    this.#queue?.close()
  }

  /** Node stays alive while this host has requests of its own or sessions to look after. */
  #hold() {
    if (this.#own.size > 0 || this.#held.size > 0) this.#ticker.ref()
    else this.#ticker.unref()
  }
}

module.exports = { SharedPool }
