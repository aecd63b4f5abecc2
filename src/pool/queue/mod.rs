//! A request queue that several pools (on several hosts) can share: the
//! [`RequestQueue`] trait, the types its operations exchange, and two
//! implementations with the same semantics.
//!
//! - [`LocalQueue`] (`local.rs`) keeps the queue in this process behind a mutex, with
//!   an injectable [`Clock`]: a single host, and the reference the tests hold the
//!   Redis one to.
//! - `RedisQueue` (`redis.rs`, cargo feature `redis`) keeps it in Redis, every change
//!   that touches more than one key being one Lua script, so that the hosts need no
//!   agreement of their own: Redis serialises them.
//!
//! A request is taken under a lease that its host renews while the session runs.
//! Lease expiry is measured by the queue's clock (Redis's `TIME` for Redis), never by
//! the hosts': a host whose lease lapsed can neither renew nor finish the request,
//! and must stop its session, because [`RequestQueue::requeue_expired`] (which any
//! host may call) hands the request to another host.
//!
//! This layer moves opaque payloads; what a request means (its `SessionConfig`, its
//! callbacks) is the pool's business: a [`Pool`](crate::pool::Pool) with a `queue`
//! config (or made with `Pool::on_queue`) is one host of a queue, and runs its host
//! loop on it, for Rust programs and the npm package's `SessionPool` alike.

mod local;
#[cfg(feature = "redis")]
mod redis;

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;

use crate::config::Priority;

pub use local::{Clock, LocalQueue, ManualClock, SystemClock};
#[cfg(feature = "redis")]
pub use self::redis::{RedisQueue, RedisQueueOptions};

/// How many finished sessions' execution times a queue keeps for its wait estimate.
pub const EXECUTION_SAMPLES: usize = 100;

/// How long, by the queue's clock, a queue remembers how a request ended (for
/// [`RequestQueue::lookup`]): one hour.
pub const RESULTS_KEPT_MS: u64 = 60 * 60 * 1000;

/// At most this many ended requests are remembered (the newest), whatever their age,
/// so that the store stays bounded.
pub const RESULTS_LIMIT: usize = 100_000;

/// How many outdated outcomes one operation forgets at most (the oldest first): the
/// pruning is lazy and each call's share of it bounded.
pub const RESULTS_PRUNED_PER_CALL: usize = 100;

/// The future every [`RequestQueue`] operation returns; boxed so that the trait can be
/// used as `Arc<dyn RequestQueue>`.
pub type QueueFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, QueueError>> + Send + 'a>>;

/// A request as the queue holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedRequest {
    /// Unique while the request is queued or leased.
    pub id: String,
    pub priority: Priority,
    /// The serialised request; the queue never looks inside.
    pub payload: String,
    /// The attempt about to be made, from 1.
    pub attempt: u32,
}

/// Where a pushed request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// 1-based.
    pub position: usize,
    pub queue_length: usize,
}

/// A request taken by a host, which holds a lease on it until `lease_expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    pub request: QueuedRequest,
    pub enqueued_at: SystemTime,
    /// By the queue's clock.
    pub lease_expires_at: SystemTime,
    /// What the host of an earlier attempt said when its session started
    /// ([`RequestQueue::started`]), e.g. the conversation to resume; `None` if no
    /// host said anything yet.
    pub note: Option<String>,
}

/// What a renewal found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Renewal {
    /// False once the lease lapsed or another host took the request over: the host
    /// must stop its session.
    pub held: bool,
    /// Someone asked for the request to be cancelled: the host should stop its session
    /// and finish the request as [`FinishOutcome::Cancelled`].
    pub cancel_requested: bool,
}

/// How a leased request ended, as its host reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishOutcome {
    /// The serialised final status travels to the requesting host in the event.
    Completed(String),
    /// The serialised error.
    Failed(String),
    Cancelled,
}

/// What [`RequestQueue::cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelResult {
    /// It was queued and is gone.
    Removed,
    /// It is leased: its host sees the request on its next renewal.
    Flagged,
    /// Neither queued nor leased.
    Unknown,
}

