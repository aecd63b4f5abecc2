//! The Rust `Pool` as a host of a shared queue: three pools in this test process, each
//! with its own spawner running the fake agent, on an in-process `LocalQueue` and (with
//! the `redis` feature) on real `redis-server`s. Every request completes exactly once,
//! each host keeps to its capacity, a dropped host's running requests are taken over
//! after its lease, a cancel reaches the host that runs the request, and draining
//! hands work over.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use claude_session_spawner::pool::queue::{LocalQueue, QueueEvent, RequestQueue};
use claude_session_spawner::pool::{Pool, PoolConfig, PoolFailure, PoolRequest, SharedQueueConfig};
use claude_session_spawner::*;
use support::*;

/// Per host: live sessions now and at most, and the pool's events by name.
#[derive(Default)]
struct Watch {
    live: Mutex<(usize, usize)>,
    events: Mutex<Vec<String>>,
}

impl Watch {
    fn most(&self) -> usize {
        self.live.lock().unwrap().1
    }
    fn named(&self, name: &str) -> usize {
        self.events.lock().unwrap().iter().filter(|e| *e == name).count()
    }
}

fn fake_spawner(watch: &Arc<Watch>) -> Spawner {
    let options = SpawnerOptions::default().claude_path(fake_agent()).protocol(Protocol::Text).extra_args(["env-steps"]);
    let w = Arc::clone(watch);
    Spawner::new(options, move |e: SpawnerEvent| {
        let mut live = w.live.lock().unwrap();
        match e {
            SpawnerEvent::SessionSpawned { .. } => {
                live.0 += 1;
                live.1 = live.1.max(live.0);
            }
            SpawnerEvent::SessionEnded { .. } => live.0 -= 1,
            _ => {}
        }
    })
    .unwrap()
}

fn config(capacity: usize, lease_ms: u64) -> PoolConfig {
    PoolConfig {
        max_concurrent_sessions: capacity,
        max_queue_size: 1000,
        queue: Some(SharedQueueConfig {
            url: String::new(),
            name: String::new(),
            host: None,
            lease_ms,
            poll_interval_ms: 100,
            connect_timeout_ms: Some(1000),
            response_timeout_ms: Some(1000),
        }),
        ..PoolConfig::default()
    }
}

fn recorder(watch: &Arc<Watch>) -> impl EventHandler {
    let w = Arc::clone(watch);
    move |e: SpawnerEvent| w.events.lock().unwrap().push(e.name().to_owned())
}

fn request(dir: &Path, id: &str, priority: Priority, steps: &[String]) -> PoolRequest {
    let mut c = support::config(dir);
    c.environment_variables.insert("FAKE_AGENT_STEPS".into(), steps.join(";"));
    PoolRequest::new(id, c, priority)
}

/// The queue's own record of what ended how, on which host.
#[derive(Default, Clone)]
struct Record(Arc<Mutex<Vec<QueueEvent>>>);

impl Record {
    fn of(queue: &Arc<dyn RequestQueue>) -> Self {
        let record = Record::default();
        let mut rx = queue.subscribe();
        let sink = record.clone();
        tokio::spawn(async move {
            while let Ok(e) = rx.recv().await {
                sink.0.lock().unwrap().push(e);
            }
        });
        record
    }

    fn completed(&self) -> HashMap<String, Vec<String>> {
        let mut by_id: HashMap<String, Vec<String>> = HashMap::new();
        for e in self.0.lock().unwrap().iter() {
            if let QueueEvent::Completed { id, host, .. } = e {
                by_id.entry(id.clone()).or_default().push(host.clone());
            }
        }
        by_id
    }

    fn has(&self, check: impl Fn(&QueueEvent) -> bool) -> bool {
        self.0.lock().unwrap().iter().any(check)
    }
}

const PRIORITIES: [Priority; 4] = [Priority::Critical, Priority::High, Priority::Medium, Priority::Low];

