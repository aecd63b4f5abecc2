// Types of claude-session-spawner: the VP daemon's TypeScript contract, unchanged,
// plus the few additions the native module documents (marked "Added").

import { EventEmitter } from 'node:events'

/** Task and request priority. */
export type Priority = 'critical' | 'high' | 'medium' | 'low'

/** Lifecycle state of a session. */
export type SessionState =
  | 'initializing'
  | 'running'
  | 'waiting_input'
  | 'completed'
  | 'failed'
  | 'timeout'
  | 'crashed'
  | 'terminated'

export interface VPCharter {
  identity: {
    name: string
    email: string
    role: string
  }
  objectives: string[]
  constraints: {
    forbiddenCommands: string[]
    /** Also accepted at run time: strings, read as a pattern source without flags. */
    forbiddenPatterns: RegExp[]
    requiredApprovals: string[]
  }
  resources: {
    maxTokens: number
    /** Milliseconds. */
    maxExecutionTime: number
    /** Lower-case tool words: `read`, `write`, `edit`, `bash`, `glob`, `grep`, ... */
    allowedTools: string[]
  }
}

export interface TaskContext {
  taskId: string
  description: string
  priority: Priority
  relatedTasks?: string[]
  metadata?: Record<string, unknown>
}

export interface MemoryContext {
  recentActions: Array<{
    timestamp: Date
    action: string
    result: string
  }>
  conversationHistory: Array<{
    role: 'user' | 'assistant'
    content: string
  }>
  preferences: Record<string, unknown>
  projectContext: Record<string, unknown>
}

export interface ClaudeSessionConfig {
  workingDirectory: string
  charter: VPCharter
  taskContext: TaskContext
  memory: MemoryContext
  /** Layered over the daemon's environment. */
  environmentVariables?: Record<string, string>
  /** Milliseconds; 0 or absent means none. */
  timeout?: number
  verbose?: boolean
  /** A base CLAUDE.md whose text is appended to the generated one. */
  claudeConfigPath?: string
  /**
   * Added (Claude Code): after each turn's result, wait for `sendInput` (state
   * `waiting_input`) instead of ending; `endSession` ends it. Default false: one task, one turn.
   */
  keepAlive?: boolean
  /** Added (Claude Code): continue this earlier conversation (a status's `claudeSessionId`) with `--resume`. */
  resumeSessionId?: string
  /** Added (Claude Code): Claude Code's own spending cap in US dollars (`--max-budget-usd`). */
  maxBudgetUsd?: number
  /** Added: the first user message, instead of the task prompt made from `taskContext`. */
  prompt?: string
}

export interface SessionMetrics {
  commandsExecuted: number
  filesModified: number
  approvalPrompts: number
  escalations: number
  errors: number
}

export interface ClaudeSessionStatus {
  sessionId: string
  state: SessionState
  pid?: number
  startTime: Date
  endTime?: Date
  /** Milliseconds. */
  executionTime?: number
  exitCode?: number
  errorMessage?: string
  /** The newest part of stdout (at most `outputBufferBytes`); all of it is in the session directory. */
  stdout: string
  stderr: string
  tokenUsage?: {
    input: number
    output: number
    total: number
  }
  metrics: SessionMetrics
  /** Added: the signal that ended the agent, e.g. `'SIGSEGV'`. */
  signal?: string
  /** Added (Claude Code): the conversation id (`--session-id`), for `claude --resume`. */
  claudeSessionId?: string
  /** Added (Claude Code): the session's cost so far, Claude Code's `total_cost_usd`. */
  costUsd?: number
  /** Added: distinct files changed by Write, Edit, MultiEdit and NotebookEdit calls that ran (always present). */
  modifiedFiles?: string[]
  /** Added: tool calls the charter (or Claude Code) refused, newest last, at most 100 (always present). */
  violations?: PolicyViolation[]
  /** Added, a status from a shared-queue pool's event: the host that ran the session. */
  host?: string
  /** Added, likewise: `stdout` holds only its newest 16 KiB (all of it is in the session directory on `host`). */
  stdoutTruncated?: boolean
  /** Added, likewise, for `stderr`. */
  stderrTruncated?: boolean
  /**
   * Added: pids of processes that left the session's process group (`setsid`) and were
   * killed for it by the sweep. Those found after the session ended appear in later statuses.
   */
  stoppedEscapees?: number[]
}