/// What became of a lapsed lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub id: String,
    /// The host whose lease lapsed.
    pub host: String,
    pub fate: ExpiredFate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiredFate {
    /// Back in the queue at its original place; `attempt` is the one about to be made.
    Requeued { attempt: u32 },
    /// It had made its last allowed attempt: it failed.
    Failed { attempts: u32 },
    /// A cancel was pending on it: it is gone.
    Cancelled,
}

/// A queued request, as a snapshot shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    pub id: String,
    pub priority: Priority,
    pub attempt: u32,
    /// By the queue's clock, at the first push.
    pub enqueued_at: SystemTime,
}

/// The queue at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSnapshot {
    /// In the order they will be taken: the 1-based position is the index + 1.
    pub queued: Vec<QueueEntry>,
    /// Requests leased by some host.
    pub leased: usize,
    /// Mean execution time of the last [`EXECUTION_SAMPLES`] finished requests, in
    /// milliseconds; `None` until one finished.
    pub mean_execution_ms: Option<f64>,
    /// Hosts whose [`RequestQueue::announce`] has not lapsed.
    pub hosts: usize,
    /// The sum of those hosts' announced capacities.
    pub capacity: usize,
}

/// What a queue publishes to every subscriber (on every host, for Redis).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueEvent {
    /// Pushed, or released back to the queue: there is something to take.
    Queued { id: String, priority: Priority },
    Allocated { id: String, host: String, attempt: u32 },
    /// The holder's session started ([`RequestQueue::started`]); `detail` is its note.
    Started { id: String, host: String, attempt: u32, detail: String },
    Completed { id: String, host: String, detail: String },
    /// `host` is `None` when the queue itself failed it (attempts exhausted).
    Failed { id: String, host: Option<String>, detail: String },
    Cancelled { id: String },
    Requeued { id: String, attempt: u32 },
}

impl QueueEvent {
    pub fn id(&self) -> &str {
        match self {
            Self::Queued { id, .. }
            | Self::Allocated { id, .. }
            | Self::Started { id, .. }
            | Self::Completed { id, .. }
            | Self::Failed { id, .. }
            | Self::Cancelled { id }
            | Self::Requeued { id, .. } => id,
        }
    }
}

/// What became of a request, as [`RequestQueue::lookup`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestState {
    /// Waiting; `position` is 1-based, as in [`QueueSnapshot::queued`].
    Queued { position: usize, attempt: u32 },
    /// Under `host`'s lease (which may have lapsed without being requeued yet).
    Leased { host: String, attempt: u32 },
    /// It ended within the retention ([`RESULTS_KEPT_MS`]): `event` is the terminal event
    /// the queue published for it, [`QueueEvent::Completed`], [`QueueEvent::Failed`]
    /// (`host: None` when the queue failed it after its last attempt) or
    /// [`QueueEvent::Cancelled`].
    Finished { event: QueueEvent },
    /// Never pushed, or ended longer ago than the queue remembers.
    Unknown,
}

/// Why a queue operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("request {0} is already queued or leased")]
    Duplicate(String),
    /// A push with a limit found that many requests queued already.
    #[error("the queue is full: {queued} requests are waiting")]
    Full { queued: usize },
    /// Finish or release by a host that does not hold the lease (any more).
    #[error("host {host} holds no lease on request {id}")]
    NotHolder { host: String, id: String },
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The backing store cannot be reached or did not answer in time.
    #[error("request queue at {url} is unavailable: {reason}")]
    Unavailable { url: String, reason: String },
    /// The store refused an operation (a script error, say).
    #[error("request queue at {url} refused the operation: {reason}")]
    Refused { url: String, reason: String },
    /// The store answered something this code does not understand.
    #[error("request queue at {url} returned malformed data: {reason}")]
    Malformed { url: String, reason: String },
}

impl QueueError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Duplicate(_) | Self::Invalid(_) => "ERR_INVALID_CONFIG",
            Self::Full { .. } => "ERR_POOL_QUEUE_FULL",
            Self::NotHolder { .. } => "ERR_QUEUE_NOT_HOLDER",
            Self::Unavailable { .. } => "ERR_QUEUE_UNAVAILABLE",
            Self::Refused { .. } => "ERR_QUEUE_REFUSED",
            Self::Malformed { .. } => "ERR_QUEUE_MALFORMED",
        }
    }
}

