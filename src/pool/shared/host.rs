//! The host task: its state, its loop, the connection and outages, the tick
//! (renewals, announcements, lapsed leases, the snapshot); draining and closing are
//! in `drain`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::requester::Own;
use super::worker::Run;
use super::{Command, Connect, CoreRef, SharedCore, RECONCILE_EVERY};
use crate::error::SpawnError;
use crate::event::SpawnerEvent;
use crate::notice::{Busy, Notice};
use crate::pool::queue::{
    CancelResult, Expired, Pushed, QueueError, QueueEvent, QueueSnapshot, RequestQueue, RequestState, Renewal, Taken,
};
use crate::spawner::SpawnResult;

mod drain;

/// A queue operation's result, back on the host task (one per operation: not worth a
/// box each).
#[allow(clippy::large_enum_variant)]
pub(super) enum Op {
    Connected(Result<Arc<dyn RequestQueue>, QueueError>),
    Pushed { id: Arc<str>, result: Result<Pushed, QueueError> },
    Taken { sent_at: Instant, result: Result<Option<Taken>, QueueError> },
    Renewed { id: Arc<str>, seq: u64, sent_at: Instant, result: Result<Renewal, QueueError> },
    Announced { id: Arc<str>, seq: u64, detail: Arc<str>, result: Result<(), QueueError> },
    /// `announced`: a `started` that had not got through went first, and did.
    EndSent { id: Arc<str>, seq: u64, announced: bool, result: Result<(), QueueError> },
    Cancelled { id: Arc<str>, withdrawn: bool, reply: Option<CancelReply>, result: Result<CancelResult, QueueError> },
    Looked { id: Arc<str>, result: Result<RequestState, QueueError> },
    Housekept { announced: Option<Result<(), QueueError>>, requeued: Option<Result<Vec<Expired>, QueueError>>, snapshot: Result<QueueSnapshot, QueueError> },
    Refreshed(Result<QueueSnapshot, QueueError>),
    /// A taken-over request's config, planned off the runtime (its transcript looked for).
    Planned { id: Arc<str>, seq: u64, plan: crate::recovery::Respawn },
    Launched { id: Arc<str>, seq: u64, session_id: Arc<str>, resumed: bool, note: Option<String>, result: Result<SpawnResult, SpawnError> },
    Left(Result<(), QueueError>),
}

/// Who waits for a cancel's answer (`cancel_async`).
pub(super) type CancelReply = oneshot::Sender<Result<bool, QueueError>>;

/// Where a drain stands.
pub(super) enum Drain {
    /// Waiting for the sessions to end until the deadline.
    Waiting(Instant),
    /// Handed back; ends that cannot be reported are given up after a lease.
    HandedBack(Instant),
    /// Leaving the queue.
    Leaving,
}

pub(super) struct Host {
    pub queue: Option<Arc<dyn RequestQueue>>,
    connect: Option<Connect>,
    connecting: bool,
    pub events: Option<broadcast::Receiver<QueueEvent>>,
    pub own: HashMap<Arc<str>, Own>,
    pub held: HashMap<Arc<str>, Run>,
    pub by_session: HashMap<Arc<str>, Arc<str>>,
    /// Requests refused to their requester here that the queue may hold all the same
    /// (a push whose answer was lost): cancelled as soon as the queue answers, never run.
    pub withdrawn: HashSet<Arc<str>>,
    pub cancelling: HashSet<Arc<str>>,
    /// Cancels asked for before the queue was connected.
    pub waiting_cancels: Vec<(Arc<str>, Option<CancelReply>)>,
    pub taking: bool,
    reachable_since: Option<Instant>,
    outage: bool,
    /// Admission paused for a rate limit until then.
    pub paused_until: Option<(SystemTime, Instant)>,
    pub draining: Option<Drain>,
    drain_waiters: Vec<oneshot::Sender<()>>,
    drained: bool,
    pub closing: Vec<oneshot::Sender<()>>,
    pub closed: bool,
    pub last_reconcile: Instant,
    pub lookups: usize,
    housekeeping: bool,
    refreshing: bool,
    refresh_waiters: Vec<oneshot::Sender<Result<(), QueueError>>>,
    next_tick: Instant,
    pub seq: u64,
    pub ops: JoinSet<Op>,
}

