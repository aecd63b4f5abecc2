// Rehearsal consumer, type-checked with `tsc --strict` under node10, node16 (CommonJS and
// ES module) and bundler resolution: the README's example, default imports included.
import ClaudeSessionSpawner, { type ClaudeSessionConfig, type SpawnResult } from 'claude-session-spawner'
import SessionPool, { type PoolStatus } from 'claude-session-spawner/session-pool'
import SessionRecoveryManager, { type RecoveryState } from 'claude-session-spawner/session-recovery'
import Spawner from 'claude-session-spawner/claude-session-spawner'

const spawner: ClaudeSessionSpawner = new Spawner({ claudePath: 'claude' })
const pool = new SessionPool(spawner, {
  maxConcurrentSessions: 2,
  minIdleSessions: 0,
  defaultSessionTimeout: 60_000,
  maxQueueSize: 10,
  autoRecovery: true,
  priorityWeights: { critical: 4, high: 3, medium: 2, low: 1 },
})
const recovery = new SessionRecoveryManager(new ClaudeSessionSpawner(), {
  enabled: true,
  maxRetries: 3,
  retryDelay: 1000,
  backoffMultiplier: 2,
  saveCrashDumps: false,
  strategy: 'delayed',
})

export async function start(config: ClaudeSessionConfig): Promise<SpawnResult> {
  spawner.on('session-ended', ({ sessionId, status }) => console.log(sessionId, status.state))
  const counts: PoolStatus = pool.getPoolStatus()
  const active: RecoveryState[] = recovery.getActiveRecoveries()
  console.log(counts.activeSessions, active.length)
  return spawner.spawnSession(config)
}
