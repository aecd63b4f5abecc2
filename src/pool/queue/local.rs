//! The in-process [`RequestQueue`]: one mutex over the whole state, so each operation
//! is atomic as a Redis script is, and a [`Clock`] that tests can drive.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tokio::sync::broadcast;

use super::*;

/// Where lease expiry is read from.
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        let since = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or(Duration::ZERO);
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new(now_ms: u64) -> Self {
        Self(AtomicU64::new(now_ms))
    }

    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(lease_ms(by), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Debug)]
struct Lease {
    host: String,
    expires_ms: u64,
}

#[derive(Debug)]
struct Record {
    request: QueuedRequest,
    /// Its score at the first push: where a lapsed lease puts it back.
    place: u64,
    /// Its score while queued.
    queued_at_score: Option<u64>,
    enqueued_ms: u64,
    lease: Option<Lease>,
    cancel_requested: bool,
    /// Set by [`RequestQueue::started`]; kept across lapse and release.
    note: Option<String>,
}

/// An announced host.
#[derive(Debug)]
struct Member {
    capacity: u32,
    expires_ms: u64,
}

#[derive(Debug, Default)]
struct State {
    order: BTreeMap<u64, String>,
    records: HashMap<String, Record>,
    pushes: u64,
    releases: u64,
    durations: VecDeque<u64>,
    /// Queued requests of each priority class, for positions in O(1).
    per_class: [usize; 4],
    hosts: HashMap<String, Member>,
    /// How requests ended, for lookup: id -> (when, by the queue's clock; its terminal event).
    ended: HashMap<String, (u64, QueueEvent)>,
    /// (when, id) of `ended`: oldest first, ties by id, as in Redis's sorted set.
    ended_order: BTreeSet<(u64, String)>,
}

impl State {
    fn enqueue(&mut self, at: u64, id: String) {
        self.order.insert(at, id);
        if let Some(n) = self.class_count(at) {
            *n += 1;
        }
    }

    fn dequeue(&mut self, at: u64) -> Option<String> {
        let id = self.order.remove(&at)?;
        if let Some(n) = self.class_count(at) {
            *n -= 1;
        }
        Some(id)
    }

    /// Forgets the hosts whose announcement lapsed by `now`.
    fn prune_hosts(&mut self, now: u64) {
        self.hosts.retain(|_, m| m.expires_ms > now);
    }

    /// Remembers how `event`'s request ended, at `now`.
    fn record_outcome(&mut self, now: u64, event: &QueueEvent) {
        let id = event.id().to_owned();
        self.forget_outcome(&id);
        self.ended_order.insert((now, id.clone()));
        self.ended.insert(id, (now, event.clone()));
    }

    fn forget_outcome(&mut self, id: &str) {
        if let Some((at, _)) = self.ended.remove(id) {
            self.ended_order.remove(&(at, id.to_owned()));
        }
    }

    /// Forgets, oldest first and at most [`RESULTS_PRUNED_PER_CALL`], the outcomes older
    /// than `kept_ms` or beyond the newest `limit`.
    fn prune_outcomes(&mut self, now: u64, kept_ms: u64, limit: usize) {
        for _ in 0..RESULTS_PRUNED_PER_CALL {
            let Some((at, _)) = self.ended_order.first() else { return };
            if at.saturating_add(kept_ms) > now && self.ended_order.len() <= limit {
                return;
            }
            if let Some((_, id)) = self.ended_order.pop_first() {
                self.ended.remove(&id);
            }
        }
    }

    fn class_count(&mut self, at: u64) -> Option<&mut usize> {
        let class = score::class(score::priority_of(at)?);
        self.per_class.get_mut(usize::try_from(class).ok()?)
    }
}

/// The queue of one process. Clones share it.
#[derive(Clone)]
pub struct LocalQueue {
    state: Arc<Mutex<State>>,
    clock: Arc<dyn Clock>,
    events: broadcast::Sender<QueueEvent>,
    /// How long, and how many, outcomes are remembered for lookup.
    results_kept_ms: u64,
    results_limit: usize,
}