#[allow(clippy::large_enum_variant)]
enum Wake {
    Command(Option<(Command, Busy)>),
    Op(Op),
    Event(Result<QueueEvent, broadcast::error::RecvError>),
    Time,
}

async fn next_event(events: &mut Option<broadcast::Receiver<QueueEvent>>) -> Result<QueueEvent, broadcast::error::RecvError> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

pub(super) async fn run(core: CoreRef, mut commands: mpsc::UnboundedReceiver<(Command, Busy)>, connect: Connect) {
    let mut host = Host::new(connect);
    if core.upgrade().is_some() {
        host.connect();
    }
    loop {
        let deadline = match core.upgrade() {
            Some(c) => host.next_deadline(&c),
            None => break,
        };
        let wake = tokio::select! {
            command = commands.recv() => Wake::Command(command),
            Some(Ok(op)) = host.ops.join_next(), if !host.ops.is_empty() => Wake::Op(op),
            event = next_event(&mut host.events) => Wake::Event(event),
            _ = tokio::time::sleep_until(deadline) => Wake::Time,
        };
        let Some(core) = core.upgrade() else { break };
        match wake {
            Wake::Command(None) => break,
            Wake::Command(Some((command, _busy))) => host.command(&core, command),
            Wake::Op(op) => host.op(&core, op),
            Wake::Event(event) => host.queue_event(&core, event),
            Wake::Time => host.timers(&core),
        }
        host.settle(&core);
        if host.closed && host.closing.is_empty() && host.held.is_empty() {
            break;
        }
    }
}

impl Host {
    fn new(connect: Connect) -> Self {
        Self {
            queue: None,
            connect: Some(connect),
            connecting: false,
            events: None,
            own: HashMap::new(),
            held: HashMap::new(),
            by_session: HashMap::new(),
            withdrawn: HashSet::new(),
            cancelling: HashSet::new(),
            waiting_cancels: Vec::new(),
            taking: false,
            reachable_since: None,
            outage: false,
            paused_until: None,
            draining: None,
            drain_waiters: Vec::new(),
            drained: false,
            closing: Vec::new(),
            closed: false,
            last_reconcile: Instant::now(),
            lookups: 0,
            housekeeping: false,
            refreshing: false,
            refresh_waiters: Vec::new(),
            next_tick: Instant::now(),
            seq: 0,
            ops: JoinSet::new(),
        }
    }

    fn command(&mut self, core: &SharedCore, command: Command) {
        match command {
            Command::Request(request) => self.request(core, request),
            Command::Cancel { id, reply } => self.cancel(id, reply),
            Command::Refresh { reply } => {
                self.refresh_waiters.extend(reply);
                self.refresh();
            }
            Command::Drain { timeout, reply } => {
                self.drain_waiters.extend(reply);
                self.drain(core, timeout);
            }
            Command::Close { reply } => {
                if self.closed {
                    let _ = reply.send(());
                    return;
                }
                self.closing.push(reply);
                self.drain(core, Duration::ZERO);
                self.hand_back(core);
            }
            Command::Notice(Notice::Ended { session_id, status, .. }) => self.session_ended(core, &session_id, &status),
            Command::Notice(Notice::RateLimited { session_id, until, reason }) => self.rate_limited(core, &session_id, until, reason),
        }
    }

    fn op(&mut self, core: &SharedCore, op: Op) {
        match op {
            Op::Connected(result) => self.connected(core, result),
            Op::Pushed { id, result } => self.pushed(core, id, result),
            Op::Taken { sent_at, result } => self.taken(core, sent_at, result),
            Op::Renewed { id, seq, sent_at, result } => self.renewed(core, &id, seq, sent_at, result),
            Op::Announced { id, seq, detail, result } => self.announced(core, &id, seq, &detail, result),
            Op::EndSent { id, seq, announced, result } => self.end_sent(core, &id, seq, announced, result),
            Op::Cancelled { id, withdrawn, reply, result } => self.cancelled(core, id, withdrawn, reply, result),
            Op::Looked { id, result } => self.looked(core, &id, result),
            Op::Housekept { announced, requeued, snapshot } => {
                self.housekeeping = false;
                match announced {
                    Some(Ok(())) => self.answered(core),
                    Some(Err(e)) => self.op_failed(core, &e),
                    None => {}
                }
                if let Some(Err(e)) = requeued {
                    self.op_failed(core, &e);
                }
                self.snapshot(core, snapshot);
                self.pump(core);
                if !self.own.is_empty() && self.last_reconcile.elapsed() >= RECONCILE_EVERY {
                    self.reconcile();
                }
            }
            Op::Refreshed(result) => {
                self.refreshing = false;
                self.snapshot(core, result);
            }
            Op::Planned { id, seq, plan } => self.planned(core, &id, seq, plan),
            Op::Launched { id, seq, session_id, resumed, note, result } => self.launched(core, &id, seq, session_id, resumed, note, result),
            Op::Left(result) => {
                if let Err(e) = result {
                    self.op_failed(core, &e);
                }
                self.drained(core);
            }
        }
    }

