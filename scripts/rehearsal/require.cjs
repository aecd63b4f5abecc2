// Rehearsal consumer: CommonJS `require` of the root and of each subpath.
const assert = require('node:assert/strict')

const root = require('claude-session-spawner')
assert.equal(typeof root.ClaudeSessionSpawner, 'function')
assert.equal(root.default, root.ClaudeSessionSpawner)
for (const [subpath, name] of [
  ['claude-session-spawner', 'ClaudeSessionSpawner'],
  ['session-pool', 'SessionPool'],
  ['session-recovery', 'SessionRecoveryManager'],
]) {
  const sub = require(`claude-session-spawner/${subpath}`)
  assert.equal(sub.default, root[name], `require('claude-session-spawner/${subpath}').default`)
  assert.equal(sub[name], root[name], `require('claude-session-spawner/${subpath}').${name}`)
}
const spawner = new root.ClaudeSessionSpawner()
const pool = new root.SessionPool(spawner, {
  maxConcurrentSessions: 1,
  minIdleSessions: 0,
  defaultSessionTimeout: 60000,
  maxQueueSize: 10,
  autoRecovery: false,
  priorityWeights: { critical: 4, high: 3, medium: 2, low: 1 },
})
assert.deepEqual(pool.getPoolStatus().queuedRequests, [])
pool.close().then(() => console.log("require: the root and 3 subpaths"))
