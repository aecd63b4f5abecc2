'use strict'
// Native results and errors made into objects of the caller's realm. The addon's
// own objects belong to Node's main realm, so under a `vm` sandbox (Jest runs every
// test file in one) `instanceof Date` / `instanceof TypeError` would be false.

const toDate = (ms) => (ms === undefined ? undefined : new Date(ms))

function status(s) {
  if (s === null || s === undefined) return null
  s.startTime = toDate(s.startTime)
  if (s.endTime !== undefined) s.endTime = toDate(s.endTime)
  if (s.violations !== undefined) s.violations = s.violations.map(violation)
  return s
}

/** A policy violation: `inputJson` becomes `input`. */
function violation({ timestamp, toolName, inputJson, rule, detail }) {
  return { timestamp: toDate(timestamp), toolName, input: JSON.parse(inputJson), rule, detail }
}

/** The snapshot of a session whose agent has just started. */
function startedStatus(sessionId, pid, startTime, claudeSessionId) {
  return {
    sessionId,
    state: 'running',
    pid,
    startTime: new Date(startTime),
    stdout: '',
    stderr: '',
    metrics: { commandsExecuted: 0, filesModified: 0, approvalPrompts: 0, escalations: 0, errors: 0 },
    ...(claudeSessionId === undefined ? {} : { claudeSessionId }),
    modifiedFiles: [],
    violations: [],
  }
}

const crashReport = (r) => Object.assign(r, { timestamp: toDate(r.timestamp) })

const EXTRA_FIELDS = ['code', 'field', 'sessionId']

/** The same error as a TypeError (config errors) or an Error of this realm. */
function error(e) {
  if (!(e && typeof e === 'object' && typeof e.code === 'string' && e.code.startsWith('ERR_'))) return e
  const Kind = e.code === 'ERR_INVALID_CONFIG' || e.code === 'ERR_INVALID_ARG' ? TypeError : Error
  if (e instanceof Kind) return e
  const copy = new Kind(e.message)
  for (const key of EXTRA_FIELDS) if (e[key] !== undefined) copy[key] = e[key]
  return copy
}

/** Calls a native method; its errors come out as errors of this realm. */
function call(fn) {
  try {
    return fn()
  } catch (e) {
    throw error(e)
  }
}

/** Awaits a native promise; its errors, thrown or rejected, come out of this realm. */
async function settle(fn) {
  try {
    return await fn()
  } catch (e) {
    throw error(e)
  }
}

/** A bad argument or config field: a TypeError with `code` and, when known, `field`. */
function typeError(message, field, code = 'ERR_INVALID_CONFIG') {
  return Object.assign(new TypeError(message), { code }, field ? { field } : {})
}

module.exports = { status, startedStatus, violation, crashReport, error, call, settle, typeError }
