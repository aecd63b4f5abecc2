//! [`Pool`]: the session pool for Rust programs. It owns a [`Spawner`], asks a
//! [`Scheduler`] what to do, and does it: spawns admitted requests, frees slots when
//! sessions end, queues timed-out and crashed requests again, pauses on rate limits,
//! drains. Everything it does is reported through the spawner's event handler, after
//! the session event it follows from.
//!
//! The pool never holds its lock while it calls the spawner or the handler: a
//! decision is taken under the lock, and carried out after.

use std::collections::HashMap;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;

use super::config::PoolConfig;
use super::scheduler::{Admission, Outcome, PoolError, QueuedInfo, Scheduler};
use crate::config::{Priority, SessionConfig};
use crate::error::SpawnError;
use crate::event::{EventHandler, SpawnerEvent};
use crate::options::SpawnerOptions;
use crate::spawner::{SpawnResult, Spawner};
use crate::status::{MetricsSummary, SessionState, SessionStatus};

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
}

impl PoolFailure {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Refused(e) => e.code(),
            Self::Cancelled => "ERR_REQUEST_CANCELLED",
            Self::Spawn(e) => e.code(),
            Self::GaveUp(_) => "ERR_POOL_GAVE_UP",
            Self::PoolGone => "ERR_POOL_GONE",
        }
    }
}

/// What a request ends with: the status of the session that finished it (any final
/// state but a retried one), or why it failed. Await it.
#[derive(Debug)]
pub struct RequestOutcome(oneshot::Receiver<Result<SessionStatus, PoolFailure>>);

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

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolMetrics {
    pub sessions: MetricsSummary,
    pub pool_utilization: f64,
    pub queue_length: usize,
    /// Mean milliseconds that queued requests have waited so far.
    pub queue_wait_ms: f64,
}

type AllocationSender = oneshot::Sender<Result<Allocation, PoolFailure>>;

struct Entry {
    request: PoolRequest,
    /// Until the first session is allocated.
    allocation: Option<AllocationSender>,
    outcome: Option<oneshot::Sender<Result<SessionStatus, PoolFailure>>>,
    outcome_rx: Option<oneshot::Receiver<Result<SessionStatus, PoolFailure>>>,
}

/// A session the pool started, from the spawn to its end.
struct Slot {
    request_id: Arc<str>,
    /// Set once the spawn reported success.
    allocated: bool,
    /// The session's end, when it came before the spawn's result did.
    early_end: Option<Box<SessionStatus>>,
}

struct State {
    scheduler: Scheduler<String>,
    entries: HashMap<String, Entry>,
    slots: HashMap<Arc<str>, Slot>,
    resume: Option<JoinHandle<()>>,
}

struct Inner {
    spawner: std::sync::OnceLock<Spawner>,
    handler: Box<dyn EventHandler>,
    runtime: Handle,
    state: Mutex<State>,
    /// Woken whenever a slot is freed (drain waits on it).
    released: Notify,
    drain_started: std::sync::atomic::AtomicBool,
}

