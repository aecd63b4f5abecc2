//! A pool's part in a queue shared with pools on other hosts (`config.queue`): the
//! host loop. The queue decides (one atomic step per operation: who takes what, in
//! which order, whose lease lapsed); this host carries the decisions out:
//!
//! - as a requester (`requester.rs`): a request becomes data in the queue, and it
//!   settles from the events every host publishes (started, completed, failed,
//!   cancelled), wherever it ran, or from [`RequestQueue::lookup`] when events were
//!   missed;
//! - as a worker (`worker.rs`): while it has free slots it takes requests, runs their
//!   sessions on its spawner, renews their leases, stops a session whose lease it lost
//!   or could not renew in time (the fence), and reports how each ended;
//! - as a good citizen (`host.rs`): it announces its capacity, puts lapsed leases of
//!   dead hosts back in the queue, drains by handing its work over, and rides out
//!   outages of the queue.
//!
//! All of it runs in one task on the spawner's runtime, beside JavaScript: leases are
//! renewed and fences kept however busy Node's event loop is. Queue operations run as
//! their own tasks (a `JoinSet`) so none waits on another; their results come back to
//! the host task. Queries read a [`View`] the task keeps current.

mod host;
mod requester;
mod wire;
mod worker;

use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use super::config::{default_timeout_for, PoolConfig, SharedQueueConfig};
use super::queue::{QueueError, QueueSnapshot, RequestQueue};
use super::request::{utilization, Channels, PoolFailure, PoolMetrics, PoolStatus};
use super::scheduler::{estimated_wait_ms, mean_wait_ms, pool_restarter, PoolError, QueuedInfo, DEFAULT_EXECUTION_MS};
use crate::config::{Priority, SessionConfig};
use crate::event::{EventHandler, SpawnerEvent};
use crate::notice::{Activity, Busy, Notice, Restarter};
use crate::spawner::Spawner;
use crate::status::SessionStatus;

pub use wire::PORTABLE_OUTPUT;

/// How often a host asks the queue about its unsettled requests, events or not.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(60);

/// How a host reaches its queue.
pub(crate) enum Connect {
    #[cfg(feature = "redis")]
    Redis(super::queue::RedisQueueOptions),
    Given(Arc<dyn RequestQueue>),
}

/// A host's settings, from the pool's config.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub host: Arc<str>,
    pub capacity: usize,
    pub lease: Duration,
    /// Renewals, lapsed leases and the snapshot, every tick.
    pub tick: Duration,
    /// A session whose lease is not renewed this long before it lapses (by this
    /// host's clock, from before the take or renewal was sent) is stopped.
    pub margin: Duration,
    pub max_attempts: u32,
    /// Set when the pool retries (`auto_recovery`): its sessions are claimed by it.
    pub restarter: Option<Restarter>,
    pub respect_rate_limits: bool,
    pub default_timeout_ms: u64,
    pub queue_limit: Option<usize>,
}

impl Settings {
    pub fn new(config: &PoolConfig, queue: &SharedQueueConfig, host: Arc<str>) -> Self {
        let lease = Duration::from_millis(queue.lease_ms);
        let tick = Duration::from_millis(queue.poll_interval_ms.min(queue.lease_ms / 3).max(50));
        let margin = (lease / 3).min((2 * tick).max(Duration::from_millis(500)));
        Self {
            host,
            capacity: config.max_concurrent_sessions,
            lease,
            tick,
            margin,
            max_attempts: config.max_request_attempts,
            restarter: pool_restarter(config.auto_recovery),
            respect_rate_limits: config.respect_rate_limits,
            default_timeout_ms: config.default_session_timeout_ms,
            queue_limit: Some(config.max_queue_size),
        }
    }
}

/// What queries read; the host task keeps it current.
#[derive(Default)]
pub(crate) struct View {
    pub snapshot: Option<QueueSnapshot>,
    /// When the snapshot was read.
    pub snapshot_at: Option<SystemTime>,
    pub reachable: bool,
    /// Requests made here and not settled; requests this host holds a lease on.
    pub own: HashSet<Arc<str>>,
    pub held: HashSet<Arc<str>>,
    /// Sessions running here for held requests.
    pub sessions: Vec<Arc<str>>,
    pub draining: bool,
    pub closed: bool,
}


/// A request's config as it comes in: JSON from JavaScript (checked, and passed on as
/// given), or a Rust program's.
pub(crate) enum RequestConfig<'a> {
    #[cfg_attr(not(feature = "napi"), allow(dead_code))]
    Json(&'a str),
    Ready(Box<SessionConfig>),
}