/** Added: which charter rule refused a tool call (`claude-code`: Claude Code refused it itself). */
export type PolicyRule = 'allowed-tools' | 'forbidden-command' | 'forbidden-pattern' | 'required-approval' | 'claude-code'

/** Added: a tool call that was refused. */
export interface PolicyViolation {
  timestamp: Date
  /** Claude Code's tool name, e.g. `'Bash'`. */
  toolName: string
  input: Record<string, any>
  rule: PolicyRule
  /** The entry: the tool, the forbidden command, the pattern (`/src/flags`), the keyword. */
  detail: string
}

/** Added: a tool call that needs the daemon's approval (a `requiredApprovals` keyword). */
export interface ApprovalRequest {
  sessionId: string
  toolName: string
  input: Record<string, any>
  /** The `requiredApprovals` keyword the call contains. */
  reason: string
}

export interface SessionCrashReport {
  sessionId: string
  timestamp: Date
  signal?: string
  exitCode?: number
  lastState: string
  /** The last 1,000 characters of stdout. */
  lastOutput: string
  stackTrace?: string
}

export interface SpawnResult {
  sessionId: string
  /** A snapshot taken when the agent had started. */
  status: ClaudeSessionStatus
  /** Settles with the final status right after the session's `session-ended`. */
  completion: Promise<ClaudeSessionStatus>
}

export interface SessionMetricsSummary {
  totalSessions: number
  activeSessions: number
  completedSessions: number
  failedSessions: number
  crashedSessions: number
  avgExecutionTime: number
  totalTokensUsed: number
}

/** Added: the spawner's options; every one is optional. */
export interface ClaudeSessionSpawnerOptions {
  /** The agent executable. Default: `process.env.CLAUDE_PATH`, else `claude` on `PATH`. */
  claudePath?: string
  /** `'stream-json'` (Claude Code, the default) or `'text'` (any other agent command line). */
  protocol?: 'stream-json' | 'text'
  /** Appended to the agent's argument vector. */
  extraArgs?: string[]
  /** Between SIGTERM and SIGKILL when a session is stopped. Default 5000. */
  gracePeriodMs?: number
  /** Ended sessions kept queryable. Default 100. */
  historySize?: number
  /** Bytes of each stream kept in `status.stdout` / `status.stderr`. Default 1 MiB. */
  outputBufferBytes?: number
  /** Bytes of output on their way to JavaScript at once, over all sessions. Default 8 MiB. */
  outputCreditBytes?: number
  /**
   * Decides tool calls that hit a `requiredApprovals` keyword: `true` runs the call.
   * Without a handler, when it throws or rejects, or without an answer within
   * `approvalTimeoutMs`, the call is denied and counted as an escalation.
   */
  approvalHandler?: (request: ApprovalRequest) => boolean | Promise<boolean>
  /** Default 300000 (5 minutes). */
  approvalTimeoutMs?: number
  /**
   * Which of the daemon's environment variables an agent gets: `true` (default) all;
   * `false` only `PATH`, `HOME` and `ANTHROPIC_*` (recommended: the daemon's secrets stay
   * out); a list adds those names. `config.environmentVariables` are always set.
   */
  inheritEnv?: boolean | string[]
  /**
   * Added: where the spawner records each live session (pid, process group, start times of
   * the agent and of this daemon; one file per spawner, a line per session), so a later
   * daemon can stop the agents of one that died.
   * Default `$XDG_STATE_HOME` or `~/.local/state`, then `claude-session-spawner/`; `false`: none.
   */
  stateDir?: string | false
  /** Added: run `reapOrphans()` at construction; the report comes as the `orphans-reaped` event. */
  reapOrphans?: boolean
}

export interface SessionOutputEvent {
  sessionId: string
  type: 'stdout' | 'stderr'
  data: string
}

/** Added: Claude Code could not reach the API and is retrying. */
export interface SessionRetryEvent {
  sessionId: string
  attempt: number
  maxRetries: number
  retryDelayMs: number
  error: string
}

