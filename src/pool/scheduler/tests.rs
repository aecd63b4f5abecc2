//! Tests of `scheduler`.

use super::*;
use crate::pool::config::PriorityWeights;

fn config(capacity: usize, queue: usize) -> PoolConfig {
    PoolConfig { max_concurrent_sessions: capacity, max_queue_size: queue, ..PoolConfig::default() }
}

fn k(id: &str) -> String {
    id.to_owned()
}

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000)
}

#[test]
fn priority_order_then_arrival() {
    let mut s = Scheduler::<String>::new(config(1, 100));
    assert_eq!(s.submit(k("first"), Priority::Low, now()), Ok(Admission::Now));
    let order = [("low", Priority::Low), ("medium", Priority::Medium), ("critical", Priority::Critical), ("high", Priority::High), ("high2", Priority::High)];
    let positions: Vec<_> = order.iter().map(|(id, p)| s.submit(id.to_string(), *p, now()).unwrap()).collect();
    assert_eq!(
        positions,
        [
            Admission::Queued { position: 1, queue_length: 1 },
            Admission::Queued { position: 1, queue_length: 2 },
            Admission::Queued { position: 1, queue_length: 3 },
            Admission::Queued { position: 2, queue_length: 4 },
            Admission::Queued { position: 3, queue_length: 5 },
        ]
    );
    let served: Vec<_> = s.queue_snapshot().into_iter().map(|q| q.key).collect();
    assert_eq!(served, ["critical", "high", "high2", "medium", "low"]);
    assert_eq!(s.session_ended(&k("first"), SessionState::Completed, 10), Some(Outcome::Completed));
    assert_eq!(s.admit_next(), ["critical"]);
    assert_eq!(s.admit_next(), Vec::<String>::new(), "capacity 1");
}

#[test]
fn equal_weights_keep_arrival_order() {
    let mut c = config(1, 100);
    c.priority_weights = PriorityWeights { critical: 1.0, high: 1.0, medium: 1.0, low: 1.0 };
    let mut s = Scheduler::<String>::new(c);
    s.submit(k("running"), Priority::Low, now()).unwrap();
    for (id, p) in [("a", Priority::Low), ("b", Priority::Critical), ("c", Priority::Medium)] {
        s.submit(k(id), p, now()).unwrap();
    }
    let served: Vec<_> = s.queue_snapshot().into_iter().map(|q| q.key).collect();
    assert_eq!(served, ["a", "b", "c"]);
}

#[test]
fn capacity_counts_requests_being_spawned() {
    let mut s = Scheduler::<String>::new(config(3, 100));
    let admitted = (0..50).filter(|i| s.submit(format!("r{i}"), Priority::Medium, now()) == Ok(Admission::Now)).count();
    assert_eq!(admitted, 3);
    assert_eq!(s.active_count(), 3);
    assert_eq!(s.queued_count(), 47);
    assert!(s.spawn_failed(&k("r0")));
    assert_eq!(s.admit_next(), ["r3"]);
}

#[test]
fn refusals() {
    let mut s = Scheduler::<String>::new(config(1, 1));
    s.submit(k("a"), Priority::Low, now()).unwrap();
    s.submit(k("b"), Priority::Low, now()).unwrap();
    assert_eq!(s.submit(k("c"), Priority::Low, now()), Err(PoolError::QueueFull));
    assert_eq!(s.submit(k("a"), Priority::Low, now()), Err(PoolError::Duplicate("\"a\"".into())));
    assert_eq!(s.submit(k("b"), Priority::Low, now()), Err(PoolError::Duplicate("\"b\"".into())));
    assert_eq!(s.drain(), ["b"]);
    assert_eq!(s.submit(k("d"), Priority::Low, now()), Err(PoolError::Draining));
    assert_eq!(s.admit_next(), Vec::<String>::new());
}

