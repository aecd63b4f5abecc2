//! The Rust `Pool` with real agent processes (the fake agent): admission order,
//! capacity, cancel, auto-recovery, drain, rate-limit pauses.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use claude_session_spawner::pool::{Pool, PoolConfig, PoolFailure, PoolRequest};
use claude_session_spawner::*;
use support::*;

/// The pool's events (and session ends), as `name request-or-session` lines.
#[derive(Default)]
struct Log(Mutex<Vec<String>>);

impl Log {
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    fn named(&self, name: &str) -> Vec<String> {
        self.lines().into_iter().filter(|l| l.split(' ').next() == Some(name)).collect()
    }

    fn record(&self, event: SpawnerEvent) {
        let line = match &event {
            SpawnerEvent::SessionAllocated { request_id, .. } => format!("session-allocated {request_id}"),
            SpawnerEvent::RequestQueued { request_id, position, queue_length } => {
                format!("request-queued {request_id} {position}/{queue_length}")
            }
            SpawnerEvent::RequestCancelled { request_id } => format!("request-cancelled {request_id}"),
            SpawnerEvent::SessionRecovering { request_id, attempt, .. } => format!("session-recovering {request_id} {attempt}"),
            SpawnerEvent::SessionReleased { status, .. } => format!("session-released {}", status.state),
            SpawnerEvent::PoolThrottled { reason, .. } => format!("pool-throttled {reason}"),
            SpawnerEvent::SessionSpawned { .. }
            | SpawnerEvent::SessionEnded { .. }
            | SpawnerEvent::PoolDraining
            | SpawnerEvent::PoolDrained
            | SpawnerEvent::PoolResumed => event.name().to_owned(),
            _ => return,
        };
        self.0.lock().unwrap().push(line);
    }
}

/// A pool of fake agents that run the steps each request puts in `FAKE_AGENT_STEPS`.
fn pool(config: PoolConfig, options: SpawnerOptions, protocol: Protocol) -> (Pool, Arc<Log>) {
    let log = Arc::new(Log::default());
    let sink = Arc::clone(&log);
    let mut args = vec!["--steps", "env-steps"];
    if protocol == Protocol::Text {
        args.remove(0);
    }
    let options = options.claude_path(fake_agent()).protocol(protocol).extra_args(args);
    let pool = Pool::new(options, config, move |e: SpawnerEvent| sink.record(e)).expect("inside a runtime");
    (pool, log)
}

fn text_pool(capacity: usize) -> (Pool, Arc<Log>) {
    pool(PoolConfig { max_concurrent_sessions: capacity, max_queue_size: 100, ..PoolConfig::default() }, SpawnerOptions::default(), Protocol::Text)
}

fn request(dir: &std::path::Path, id: &str, priority: Priority, steps: &[&str]) -> PoolRequest {
    let mut c = config(dir);
    c.environment_variables.insert("FAKE_AGENT_STEPS".into(), steps.join(";"));
    PoolRequest::new(id, c, priority)
}

const HOLD: &[&str] = &["drain-stdin"];

async fn within<T>(what: &str, f: impl std::future::IntoFuture<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f).await.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Fake agents that are children of this test process, still run, and work in `dir`
/// (tests run side by side in this process).
fn live_agents(dir: &std::path::Path) -> usize {
    let me = std::process::id().to_string();
    let agent = fake_agent();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { return false };
            let Some((_, rest)) = stat.rsplit_once(')') else { return false };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.len() > 1
                && fields[0] != "Z"
                && fields[1] == me
                && std::fs::read_link(e.path().join("exe")).is_ok_and(|p| p == agent)
                && std::fs::read_link(e.path().join("cwd")).is_ok_and(|p| p == dir)
        })
        .count()
}