/** Added: a refused tool call, as it happens. */
export interface PolicyViolationEvent extends PolicyViolation {
  sessionId: string
}

/** Added: the API refuses the session's requests for now (HTTP 429/529, or Claude Code's rate-limit event). */
export interface SessionRateLimitedEvent {
  sessionId: string
  /** When requests are expected to be accepted again. */
  until: Date
  reason: string
}

/** Added: a session passed its charter's `maxTokens`; it is being stopped (it ends `failed`). */
export interface BudgetExceededEvent {
  sessionId: string
  used: number
  limit: number
}

/** Added: what `reapOrphans()` found in the state directory and did. */
export interface ReapReport {
  /** Sessions whose daemon is gone; each is now in this spawner's history as `crashed`. */
  orphans: Array<{
    sessionId: string
    pid: number
    daemonPid: number
    workingDirectory: string
    /** Its agent still ran (same pid and start time) and its process group was stopped. */
    wasRunning: boolean
    /** Processes the session had started that were stopped, found by its id in their environment. */
    leftovers: number
  }>
  /** Recorded sessions whose daemon still runs (left alone). */
  ownedByLiveDaemons: number
  /** Unreadable records of dead daemons, and unreadable session files older than a few seconds (removed). */
  invalid: number
  stateDir?: string
}

/** The spawner's events and their payloads. */
export interface ClaudeSessionSpawnerEvents {
  'session-spawned': [event: { sessionId: string; pid: number }]
  'session-output': [event: SessionOutputEvent]
  /** Added (stream-json): each parsed message, in order with the output. */
  'session-message': [event: { sessionId: string; message: any }]
  'session-retry': [event: SessionRetryEvent]
  'session-rate-limited': [event: SessionRateLimitedEvent]
  /** Added: the charter (or Claude Code) refused a tool call. */
  'policy-violation': [event: PolicyViolationEvent]
  'budget-exceeded': [event: BudgetExceededEvent]
  'session-timeout': [event: { sessionId: string }]
  'session-ended': [event: { sessionId: string; status: ClaudeSessionStatus }]
  /** Added: the report of the `reapOrphans` run that the `reapOrphans` option asked for. */
  'orphans-reaped': [report: ReapReport]
  'orphans-reap-failed': [event: { error: Error }]
}

/**
 * Types only (at run time the classes extend EventEmitter itself): known events get
 * their payload types, any other name is still accepted as EventEmitter accepts it.
 */
declare class TypedEmitter<Events> extends EventEmitter {
  on<E extends keyof Events>(event: E, listener: (...args: Events[E] & unknown[]) => void): this
  on(event: string | symbol, listener: (...args: any[]) => void): this
  once<E extends keyof Events>(event: E, listener: (...args: Events[E] & unknown[]) => void): this
  once(event: string | symbol, listener: (...args: any[]) => void): this
  off<E extends keyof Events>(event: E, listener: (...args: Events[E] & unknown[]) => void): this
  off(event: string | symbol, listener: (...args: any[]) => void): this
  addListener<E extends keyof Events>(event: E, listener: (...args: Events[E] & unknown[]) => void): this
  addListener(event: string | symbol, listener: (...args: any[]) => void): this
  removeListener<E extends keyof Events>(event: E, listener: (...args: Events[E] & unknown[]) => void): this
  removeListener(event: string | symbol, listener: (...args: any[]) => void): this
  prependListener<E extends keyof Events>(event: E, listener: (...args: Events[E] & unknown[]) => void): this
  prependListener(event: string | symbol, listener: (...args: any[]) => void): this
  prependOnceListener<E extends keyof Events>(event: E, listener: (...args: Events[E] & unknown[]) => void): this
  prependOnceListener(event: string | symbol, listener: (...args: any[]) => void): this
  emit<E extends keyof Events>(event: E, ...args: Events[E] & unknown[]): boolean
  emit(event: string | symbol, ...args: any[]): boolean
}

export declare class ClaudeSessionSpawner extends TypedEmitter<ClaudeSessionSpawnerEvents> {
  constructor(options?: ClaudeSessionSpawnerOptions)

  /** Added: the agent executable this spawner starts. */
  readonly claudePath: string