/// A pool of sessions over its own spawner. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("config", self.inner.state.lock().scheduler.config()).finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool on the current Tokio runtime, with a spawner made from `options`;
    /// `handler` gets the spawner's events and the pool's.
    /// A `config.queue` is refused: a shared queue is served by the npm package's
    /// `SessionPool`; Rust programs use [`queue::RequestQueue`](super::queue) directly.
    pub fn new(options: SpawnerOptions, config: PoolConfig, handler: impl EventHandler) -> Result<Self, SpawnError> {
        if config.queue.is_some() {
            return Err(SpawnError::InvalidConfig(crate::ConfigError::new(
                "config.queue",
                "is not served by the Rust Pool: use pool::queue::RequestQueue directly, or the npm package's SessionPool",
            )));
        }
        let runtime = Handle::try_current().map_err(|_| SpawnError::NoRuntime)?;
        Ok(Self::with_runtime(options, config, handler, runtime))
    }

    /// As [`Pool::new`]; a `config.queue` is ignored here.
    pub fn with_runtime(options: SpawnerOptions, config: PoolConfig, handler: impl EventHandler, runtime: Handle) -> Self {
        let inner = Arc::new(Inner {
            spawner: std::sync::OnceLock::new(),
            handler: Box::new(handler),
            runtime: runtime.clone(),
            state: Mutex::new(State {
                scheduler: Scheduler::new(config),
                entries: HashMap::new(),
                slots: HashMap::new(),
                resume: None,
            }),
            released: Notify::new(),
            drain_started: std::sync::atomic::AtomicBool::new(false),
        });
        // The spawner reports to the pool, which must not keep itself alive that way.
        let pool = Arc::downgrade(&inner);
        let spawner = Spawner::with_runtime(options, move |event: SpawnerEvent| relay(&pool, event), runtime);
        let _ = inner.spawner.set(spawner);
        Self { inner }
    }

    /// The pool's spawner: for queries, input and stops of its sessions.
    pub fn spawner(&self) -> &Spawner {
        self.inner.spawner()
    }

    /// Resolves when the request's session is allocated, at once below capacity or
    /// later from the queue; fails when the queue is full, the pool drains, the
    /// request is cancelled or its spawn fails.
    pub async fn request_session(&self, request: PoolRequest) -> Result<Allocation, PoolFailure> {
        let receiver = self.submit(request)?;
        receiver.await.unwrap_or(Err(PoolFailure::PoolGone))
    }

    fn submit(&self, request: PoolRequest) -> Result<oneshot::Receiver<Result<Allocation, PoolFailure>>, PoolFailure> {
        let inner = &self.inner;
        let (allocation, receiver) = oneshot::channel();
        let (outcome, outcome_rx) = oneshot::channel();
        let id = request.request_id.clone();
        let admission = {
            let mut state = inner.state.lock();
            let admission = state.scheduler.submit(id.clone(), request.priority, request.queued_at)?;
            let entry = Entry { request, allocation: Some(allocation), outcome: Some(outcome), outcome_rx: Some(outcome_rx) };
            state.entries.insert(id.clone(), entry);
            admission
        };
        match admission {
            Admission::Now => inner.start(vec![id]),
            Admission::Queued { position, queue_length } => {
                inner.emit(SpawnerEvent::RequestQueued { request_id: id.into(), position, queue_length })
            }
        }
        Ok(receiver)
    }

    /// Removes a queued request (it fails with [`PoolFailure::Cancelled`]); false
    /// when it is not queued.
    pub fn cancel_request(&self, request_id: &str) -> bool {
        let entry = {
            let mut state = self.inner.state.lock();
            if !state.scheduler.cancel(&request_id.to_owned()) {
                return false;
            }
            state.entries.remove(request_id)
        };
        if let Some(entry) = entry {
            fail(entry, PoolFailure::Cancelled);
        }
        self.inner.emit(SpawnerEvent::RequestCancelled { request_id: request_id.into() });
        true
    }

    pub fn status(&self) -> PoolStatus {
        let (capacity, active_count, queued_requests, sessions) = {
            let state = self.inner.state.lock();
            let sessions: Vec<Arc<str>> = state.slots.iter().filter(|(_, s)| s.allocated).map(|(id, _)| Arc::clone(id)).collect();
            (state.scheduler.config().max_concurrent_sessions, state.scheduler.active_count(), state.scheduler.queue_snapshot(), sessions)
        };
        let active_sessions: Vec<SessionStatus> = sessions.iter().filter_map(|id| self.spawner().session_status(id)).collect();
        PoolStatus {
            capacity,
            active_count,
            idle_count: active_sessions.iter().filter(|s| s.state == SessionState::WaitingInput).count(),
            queued_count: queued_requests.len(),
            utilization: active_count as f64 / capacity.max(1) as f64 * 100.0,
            active_sessions,
            queued_requests,
        }
    }

    pub fn metrics(&self) -> PoolMetrics {
        let (utilization, queue_length, queue_wait_ms) = {
            let state = self.inner.state.lock();
            let s = &state.scheduler;
            (
                s.active_count() as f64 / s.config().max_concurrent_sessions.max(1) as f64 * 100.0,
                s.queued_count(),
                s.queue_wait_ms(SystemTime::now()),
            )
        };
        PoolMetrics { sessions: self.spawner().metrics_summary(), pool_utilization: utilization, queue_length, queue_wait_ms }
    }

    /// Stops admitting (queued requests fail with `Pool is draining`), waits for the
    /// active sessions to end, stops those still running after `timeout` gracefully,
    /// and returns when every session has ended. Calling it again waits again.
    pub async fn drain(&self, timeout: Duration) {
        let inner = &self.inner;
        let first = !inner.drain_started.swap(true, std::sync::atomic::Ordering::SeqCst);
        if first {
            inner.emit(SpawnerEvent::PoolDraining);
            let dropped: Vec<Entry> = {
                let mut state = inner.state.lock();
                if let Some(resume) = state.resume.take() {
                    resume.abort();
                }
                let ids = state.scheduler.drain();
                ids.iter().filter_map(|id| state.entries.remove(id)).collect()
            };
            for entry in dropped {
                fail(entry, PoolFailure::Refused(PoolError::Draining));
            }
        }
        if tokio::time::timeout(timeout, inner.idle()).await.is_err() {
            let sessions: Vec<Arc<str>> = inner.state.lock().slots.keys().cloned().collect();
            for id in sessions {
                // A session that ended meanwhile is what we wait for anyway.
                let _ = inner.spawner().request_stop(&id, true);
            }
            inner.idle().await;
        }
        if first {
            inner.emit(SpawnerEvent::PoolDrained);
        }
    }
}

