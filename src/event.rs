//! The one event type through which the core reports what happens, and the handler
//! trait a spawner delivers it to. The Node binding implements the handler by
//! forwarding each event to JavaScript; Rust programs pass a closure or a channel.

use std::fmt;
use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;

use crate::output::Text;
use crate::recovery::CrashAnalysis;
use crate::status::{CrashReport, PolicyViolation, SessionStatus};

/// Which stream of the agent a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// A piece of output as it arrived. It holds a share of the spawner's output credit
/// until it is dropped: a handler that keeps chunks slows the readers (and so the
/// agents) down instead of letting memory grow.
pub struct OutputChunk {
    pub session_id: Arc<str>,
    pub stream: Stream,
    /// Decoded as UTF-8; invalid bytes become U+FFFD (the log on disk keeps the bytes).
    /// It shares the buffer the output was read into (with the log and the tail).
    pub data: Text,
    pub(crate) _credit: Option<OwnedSemaphorePermit>,
}

impl fmt::Debug for OutputChunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutputChunk")
            .field("session_id", &self.session_id)
            .field("stream", &self.stream)
            .field("data", &self.data)
            .finish()
    }
}

/// Everything a spawner, or a [`Pool`](crate::pool::Pool) or
/// [`RecoveryManager`](crate::recovery::RecoveryManager) over it, reports. Per
/// session, events come in order: `SessionSpawned` (or `SpawnFailed`), output, then
/// exactly one `SessionEnded` after the last output. A pool's events follow the
/// session events they stem from (`SessionReleased` after `SessionEnded`).
#[derive(Debug)]
#[non_exhaustive]
pub enum SpawnerEvent {
    /// The agent process started; `status` is a snapshot taken then.
    SessionSpawned {
        session_id: Arc<str>,
        pid: u32,
        status: Box<SessionStatus>,
    },
    /// The session could not start; it ends `failed` next. `code` is the
    /// [`SpawnError`](crate::SpawnError) code, `message` its text.
    SpawnFailed {
        session_id: Arc<str>,
        code: &'static str,
        message: String,
    },
    /// A chunk of stdout or stderr.
    SessionOutput(OutputChunk),
    /// A stream-json message the agent printed, parsed (in order with the output).
    SessionMessage {
        session_id: Arc<str>,
        message: serde_json::Value,
    },
    /// Claude Code could not reach the API and is retrying.
    SessionRetry {
        session_id: Arc<str>,
        attempt: u64,
        max_retries: u64,
        retry_delay_ms: u64,
        error: String,
    },
    /// The API refuses the session's requests for now (HTTP 429/529, or Claude Code's
    /// rate-limit event); `until` is when it expects them to be accepted again.
    SessionRateLimited {
        session_id: Arc<str>,
        until: std::time::SystemTime,
        reason: String,
    },
    /// The charter (or Claude Code) refused a tool call.
    PolicyViolation {
        session_id: Arc<str>,
        violation: PolicyViolation,
    },
    /// The session used more tokens than its charter allows; it is being stopped.
    BudgetExceeded { session_id: Arc<str>, used: u64, limit: u64 },
    /// The session's timeout elapsed; its process group is being stopped.
    SessionTimeout { session_id: Arc<str> },
    /// The session ended; `status` is final.
    SessionEnded { session_id: Arc<str>, status: Box<SessionStatus> },
    /// Pool: a request got its session (again, when it is being retried). With a shared
    /// queue, `host` runs it and `status` is the session's first status as it travelled.
    SessionAllocated { request_id: Arc<str>, session_id: Arc<str>, host: Option<Arc<str>>, status: Option<Box<SessionStatus>> },
    /// Pool: a request's session ended and its slot is free (with a shared queue: on the
    /// host that made the request, which also learns the request and the host).
    SessionReleased { session_id: Arc<str>, status: Box<SessionStatus>, request_id: Option<Arc<str>>, host: Option<Arc<str>> },
    /// Pool: a request waits; `position` is 1-based.
    RequestQueued { request_id: Arc<str>, position: usize, queue_length: usize },
    /// Pool: a queued request was cancelled.
    RequestCancelled { request_id: Arc<str> },
    /// Pool: a request whose session ended `timeout` or `crashed` is queued again;
    /// `attempt` is the attempt about to be made.
    SessionRecovering { session_id: Arc<str>, request_id: Arc<str>, attempt: u32, host: Option<Arc<str>> },
    /// Pool: draining began; nothing more is admitted.
    PoolDraining,
    /// Pool: draining finished; every session has ended.
    PoolDrained,
    /// Pool: admission pauses until `until` because a session hit a rate limit.
    PoolThrottled { until: std::time::SystemTime, reason: String },
    /// Pool: admission resumed after a rate-limit pause.
    PoolResumed,
    /// Pool: the request is over with this final status of its last session (what its
    /// `RequestOutcome` resolves with).
    RequestCompleted { request_id: Arc<str>, status: Box<SessionStatus> },
    /// Pool: the request failed (`code` and `message` as the pool's error has them; the
    /// last session's status when it gave up after one).
    RequestFailed { request_id: Arc<str>, code: &'static str, message: String, status: Option<Box<SessionStatus>> },
    /// Shared queue: the queue stopped answering (requests are refused; sessions run on).
    QueueUnavailable { host: Arc<str>, code: &'static str, message: String },
    /// Shared queue: it answers again.
    QueueReconnected { host: Arc<str> },
    /// Shared queue: this host lost its lease on a request (lapsed, or taken over) and
    /// stops the session.
    LeaseLost { request_id: Arc<str>, session_id: Option<Arc<str>>, host: Arc<str> },
    /// Shared queue: an unexpected error of the queue (not an outage).
    QueueError { code: &'static str, message: String },
    /// Shared queue: this host fell so far behind that it missed `missed` events.
    QueueLagged { missed: u64 },
    /// Recovery: a session ended in a way the manager recovers (or `handle_crash`).
    CrashDetected { session_id: Arc<str>, crash_report: Box<CrashReport> },
    /// Recovery: the crash dump was written.
    CrashDumpSaved { session_id: Arc<str>, filepath: std::path::PathBuf },
    /// Recovery: the crash dump could not be written (the recovery goes on).
    CrashDumpFailed { session_id: Arc<str>, message: String },
    CrashAnalyzed { session_id: Arc<str>, analysis: Box<CrashAnalysis> },
    /// Recovery: attempt `attempt_number` of the recovery of `session_id` begins.
    RecoveryAttempt { session_id: Arc<str>, attempt_number: u32, analysis: Box<CrashAnalysis> },
    /// Recovery: the attempt's new session started.
    RecoveryRespawned { session_id: Arc<str>, attempt_number: u32, new_session_id: Arc<str>, resumed: bool },
    RecoverySucceeded { session_id: Arc<str>, attempt_number: u32, new_session_id: Arc<str> },
    RecoveryAttemptFailed { session_id: Arc<str>, attempt_number: u32, error: String },
    RecoveryFailed { session_id: Arc<str>, reason: String },
    RecoveryAbandoned { session_id: Arc<str> },
    /// Recovery: `owner` (a pool with auto-recovery) starts this session's work again.
    RecoveryDeferred { session_id: Arc<str>, owner: &'static str },
    /// Recovery: the storm limit holds this attempt until `until`.
    RecoveryThrottled { session_id: Arc<str>, attempt_number: u32, until: std::time::SystemTime },
    /// Recovery: handling a crash failed unexpectedly.
    RecoveryError { session_id: Arc<str>, code: &'static str, message: String },
}

impl SpawnerEvent {
    /// The name the JavaScript API uses for this event.
    pub fn name(&self) -> &'static str {
        match self {
            Self::SessionSpawned { .. } => "session-spawned",
            Self::SpawnFailed { .. } => "spawn-failed",
            Self::SessionOutput(_) => "session-output",
            Self::SessionMessage { .. } => "session-message",
            Self::SessionRetry { .. } => "session-retry",
            Self::SessionRateLimited { .. } => "session-rate-limited",
            Self::PolicyViolation { .. } => "policy-violation",
            Self::BudgetExceeded { .. } => "budget-exceeded",
            Self::SessionTimeout { .. } => "session-timeout",
            Self::SessionEnded { .. } => "session-ended",
            Self::SessionAllocated { .. } => "session-allocated",
            Self::SessionReleased { .. } => "session-released",
            Self::RequestQueued { .. } => "request-queued",
            Self::RequestCancelled { .. } => "request-cancelled",
            Self::SessionRecovering { .. } => "session-recovering",
            Self::PoolDraining => "pool-draining",
            Self::PoolDrained => "pool-drained",
            Self::PoolThrottled { .. } => "pool-throttled",
            Self::PoolResumed => "pool-resumed",
            Self::RequestCompleted { .. } => "request-completed",
            Self::RequestFailed { .. } => "request-failed",
            Self::QueueUnavailable { .. } => "queue-unavailable",
            Self::QueueReconnected { .. } => "queue-reconnected",
            Self::LeaseLost { .. } => "lease-lost",
            Self::QueueError { .. } => "queue-error",
            Self::QueueLagged { .. } => "queue-lagged",
            Self::CrashDetected { .. } => "crash-detected",
            Self::CrashDumpSaved { .. } => "crash-dump-saved",
            Self::CrashDumpFailed { .. } => "crash-dump-failed",
            Self::CrashAnalyzed { .. } => "crash-analyzed",
            Self::RecoveryAttempt { .. } => "recovery-attempt",
            Self::RecoveryRespawned { .. } => "recovery-respawned",
            Self::RecoverySucceeded { .. } => "recovery-succeeded",
            Self::RecoveryAttemptFailed { .. } => "recovery-attempt-failed",
            Self::RecoveryFailed { .. } => "recovery-failed",
            Self::RecoveryAbandoned { .. } => "recovery-abandoned",
            Self::RecoveryDeferred { .. } => "recovery-deferred",
            Self::RecoveryThrottled { .. } => "recovery-throttled",
            Self::RecoveryError { .. } => "recovery-error",
        }
    }

    /// The session the event is about; `None` for a pool's events about requests or
    /// the whole pool.
    pub fn session_id(&self) -> Option<&str> {
        Some(match self {
            Self::SessionSpawned { session_id, .. }
            | Self::SpawnFailed { session_id, .. }
            | Self::SessionMessage { session_id, .. }
            | Self::SessionRetry { session_id, .. }
            | Self::SessionRateLimited { session_id, .. }
            | Self::PolicyViolation { session_id, .. }
            | Self::BudgetExceeded { session_id, .. }
            | Self::SessionTimeout { session_id }
            | Self::SessionEnded { session_id, .. }
            | Self::SessionAllocated { session_id, .. }
            | Self::SessionReleased { session_id, .. }
            | Self::SessionRecovering { session_id, .. }
            | Self::CrashDetected { session_id, .. }
            | Self::CrashDumpSaved { session_id, .. }
            | Self::CrashDumpFailed { session_id, .. }
            | Self::CrashAnalyzed { session_id, .. }
            | Self::RecoveryAttempt { session_id, .. }
            | Self::RecoveryRespawned { session_id, .. }
            | Self::RecoverySucceeded { session_id, .. }
            | Self::RecoveryAttemptFailed { session_id, .. }
            | Self::RecoveryFailed { session_id, .. }
            | Self::RecoveryAbandoned { session_id }
            | Self::RecoveryDeferred { session_id, .. }
            | Self::RecoveryThrottled { session_id, .. }
            | Self::RecoveryError { session_id, .. } => session_id,
            Self::SessionOutput(chunk) => &chunk.session_id,
            Self::RequestQueued { .. }
            | Self::RequestCancelled { .. }
            | Self::PoolDraining
            | Self::PoolDrained
            | Self::PoolThrottled { .. }
            | Self::PoolResumed
            | Self::RequestCompleted { .. }
            | Self::RequestFailed { .. }
            | Self::QueueUnavailable { .. }
            | Self::QueueReconnected { .. }
            | Self::LeaseLost { .. }
            | Self::QueueError { .. }
            | Self::QueueLagged { .. } => return None,
        })
    }
}

/// Receives a spawner's events. Called from the spawner's tasks, so it must return
/// quickly; hand the event on (to a channel, a JavaScript queue) rather than work on it.
pub trait EventHandler: Send + Sync + 'static {
    fn handle(&self, event: SpawnerEvent);

    /// Runs `work` once. The events it reports on this thread may be held and passed on
    /// together when it returns, in order: for a receiver on another thread, one
    /// wake-up instead of one per event (a session's start reports two in a row).
    fn together(&self, work: &mut dyn FnMut()) {
        work()
    }
}

/// Hands `event` to `handler`. A handler that panics must not take the core's task
/// (a session's supervisor, a pool's or a manager's) down with it: the panic is
/// logged as `who`'s and the event dropped.
pub(crate) fn handle_guarded(handler: &dyn EventHandler, event: SpawnerEvent, who: &str) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.handle(event))).is_err() {
        tracing::error!("{who} event handler panicked; event dropped");
    }
}

impl<F: Fn(SpawnerEvent) + Send + Sync + 'static> EventHandler for F {
    fn handle(&self, event: SpawnerEvent) {
        self(event)
    }
}

/// Sends every event into an unbounded Tokio channel.
impl EventHandler for tokio::sync::mpsc::UnboundedSender<SpawnerEvent> {
    fn handle(&self, event: SpawnerEvent) {
        // A closed receiver means nobody listens any more; dropping is then correct.
        let _ = self.send(event);
    }
}
