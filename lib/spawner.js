'use strict'
// ClaudeSessionSpawner: the native spawner as an EventEmitter with the TypeScript
// module's API. Behaviour lives in Rust; this class only orders what JavaScript
// sees: `session-spawned` synchronously from spawnSession (which, like
// child_process.spawn, starts the agent on this thread), then the queued events,
// and each completion settled right after its session's `session-ended`.

const { EventEmitter } = require('node:events')
const { isMainThread } = require('node:worker_threads')
const { NativeSpawner, realEnvVar } = require('./native')
const { encodeConfig, encodeOptions, checkString } = require('./encode')
const convert = require('./convert')
const { kRecovery, kShared } = require('./internal')

/**
 * Whether `process.env` here is the process's real environment, which the native
 * side then inherits directly (enumerating `process.env` costs ~50 µs a spawn).
 * It is not in a worker thread (a copy by default) nor in a `vm` sandbox such as
 * Jest's (a look-alike copy): there the agent gets `process.env` as JavaScript sees
 * it, the way child_process does. Decided by setting a variable here and asking
 * the native side whether the real environment has it.
 */
const envIsReal = (() => {
  if (!isMainThread) return false
  const probe = `CLAUDE_SESSION_SPAWNER_PROBE_${process.pid}`
  try {
    process.env[probe] = 'seen'
    return realEnvVar(probe) === 'seen'
  } finally {
    delete process.env[probe]
  }
})()

/** Spawners with live sessions; their process groups are killed if Node exits. */
const withLiveSessions = new Set()
let exitHookInstalled = false

function killOnExit(native) {
  withLiveSessions.add(native)
  if (exitHookInstalled) return
  exitHookInstalled = true
  // `process.exit()` skips Node-API cleanup hooks on the main thread; 'exit' does not.
  process.on('exit', () => {
    for (const n of withLiveSessions) n.killAll()
  })
}

class ClaudeSessionSpawner extends EventEmitter {
  #native
  /** sessionId -> { completion, resolve } for sessions that have not ended. */
  #live = new Map()
  /** Whether the event queue keeps Node alive now, and whether it should. */
  #holding = false
  #wantHold = false
  #releasePending = false
  #approvalHandler

  constructor(options) {
    super()
    // CLAUDE_PATH is read on this side: under a sandbox JavaScript's process.env is its own copy.
    const { json, approvalHandler, reapOrphans } = encodeOptions(options)
    this.#approvalHandler = approvalHandler
    this.#native = convert.call(() => new NativeSpawner(json, (name, payload) => this.#deliver(name, payload)))
    if (reapOrphans) {
      this.reapOrphans().then(
        (report) => this.emit('orphans-reaped', report),
        (error) => this.emit('orphans-reap-failed', { error }),
      )
    }
  }