#[test]
fn cancel_removes_only_queued_requests() {
    let mut s = Scheduler::<String>::new(config(1, 10));
    s.submit(k("running"), Priority::Low, now()).unwrap();
    s.submit(k("waiting"), Priority::Low, now()).unwrap();
    assert!(!s.cancel(&k("running")));
    assert!(s.cancel(&k("waiting")));
    assert!(!s.cancel(&k("waiting")));
    assert_eq!(s.queued_count(), 0);
    assert_eq!(s.submit(k("waiting"), Priority::Low, now()), Ok(Admission::Queued { position: 1, queue_length: 1 }));
}

#[test]
fn auto_recovery_requeues_timeouts_and_crashes_up_to_the_limit() {
    let mut s = Scheduler::<String>::new(PoolConfig { max_request_attempts: 2, ..config(1, 10) });
    s.submit(k("r"), Priority::High, now()).unwrap();
    assert_eq!(s.session_ended(&k("r"), SessionState::Crashed, 5), Some(Outcome::Requeued { attempt: 2 }));
    assert_eq!(s.admit_next(), ["r"]);
    assert_eq!(s.session_ended(&k("r"), SessionState::Timeout, 5), Some(Outcome::GaveUp));
    s.submit(k("f"), Priority::High, now()).unwrap();
    assert_eq!(s.session_ended(&k("f"), SessionState::Failed, 5), Some(Outcome::Ended));
    assert_eq!(s.session_ended(&k("unknown"), SessionState::Failed, 5), None);
    let mut off = Scheduler::<String>::new(PoolConfig { auto_recovery: false, ..config(1, 10) });
    off.submit(k("r"), Priority::High, now()).unwrap();
    assert_eq!(off.session_ended(&k("r"), SessionState::Crashed, 5), Some(Outcome::Ended));
}

#[test]
fn estimates_use_position_capacity_and_mean_execution_time() {
    let mut s = Scheduler::<String>::new(config(2, 100));
    for i in 0..7 {
        s.submit(format!("r{i}"), Priority::Medium, now()).unwrap();
    }
    let waits: Vec<_> = s.queue_snapshot().iter().map(|q| q.estimated_wait_ms).collect();
    assert_eq!(waits, [60_000.0, 60_000.0, 120_000.0, 120_000.0, 180_000.0]);
    s.session_ended(&k("r0"), SessionState::Completed, 1000);
    s.session_ended(&k("r1"), SessionState::Completed, 3000);
    assert_eq!(s.mean_execution_ms(), 2000.0);
    assert_eq!(s.queue_snapshot()[0].estimated_wait_ms, 2000.0);
    assert_eq!(s.queue_wait_ms(now() + Duration::from_millis(500)), 500.0);
}

#[test]
fn throttling_pauses_admission_until_due() {
    let mut s = Scheduler::<String>::new(config(2, 10));
    assert!(s.throttle(now() + Duration::from_secs(5)));
    assert!(!s.throttle(now() + Duration::from_secs(1)), "an earlier end does not shorten it");
    assert_eq!(s.submit(k("a"), Priority::Low, now()), Ok(Admission::Queued { position: 1, queue_length: 1 }));
    assert!(!s.resume_if_due(now()));
    assert!(s.resume_if_due(now() + Duration::from_secs(5)));
    assert_eq!(s.admit_next(), ["a"]);
    let mut ignoring = Scheduler::<String>::new(PoolConfig { respect_rate_limits: false, ..config(1, 10) });
    assert!(!ignoring.throttle(now() + Duration::from_secs(5)));
}

#[test]
fn forty_thousand_queued_requests_are_served_by_priority_then_arrival() {
    let mut s = Scheduler::<String>::new(config(1, 100_000));
    for i in 0..40_000 {
        s.submit(format!("r{i}"), Priority::ALL[i % 4], now()).unwrap();
    }
    let snapshot = s.queue_snapshot();
    assert_eq!(snapshot.len(), 39_999);
    let rank = |p: Priority| Priority::ALL.iter().position(|q| *q == p).unwrap();
    assert!(snapshot.windows(2).all(|w| {
        let (a, b) = (&w[0], &w[1]);
        let seq = |q: &QueuedInfo<String>| q.key[1..].parse::<usize>().unwrap();
        rank(a.priority) < rank(b.priority) || (a.priority == b.priority && seq(a) < seq(b))
    }));
}
