'use strict'
// SessionRecoveryManager: watches a spawner's endings and brings crashed sessions
// back. The facts and the heavy parts are native (crash analysis, the dump on disk,
// the respawn from the stored config with `--resume`); this class keeps each
// recovery's state, its timers (backoff, the storm limit) and the events, on
// JavaScript's thread, in the order the spawner reports endings.

const { EventEmitter } = require('node:events')
const native = require('./native')
const { ClaudeSessionSpawner } = require('./spawner')
const convert = require('./convert')
const { kRecovery, recoveryClaim } = require('./internal')

/** Finished recoveries kept for getRecoveryStatus; the statistics count them all. */
const FINISHED_KEPT = 1000
/** Session ids already handled, so a crash is handled once (listener and caller). */
const HANDLED_KEPT = 10000
/** Signals whose 128+N exit code reads as a crash (shells and trapping agents report deaths so). */
const FATAL_SIGNALS = new Set([1, 2, 3, 4, 6, 7, 8, 9, 11, 15])
const STORM_WINDOW_MS = 60_000

function typeError(message, field) {
  return Object.assign(new TypeError(message), { code: 'ERR_INVALID_CONFIG', field })
}

function argError(message) {
  return Object.assign(new TypeError(message), { code: 'ERR_INVALID_ARG' })
}

function recoveryError(message, code, sessionId) {
  return Object.assign(new Error(message), { code, sessionId })
}

/** JSON of a crash report, dates as ISO text. */
function reportJson(report) {
  return JSON.stringify(report, (key, value) => (value instanceof Date ? value.toISOString() : value))
}

function copyState(rec) {
  const s = rec.state
  return {
    sessionId: s.sessionId,
    crashReport: { ...s.crashReport },
    attempts: s.attempts.map((a) => ({ ...a, timestamp: new Date(a.timestamp) })),
    status: s.status,
    startedAt: new Date(s.startedAt),
    ...(s.completedAt === undefined ? {} : { completedAt: new Date(s.completedAt) }),
    analysis: { ...rec.analysis, suggestedFixes: [...rec.analysis.suggestedFixes] },
  }
}

class SessionRecoveryManager extends EventEmitter {
  #spawner
  #hooks
  #config
  /** crashed sessionId (the first of a recovery) -> recovery */
  #recoveries = new Map()
  /** sessionId of each respawned session -> its recovery */
  #bySession = new Map()
  #finished = []
  #handled = new Set()
  /** When recent attempts started, for the storm limit. */
  #starts = []
  #stats = { crashes: 0, attempts: 0, recoveries: 0, succeeded: 0, failed: 0, abandoned: 0 }

  constructor(spawner, config = {}) {
    super()
    if (!(spawner instanceof ClaudeSessionSpawner)) throw typeError('spawner must be a ClaudeSessionSpawner', 'spawner')
    if (typeof config !== 'object' || config === null || Array.isArray(config)) {
      throw typeError('config must be an object', 'config')
    }
    this.#config = JSON.parse(convert.call(() => native.recoveryConfig(JSON.stringify(config))))
    this.#spawner = spawner
    this.#hooks = spawner[kRecovery]()
    spawner.on('session-ended', (event) => this.#onEnded(event))
  }

  /** Whether an ending is one this manager recovers (`recoverOn`). */
  #handles(status) {
    const on = this.#config.recoverOn
    if (on.includes(status.state)) return true
    const code = status.exitCode
    return (
      on.includes('crashed') && status.state === 'failed' && code > 128 && code < 160 && FATAL_SIGNALS.has(code - 128)
    )
  }