/// A priority queue of requests shared by the pools that use it. See the module docs.
pub trait RequestQueue: Send + Sync {
    /// Appends a request behind everything of its priority or higher and publishes
    /// [`QueueEvent::Queued`]. A duplicate id is [`QueueError::Duplicate`].
    fn push(&self, request: QueuedRequest) -> QueueFuture<'_, Pushed> {
        self.push_within(request, None)
    }

    /// [`push`](Self::push), refused with [`QueueError::Full`] (in the same step, so
    /// hosts pushing at once never overfill it) when `limit` requests are already
    /// queued; leased ones do not count.
    fn push_within(&self, request: QueuedRequest, limit: Option<usize>) -> QueueFuture<'_, Pushed>;

    /// Pops the highest-priority, oldest request and gives `host` a lease of `lease`
    /// on it, in one step; `None` when the queue is empty. The request's note, if an
    /// earlier attempt left one, comes with it ([`Taken::note`]).
    fn take<'a>(&'a self, host: &'a str, lease: Duration) -> QueueFuture<'a, Option<Taken>>;

    /// Extends `host`'s lease on `id` to `lease` from now, if it still holds one.
    fn renew<'a>(&'a self, host: &'a str, id: &'a str, lease: Duration) -> QueueFuture<'a, Renewal>;

    /// The holder's session on `id` started: `detail` becomes the request's note
    /// (replacing an earlier one) and goes out in [`QueueEvent::Started`] with the
    /// current attempt. The note stays with the request when its lease lapses and it
    /// is requeued, or it is released, so the next host's [`Taken::note`] has it; it is
    /// dropped when the request is finished, cancelled or failed by the queue. Anyone
    /// but the holder gets [`QueueError::NotHolder`].
    fn started<'a>(&'a self, host: &'a str, id: &'a str, detail: &'a str) -> QueueFuture<'a, ()>;

    /// The holder's request is over: removes it, records `execution_ms` for the wait
    /// estimate and publishes the outcome. Anyone but the holder gets
    /// [`QueueError::NotHolder`].
    fn finish<'a>(&'a self, host: &'a str, id: &'a str, outcome: FinishOutcome, execution_ms: u64)
        -> QueueFuture<'a, ()>;

    /// The holder gives the request back unstarted (draining, say): it goes to the
    /// front of its priority, its attempt unchanged, and [`QueueEvent::Queued`] is
    /// published. A host releasing several should release the last it took first, as
    /// each goes ahead of the one before. One with a cancel pending is cancelled
    /// instead (publishing [`QueueEvent::Cancelled`]).
    fn release<'a>(&'a self, host: &'a str, id: &'a str) -> QueueFuture<'a, ()> {
        self.release_with_note(host, id, None)
    }

    /// [`release`](Self::release), with `note` (when given) replacing the request's
    /// note for the next attempt, as [`started`](Self::started) does, but publishing
    /// no started event: a host that hands a running request over says so there.
    fn release_with_note<'a>(&'a self, host: &'a str, id: &'a str, note: Option<&'a str>) -> QueueFuture<'a, ()>;

    /// Lapsed leases: back to the queue at their original place with their attempt
    /// increased, or failed when they had made `max_attempts`; a pending cancel
    /// cancels them. Any host may call it, as often as it likes.
    fn requeue_expired(&self, max_attempts: u32) -> QueueFuture<'_, Vec<Expired>>;

    /// Removes a queued request, or flags a leased one for its holder.
    fn cancel<'a>(&'a self, id: &'a str) -> QueueFuture<'a, CancelResult>;

    fn snapshot(&self) -> QueueFuture<'_, QueueSnapshot>;

    /// Where `id` stands now, or how it ended: for a host that missed the terminal event
    /// (its receiver lagged, or it was cut off from the queue for long). Every request
    /// that ends (finished, cancelled, failed by the queue) leaves its terminal event for
    /// [`RESULTS_KEPT_MS`] by the queue's clock, the newest [`RESULTS_LIMIT`] of them;
    /// older ones are forgotten lazily (by the operations that end requests and by this
    /// one, [`RESULTS_PRUNED_PER_CALL`] at a time) and are [`RequestState::Unknown`]. A
    /// push of the same id forgets its earlier outcome.
    fn lookup<'a>(&'a self, id: &'a str) -> QueueFuture<'a, RequestState>;

    /// `host` is live, with `capacity` sessions, for `ttl` from now by the queue's
    /// clock; announcing again refreshes both. Live hosts are counted in
    /// [`QueueSnapshot::hosts`] and [`QueueSnapshot::capacity`]; lapsed ones are
    /// ignored (and cleaned up lazily). An empty host is [`QueueError::Invalid`].
    fn announce<'a>(&'a self, host: &'a str, capacity: u32, ttl: Duration) -> QueueFuture<'a, ()>;

    /// `host` is no longer live (nothing happens if it was not).
    fn leave<'a>(&'a self, host: &'a str) -> QueueFuture<'a, ()>;

    /// Events published from now on, by every host using the queue. A receiver that
    /// falls behind misses the oldest (`RecvError::Lagged`).
    fn subscribe(&self) -> broadcast::Receiver<QueueEvent>;
}