  spawnSession(config: ClaudeSessionConfig): Promise<SpawnResult>
  getSessionStatus(sessionId: string): ClaudeSessionStatus | null
  getActiveSessions(): ClaudeSessionStatus[]
  terminateSession(sessionId: string, graceful?: boolean): Promise<void>
  /** Throws `ERR_INPUT_BACKLOG` (added) while more than 8 MiB of earlier input waits for the agent to read it. */
  sendInput(sessionId: string, input: string): void
  /** Added: closes the agent's stdin (no more input is coming). */
  endSession(sessionId: string): void
  cleanupCompletedSessions(): number
  getCrashReports(): SessionCrashReport[]
  getMetricsSummary(): SessionMetricsSummary
  /** Added: the session's directory (CLAUDE.md, stdout.log, stderr.log), or null when unknown. */
  getSessionDirectory(sessionId: string): string | null
  /** Added: stops what is left of sessions whose daemon died (see `stateDir`). */
  reapOrphans(): Promise<ReapReport>
}

export default ClaudeSessionSpawner

// ---- SessionPool ----

export interface SessionPoolConfig {
  maxConcurrentSessions: number
  minIdleSessions?: number
  /** Milliseconds. */
  defaultSessionTimeout: number
  maxQueueSize: number
  /** Queue a request again when its session ends `timeout` or `crashed` (default true). */
  autoRecovery?: boolean
  priorityWeights?: {
    critical: number
    high: number
    medium: number
    low: number
  }
  /** Added: sessions a request may get in all with `autoRecovery`, the first included (default 3). */
  maxRequestAttempts?: number
  /** Added: pause admission while Claude Code reports rate limits (default true). */
  respectRateLimits?: boolean
  /**
   * Added: a queue shared with the pools of other hosts (default: this pool's own,
   * in-process queue). See "Pools on many hosts" in the README.
   */
  queue?: SharedQueueConfig
}

/** Added: where a shared queue lives and how this host takes part in it. */
export interface SharedQueueConfig {
  kind: 'redis'
  /** `redis://[user:password@]host:port/[db]` or `rediss://…`. */
  url: string
  /** Pools with the same URL and name share one queue. */
  name: string
  /** This host's name in the queue, unique per pool (default `<hostname>/<pid>/<random>`). */
  host?: string
  /** How long a taken request stays this host's without a renewal (ms, default 30000, at least 300). */
  leaseMs?: number
  /** How often the host renews leases, looks for work and for lapsed leases (ms, default 1000). */
  pollIntervalMs?: number
  /** Ms to connect to Redis (default 2000). */
  connectTimeoutMs?: number
  /** Ms for Redis to answer (default 2000). */
  responseTimeoutMs?: number
}

export interface PooledSessionRequest {
  requestId: string
  config: ClaudeSessionConfig
  priority: Priority
  queuedAt: Date
  onAllocated?: (sessionId: string) => void
  onCompleted?: (status: ClaudeSessionStatus) => void
  onFailed?: (error: Error) => void
}

export interface QueuedRequestInfo {
  requestId: string
  priority: string
  queuedAt: Date
  /** Milliseconds. */
  estimatedWaitTime: number
  /** Added, with a shared queue: the attempt about to be made (2 or more after a host died). */
  attempt?: number
}

/** Added, with a shared queue: the queue as all hosts see it. */
export interface SharedQueueStatus {
  /** This host's name in the queue. */
  host: string
  /** Hosts that announced themselves within their lease. */
  hosts: number
  /** Their sessions at once, together. */
  capacity: number
  /** Requests running on some host. */
  leased: number
  /** False while Redis cannot be reached. */
  reachable: boolean
  /** When the queue part of this status was read. */
  asOf: Date
}

export interface PoolStatus {
  capacity: number
  activeCount: number
  idleCount: number
  queuedCount: number
  /** Percent, 0-100. */
  utilization: number
  activeSessions: ClaudeSessionStatus[]
  queuedRequests: QueuedRequestInfo[]
  /** Added, with a shared queue (`capacity`, `activeCount`, `activeSessions` are this host's). */
  shared?: SharedQueueStatus
}

