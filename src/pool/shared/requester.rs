//! The host as a requester: its requests go into the shared queue, and settle from
//! the events every host publishes, wherever they ran, or from a lookup when this
//! host missed those events (it fell behind, was cut off, or the queue lost them).

use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::host::{CancelReply, Host, Op};
use super::wire::{self, Ended, Started};
use super::worker::Stop;
use super::{NewRequest, SharedCore};
use crate::event::SpawnerEvent;
use crate::notice::Busy;
use crate::pool::queue::{CancelResult, Pushed, QueueError, QueueEvent, QueuedRequest, RequestState};
use crate::pool::request::{known_code, Allocation, AllocationSender, OutcomeSender, PoolFailure, RequestOutcome};
use crate::pool::scheduler::PoolError;
use crate::session::Completion;
use crate::spawner::SpawnResult;
use crate::status::{SessionState, SessionStatus};

/// A request made here, until it settles.
pub(super) struct Own {
    pub pushed: bool,
    /// Its queue entry, until the queue is connected and it is pushed.
    waiting: Option<QueuedRequest>,
    /// Its session, once allocated (on whichever host runs it).
    pub session_id: Option<Arc<str>>,
    status: Option<SessionStatus>,
    allocation: Option<AllocationSender>,
    outcome: Option<OutcomeSender>,
    outcome_rx: Option<oneshot::Receiver<Result<SessionStatus, PoolFailure>>>,
    /// The remote session's completion, once allocated.
    completion: Option<oneshot::Sender<SessionStatus>>,
    _busy: Busy,
}

/// A status for a session known only by its id (a host that said no more).
fn placeholder(session_id: &str) -> SessionStatus {
    SessionStatus {
        session_id: session_id.to_owned(),
        state: SessionState::Running,
        pid: None,
        start_time: std::time::SystemTime::now(),
        end_time: None,
        execution_time_ms: None,
        exit_code: None,
        signal: None,
        error_message: None,
        stdout: String::new(),
        stderr: String::new(),
        token_usage: None,
        metrics: Default::default(),
        claude_session_id: None,
        cost_usd: None,
        modified_files: Vec::new(),
        violations: Vec::new(),
        host: None,
        stdout_truncated: false,
        stderr_truncated: false,
        stopped_escapees: Vec::new(),
    }
}

impl Host {
    pub(super) fn request(&mut self, core: &SharedCore, r: NewRequest) {
        let payload = wire::payload(&r.id, r.priority, r.queued_at, &core.settings.host, &r.config_json);
        let (allocation, outcome, outcome_rx) = match r.channels {
            Some((a, o, rx)) => (Some(a), Some(o), Some(rx)),
            None => (None, None, None),
        };
        let waiting = QueuedRequest { id: r.id.to_string(), priority: r.priority, payload, attempt: 1 };
        let own = Own {
            pushed: false,
            waiting: Some(waiting),
            session_id: None,
            status: None,
            allocation,
            outcome,
            outcome_rx,
            completion: None,
            _busy: r.busy,
        };
        self.own.insert(Arc::clone(&r.id), own);
        if self.closed || !self.closing.is_empty() {
            self.settle_failed(core, &r.id, PoolFailure::Closed, "Pool is closed".into());
        } else if self.draining.is_some() {
            let message = "Pool is draining: it admits no new requests".to_owned();
            self.settle_failed(core, &r.id, PoolFailure::Refused(PoolError::Draining), message);
        } else if self.queue.is_some() {
            self.push(core, &r.id);
        } else {
            self.connect();
        }
    }

    fn push(&mut self, core: &SharedCore, id: &Arc<str>) {
        let (Some(queue), Some(request)) = (self.queue.clone(), self.own.get_mut(id).and_then(|o| o.waiting.take())) else {
            return;
        };
        let (id, limit) = (Arc::clone(id), core.settings.queue_limit);
        self.ops.spawn(async move { Op::Pushed { id, result: queue.push_within(request, limit).await } });
    }

    /// Whether request `id`, made here, has had a session.
    fn allocated(&self, id: &str) -> bool {
        self.own.get(id).is_some_and(|o| o.session_id.is_some())
    }

    /// Requests made here while the queue was not connected.
    fn waiting_ids(&self) -> Vec<Arc<str>> {
        self.own.iter().filter(|(_, o)| o.waiting.is_some()).map(|(id, _)| Arc::clone(id)).collect()
    }

    /// Connected: the requests made meanwhile go in.
    pub(super) fn push_waiting(&mut self, core: &SharedCore) {
        for id in self.waiting_ids() {
            self.push(core, &id);
        }
    }

