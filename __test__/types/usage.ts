// Compiled with `tsc --noEmit --strict`: the spawner API used the way the VP daemon
// uses it, imported by package name through the package's `exports`.
import { EventEmitter } from 'node:events'
import ClaudeSessionSpawner, {
  ClaudeSessionSpawner as NamedSpawner,
  type ClaudeSessionConfig,
  type ClaudeSessionStatus,
  type MemoryContext,
  type SessionCrashReport,
  type SessionMetrics,
  type SessionMetricsSummary,
  type SpawnResult,
  type TaskContext,
  type VPCharter,
} from 'claude-session-spawner'
import SubpathSpawner, {
  type ClaudeSessionConfig as SubpathConfig,
  type ClaudeSessionStatus as SubpathStatus,
} from 'claude-session-spawner/claude-session-spawner'
import { SessionPool as RootPool } from 'claude-session-spawner'
import SessionPool, {
  type PoolMetrics,
  type PoolStatus,
  type PooledSessionRequest,
  type QueuedRequestInfo,
  type SessionPoolConfig,
} from 'claude-session-spawner/session-pool'

const charter: VPCharter = {
  identity: { name: 'Ada', email: 'ada@example.com', role: 'Engineer' },
  objectives: ['Ship the feature'],
  constraints: {
    forbiddenCommands: ['rm -rf', 'git push --force'],
    forbiddenPatterns: [/password\s*=/i],
    requiredApprovals: ['deploy'],
  },
  resources: { maxTokens: 100_000, maxExecutionTime: 600_000, allowedTools: ['read', 'write', 'bash'] },
}
const task: TaskContext = {
  taskId: 'T-1',
  description: 'Fix the build',
  priority: 'high',
  relatedTasks: ['T-0'],
  metadata: { ticket: 42 },
}
const memory: MemoryContext = {
  recentActions: [{ timestamp: new Date(), action: 'ran tests', result: 'ok' }],
  conversationHistory: [{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'hello' }],
  preferences: { style: 'terse' },
  projectContext: { repo: 'vp' },
}
const config: ClaudeSessionConfig = {
  workingDirectory: '/tmp',
  charter,
  taskContext: task,
  memory,
  environmentVariables: { FOO: 'bar' },
  timeout: 60_000,
  verbose: false,
  claudeConfigPath: '/tmp/CLAUDE.md',
}
const sameConfig: SubpathConfig = config

async function daemon(): Promise<void> {
  const spawner = new ClaudeSessionSpawner()
  const configured = new NamedSpawner({ claudePath: 'claude', protocol: 'stream-json', gracePeriodMs: 5000 })
  const fromSubpath: ClaudeSessionSpawner = new SubpathSpawner({ protocol: 'text', extraArgs: ['--x'] })
  const emitter: EventEmitter = spawner
  void emitter
  void configured
  void fromSubpath

  spawner.on('session-spawned', ({ sessionId, pid }) => console.log(sessionId, pid.toFixed()))
  spawner.on('session-output', ({ sessionId, type, data }) => {
    const stream: 'stdout' | 'stderr' = type
    console.log(sessionId, stream, data.length)
  })
  spawner.once('session-timeout', ({ sessionId }) => console.log(sessionId))
  const onEnded = ({ status }: { sessionId: string; status: ClaudeSessionStatus }) => console.log(status.state)
  spawner.on('session-ended', onEnded)
  spawner.off('session-ended', onEnded)
  spawner.on('something-else', (...args: unknown[]) => console.log(args))
  spawner.removeAllListeners('session-output')
  const count: number = spawner.listenerCount('session-ended')
  void count

  const result: SpawnResult = await spawner.spawnSession(sameConfig)
  const started: ClaudeSessionStatus = result.status
  const startTime: Date = started.startTime
  void startTime
  const final: SubpathStatus = await result.completion
  const endTime: Date | undefined = final.endTime
  const tokens: number | undefined = final.tokenUsage?.total
  const metrics: SessionMetrics = final.metrics
  void endTime
  void tokens
  void metrics.commandsExecuted

  const status: ClaudeSessionStatus | null = spawner.getSessionStatus(result.sessionId)
  if (status !== null && status.state === 'waiting_input') spawner.sendInput(status.sessionId, 'yes\n')
  const active: ClaudeSessionStatus[] = spawner.getActiveSessions()
  await spawner.terminateSession(result.sessionId)
  await spawner.terminateSession(result.sessionId, false)
  const removed: number = spawner.cleanupCompletedSessions()
  const crashes: SessionCrashReport[] = spawner.getCrashReports()
  const crashTime: Date = crashes[0].timestamp
  const summary: SessionMetricsSummary = spawner.getMetricsSummary()
  void [active, removed, crashTime, summary.avgExecutionTime]
}

void daemon

