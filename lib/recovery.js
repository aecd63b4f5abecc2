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

function typeError(message, field) {
  return Object.assign(new TypeError(message), { code: 'ERR_INVALID_CONFIG', field })
}

function argError(message) {
  return Object.assign(new TypeError(message), { code: 'ERR_INVALID_ARG' })
}

/** JSON of a crash report, dates as ISO text. */
function reportJson(report) {
  return JSON.stringify(report, (key, value) => (value instanceof Date ? value.toISOString() : value))
}

function crashReport(r) {
  r.timestamp = new Date(r.timestamp)
  return r
}

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
  if (p.code !== undefined) {
    return { sessionId: p.sessionId, error: Object.assign(new Error(p.message), { code: p.code, sessionId: p.sessionId }) }
  }
  return p
}

class SessionRecoveryManager extends EventEmitter {
  #native

  constructor(spawner, config = {}) {
    super()
    if (!(spawner instanceof ClaudeSessionSpawner)) throw typeError('spawner must be a ClaudeSessionSpawner', 'spawner')
    if (typeof config !== 'object' || config === null || Array.isArray(config)) {
      throw typeError('config must be an object', 'config')
    }
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
    const json = crashReport === undefined ? undefined : reportJson(crashReport)
    return convert.call(() => this.#native.handleCrash(sessionId, json)).catch((error) => {
      throw convert.error(error)
    })
  }

  getRecoveryStatus(sessionId) {
    if (typeof sessionId !== 'string') throw argError('sessionId must be a string')
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
    if (typeof sessionId !== 'string') throw argError('sessionId must be a string')
    return convert.call(() => this.#native.triggerManualRecovery(sessionId))
  }

  abandonRecovery(sessionId) {
    if (typeof sessionId !== 'string') throw argError('sessionId must be a string')
    convert.call(() => this.#native.abandonRecovery(sessionId))
  }
}

module.exports = { SessionRecoveryManager }