    /// Could not connect: the requests made meanwhile are refused.
    pub(super) fn refuse_waiting(&mut self, core: &SharedCore, error: &QueueError) {
        for id in self.waiting_ids() {
            self.settle_failed(core, &id, PoolFailure::Queue(error.clone()), error.to_string());
        }
    }

    pub(super) fn pushed(&mut self, core: &SharedCore, id: Arc<str>, result: Result<Pushed, QueueError>) {
        let queued = result.is_ok();
        match result {
            Ok(pushed) => {
                self.answered(core);
                if let Some(own) = self.own.get_mut(&id) {
                    own.pushed = true;
                    let (position, queue_length) = (pushed.position, pushed.queue_length);
                    core.emit(SpawnerEvent::RequestQueued { request_id: Arc::clone(&id), position, queue_length });
                }
            }
            Err(QueueError::Full { .. }) => {
                self.settle_failed(core, &id, PoolFailure::Refused(PoolError::QueueFull), "Session pool queue is full".into());
            }
            Err(e) => {
                if matches!(e, QueueError::Unavailable { .. }) {
                    // Its answer may be what was lost: the queue may hold it all the same.
                    // Taken here meanwhile, it ends unstarted; else it is withdrawn.
                    self.op_failed(core, &e);
                    if !self.push_answered(core, &id, true) {
                        self.withdraw(&id);
                    }
                }
                self.settle_failed(core, &id, PoolFailure::Queue(e.clone()), e.to_string());
            }
        }
        // A run of this id taken meanwhile and not ended above starts: it is this
        // request, queued, or (the push refused) another requester's of the same id.
        self.push_answered(core, &id, false);
        if queued {
            self.pump(core);
        }
    }

    /// An event's detail this package did not write: reported, not settled.
    fn malformed(&self, core: &SharedCore, id: &str, detail: &str) {
        let detail: String = detail.chars().take(200).collect();
        let message = format!("request {id}: an event's detail is not this package's JSON: {detail}");
        core.emit(SpawnerEvent::QueueError { code: "ERR_QUEUE_MALFORMED", message });
    }

    pub(super) fn on_started(&mut self, core: &SharedCore, id: &str, detail: &str) {
        let Some(own) = self.own.get(id) else { return };
        let Some(d) = Started::from_json(detail) else { return self.malformed(core, id, detail) };
        // Said twice (a retry of a `started` whose answer was lost): once is enough.
        if own.session_id.as_deref() == Some(d.session_id.as_str()) {
            return;
        }
        let (request_id, host): (Arc<str>, Arc<str>) = (id.into(), d.host.as_str().into());
        if let Some((session_id, status)) = d.previous {
            core.emit(SpawnerEvent::SessionReleased {
                session_id: session_id.into(),
                status: Box::new(status),
                request_id: Some(Arc::clone(&request_id)),
                host: Some(Arc::clone(&host)),
            });
        }
        // Another session than before (the same one returned above): the earlier is done.
        if let Some(old) = own.session_id.clone() {
            let attempt = d.attempt;
            core.emit(SpawnerEvent::SessionRecovering { session_id: old, request_id: Arc::clone(&request_id), attempt, host: Some(Arc::clone(&host)) });
        }
        self.allocate(core, &request_id, d.session_id.into(), d.status, host);
    }

    fn allocate(&mut self, core: &SharedCore, id: &Arc<str>, session_id: Arc<str>, status: Option<SessionStatus>, host: Arc<str>) {
        let Some(own) = self.own.get_mut(id) else { return };
        own.session_id = Some(Arc::clone(&session_id));
        own.status = status.clone();
        core.emit(SpawnerEvent::SessionAllocated {
            request_id: Arc::clone(id),
            session_id: Arc::clone(&session_id),
            host: Some(Arc::clone(&host)),
            status: status.clone().map(Box::new),
        });
        if let (Some(allocation), Some(outcome)) = (own.allocation.take(), own.outcome_rx.take()) {
            let status = status.unwrap_or_else(|| placeholder(&session_id));
            let (tell, end) = oneshot::channel();
            own.completion = Some(tell);
            let session = SpawnResult { session_id: session_id.to_string(), completion: Completion::remote(end, status.clone()), status };
            let allocated = Allocation { request_id: id.to_string(), session, outcome: RequestOutcome(outcome), host: Some(host.to_string()) };
            let _ = allocation.send(Ok(allocated));
        }
    }