impl Default for LocalQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalQueue {
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        let (events, _) = broadcast::channel(1024);
        Self { state: Arc::default(), clock, events, results_kept_ms: RESULTS_KEPT_MS, results_limit: RESULTS_LIMIT }
    }

    /// Remembers how requests ended for `kept` (at least 1 ms), the newest `limit` of
    /// them, instead of [`RESULTS_KEPT_MS`] and [`RESULTS_LIMIT`].
    pub fn keeping_results(self, kept: Duration, limit: usize) -> Self {
        Self { results_kept_ms: lease_ms(kept), results_limit: limit, ..self }
    }

    fn publish(&self, event: QueueEvent) {
        // No subscriber is not an error: nobody is waiting for this request's end.
        let _ = self.events.send(event);
    }

    /// Remembers how the request ended, forgets outdated outcomes, and publishes `event`.
    fn conclude(&self, s: &mut State, now: u64, event: QueueEvent) {
        s.record_outcome(now, &event);
        s.prune_outcomes(now, self.results_kept_ms, self.results_limit);
        self.publish(event);
    }

    fn push_now(&self, request: QueuedRequest, limit: Option<usize>) -> Result<Pushed, QueueError> {
        check_request(&request)?;
        let now = self.clock.now_ms();
        let mut s = self.state.lock();
        if s.records.contains_key(&request.id) {
            return Err(QueueError::Duplicate(request.id));
        }
        if limit.is_some_and(|limit| s.order.len() >= limit) {
            return Err(QueueError::Full { queued: s.order.len() });
        }
        // The id is live again: how it ended before is history.
        s.forget_outcome(&request.id);
        s.pushes += 1;
        let place = score::pushed(request.priority, s.pushes);
        s.enqueue(place, request.id.clone());
        // A push goes behind everything of its class and those ahead of it.
        let position = s.per_class[..=score::class(request.priority) as usize].iter().sum();
        let (id, priority) = (request.id.clone(), request.priority);
        let record = Record {
            request,
            place,
            queued_at_score: Some(place),
            enqueued_ms: now,
            lease: None,
            cancel_requested: false,
            note: None,
        };
        s.records.insert(id.clone(), record);
        let pushed = Pushed { position, queue_length: s.order.len() };
        self.publish(QueueEvent::Queued { id, priority });
        Ok(pushed)
    }

    fn take_now(&self, host: &str, lease: Duration) -> Option<Taken> {
        let now = self.clock.now_ms();
        let mut s = self.state.lock();
        let at = *s.order.keys().next()?;
        let id = s.dequeue(at)?;
        let record = s.records.get_mut(&id)?;
        let expires_ms = now.saturating_add(lease_ms(lease));
        record.queued_at_score = None;
        record.lease = Some(Lease { host: host.to_owned(), expires_ms });
        let taken = Taken {
            request: record.request.clone(),
            enqueued_at: time_from_ms(record.enqueued_ms),
            lease_expires_at: time_from_ms(expires_ms),
            note: record.note.clone(),
        };
        self.publish(QueueEvent::Allocated { id, host: host.to_owned(), attempt: taken.request.attempt });
        Some(taken)
    }

    /// The record of `id` if `host` holds a live lease on it.
    fn held<'s>(s: &'s mut State, host: &str, id: &str, now: u64) -> Option<&'s mut Record> {
        s.records.get_mut(id).filter(|r| r.lease.as_ref().is_some_and(|l| l.host == host && l.expires_ms > now))
    }

    fn renew_now(&self, host: &str, id: &str, lease: Duration) -> Renewal {
        let now = self.clock.now_ms();
        let mut s = self.state.lock();
        let cancel_requested = s.records.get(id).is_some_and(|r| r.cancel_requested);
        let held = match Self::held(&mut s, host, id, now).and_then(|r| r.lease.as_mut()) {
            Some(l) => {
                l.expires_ms = now.saturating_add(lease_ms(lease));
                true
            }
            None => false,
        };
        Renewal { held, cancel_requested }
    }

    fn started_now(&self, host: &str, id: &str, detail: &str) -> Result<(), QueueError> {
        let now = self.clock.now_ms();
        let mut s = self.state.lock();
        let Some(record) = Self::held(&mut s, host, id, now) else {
            return Err(QueueError::NotHolder { host: host.to_owned(), id: id.to_owned() });
        };
        record.note = Some(detail.to_owned());
        let attempt = record.request.attempt;
        self.publish(QueueEvent::Started { id: id.to_owned(), host: host.to_owned(), attempt, detail: detail.to_owned() });
        Ok(())
    }

    fn finish_now(&self, host: &str, id: &str, outcome: FinishOutcome, execution_ms: u64) -> Result<(), QueueError> {
        let now = self.clock.now_ms();
        let mut s = self.state.lock();
        if Self::held(&mut s, host, id, now).is_none() {
            return Err(QueueError::NotHolder { host: host.to_owned(), id: id.to_owned() });
        }
        s.records.remove(id);
        s.durations.push_front(execution_ms);
        s.durations.truncate(EXECUTION_SAMPLES);
        let (id, host) = (id.to_owned(), host.to_owned());
        let event = match outcome {
            FinishOutcome::Completed(detail) => QueueEvent::Completed { id, host, detail },
            FinishOutcome::Failed(detail) => QueueEvent::Failed { id, host: Some(host), detail },
            FinishOutcome::Cancelled => QueueEvent::Cancelled { id },
        };
        self.conclude(&mut s, now, event);
        Ok(())
    }

    fn release_now(&self, host: &str, id: &str, note: Option<&str>) -> Result<(), QueueError> {
        let now = self.clock.now_ms();
        let mut s = self.state.lock();
        let Some((priority, cancel_requested)) = Self::held(&mut s, host, id, now).map(|r| (r.request.priority, r.cancel_requested))
        else {
            return Err(QueueError::NotHolder { host: host.to_owned(), id: id.to_owned() });
        };
        if cancel_requested {
            s.records.remove(id);
            self.conclude(&mut s, now, QueueEvent::Cancelled { id: id.to_owned() });
            return Ok(());
        }
        s.releases += 1;
        let at = score::released(priority, s.releases);
        s.enqueue(at, id.to_owned());
        if let Some(r) = s.records.get_mut(id) {
            r.lease = None;
            r.queued_at_score = Some(at);
            if let Some(note) = note {
                r.note = Some(note.to_owned());
            }
        }
        self.publish(QueueEvent::Queued { id: id.to_owned(), priority });
        Ok(())
    }

    fn requeue_expired_now(&self, max_attempts: u32) -> Vec<Expired> {
        let now = self.clock.now_ms();
        let mut s = self.state.lock();
        s.prune_outcomes(now, self.results_kept_ms, self.results_limit);
        let mut lapsed: Vec<(u64, String)> = s
            .records
            .values()
            .filter_map(|r| r.lease.as_ref().filter(|l| l.expires_ms <= now).map(|l| (l.expires_ms, r.request.id.clone())))
            .collect();
        // Oldest expiry first, as Redis's sorted set of leases gives them.
        lapsed.sort();
        let mut out = Vec::with_capacity(lapsed.len());
        for (_, id) in lapsed {
            let Some(mut record) = s.records.remove(&id) else { continue };
            let host = record.lease.take().map(|l| l.host).unwrap_or_default();
            let attempts = record.request.attempt;
            let fate = if record.cancel_requested {
                self.conclude(&mut s, now, QueueEvent::Cancelled { id: id.clone() });
                ExpiredFate::Cancelled
            } else if attempts >= max_attempts {
                let detail = format!("gave up after {attempts} attempts: the lease of host {host} lapsed");
                self.conclude(&mut s, now, QueueEvent::Failed { id: id.clone(), host: None, detail });
                ExpiredFate::Failed { attempts }
            } else {
                record.request.attempt += 1;
                record.queued_at_score = Some(record.place);
                s.enqueue(record.place, id.clone());
                let attempt = record.request.attempt;
                s.records.insert(id.clone(), record);
                self.publish(QueueEvent::Requeued { id: id.clone(), attempt });
                ExpiredFate::Requeued { attempt }
            };
            out.push(Expired { id, host, fate });
        }
        out
    }

    fn cancel_now(&self, id: &str) -> CancelResult {
        let now = self.clock.now_ms();
        let mut s = self.state.lock();
        let Some(record) = s.records.get_mut(id) else { return CancelResult::Unknown };
        match record.queued_at_score {
            Some(at) => {
                s.dequeue(at);
                s.records.remove(id);
                self.conclude(&mut s, now, QueueEvent::Cancelled { id: id.to_owned() });
                CancelResult::Removed
            }
            None => {
                record.cancel_requested = true;
                CancelResult::Flagged
            }
        }
    }

    fn announce_now(&self, host: &str, capacity: u32, ttl: Duration) -> Result<(), QueueError> {
        check_host(host)?;
        let now = self.clock.now_ms();
        let mut s = self.state.lock();
        s.prune_hosts(now);
        s.hosts.insert(host.to_owned(), Member { capacity, expires_ms: now.saturating_add(lease_ms(ttl)) });
        Ok(())
    }

    fn leave_now(&self, host: &str) {
        self.state.lock().hosts.remove(host);
    }

    fn lookup_now(&self, id: &str) -> RequestState {
        let now = self.clock.now_ms();
        let mut s = self.state.lock();
        s.prune_outcomes(now, self.results_kept_ms, self.results_limit);
        if let Some(record) = s.records.get(id) {
            let attempt = record.request.attempt;
            if let Some(at) = record.queued_at_score {
                return RequestState::Queued { position: s.order.range(..at).count() + 1, attempt };
            }
            if let Some(lease) = &record.lease {
                return RequestState::Leased { host: lease.host.clone(), attempt };
            }
        }
        match s.ended.get(id) {
            // One the bounded pruning did not reach yet is as good as forgotten.
            Some((at, event)) if at.saturating_add(self.results_kept_ms) > now => {
                RequestState::Finished { event: event.clone() }
            }
            _ => RequestState::Unknown,
        }
    }

    fn snapshot_now(&self) -> QueueSnapshot {
        let now = self.clock.now_ms();
        let mut s = self.state.lock();
        s.prune_hosts(now);
        let s = &*s;
        let queued = s
            .order
            .values()
            .filter_map(|id| s.records.get(id))
            .map(|r| QueueEntry {
                id: r.request.id.clone(),
                priority: r.request.priority,
                attempt: r.request.attempt,
                enqueued_at: time_from_ms(r.enqueued_ms),
            })
            .collect();
        let leased = s.records.values().filter(|r| r.lease.is_some()).count();
        let mean_execution_ms = (!s.durations.is_empty())
            .then(|| s.durations.iter().map(|&ms| ms as f64).sum::<f64>() / s.durations.len() as f64);
        let capacity = s.hosts.values().map(|m| m.capacity as usize).sum();
        QueueSnapshot { queued, leased, mean_execution_ms, hosts: s.hosts.len(), capacity }
    }
}