  /**
   * Stops what is left of sessions whose daemon died (their state files are in
   * `stateDir`), records each in this spawner's history as `crashed`, and reports.
   */
  async reapOrphans() {
    return this.#native.reapOrphans().catch((error) => {
      throw convert.error(error)
    })
  }

  /** The agent executable this spawner starts. */
  get claudePath() {
    return this.#native.claudePath
  }

  async spawnSession(config) {
    const json = encodeConfig(config)
    return this.#launch((env) => this.#native.spawnSession(json, env))
  }

  /** Starts an agent through `start(env)` and reports it like any session. */
  #launch(start) {
    // Open the event queue first: a session's events may follow at once.
    this.#setHold(true)
    let spawned
    try {
      // The agent inherits process.env, as with child_process.
      const env = envIsReal ? undefined : JSON.stringify(process.env)
      spawned = convert.call(() => start(env))
    } finally {
      if (spawned === undefined) this.#hold()
    }
    const { sessionId, pid, startTime, claudeSessionId } = spawned
    let resolve
    const completion = new Promise((r) => {
      resolve = r
    })
    this.#live.set(sessionId, { completion, resolve })
    this.#hold()
    // Reported here, synchronously: the session's queued events all come later.
    this.emit('session-spawned', { sessionId, pid })
    return { sessionId, status: convert.startedStatus(sessionId, pid, startTime, claudeSessionId), completion }
  }

  /** A shared-queue pool's access: sessions from config JSON that is already checked. */
  [kShared]() {
    const native = this.#native
    return {
      spawnJson: (json) => this.#launch((env) => native.spawnSession(json, env)),
      spawnTakenOver: (json, conversation, previousHost) => {
        let extra
        const result = this.#launch((env) => {
          const r = native.spawnTakenOver(json, conversation, previousHost, env)
          extra = { resumed: r.resumed, note: r.note }
          return r.spawned
        })
        return { ...result, ...extra }
      },
    }
  }

  /** The recovery manager's access to crash facts, dumps and respawning. */
  [kRecovery]() {
    const native = this.#native
    return {
      crashReport: (sessionId) => {
        const report = convert.call(() => native.crashReportFor(sessionId))
        return report ? convert.crashReport(report) : null
      },
      analyze: (sessionId, reportJson) => JSON.parse(convert.call(() => native.analyzeCrash(sessionId, reportJson))),
      writeDump: (sessionId, directory, reportJson, analysisJson) =>
        convert.call(() => native.writeCrashDump(sessionId, directory, reportJson, analysisJson)),
      respawn: (originalId, latestId, analysisJson, attempt, timeoutGrowth, resume) => {
        let extra
        const result = this.#launch((env) => {
          const r = native.respawnSession(originalId, latestId, analysisJson, attempt, timeoutGrowth, resume, env)
          extra = { resumed: r.resumed, note: r.note }
          return r.spawned
        })
        return { ...result, ...extra }
      },
    }
  }

  getSessionStatus(sessionId) {
    checkString(sessionId, 'sessionId')
    return convert.status(convert.call(() => this.#native.getSessionStatus(sessionId)))
  }

  getActiveSessions() {
    return convert.call(() => this.#native.getActiveSessions()).map(convert.status)
  }

  async terminateSession(sessionId, graceful = true) {
    checkString(sessionId, 'sessionId')
    convert.call(() => this.#native.requestStop(sessionId, graceful !== false))
    const live = this.#live.get(sessionId)
    if (live) await live.completion
  }

  sendInput(sessionId, input) {
    checkString(sessionId, 'sessionId')
    checkString(input, 'input')
    convert.call(() => this.#native.sendInput(sessionId, input))
  }

  /** Closes the agent's stdin: no more input is coming. */
  endSession(sessionId) {
    checkString(sessionId, 'sessionId')
    convert.call(() => this.#native.endSession(sessionId))
  }

  cleanupCompletedSessions() {
    return convert.call(() => this.#native.cleanupCompletedSessions())
  }

  getCrashReports() {
    return convert.call(() => this.#native.getCrashReports()).map(convert.crashReport)
  }

  getMetricsSummary() {
    return convert.call(() => this.#native.getMetricsSummary())
  }

  /** Where the session's CLAUDE.md and complete stdout/stderr logs are. */
  getSessionDirectory(sessionId) {
    checkString(sessionId, 'sessionId')
    return convert.call(() => this.#native.sessionDirectory(sessionId)) ?? null
  }

  #deliver(name, payload) {
    if (name === 'session-ended') {
      convert.status(payload.status)
      const live = this.#live.get(payload.sessionId)
      try {
        this.emit(name, payload)
      } finally {
        if (live) {
          this.#live.delete(payload.sessionId)
          live.resolve(payload.status)
          this.#hold()
        }
      }
      return
    }
    if (name === 'session-message') {
      this.emit(name, { sessionId: payload.sessionId, message: JSON.parse(payload.messageJson) })
      return
    }
    if (name === 'policy-violation') {
      this.emit(name, { sessionId: payload.sessionId, ...convert.violation(payload) })
      return
    }
    if (name === 'session-rate-limited') {
      this.emit(name, { sessionId: payload.sessionId, until: new Date(payload.until), reason: payload.reason })
      return
    }
    if (name === 'approval-request') {
      this.#approve(payload)
      return
    }
    if (name === 'native-error') {
      process.emitWarning(String(payload), { code: 'ERR_NATIVE', type: 'ClaudeSessionSpawnerWarning' })
      return
    }
    this.emit(name, payload)
  }

  /** Asks the approvalHandler; anything but `true` (a throw, a rejection) is a no. */
  #approve({ id, sessionId, toolName, inputJson, reason }) {
    const answer = (approved) => this.#native.answerApproval(id, approved === true)
    const handler = this.#approvalHandler
    if (!handler) return answer(false)
    let result
    try {
      result = handler({ sessionId, toolName, input: JSON.parse(inputJson), reason })
    } catch {
      return answer(false)
    }
    Promise.resolve(result).then(answer, () => answer(false))
  }

  /** Running sessions keep Node alive, as child processes do; idle spawners hold nothing. */
  #hold() {
    this.#setHold(this.#live.size > 0)
  }

  #setHold(hold) {
    if (hold === this.#wantHold) return
    this.#wantHold = hold
    if (hold) {
      if (!this.#holding) {
        this.#native.holdEventLoop(true)
        this.#holding = true
      }
      killOnExit(this.#native)
      return
    }
    withLiveSessions.delete(this.#native)
    // Let go of the loop and the queue once idle, but not between back-to-back
    // sessions: the next one usually starts before this immediate runs (which the
    // still-held queue keeps the loop alive for).
    if (this.#releasePending) return
    this.#releasePending = true
    setImmediate(() => {
      this.#releasePending = false
      if (this.#wantHold || !this.#holding) return
      this.#native.holdEventLoop(false)
      this.#holding = false
      this.#native.releaseEvents()
    }).unref()
  }
}

module.exports = { ClaudeSessionSpawner }
