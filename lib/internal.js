'use strict'
// What the package's classes tell each other and nobody else (behind symbols): how a
// pool or recovery manager reaches the native spawner and gets its deliveries, and a
// started session's SpawnResult. Also how user code is called without letting a
// throw change the library's outcome.

const kNative = Symbol('claude-session-spawner.native')
/** `spawner[kAttach](target, component)`: deliveries to `target` go to `component[kDeliver](name, payload)`. */
const kAttach = Symbol('claude-session-spawner.attach')
const kDeliver = Symbol('claude-session-spawner.deliver')
/** `spawner[kSession](sessionId)`: the SpawnResult of a session whose `session-spawned` came. */
const kSession = Symbol('claude-session-spawner.session')

/** Emits; a listener that throws is reported as an uncaught exception, later, and cuts nothing short. */
function emitSafely(emitter, name, payload) {
  try {
    if (payload === undefined) emitter.emit(name)
    else emitter.emit(name, payload)
  } catch (error) {
    reportLater(error)
  }
}

/** Throws `error` where Node reports uncaught exceptions, after the current work. */
function reportLater(error) {
  process.nextTick(() => {
    throw error
  })
}

/** Runs a request's callback; one that throws is reported as `callback-error` on `pool` and changes nothing. */
function runCallback(pool, request, name, argument) {
  const callback = request[name]
  if (!callback) return
  try {
    callback(argument)
  } catch (error) {
    emitSafely(pool, 'callback-error', { requestId: request.requestId, callback: name, error })
  }
}

module.exports = { kNative, kAttach, kDeliver, kSession, emitSafely, reportLater, runCallback }
