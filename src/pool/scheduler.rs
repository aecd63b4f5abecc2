//! The pool's decisions, as a state machine with no I/O: which request gets a slot,
//! in what order the queue is served, when a request is retried, when admission
//! pauses (draining, rate limits), and how long the queue is likely to wait. Both
//! the Rust [`Pool`](super::Pool) and the JavaScript `SessionPool` drive one; each
//! names requests with its own key (the request id, or a number handed out in
//! JavaScript so that nothing but a number crosses into Rust per request).
//!
//! The queue is ordered by priority weight (higher first), then arrival (first come,
//! first served): a `BTreeMap`, so enqueueing and admitting are O(log n). A slot is
//! taken when a request is admitted, before its session is even spawned, so
//! `max_concurrent_sessions` holds however many requests arrive at once.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::time::{Duration, SystemTime};

use super::config::PoolConfig;
use super::fast_hash::FastMap;
use crate::config::Priority;
use crate::status::SessionState;

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("Session pool queue is full")]
    QueueFull,
    #[error("Pool is draining")]
    Draining,
    /// The request's key, as `Debug` shows it.
    #[error("request.requestId {0} is already queued or active")]
    Duplicate(String),
}

impl PoolError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::QueueFull => "ERR_POOL_QUEUE_FULL",
            Self::Draining => "ERR_POOL_DRAINING",
            Self::Duplicate(_) => "ERR_INVALID_CONFIG",
        }
    }
}

/// What happens to a new request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// It has a slot: spawn its session now.
    Now,
    /// It waits; `position` is 1-based.
    Queued { position: usize, queue_length: usize },
}

/// What the end of a request's session means for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The session completed.
    Completed,
    /// The session ended otherwise and the request is done: no retry is due.
    Ended,
    /// Queued again (auto-recovery): `attempt` is the attempt about to be made.
    Requeued { attempt: u32 },
    /// The session ended `timeout` or `crashed` on its last allowed attempt (or while
    /// the pool drains).
    GaveUp,
}

/// A queued request, as status reports show it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedInfo<K> {
    pub key: K,
    pub priority: Priority,
    pub queued_at: SystemTime,
    /// Milliseconds.
    pub estimated_wait_ms: f64,
    /// The attempt about to be made, from 1 (more after a retry, or a host that died).
    pub attempt: u32,
}

/// An `f64` weight with a total order, highest first.
#[derive(Debug, Clone, Copy)]
struct Weight(f64);

