//! Tests of `local`.

use super::*;

fn request(id: &str, priority: Priority) -> QueuedRequest {
    QueuedRequest { id: id.into(), priority, payload: format!("{{\"id\":\"{id}\"}}"), attempt: 1 }
}

/// Lease lapse without waiting: the clock is moved past the lease.
#[test]
fn a_lease_lapses_exactly_at_its_expiry_by_the_queue_clock() {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let q = LocalQueue::with_clock(clock.clone());
    q.push_now(request("a", Priority::High), None).unwrap();
    let taken = q.take_now("h1", Duration::from_millis(100)).unwrap();
    assert_eq!(taken.lease_expires_at, time_from_ms(1_000_100));
    clock.advance(Duration::from_millis(99));
    assert!(q.renew_now("h1", "a", Duration::from_millis(100)).held, "1 ms left");
    clock.advance(Duration::from_millis(99));
    assert!(q.requeue_expired_now(3).is_empty(), "renewed to 1_000_199; now 1_000_198");
    clock.advance(Duration::from_millis(1));
    assert!(!q.renew_now("h1", "a", Duration::from_millis(100)).held);
    let expired = q.requeue_expired_now(3);
    assert_eq!(expired, [Expired { id: "a".into(), host: "h1".into(), fate: ExpiredFate::Requeued { attempt: 2 } }]);
    assert_eq!(q.snapshot_now().queued[0].enqueued_at, time_from_ms(1_000_000), "the first push's time is kept");
}

#[test]
fn outdated_results_are_forgotten_a_hundred_per_operation() {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let q = LocalQueue::with_clock(clock.clone());
    for i in 0..150 {
        let id = format!("r{i:03}");
        q.push_now(request(&id, Priority::Low), None).unwrap();
        assert_eq!(q.cancel_now(&id), CancelResult::Removed);
    }
    let kept = |q: &LocalQueue| {
        let s = q.state.lock();
        (s.ended.len(), s.ended_order.len())
    };
    assert_eq!(kept(&q), (150, 150));
    clock.advance(Duration::from_millis(RESULTS_KEPT_MS));
    assert!(q.requeue_expired_now(3).is_empty());
    assert_eq!(kept(&q), (50, 50), "the oldest hundred");
    assert_eq!(q.lookup_now("r149"), RequestState::Unknown);
    assert_eq!(kept(&q), (0, 0));
}

#[test]
fn a_zero_attempt_or_empty_id_is_refused() {
    let q = LocalQueue::new();
    assert!(matches!(q.push_now(QueuedRequest { attempt: 0, ..request("a", Priority::Low) }, None), Err(QueueError::Invalid(_))));
    assert!(matches!(q.push_now(request("", Priority::Low), None), Err(QueueError::Invalid(_))));
}