/// Order within the queue: priority class (critical first), then a sequence number.
/// Ordinary pushes count up from the middle of a class's range and releases count
/// down from it, so a released request is ahead of its class and the class can be
/// read back from the score. Scores stay below 2^53, exact in an `f64` (Redis sorted
/// set scores, Lua numbers).
pub(crate) mod score {
    use crate::config::Priority;

    pub const CLASS_SPAN: u64 = 1 << 44;
    pub const MIDDLE: u64 = 1 << 43;

    pub fn class(priority: Priority) -> u64 {
        match priority {
            Priority::Critical => 0,
            Priority::High => 1,
            Priority::Medium => 2,
            Priority::Low => 3,
        }
    }

    pub fn priority_of(score: u64) -> Option<Priority> {
        Priority::ALL.get(usize::try_from(score / CLASS_SPAN).ok()?).copied()
    }

    /// The `seq`th push of `priority` (seq from 1).
    pub fn pushed(priority: Priority, seq: u64) -> u64 {
        class(priority) * CLASS_SPAN + MIDDLE + seq
    }

    /// The `n`th release into `priority` (n from 1).
    pub fn released(priority: Priority, n: u64) -> u64 {
        class(priority) * CLASS_SPAN + MIDDLE - n
    }
}

/// Duration to whole milliseconds, at least 1 (a zero lease would be born lapsed).
pub(crate) fn lease_ms(lease: Duration) -> u64 {
    u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1)
}

pub(crate) fn time_from_ms(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

pub(crate) fn check_host(host: &str) -> Result<(), QueueError> {
    if host.is_empty() {
        return Err(QueueError::Invalid("host is empty".into()));
    }
    Ok(())
}

pub(crate) fn check_request(request: &QueuedRequest) -> Result<(), QueueError> {
    if request.id.is_empty() {
        return Err(QueueError::Invalid("request id is empty".into()));
    }
    if request.attempt == 0 {
        return Err(QueueError::Invalid(format!("request {} has attempt 0 (attempts count from 1)", request.id)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::score::*;
    use crate::config::Priority;

    #[test]
    fn scores_order_by_class_then_sequence_and_keep_their_class() {
        assert!(pushed(Priority::Critical, 1_000_000) < released(Priority::High, 1_000_000));
        assert!(released(Priority::Medium, 5) < pushed(Priority::Medium, 1));
        assert!(pushed(Priority::Low, MIDDLE - 1) < 1 << 53);
        for p in Priority::ALL {
            assert_eq!(priority_of(pushed(p, 7)), Some(p));
            assert_eq!(priority_of(released(p, 7)), Some(p));
        }
        assert_eq!(priority_of(4 * CLASS_SPAN), None);
    }
}
