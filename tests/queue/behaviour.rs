//! The queue's behaviour, written once against `dyn RequestQueue`: `main.rs` runs each
//! test on the in-process queue and on Redis. A "host" is a queue handle of its own
//! (for Redis, its own connection), all on one shared queue.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use claude_session_spawner::pool::queue::*;
use claude_session_spawner::Priority;
use tokio::sync::broadcast;

pub type Open = Box<dyn Fn() -> Pin<Box<dyn Future<Output = Arc<dyn RequestQueue>> + Send>> + Send + Sync>;

pub struct Harness {
    open: Open,
    /// Whatever must outlive the test (the Redis server).
    _keep: Box<dyn Send + Sync>,
    /// The queue's clock, when the test moves it.
    clock: Option<Arc<ManualClock>>,
    /// How long and how many the queue keeps ended requests' results.
    results_kept: Duration,
    results_limit: usize,
}

impl Harness {
    pub fn new(open: Open, keep: impl Send + Sync + 'static) -> Self {
        Self {
            open,
            _keep: Box::new(keep),
            clock: None,
            results_kept: Duration::from_millis(RESULTS_KEPT_MS),
            results_limit: RESULTS_LIMIT,
        }
    }

    /// The queue was opened keeping results for `kept`, at most `limit` of them.
    pub fn with_results(self, kept: Duration, limit: usize) -> Self {
        Self { results_kept: kept, results_limit: limit, ..self }
    }

    pub fn with_manual_clock(self, clock: Arc<ManualClock>) -> Self {
        Self { clock: Some(clock), ..self }
    }

    pub async fn host(&self) -> Arc<dyn RequestQueue> {
        (self.open)().await
    }

    /// Whether the queue's time passes only by [`Harness::pass`].
    fn manual(&self) -> bool {
        self.clock.is_some()
    }

    /// Moves a manual clock on by `by`; a real one moves by itself, and the test waits
    /// for it (with a deadline) instead.
    fn pass(&self, by: Duration) {
        if let Some(clock) = &self.clock {
            clock.advance(by);
        }
    }
}

/// Long enough never to lapse during a test.
const LONG: Duration = Duration::from_secs(60);
/// Short enough to lapse quickly, by the queue's clock.
const SHORT: Duration = Duration::from_millis(200);
const DEADLINE: Duration = Duration::from_secs(10);