impl RequestQueue for LocalQueue {
    fn push_within(&self, request: QueuedRequest, limit: Option<usize>) -> QueueFuture<'_, Pushed> {
        Box::pin(async move { self.push_now(request, limit) })
    }

    fn take<'a>(&'a self, host: &'a str, lease: Duration) -> QueueFuture<'a, Option<Taken>> {
        Box::pin(async move { Ok(self.take_now(host, lease)) })
    }

    fn renew<'a>(&'a self, host: &'a str, id: &'a str, lease: Duration) -> QueueFuture<'a, Renewal> {
        Box::pin(async move { Ok(self.renew_now(host, id, lease)) })
    }

    fn started<'a>(&'a self, host: &'a str, id: &'a str, detail: &'a str) -> QueueFuture<'a, ()> {
        Box::pin(async move { self.started_now(host, id, detail) })
    }

    fn finish<'a>(&'a self, host: &'a str, id: &'a str, outcome: FinishOutcome, execution_ms: u64) -> QueueFuture<'a, ()> {
        Box::pin(async move { self.finish_now(host, id, outcome, execution_ms) })
    }

    fn release_with_note<'a>(&'a self, host: &'a str, id: &'a str, note: Option<&'a str>) -> QueueFuture<'a, ()> {
        Box::pin(async move { self.release_now(host, id, note) })
    }

    fn requeue_expired(&self, max_attempts: u32) -> QueueFuture<'_, Vec<Expired>> {
        Box::pin(async move { Ok(self.requeue_expired_now(max_attempts)) })
    }

    fn cancel<'a>(&'a self, id: &'a str) -> QueueFuture<'a, CancelResult> {
        Box::pin(async move { Ok(self.cancel_now(id)) })
    }

    fn snapshot(&self) -> QueueFuture<'_, QueueSnapshot> {
        Box::pin(async move { Ok(self.snapshot_now()) })
    }

    fn lookup<'a>(&'a self, id: &'a str) -> QueueFuture<'a, RequestState> {
        Box::pin(async move { Ok(self.lookup_now(id)) })
    }

    fn announce<'a>(&'a self, host: &'a str, capacity: u32, ttl: Duration) -> QueueFuture<'a, ()> {
        Box::pin(async move { self.announce_now(host, capacity, ttl) })
    }

    fn leave<'a>(&'a self, host: &'a str) -> QueueFuture<'a, ()> {
        Box::pin(async move {
            self.leave_now(host);
            Ok(())
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<QueueEvent> {
        self.events.subscribe()
    }
}

#[cfg(test)]
mod tests;
