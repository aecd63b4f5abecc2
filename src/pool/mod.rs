//! The session pool: at most `max_concurrent_sessions` sessions at once, the rest
//! queued by priority. [`Scheduler`] makes the decisions; [`Pool`] carries them out
//! over a [`Spawner`](crate::Spawner), for Rust programs and for the npm package's
//! `SessionPool`.

mod config;
mod fast_hash;
mod handle;
pub mod queue;
mod request;
mod runner;
mod scheduler;
mod shared;
mod takeover;

pub use config::{PoolConfig, PriorityWeights, SharedQueueConfig, MIN_LEASE_MS};
pub use request::{Allocation, PoolFailure, PoolMetrics, PoolRequest, PoolStatus, RequestOutcome};
pub use handle::Pool;
#[cfg(feature = "napi")]
pub(crate) use handle::redis_host;
#[cfg(feature = "napi")]
pub(crate) use runner::{Body, Core};
#[cfg(feature = "napi")]
pub(crate) use shared::{RequestConfig, SharedCore};
pub use shared::{SharedStatus, PORTABLE_OUTPUT, RECONCILE_EVERY};
pub use takeover::{takeover_config, takeover_message};
pub use scheduler::{Admission, Outcome, PoolError, QueuedInfo, Scheduler, DEFAULT_EXECUTION_MS, RETRIED_STATES};
