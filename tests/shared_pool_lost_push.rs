//! A push whose answer is lost: the queue holds the request, but its requester was told
//! `ERR_QUEUE_UNAVAILABLE`, so it must never run. Here the host that made it takes it
//! before that answer reaches it (the order a loaded machine can produce against
//! Redis): the queue below holds the push's answer back until the host has acted on
//! its take (renewed its lease, started it or handed it back), so that order happens
//! every time.

mod support;

use std::sync::Arc;
use std::time::Duration;

use claude_session_spawner::pool::queue::{
    CancelResult, Expired, FinishOutcome, LocalQueue, Pushed, QueueError, QueueEvent, QueueFuture, QueueSnapshot,
    QueuedRequest, Renewal, RequestQueue, RequestState, Taken,
};
use claude_session_spawner::pool::{Pool, PoolConfig, PoolFailure, PoolRequest, SharedQueueConfig};
use claude_session_spawner::*;
use support::*;
use tokio::sync::{broadcast, Notify};

const LOST: &str = "lost";

/// A `LocalQueue` whose answer to the push of [`LOST`] is an error, given only once a
/// host holding that request renewed its lease, started it or released it: the
/// request is queued all the same.
struct LostAnswer {
    inner: LocalQueue,
    /// A host acted on its take of the lost request.
    acted: Notify,
}

impl LostAnswer {
    fn acted_on(&self, id: &str) {
        if id == LOST {
            self.acted.notify_one();
        }
    }
}

impl RequestQueue for LostAnswer {
    fn push_within(&self, request: QueuedRequest, limit: Option<usize>) -> QueueFuture<'_, Pushed> {
        Box::pin(async move {
            let lost = request.id == LOST;
            let pushed = self.inner.push_within(request, limit).await?;
            if !lost {
                return Ok(pushed);
            }
            self.acted.notified().await;
            Err(QueueError::Unavailable { url: "test".into(), reason: "the answer to the push was lost".into() })
        })
    }
    fn take<'a>(&'a self, host: &'a str, lease: Duration) -> QueueFuture<'a, Option<Taken>> {
        self.inner.take(host, lease)
    }
    fn renew<'a>(&'a self, host: &'a str, id: &'a str, lease: Duration) -> QueueFuture<'a, Renewal> {
        self.acted_on(id);
        self.inner.renew(host, id, lease)
    }
    fn started<'a>(&'a self, host: &'a str, id: &'a str, detail: &'a str) -> QueueFuture<'a, ()> {
        self.acted_on(id);
        self.inner.started(host, id, detail)
    }
    fn finish<'a>(&'a self, host: &'a str, id: &'a str, outcome: FinishOutcome, ms: u64) -> QueueFuture<'a, ()> {
        self.inner.finish(host, id, outcome, ms)
    }
    fn release_with_note<'a>(&'a self, host: &'a str, id: &'a str, note: Option<&'a str>) -> QueueFuture<'a, ()> {
        self.acted_on(id);
        self.inner.release_with_note(host, id, note)
    }
    fn requeue_expired(&self, max_attempts: u32) -> QueueFuture<'_, Vec<Expired>> {
        self.inner.requeue_expired(max_attempts)
    }
    fn cancel<'a>(&'a self, id: &'a str) -> QueueFuture<'a, CancelResult> {
        self.inner.cancel(id)
    }
    fn snapshot(&self) -> QueueFuture<'_, QueueSnapshot> {
        self.inner.snapshot()
    }
    fn lookup<'a>(&'a self, id: &'a str) -> QueueFuture<'a, RequestState> {
        self.inner.lookup(id)
    }
    fn announce<'a>(&'a self, host: &'a str, capacity: u32, ttl: Duration) -> QueueFuture<'a, ()> {
        self.inner.announce(host, capacity, ttl)
    }
    fn leave<'a>(&'a self, host: &'a str) -> QueueFuture<'a, ()> {
        self.inner.leave(host)
    }
    fn subscribe(&self) -> broadcast::Receiver<QueueEvent> {
        self.inner.subscribe()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_taken_here_before_its_lost_push_answer_arrived_never_runs() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Arc::new(LostAnswer { inner: LocalQueue::new(), acted: Notify::new() });
    let shared: Arc<dyn RequestQueue> = queue.clone();
    let mut events = shared.subscribe();
    let spawned = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&spawned);
    let options = SpawnerOptions::default().claude_path(fake_agent()).protocol(Protocol::Text).extra_args(["env-steps"]);
    let spawner = Spawner::new(options, move |e: SpawnerEvent| {
        if matches!(e, SpawnerEvent::SessionSpawned { .. }) {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    })
    .unwrap();
    let queue_config = SharedQueueConfig {
        url: String::new(),
        name: String::new(),
        host: None,
        lease_ms: 2000,
        poll_interval_ms: 100,
        connect_timeout_ms: Some(1000),
        response_timeout_ms: Some(1000),
    };
    let config = PoolConfig { max_concurrent_sessions: 1, max_queue_size: 100, queue: Some(queue_config), ..PoolConfig::default() };
    let pool = Pool::on_queue(&spawner, config, shared, "h", |_: SpawnerEvent| {});

    let mut request_config = support::config(dir.path());
    request_config.environment_variables.insert("FAKE_AGENT_STEPS".into(), "exit:0".into());
    let refused = tokio::time::timeout(DEADLINE, pool.request_session(PoolRequest::new(LOST, request_config, Priority::High)))
        .await
        .expect("the push's answer is given once the host acted on its take");
    match refused {
        Err(PoolFailure::Queue(e)) => assert_eq!(e.code(), "ERR_QUEUE_UNAVAILABLE"),
        other => panic!("the request should be refused as the queue being unavailable: {other:?}"),
    }

    // The queue held it and this host took it; it ends cancelled, unstarted.
    let mut seen = Vec::new();
    let cancelled = tokio::time::timeout(DEADLINE, async {
        loop {
            match events.recv().await {
                Ok(QueueEvent::Cancelled { id }) if id == LOST => break,
                Ok(e) => seen.push(e),
                Err(e) => panic!("the queue's events: {e}"),
            }
        }
    })
    .await;
    assert!(cancelled.is_ok(), "no cancel of the lost request; the queue's events: {seen:?}");
    assert!(seen.iter().any(|e| matches!(e, QueueEvent::Allocated { id, .. } if id == LOST)), "taken by its own host: {seen:?}");
    assert!(!seen.iter().any(|e| matches!(e, QueueEvent::Started { .. } | QueueEvent::Completed { .. })), "{seen:?}");
    assert_eq!(spawned.load(std::sync::atomic::Ordering::SeqCst), 0, "no session ran for it");
}
