//! [`Pool`]: the session pool for Rust programs, over a [`Spawner`] it shares or owns.
//! Without `config.queue` its queue is this process's ([`runner`](super::runner));
//! with one, or over any [`RequestQueue`], it is one host of a queue that pools on
//! other hosts share ([`shared`](super::shared)).

use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use super::config::PoolConfig;
use super::queue::{QueueError, RequestQueue};
use super::request::{Allocation, PoolFailure, PoolMetrics, PoolRequest, PoolStatus};
use super::runner::{Body, Core};
use super::shared::{Connect, RequestConfig, Settings, SharedCore, SharedStatus};
use crate::error::SpawnError;
use crate::event::{EventHandler, SpawnerEvent};
use crate::options::SpawnerOptions;
use crate::spawner::Spawner;

#[derive(Clone)]
enum Kind {
    Local(Arc<Core<Arc<str>>>),
    Shared(Arc<SharedCore>),
}

/// A pool of sessions over a spawner. Cheap to clone; clones share the pool; dropping
/// the last stops it (its sessions run on; unsettled requests fail with `PoolGone`).
#[derive(Clone)]
pub struct Pool {
    kind: Kind,
    spawner: Spawner,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("host", &self.host()).finish_non_exhaustive()
    }
}

/// One handler shared by a spawner and the pool made with it.
struct SharedHandler(Arc<dyn EventHandler>);

impl EventHandler for SharedHandler {
    fn handle(&self, event: SpawnerEvent) {
        self.0.handle(event)
    }
}

impl Pool {
    /// A pool on the current Tokio runtime with a spawner of its own made from
    /// `options`; `handler` gets the spawner's events and the pool's.
    pub fn new(options: SpawnerOptions, config: PoolConfig, handler: impl EventHandler) -> Result<Self, SpawnError> {
        let runtime = Handle::try_current().map_err(|_| SpawnError::NoRuntime)?;
        Self::with_runtime(options, config, handler, runtime)
    }

    /// As [`Pool::new`], on `runtime`.
    pub fn with_runtime(options: SpawnerOptions, config: PoolConfig, handler: impl EventHandler, runtime: Handle) -> Result<Self, SpawnError> {
        let handler: Arc<dyn EventHandler> = Arc::new(handler);
        let spawner = Spawner::with_runtime(options, SharedHandler(Arc::clone(&handler)), runtime);
        Self::over(&spawner, config, SharedHandler(handler))
    }

    /// A pool over `spawner`, which other pools and recovery managers may share;
    /// `handler` gets the pool's events (the spawner's go to the spawner's handler).
    /// With `config.queue`, this pool is a host of that shared queue in Redis, and
    /// connects in the background.
    pub fn over(spawner: &Spawner, config: PoolConfig, handler: impl EventHandler) -> Result<Self, SpawnError> {
        match config.queue.clone() {
            None => {
                let core = Core::start(spawner, config, Box::new(handler), None, None);
                Ok(Self { kind: Kind::Local(core), spawner: spawner.clone() })
            }
            Some(queue) => {
                let core = redis_host(spawner, &config, &queue, Box::new(handler), None)?;
                Ok(Self { kind: Kind::Shared(core), spawner: spawner.clone() })
            }
        }
    }

    /// A pool over `spawner` that is host `host` of `queue` (any [`RequestQueue`]: a
    /// [`LocalQueue`](super::queue::LocalQueue) several pools of this process share, say).
    /// `config.queue` supplies the lease and poll interval when given.
    pub fn on_queue(
        spawner: &Spawner,
        config: PoolConfig,
        queue: Arc<dyn RequestQueue>,
        host: impl Into<String>,
        handler: impl EventHandler,
    ) -> Self {
        let shared = config.queue.clone().unwrap_or(super::config::SharedQueueConfig {
            url: "(in process)".into(),
            name: String::new(),
            host: None,
            lease_ms: super::config::DEFAULT_LEASE_MS,
            poll_interval_ms: super::config::DEFAULT_POLL_INTERVAL_MS,
            connect_timeout_ms: None,
            response_timeout_ms: None,
        });
        let settings = Settings::new(&config, &shared, host.into().into());
        let core = SharedCore::start(spawner, settings, Connect::Given(queue), Box::new(handler), None);
        Self { kind: Kind::Shared(core), spawner: spawner.clone() }
    }

    /// The pool's spawner: for queries, input and stops of its sessions.
    pub fn spawner(&self) -> &Spawner {
        &self.spawner
    }

    /// With a shared queue: this pool's host name in it.
    pub fn host(&self) -> Option<&str> {
        match &self.kind {
            Kind::Shared(core) => Some(&core.settings.host),
            Kind::Local(_) => None,
        }
    }

