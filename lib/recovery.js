'use strict'
// SessionRecoveryManager: the native recovery manager (Rust: crash analysis, dumps,
// backoff, the storm limit, respawns with `--resume`) as an EventEmitter with the
// TypeScript module's API. This class converts arguments and results, and re-emits
// the manager's events, which arrive through its spawner in order with the spawner's.

const { EventEmitter } = require('node:events')
const { NativeRecoveryManager } = require('./native')
const { ClaudeSessionSpawner } = require('./spawner')
const convert = require('./convert')
const { kAttach, kDeliver, kNative, emitSafely } = require('./internal')
const { checkString, isObject } = require('./encode')

const { typeError, crashReport } = convert
const argError = (message) => typeError(message, undefined, 'ERR_INVALID_ARG')

/** A recovery state from JSON: times become Dates. */
function revive(s) {
  crashReport(s.crashReport)
  s.startedAt = new Date(s.startedAt)
  if (s.completedAt !== undefined) s.completedAt = new Date(s.completedAt)
  for (const a of s.attempts) a.timestamp = new Date(a.timestamp)
  return s
}

/** An event's payload from its JSON, in the contract's shape. */
function payload(name, json) {
  const p = JSON.parse(json)
  if (name === 'crash-detected') crashReport(p.crashReport)
  if (name === 'recovery-throttled') p.until = new Date(p.until)
  // A failure travels as its code and message, and is an Error here.
  return p.code === undefined ? p : { sessionId: p.sessionId, error: Object.assign(new Error(p.message), { code: p.code, sessionId: p.sessionId }) }
}

class SessionRecoveryManager extends EventEmitter {
  #native

  constructor(spawner, config = {}) {
    super()
    if (!(spawner instanceof ClaudeSessionSpawner)) throw typeError('spawner must be a ClaudeSessionSpawner', 'spawner')
    if (!isObject(config)) throw typeError('config must be an object', 'config')
    this.#native = convert.call(() => new NativeRecoveryManager(spawner[kNative], JSON.stringify(config)))
    spawner[kAttach](this.#native.target, this)
  }

  [kDeliver](name, json) {
    emitSafely(this, name, payload(name, json))
  }

  async handleCrash(sessionId, crashReport) {
    if (typeof sessionId !== 'string' || sessionId === '') throw argError('sessionId must be a non-empty string')
    if (crashReport !== undefined && (typeof crashReport !== 'object' || crashReport === null)) {
      throw argError('crashReport must be an object')
    }
    const json = crashReport === undefined ? undefined : JSON.stringify(crashReport)
    return convert.settle(() => this.#native.handleCrash(sessionId, json))
  }

  getRecoveryStatus(sessionId) {
    checkString(sessionId, 'sessionId')
    const json = this.#native.recoveryStatus(sessionId)
    return json == null ? null : revive(JSON.parse(json))
  }

  getActiveRecoveries() {
    return JSON.parse(this.#native.activeRecoveries()).map(revive)
  }

  getRecoveryStats() {
    return JSON.parse(this.#native.recoveryStats())
  }

  async triggerManualRecovery(sessionId) {
    checkString(sessionId, 'sessionId')
    return convert.call(() => this.#native.triggerManualRecovery(sessionId))
  }

  abandonRecovery(sessionId) {
    checkString(sessionId, 'sessionId')
    convert.call(() => this.#native.abandonRecovery(sessionId))
  }
}

module.exports = { SessionRecoveryManager }