    pub(super) fn on_completed(&mut self, core: &SharedCore, id: &str, detail: &str) {
        if !self.own.contains_key(id) {
            return;
        }
        let id: Arc<str> = id.into();
        let d = Ended::from_json(detail).unwrap_or_default();
        let host: Arc<str> = d.host.as_deref().unwrap_or_default().into();
        let allocated = self.allocated(&id);
        if let (false, Some(sid)) = (allocated, &d.session_id) {
            self.allocate(core, &id, sid.as_str().into(), d.status.clone(), Arc::clone(&host));
        }
        if !self.allocated(&id) {
            let message = format!("Request {id} completed, but its end names no session");
            let failure = PoolFailure::Remote { code: "ERR_QUEUE_MALFORMED", message: message.clone(), status: None };
            return self.settle_failed(core, &id, failure, message);
        }
        let Some(mut own) = self.forget(core, &id) else { return };
        let status = d.status.or_else(|| own.status.take()).unwrap_or_else(|| placeholder(d.session_id.as_deref().unwrap_or("")));
        if let Some(sid) = &d.session_id {
            core.emit(SpawnerEvent::SessionReleased {
                session_id: sid.as_str().into(),
                status: Box::new(status.clone()),
                request_id: Some(Arc::clone(&id)),
                host: Some(host),
            });
        }
        core.emit(SpawnerEvent::RequestCompleted { request_id: id, status: Box::new(status.clone()) });
        if let Some(tell) = own.completion.take() {
            let _ = tell.send(status.clone());
        }
        if let Some(outcome) = own.outcome.take() {
            let _ = outcome.send(Ok(status));
        }
    }

    pub(super) fn on_failed(&mut self, core: &SharedCore, id: &str, host: Option<&str>, detail: &str) {
        if !self.own.contains_key(id) {
            return;
        }
        let id: Arc<str> = id.into();
        let d = Ended::from_json(detail).unwrap_or_else(|| Ended { message: Some(detail.to_owned()), ..Ended::default() });
        let runner: Arc<str> = host.unwrap_or_default().into();
        if let (Some(sid), Some(status)) = (&d.session_id, &d.status) {
            if !self.allocated(&id) {
                self.allocate(core, &id, sid.as_str().into(), Some(status.clone()), Arc::clone(&runner));
            }
            core.emit(SpawnerEvent::SessionReleased {
                session_id: sid.as_str().into(),
                status: Box::new(status.clone()),
                request_id: Some(Arc::clone(&id)),
                host: Some(runner),
            });
        }
        let message = match host {
            None => format!("Request {id} failed: {}", d.message.as_deref().unwrap_or("its attempts ran out")),
            Some(h) => d.message.clone().unwrap_or_else(|| format!("Request {id} failed on host {h}")),
        };
        let code = known_code(d.code.as_deref().unwrap_or("ERR_POOL_GAVE_UP"));
        let failure = PoolFailure::Remote { code, message: message.clone(), status: d.status.map(Box::new) };
        self.settle_failed(core, &id, failure, message);
    }

    pub(super) fn on_cancelled(&mut self, core: &SharedCore, id: &str) {
        if !self.own.contains_key(id) {
            return;
        }
        let id: Arc<str> = id.into();
        core.emit(SpawnerEvent::RequestCancelled { request_id: Arc::clone(&id) });
        self.settle_failed(core, &id, PoolFailure::Cancelled, "Request cancelled".into());
    }

    /// The request is settled here: it no longer holds its id on this host.
    fn forget(&mut self, core: &SharedCore, id: &Arc<str>) -> Option<Own> {
        let own = self.own.remove(id)?;
        core.view.lock().own.remove(id);
        Some(own)
    }

    /// A request made here failed: `RequestFailed`, then whoever waits hears why.
    pub(super) fn settle_failed(&mut self, core: &SharedCore, id: &Arc<str>, failure: PoolFailure, message: String) {
        let Some(mut own) = self.forget(core, id) else { return };
        let status = match &failure {
            PoolFailure::GaveUp(s) => Some(s.clone()),
            PoolFailure::Remote { status, .. } => status.clone(),
            _ => None,
        };
        core.emit(SpawnerEvent::RequestFailed { request_id: Arc::clone(id), code: failure.code(), message, status: status.clone() });
        if let Some(tell) = own.completion.take() {
            let last = status.map(|s| *s).or(own.status.take());
            let _ = tell.send(last.unwrap_or_else(|| placeholder(own.session_id.as_deref().unwrap_or(""))));
        }
        if let Some(allocation) = own.allocation.take() {
            let _ = allocation.send(Err(failure));
        } else if let Some(outcome) = own.outcome.take() {
            let _ = outcome.send(Err(failure));
        }
    }