/// The spawner's handler: the event goes to the pool's handler first, then the pool
/// acts on it (so its own events follow).
fn relay(pool: &Weak<Inner>, event: SpawnerEvent) {
    let Some(inner) = pool.upgrade() else { return };
    let noted = match &event {
        SpawnerEvent::SessionEnded { session_id, status } => Some((Arc::clone(session_id), Some(status.clone()), None)),
        SpawnerEvent::SessionRateLimited { session_id, until, reason } => {
            Some((Arc::clone(session_id), None, Some((*until, reason.clone()))))
        }
        _ => None,
    };
    inner.emit(event);
    match noted {
        Some((session_id, Some(status), _)) => inner.session_ended(&session_id, status),
        Some((session_id, None, Some((until, reason)))) => inner.rate_limited(&session_id, until, reason),
        _ => {}
    }
}

/// A request is over without a session to show: whoever waits hears why (the caller
/// of `request_session` before the first allocation, its outcome after).
fn fail(mut entry: Entry, failure: PoolFailure) {
    if let Some(allocation) = entry.allocation.take() {
        let _ = allocation.send(Err(failure));
    } else if let Some(outcome) = entry.outcome.take() {
        let _ = outcome.send(Err(failure));
    }
}

impl Inner {
    fn spawner(&self) -> &Spawner {
        self.spawner.get().expect("set when the pool is made")
    }

