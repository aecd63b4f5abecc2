// The daemon's `./session-pool` module: the class (default export) and its types.
export { SessionPool as default, SessionPool } from '../index'
export type {
  SessionPoolConfig,
  PooledSessionRequest,
  PoolStatus,
  QueuedRequestInfo,
  PoolMetrics,
  SessionPoolEvents,
  PoolThrottledEvent,
  CallbackErrorEvent,
  SharedQueueConfig,
  SharedQueueStatus,
  PooledSpawnResult,
} from '../index'