#[tokio::test]
async fn capacity_one_serves_critical_high_medium_low() {
    let dir = tempfile::tempdir().unwrap();
    let (pool, log) = text_pool(1);
    let blocker = pool.request_session(request(dir.path(), "blocker", Priority::Low, HOLD)).await.unwrap();
    let mut waiting = Vec::new();
    for p in [Priority::Low, Priority::Medium, Priority::Critical, Priority::High] {
        let pool = pool.clone();
        let r = request(dir.path(), p.as_str(), p, &["exit:0"]);
        waiting.push(tokio::spawn(async move { pool.request_session(r).await }));
    }
    wait_until("four queued requests", || pool.status().queued_count == 4).await;
    let queued: Vec<_> = pool.status().queued_requests.into_iter().map(|q| (q.key, q.estimated_wait_ms)).collect();
    assert_eq!(
        queued,
        [("critical".into(), 60_000.0), ("high".into(), 120_000.0), ("medium".into(), 180_000.0), ("low".into(), 240_000.0)]
    );
    pool.spawner().end_session(&blocker.session.session_id).unwrap();
    for w in waiting {
        let allocation = within("allocation", w).await.unwrap().unwrap();
        assert_eq!(within("outcome", allocation.outcome).await.unwrap().state, SessionState::Completed);
    }
    assert_eq!(
        log.named("session-allocated"),
        ["session-allocated blocker", "session-allocated critical", "session-allocated high", "session-allocated medium", "session-allocated low"]
    );
    assert_eq!(within("first outcome", blocker.outcome).await.unwrap().state, SessionState::Completed);
}

#[tokio::test]
async fn fifty_requests_never_run_more_than_three_agents() {
    let dir = tempfile::tempdir().unwrap();
    let (pool, _log) = text_pool(3);
    let requests: Vec<_> = (0..50)
        .map(|i| {
            let pool = pool.clone();
            let r = request(dir.path(), &format!("r{i}"), Priority::Medium, &["sleep:20", "exit:0"]);
            tokio::spawn(async move { pool.request_session(r).await })
        })
        .collect();
    let mut most = 0;
    let mut outcomes = Vec::new();
    for r in requests {
        let allocation = loop {
            most = most.max(live_agents(dir.path())).max(pool.status().active_count);
            if r.is_finished() {
                break r.await.unwrap().unwrap();
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        outcomes.push(allocation.outcome);
    }
    for o in outcomes {
        assert_eq!(within("outcome", o).await.unwrap().state, SessionState::Completed);
    }
    assert!(most > 0 && most <= 3, "at most 3 agents at once, saw {most}");
    assert_eq!(pool.metrics().sessions.completed_sessions, 50);
}

#[tokio::test]
async fn refusals_cancel_and_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let (pool, log) = pool(
        PoolConfig { max_concurrent_sessions: 1, max_queue_size: 1, ..PoolConfig::default() },
        SpawnerOptions::default(),
        Protocol::Text,
    );
    let running = pool.request_session(request(dir.path(), "running", Priority::Low, HOLD)).await.unwrap();
    let queued = {
        let pool = pool.clone();
        let r = request(dir.path(), "queued", Priority::Low, &["exit:0"]);
        tokio::spawn(async move { pool.request_session(r).await })
    };
    wait_until("the queued request", || pool.status().queued_count == 1).await;
    let full = pool.request_session(request(dir.path(), "third", Priority::Critical, &["exit:0"])).await.unwrap_err();
    assert_eq!(full.to_string(), "Session pool queue is full");
    let dup = pool.request_session(request(dir.path(), "running", Priority::Low, &["exit:0"])).await.unwrap_err();
    assert_eq!(dup.code(), "ERR_INVALID_CONFIG");
    assert!(!pool.cancel_request("running"));
    assert!(pool.cancel_request("queued"));
    assert!(!pool.cancel_request("queued"));
    assert!(matches!(within("cancelled", queued).await.unwrap(), Err(PoolFailure::Cancelled)));
    pool.spawner().end_session(&running.session.session_id).unwrap();
    within("outcome", running.outcome).await.unwrap();
    wait_until("a free slot", || pool.status().active_count == 0).await;
    assert_eq!(log.named("session-spawned").len(), 1, "the cancelled request never spawned");
    assert_eq!(log.named("request-cancelled"), ["request-cancelled queued"]);
}

#[tokio::test]
async fn crashed_requests_are_retried_up_to_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (pool, log) = text_pool(1);
    let allocation = pool.request_session(request(dir.path(), "crashy", Priority::High, &["signal:SEGV"])).await.unwrap();
    let failure = within("the last attempt", allocation.outcome).await.unwrap_err();
    let PoolFailure::GaveUp(status) = failure else { panic!("expected GaveUp, got {failure:?}") };
    assert_eq!(status.state, SessionState::Crashed);
    assert_eq!(log.named("session-recovering"), ["session-recovering crashy 2", "session-recovering crashy 3"]);
    assert_eq!(log.named("session-allocated").len(), 3);

    // An attempt that completes ends the retries.
    let marker = dir.path().join("attempted");
    let marker = marker.display();
    let steps = [format!("exit-if-exists:{marker}"), format!("touch:{marker}"), "signal:SEGV".into()];
    let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
    let flaky = pool.request_session(request(dir.path(), "flaky", Priority::High, &steps)).await.unwrap();
    assert_eq!(within("the second attempt", flaky.outcome).await.unwrap().state, SessionState::Completed);
    assert_eq!(log.named("session-recovering").len(), 3);
}

