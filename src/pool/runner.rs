//! The in-process pool behind [`Pool`](super::Pool): at most `max_concurrent_sessions`
//! sessions of a spawner at once, the rest queued by priority, crashed and timed-out
//! requests queued again, admission paused on rate limits, draining.
//!
//! The decisions are the [`Scheduler`]'s, a state machine without I/O. One task per
//! pool carries them out: it takes the spawner's notices (session ends, rate limits),
//! spawn results and drain requests from one channel, and keeps the pool's timers.
//! The scheduler sits behind a lock held only for a decision (never across I/O or
//! the event handler), so that submitting, cancelling and the status answer at once:
//! the contract's `request-queued` and `getPoolStatus` are synchronous.

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::config::PoolConfig;
use super::fast_hash::FastMap;
use super::request::{
    gave_up_message, Allocation, AllocationSender, OutcomeSender, PoolFailure, PoolMetrics, PoolStatus,
    RequestKey, RequestOutcome,
};
use super::scheduler::{Admission, Outcome, PoolError, Scheduler, RETRIED_STATES};
use crate::config::{Priority, SessionConfig};
use crate::error::SpawnError;
use crate::event::{EventHandler, SpawnerEvent};
use crate::notice::{Activity, Busy, Notice, Restarter};
use crate::spawner::{SpawnResult, Spawner};
use crate::status::SessionStatus;

/// Where a request's session config comes from.
#[cfg_attr(not(feature = "napi"), allow(dead_code))]
pub(crate) enum Body {
    /// Boxed: a pool may hold tens of thousands of entries.
    Ready(Box<SessionConfig>),
    /// Asked for (the `supply` hook) when the request is admitted, and handed in with
    /// [`Core::supply`]: the Node binding keeps configs in JavaScript until then.
    Deferred,
}

struct Entry {
    body: Body,
    /// Until the first session is allocated.
    allocation: Option<AllocationSender>,
    outcome: Option<OutcomeSender>,
    outcome_rx: Option<oneshot::Receiver<Result<SessionStatus, PoolFailure>>>,
    allocated: bool,
    /// Admitted, its deferred config not handed in yet.
    awaiting_config: bool,
}

/// A session the pool started, from the spawn to its end.
struct Slot<K> {
    key: K,
    /// Set once the spawn reported success.
    allocated: bool,
    /// The session's end, when it came before the spawn's result did.
    early_end: Option<Arc<SessionStatus>>,
}

struct Table<K> {
    scheduler: Scheduler<K>,
    entries: FastMap<K, Entry>,
    slots: FastMap<Arc<str>, Slot<K>>,
    /// Work in flight while any request is outstanding (one count for all of them).
    busy: Option<Busy>,
}

impl<K: RequestKey> Table<K> {
    fn insert(&mut self, key: K, entry: Entry, activity: &Option<Arc<dyn Activity>>) {
        if self.busy.is_none() {
            self.busy = Some(Busy::new(activity));
        }
        self.entries.insert(key, entry);
    }

    fn remove(&mut self, key: &K) -> Option<Entry> {
        self.entries.remove(key)
    }
}

// One message per spawn or notice: not worth a box each.
#[allow(clippy::large_enum_variant)]
enum Command<K> {
    Notice(Notice),
    Spawned { key: K, session_id: Arc<str>, result: Result<SpawnResult, SpawnError> },
    Drain { timeout: Duration, reply: oneshot::Sender<()> },
}

type SupplyHook<K> = Box<dyn Fn(&K) + Send + Sync>;

pub(crate) struct Core<K: RequestKey> {
    spawner: Spawner,
    handler: Box<dyn EventHandler>,
    table: Mutex<Table<K>>,
    commands: mpsc::UnboundedSender<(Command<K>, Busy)>,
    activity: Option<Arc<dyn Activity>>,
    /// Asks for a deferred request's config (the Node binding's pools).
    supply: Option<SupplyHook<K>>,
    /// The pool's claim on its sessions (with auto-recovery).
    restarter: Option<Restarter>,
    /// `submit`'s caller reports `RequestQueued` itself (the Node binding, which emits it
    /// only when someone listens).
    quiet_queued: bool,
    watch: u64,
}

impl<K: RequestKey> Drop for Core<K> {
    fn drop(&mut self) {
        self.spawner.unwatch(self.watch);
    }
}

pub(crate) type Channels = (AllocationSender, OutcomeSender, oneshot::Receiver<Result<SessionStatus, PoolFailure>>);