    /// Cancels a request through the queue (`reply`: the caller of `cancel_async`).
    pub(super) fn cancel(&mut self, id: Arc<str>, reply: Option<CancelReply>) {
        let Some(queue) = self.queue.clone() else {
            // Once connected (or refused with the connection's error).
            self.waiting_cancels.push((id, reply));
            return self.connect();
        };
        self.ops.spawn(async move {
            let result = queue.cancel(&id).await;
            Op::Cancelled { id, withdrawn: false, reply, result }
        });
    }

    pub(super) fn cancelled(
        &mut self,
        core: &SharedCore,
        id: Arc<str>,
        withdrawn: bool,
        reply: Option<CancelReply>,
        result: Result<CancelResult, QueueError>,
    ) {
        if withdrawn {
            self.cancelling.remove(&id);
        }
        match result {
            Ok(outcome) => {
                // Leased, but not held here: this host's take of it may be answered
                // and not handled yet, so it stays withdrawn for that take to end it
                // unstarted (its end in the queue forgets it otherwise).
                let maybe_taken_here = outcome == CancelResult::Flagged && !self.held.contains_key(&id);
                if withdrawn && !maybe_taken_here {
                    self.withdrawn.remove(&id);
                }
                // A leased request: its holder learns it on its next renewal; if that is us, now.
                if outcome == CancelResult::Flagged && self.held.contains_key(&id) {
                    self.stop(core, &id, Stop::Cancel);
                }
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(outcome != CancelResult::Unknown));
                }
            }
            Err(e) => {
                self.op_failed(core, &e);
                if let Some(reply) = reply {
                    let _ = reply.send(Err(e));
                }
            }
        }
    }

    /// A request refused here must not run anywhere: cancelled now, or once the queue answers.
    fn withdraw(&mut self, id: &Arc<str>) {
        self.withdrawn.insert(Arc::clone(id));
        self.cancel_withdrawn();
    }

    pub(super) fn cancel_withdrawn(&mut self) {
        let Some(queue) = self.queue.clone() else { return };
        let ids: Vec<Arc<str>> = self.withdrawn.iter().filter(|id| !self.cancelling.contains(*id)).cloned().collect();
        for id in ids {
            self.cancelling.insert(Arc::clone(&id));
            let queue = Arc::clone(&queue);
            self.ops.spawn(async move {
                let result = queue.cancel(&id).await;
                Op::Cancelled { id, withdrawn: true, reply: None, result }
            });
        }
    }

    /// Asks the queue what became of this host's unsettled requests, for ends whose
    /// events it may have missed: after a lag, after an outage, and once a minute.
    pub(super) fn reconcile(&mut self) {
        let Some(queue) = self.queue.clone() else { return };
        if self.lookups > 0 {
            return;
        }
        self.last_reconcile = Instant::now();
        let ids: Vec<Arc<str>> = self.own.iter().filter(|(_, o)| o.pushed).map(|(id, _)| Arc::clone(id)).collect();
        for id in ids {
            self.lookups += 1;
            let queue = Arc::clone(&queue);
            self.ops.spawn(async move {
                let result = queue.lookup(&id).await;
                Op::Looked { id, result }
            });
        }
    }

    pub(super) fn looked(&mut self, core: &SharedCore, id: &Arc<str>, result: Result<RequestState, QueueError>) {
        self.lookups = self.lookups.saturating_sub(1);
        match result {
            Ok(RequestState::Finished { event }) => match event {
                QueueEvent::Completed { id, detail, .. } => self.on_completed(core, &id, &detail),
                QueueEvent::Failed { id, host, detail } => self.on_failed(core, &id, host.as_deref(), &detail),
                QueueEvent::Cancelled { id } => self.on_cancelled(core, &id),
                _ => {}
            },
            Ok(RequestState::Unknown) if self.own.get(id).is_some_and(|o| o.pushed) => {
                let message = format!(
                    "Request {id} is no longer in the shared queue and its end is not known there (Redis lost it, or its end is older than the queue keeps)"
                );
                let failure = PoolFailure::Remote { code: "ERR_QUEUE_LOST", message: message.clone(), status: None };
                self.settle_failed(core, id, failure, message);
            }
            Ok(_) => {}
            Err(e) => self.op_failed(core, &e),
        }
    }
}
