// Compiled with `tsc --noEmit --strict` as an ES module (.mts under node16): the README's
// example the way a `"type": "module"` daemon writes it. Default imports of the root and
// of each subpath must be the classes themselves, constructable, and the same types as
// the named exports.
import ClaudeSessionSpawner, { SessionPool as RootPool, type ClaudeSessionStatus } from 'claude-session-spawner'
import SubpathSpawner, { type SpawnResult } from 'claude-session-spawner/claude-session-spawner'
import SessionPool, { type PoolStatus } from 'claude-session-spawner/session-pool'
import SessionRecoveryManager, { type RecoveryConfig, type RecoveryState } from 'claude-session-spawner/session-recovery'

const spawner = new ClaudeSessionSpawner({ protocol: 'stream-json' })
const viaSubpath: ClaudeSessionSpawner = new SubpathSpawner()
const pool: RootPool = new SessionPool(spawner, {
  maxConcurrentSessions: 2,
  minIdleSessions: 0,
  defaultSessionTimeout: 60_000,
  maxQueueSize: 10,
  autoRecovery: false,
  priorityWeights: { critical: 4, high: 3, medium: 2, low: 1 },
})
declare const recoveryConfig: RecoveryConfig
const recovery = new SessionRecoveryManager(spawner, recoveryConfig)

async function run(): Promise<void> {
  const started: SpawnResult = await spawner.spawnSession({
    charter: {
      identity: { name: 'Ada', email: 'ada@example.com', role: 'Engineer' },
      objectives: ['Ship'],
      constraints: { forbiddenCommands: [], forbiddenPatterns: [], requiredApprovals: [] },
      resources: { maxTokens: 1000, maxExecutionTime: 60_000, allowedTools: ['read'] },
    },
    taskContext: { taskId: 'T-1', description: 'demo', priority: 'low' },
    memory: { recentActions: [], conversationHistory: [], preferences: {}, projectContext: {} },
    workingDirectory: '/tmp',
  })
  const status: ClaudeSessionStatus | null = spawner.getSessionStatus(started.sessionId)
  const counts: PoolStatus = pool.getPoolStatus()
  const recovering: RecoveryState[] = recovery.getActiveRecoveries()
  void [status, counts, recovering, viaSubpath]
}
void run
