// The daemon's `./claude-session-spawner` module: the class (default export) and its types.
export { ClaudeSessionSpawner as default, ClaudeSessionSpawner } from '../index'
export type {
  ClaudeSessionConfig,
  VPCharter,
  TaskContext,
  MemoryContext,
  ClaudeSessionStatus,
  SessionMetrics,
  SessionCrashReport,
  SpawnResult,
  SessionMetricsSummary,
  ClaudeSessionSpawnerOptions,
  ClaudeSessionSpawnerEvents,
  SessionOutputEvent,
  SessionRetryEvent,
  ApprovalRequest,
  PolicyViolation,
  PolicyViolationEvent,
  PolicyRule,
  BudgetExceededEvent,
  SessionState,
  Priority,
} from '../index'