export interface PoolMetrics extends SessionMetricsSummary {
  poolUtilization: number
  queueLength: number
  /** Mean milliseconds that queued requests have waited so far. */
  queueWaitTime: number
}

/** Added: admission is paused until `until` because a session hit the API's rate limit. */
export interface PoolThrottledEvent {
  until: Date
  reason: string
}

/** Added: a request's callback threw; the pool carried on. */
export interface CallbackErrorEvent {
  requestId: string
  callback: 'onAllocated' | 'onCompleted' | 'onFailed'
  error: unknown
}

/** The pool's events and their payloads. */
export interface SessionPoolEvents {
  /** With a shared queue, `host` (added) is the host that runs the session. */
  'session-allocated': [event: { requestId: string; sessionId: string; host?: string }]
  'session-released': [event: { sessionId: string; status: ClaudeSessionStatus; requestId?: string; host?: string }]
  'request-queued': [event: { requestId: string; position: number; queueLength: number }]
  'request-cancelled': [event: { requestId: string }]
  /** `attempt` (added) is the attempt about to be made, 2 or more. */
  'session-recovering': [event: { sessionId: string; requestId: string; attempt: number; host?: string }]
  'pool-draining': []
  'pool-drained': []
  'pool-throttled': [event: PoolThrottledEvent]
  'pool-resumed': []
  'callback-error': [event: CallbackErrorEvent]
  /** Added, shared queue: Redis stopped answering (requests reject; sessions keep running). */
  'queue-unavailable': [event: { error: Error; host: string }]
  /** Added, shared queue: Redis answers again. */
  'queue-reconnected': [event: { host: string }]
  /** Added, shared queue: this host lost a lease (lapsed, or taken over) and stopped the session. */
  'lease-lost': [event: { requestId: string; sessionId: string | null; host: string }]
  /** Added, shared queue: an unexpected queue error (not an outage). */
  'queue-error': [event: { error: Error }]
  /** Added, shared queue: this host fell so far behind that it missed queue events. */
  'queue-lagged': [event: { missed: number }]
}

export declare class SessionPool extends TypedEmitter<SessionPoolEvents> {
  constructor(spawner: ClaudeSessionSpawner, config: SessionPoolConfig)

  /**
   * Resolves when the request's session is allocated (at once below capacity, later
   * from the queue); rejects when the queue is full, the pool is draining, the request
   * is cancelled or its spawn fails. `queuedAt` may be omitted at run time (now).
   */
  requestSession(request: PooledSessionRequest): Promise<PooledSpawnResult>
  /** With a shared queue, the queue part is as of the last tick (see `getPoolStatusAsync`). */
  getPoolStatus(): PoolStatus
  /**
   * Without a shared queue: removes a queued request. With one: true when this host
   * made or runs the request, and the cancel goes to the queue (a running request is
   * stopped by its host); for requests made elsewhere use `cancelRequestAsync`.
   */
  cancelRequest(requestId: string): boolean
  /** With a shared queue: hands queued work to the other hosts and running work, past `timeoutMs`, too. */
  drain(timeoutMs?: number): Promise<void>
  getMetrics(): PoolMetrics
  /** Added: the status with the shared queue read now. */
  getPoolStatusAsync(): Promise<PoolStatus>
  /** Added: cancels a request made on any host, queued or running; true if there was one. */
  cancelRequestAsync(requestId: string): Promise<boolean>
  /** Added: with a shared queue, hands back what this host holds and disconnects; otherwise `drain(0)`. */
  close(): Promise<void>
  /** Added: this pool's host name in its shared queue, or null. */
  readonly host: string | null
}

/** What `requestSession` resolves with; `host` (shared queue) is where the session runs. */
export interface PooledSpawnResult extends SpawnResult {
  host?: string
}

// ---- SessionRecoveryManager ----

