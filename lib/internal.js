'use strict'
// What the package's classes tell each other and nobody else: the spawner's recovery
// and shared-pool hooks (behind symbols) and which sessions a pool will retry itself, so the
// recovery manager leaves those alone; and how a pool runs a request's callbacks.

const kRecovery = Symbol('claude-session-spawner.recovery')
/** The spawner's hooks for a pool on a shared queue: spawning from config JSON. */
const kShared = Symbol('claude-session-spawner.shared')

/** spawner -> Map<sessionId, { owner, states }>: `owner` restarts the session when it ends in one of `states`. */
const owners = new WeakMap()

function claimRecovery(spawner, sessionId, owner, states) {
  let map = owners.get(spawner)
  if (map === undefined) owners.set(spawner, (map = new Map()))
  map.set(sessionId, { owner, states })
}

/** Forgets a claim once every `session-ended` listener of this emit has run. */
function releaseRecovery(spawner, sessionId) {
  queueMicrotask(() => owners.get(spawner)?.delete(sessionId))
}

/** `{ owner, states }` when someone other than the recovery manager restarts this session. */
function recoveryClaim(spawner, sessionId) {
  return owners.get(spawner)?.get(sessionId)
}

/** Runs a request's callback; one that throws is reported as `callback-error` on `pool` and changes nothing. */
function runCallback(pool, request, name, argument) {
  const callback = request[name]
  if (!callback) return
  try {
    callback(argument)
  } catch (error) {
    pool.emit('callback-error', { requestId: request.requestId, callback: name, error })
  }
}

module.exports = { kRecovery, kShared, runCallback, claimRecovery, releaseRecovery, recoveryClaim }