    fn queue_event(&mut self, core: &SharedCore, event: Result<QueueEvent, broadcast::error::RecvError>) {
        // Ended: a withdrawn request held elsewhere has nothing left to cancel.
        if let Ok(QueueEvent::Completed { id, .. } | QueueEvent::Failed { id, .. } | QueueEvent::Cancelled { id }) = &event {
            self.withdrawn.remove(id.as_str());
        }
        match event {
            Ok(QueueEvent::Started { id, detail, .. }) => self.on_started(core, &id, &detail),
            Ok(QueueEvent::Completed { id, detail, .. }) => self.on_completed(core, &id, &detail),
            Ok(QueueEvent::Failed { id, host, detail }) => self.on_failed(core, &id, host.as_deref(), &detail),
            Ok(QueueEvent::Cancelled { id }) => self.on_cancelled(core, &id),
            Ok(QueueEvent::Queued { .. } | QueueEvent::Requeued { .. }) => self.pump(core),
            Ok(QueueEvent::Allocated { .. }) => {}
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                core.emit(SpawnerEvent::QueueLagged { missed });
                self.reconcile();
            }
            Err(broadcast::error::RecvError::Closed) => self.events = None,
        }
    }

    /// When the task must wake next: the tick, a fence, a retry, the end of a pause, a
    /// drain's deadline.
    fn next_deadline(&self, core: &SharedCore) -> Instant {
        let margin = core.settings.margin;
        let fences = self.held.values().filter_map(|r| r.fence(margin));
        let retries = self.held.values().filter_map(|r| r.retry_at);
        let pause = self.paused_until.map(|(_, at)| at);
        let drain = match self.draining {
            Some(Drain::Waiting(at) | Drain::HandedBack(at)) => Some(at),
            _ => None,
        };
        fences.chain(retries).chain(pause).chain(drain).fold(self.next_tick, Instant::min)
    }

    fn timers(&mut self, core: &SharedCore) {
        let now = Instant::now();
        if self.paused_until.is_some_and(|(_, at)| at <= now) {
            self.paused_until = None;
            core.emit(SpawnerEvent::PoolResumed);
        }
        self.fences_and_retries(core, now);
        if now >= self.next_tick {
            self.next_tick = now + core.settings.tick;
            self.tick(core);
        }
    }

    /// Each tick: connect if need be; renew every lease and say what has not got
    /// through (renewals do not wait on each other or on the rest); then announce,
    /// requeue lapsed leases and read the snapshot, in the background.
    fn tick(&mut self, core: &SharedCore) {
        if self.closed {
            return;
        }
        let Some(queue) = self.queue.clone() else {
            self.connect();
            return;
        };
        let ids: Vec<Arc<str>> = self.held.keys().cloned().collect();
        for id in ids {
            self.keep(core, &id);
        }
        if self.housekeeping {
            return;
        }
        self.housekeeping = true;
        let s = core.settings.clone();
        let announce = self.draining.is_none() && self.closing.is_empty();
        // Right after an outage, holders renew first: their leases ran on the queue's clock.
        let requeue = self.reachable_since.is_some_and(|since| since.elapsed() >= s.lease / 2);
        self.ops.spawn(async move {
            let announced = match announce {
                true => Some(queue.announce(&s.host, u32::try_from(s.capacity).unwrap_or(u32::MAX), s.lease).await),
                false => None,
            };
            let requeued = match requeue {
                true => Some(queue.requeue_expired(s.max_attempts).await),
                false => None,
            };
            Op::Housekept { announced, requeued, snapshot: queue.snapshot().await }
        });
    }

    fn refresh(&mut self) {
        let Some(queue) = self.queue.clone() else {
            // Once connected (or refused with the connection's error).
            return self.connect();
        };
        if !self.refreshing {
            self.refreshing = true;
            self.ops.spawn(async move { Op::Refreshed(queue.snapshot().await) });
        }
    }

    fn snapshot(&mut self, core: &SharedCore, result: Result<QueueSnapshot, QueueError>) {
        let failed = result.as_ref().err().cloned();
        match result {
            Ok(snapshot) => {
                let mut view = core.view.lock();
                view.snapshot = Some(snapshot);
                view.snapshot_at = Some(SystemTime::now());
            }
            Err(e) => self.op_failed(core, &e),
        }
        for waiter in self.refresh_waiters.drain(..) {
            let _ = waiter.send(failed.clone().map_or(Ok(()), Err));
        }
    }

    pub fn connect(&mut self) {
        if self.queue.is_some() || self.connecting || self.closed {
            return;
        }
        let Some(connect) = self.connect.as_ref() else { return };
        self.connecting = true;
        match connect {
            Connect::Given(queue) => {
                let queue = Arc::clone(queue);
                self.ops.spawn(async move { Op::Connected(Ok(queue)) });
            }
            #[cfg(feature = "redis")]
            Connect::Redis(options) => {
                let options = options.clone();
                self.ops.spawn(async move {
                    let connected = crate::pool::queue::RedisQueue::connect(options).await;
                    Op::Connected(connected.map(|q| Arc::new(q) as Arc<dyn RequestQueue>))
                });
            }
        }
    }

    fn connected(&mut self, core: &SharedCore, result: Result<Arc<dyn RequestQueue>, QueueError>) {
        self.connecting = false;
        match result {
            Ok(queue) if !self.closed => {
                self.events = Some(queue.subscribe());
                self.queue = Some(queue);
                self.answered(core);
                self.push_waiting(core);
                for (id, reply) in std::mem::take(&mut self.waiting_cancels) {
                    self.cancel(id, reply);
                }
                if !self.refresh_waiters.is_empty() {
                    self.refresh();
                }
                self.pump(core);
            }
            Ok(_) => {}
            Err(e) => {
                self.op_failed(core, &e);
                self.refuse_waiting(core, &e);
                for (_, reply) in std::mem::take(&mut self.waiting_cancels) {
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
                for waiter in self.refresh_waiters.drain(..) {
                    let _ = waiter.send(Err(e.clone()));
                }
            }
        }
    }

    /// The queue answered: out of an outage, if in one.
    pub fn answered(&mut self, core: &SharedCore) {
        if self.reachable_since.is_none() {
            self.reachable_since = Some(Instant::now());
        }
        if self.outage {
            self.outage = false;
            core.emit(SpawnerEvent::QueueReconnected { host: Arc::clone(&core.settings.host) });
            self.cancel_withdrawn();
            self.reconcile();
        }
    }

    /// An operation failed: an outage begins (the queue could not be reached), or an
    /// unexpected error is reported. Not holding a lease any more is expected.
    pub fn op_failed(&mut self, core: &SharedCore, error: &QueueError) {
        match error {
            QueueError::Unavailable { .. } => {
                self.reachable_since = None;
                if !self.outage {
                    self.outage = true;
                    let host = Arc::clone(&core.settings.host);
                    core.emit(SpawnerEvent::QueueUnavailable { host, code: error.code(), message: error.to_string() });
                }
            }
            QueueError::NotHolder { .. } => {}
            other => core.emit(SpawnerEvent::QueueError { code: other.code(), message: other.to_string() }),
        }
    }

    fn update_view(&self, core: &SharedCore) {
        let mut view = core.view.lock();
        view.reachable = self.queue.is_some() && !self.outage;
        view.held = self.held.keys().cloned().collect();
        view.sessions = self.held.values().filter(|r| !r.finishing()).filter_map(|r| r.session_id.clone()).collect();
    }

    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }
}