impl PartialEq for Weight {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Weight {}
impl PartialOrd for Weight {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Weight {
    fn cmp(&self, other: &Self) -> Ordering {
        other.0.total_cmp(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Place {
    weight: Weight,
    seq: u64,
}

#[derive(Debug, Clone)]
struct Request<K> {
    key: K,
    priority: Priority,
    queued_at: SystemTime,
    seq: u64,
    /// Sessions started for it so far.
    attempts: u32,
}

/// The pool's state; `K` names a request (unique while it is queued or active).
#[derive(Debug)]
pub struct Scheduler<K = String> {
    config: PoolConfig,
    queue: BTreeMap<Place, Request<K>>,
    queued: FastMap<K, Place>,
    /// How many queued requests have each weight (positions in O(weights)).
    per_weight: BTreeMap<Weight, usize>,
    /// Requests holding a slot: being spawned or running.
    active: FastMap<K, Request<K>>,
    seq: u64,
    draining: bool,
    throttled_until: Option<SystemTime>,
    finished: u64,
    finished_ms: u64,
}

/// Until a session has finished, the mean execution time is taken to be this.
pub const DEFAULT_EXECUTION_MS: f64 = 60_000.0;

/// The wait of the request at 0-based `index` in a queue served `capacity` at a time,
/// each taking `mean_ms`: its round of the queue, times the mean execution time (the
/// contract's estimate; a shared queue's capacity is that of all its live hosts).
pub fn estimated_wait_ms(index: usize, capacity: usize, mean_ms: f64) -> f64 {
    (index / capacity.max(1) + 1) as f64 * mean_ms
}

/// Mean milliseconds requests queued at `queued_at` have waited by `now` (0 for none).
pub(crate) fn mean_wait_ms(queued_at: impl ExactSizeIterator<Item = SystemTime>, now: SystemTime) -> f64 {
    let count = queued_at.len();
    if count == 0 {
        return 0.0;
    }
    let total: f64 = queued_at.map(|at| now.duration_since(at).unwrap_or(Duration::ZERO).as_secs_f64() * 1000.0).sum();
    total / count as f64
}

/// The endings a pool with auto-recovery retries; its claim on its sessions names them,
/// so a recovery manager leaves those endings to it.
pub const RETRIED_STATES: &[SessionState] = &[SessionState::Timeout, SessionState::Crashed];

/// Who restarts a pool's sessions: the pool, when it retries (`auto_recovery`).
pub(crate) fn pool_restarter(auto_recovery: bool) -> Option<crate::notice::Restarter> {
    auto_recovery.then_some(crate::notice::Restarter { owner: "pool", states: RETRIED_STATES })
}

impl<K: Clone + Eq + Hash + Debug> Scheduler<K> {
    pub fn new(config: PoolConfig) -> Self {
        Self {
            config,
            queue: BTreeMap::new(),
            queued: FastMap::default(),
            per_weight: BTreeMap::new(),
            active: FastMap::default(),
            seq: 0,
            draining: false,
            throttled_until: None,
            finished: 0,
            finished_ms: 0,
        }
    }

    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    fn weight(&self, priority: Priority) -> Weight {
        Weight(self.config.priority_weights.of(priority))
    }

    fn can_admit(&self) -> bool {
        !self.draining && self.throttled_until.is_none() && self.active.len() < self.config.max_concurrent_sessions
    }

    /// A new request: a slot now, a place in the queue, or a refusal.
    pub fn submit(&mut self, key: K, priority: Priority, queued_at: SystemTime) -> Result<Admission, PoolError> {
        if self.queued.contains_key(&key) || self.active.contains_key(&key) {
            return Err(PoolError::Duplicate(format!("{key:?}")));
        }
        if self.draining {
            return Err(PoolError::Draining);
        }
        if self.queue.is_empty() && self.can_admit() {
            self.seq += 1;
            self.take_slot(Request { key, priority, queued_at, seq: self.seq, attempts: 0 });
            return Ok(Admission::Now);
        }
        if self.queue.len() >= self.config.max_queue_size {
            return Err(PoolError::QueueFull);
        }
        self.seq += 1;
        let weight = self.weight(priority);
        // Everything of a higher or equal weight is ahead of a newcomer.
        let position = self.per_weight.range(..=weight).map(|(_, n)| n).sum::<usize>() + 1;
        self.enqueue(Request { key, priority, queued_at, seq: self.seq, attempts: 0 });
        Ok(Admission::Queued { position, queue_length: self.queue.len() })
    }

    fn enqueue(&mut self, request: Request<K>) {
        let weight = self.weight(request.priority);
        let place = Place { weight, seq: request.seq };
        *self.per_weight.entry(weight).or_default() += 1;
        self.queued.insert(request.key.clone(), place);
        self.queue.insert(place, request);
    }

    fn dequeue(&mut self, place: Place) -> Option<Request<K>> {
        let request = self.queue.remove(&place)?;
        self.queued.remove(&request.key);
        if let Some(n) = self.per_weight.get_mut(&place.weight) {
            *n -= 1;
            if *n == 0 {
                self.per_weight.remove(&place.weight);
            }
        }
        Some(request)
    }

    fn take_slot(&mut self, mut request: Request<K>) {
        request.attempts += 1;
        self.active.insert(request.key.clone(), request);
    }

    /// Requests that get a slot now, highest priority first: spawn their sessions.
    pub fn admit_next(&mut self) -> Vec<K> {
        let mut admitted = Vec::new();
        while self.can_admit() {
            let Some((&place, _)) = self.queue.first_key_value() else { break };
            let request = self.dequeue(place).expect("the first place is queued");
            admitted.push(request.key.clone());
            self.take_slot(request);
        }
        admitted
    }

    /// The request's session could not be started: its slot is free again.
    pub fn spawn_failed(&mut self, key: &K) -> bool {
        self.active.remove(key).is_some()
    }

    /// The request's session ended: its slot is free; what becomes of the request.
    /// `None` for a request that holds no slot.
    pub fn session_ended(&mut self, key: &K, state: SessionState, execution_ms: u64) -> Option<Outcome> {
        let request = self.active.remove(key)?;
        self.finished += 1;
        self.finished_ms += execution_ms;
        let recoverable = RETRIED_STATES.contains(&state);
        Some(if state == SessionState::Completed {
            Outcome::Completed
        } else if !recoverable || !self.config.auto_recovery {
            Outcome::Ended
        } else if request.attempts < self.config.max_request_attempts && !self.draining {
            let attempt = request.attempts + 1;
            // Back at its priority, in its original place.
            self.enqueue(request);
            Outcome::Requeued { attempt }
        } else {
            Outcome::GaveUp
        })
    }

    /// Removes a queued request; false when it is not queued.
    pub fn cancel(&mut self, key: &K) -> bool {
        match self.queued.get(key).copied() {
            Some(place) => self.dequeue(place).is_some(),
            None => false,
        }
    }

    /// Whether the request waits in the queue.
    pub fn is_queued(&self, key: &K) -> bool {
        self.queued.contains_key(key)
    }

    /// Whether the request holds a slot (its session is being spawned or runs).
    pub fn is_active(&self, key: &K) -> bool {
        self.active.contains_key(key)
    }

    /// Stops admitting for good; returns the queued requests, which are dropped (to
    /// fail).
    pub fn drain(&mut self) -> Vec<K> {
        self.draining = true;
        let keys = self.queue.values().map(|r| r.key.clone()).collect();
        self.queue.clear();
        self.queued.clear();
        self.per_weight.clear();
        keys
    }

    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// Pauses admission until `until` (a later time extends the pause). True when
    /// this started or extended it.
    pub fn throttle(&mut self, until: SystemTime) -> bool {
        if !self.config.respect_rate_limits || self.throttled_until.is_some_and(|t| t >= until) {
            return false;
        }
        self.throttled_until = Some(until);
        true
    }

    pub fn throttled_until(&self) -> Option<SystemTime> {
        self.throttled_until
    }

    /// Ends a pause that is due; true when admission resumed.
    pub fn resume_if_due(&mut self, now: SystemTime) -> bool {
        match self.throttled_until {
            Some(until) if until <= now => {
                self.throttled_until = None;
                true
            }
            _ => false,
        }
    }

    pub fn active_count(&self) -> usize {
        self.active.len()
    }

    pub fn queued_count(&self) -> usize {
        self.queue.len()
    }

    /// Mean execution time of this pool's finished sessions (60 s until one finished).
    pub fn mean_execution_ms(&self) -> f64 {
        if self.finished == 0 {
            DEFAULT_EXECUTION_MS
        } else {
            self.finished_ms as f64 / self.finished as f64
        }
    }

    /// Visits the queue in the order it will be served, with each request's estimated
    /// wait: its 1-based position in units of the capacity, times the mean execution
    /// time. One pass.
    pub fn for_each_queued(&self, mut visit: impl FnMut(&K, Priority, SystemTime, f64)) {
        self.visit_queue(|r, wait| visit(&r.key, r.priority, r.queued_at, wait));
    }

    /// The queue in the order it will be served, with estimated waits.
    pub fn queue_snapshot(&self) -> Vec<QueuedInfo<K>> {
        let mut out = Vec::with_capacity(self.queue.len());
        self.visit_queue(|r, estimated_wait_ms| {
            let (key, priority, queued_at, attempt) = (r.key.clone(), r.priority, r.queued_at, r.attempts + 1);
            out.push(QueuedInfo { key, priority, queued_at, estimated_wait_ms, attempt });
        });
        out
    }

    fn visit_queue(&self, mut visit: impl FnMut(&Request<K>, f64)) {
        let mean = self.mean_execution_ms();
        let capacity = self.config.max_concurrent_sessions.max(1);
        for (i, r) in self.queue.values().enumerate() {
            visit(r, estimated_wait_ms(i, capacity, mean));
        }
    }

    /// Mean time queued requests have waited so far, in milliseconds.
    pub fn queue_wait_ms(&self, now: SystemTime) -> f64 {
        mean_wait_ms(self.queue.values().map(|r| r.queued_at), now)
    }
}

#[cfg(test)]
mod tests;
