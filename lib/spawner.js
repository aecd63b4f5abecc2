'use strict'
// ClaudeSessionSpawner: the native spawner as an EventEmitter with the TypeScript
// module's API. Behaviour lives in Rust, which also delivers, in one ordered stream,
// the events of the pools and recovery managers over this spawner: this class routes
// them, emits its own, and settles each completion right after its session's
// `session-ended`. Whether Node stays alive is decided natively (live sessions and
// pending work keep it alive, as child processes do).

const { EventEmitter } = require('node:events')
const { NativeSpawner, killSessionsOnExit } = require('./native')
const { encodeConfig, encodeOptions, checkString, daemonEnv } = require('./encode')
const convert = require('./convert')
const { kAttach, kDeliver, kNative, kSession, emitSafely } = require('./internal')

let exitHookInstalled = false

class ClaudeSessionSpawner extends EventEmitter {
  #native
  /** sessionId -> { status, completion, resolve } for sessions that have not ended. */
  #live = new Map()
  /** target -> the pool or recovery manager whose events arrive there. */
  #attached = new Map()
  /** startSession's number -> the spawnSession waiting for its `session-started`. */
  #starting = new Map()
  #approvalHandler

  constructor(options) {
    super()
    // CLAUDE_PATH is read on this side: under a sandbox JavaScript's process.env is its own copy.
    const { json, approvalHandler, reapOrphans } = encodeOptions(options)
    this.#approvalHandler = approvalHandler
    // The native side holds this listener for the spawner's life: it must not hold the
    // spawner itself, which the native side keeps alive only while work is in flight.
    const self = new WeakRef(this)
    const listener = (target, name, payload) => {
      const spawner = self.deref()
      if (spawner === undefined) return
      // Deliveries made in a row off this thread come as one batch (one wake-up), in order.
      if (name === 'batch') for (const [t, n, p] of payload) ClaudeSessionSpawner.#route(spawner, t, n, p)
      else ClaudeSessionSpawner.#route(spawner, target, name, payload)
    }
    this.#native = convert.call(() => new NativeSpawner(json, daemonEnv(), listener, this))
    if (!exitHookInstalled) {
      exitHookInstalled = true
      // `process.exit()` skips Node-API cleanup hooks on the main thread; 'exit' does not.
      process.on('exit', killSessionsOnExit)
    }
    if (reapOrphans) {
      this.reapOrphans().then(
        (report) => this.emit('orphans-reaped', report),
        (error) => this.emit('orphans-reap-failed', { error }),
      )
    }
  }

  /** Stops what is left of sessions of daemons that died (see README), records them `crashed`, reports. */
  async reapOrphans() {
    return convert.settle(() => this.#native.reapOrphans())
  }

  /** The agent executable this spawner starts. */
  get claudePath() {
    return this.#native.claudePath
  }

  async spawnSession(config) {
    const json = encodeConfig(config)
    // Started on the native launcher thread; `session-started` settles it, after `session-spawned`.
    const token = convert.call(() => this.#native.startSession(json, daemonEnv()))
    const sessionId = await new Promise((resolve, reject) => this.#starting.set(token, { resolve, reject }))
    return this[kSession](sessionId)
  }

  /**
   * What spawnSession gives for a session that started here (its `session-spawned`
   * came); for one that has ended since, its final status.
   */
  [kSession](sessionId) {
    const live = this.#live.get(sessionId)
    if (live) return { sessionId, status: live.status, completion: live.completion }
    const status = this.getSessionStatus(sessionId)
    return { sessionId, status, completion: Promise.resolve(status) }
  }

  /** The native spawner, for the pools and recovery managers made over this one. */
  get [kNative]() {
    return this.#native
  }

  /** Routes the deliveries to `target` to `component[kDeliver](name, payload)`. */
  [kAttach](target, component) {
    this.#attached.set(target, component)
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

  static #route(spawner, target, name, payload) {
    if (target === 0) spawner.#deliver(name, payload)
    else spawner.#attached.get(target)?.[kDeliver](name, payload)
  }

  #deliver(name, payload) {
    switch (name) {
      case 'session-spawned': {
        const { sessionId, pid, startTime, claudeSessionId } = payload
        let resolve
        const completion = new Promise((r) => (resolve = r))
        this.#live.set(sessionId, { status: convert.startedStatus(sessionId, pid, startTime, claudeSessionId), completion, resolve })
        emitSafely(this, name, { sessionId, pid })
        return
      }
      case 'session-ended': {
        convert.status(payload.status)
        const live = this.#live.get(payload.sessionId)
        this.#live.delete(payload.sessionId)
        emitSafely(this, name, payload)
        live?.resolve(payload.status)
        return
      }
      case 'session-message':
        return emitSafely(this, name, { sessionId: payload.sessionId, message: JSON.parse(payload.messageJson) })
      case 'policy-violation':
        return emitSafely(this, name, { sessionId: payload.sessionId, ...convert.violation(payload) })
      case 'session-rate-limited':
        return emitSafely(this, name, { sessionId: payload.sessionId, until: new Date(payload.until), reason: payload.reason })
      case 'session-started': {
        const { resolve, reject } = this.#starting.get(payload.token)
        this.#starting.delete(payload.token)
        return payload.error ? reject(convert.error(payload.error)) : resolve(payload.sessionId)
      }
      case 'approval-request':
        return this.#approve(payload)
      case 'native-error':
        return process.emitWarning(String(payload), { code: 'ERR_NATIVE', type: 'ClaudeSessionSpawnerWarning' })
      case 'recheck':
        return
      default:
        emitSafely(this, name, payload)
    }
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
}

module.exports = { ClaudeSessionSpawner }
