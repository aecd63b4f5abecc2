'use strict'
// Turning JavaScript arguments into the JSON the native side reads. JSON has no
// RegExp, so a RegExp travels as { source, flags }; a Date travels as its ISO string
// (its own toJSON). The native side checks every field and names the wrong one.

const { isMainThread } = require('node:worker_threads')
const { realEnvVar } = require('./native')
const { typeError } = require('./convert')

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

/** `process.env` for the native side, when it is not the process's own. */
function daemonEnv() {
  return envIsReal ? undefined : JSON.stringify(process.env)
}

function isObject(value) {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function replacer(key, value) {
  const original = this[key]
  if (original instanceof RegExp) return { source: original.source, flags: original.flags }
  if (original instanceof Date && Number.isNaN(original.getTime())) return 'Invalid Date'
  if (typeof value === 'bigint') return value.toString()
  return value
}

function toJson(value, name) {
  try {
    return JSON.stringify(value, replacer)
  } catch (error) {
    throw typeError(`${name} cannot be encoded: ${error.message}`)
  }
}

function encodeConfig(config) {
  if (!isObject(config)) throw typeError('config must be an object')
  return toJson(config, 'config')
}

/**
 * Spawner options: JSON for the native side. The approval handler stays in
 * JavaScript; the native side only learns that there is one.
 */
function encodeOptions(options) {
  if (options === undefined || options === null) options = {}
  if (!isObject(options)) throw typeError('options must be an object')
  const { approvalHandler, reapOrphans, ...rest } = options
  if (reapOrphans !== undefined && typeof reapOrphans !== 'boolean') {
    throw typeError('options.reapOrphans must be a boolean', 'options.reapOrphans')
  }
  if (approvalHandler !== undefined && typeof approvalHandler !== 'function') {
    throw typeError('options.approvalHandler must be a function', 'options.approvalHandler')
  }
  if (approvalHandler) rest.approvalHandler = true
  if (rest.claudePath === undefined && process.env.CLAUDE_PATH) rest.claudePath = process.env.CLAUDE_PATH
  return { json: toJson(rest, 'options'), approvalHandler, reapOrphans: reapOrphans === true }
}

function checkString(value, name) {
  if (typeof value !== 'string') throw typeError(`${name} must be a string`, undefined, 'ERR_INVALID_ARG')
  return value
}

module.exports = { encodeConfig, encodeOptions, checkString, daemonEnv, isObject }