pub(crate) struct NewRequest {
    pub id: Arc<str>,
    pub priority: Priority,
    pub queued_at: SystemTime,
    pub config_json: String,
    pub channels: Option<Channels>,
    pub busy: Busy,
}

pub(crate) enum Command {
    Request(NewRequest),
    Cancel { id: Arc<str>, reply: Option<oneshot::Sender<Result<bool, QueueError>>> },
    Refresh { reply: Option<oneshot::Sender<Result<(), QueueError>>> },
    Drain { timeout: Duration, reply: Option<oneshot::Sender<()>> },
    Close { reply: oneshot::Sender<()> },
    Notice(Notice),
}

pub(crate) struct SharedCore {
    pub spawner: Spawner,
    handler: Box<dyn EventHandler>,
    pub settings: Settings,
    pub view: Mutex<View>,
    commands: mpsc::UnboundedSender<(Command, Busy)>,
    pub activity: Option<Arc<dyn Activity>>,
    watch: u64,
}

impl Drop for SharedCore {
    fn drop(&mut self) {
        self.spawner.unwatch(self.watch);
    }
}

impl SharedCore {
    /// Starts the host loop over `spawner`; it connects in the background.
    pub fn start(
        spawner: &Spawner,
        settings: Settings,
        connect: Connect,
        handler: Box<dyn EventHandler>,
        activity: Option<Arc<dyn Activity>>,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let watcher_tx = tx.clone();
        let watcher_activity = activity.clone();
        let watch = spawner.watch(move |notice| {
            let _ = watcher_tx.send((Command::Notice(notice.clone()), Busy::new(&watcher_activity)));
        });
        let core = Arc::new(Self {
            spawner: spawner.clone(),
            handler,
            settings,
            view: Mutex::new(View::default()),
            commands: tx,
            activity,
            watch,
        });
        spawner.runtime().spawn(host::run(Arc::downgrade(&core), rx, connect));
        core
    }

    pub fn emit(&self, event: SpawnerEvent) {
        crate::event::handle_guarded(&*self.handler, event, "pool");
    }

    fn send(&self, command: Command) {
        let _ = self.commands.send((command, Busy::new(&self.activity)));
    }

    /// A new request, checked here (a bad config is refused by the host that makes the
    /// request, not by whichever takes it), then pushed by the host task: it settles
    /// with `RequestQueued` then its allocation and end, or with `RequestFailed`.
    pub fn request(
        &self,
        id: Arc<str>,
        priority: Priority,
        queued_at: SystemTime,
        config: RequestConfig<'_>,
        channels: Option<Channels>,
    ) -> Result<(), PoolFailure> {
        let fallback = self.settings.default_timeout_ms;
        let config_json = match config {
            RequestConfig::Json(json) => {
                let mut value: serde_json::Value = serde_json::from_str(json)
                    .map_err(|e| crate::SpawnError::InvalidConfig(crate::ConfigError::new("config", format!("is not valid JSON: {e}"))))
                    .map_err(PoolFailure::Spawn)?;
                let config = SessionConfig::from_json(&value).map_err(|e| PoolFailure::Spawn(e.into()))?;
                match default_timeout_for(config.timeout_ms, fallback) {
                    Some(timeout) => {
                        value["timeout"] = timeout.into();
                        value.to_string()
                    }
                    None => json.to_owned(),
                }
            }
            RequestConfig::Ready(mut config) => {
                config.timeout_ms = default_timeout_for(config.timeout_ms, fallback).or(config.timeout_ms);
                config.to_json(false).to_string()
            }
        };
        {
            let mut view = self.view.lock();
            if view.closed {
                return Err(PoolFailure::Closed);
            }
            if view.draining {
                return Err(PoolFailure::Refused(PoolError::Draining));
            }
            if view.own.contains(&id) || view.held.contains(&id) {
                return Err(PoolFailure::Refused(PoolError::Duplicate(format!("{:?}", &*id))));
            }
            view.own.insert(Arc::clone(&id));
        }
        let busy = Busy::new(&self.activity);
        self.send(Command::Request(NewRequest { id, priority, queued_at, config_json, channels, busy }));
        Ok(())
    }