  #onEnded({ sessionId, status }) {
    const rec = this.#bySession.get(sessionId)
    if (rec !== undefined) {
      // A recovery's own session: its ending decides the attempt (unless it was
      // replaced, or the recovery abandoned).
      if (rec.current === sessionId) this.#attemptEnded(rec, sessionId, status)
    } else if (this.#handles(status)) {
      this.#handleEnded(sessionId, status)
    }
  }

  #handleEnded(sessionId, status) {
    this.#handle(sessionId, undefined, status.state).catch((error) => this.emit('recovery-error', { sessionId, error }))
  }

  async handleCrash(sessionId, crashReport) {
    if (typeof sessionId !== 'string' || sessionId === '') throw argError('sessionId must be a non-empty string')
    if (crashReport !== undefined && (typeof crashReport !== 'object' || crashReport === null)) {
      throw argError('crashReport must be an object')
    }
    return this.#handle(sessionId, crashReport, undefined)
  }

  /** A crash: recorded, then recovered here, left to its owner, or counted against its recovery. `state`: how it ended, when known. */
  async #handle(sessionId, crashReport, state) {
    if (this.#handled.has(sessionId)) return
    const report = crashReport ?? this.#hooks.crashReport(sessionId)
    if (report === null) {
      throw recoveryError(`no ended session ${sessionId} is known to the spawner`, 'ERR_UNKNOWN_SESSION', sessionId)
    }
    const analysis = this.#crash(sessionId, report)
    const rec = this.#bySession.get(sessionId)
    if (rec !== undefined && rec.current === sessionId) {
      rec.analysis = analysis
      this.#attemptFailed(rec, `its new session ${sessionId} crashed (${analysis.crashType})`)
      return
    }
    const claim = recoveryClaim(this.#spawner, sessionId)
    if (claim !== undefined && claim.states.includes(state ?? this.#spawner.getSessionStatus(sessionId)?.state)) {
      this.emit('recovery-deferred', { sessionId, owner: claim.owner })
      return
    }
    if (!this.#config.enabled) return
    this.#start(sessionId, report, analysis)
  }

  /** Records a crash: `crash-detected`, the dump, the analysis. */
  #crash(sessionId, report) {
    this.#remember(sessionId)
    this.#stats.crashes++
    this.emit('crash-detected', { sessionId, crashReport: report })
    const json = reportJson(report)
    const analysis = this.#hooks.analyze(sessionId, json)
    if (this.#config.saveCrashDumps) {
      try {
        const filepath = this.#hooks.writeDump(sessionId, this.#config.crashDumpDirectory, json, JSON.stringify(analysis))
        this.emit('crash-dump-saved', { sessionId, filepath })
      } catch (error) {
        this.emit('crash-dump-failed', { sessionId, error })
      }
    }
    this.emit('crash-analyzed', { sessionId, analysis })
    return analysis
  }

  #remember(sessionId) {
    this.#handled.add(sessionId)
    if (this.#handled.size > HANDLED_KEPT) this.#handled.delete(this.#handled.values().next().value)
  }

  #start(sessionId, report, analysis) {
    const rec = {
      state: { sessionId, crashReport: report, attempts: [], status: 'pending', startedAt: new Date() },
      analysis,
      latest: sessionId,
      current: undefined,
      timer: undefined,
    }
    this.#recoveries.set(sessionId, rec)
    this.#stats.recoveries++
    this.#schedule(rec)
  }

  /** Sets up the next attempt: after its backoff, or on `triggerManualRecovery`. */
  #schedule(rec) {
    const n = rec.state.attempts.length + 1
    if (n > this.#config.maxRetries) {
      const tried = this.#config.maxRetries
      this.#fail(rec, tried === 0 ? 'maxRetries is 0' : `the session did not recover in ${tried} attempt(s)`)
      return
    }
    rec.state.status = 'pending'
    if (this.#config.strategy === 'manual') return
    const delay = this.#config.strategy === 'delayed' && n > 1 ? this.#config.retryDelay * this.#config.backoffMultiplier ** (n - 1) : 0
    rec.timer = setTimeout(() => {
      rec.timer = undefined
      this.#attempt(rec, false)
    }, delay)
  }

  /** Starts attempt n; false when it did not start (storm limit, spawn error). */
  #attempt(rec, manual) {
    const sessionId = rec.state.sessionId
    const now = Date.now()
    while (this.#starts.length > 0 && this.#starts[0] <= now - STORM_WINDOW_MS) this.#starts.shift()
    const n = rec.state.attempts.length + 1
    if (!manual && this.#starts.length >= this.#config.maxRecoveriesPerMinute) {
      const until = this.#starts[0] + STORM_WINDOW_MS
      this.emit('recovery-throttled', { sessionId, attemptNumber: n, until: new Date(until) })
      rec.timer = setTimeout(() => {
        rec.timer = undefined
        this.#attempt(rec, false)
      }, until - now)
      return false
    }
    this.#starts.push(now)
    this.#stats.attempts++
    const attempt = { sessionId, attemptNumber: n, timestamp: new Date(now), strategy: this.#config.strategy, success: false }
    rec.state.attempts.push(attempt)
    rec.state.status = 'in_progress'
    this.emit('recovery-attempt', { sessionId, attemptNumber: n, analysis: rec.analysis })
    return this.#respawn(rec, attempt, true)
  }

  /** Starts the attempt's session; with `resume`, Claude Code continues the conversation. */
  #respawn(rec, attempt, resume) {
    let started
    try {
      started = this.#hooks.respawn(
        rec.state.sessionId,
        rec.latest,
        JSON.stringify(rec.analysis),
        attempt.attemptNumber,
        this.#config.timeoutGrowth,
        resume,
      )
    } catch (error) {
      attempt.error = error.message
      this.#attemptFailed(rec, error.message)
      return false
    }
    attempt.newSessionId = started.sessionId
    attempt.resumed = started.resumed
    if (started.note) attempt.note = attempt.note ? `${attempt.note}; ${started.note}` : started.note
    rec.current = started.sessionId
    this.#bySession.set(started.sessionId, rec)
    this.emit('recovery-respawned', {
      sessionId: rec.state.sessionId,
      attemptNumber: attempt.attemptNumber,
      newSessionId: started.sessionId,
      resumed: started.resumed,
    })
    return true
  }

  #attemptEnded(rec, sessionId, status) {
    const attempt = rec.state.attempts[rec.state.attempts.length - 1]
    if (status.state === 'completed') {
      attempt.success = true
      rec.current = undefined
      this.#finish(rec, 'succeeded')
      this.emit('recovery-succeeded', {
        sessionId: rec.state.sessionId,
        attemptNumber: attempt.attemptNumber,
        newSessionId: sessionId,
      })
      return
    }
    // A resume that never got going (no transcript, a refused id): same attempt, fresh session.
    if (attempt.resumed && !status.stdout.includes('"subtype":"init"')) {
      const why = (status.stderr || status.errorMessage || status.state).trim().split('\n').pop()
      attempt.resumed = false
      attempt.note = `${attempt.note ? `${attempt.note}; ` : ''}resume failed at start-up (${why}): fresh session with the original task`
      this.#remember(sessionId)
      this.#respawn(rec, attempt, false)
      return
    }
    rec.latest = sessionId
    if (this.#handles(status)) {
      this.#handleEnded(sessionId, status)
      return
    }
    this.#remember(sessionId)
    if (status.state === 'terminated') {
      attempt.error = `its new session ${sessionId} was terminated`
      rec.current = undefined
      this.emit('recovery-attempt-failed', { sessionId: rec.state.sessionId, attemptNumber: attempt.attemptNumber, error: attempt.error })
      this.#fail(rec, `the new session ${sessionId} was terminated`)
      return
    }
    this.#attemptFailed(rec, `its new session ${sessionId} ended ${status.state}${status.errorMessage ? ` (${status.errorMessage})` : ''}`)
  }

  #attemptFailed(rec, error) {
    const attempt = rec.state.attempts[rec.state.attempts.length - 1]
    attempt.error ??= error
    rec.current = undefined
    this.emit('recovery-attempt-failed', { sessionId: rec.state.sessionId, attemptNumber: attempt.attemptNumber, error })
    this.#schedule(rec)
  }

  #fail(rec, reason) {
    this.#finish(rec, 'failed')
    this.emit('recovery-failed', { sessionId: rec.state.sessionId, reason })
  }

  #finish(rec, status) {
    clearTimeout(rec.timer)
    rec.timer = undefined
    rec.state.status = status
    rec.state.completedAt = new Date()
    this.#stats[status === 'succeeded' ? 'succeeded' : status === 'failed' ? 'failed' : 'abandoned']++
    this.#finished.push(rec)
    if (this.#finished.length > FINISHED_KEPT) {
      const old = this.#finished.shift()
      this.#recoveries.delete(old.state.sessionId)
      for (const a of old.state.attempts) if (a.newSessionId) this.#bySession.delete(a.newSessionId)
    }
  }

  #find(sessionId) {
    if (typeof sessionId !== 'string') throw argError('sessionId must be a string')
    return this.#recoveries.get(sessionId) ?? this.#bySession.get(sessionId)
  }

  getRecoveryStatus(sessionId) {
    const rec = this.#find(sessionId)
    return rec === undefined ? null : copyState(rec)
  }

  getActiveRecoveries() {
    const active = []
    for (const rec of this.#recoveries.values()) {
      if (rec.state.status === 'pending' || rec.state.status === 'in_progress') active.push(copyState(rec))
    }
    return active
  }

  getRecoveryStats() {
    const s = this.#stats
    return {
      totalCrashes: s.crashes,
      totalRecoveryAttempts: s.attempts,
      successfulRecoveries: s.succeeded,
      failedRecoveries: s.failed,
      abandonedRecoveries: s.abandoned,
      recoveryRate: s.recoveries === 0 ? 0 : s.succeeded / s.recoveries,
      avgAttemptsPerRecovery: s.recoveries === 0 ? 0 : s.attempts / s.recoveries,
    }
  }

  async triggerManualRecovery(sessionId) {
    const rec = this.#find(sessionId)
    if (rec === undefined) throw recoveryError(`no recovery of session ${sessionId}`, 'ERR_UNKNOWN_RECOVERY', sessionId)
    if (rec.state.status === 'in_progress') {
      throw recoveryError(`the recovery of session ${rec.state.sessionId} is already in progress`, 'ERR_RECOVERY_IN_PROGRESS', sessionId)
    }
    if (rec.state.status !== 'pending') return false
    clearTimeout(rec.timer)
    rec.timer = undefined
    return this.#attempt(rec, true)
  }

  abandonRecovery(sessionId) {
    const rec = this.#find(sessionId)
    if (rec === undefined) throw recoveryError(`no recovery of session ${sessionId}`, 'ERR_UNKNOWN_RECOVERY', sessionId)
    if (rec.state.status !== 'pending' && rec.state.status !== 'in_progress') return
    // A session already started keeps running; its ending no longer counts here.
    rec.current = undefined
    this.#finish(rec, 'abandoned')
    this.emit('recovery-abandoned', { sessionId: rec.state.sessionId })
  }
}

module.exports = { SessionRecoveryManager }