#[tokio::test]
async fn drain_fails_the_queue_and_stops_a_stubborn_agent() {
    let dir = tempfile::tempdir().unwrap();
    let (pool, log) = pool(
        PoolConfig { max_concurrent_sessions: 1, max_queue_size: 10, ..PoolConfig::default() },
        SpawnerOptions::default().grace_period(Duration::from_millis(300)),
        Protocol::Text,
    );
    let stubborn = pool.request_session(request(dir.path(), "stubborn", Priority::Low, &["ignore-term", "hang"])).await.unwrap();
    let queued = {
        let pool = pool.clone();
        let r = request(dir.path(), "queued", Priority::High, &["exit:0"]);
        tokio::spawn(async move { pool.request_session(r).await })
    };
    wait_until("the queued request", || pool.status().queued_count == 1).await;
    within("drain", pool.drain(Duration::from_millis(300))).await;
    let failure = within("queued request", queued).await.unwrap().unwrap_err();
    assert_eq!(failure.to_string(), "Pool is draining");
    assert_eq!(within("outcome", stubborn.outcome).await.unwrap().state, SessionState::Terminated);
    assert!(!alive(stubborn.session.status.pid.unwrap()));
    let late = pool.request_session(request(dir.path(), "late", Priority::Low, &["exit:0"])).await.unwrap_err();
    assert_eq!(late.to_string(), "Pool is draining");
    let lines = log.lines();
    let at = |name: &str| lines.iter().position(|l| l == name).unwrap_or_else(|| panic!("no {name} in {lines:?}"));
    assert!(at("pool-draining") < at("session-released terminated") && at("session-released terminated") < at("pool-drained"));
}