    /// Resolves when the request's session is allocated, at once below capacity or
    /// later from the queue (with a shared queue: on whichever host takes it); fails
    /// when the queue is full, the pool drains, the request is cancelled or its spawn
    /// fails (or, shared, the queue cannot be reached).
    pub async fn request_session(&self, request: PoolRequest) -> Result<Allocation, PoolFailure> {
        let (allocation, receiver) = oneshot::channel();
        let (outcome, outcome_rx) = oneshot::channel();
        let channels = (allocation, outcome, outcome_rx);
        let key: Arc<str> = request.request_id.into();
        match &self.kind {
            Kind::Local(core) => {
                core.submit(key, request.priority, request.queued_at, Body::Ready(Box::new(request.config)), Some(channels))?;
            }
            Kind::Shared(core) => {
                core.request(key, request.priority, request.queued_at, RequestConfig::Ready(Box::new(request.config)), Some(channels))?;
            }
        }
        receiver.await.unwrap_or(Err(PoolFailure::PoolGone))
    }

    /// Removes a queued request (it fails with [`PoolFailure::Cancelled`]); false
    /// when it is not queued. With a shared queue: true when this host made or runs the
    /// request, and the cancel goes to the queue (see [`Pool::cancel_request_async`]).
    pub fn cancel_request(&self, request_id: &str) -> bool {
        match &self.kind {
            Kind::Local(core) => core.cancel(&Arc::from(request_id)),
            Kind::Shared(core) => core.cancel(request_id),
        }
    }

    /// Cancels a request made on any host of a shared queue, queued or running: true
    /// when there was one. Without a shared queue, [`Pool::cancel_request`].
    pub async fn cancel_request_async(&self, request_id: &str) -> Result<bool, QueueError> {
        match &self.kind {
            Kind::Local(core) => Ok(core.cancel(&Arc::from(request_id))),
            Kind::Shared(core) => core.cancel_async(request_id).await.unwrap_or(Ok(false)),
        }
    }

    /// With a shared queue, the queue part is as of the last tick (see
    /// [`Pool::status_async`]).
    pub fn status(&self) -> PoolStatus {
        match &self.kind {
            Kind::Local(core) => core.status(),
            Kind::Shared(core) => core.status().0,
        }
    }

    /// The status with a shared queue read now (and that queue's own figures).
    pub async fn status_async(&self) -> Result<(PoolStatus, Option<SharedStatus>), QueueError> {
        match &self.kind {
            Kind::Local(core) => Ok((core.status(), None)),
            Kind::Shared(core) => {
                core.refresh().await.unwrap_or(Ok(()))?;
                let (status, shared) = core.status();
                Ok((status, Some(shared)))
            }
        }
    }

    pub fn metrics(&self) -> PoolMetrics {
        match &self.kind {
            Kind::Local(core) => core.metrics(),
            Kind::Shared(core) => core.metrics(),
        }
    }

    /// Stops admitting (queued requests fail with `Pool is draining`; with a shared
    /// queue they stay there for the other hosts), waits for the active sessions to
    /// end, stops those still running after `timeout` gracefully (with a shared queue:
    /// hands them over), and returns when every session has ended. Calling it again
    /// waits again.
    pub async fn drain(&self, timeout: Duration) {
        let done = match &self.kind {
            Kind::Local(core) => core.drain(timeout),
            Kind::Shared(core) => core.drain(timeout),
        };
        let _ = done.await;
    }

    /// With a shared queue: hands back what this host holds (its sessions are stopped
    /// and run again elsewhere), leaves the queue and disconnects; requests made here
    /// that are not settled fail with `ERR_POOL_CLOSED` and stay in the queue. Without
    /// one: drains with no grace.
    pub async fn close(&self) {
        match &self.kind {
            Kind::Local(core) => {
                let _ = core.drain(Duration::ZERO).await;
            }
            Kind::Shared(core) => {
                let _ = core.close().await;
            }
        }
    }
}

/// A host of the shared queue in Redis that `queue` names, over `spawner`; it connects
/// in the background.
pub(crate) fn redis_host(
    spawner: &Spawner,
    config: &PoolConfig,
    queue: &super::config::SharedQueueConfig,
    handler: Box<dyn EventHandler>,
    activity: Option<Arc<dyn crate::notice::Activity>>,
) -> Result<Arc<SharedCore>, SpawnError> {
    #[cfg(feature = "redis")]
    {
        let mut options = super::queue::RedisQueueOptions::new(queue.url.clone(), queue.name.clone());
        if let Some(ms) = queue.connect_timeout_ms {
            options.connect_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = queue.response_timeout_ms {
            options.response_timeout = Duration::from_millis(ms);
        }
        let host = queue.host.clone().unwrap_or_else(super::shared::default_host);
        let settings = Settings::new(config, queue, host.into());
        Ok(SharedCore::start(spawner, settings, Connect::Redis(options), handler, activity))
    }
    #[cfg(not(feature = "redis"))]
    {
        let _ = (spawner, config, queue, handler, activity);
        Err(SpawnError::InvalidConfig(crate::ConfigError::new("config.queue", "needs this crate's `redis` feature")))
    }
}