impl<K: RequestKey> Core<K> {
    /// Starts a pool's task over `spawner`.
    pub(crate) fn start(
        spawner: &Spawner,
        config: PoolConfig,
        handler: Box<dyn EventHandler>,
        activity: Option<Arc<dyn Activity>>,
        supply: Option<SupplyHook<K>>,
    ) -> Arc<Self> {
        let quiet_queued = supply.is_some();
        let (tx, rx) = mpsc::unbounded_channel();
        let watcher_tx = tx.clone();
        let watcher_activity = activity.clone();
        let watch = spawner.watch(move |notice| {
            let _ = watcher_tx.send((Command::Notice(notice.clone()), Busy::new(&watcher_activity)));
        });
        let restarter = config.auto_recovery.then_some(Restarter { owner: "pool", states: RETRIED_STATES });
        let core = Arc::new(Self {
            spawner: spawner.clone(),
            handler,
            table: Mutex::new(Table { scheduler: Scheduler::new(config), entries: FastMap::default(), slots: FastMap::default(), busy: None }),
            commands: tx,
            activity,
            supply,
            restarter,
            quiet_queued,
            watch,
        });
        spawner.runtime().spawn(run(Arc::downgrade(&core), rx));
        core
    }

    pub(crate) fn emit(&self, event: SpawnerEvent) {
        let handler = &self.handler;
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.handle(event))).is_err() {
            tracing::error!("pool event handler panicked; event dropped");
        }
    }

    /// A new request: a slot now (a `Ready` one starts at once; a `Deferred` one's
    /// config is expected through [`Core::supply`]), a place in the queue
    /// (`RequestQueued`), or a refusal.
    pub(crate) fn submit(
        &self,
        key: K,
        priority: Priority,
        queued_at: SystemTime,
        body: Body,
        channels: Option<Channels>,
    ) -> Result<Admission, PoolError> {
        let mut table = self.table.lock();
        let admission = table.scheduler.submit(key.clone(), priority, queued_at)?;
        let (allocation, outcome, outcome_rx) = match channels {
            Some((a, o, r)) => (Some(a), Some(o), Some(r)),
            None => (None, None, None),
        };
        let deferred = matches!(body, Body::Deferred);
        let now = admission == Admission::Now;
        let ready = match (&body, now) {
            (Body::Ready(config), true) => Some((**config).clone()),
            _ => None,
        };
        let entry = Entry {
            body,
            allocation,
            outcome,
            outcome_rx,
            allocated: false,
            awaiting_config: now && deferred,
        };
        table.insert(key.clone(), entry, &self.activity);
        match admission {
            Admission::Now => {
                if let Some(config) = ready {
                    self.launch(&mut table, key, config, None);
                }
            }
            Admission::Queued { position, queue_length } => {
                drop(table);
                if !self.quiet_queued {
                    self.emit(SpawnerEvent::RequestQueued { request_id: key.id(), position, queue_length });
                }
            }
        }
        Ok(admission)
    }

    #[cfg_attr(not(feature = "napi"), allow(dead_code))]
    /// The config of an admitted deferred request: its session starts on the calling
    /// thread (the binding's: JavaScript's, as `spawnSession` does), and its allocation
    /// is reported before this returns. False when the request does not wait for one.
    pub(crate) fn supply(&self, key: &K, mut config: SessionConfig, base_env: Option<Vec<(String, String)>>) -> bool {
        let registered = {
            let mut table = self.table.lock();
            match table.entries.get_mut(key) {
                Some(entry) if entry.awaiting_config => entry.awaiting_config = false,
                _ => return false,
            }
            apply_default_timeout(&mut config, table.scheduler.config());
            let registered = self.spawner.register_session(config, self.restarter);
            // Known here before the session can end.
            table.slots.insert(Arc::clone(registered.id()), Slot { key: key.clone(), allocated: false, early_end: None });
            registered
        };
        let session_id = Arc::clone(registered.id());
        let result = self.spawner.launch_registered(registered, base_env);
        self.spawned(key.clone(), session_id, result);
        self.release_if_idle();
        true
    }

    /// Starts a session for a request holding a slot. Under the table's lock, so the
    /// session is known here before it can end.
    fn launch(&self, table: &mut Table<K>, key: K, mut config: SessionConfig, base_env: Option<Vec<(String, String)>>) {
        apply_default_timeout(&mut config, table.scheduler.config());
        let pending = self.spawner.start_claimed(config, base_env, self.restarter);
        let session_id: Arc<str> = pending.session_id.as_str().into();
        table.slots.insert(Arc::clone(&session_id), Slot { key: key.clone(), allocated: false, early_end: None });
        let commands = self.commands.clone();
        let busy = Busy::new(&self.activity);
        self.spawner.runtime().spawn(async move {
            let result = pending.await;
            let _ = commands.send((Command::Spawned { key, session_id, result }, busy));
        });
    }

    /// No request outstanding any more: the pool's work in flight ends, after the
    /// events that settled its requests went out (so Node waits for them).
    fn release_if_idle(&self) {
        let idle = {
            let mut table = self.table.lock();
            if table.entries.is_empty() {
                table.busy.take()
            } else {
                None
            }
        };
        drop(idle);
    }

    /// Admits what the queue can now serve.
    fn admit(&self) {
        let mut asks = Vec::new();
        {
            let mut table = self.table.lock();
            for key in table.scheduler.admit_next() {
                let ready = match table.entries.get_mut(&key) {
                    Some(Entry { body: Body::Ready(config), .. }) => Some((**config).clone()),
                    Some(entry) => {
                        entry.awaiting_config = true;
                        None
                    }
                    None => continue,
                };
                match ready {
                    Some(config) => self.launch(&mut table, key, config, None),
                    None => asks.push(key),
                }
            }
        }
        if let Some(supply) = &self.supply {
            for key in &asks {
                supply(key);
            }
        }
    }

    /// Removes a queued request; false when it is not queued.
    pub(crate) fn cancel(&self, key: &K) -> bool {
        let entry = {
            let mut table = self.table.lock();
            if !table.scheduler.cancel(key) {
                return false;
            }
            table.remove(key)
        };
        self.emit(SpawnerEvent::RequestCancelled { request_id: key.id() });
        if let Some(entry) = entry {
            self.fail(key, entry, PoolFailure::Cancelled, "Request cancelled".into());
        }
        self.release_if_idle();
        true
    }

    /// A request is over without a session to show: `RequestFailed`, then whoever waits
    /// hears why (the caller of `request_session` before the first allocation, its
    /// outcome after).
    fn fail(&self, key: &K, mut entry: Entry, failure: PoolFailure, message: String) {
        let status = match &failure {
            PoolFailure::GaveUp(status) => Some(status.clone()),
            _ => None,
        };
        self.emit(SpawnerEvent::RequestFailed { request_id: key.id(), code: failure.code(), message, status });
        if let Some(allocation) = entry.allocation.take() {
            let _ = allocation.send(Err(failure));
        } else if let Some(outcome) = entry.outcome.take() {
            let _ = outcome.send(Err(failure));
        }
    }

    pub(crate) fn status(&self) -> PoolStatus {
        let (capacity, active_count, queued, sessions) = {
            let table = self.table.lock();
            let sessions: Vec<Arc<str>> = table.slots.iter().filter(|(_, s)| s.allocated).map(|(id, _)| Arc::clone(id)).collect();
            let queued = table.scheduler.queue_snapshot();
            (table.scheduler.config().max_concurrent_sessions, table.scheduler.active_count(), queued, sessions)
        };
        let active_sessions: Vec<SessionStatus> = sessions.iter().filter_map(|id| self.spawner.session_status(id)).collect();
        let queued_requests = queued
            .into_iter()
            .map(|q| super::scheduler::QueuedInfo {
                key: q.key.id().to_string(),
                priority: q.priority,
                queued_at: q.queued_at,
                estimated_wait_ms: q.estimated_wait_ms,
                attempt: q.attempt,
            })
            .collect::<Vec<_>>();
        PoolStatus::new(capacity, active_count, active_sessions, queued_requests)
    }

    /// The allocated sessions' ids.
    pub(crate) fn session_ids(&self) -> Vec<Arc<str>> {
        self.table.lock().slots.iter().filter(|(_, s)| s.allocated).map(|(id, _)| Arc::clone(id)).collect()
    }

    #[cfg_attr(not(feature = "napi"), allow(dead_code))]
    /// Visits the queue in serving order (see [`Scheduler::for_each_queued`]).
    pub(crate) fn for_each_queued(&self, visit: impl FnMut(&K, Priority, SystemTime, f64)) {
        self.table.lock().scheduler.for_each_queued(visit)
    }

    #[cfg_attr(not(feature = "napi"), allow(dead_code))]
    /// (active requests, queued requests).
    pub(crate) fn counts(&self) -> (usize, usize) {
        let table = self.table.lock();
        (table.scheduler.active_count(), table.scheduler.queued_count())
    }

    #[cfg_attr(not(feature = "napi"), allow(dead_code))]
    /// Mean milliseconds the queued requests have waited so far.
    pub(crate) fn queue_wait_ms(&self) -> f64 {
        self.table.lock().scheduler.queue_wait_ms(SystemTime::now())
    }

    pub(crate) fn metrics(&self) -> PoolMetrics {
        let (utilization, queue_length, queue_wait_ms) = {
            let table = self.table.lock();
            let s = &table.scheduler;
            (
                s.active_count() as f64 / s.config().max_concurrent_sessions.max(1) as f64 * 100.0,
                s.queued_count(),
                s.queue_wait_ms(SystemTime::now()),
            )
        };
        PoolMetrics { sessions: self.spawner.metrics_summary(), pool_utilization: utilization, queue_length, queue_wait_ms }
    }

    /// See [`Pool::drain`]; resolves when the pool is idle. The first call stops
    /// admitting and fails the queued requests before it returns.
    pub(crate) fn drain(&self, timeout: Duration) -> oneshot::Receiver<()> {
        let dropped: Option<Vec<(K, Entry)>> = {
            let mut table = self.table.lock();
            (!table.scheduler.is_draining()).then(|| {
                let keys = table.scheduler.drain();
                keys.into_iter().filter_map(|k| table.remove(&k).map(|e| (k, e))).collect()
            })
        };
        if let Some(dropped) = dropped {
            self.emit(SpawnerEvent::PoolDraining);
            for (key, entry) in dropped {
                self.fail(&key, entry, PoolFailure::Refused(PoolError::Draining), "Pool is draining".into());
            }
            self.release_if_idle();
        }
        let (reply, done) = oneshot::channel();
        let _ = self.commands.send((Command::Drain { timeout, reply }, Busy::new(&self.activity)));
        done
    }

    #[cfg_attr(not(feature = "napi"), allow(dead_code))]
    /// A request admitted with a deferred config that cannot be used: it fails, and its
    /// slot is free again.
    pub(crate) fn refuse(&self, key: &K, error: SpawnError) {
        let entry = {
            let mut table = self.table.lock();
            match table.entries.get(key) {
                Some(entry) if entry.awaiting_config => {}
                _ => return,
            }
            table.scheduler.spawn_failed(key);
            table.remove(key)
        };
        if let Some(entry) = entry {
            let message = error.to_string();
            self.fail(key, entry, PoolFailure::Spawn(error), message);
        }
        self.admit();
        self.release_if_idle();
    }
}