pub fn request(id: &str, priority: Priority) -> QueuedRequest {
    QueuedRequest { id: id.into(), priority, payload: format!(r#"{{"requestId":"{id}","config":{{}}}}"#), attempt: 1 }
}

async fn ids(q: &dyn RequestQueue) -> Vec<String> {
    q.snapshot().await.unwrap().queued.into_iter().map(|e| e.id).collect()
}

/// Asks `check` every 10 ms until it gives `Ok`, failing the test after the deadline
/// with `what` and the last `Err` (the state seen). Leases, host ttls and kept results
/// run out by the queue's clock (Redis's `TIME`), which has no event to wait for.
async fn poll<T, Fut>(what: &str, mut check: impl FnMut() -> Fut) -> T
where
    Fut: Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        match check().await {
            Ok(value) => return value,
            Err(seen) => assert!(started.elapsed() < DEADLINE, "no {what} within {DEADLINE:?}: {seen}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Calls `requeue_expired` until it reports something.
pub async fn until_expired(q: &dyn RequestQueue, max_attempts: u32) -> Vec<Expired> {
    poll("lapsed lease", || async move {
        let expired = q.requeue_expired(max_attempts).await.unwrap();
        if expired.is_empty() {
            Err("none".into())
        } else {
            Ok(expired)
        }
    })
    .await
}

/// A subscription read per request: events about other requests wait their turn.
struct Events {
    receiver: broadcast::Receiver<QueueEvent>,
    held: Vec<QueueEvent>,
}

impl Events {
    fn of(q: &dyn RequestQueue) -> Self {
        Self { receiver: q.subscribe(), held: Vec::new() }
    }

    /// The next event about `id`, failing after the deadline.
    async fn next_about(&mut self, id: &str) -> QueueEvent {
        if let Some(i) = self.held.iter().position(|e| e.id() == id) {
            return self.held.remove(i);
        }
        let wait = async {
            loop {
                match self.receiver.recv().await {
                    Ok(event) if event.id() == id => return event,
                    Ok(event) => self.held.push(event),
                    Err(e) => panic!("events: {e}"),
                }
            }
        };
        tokio::time::timeout(DEADLINE, wait).await.unwrap_or_else(|_| panic!("no event about {id} within {DEADLINE:?}"))
    }
}

pub async fn priority_then_arrival(h: Harness) {
    let q = h.host().await;
    let pushes = [
        ("low", Priority::Low),
        ("medium", Priority::Medium),
        ("critical", Priority::Critical),
        ("high", Priority::High),
        ("high2", Priority::High),
        ("critical2", Priority::Critical),
    ];
    let mut positions = Vec::new();
    for (id, p) in pushes {
        let pushed = q.push(request(id, p)).await.unwrap();
        positions.push((pushed.position, pushed.queue_length));
    }
    assert_eq!(positions, [(1, 1), (1, 2), (1, 3), (2, 4), (3, 5), (2, 6)]);
    let mut taken = Vec::new();
    while let Some(t) = q.take("h1", LONG).await.unwrap() {
        assert_eq!(t.request, request(&t.request.id, t.request.priority), "payload and attempt travel intact");
        taken.push(t.request.id);
    }
    assert_eq!(taken, ["critical", "critical2", "high", "high2", "medium", "low"]);
}

pub async fn duplicate_ids_are_refused_while_queued_or_leased(h: Harness) {
    let q = h.host().await;
    q.push(request("a", Priority::Low)).await.unwrap();
    assert_eq!(q.push(request("a", Priority::High)).await, Err(QueueError::Duplicate("a".into())));
    q.take("h1", LONG).await.unwrap().unwrap();
    assert_eq!(q.push(request("a", Priority::Low)).await, Err(QueueError::Duplicate("a".into())));
    q.finish("h1", "a", FinishOutcome::Completed("{}".into()), 5).await.unwrap();
    assert_eq!(q.push(request("a", Priority::Low)).await.unwrap().position, 1, "a finished id may come again");
}

pub async fn a_push_within_a_limit_is_refused_once_that_many_wait_even_from_hosts_at_once(h: Harness) {
    let q = h.host().await;
    q.push_within(request("a", Priority::Low), Some(2)).await.unwrap();
    q.push_within(request("b", Priority::Low), Some(2)).await.unwrap();
    assert_eq!(q.push_within(request("c", Priority::Critical), Some(2)).await, Err(QueueError::Full { queued: 2 }));
    assert_eq!(q.push_within(request("a", Priority::Low), Some(0)).await, Err(QueueError::Duplicate("a".into())));
    // Leased requests are not waiting.
    q.take("h1", LONG).await.unwrap().unwrap();
    assert_eq!(q.push_within(request("c", Priority::Low), Some(2)).await.unwrap().queue_length, 2);
    assert_eq!(q.push_within(request("d", Priority::Low), Some(0)).await, Err(QueueError::Full { queued: 2 }));

    // Eight hosts push five each against a limit of 12 (2 already waiting): exactly 10 get in.
    let mut pushers = Vec::new();
    for t in 0..8 {
        let host_queue = h.host().await;
        pushers.push(tokio::spawn(async move {
            let mut results = Vec::new();
            for i in 0..5 {
                results.push(host_queue.push_within(request(&format!("p{t}-{i}"), Priority::Medium), Some(12)).await);
            }
            results
        }));
    }
    let mut accepted = 0;
    for pusher in pushers {
        for result in pusher.await.unwrap() {
            match result {
                Ok(_) => accepted += 1,
                Err(QueueError::Full { queued }) => assert_eq!(queued, 12),
                Err(e) => panic!("unexpected {e}"),
            }
        }
    }
    assert_eq!(accepted, 10);
    assert_eq!(q.snapshot().await.unwrap().queued.len(), 12);
}

pub async fn concurrent_hosts_never_take_the_same_request(h: Harness) {
    let q = h.host().await;
    for i in 0..50 {
        q.push(request(&format!("r{i:02}"), Priority::ALL[i % 4])).await.unwrap();
    }
    let mut takers = Vec::new();
    for t in 0..8 {
        let host_queue = h.host().await;
        takers.push(tokio::spawn(async move {
            let host = format!("host{t}");
            let mut mine = Vec::new();
            while let Some(taken) = host_queue.take(&host, LONG).await.unwrap() {
                // Only the holder may finish: a second taker of the same id would fail here.
                host_queue.finish(&host, &taken.request.id, FinishOutcome::Completed(String::new()), 1).await.unwrap();
                mine.push(taken.request.id);
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for taker in takers {
        all.extend(taker.await.unwrap());
    }
    let distinct: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 50, "every request taken exactly once: {all:?}");
    assert_eq!(distinct.len(), 50);
    let snapshot = q.snapshot().await.unwrap();
    assert_eq!((snapshot.queued.len(), snapshot.leased), (0, 0));
}

pub async fn a_lapsed_lease_can_neither_renew_nor_finish(h: Harness) {
    let (h1, h2) = (h.host().await, h.host().await);
    h1.push(request("a", Priority::Medium)).await.unwrap();
    let taken = h1.take("h1", SHORT).await.unwrap().unwrap();
    assert!(taken.lease_expires_at > taken.enqueued_at);
    let renewal = h2.renew("h2", "a", SHORT).await.unwrap();
    assert_eq!(renewal, Renewal { held: false, cancel_requested: false }, "h2 never held it");
    let not_h2 = Err(QueueError::NotHolder { host: "h2".into(), id: "a".into() });
    assert_eq!(h2.finish("h2", "a", FinishOutcome::Completed(String::new()), 1).await, not_h2);
    assert_eq!(h2.release("h2", "a").await, not_h2);
    // h1 stops renewing: its lease lapses by the queue's clock.
    let expired = until_expired(&*h2, 3).await;
    assert_eq!(expired, [Expired { id: "a".into(), host: "h1".into(), fate: ExpiredFate::Requeued { attempt: 2 } }]);
    assert!(!h1.renew("h1", "a", LONG).await.unwrap().held, "a lapsed lease is not renewed");
    assert_eq!(
        h1.finish("h1", "a", FinishOutcome::Completed(String::new()), 1).await,
        Err(QueueError::NotHolder { host: "h1".into(), id: "a".into() })
    );
    let again = h2.take("h2", LONG).await.unwrap().unwrap();
    assert_eq!((again.request.id.as_str(), again.request.attempt), ("a", 2));
    assert!(h2.renew("h2", "a", LONG).await.unwrap().held);
    assert!(!h1.renew("h1", "a", LONG).await.unwrap().held, "taken over by h2");
    h2.finish("h2", "a", FinishOutcome::Completed(String::new()), 1).await.unwrap();
}

pub async fn expired_leases_requeue_at_their_place_then_fail(h: Harness) {
    let q = h.host().await;
    let mut events = Events::of(&*q);
    for id in ["a", "b", "c"] {
        q.push(request(id, Priority::Medium)).await.unwrap();
    }
    assert_eq!(q.take("h1", SHORT).await.unwrap().unwrap().request.id, "a");
    assert_eq!(q.take("h2", LONG).await.unwrap().unwrap().request.id, "b");
    q.push(request("d", Priority::Medium)).await.unwrap();
    let expired = until_expired(&*q, 2).await;
    assert_eq!(expired, [Expired { id: "a".into(), host: "h1".into(), fate: ExpiredFate::Requeued { attempt: 2 } }]);
    let snapshot = q.snapshot().await.unwrap();
    let order: Vec<_> = snapshot.queued.iter().map(|e| (e.id.as_str(), e.attempt)).collect();
    assert_eq!(order, [("a", 2), ("c", 1), ("d", 1)], "back at its original place, ahead of later arrivals");
    assert_eq!(snapshot.leased, 1);
    let retried = q.take("h3", SHORT).await.unwrap().unwrap();
    assert_eq!((retried.request.id.as_str(), retried.request.attempt), ("a", 2));
    let expired = until_expired(&*q, 2).await;
    assert_eq!(expired, [Expired { id: "a".into(), host: "h3".into(), fate: ExpiredFate::Failed { attempts: 2 } }]);
    assert_eq!(ids(&*q).await, ["c", "d"]);
    let seen: Vec<_> = [
        events.next_about("a").await,
        events.next_about("a").await,
        events.next_about("a").await,
        events.next_about("a").await,
        events.next_about("a").await,
    ]
    .into_iter()
    .map(|e| match e {
        QueueEvent::Queued { priority, .. } => format!("queued {priority}"),
        QueueEvent::Allocated { host, attempt, .. } => format!("allocated {host} {attempt}"),
        QueueEvent::Requeued { attempt, .. } => format!("requeued {attempt}"),
        QueueEvent::Failed { host: None, detail, .. } => format!("failed: {detail}"),
        other => format!("unexpected {other:?}"),
    })
    .collect();
    assert_eq!(
        seen,
        [
            "queued medium",
            "allocated h1 1",
            "requeued 2",
            "allocated h3 2",
            "failed: gave up after 2 attempts: the lease of host h3 lapsed"
        ]
    );
}

pub async fn cancel_removes_queued_and_flags_leased(h: Harness) {
    let (h1, other) = (h.host().await, h.host().await);
    let mut events = Events::of(&*h1);
    h1.push(request("running", Priority::High)).await.unwrap();
    h1.push(request("waiting", Priority::High)).await.unwrap();
    h1.take("h1", LONG).await.unwrap().unwrap();
    assert_eq!(other.cancel("waiting").await.unwrap(), CancelResult::Removed);
    assert_eq!(other.cancel("running").await.unwrap(), CancelResult::Flagged);
    assert_eq!(other.cancel("nobody").await.unwrap(), CancelResult::Unknown);
    assert_eq!(other.cancel("waiting").await.unwrap(), CancelResult::Unknown, "already gone");
    assert!(matches!(events.next_about("waiting").await, QueueEvent::Queued { .. }));
    assert_eq!(events.next_about("waiting").await, QueueEvent::Cancelled { id: "waiting".into() });
    assert_eq!(h1.renew("h1", "running", LONG).await.unwrap(), Renewal { held: true, cancel_requested: true });
    h1.finish("h1", "running", FinishOutcome::Cancelled, 3).await.unwrap();
    assert!(matches!(events.next_about("running").await, QueueEvent::Queued { .. }));
    assert!(matches!(events.next_about("running").await, QueueEvent::Allocated { .. }));
    assert_eq!(events.next_about("running").await, QueueEvent::Cancelled { id: "running".into() });
    let snapshot = h1.snapshot().await.unwrap();
    assert_eq!((snapshot.queued.len(), snapshot.leased), (0, 0));
}

pub async fn a_pending_cancel_wins_over_release_and_lapse(h: Harness) {
    let (h1, h2) = (h.host().await, h.host().await);
    let mut events = Events::of(&*h2);
    h1.push(request("released", Priority::Medium)).await.unwrap();
    h1.push(request("lapsed", Priority::Medium)).await.unwrap();
    h1.take("h1", LONG).await.unwrap().unwrap();
    h1.take("h1", SHORT).await.unwrap().unwrap();
    assert_eq!(h2.cancel("released").await.unwrap(), CancelResult::Flagged);
    assert_eq!(h2.cancel("lapsed").await.unwrap(), CancelResult::Flagged);
    h1.release("h1", "released").await.unwrap();
    let expired = until_expired(&*h2, 3).await;
    assert_eq!(expired, [Expired { id: "lapsed".into(), host: "h1".into(), fate: ExpiredFate::Cancelled }]);
    let snapshot = h2.snapshot().await.unwrap();
    assert_eq!((snapshot.queued.len(), snapshot.leased), (0, 0), "neither went back to the queue");
    for id in ["released", "lapsed"] {
        assert!(matches!(events.next_about(id).await, QueueEvent::Queued { .. }));
        assert!(matches!(events.next_about(id).await, QueueEvent::Allocated { .. }));
        assert_eq!(events.next_about(id).await, QueueEvent::Cancelled { id: id.into() });
    }
}

pub async fn release_goes_to_the_front_of_its_class(h: Harness) {
    let (h1, h2) = (h.host().await, h.host().await);
    for (id, p) in [("m1", Priority::Medium), ("m2", Priority::Medium), ("m3", Priority::Medium)] {
        h1.push(request(id, p)).await.unwrap();
    }
    assert_eq!(h1.take("h1", SHORT).await.unwrap().unwrap().request.id, "m1");
    assert_eq!(h2.take("h2", LONG).await.unwrap().unwrap().request.id, "m2");
    h1.push(request("c", Priority::Critical)).await.unwrap();
    // m1 lapses and is back at its original place, ahead of m3.
    until_expired(&*h2, 3).await;
    assert_eq!(ids(&*h2).await, ["c", "m1", "m3"]);
    assert_eq!(
        h1.release("h1", "m2").await,
        Err(QueueError::NotHolder { host: "h1".into(), id: "m2".into() })
    );
    h2.release("h2", "m2").await.unwrap();
    let snapshot = h2.snapshot().await.unwrap();
    let order: Vec<_> = snapshot.queued.iter().map(|e| (e.id.as_str(), e.priority, e.attempt)).collect();
    assert_eq!(
        order,
        [
            ("c", Priority::Critical, 1),
            ("m2", Priority::Medium, 1),
            ("m1", Priority::Medium, 2),
            ("m3", Priority::Medium, 1)
        ],
        "ahead of its whole class, even of older requests; attempt unchanged"
    );
    assert_eq!(snapshot.leased, 0);
    assert!(!h2.renew("h2", "m2", LONG).await.unwrap().held, "released: no lease left");
}

pub async fn snapshot_shows_order_leases_and_mean_execution(h: Harness) {
    let q = h.host().await;
    // The queue's clock may be another machine's; allow for a little skew.
    let before = SystemTime::now() - Duration::from_secs(2);
    for (id, p) in [("l", Priority::Low), ("h", Priority::High), ("m", Priority::Medium), ("c", Priority::Critical)] {
        q.push(request(id, p)).await.unwrap();
    }
    let after = SystemTime::now() + Duration::from_secs(2);
    let snapshot = q.snapshot().await.unwrap();
    let order: Vec<_> = snapshot.queued.iter().map(|e| (e.id.as_str(), e.priority)).collect();
    assert_eq!(order, [("c", Priority::Critical), ("h", Priority::High), ("m", Priority::Medium), ("l", Priority::Low)]);
    assert!(snapshot.queued.iter().all(|e| e.attempt == 1 && e.enqueued_at > before && e.enqueued_at < after));
    assert_eq!((snapshot.leased, snapshot.mean_execution_ms), (0, None));

    q.take("h1", LONG).await.unwrap().unwrap();
    q.take("h1", LONG).await.unwrap().unwrap();
    let snapshot = q.snapshot().await.unwrap();
    assert_eq!(snapshot.queued.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["m", "l"]);
    assert_eq!(snapshot.leased, 2);
    q.finish("h1", "c", FinishOutcome::Completed(String::new()), 1000).await.unwrap();
    q.finish("h1", "h", FinishOutcome::Failed("boom".into()), 3000).await.unwrap();
    let snapshot = q.snapshot().await.unwrap();
    assert_eq!((snapshot.leased, snapshot.mean_execution_ms), (0, Some(2000.0)));

    // Only the last EXECUTION_SAMPLES count: the two above drop out.
    for i in 0..EXECUTION_SAMPLES {
        let id = format!("s{i}");
        q.push(request(&id, Priority::Critical)).await.unwrap();
        q.take("h1", LONG).await.unwrap().unwrap();
        q.finish("h1", &id, FinishOutcome::Completed(String::new()), 10).await.unwrap();
    }
    assert_eq!(q.snapshot().await.unwrap().mean_execution_ms, Some(10.0));
}

pub async fn events_reach_every_host(h: Harness) {
    let (requester, worker) = (h.host().await, h.host().await);
    let mut events = Events::of(&*requester);
    requester.push(request("ok", Priority::High)).await.unwrap();
    requester.push(request("bad", Priority::Medium)).await.unwrap();
    worker.take("worker", LONG).await.unwrap().unwrap();
    worker.take("worker", LONG).await.unwrap().unwrap();
    worker.finish("worker", "ok", FinishOutcome::Completed(r#"{"state":"completed"}"#.into()), 7).await.unwrap();
    worker.finish("worker", "bad", FinishOutcome::Failed("spawn failed: ENOENT".into()), 7).await.unwrap();
    assert_eq!(events.next_about("ok").await, QueueEvent::Queued { id: "ok".into(), priority: Priority::High });
    assert_eq!(
        events.next_about("ok").await,
        QueueEvent::Allocated { id: "ok".into(), host: "worker".into(), attempt: 1 }
    );
    assert_eq!(
        events.next_about("ok").await,
        QueueEvent::Completed { id: "ok".into(), host: "worker".into(), detail: r#"{"state":"completed"}"#.into() }
    );
    assert_eq!(events.next_about("bad").await, QueueEvent::Queued { id: "bad".into(), priority: Priority::Medium });
    assert!(matches!(events.next_about("bad").await, QueueEvent::Allocated { .. }));
    assert_eq!(
        events.next_about("bad").await,
        QueueEvent::Failed { id: "bad".into(), host: Some("worker".into()), detail: "spawn failed: ENOENT".into() }
    );
}

pub async fn started_leaves_a_note_for_the_next_attempt(h: Harness) {
    let (h1, h2) = (h.host().await, h.host().await);
    let mut events = Events::of(&*h1);
    h1.push(request("a", Priority::Medium)).await.unwrap();
    let first = h1.take("h1", SHORT).await.unwrap().unwrap();
    assert_eq!(first.note, None, "nobody started it yet");
    h1.started("h1", "a", r#"{"conversation":"c1"}"#).await.unwrap();
    h1.started("h1", "a", r#"{"conversation":"c2"}"#).await.unwrap();
    // h1 stops renewing: the next host learns what h1 said last.
    let expired = until_expired(&*h2, 3).await;
    assert_eq!(expired, [Expired { id: "a".into(), host: "h1".into(), fate: ExpiredFate::Requeued { attempt: 2 } }]);
    let second = h2.take("h2", LONG).await.unwrap().unwrap();
    assert_eq!((second.request.attempt, second.note.as_deref()), (2, Some(r#"{"conversation":"c2"}"#)));
    // Given back with a note of its own: the next taker sees that one.
    h2.started("h2", "a", r#"{"conversation":"c3"}"#).await.unwrap();
    h2.release("h2", "a").await.unwrap();
    let third = h1.take("h1", LONG).await.unwrap().unwrap();
    assert_eq!((third.request.attempt, third.note.as_deref()), (2, Some(r#"{"conversation":"c3"}"#)));
    // Released before its session said anything: the note is still the earlier one.
    h1.release("h1", "a").await.unwrap();
    let fourth = h2.take("h2", LONG).await.unwrap().unwrap();
    assert_eq!(fourth.note.as_deref(), Some(r#"{"conversation":"c3"}"#));
    // Released with a note (a hand-over): the next taker reads that one, and no
    // started event went out for it.
    h2.release_with_note("h2", "a", Some(r#"{"handedOver":true}"#)).await.unwrap();
    let fifth = h1.take("h1", LONG).await.unwrap().unwrap();
    assert_eq!((fifth.request.attempt, fifth.note.as_deref()), (2, Some(r#"{"handedOver":true}"#)));
    // Push, five takes, four releases or lapses, three started: 13 events, in order.
    let mut names = Vec::new();
    for _ in 0..13 {
        names.push(match events.next_about("a").await {
            QueueEvent::Queued { .. } => "queued",
            QueueEvent::Allocated { .. } => "allocated",
            QueueEvent::Started { .. } => "started",
            QueueEvent::Requeued { .. } => "requeued",
            other => panic!("unexpected {other:?}"),
        });
    }
    let expected = [
        "queued", "allocated", "started", "started", "requeued", "allocated", "started", "queued", "allocated",
        "queued", "allocated", "queued", "allocated",
    ];
    assert_eq!(names, expected);
}

pub async fn only_the_holder_says_started(h: Harness) {
    let (h1, h2) = (h.host().await, h.host().await);
    let mut events = Events::of(&*h2);
    let not_holder = |host: &str, id: &str| Err(QueueError::NotHolder { host: host.into(), id: id.into() });
    assert_eq!(h1.started("h1", "nobody", "x").await, not_holder("h1", "nobody"), "neither queued nor leased");
    h1.push(request("a", Priority::High)).await.unwrap();
    assert_eq!(h1.started("h1", "a", "x").await, not_holder("h1", "a"), "queued, not leased");
    h1.take("h1", SHORT).await.unwrap().unwrap();
    assert_eq!(h2.started("h2", "a", "x").await, not_holder("h2", "a"), "leased by another host");
    until_expired(&*h2, 3).await;
    assert_eq!(h1.started("h1", "a", "late").await, not_holder("h1", "a"), "its lease lapsed");
    let taken = h2.take("h2", LONG).await.unwrap().unwrap();
    assert_eq!(taken.note, None, "refused calls left no note");
    assert!(matches!(events.next_about("a").await, QueueEvent::Queued { .. }));
    assert!(matches!(events.next_about("a").await, QueueEvent::Allocated { .. }));
    assert!(matches!(events.next_about("a").await, QueueEvent::Requeued { .. }), "no started event before it");
}

pub async fn the_note_goes_with_the_request(h: Harness) {
    let q = h.host().await;
    // Finished.
    q.push(request("done", Priority::High)).await.unwrap();
    q.take("h1", LONG).await.unwrap().unwrap();
    q.started("h1", "done", "note of done").await.unwrap();
    q.finish("h1", "done", FinishOutcome::Completed("{}".into()), 5).await.unwrap();
    // Cancelled while leased.
    q.push(request("cancelled", Priority::High)).await.unwrap();
    q.take("h1", LONG).await.unwrap().unwrap();
    q.started("h1", "cancelled", "note of cancelled").await.unwrap();
    assert_eq!(q.cancel("cancelled").await.unwrap(), CancelResult::Flagged);
    q.release("h1", "cancelled").await.unwrap();
    // Failed by the queue after its last attempt.
    q.push(request("gave-up", Priority::High)).await.unwrap();
    q.take("h1", SHORT).await.unwrap().unwrap();
    q.started("h1", "gave-up", "note of gave-up").await.unwrap();
    let expired = until_expired(&*q, 1).await;
    assert_eq!(expired, [Expired { id: "gave-up".into(), host: "h1".into(), fate: ExpiredFate::Failed { attempts: 1 } }]);
    // The same ids again are new requests, without a note.
    for id in ["done", "cancelled", "gave-up"] {
        q.push(request(id, Priority::High)).await.unwrap();
        let taken = q.take("h2", LONG).await.unwrap().unwrap();
        assert_eq!((taken.request.id.as_str(), taken.note), (id, None));
    }
}

pub async fn started_and_queued_events(h: Harness) {
    let (requester, worker) = (h.host().await, h.host().await);
    let mut events = Events::of(&*requester);
    requester.push(request("a", Priority::High)).await.unwrap();
    assert_eq!(events.next_about("a").await, QueueEvent::Queued { id: "a".into(), priority: Priority::High });
    worker.take("worker", LONG).await.unwrap().unwrap();
    worker.started("worker", "a", r#"{"conversation":"c1"}"#).await.unwrap();
    worker.release("worker", "a").await.unwrap();
    assert_eq!(events.next_about("a").await, QueueEvent::Allocated { id: "a".into(), host: "worker".into(), attempt: 1 });
    assert_eq!(
        events.next_about("a").await,
        QueueEvent::Started { id: "a".into(), host: "worker".into(), attempt: 1, detail: r#"{"conversation":"c1"}"#.into() }
    );
    assert_eq!(events.next_about("a").await, QueueEvent::Queued { id: "a".into(), priority: Priority::High }, "released");

    // A lapsed lease is requeued (its own event, not queued); the next attempt's started has its attempt.
    worker.take("worker", SHORT).await.unwrap().unwrap();
    until_expired(&*requester, 3).await;
    worker.take("other", LONG).await.unwrap().unwrap();
    worker.started("other", "a", "second").await.unwrap();
    assert!(matches!(events.next_about("a").await, QueueEvent::Allocated { attempt: 1, .. }));
    assert_eq!(events.next_about("a").await, QueueEvent::Requeued { id: "a".into(), attempt: 2 });
    assert!(matches!(events.next_about("a").await, QueueEvent::Allocated { attempt: 2, .. }));
    assert_eq!(
        events.next_about("a").await,
        QueueEvent::Started { id: "a".into(), host: "other".into(), attempt: 2, detail: "second".into() }
    );

    // A release with a cancel pending is a cancel, not a queued.
    requester.push(request("b", Priority::Low)).await.unwrap();
    worker.take("worker", LONG).await.unwrap().unwrap();
    assert_eq!(requester.cancel("b").await.unwrap(), CancelResult::Flagged);
    worker.release("worker", "b").await.unwrap();
    assert_eq!(events.next_about("b").await, QueueEvent::Queued { id: "b".into(), priority: Priority::Low });
    assert!(matches!(events.next_about("b").await, QueueEvent::Allocated { .. }));
    assert_eq!(events.next_about("b").await, QueueEvent::Cancelled { id: "b".into() });
    // Nothing more about b: the next event about it is one about a later push.
    requester.push(request("b", Priority::Critical)).await.unwrap();
    assert_eq!(events.next_about("b").await, QueueEvent::Queued { id: "b".into(), priority: Priority::Critical });
}

pub async fn announced_hosts_make_up_the_capacity(h: Harness) {
    let (a, b) = (h.host().await, h.host().await);
    let hosts = |s: QueueSnapshot| (s.hosts, s.capacity);
    assert_eq!(hosts(a.snapshot().await.unwrap()), (0, 0));
    a.announce("h1", 4, LONG).await.unwrap();
    b.announce("h2", 2, LONG).await.unwrap();
    assert_eq!(hosts(a.snapshot().await.unwrap()), (2, 6));
    a.announce("h1", 8, LONG).await.unwrap();
    assert_eq!(hosts(b.snapshot().await.unwrap()), (2, 10), "announcing again refreshes, it adds no host");
    b.leave("h2").await.unwrap();
    b.leave("h2").await.unwrap();
    b.leave("nobody").await.unwrap();
    assert_eq!(hosts(a.snapshot().await.unwrap()), (1, 8));
    assert!(matches!(a.announce("", 1, LONG).await, Err(QueueError::Invalid(_))));

    // h2 comes back for a short while, and lapses by the queue's clock.
    const TTL: Duration = Duration::from_millis(500);
    let announced = Instant::now();
    b.announce("h2", 3, TTL).await.unwrap();
    let during = hosts(a.snapshot().await.unwrap());
    // On the real clock, only while the ttl cannot have run out yet.
    if h.manual() || announced.elapsed() < TTL {
        assert_eq!(during, (2, 11));
    }
    h.pass(TTL);
    let a = &a;
    poll("end of h2's ttl", || async move {
        let now = hosts(a.snapshot().await.unwrap());
        if now == (1, 8) {
            Ok(())
        } else {
            Err(format!("(hosts, capacity) {now:?}"))
        }
    })
    .await;
    // Lapsed, it may announce again; a host with no capacity counts as a host.
    b.announce("h2", 5, LONG).await.unwrap();
    b.announce("h3", 0, LONG).await.unwrap();
    assert_eq!(hosts(b.snapshot().await.unwrap()), (3, 13));
    let snapshot = b.snapshot().await.unwrap();
    assert_eq!((snapshot.queued.len(), snapshot.leased), (0, 0), "hosts are not requests");
}

/// How many results the `retention` harnesses keep.
pub const FEW_RESULTS: usize = 5;

fn finished(event: QueueEvent) -> RequestState {
    RequestState::Finished { event }
}

pub async fn lookup_follows_a_request_to_its_end(h: Harness) {
    let (requester, worker) = (h.host().await, h.host().await);
    assert_eq!(requester.lookup("nobody").await.unwrap(), RequestState::Unknown);
    requester.push(request("a", Priority::Medium)).await.unwrap();
    requester.push(request("b", Priority::High)).await.unwrap();
    requester.push(QueuedRequest { attempt: 3, ..request("c", Priority::Medium) }).await.unwrap();
    assert_eq!(requester.lookup("b").await.unwrap(), RequestState::Queued { position: 1, attempt: 1 });
    assert_eq!(requester.lookup("a").await.unwrap(), RequestState::Queued { position: 2, attempt: 1 });
    assert_eq!(worker.lookup("c").await.unwrap(), RequestState::Queued { position: 3, attempt: 3 }, "from any host");

    assert_eq!(worker.take("worker", LONG).await.unwrap().unwrap().request.id, "b");
    assert_eq!(requester.lookup("b").await.unwrap(), RequestState::Leased { host: "worker".into(), attempt: 1 });
    assert_eq!(requester.lookup("a").await.unwrap(), RequestState::Queued { position: 1, attempt: 1 });
    worker.started("worker", "b", "note").await.unwrap();
    worker.finish("worker", "b", FinishOutcome::Completed(r#"{"state":"completed"}"#.into()), 5).await.unwrap();
    assert_eq!(
        requester.lookup("b").await.unwrap(),
        finished(QueueEvent::Completed { id: "b".into(), host: "worker".into(), detail: r#"{"state":"completed"}"#.into() })
    );

    assert_eq!(worker.take("worker", LONG).await.unwrap().unwrap().request.id, "a");
    worker.finish("worker", "a", FinishOutcome::Failed("spawn failed: ENOENT".into()), 5).await.unwrap();
    assert_eq!(
        requester.lookup("a").await.unwrap(),
        finished(QueueEvent::Failed { id: "a".into(), host: Some("worker".into()), detail: "spawn failed: ENOENT".into() })
    );

    // Cancelled while queued; while leased, finished as cancelled by its host, or
    // released with the cancel pending.
    assert_eq!(requester.cancel("c").await.unwrap(), CancelResult::Removed);
    assert_eq!(requester.lookup("c").await.unwrap(), finished(QueueEvent::Cancelled { id: "c".into() }));
    for (id, release) in [("d", false), ("e", true)] {
        requester.push(request(id, Priority::Low)).await.unwrap();
        worker.take("worker", LONG).await.unwrap().unwrap();
        assert_eq!(requester.cancel(id).await.unwrap(), CancelResult::Flagged);
        assert_eq!(
            requester.lookup(id).await.unwrap(),
            RequestState::Leased { host: "worker".into(), attempt: 1 },
            "flagged, still running"
        );
        if release {
            worker.release("worker", id).await.unwrap();
        } else {
            worker.finish("worker", id, FinishOutcome::Cancelled, 5).await.unwrap();
        }
        assert_eq!(requester.lookup(id).await.unwrap(), finished(QueueEvent::Cancelled { id: id.into() }));
    }
    let snapshot = requester.snapshot().await.unwrap();
    assert_eq!((snapshot.queued.len(), snapshot.leased), (0, 0));
    assert_eq!(requester.lookup("nobody").await.unwrap(), RequestState::Unknown);
}

pub async fn lookup_after_a_lapsed_lease(h: Harness) {
    let (h1, h2) = (h.host().await, h.host().await);
    let mut events = Events::of(&*h2);
    h1.push(request("gave-up", Priority::Medium)).await.unwrap();
    h1.push(request("cancelled", Priority::Low)).await.unwrap();
    h1.take("h1", SHORT).await.unwrap().unwrap();
    h1.take("h1", SHORT).await.unwrap().unwrap();
    assert_eq!(h2.cancel("cancelled").await.unwrap(), CancelResult::Flagged);
    // Whether or not it lapsed yet: nobody requeued it.
    assert_eq!(h2.lookup("gave-up").await.unwrap(), RequestState::Leased { host: "h1".into(), attempt: 1 });

    // Lapsed after its last attempt: failed by the queue; with a cancel pending: cancelled.
    let seen = std::sync::Mutex::new(Vec::new());
    let (h2_, seen_) = (&h2, &seen);
    poll("two lapsed leases", || async move {
        let more = h2_.requeue_expired(1).await.unwrap();
        let mut all = seen_.lock().unwrap();
        all.extend(more);
        if all.len() >= 2 {
            Ok(())
        } else {
            Err(format!("{all:?}"))
        }
    })
    .await;
    let gave_up = "gave up after 1 attempts: the lease of host h1 lapsed";
    let failed = QueueEvent::Failed { id: "gave-up".into(), host: None, detail: gave_up.into() };
    assert_eq!(h2.lookup("gave-up").await.unwrap(), finished(failed.clone()));
    assert_eq!(h1.lookup("cancelled").await.unwrap(), finished(QueueEvent::Cancelled { id: "cancelled".into() }));
    // The result is what was published.
    assert!(matches!(events.next_about("gave-up").await, QueueEvent::Queued { .. }));
    assert!(matches!(events.next_about("gave-up").await, QueueEvent::Allocated { .. }));
    assert_eq!(events.next_about("gave-up").await, failed);

    // With attempts left it is queued again, at its place, with its next attempt.
    h1.push(request("again", Priority::Medium)).await.unwrap();
    h1.push(request("behind", Priority::Medium)).await.unwrap();
    h1.take("h1", SHORT).await.unwrap().unwrap();
    let expired = until_expired(&*h2, 3).await;
    assert_eq!(expired, [Expired { id: "again".into(), host: "h1".into(), fate: ExpiredFate::Requeued { attempt: 2 } }]);
    assert_eq!(h2.lookup("again").await.unwrap(), RequestState::Queued { position: 1, attempt: 2 });
    assert_eq!(h2.lookup("behind").await.unwrap(), RequestState::Queued { position: 2, attempt: 1 });
    h2.take("h2", LONG).await.unwrap().unwrap();
    assert_eq!(h1.lookup("again").await.unwrap(), RequestState::Leased { host: "h2".into(), attempt: 2 });
}

pub async fn a_push_forgets_how_the_id_ended_before(h: Harness) {
    let q = h.host().await;
    q.push(request("a", Priority::High)).await.unwrap();
    q.take("h1", LONG).await.unwrap().unwrap();
    q.finish("h1", "a", FinishOutcome::Completed("first".into()), 5).await.unwrap();
    let first = finished(QueueEvent::Completed { id: "a".into(), host: "h1".into(), detail: "first".into() });
    assert_eq!(q.lookup("a").await.unwrap(), first);
    // Live again: queued, then leased, never the old result.
    q.push(request("a", Priority::Low)).await.unwrap();
    assert_eq!(q.lookup("a").await.unwrap(), RequestState::Queued { position: 1, attempt: 1 });
    q.take("h2", LONG).await.unwrap().unwrap();
    assert_eq!(q.lookup("a").await.unwrap(), RequestState::Leased { host: "h2".into(), attempt: 1 });
    // Given back and cancelled while queued: that is its end now.
    q.release("h2", "a").await.unwrap();
    assert_eq!(q.cancel("a").await.unwrap(), CancelResult::Removed);
    assert_eq!(q.lookup("a").await.unwrap(), finished(QueueEvent::Cancelled { id: "a".into() }));
    // A push that is refused (a duplicate) forgets nothing.
    q.push(request("b", Priority::High)).await.unwrap();
    q.take("h1", LONG).await.unwrap().unwrap();
    q.finish("h1", "b", FinishOutcome::Failed("boom".into()), 5).await.unwrap();
    q.push(request("b", Priority::High)).await.unwrap();
    assert_eq!(q.push(request("b", Priority::High)).await, Err(QueueError::Duplicate("b".into())));
    assert_eq!(q.lookup("b").await.unwrap(), RequestState::Queued { position: 1, attempt: 1 });
    assert_eq!(q.cancel("b").await.unwrap(), CancelResult::Removed);
    assert_eq!(q.lookup("b").await.unwrap(), finished(QueueEvent::Cancelled { id: "b".into() }));
}

/// Results outlive the request by the retention, by the queue's clock, and not longer.
pub async fn results_are_kept_for_their_retention(h: Harness) {
    let q = h.host().await;
    let kept = h.results_kept;
    q.push(request("done", Priority::High)).await.unwrap();
    q.take("h1", LONG).await.unwrap().unwrap();
    let ended = Instant::now();
    q.finish("h1", "done", FinishOutcome::Completed("{}".into()), 5).await.unwrap();
    let done = finished(QueueEvent::Completed { id: "done".into(), host: "h1".into(), detail: "{}".into() });
    let state = q.lookup("done").await.unwrap();
    // On the real clock, only while the retention cannot have run out yet.
    if h.manual() || ended.elapsed() < kept {
        assert_eq!(state, done);
    }
    h.pass(kept - Duration::from_millis(1));
    if h.manual() {
        assert_eq!(q.lookup("done").await.unwrap(), done, "1 ms left");
        // Another request ending meanwhile prunes nothing that is still kept.
        q.push(request("later", Priority::High)).await.unwrap();
        assert_eq!(q.cancel("later").await.unwrap(), CancelResult::Removed);
        assert_eq!(q.lookup("done").await.unwrap(), done);
    }
    h.pass(Duration::from_millis(1));
    let (q_, done_) = (&q, &done);
    poll("end of the retention", || async move {
        let state = q_.lookup("done").await.unwrap();
        if state == RequestState::Unknown {
            return Ok(());
        }
        assert_eq!(&state, done_);
        Err(format!("still {state:?} after the retention of {kept:?}"))
    })
    .await;
    if h.manual() {
        assert_eq!(
            q.lookup("later").await.unwrap(),
            finished(QueueEvent::Cancelled { id: "later".into() }),
            "it ended 1 ms later: still kept"
        );
    }
    // Forgotten, the id is free and new.
    q.push(request("done", Priority::Low)).await.unwrap();
    assert_eq!(q.lookup("done").await.unwrap(), RequestState::Queued { position: 1, attempt: 1 });
}

/// However young, only the newest results are kept (ties in the same millisecond go by id).
pub async fn only_the_newest_results_are_kept(h: Harness) {
    let q = h.host().await;
    let limit = h.results_limit;
    let ids: Vec<String> = (0..limit + 3).map(|i| format!("r{i:02}")).collect();
    let ended = Instant::now();
    for id in &ids {
        q.push(request(id, Priority::Medium)).await.unwrap();
        assert_eq!(q.cancel(id).await.unwrap(), CancelResult::Removed);
    }
    let mut states = Vec::new();
    for id in &ids {
        states.push(q.lookup(id).await.unwrap());
    }
    // On the real clock, only while the retention cannot have run out yet.
    if h.manual() || ended.elapsed() < h.results_kept {
        let kept: Vec<_> = ids[3..].iter().map(|id| finished(QueueEvent::Cancelled { id: id.clone() })).collect();
        assert_eq!(states[..3], [RequestState::Unknown, RequestState::Unknown, RequestState::Unknown]);
        assert_eq!(states[3..], kept);
    }
}