export interface RecoveryConfig {
  enabled: boolean
  maxRetries: number
  /** Milliseconds. */
  retryDelay: number
  backoffMultiplier: number
  saveCrashDumps: boolean
  /** Default `.vp-daemon/crash-dumps`; a relative path is under the crashed session's working directory. */
  crashDumpDirectory?: string
  strategy: 'immediate' | 'delayed' | 'manual'
  /** Added: the endings recovered (default `['crashed', 'timeout']`; `'failed'` may be added). */
  recoverOn?: Array<'crashed' | 'timeout' | 'failed'>
  /** Added: a `timeout` crash's next session gets its timeout multiplied by this (default 1.5). */
  timeoutGrowth?: number
  /** Added: attempts started per minute over all sessions (default 10); beyond, recoveries wait. */
  maxRecoveriesPerMinute?: number
}

export interface RecoveryAttempt {
  sessionId: string
  attemptNumber: number
  timestamp: Date
  strategy: string
  success: boolean
  error?: string
  newSessionId?: string
  /** Added: the new session resumed the crashed conversation (`--resume`). */
  resumed?: boolean
  /** Added: what changed for this attempt (a longer timeout, a resume that fell back to a fresh session). */
  note?: string
}

export interface RecoveryState {
  sessionId: string
  crashReport: SessionCrashReport
  attempts: RecoveryAttempt[]
  status: 'pending' | 'in_progress' | 'succeeded' | 'failed' | 'abandoned'
  startedAt: Date
  completedAt?: Date
  /** Added: the analysis of the latest crash. */
  analysis?: CrashAnalysis
}

export interface CrashAnalysis {
  crashType: 'oom' | 'timeout' | 'segfault' | 'network' | 'permission' | 'unknown'
  rootCause: string
  recommendation: string
  /** 0-1. */
  confidence: number
  suggestedFixes: string[]
  /** Added: the facts that decided the type, e.g. `exit status: signal SIGSEGV`. */
  evidence?: string
  /** Added: the signal the agent died of, from its exit status or its 128+N exit code. */
  signal?: string | null
}

export interface RecoveryStatistics {
  totalCrashes: number
  totalRecoveryAttempts: number
  successfulRecoveries: number
  failedRecoveries: number
  abandonedRecoveries: number
  /** 0-1. */
  recoveryRate: number
  avgAttemptsPerRecovery: number
}

export interface SessionRecoveryEvents {
  'crash-detected': [{ sessionId: string; crashReport: SessionCrashReport }]
  'crash-analyzed': [{ sessionId: string; analysis: CrashAnalysis }]
  'crash-dump-saved': [{ sessionId: string; filepath: string }]
  /** Added: the dump could not be written (the recovery goes on). */
  'crash-dump-failed': [{ sessionId: string; error: Error }]
  'recovery-attempt': [{ sessionId: string; attemptNumber: number; analysis: CrashAnalysis }]
  /** Added: the attempt's new session started. */
  'recovery-respawned': [{ sessionId: string; attemptNumber: number; newSessionId: string; resumed: boolean }]
  'recovery-succeeded': [{ sessionId: string; attemptNumber: number; newSessionId: string }]
  'recovery-attempt-failed': [{ sessionId: string; attemptNumber: number; error: string }]
  'recovery-failed': [{ sessionId: string; reason: string }]
  'recovery-abandoned': [{ sessionId: string }]
  /** Added: a pool with autoRecovery retries this session's request; the manager does not respawn it. */
  'recovery-deferred': [{ sessionId: string; owner: 'pool' }]
  /** Added: the storm limit (`maxRecoveriesPerMinute`) holds this attempt until `until`. */
  'recovery-throttled': [{ sessionId: string; attemptNumber: number; until: Date }]
  /** Added: handling a crash failed unexpectedly (reported instead of thrown from a listener). */
  'recovery-error': [{ sessionId: string; error: Error }]
}

export declare class SessionRecoveryManager extends TypedEmitter<SessionRecoveryEvents> {
  /** Every config field is optional at run time (defaults: enabled, 3 retries, 1000 ms, ×2, dumps, 'delayed'). */
  constructor(spawner: ClaudeSessionSpawner, config: RecoveryConfig)
  handleCrash(sessionId: string, crashReport?: SessionCrashReport): Promise<void>
  getRecoveryStatus(sessionId: string): RecoveryState | null
  getActiveRecoveries(): RecoveryState[]
  getRecoveryStats(): RecoveryStatistics
  triggerManualRecovery(sessionId: string): Promise<boolean>
  abandonRecovery(sessionId: string): void
}