async function pooled(spawner: ClaudeSessionSpawner): Promise<void> {
  const poolConfig: SessionPoolConfig = {
    maxConcurrentSessions: 3,
    minIdleSessions: 0,
    defaultSessionTimeout: 600_000,
    maxQueueSize: 100,
    autoRecovery: true,
    priorityWeights: { critical: 4, high: 3, medium: 2, low: 1 },
  }
  const pool = new SessionPool(spawner, poolConfig)
  const same: RootPool = pool
  const emitter: EventEmitter = pool
  void [same, emitter]

  pool.on('session-allocated', ({ requestId, sessionId }) => console.log(requestId, sessionId))
  pool.on('session-released', ({ sessionId, status }) => console.log(sessionId, status.state))
  pool.on('request-queued', ({ requestId, position, queueLength }) => console.log(requestId, position + queueLength))
  pool.on('request-cancelled', ({ requestId }) => console.log(requestId))
  pool.on('session-recovering', ({ sessionId, requestId }) => console.log(sessionId, requestId))
  pool.once('pool-draining', () => console.log('draining'))
  pool.once('pool-drained', () => console.log('drained'))

  const request: PooledSessionRequest = {
    requestId: 'req-1',
    config: { ...config, timeout: 0 },
    priority: 'critical',
    queuedAt: new Date(),
    onAllocated: (sessionId: string) => console.log(sessionId),
    onCompleted: (status: ClaudeSessionStatus) => console.log(status.exitCode),
    onFailed: (error: Error) => console.log(error.message),
  }
  const result: SpawnResult = await pool.requestSession(request)
  const final: ClaudeSessionStatus = await result.completion
  void final

  const status: PoolStatus = pool.getPoolStatus()
  const queued: QueuedRequestInfo[] = status.queuedRequests
  const wait: number = queued[0].estimatedWaitTime
  const queuedAt: Date = queued[0].queuedAt
  const sessions: ClaudeSessionStatus[] = status.activeSessions
  const cancelled: boolean = pool.cancelRequest('req-2')
  const metrics: PoolMetrics = pool.getMetrics()
  void [wait, queuedAt, sessions, cancelled, metrics.queueWaitTime, metrics.totalSessions, status.utilization]
  await pool.drain()
  await pool.drain(5_000)
}

void pooled

// The recovery manager, as the daemon's `./session-recovery` module was used.
import SessionRecoveryManager, {
  type CrashAnalysis,
  type RecoveryAttempt,
  type RecoveryConfig,
  type RecoveryState,
  type RecoveryStatistics,
} from 'claude-session-spawner/session-recovery'
import { SessionRecoveryManager as RootRecovery } from 'claude-session-spawner'

async function recovered(spawner: ClaudeSessionSpawner): Promise<void> {
  const config: RecoveryConfig = {
    enabled: true,
    maxRetries: 3,
    retryDelay: 1000,
    backoffMultiplier: 2,
    saveCrashDumps: true,
    crashDumpDirectory: '/var/lib/vp/crash-dumps',
    strategy: 'delayed',
  }
  const manager: SessionRecoveryManager = new RootRecovery(spawner, config)
  const emitter: EventEmitter = manager
  void emitter
  manager.on('crash-detected', ({ sessionId, crashReport }) => console.log(sessionId, crashReport.timestamp.getTime()))
  manager.on('crash-analyzed', ({ analysis }) => console.log(analysis.crashType, analysis.confidence))
  manager.on('recovery-attempt', ({ attemptNumber, analysis }) => console.log(attemptNumber, analysis.rootCause))
  manager.on('recovery-succeeded', ({ sessionId, attemptNumber }) => console.log(sessionId, attemptNumber))
  manager.on('recovery-attempt-failed', ({ error }) => console.log(error))
  manager.on('recovery-failed', ({ reason }) => console.log(reason))
  manager.on('recovery-abandoned', ({ sessionId }) => console.log(sessionId))
  manager.on('crash-dump-saved', ({ filepath }) => console.log(filepath))

  const report: SessionCrashReport = spawner.getCrashReports()[0]
  await manager.handleCrash(report.sessionId, report)
  const state: RecoveryState | null = manager.getRecoveryStatus(report.sessionId)
  if (state !== null) {
    const attempts: RecoveryAttempt[] = state.attempts
    const next: string | undefined = attempts[0]?.newSessionId
    const status: 'pending' | 'in_progress' | 'succeeded' | 'failed' | 'abandoned' = state.status
    const when: Date | undefined = state.completedAt
    void [next, status, when, state.startedAt.getTime(), state.crashReport.lastOutput]
  }
  const active: RecoveryState[] = manager.getActiveRecoveries()
  const stats: RecoveryStatistics = manager.getRecoveryStats()
  const analysis: CrashAnalysis['crashType'] = 'oom'
  const triggered: boolean = await manager.triggerManualRecovery(report.sessionId)
  manager.abandonRecovery(report.sessionId)
  void [active, stats.recoveryRate, stats.avgAttemptsPerRecovery, analysis, triggered, SessionRecoveryManager]
}

void recovered