/// Three hosts on `queue`, capacities 1, 2 and 3: 30 requests from all of them complete
/// exactly once, and each host keeps to its capacity.
async fn thirty_requests_complete_once_within_capacity(queue: Arc<dyn RequestQueue>) {
    let dir = tempfile::tempdir().unwrap();
    let record = Record::of(&queue);
    let mut hosts = Vec::new();
    for (i, capacity) in [1, 2, 3].into_iter().enumerate() {
        let watch = Arc::new(Watch::default());
        let pool = Pool::on_queue(&fake_spawner(&watch), config(capacity, 2000), Arc::clone(&queue), format!("h{i}"), recorder(&watch));
        hosts.push((pool, watch, capacity));
    }
    let mut outcomes = Vec::new();
    for i in 0..30 {
        let (pool, _, _) = &hosts[i % 3];
        let steps = [format!("sleep:{}", 10 + (i * 7) % 40), "out:done".to_owned(), "exit:0".to_owned()];
        let pool = pool.clone();
        let r = request(dir.path(), &format!("r{i}"), PRIORITIES[i % 4], &steps);
        outcomes.push(tokio::spawn(async move {
            let allocation = pool.request_session(r).await?;
            let host = allocation.host.clone();
            Ok::<_, PoolFailure>((allocation.outcome.await?, host))
        }));
    }
    for o in outcomes {
        let (status, host) = tokio::time::timeout(DEADLINE, o).await.expect("in time").unwrap().unwrap();
        assert_eq!(status.state, SessionState::Completed);
        assert!(status.stdout.contains("done"));
        assert_eq!(status.host, host, "the status says where it ran");
    }
    wait_until("30 completions in the queue's record", || record.completed().len() == 30).await;
    assert!(record.completed().values().all(|hosts| hosts.len() == 1), "each completed exactly once");
    for (_, watch, capacity) in &hosts {
        assert!(watch.most() <= *capacity, "at most {capacity} at once, saw {}", watch.most());
        assert!(watch.named("session-allocated") > 0, "the requests it made were allocated here");
    }
    let ran: std::collections::HashSet<String> = record.completed().values().flatten().cloned().collect();
    assert!(ran.len() >= 2, "work went to several hosts: {ran:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_pools_on_an_in_process_queue() {
    thirty_requests_complete_once_within_capacity(Arc::new(LocalQueue::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_from_another_host_stops_the_request_where_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let queue: Arc<dyn RequestQueue> = Arc::new(LocalQueue::new());
    let (wa, wb) = (Arc::new(Watch::default()), Arc::new(Watch::default()));
    let a = Pool::on_queue(&fake_spawner(&wa), config(1, 2000), Arc::clone(&queue), "a", recorder(&wa));
    let long = a.request_session(request(dir.path(), "long", Priority::High, &["hang".into()])).await.unwrap();
    assert_eq!(long.host.as_deref(), Some("a"), "the only host took it");
    let b = Pool::on_queue(&fake_spawner(&wb), config(1, 2000), Arc::clone(&queue), "b", recorder(&wb));
    assert!(b.cancel_request_async("long").await.unwrap());
    let failure = tokio::time::timeout(DEADLINE, long.outcome).await.unwrap().unwrap_err();
    assert!(matches!(failure, PoolFailure::Cancelled), "{failure:?}");
    assert!(!b.cancel_request_async("nobody").await.unwrap());
    let status = tokio::time::timeout(DEADLINE, long.session.completion).await.unwrap();
    assert_eq!(status.session_id, long.session.session_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_hands_queued_and_running_work_to_the_other_host_as_the_same_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let queue: Arc<dyn RequestQueue> = Arc::new(LocalQueue::new());
    let record = Record::of(&queue);
    let (wa, wb) = (Arc::new(Watch::default()), Arc::new(Watch::default()));
    let a = Pool::on_queue(&fake_spawner(&wa), config(1, 2000), Arc::clone(&queue), "a", recorder(&wa));
    let held = a.request_session(request(dir.path(), "held", Priority::High, &["sleep:300".into(), "exit:0".into()])).await.unwrap();
    assert_eq!(held.host.as_deref(), Some("a"));
    let b = Pool::on_queue(&fake_spawner(&wb), config(1, 2000), Arc::clone(&queue), "b", recorder(&wb));
    tokio::time::timeout(DEADLINE, a.drain(Duration::ZERO)).await.unwrap();
    let status = tokio::time::timeout(DEADLINE, held.outcome).await.unwrap().unwrap();
    assert_eq!((status.state, status.host.as_deref()), (SessionState::Completed, Some("b")));
    let starts: Vec<(String, u32)> = record.0.lock().unwrap().iter().filter_map(|e| match e {
        QueueEvent::Started { id, host, attempt, .. } if id == "held" => Some((host.clone(), *attempt)),
        _ => None,
    }).collect();
    assert_eq!(starts.first().map(|s| s.0.as_str()), Some("a"));
    assert_eq!(starts.last().map(|s| s.0.as_str()), Some("b"));
    assert!(record.has(|e| matches!(e, QueueEvent::Started { id, detail, .. } if id == "held" && detail.contains("\"attempt\":1") && detail.contains("\"host\":\"b\""))), "the same attempt");
    drop(b);
}

#[cfg(feature = "redis")]
#[path = "queue/redis_server.rs"]
#[allow(dead_code)]
mod redis_server;

#[cfg(feature = "redis")]
mod on_redis {
    use super::*;
    use claude_session_spawner::pool::queue::{RedisQueue, RedisQueueOptions};

    fn redis_config(url: &str, name: &str, capacity: usize, lease_ms: u64) -> PoolConfig {
        let mut c = config(capacity, lease_ms);
        let q = c.queue.as_mut().unwrap();
        q.url = url.to_owned();
        q.name = name.to_owned();
        c
    }

    async fn connect(url: &str, name: &str) -> Arc<dyn RequestQueue> {
        Arc::new(RedisQueue::connect(RedisQueueOptions::new(url, name)).await.unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_pools_on_redis() {
        let server = redis_server::RedisServer::start();
        thirty_requests_complete_once_within_capacity(connect(&server.url(), "thirty").await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_pools_on_redis_one_dropped_mid_run_its_requests_complete_elsewhere_once() {
        let server = redis_server::RedisServer::start();
        let dir = tempfile::tempdir().unwrap();
        let watcher = connect(&server.url(), "dropped").await;
        let record = Record::of(&watcher);
        let mut hosts = Vec::new();
        for i in 0..3 {
            let watch = Arc::new(Watch::default());
            let mut c = redis_config(&server.url(), "dropped", 2, 1500);
            c.queue.as_mut().unwrap().host = Some(format!("h{i}"));
            hosts.push((Pool::over(&fake_spawner(&watch), c, recorder(&watch)).unwrap(), watch));
        }
        // All requests are made by h0; h2 will be dropped while it runs some.
        let mut outcomes = Vec::new();
        for i in 0..12 {
            let pool = hosts[0].0.clone();
            let r = request(dir.path(), &format!("k{i}"), PRIORITIES[i % 4], &["sleep:400".into(), "exit:0".into()]);
            outcomes.push(tokio::spawn(async move { pool.request_session(r).await?.outcome.await }));
        }
        let on_h2 = |record: &Record| {
            let events = record.0.lock().unwrap();
            let done: Vec<&String> = events.iter().filter_map(|e| match e {
                QueueEvent::Completed { id, .. } => Some(id),
                _ => None,
            }).collect();
            events.iter().filter_map(|e| match e {
                QueueEvent::Started { id, host, .. } if host == "h2" && !done.contains(&id) => Some(id.clone()),
                _ => None,
            }).collect::<Vec<_>>()
        };
        wait_until("h2 to run a request", || !on_h2(&record).is_empty()).await;
        let orphaned = on_h2(&record);
        let (dropped, _) = hosts.pop().unwrap();
        // Its sessions are stopped with it (the test's spawner goes too); its leases lapse.
        for id in dropped.status().active_sessions.iter().map(|s| s.session_id.clone()) {
            let _ = dropped.spawner().request_stop(&id, false);
        }
        drop(dropped);
        for o in outcomes {
            let status = tokio::time::timeout(Duration::from_secs(60), o).await.expect("in time").unwrap().unwrap();
            assert_eq!(status.state, SessionState::Completed);
        }
        wait_until("12 completions", || record.completed().len() == 12).await;
        let completed = record.completed();
        assert!(completed.values().all(|hosts| hosts.len() == 1), "none completed twice: {completed:?}");
        for id in &orphaned {
            let host = &completed[id][0];
            assert!(host == "h0" || host == "h1", "{id} ran again elsewhere, not on the dropped host ({host})");
            assert!(record.has(|e| matches!(e, QueueEvent::Requeued { id: r, attempt: 2 } if r == id)), "{id} requeued");
        }
    }
}