#[tokio::test]
async fn a_rate_limited_session_pauses_admission_until_the_reset() {
    let dir = tempfile::tempdir().unwrap();
    let (pool, log) = pool(
        PoolConfig { max_concurrent_sessions: 2, max_queue_size: 10, ..PoolConfig::default() },
        SpawnerOptions::default(),
        Protocol::StreamJson,
    );
    let retry = r#"out:{"type":"system","subtype":"api_retry","attempt":1,"max_retries":10,"retry_delay_ms":400,"error_status":429,"error":"rate_limit"}"#;
    let limited = pool.request_session(request(dir.path(), "limited", Priority::High, &[retry, "drain-stdin"])).await.unwrap();
    wait_until("the pause", || !log.named("pool-throttled").is_empty()).await;
    let paused_at = SystemTime::now();
    let next = pool.request_session(request(dir.path(), "next", Priority::High, &["exit:0"]));
    let next = within("the allocation after the pause", next).await.unwrap();
    assert!(SystemTime::now().duration_since(paused_at).unwrap() >= Duration::from_millis(300));
    let lines = log.lines();
    let at = |name: &str| lines.iter().position(|l| l.starts_with(name)).unwrap();
    assert!(at("pool-throttled") < at("request-queued next") && at("request-queued next") < at("pool-resumed"));
    assert!(at("pool-resumed") < at("session-allocated next"));
    assert_eq!(log.named("pool-throttled"), ["pool-throttled rate_limit (HTTP 429)"]);
    within("outcome", next.outcome).await.unwrap();
    pool.spawner().end_session(&limited.session.session_id).unwrap();
    within("outcome", limited.outcome).await.unwrap();
}

#[tokio::test]
async fn a_pool_over_a_shared_spawner_retries_its_crashes_and_the_recovery_manager_defers_to_it() {
    use claude_session_spawner::recovery::{RecoveryConfig, RecoveryManager};
    let dir = tempfile::tempdir().unwrap();
    let spawned = Arc::new(Log::default());
    let sink = Arc::clone(&spawned);
    let options = SpawnerOptions::default().claude_path(fake_agent()).protocol(Protocol::Text).extra_args(["env-steps"]);
    let spawner = Spawner::new(options, move |e: SpawnerEvent| sink.record(e)).unwrap();
    let recovery = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = Arc::clone(&recovery);
    let config = RecoveryConfig { save_crash_dumps: false, retry_delay_ms: 10, ..RecoveryConfig::default() };
    let _manager = RecoveryManager::new(&spawner, config, move |e: SpawnerEvent| seen.lock().unwrap().push(e.name().to_owned()));
    let pool_log = Arc::new(Log::default());
    let sink = Arc::clone(&pool_log);
    let small = PoolConfig { max_concurrent_sessions: 1, max_queue_size: 10, ..PoolConfig::default() };
    let pool = Pool::over(&spawner, small.clone(), move |e: SpawnerEvent| sink.record(e)).unwrap();

    let marker = dir.path().join("pooled").display().to_string();
    let steps = [format!("exit-if-exists:{marker}"), format!("touch:{marker}"), "signal:SEGV".into()];
    let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
    let pooled = pool.request_session(request(dir.path(), "pooled", Priority::High, &steps)).await.unwrap();
    assert_eq!(within("the pool's retry", pooled.outcome).await.unwrap().state, SessionState::Completed);
    wait_until("the deferral", || recovery.lock().unwrap().contains(&"recovery-deferred".to_owned())).await;
    assert_eq!(*recovery.lock().unwrap(), ["crash-detected", "crash-analyzed", "recovery-deferred"]);
    assert_eq!(pool_log.named("session-recovering"), ["session-recovering pooled 2"]);
    // The pool's events went to its own handler, the sessions' to the spawner's.
    assert!(pool_log.named("session-spawned").is_empty());
    assert_eq!(spawned.named("session-spawned").len(), 2);

    // A pool that does not retry leaves its crashes to the manager.
    let plain = Pool::over(&spawner, PoolConfig { auto_recovery: false, ..small }, |_: SpawnerEvent| {}).unwrap();
    let marker = dir.path().join("plain").display().to_string();
    let steps = [format!("exit-if-exists:{marker}"), format!("touch:{marker}"), "signal:SEGV".into()];
    let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
    let crashed = plain.request_session(request(dir.path(), "plain", Priority::High, &steps)).await.unwrap();
    assert_eq!(within("the crash", crashed.outcome).await.unwrap().state, SessionState::Crashed);
    wait_until("the manager's recovery", || recovery.lock().unwrap().contains(&"recovery-succeeded".to_owned())).await;
}
