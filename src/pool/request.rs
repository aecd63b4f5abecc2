//! What a pool's caller hands in and gets back: the request, its allocation, its
//! outcome and why it failed, and the pool's status and metrics.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::oneshot;

use super::scheduler::{PoolError, QueuedInfo};
use crate::config::{Priority, SessionConfig};
use crate::error::SpawnError;
use crate::spawner::SpawnResult;
use crate::status::{MetricsSummary, SessionStatus};

/// A request for a session.
#[derive(Debug, Clone)]
pub struct PoolRequest {
    pub request_id: String,
    pub config: SessionConfig,
    pub priority: Priority,
    pub queued_at: SystemTime,
}

impl PoolRequest {
    pub fn new(request_id: impl Into<String>, config: SessionConfig, priority: Priority) -> Self {
        Self { request_id: request_id.into(), config, priority, queued_at: SystemTime::now() }
    }
}

/// Why a request did not get, or did not finish with, a session.
#[derive(Debug, thiserror::Error)]
pub enum PoolFailure {
    #[error(transparent)]
    Refused(#[from] PoolError),
    #[error("Request cancelled")]
    Cancelled,
    #[error("failed to start the request's session: {0}")]
    Spawn(#[source] SpawnError),
    /// The session ended `timeout` or `crashed` and no attempt is left (or the pool
    /// is draining); the last session's final status.
    #[error("the request's last session ended {}", .0.state)]
    GaveUp(Box<SessionStatus>),
    #[error("the pool is gone")]
    PoolGone,
    /// Shared queue: the pool was closed before the request settled (it stays in the
    /// queue, for the other hosts).
    #[error("Pool is closed")]
    Closed,
    /// Shared queue: the queue refused the request or could not be reached.
    #[error(transparent)]
    Queue(super::queue::QueueError),
    /// Shared queue: the request failed where it ran (or the queue failed it); the
    /// code and message that host reported, and its last session's status.
    #[error("{message}")]
    Remote { code: &'static str, message: String, status: Option<Box<SessionStatus>> },
}

impl PoolFailure {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Refused(e) => e.code(),
            Self::Cancelled => "ERR_REQUEST_CANCELLED",
            Self::Spawn(e) => e.code(),
            Self::GaveUp(_) => "ERR_POOL_GAVE_UP",
            Self::PoolGone => "ERR_POOL_GONE",
            Self::Closed => "ERR_POOL_CLOSED",
            Self::Queue(e) => e.code(),
            Self::Remote { code, .. } => code,
        }
    }
}

pub(crate) type OutcomeSender = oneshot::Sender<Result<SessionStatus, PoolFailure>>;
pub(crate) type AllocationSender = oneshot::Sender<Result<Allocation, PoolFailure>>;
/// What a pool keeps of a Rust caller's request: where its allocation and outcome go,
/// and the outcome's receiving end until the allocation hands it over.
pub(crate) type Channels = (AllocationSender, OutcomeSender, oneshot::Receiver<Result<SessionStatus, PoolFailure>>);

/// What a request ends with: the status of the session that finished it (any final
/// state but a retried one), or why it failed. Await it.
#[derive(Debug)]
pub struct RequestOutcome(pub(crate) oneshot::Receiver<Result<SessionStatus, PoolFailure>>);

impl IntoFuture for RequestOutcome {
    type Output = Result<SessionStatus, PoolFailure>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { self.0.await.unwrap_or(Err(PoolFailure::PoolGone)) })
    }
}

/// A request's first session, as `request_session` returns it.
#[derive(Debug)]
pub struct Allocation {
    pub request_id: String,
    /// The session, as `spawn_session` returns it (its completion is this session's).
    pub session: SpawnResult,
    /// The request's end, after any retries.
    pub outcome: RequestOutcome,
    /// With a shared queue: the host that runs the session.
    pub host: Option<String>,
}

/// The pool now, as the contract's `PoolStatus` has it.
#[derive(Debug, Clone)]
pub struct PoolStatus {
    pub capacity: usize,
    /// Requests holding a slot (sessions being spawned or live).
    pub active_count: usize,
    /// Sessions waiting for input.
    pub idle_count: usize,
    pub queued_count: usize,
    /// Percent, 0-100.
    pub utilization: f64,
    pub active_sessions: Vec<SessionStatus>,
    pub queued_requests: Vec<QueuedInfo<String>>,
}

/// Percent of a pool's `capacity` that `active` requests hold.
pub(crate) fn utilization(active: usize, capacity: usize) -> f64 {
    active as f64 / capacity.max(1) as f64 * 100.0
}

impl PoolStatus {
    /// The status of `active_count` slots out of `capacity`: the counts and the
    /// utilization follow from the sessions and requests (one rule for both kinds of pool).
    pub(crate) fn new(capacity: usize, active_count: usize, active_sessions: Vec<SessionStatus>, queued_requests: Vec<QueuedInfo<String>>) -> Self {
        Self {
            capacity,
            active_count,
            idle_count: active_sessions.iter().filter(|s| s.state == crate::SessionState::WaitingInput).count(),
            queued_count: queued_requests.len(),
            utilization: utilization(active_count, capacity),
            active_sessions,
            queued_requests,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolMetrics {
    pub sessions: MetricsSummary,
    pub pool_utilization: f64,
    pub queue_length: usize,
    /// Mean milliseconds that queued requests have waited so far.
    pub queue_wait_ms: f64,
}

/// How a request is named inside a pool: by its id for Rust programs, by a number
/// the Node binding hands out (only numbers cross into Rust per request there).
pub(crate) trait RequestKey: Clone + Eq + std::hash::Hash + std::fmt::Debug + Send + Sync + 'static {
    /// The id events and errors show.
    fn id(&self) -> Arc<str>;
}

impl RequestKey for Arc<str> {
    fn id(&self) -> Arc<str> {
        Arc::clone(self)
    }
}

impl RequestKey for u32 {
    fn id(&self) -> Arc<str> {
        self.to_string().into()
    }
}

/// An error code another host reported, as one of this package's; unknown ones read
/// as `ERR_POOL_REMOTE`.
pub(crate) fn known_code(code: &str) -> &'static str {
    const CODES: &[&str] = &[
        "ERR_POOL_GAVE_UP",
        "ERR_POOL_CLOSED",
        "ERR_POOL_DRAINING",
        "ERR_POOL_QUEUE_FULL",
        "ERR_REQUEST_CANCELLED",
        "ERR_QUEUE_MALFORMED",
        "ERR_QUEUE_LOST",
        "ERR_QUEUE_UNAVAILABLE",
        "ERR_INVALID_CONFIG",
        "ERR_WORKING_DIRECTORY",
        "ERR_CLAUDE_CONFIG",
        "ERR_SESSION_DIRECTORY",
        "ERR_SPAWN_FAILED",
        "ERR_SESSION_STOPPED",
    ];
    CODES.iter().find(|c| **c == code).copied().unwrap_or("ERR_POOL_REMOTE")
}

/// The message of a request that gave up after its session ended `state`.
pub(crate) fn gave_up_message(request_id: &str, status: &SessionStatus, draining: bool) -> String {
    let why = if draining { "the pool is draining" } else { "no attempt is left" };
    let detail = status.error_message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default();
    format!("Request {request_id} failed: its session ended {}{detail} and {why}", status.state)
}
