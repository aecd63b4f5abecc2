//! The in-process pool behind [`Pool`](super::Pool): at most `max_concurrent_sessions`
//! sessions of a spawner at once, the rest queued by priority, crashed and timed-out
//! requests queued again, admission paused on rate limits, draining.
//!
//! The decisions are the [`Scheduler`]'s, a state machine without I/O. One task per
//! pool (in [`task`]) carries them out: it takes the spawner's notices (session ends,
//! rate limits), spawn results and drain requests from one channel, and keeps the
//! pool's timers. This file holds the pool's table and what callers do synchronously.
//! The scheduler sits behind a lock held only for a decision (never across I/O or
//! the event handler), so that submitting, cancelling and the status answer at once:
//! the contract's `request-queued` and `getPoolStatus` are synchronous.

mod task;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use super::config::PoolConfig;
use super::fast_hash::FastMap;
use super::request::{AllocationSender, Channels, OutcomeSender, PoolFailure, PoolMetrics, PoolStatus, RequestKey};
use super::scheduler::{pool_restarter, Admission, PoolError, Scheduler};
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

    /// The ids of the sessions allocated to requests.
    fn allocated(&self) -> Vec<Arc<str>> {
        self.slots.iter().filter(|(_, s)| s.allocated).map(|(id, _)| Arc::clone(id)).collect()
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
        let restarter = pool_restarter(config.auto_recovery);
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
        spawner.runtime().spawn(task::run(Arc::downgrade(&core), rx));
        core
    }

    pub(crate) fn emit(&self, event: SpawnerEvent) {
        crate::event::handle_guarded(&*self.handler, event, "pool");
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
    /// The config of an admitted deferred request: its session starts as any of the
    /// pool's do (on the launcher thread, so never on the binding's calling thread,
    /// JavaScript's), and its allocation follows. False when the request does not wait
    /// for one.
    pub(crate) fn supply(&self, key: &K, config: SessionConfig, base_env: Option<Vec<(String, String)>>) -> bool {
        let mut table = self.table.lock();
        match table.entries.get_mut(key) {
            Some(entry) if entry.awaiting_config => entry.awaiting_config = false,
            _ => return false,
        }
        self.launch(&mut table, key.clone(), config, base_env);
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
            let sessions = table.allocated();
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
        self.table.lock().allocated()
    }

    #[cfg_attr(not(feature = "napi"), allow(dead_code))]
    /// The allocated sessions' ids, and how many requests hold a slot (being spawned
    /// too), as of one moment.
    pub(crate) fn session_ids_and_active(&self) -> (Vec<Arc<str>>, usize) {
        let table = self.table.lock();
        (table.allocated(), table.scheduler.active_count())
    }

    #[cfg_attr(not(feature = "napi"), allow(dead_code))]
    /// Visits the queue in serving order (see [`Scheduler::for_each_queued`]).
    pub(crate) fn for_each_queued(&self, visit: impl FnMut(&K, Priority, SystemTime, f64)) {
        self.table.lock().scheduler.for_each_queued(visit)
    }

    pub(crate) fn metrics(&self) -> PoolMetrics {
        let (utilization, queue_length, queue_wait_ms) = {
            let table = self.table.lock();
            let s = &table.scheduler;
            (
                super::request::utilization(s.active_count(), s.config().max_concurrent_sessions),
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
    if let Some(timeout) = super::config::default_timeout_for(config.timeout_ms, pool.default_session_timeout_ms) {
        config.timeout_ms = Some(timeout);
    }
}