    fn emit(&self, event: SpawnerEvent) {
        let handler = &self.handler;
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.handle(event))).is_err() {
            tracing::error!("pool event handler panicked; event dropped");
        }
    }

    /// Spawns the sessions of requests that hold a slot.
    fn start(self: &Arc<Self>, admitted: Vec<String>) {
        for request_id in admitted {
            let config = {
                let state = self.state.lock();
                let Some(entry) = state.entries.get(&request_id) else { continue };
                let mut config = entry.request.config.clone();
                let fallback = state.scheduler.config().default_session_timeout_ms;
                if config.timeout_ms.unwrap_or(0) == 0 && fallback > 0 {
                    config.timeout_ms = Some(fallback);
                }
                config
            };
            let pending = self.spawner().start_session(config, None);
            let session_id: Arc<str> = pending.session_id.as_str().into();
            let request: Arc<str> = request_id.as_str().into();
            // Known before the spawn's result: the session may end before that arrives.
            self.state
                .lock()
                .slots
                .insert(Arc::clone(&session_id), Slot { request_id: Arc::clone(&request), allocated: false, early_end: None });
            let inner = Arc::clone(self);
            self.runtime.spawn(async move {
                let result = pending.await;
                inner.spawned(&session_id, &request, result);
            });
        }
    }

    fn spawned(self: &Arc<Self>, session_id: &Arc<str>, request_id: &Arc<str>, result: Result<SpawnResult, SpawnError>) {
        match result {
            Ok(session) => {
                let (first, early_end) = {
                    let mut state = self.state.lock();
                    let early_end = state.slots.get_mut(session_id).and_then(|slot| {
                        slot.allocated = true;
                        slot.early_end.take()
                    });
                    let first = state.entries.get_mut(&**request_id).and_then(|e| {
                        let outcome = e.outcome_rx.take()?;
                        Some((e.allocation.take(), outcome))
                    });
                    (first, early_end)
                };
                self.emit(SpawnerEvent::SessionAllocated { request_id: Arc::clone(request_id), session_id: Arc::clone(session_id) });
                if let Some((Some(allocation), outcome)) = first {
                    let _ = allocation.send(Ok(Allocation {
                        request_id: request_id.to_string(),
                        session,
                        outcome: RequestOutcome(outcome),
                    }));
                }
                if let Some(status) = early_end {
                    self.session_ended(session_id, status);
                }
            }
            Err(error) => {
                let entry = {
                    let mut state = self.state.lock();
                    state.slots.remove(session_id);
                    state.scheduler.spawn_failed(&request_id.to_string());
                    state.entries.remove(&**request_id)
                };
                if let Some(entry) = entry {
                    fail(entry, PoolFailure::Spawn(error));
                }
                self.released.notify_waiters();
                self.admit();
            }
        }
    }

    fn session_ended(self: &Arc<Self>, session_id: &Arc<str>, status: Box<SessionStatus>) {
        let decided = {
            let mut state = self.state.lock();
            let Some(slot) = state.slots.get_mut(session_id) else { return };
            if !slot.allocated {
                // Handled once the spawn's result is in (a failed spawn ends too).
                slot.early_end = Some(status);
                return;
            }
            let request_id = Arc::clone(&slot.request_id);
            state.slots.remove(session_id);
            let ms = status.execution_time_ms.unwrap_or(0);
            let outcome = state.scheduler.session_ended(&request_id.to_string(), status.state, ms);
            let entry = match outcome {
                Some(Outcome::Requeued { .. }) | None => None,
                Some(_) => state.entries.remove(&*request_id),
            };
            (request_id, outcome, entry)
        };
        let (request_id, outcome, entry) = decided;
        self.emit(SpawnerEvent::SessionReleased { session_id: Arc::clone(session_id), status: status.clone() });
        match (outcome, entry) {
            (Some(Outcome::Requeued { attempt }), _) => {
                self.emit(SpawnerEvent::SessionRecovering { session_id: Arc::clone(session_id), request_id, attempt })
            }
            (Some(Outcome::GaveUp), Some(mut entry)) => {
                if let Some(outcome) = entry.outcome.take() {
                    let _ = outcome.send(Err(PoolFailure::GaveUp(status)));
                }
            }
            (_, Some(mut entry)) => {
                if let Some(outcome) = entry.outcome.take() {
                    let _ = outcome.send(Ok(*status));
                }
            }
            _ => {}
        }
        self.released.notify_waiters();
        self.admit();
    }

    fn admit(self: &Arc<Self>) {
        let admitted = self.state.lock().scheduler.admit_next();
        if !admitted.is_empty() {
            self.start(admitted);
        }
    }

    fn rate_limited(self: &Arc<Self>, session_id: &Arc<str>, until: SystemTime, reason: String) {
        {
            let mut state = self.state.lock();
            if !state.slots.contains_key(session_id) || state.scheduler.is_draining() || !state.scheduler.throttle(until) {
                return;
            }
            if let Some(previous) = state.resume.take() {
                previous.abort();
            }
            let inner = Arc::downgrade(self);
            state.resume = Some(self.runtime.spawn(resume_when_due(inner)));
        }
        self.emit(SpawnerEvent::PoolThrottled { until, reason });
    }

    /// Resolves when no request holds a slot.
    async fn idle(&self) {
        loop {
            let released = self.released.notified();
            if self.state.lock().scheduler.active_count() == 0 {
                return;
            }
            released.await;
        }
    }
}

/// Sleeps until the pause is due (it may be extended meanwhile), then resumes.
async fn resume_when_due(pool: Weak<Inner>) {
    loop {
        let until = match pool.upgrade() {
            Some(inner) => inner.state.lock().scheduler.throttled_until(),
            None => return,
        };
        let Some(until) = until else { return };
        tokio::time::sleep(until.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO)).await;
        let Some(inner) = pool.upgrade() else { return };
        let resumed = {
            let mut state = inner.state.lock();
            let resumed = state.scheduler.resume_if_due(SystemTime::now());
            if resumed {
                state.resume = None;
            }
            resumed
        };
        if resumed {
            inner.emit(SpawnerEvent::PoolResumed);
            inner.admit();
            return;
        }
    }
}
