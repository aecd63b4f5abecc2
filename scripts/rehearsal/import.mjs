// Rehearsal consumer: ES module `import` of the root and of each subpath.
import assert from 'node:assert/strict'

import ClaudeSessionSpawner, { SessionPool, SessionRecoveryManager } from 'claude-session-spawner'
import SubpathSpawner from 'claude-session-spawner/claude-session-spawner'
import Pool, { SessionPool as NamedPool } from 'claude-session-spawner/session-pool'
import Recovery from 'claude-session-spawner/session-recovery'

assert.equal(typeof ClaudeSessionSpawner, 'function')
assert.equal(SubpathSpawner, ClaudeSessionSpawner)
assert.equal(Pool, SessionPool)
assert.equal(NamedPool, SessionPool)
assert.equal(Recovery, SessionRecoveryManager)
assert.equal(new ClaudeSessionSpawner().claudePath, process.env.CLAUDE_PATH ?? 'claude')
console.log('import: the root and 3 subpaths')