    /// True when this host made or runs the request (and is connected): the cancel then
    /// goes to the queue, and a running request is stopped by its host.
    pub fn cancel(&self, id: &str) -> bool {
        let known = {
            let view = self.view.lock();
            view.reachable && (view.own.contains(id) || view.held.contains(id))
        };
        if known {
            self.send(Command::Cancel { id: id.into(), reply: None });
        }
        known
    }

    /// Cancels a request made on any host: true when it was queued or running.
    pub fn cancel_async(&self, id: &str) -> oneshot::Receiver<Result<bool, QueueError>> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Cancel { id: id.into(), reply: Some(reply) });
        answer
    }

    /// Reads the queue's snapshot now; [`SharedCore::status`] then shows it.
    pub fn refresh(&self) -> oneshot::Receiver<Result<(), QueueError>> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Refresh { reply: Some(reply) });
        answer
    }

    pub fn drain(&self, timeout: Duration) -> oneshot::Receiver<()> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Drain { timeout, reply: Some(reply) });
        answer
    }

    /// Hands back what this host holds, leaves the queue and disconnects; requests made
    /// here that are not settled fail with `ERR_POOL_CLOSED` (they stay in the queue).
    pub fn close(&self) -> oneshot::Receiver<()> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Close { reply });
        answer
    }

    /// The status as of the last snapshot (one is read if it is older than a tick).
    pub fn status(&self) -> (PoolStatus, SharedStatus) {
        let (queued_requests, shared, sessions, at) = {
            let view = self.view.lock();
            let empty = QueueSnapshot { queued: Vec::new(), leased: 0, mean_execution_ms: None, hosts: 0, capacity: 0 };
            let snapshot = view.snapshot.as_ref().unwrap_or(&empty);
            let mean = snapshot.mean_execution_ms.unwrap_or(DEFAULT_EXECUTION_MS);
            let shared_capacity = if snapshot.capacity > 0 { snapshot.capacity } else { self.settings.capacity.max(1) };
            let queued_requests: Vec<QueuedInfo<String>> = snapshot
                .queued
                .iter()
                .enumerate()
                .map(|(i, e)| QueuedInfo {
                    key: e.id.clone(),
                    priority: e.priority,
                    queued_at: e.enqueued_at,
                    estimated_wait_ms: estimated_wait_ms(i, shared_capacity, mean),
                    attempt: e.attempt,
                })
                .collect();
            let shared = SharedStatus {
                host: self.settings.host.to_string(),
                hosts: snapshot.hosts,
                capacity: snapshot.capacity,
                leased: snapshot.leased,
                reachable: view.reachable,
                as_of: view.snapshot_at.unwrap_or(SystemTime::UNIX_EPOCH),
            };
            (queued_requests, shared, view.sessions.clone(), view.snapshot_at)
        };
        let stale = at.is_none_or(|t| t.elapsed().unwrap_or_default() > self.settings.tick);
        if stale {
            self.send(Command::Refresh { reply: None });
        }
        let active_sessions: Vec<SessionStatus> = sessions.iter().filter_map(|id| self.spawner.session_status(id)).collect();
        (PoolStatus::new(self.settings.capacity, sessions.len(), active_sessions, queued_requests), shared)
    }

    pub fn metrics(&self) -> PoolMetrics {
        let (queue_length, queue_wait_ms, running) = {
            let view = self.view.lock();
            let queued = view.snapshot.as_ref().map_or(&[][..], |s| &s.queued[..]);
            (queued.len(), mean_wait_ms(queued.iter().map(|e| e.enqueued_at), SystemTime::now()), view.sessions.len())
        };
        PoolMetrics {
            sessions: self.spawner.metrics_summary(),
            pool_utilization: utilization(running, self.settings.capacity),
            queue_length,
            queue_wait_ms,
        }
    }
}

/// The shared queue as all hosts see it (the contract's added `PoolStatus.shared`).
#[derive(Debug, Clone, PartialEq)]
pub struct SharedStatus {
    /// This host's name in the queue.
    pub host: String,
    /// Hosts that announced themselves within their lease, and their sessions at once.
    pub hosts: usize,
    pub capacity: usize,
    /// Requests running on some host.
    pub leased: usize,
    /// False while the queue cannot be reached.
    pub reachable: bool,
    /// When the queue part was read.
    pub as_of: SystemTime,
}

/// The default host name: the machine's, the process's and a random part.
#[cfg(feature = "redis")]
pub(crate) fn default_host() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".into());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{name}/{}/{}", std::process::id(), &random[..8])
}

/// A weak handle for the host task.
pub(crate) type CoreRef = Weak<SharedCore>;