/// The pool's `default_session_timeout_ms` for a config that has no timeout.
fn apply_default_timeout(config: &mut SessionConfig, pool: &PoolConfig) {
    if config.timeout_ms.unwrap_or(0) == 0 && pool.default_session_timeout_ms > 0 {
        config.timeout_ms = Some(pool.default_session_timeout_ms);
    }
}

/// A drain waiting for the pool to be idle.
struct Waiter {
    deadline: Instant,
    stopped: bool,
    reply: oneshot::Sender<()>,
    _busy: Busy,
}

/// What only the task touches: its timers and drains.
#[derive(Default)]
struct Timers {
    resume_at: Option<Instant>,
    drains: Vec<Waiter>,
    drained: bool,
}

async fn run<K: RequestKey>(core: Weak<Core<K>>, mut commands: mpsc::UnboundedReceiver<(Command<K>, Busy)>) {
    let mut timers = Timers::default();
    loop {
        let deadline = timers.drains.iter().filter(|w| !w.stopped).map(|w| w.deadline).min();
        let next = [timers.resume_at, deadline].into_iter().flatten().min();
        let command = tokio::select! {
            command = commands.recv() => match command {
                Some(command) => Some(command),
                None => break,
            },
            _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => None,
        };
        let Some(core) = core.upgrade() else { break };
        match command {
            Some((command, _busy)) => core.on(command, &mut timers),
            None => core.on_time(&mut timers),
        }
        core.check_drained(&mut timers);
        core.release_if_idle();
    }
}

