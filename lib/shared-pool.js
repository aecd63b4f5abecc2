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
const { kShared, claimRecovery, releaseRecovery } = require('./internal')

const RETRIED_STATES = ['timeout', 'crashed']
const DEFAULT_EXECUTION_MS = 60_000

function poolError(message, code, extra) {
  return Object.assign(new Error(message), { code }, extra)
}

function isNotHolder(error) {
  return error?.code === 'ERR_QUEUE_NOT_HOLDER'
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
  #maxQueueSize
  #retries
  #host
  #queue = null
  #connecting = null
  /** requestId -> entry, for requests made here that are not settled. */
  #own = new Map()
  /** requestId -> run, for requests this host holds a lease on. */
  #held = new Map()
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

  constructor(pool, spawner, poolConfig, queueConfig, scheduler) {
    this.#pool = pool
    this.#spawner = spawner
    this.#hooks = spawner[kShared]()
    this.#queueConfig = queueConfig
    this.#capacity = scheduler.capacity
    this.#defaultTimeout = scheduler.defaultSessionTimeout
    this.#maxQueueSize = poolConfig.maxQueueSize
    this.#retries = poolConfig.autoRecovery !== false
    this.#host = queueConfig.host ?? `${os.hostname()}/${process.pid}/${crypto.randomBytes(4).toString('hex')}`
    this.#tickMs = Math.max(50, Math.min(queueConfig.pollIntervalMs, Math.floor(queueConfig.leaseMs / 3)))
    this.#ticker = setInterval(() => this.#tick(), this.#tickMs)
    this.#ticker.unref()
    spawner.on('session-ended', (event) => this.#onEnded(event))
    spawner.on('session-rate-limited', (event) => this.#onRateLimited(event))
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
    if (this.#closed) throw poolError('Pool is closed', 'ERR_POOL_CLOSED')
    let config = request.config
    if (!(config.timeout > 0) && this.#defaultTimeout > 0) config = { ...config, timeout: this.#defaultTimeout }
    const configJson = encodeConfig(config)
    // Refused here, by the host that makes the request, not by whichever takes it.
    convert.call(() => native.checkSessionConfig(configJson))
    const requestId = request.requestId
    const header = { v: 1, requestId, priority: request.priority, queuedAt: queuedAt.toISOString(), origin: this.#host }
    const entry = { request, requestId, queuedAt, allocated: false, done: false, sessionId: null, status: null }
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
      pushed = await queue.push(requestId, request.priority, encodePayload(header, configJson), 1)
    } catch (error) {
      this.#forget(entry)
      this.#opFailed(error)
      throw error
    }
    this.#answered()
    if (pushed.queueLength > this.#maxQueueSize) {
      this.#forget(entry)
      this.#queue.cancel(requestId).catch((e) => this.#opFailed(e))
      throw poolError('Session pool queue is full', 'ERR_POOL_QUEUE_FULL')
    }
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
    const callback = entry.request[name]
    if (!callback) return
    try {
      callback(argument)
    } catch (error) {
      this.#pool.emit('callback-error', { requestId: entry.requestId, callback: name, error })
    }
  }

  #fail(entry, error, status) {
    if (!this.#forget(entry)) return
    this.#call(entry, 'onFailed', error)
    if (!entry.allocated) entry.reject(error)
    entry.complete(status ?? entry.status)
  }

  #onStarted({ id, detail }) {
    const entry = this.#own.get(id)
    if (entry === undefined) return
    const d = JSON.parse(detail)
    const status = reviveStatus(d.status)
    const requestId = entry.requestId
    if (d.previous) {
      this.#pool.emit('session-released', { sessionId: d.previous.sessionId, status: reviveStatus(d.previous.status), requestId, host: d.host })
    }
    if (entry.sessionId !== null && entry.sessionId !== d.sessionId) {
      this.#pool.emit('session-recovering', { sessionId: entry.sessionId, requestId, attempt: d.attempt, host: d.host })
    }
    entry.sessionId = d.sessionId
    entry.status = status
    this.#pool.emit('session-allocated', { requestId, sessionId: d.sessionId, host: d.host })
    if (!entry.allocated) {
      entry.allocated = true
      this.#call(entry, 'onAllocated', d.sessionId)
      entry.resolve({ sessionId: d.sessionId, status, completion: entry.completion, host: d.host })
    }
  }

  #onCompleted({ id, detail }) {
    const entry = this.#own.get(id)
    if (entry === undefined) return
    const d = JSON.parse(detail)
    const status = reviveStatus(d.status)
    this.#pool.emit('session-released', { sessionId: d.sessionId, status, requestId: id, host: d.host })
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

  #cancelled(requestId, result) {
    // A leased request: its holder learns it on its next renewal; if that is us, now.
    const run = this.#held.get(requestId)
    if (result === 'flagged' && run !== undefined) this.#stop(run, 'cancel')
  }

  // ---- worker ----

  #canTake() {
    return (
      this.#queue !== null &&
      !this.#closed &&
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
          const sentAt = Date.now()
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
    }
  }

  #run(taken, sentAt) {
    const run = {
      id: taken.id,
      attempt: taken.attempt,
      configJson: null,
      header: null,
      sessionId: null,
      claudeSessionId: null,
      phase: 'running',
      stopping: null,
      heldUntil: sentAt + this.#queueConfig.leaseMs,
      unannounced: null,
      ending: null,
      previous: null,
    }
    this.#held.set(run.id, run)
    this.#hold()
    try {
      const { header, configJson } = decodePayload(taken.payload)
      run.header = header
      run.configJson = configJson
      const note = taken.note ? JSON.parse(taken.note) : null
      this.#start(run, note ? { conversation: note.claudeSessionId ?? null, host: note.host } : null)
    } catch (error) {
      this.#end(run, 'failed', 0, { message: `Request ${run.id} could not start on host ${this.#host}: ${error.message}`, code: error.code ?? 'ERR_SPAWN_FAILED' })
    }
  }

  /** Starts the run's session; `takeover`: an earlier attempt's conversation and host. */
  #start(run, takeover) {
    const started = takeover
      ? this.#hooks.spawnTakenOver(run.configJson, takeover.conversation, takeover.host)
      : this.#hooks.spawnJson(run.configJson)
    run.sessionId = started.sessionId
    run.claudeSessionId = started.status.claudeSessionId ?? null
    this.#bySession.set(started.sessionId, run)
    if (this.#retries) claimRecovery(this.#spawner, started.sessionId, 'pool', RETRIED_STATES)
    const detail = {
      sessionId: started.sessionId,
      host: this.#host,
      attempt: run.attempt,
      claudeSessionId: run.claudeSessionId,
      status: started.status,
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
    if (detail === null || this.#queue === null) return
    this.#queue.started(this.#host, run.id, detail).then(
      () => {
        if (run.unannounced === detail) run.unannounced = null
      },
      (error) => {
        if (isNotHolder(error)) this.#lost(run)
        else this.#opFailed(error)
      },
    )
  }

  #onEnded({ sessionId, status }) {
    const run = this.#bySession.get(sessionId)
    if (run === undefined) return
    this.#bySession.delete(sessionId)
    if (this.#retries) releaseRecovery(this.#spawner, sessionId)
    const executionMs = status.executionTime ?? 0
    const ended = { sessionId, status, host: this.#host }
    if (run.stopping === 'lost') {
      this.#drop(run)
      return
    }
    if (run.stopping === 'cancel') {
      this.#end(run, 'cancelled', executionMs, ended)
      return
    }
    if (run.stopping === 'release' || (this.#draining && status.state !== 'completed' && RETRIED_STATES.includes(status.state))) {
      this.#end(run, 'release', executionMs, ended)
      return
    }
    if (status.state === 'completed') {
      this.#end(run, 'completed', executionMs, ended)
      return
    }
    if (this.#retries && RETRIED_STATES.includes(status.state) && run.attempt < this.#queueConfig.maxRequestAttempts) {
      run.attempt += 1
      run.previous = { sessionId, status }
      try {
        this.#start(run, run.claudeSessionId ? { conversation: run.claudeSessionId, host: this.#host } : { conversation: null, host: this.#host })
        return
      } catch (error) {
        this.#end(run, 'failed', executionMs, { ...ended, message: `Request ${run.id} could not restart on host ${this.#host}: ${error.message}`, code: error.code ?? 'ERR_SPAWN_FAILED' })
        return
      }
    }
    const why = status.errorMessage ? ` (${status.errorMessage})` : ''
    const message = `Request ${run.id} failed: its session ended ${status.state}${why} and no attempt is left`
    this.#end(run, 'failed', executionMs, { ...ended, message, code: 'ERR_POOL_GAVE_UP' })
  }

  /** Reports how the run ended (retried on every tick until the queue takes it). */
  #end(run, outcome, executionMs, detail) {
    run.phase = 'finishing'
    run.ending = { outcome, executionMs, detail: JSON.stringify(detail) }
    this.#sendEnding(run)
    this.#pump()
  }

  #sendEnding(run) {
    const ending = run.ending
    if (ending === null || this.#queue === null || run.sending) return
    run.sending = true
    let op
    if (ending.outcome === 'release') op = this.#queue.release(this.#host, run.id)
    else if (ending.outcome === 'cancelled') op = this.#queue.finish(this.#host, run.id, 'cancelled', ending.executionMs)
    else op = this.#queue.finish(this.#host, run.id, ending.outcome, ending.executionMs, ending.detail)
    op.then(
      () => {
        run.sending = false
        this.#drop(run)
      },
      (error) => {
        run.sending = false
        this.#opFailed(error)
        // Only an outage is worth another try; otherwise (not ours any more, the lease
        // lapsed and the queue moved on; or a refusal) the queue's lease rules decide.
        if (error?.code !== 'ERR_QUEUE_UNAVAILABLE') this.#drop(run)
      },
    )
  }

  #drop(run) {
    if (this.#held.get(run.id) !== run) return
    this.#held.delete(run.id)
    this.#hold()
    this.#wakeIdle()
    this.#pump()
  }

  /** Stops the run's session: `lost` (not ours any more), `cancel` or `release`. */
  #stop(run, why) {
    if (run.stopping === 'lost' || run.phase === 'finishing') return
    run.stopping = why
    if (why === 'lost') this.#pool.emit('lease-lost', { requestId: run.id, sessionId: run.sessionId, host: this.#host })
    if (run.sessionId !== null) this.#spawner.terminateSession(run.sessionId, why !== 'lost').catch(() => {})
  }

  #lost(run) {
    if (run.phase === 'finishing') {
      this.#drop(run)
      return
    }
    this.#stop(run, 'lost')
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

  // ---- the tick: leases, retries, membership, lapsed leases, status ----

  async #tick() {
    if (this.#ticking || this.#closed) return
    this.#ticking = true
    try {
      const queue = this.#queue ?? (await this.#connect().catch(() => null))
      if (queue === null) return
      const lease = this.#queueConfig.leaseMs
      const now = Date.now()
      // A lease that could not be renewed in time may be someone else's by now.
      const margin = Math.min(1000, lease / 5)
      const renewals = []
      for (const run of this.#held.values()) {
        if (run.phase === 'finishing') {
          this.#sendEnding(run)
          continue
        }
        if (run.stopping === 'lost') continue
        if (now > run.heldUntil - margin) {
          this.#stop(run, 'lost')
          continue
        }
        this.#announce(run)
        renewals.push(this.#renew(run))
      }
      await Promise.all(renewals)
      await queue.announce(this.#host, this.#capacity, lease).then(() => this.#answered(), (e) => this.#opFailed(e))
      // Right after an outage, holders renew first: their leases ran on Redis's clock.
      if (this.#reachableSince > 0 && Date.now() - this.#reachableSince >= lease / 2) {
        await queue.requeueExpired(this.#queueConfig.maxRequestAttempts).catch((e) => this.#opFailed(e))
      }
      await this.#refresh().catch(() => {})
      this.#pump()
    } finally {
      this.#ticking = false
    }
  }

  async #renew(run) {
    const sentAt = Date.now()
    try {
      const { held, cancelRequested } = await this.#queue.renew(this.#host, run.id, this.#queueConfig.leaseMs)
      this.#answered()
      if (!held) this.#lost(run)
      else {
        run.heldUntil = sentAt + this.#queueConfig.leaseMs
        if (cancelRequested) this.#stop(run, 'cancel')
      }
    } catch (error) {
      this.#opFailed(error)
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
    queue.on('lagged', ({ missed }) => this.#pool.emit('queue-lagged', { missed }))
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
    let timer
    const deadline = new Promise((resolve) => {
      timer = setTimeout(resolve, timeoutMs, 'deadline')
    })
    const outcome = await Promise.race([this.#idle(), deadline])
    clearTimeout(timer)
    if (outcome === 'deadline') {
      // Handed over, not dropped: each goes back to the front of its priority, and
      // the host that takes it continues the conversation where it can.
      for (const run of this.#held.values()) this.#stop(run, 'release')
      await this.#idle()
    }
    if (this.#queue !== null) await this.#queue.leave(this.#host).catch((e) => this.#opFailed(e))
    this.#pool.emit('pool-drained')
    this.#hold()
  }

  #idle() {
    if (this.#held.size === 0) return Promise.resolve('idle')
    return new Promise((resolve) => this.#idleWaiters.push(resolve))
  }

  #wakeIdle() {
    if (this.#held.size !== 0) return
    for (const resolve of this.#idleWaiters.splice(0)) resolve('idle')
  }

  /**
   * Hands back what this host holds (stopping its sessions), leaves the queue and
   * closes the connection. Requests made here that are not settled reject with
   * ERR_POOL_CLOSED: they stay in the shared queue and run elsewhere.
   */
  async close() {
    if (this.#closed) return
    await this.drain(0)
    this.#closed = true
    clearInterval(this.#ticker)
    clearTimeout(this.#resumeTimer)
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
