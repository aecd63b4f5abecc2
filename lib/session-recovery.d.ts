// The daemon's `./session-recovery` module: the class (default export) and its types.
export { SessionRecoveryManager as default, SessionRecoveryManager } from '../index'
export type {
  RecoveryConfig,
  RecoveryAttempt,
  RecoveryState,
  CrashAnalysis,
  RecoveryStatistics,
  SessionRecoveryEvents,
} from '../index'