impl<K: RequestKey> Core<K> {
    fn on(&self, command: Command<K>, timers: &mut Timers) {
        match command {
            Command::Spawned { key, session_id, result } => self.spawned(key, session_id, result),
            Command::Notice(Notice::Ended { session_id, status, .. }) => self.session_ended(&session_id, status),
            Command::Notice(Notice::RateLimited { session_id, until, reason }) => {
                {
                    let mut table = self.table.lock();
                    let ours = table.slots.contains_key(&session_id);
                    if !ours || table.scheduler.is_draining() || !table.scheduler.throttle(until) {
                        return;
                    }
                }
                let wait = until.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
                timers.resume_at = Some(Instant::now() + wait);
                self.emit(SpawnerEvent::PoolThrottled { until, reason });
            }
            Command::Drain { timeout, reply } => {
                timers.resume_at = None;
                let busy = Busy::new(&self.activity);
                timers.drains.push(Waiter { deadline: Instant::now() + timeout, stopped: false, reply, _busy: busy });
            }
        }
    }

    fn on_time(&self, timers: &mut Timers) {
        let now = Instant::now();
        if timers.resume_at.is_some_and(|at| at <= now) {
            timers.resume_at = None;
            let (resumed, until) = {
                let mut table = self.table.lock();
                let resumed = table.scheduler.resume_if_due(SystemTime::now());
                (resumed, table.scheduler.throttled_until())
            };
            if resumed {
                self.emit(SpawnerEvent::PoolResumed);
                self.admit();
            } else if let Some(until) = until {
                timers.resume_at = Some(now + until.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO));
            }
        }
        if timers.drains.iter().any(|w| !w.stopped && w.deadline <= now) {
            for w in timers.drains.iter_mut().filter(|w| w.deadline <= now) {
                w.stopped = true;
            }
            for id in self.session_ids() {
                // A session that ended meanwhile is what drain waits for anyway.
                let _ = self.spawner.request_stop(&id, true);
            }
        }
    }

    fn check_drained(&self, timers: &mut Timers) {
        if timers.drains.is_empty() || self.table.lock().scheduler.active_count() > 0 {
            return;
        }
        if !timers.drained {
            timers.drained = true;
            self.emit(SpawnerEvent::PoolDrained);
        }
        for w in timers.drains.drain(..) {
            let _ = w.reply.send(());
        }
    }

    fn spawned(&self, key: K, session_id: Arc<str>, result: Result<SpawnResult, SpawnError>) {
        let session = match result {
            Ok(session) => session,
            Err(error) => {
                let entry = {
                    let mut table = self.table.lock();
                    table.slots.remove(&session_id);
                    table.scheduler.spawn_failed(&key);
                    table.remove(&key)
                };
                if let Some(entry) = entry {
                    let message = error.to_string();
                    self.fail(&key, entry, PoolFailure::Spawn(error), message);
                }
                self.admit();
                return;
            }
        };
        let (first, early_end) = {
            let mut table = self.table.lock();
            let early_end = table.slots.get_mut(&session_id).and_then(|slot| {
                slot.allocated = true;
                slot.early_end.take()
            });
            let first = table.entries.get_mut(&key).and_then(|e| {
                let first = !e.allocated;
                e.allocated = true;
                first.then(|| (e.allocation.take(), e.outcome_rx.take()))
            });
            (first, early_end)
        };
        self.emit(SpawnerEvent::SessionAllocated { request_id: key.id(), session_id: Arc::clone(&session_id), host: None, status: None });
        if let Some((Some(allocation), Some(outcome))) = first {
            let request_id = key.id().to_string();
            let _ = allocation.send(Ok(Allocation { request_id, session, outcome: RequestOutcome(outcome), host: None }));
        }
        if let Some(status) = early_end {
            self.session_ended(&session_id, status);
        }
    }

    fn session_ended(&self, session_id: &Arc<str>, status: Arc<SessionStatus>) {
        let (key, outcome, entry, draining) = {
            let mut table = self.table.lock();
            let Some(slot) = table.slots.get_mut(session_id) else { return };
            if !slot.allocated {
                // Handled once the spawn's result is in (a failed spawn ends too).
                slot.early_end = Some(status);
                return;
            }
            let key = slot.key.clone();
            table.slots.remove(session_id);
            let ms = status.execution_time_ms.unwrap_or(0);
            let outcome = table.scheduler.session_ended(&key, status.state, ms);
            let entry = match outcome {
                Some(Outcome::Requeued { .. }) | None => None,
                Some(_) => table.remove(&key),
            };
            (key, outcome, entry, table.scheduler.is_draining())
        };
        let owned = || Box::new((*status).clone());
        self.emit(SpawnerEvent::SessionReleased { session_id: Arc::clone(session_id), status: owned(), request_id: None, host: None });
        match (outcome, entry) {
            (Some(Outcome::Requeued { attempt }), _) => {
                let event = SpawnerEvent::SessionRecovering { session_id: Arc::clone(session_id), request_id: key.id(), attempt, host: None };
                self.emit(event)
            }
            (Some(Outcome::GaveUp), Some(entry)) => {
                let message = gave_up_message(&key.id(), &status, draining);
                self.fail(&key, entry, PoolFailure::GaveUp(owned()), message);
            }
            (_, Some(mut entry)) => {
                self.emit(SpawnerEvent::RequestCompleted { request_id: key.id(), status: owned() });
                if let Some(outcome) = entry.outcome.take() {
                    let _ = outcome.send(Ok((*status).clone()));
                }
            }
            _ => {}
        }
        self.admit();
    }
}
