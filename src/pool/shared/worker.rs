//! The host as a worker: it takes requests while it has free slots, runs their
//! sessions, keeps their leases (in [`lease`]), retries crashes in place, and reports
//! how each request ended (in [`ending`]; again on every tick while the queue cannot
//! be reached).

mod ending;
mod lease;

use std::sync::Arc;
use std::time::SystemTime;

use tokio::time::Instant;

use self::ending::{EndAs, Ending};
use super::host::{Host, Op};
use super::wire::{self, Ended, Started, PORTABLE_OUTPUT};
use super::SharedCore;
use crate::config::SessionConfig;
use crate::event::SpawnerEvent;
use crate::notice::Busy;
use crate::pool::request::gave_up_message;
use crate::pool::queue::{QueueError, Taken};
use crate::pool::scheduler::RETRIED_STATES;
use crate::pool::takeover_config;
use crate::spawner::SpawnResult;
use crate::status::{SessionState, SessionStatus};

/// Why the host stops a run's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// Not ours any more (the lease lapsed or another host holds it).
    Lost,
    Cancel,
    /// Handed over (draining, closing).
    Release,
}

/// A request this host holds a lease on.
pub(super) struct Run {
    pub seq: u64,
    pub id: Arc<str>,
    attempt: u32,
    config_json: String,
    pub session_id: Option<Arc<str>>,
    /// Its spawn has not reported yet; an end that comes first waits here.
    launching: bool,
    early_end: Option<Arc<SessionStatus>>,
    claude_session_id: Option<String>,
    pub stopping: Option<Stop>,
    /// By this host's monotonic clock, from before the take or renewal was sent: never
    /// later than the queue's.
    held_until: Instant,
    renewing: bool,
    /// The `started` detail not yet through.
    unannounced: Option<Arc<str>>,
    announcing: bool,
    ending: Option<Ending>,
    sending: bool,
    /// The session before the next (an in-place retry), and how it ended.
    previous: Option<(Arc<str>, SessionStatus)>,
    pub retry_at: Option<Instant>,
    /// Made here and taken before the answer to its push got here: not started until
    /// that answer is in ([`Host::push_answered`]).
    awaiting_push: bool,
    _busy: Busy,
}

impl Run {
    /// Its end is being reported: nothing more runs for it here.
    pub fn finishing(&self) -> bool {
        self.ending.is_some()
    }
}

impl Host {
    fn running(&self) -> usize {
        self.held.values().filter(|r| !r.finishing()).count()
    }

    fn can_take(&self, core: &SharedCore) -> bool {
        let paused = self.paused_until.is_some_and(|(_, at)| at > Instant::now());
        self.queue.is_some()
            && !self.closed
            && self.closing.is_empty()
            && self.draining.is_none()
            && !paused
            && self.running() < core.settings.capacity
    }

    /// Takes one request if there is room (one take at a time; each success tries again).
    pub(super) fn pump(&mut self, core: &SharedCore) {
        if self.taking || !self.can_take(core) {
            return;
        }
        let Some(queue) = self.queue.clone() else { return };
        self.taking = true;
        let (host, lease) = (Arc::clone(&core.settings.host), core.settings.lease);
        let sent_at = Instant::now();
        self.ops.spawn(async move { Op::Taken { sent_at, result: queue.take(&host, lease).await } });
    }

    pub(super) fn taken(&mut self, core: &SharedCore, sent_at: Instant, result: Result<Option<Taken>, QueueError>) {
        self.taking = false;
        match result {
            Ok(Some(taken)) => {
                self.answered(core);
                self.start_run(core, taken, sent_at);
                self.pump(core);
            }
            Ok(None) => {}
            Err(e) => self.op_failed(core, &e),
        }
    }

    fn start_run(&mut self, core: &SharedCore, taken: Taken, sent_at: Instant) {
        let s = &core.settings;
        let id: Arc<str> = taken.request.id.as_str().into();
        let run = Run {
            seq: self.next_seq(),
            id: Arc::clone(&id),
            attempt: taken.request.attempt,
            config_json: String::new(),
            session_id: None,
            launching: false,
            early_end: None,
            claude_session_id: None,
            stopping: None,
            held_until: sent_at + s.lease,
            renewing: false,
            unannounced: None,
            announcing: false,
            ending: None,
            sending: false,
            previous: None,
            retry_at: None,
            awaiting_push: false,
            _busy: Busy::new(&core.activity),
        };
        self.held.insert(Arc::clone(&id), run);
        // Refused to its requester (here) before the queue's answer got through.
        if self.withdrawn.remove(&id) {
            return self.end(core, &id, EndAs::Cancelled, 0, Ended::default(), None);
        }
        // Taken while this host began to drain or close: straight back, unstarted.
        if self.draining.is_some() || !self.closing.is_empty() || self.closed {
            return self.end(core, &id, EndAs::Release, 0, Ended::default(), None);
        }
        let fail = |message: String, code: &str| Ended { message: Some(message), code: Some(code.into()), ..Ended::default() };
        let config = match wire::config_of(&taken.request.payload) {
            Ok(config) => config.to_owned(),
            Err(e) => {
                let message = format!("Request {id} could not be read on host {}: {e}", s.host);
                return self.end(core, &id, EndAs::Failed, 0, fail(message, "ERR_QUEUE_MALFORMED"), None);
            }
        };
        let note = match taken.note.as_deref().map(Started::from_json) {
            Some(None) => {
                let message = format!("Request {id} could not be read on host {}: its note is not this package's", s.host);
                return self.end(core, &id, EndAs::Failed, 0, fail(message, "ERR_QUEUE_MALFORMED"), None);
            }
            Some(Some(note)) => Some(note),
            None => None,
        };
        let max = s.max_attempts;
        let Some(run) = self.held.get_mut(&id) else { return };
        run.config_json = config;
        // In-place retries on the host that died counted too (the queue counts lapses);
        // a session stopped to be handed over did not fail, so its attempt goes on here.
        if let Some(note) = &note {
            run.attempt = run.attempt.max(if note.handed_over { note.attempt } else { note.attempt + 1 });
            if run.attempt > max {
                let message = format!("Request {id} failed: its session on host {} did not finish and no attempt is left", note.host);
                return self.end(core, &id, EndAs::Failed, 0, fail(message, "ERR_POOL_GAVE_UP"), None);
            }
        }
        // Made here, and taken before the answer to its push got here: if that answer
        // is an error, the request was refused to its requester and must not run.
        if note.is_none() && self.own.get(&id).is_some_and(|own| !own.pushed) {
            if let Some(run) = self.held.get_mut(&id) {
                run.awaiting_push = true;
            }
            return;
        }
        self.launch(core, &id, note.map(|n| (n.claude_session_id, n.host)));
    }

    /// The answer to the push of request `id`, made here, is in: a run of it taken
    /// meanwhile starts now, or, when the push was `refused` to its requester, ends
    /// cancelled, unstarted. Whether there was such a run.
    pub(super) fn push_answered(&mut self, core: &SharedCore, id: &Arc<str>, refused: bool) -> bool {
        let Some(run) = self.held.get_mut(id) else { return false };
        if !std::mem::take(&mut run.awaiting_push) {
            return false;
        }
        if refused {
            self.end(core, id, EndAs::Cancelled, 0, Ended::default(), None);
        } else {
            self.launch(core, id, None);
        }
        true
    }

    /// Starts the run's session; `takeover`: an earlier attempt's conversation and host.
    fn launch(&mut self, core: &SharedCore, id: &Arc<str>, takeover: Option<(Option<String>, String)>) {
        let Some(run) = self.held.get(id) else { return };
        let seq = run.seq;
        let config = serde_json::from_str::<serde_json::Value>(&run.config_json)
            .map_err(|e| e.to_string())
            .and_then(|v| SessionConfig::from_json(&v).map_err(|e| e.to_string()));
        let config = match config {
            Ok(config) => config,
            Err(e) => return self.start_failed(core, id, e, "ERR_INVALID_CONFIG"),
        };
        match takeover {
            Some((Some(conversation), previous_host)) => {
                // Whether its transcript is here is disk I/O: off the runtime's worker.
                let (spawner, id, original) = (core.spawner.clone(), Arc::clone(id), config.clone());
                let plan = move || {
                    let env = |name: &str| spawner.inherited_var(name);
                    takeover_config(&config, Some(&conversation), &previous_host, &env)
                };
                self.ops.spawn(async move {
                    let plan = tokio::task::spawn_blocking(plan).await.unwrap_or_else(|_| crate::recovery::Respawn {
                        config: original,
                        resumed: false,
                        note: Some("could not look for the conversation's transcript: fresh session with the original task".into()),
                    });
                    Op::Planned { id, seq, plan }
                });
            }
            _ => self.start(core, id, config, false, None),
        }
    }

    pub(super) fn planned(&mut self, core: &SharedCore, id: &Arc<str>, seq: u64, plan: crate::recovery::Respawn) {
        if self.held.get(id).is_some_and(|r| r.seq == seq) {
            self.start(core, id, plan.config, plan.resumed, plan.note);
        }
    }

    fn start(&mut self, core: &SharedCore, id: &Arc<str>, config: SessionConfig, resumed: bool, note: Option<String>) {
        let pending = core.spawner.start_claimed(config, None, core.settings.restarter);
        let session_id: Arc<str> = pending.session_id.as_str().into();
        let Some(run) = self.held.get_mut(id) else { return };
        run.session_id = Some(Arc::clone(&session_id));
        run.launching = true;
        self.by_session.insert(Arc::clone(&session_id), Arc::clone(id));
        let (id, seq) = (Arc::clone(id), run.seq);
        self.ops.spawn(async move { Op::Launched { id, seq, session_id, resumed, note, result: pending.await } });
    }

    fn start_failed(&mut self, core: &SharedCore, id: &Arc<str>, error: String, code: &str) {
        let previous = self.held.get_mut(id).and_then(|r| r.previous.take());
        let mut ended = previous_ended(previous, &core.settings.host);
        ended.message = Some(format!("Request {id} could not start on host {}: {error}", core.settings.host));
        ended.code = Some(code.to_owned());
        self.end(core, id, EndAs::Failed, 0, ended, None);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn launched(
        &mut self,
        core: &SharedCore,
        id: &Arc<str>,
        seq: u64,
        session_id: Arc<str>,
        resumed: bool,
        note: Option<String>,
        result: Result<SpawnResult, crate::SpawnError>,
    ) {
        let Some(run) = self.held.get_mut(id).filter(|r| r.seq == seq) else {
            // Dropped meanwhile (lost): its session must not run on.
            if result.is_ok() {
                let _ = core.spawner.request_stop(&session_id, false);
            }
            return;
        };
        run.launching = false;
        let started = match result {
            Ok(started) => started,
            Err(e) => {
                self.by_session.remove(&session_id);
                run.session_id = None;
                let code = e.code();
                return self.start_failed(core, id, e.to_string(), code);
            }
        };
        run.claude_session_id = started.status.claude_session_id.clone();
        let detail = Started {
            session_id: session_id.to_string(),
            host: core.settings.host.to_string(),
            attempt: run.attempt,
            claude_session_id: run.claude_session_id.clone(),
            status: Some(started.status.portable(&core.settings.host, PORTABLE_OUTPUT)),
            resumed,
            note,
            previous: run.previous.take().map(|(id, status)| (id.to_string(), status)),
            handed_over: false,
        };
        run.unannounced = Some(detail.to_json().into());
        let stopping = run.stopping;
        let early = run.early_end.take();
        self.announce(core, id);
        if let Some(why) = stopping {
            let _ = core.spawner.request_stop(&session_id, why != Stop::Lost);
        }
        if let Some(status) = early {
            self.session_ended(core, &session_id, &status);
        }
    }

    fn announce(&mut self, core: &SharedCore, id: &Arc<str>) {
        let Some(queue) = self.queue.clone() else { return };
        let Some(run) = self.held.get_mut(id) else { return };
        let Some(detail) = run.unannounced.clone().filter(|_| !run.announcing) else { return };
        run.announcing = true;
        let (host, id, seq) = (Arc::clone(&core.settings.host), Arc::clone(id), run.seq);
        self.ops.spawn(async move {
            let result = queue.started(&host, &id, &detail).await;
            Op::Announced { id, seq, detail, result }
        });
    }

    pub(super) fn announced(&mut self, core: &SharedCore, id: &Arc<str>, seq: u64, detail: &Arc<str>, result: Result<(), QueueError>) {
        let Some(run) = self.held.get_mut(id).filter(|r| r.seq == seq) else { return };
        run.announcing = false;
        match result {
            Ok(()) => {
                if run.unannounced.as_ref() == Some(detail) {
                    run.unannounced = None;
                }
            }
            Err(QueueError::NotHolder { .. }) => self.lost(core, id),
            Err(e) => self.op_failed(core, &e),
        }
    }

    /// A session of this host's ended: the request completed, is retried here, handed
    /// back, or failed.
    pub(super) fn session_ended(&mut self, core: &SharedCore, session_id: &Arc<str>, status: &Arc<SessionStatus>) {
        let Some(id) = self.by_session.get(session_id).cloned() else { return };
        let s = &core.settings;
        let Some(run) = self.held.get_mut(&id) else { return };
        if run.launching {
            run.early_end = Some(Arc::clone(status));
            return;
        }
        self.by_session.remove(session_id);
        run.session_id = None;
        let ms = status.execution_time_ms.unwrap_or(0);
        let portable = status.portable(&s.host, PORTABLE_OUTPUT);
        let ended = Ended { session_id: Some(session_id.to_string()), status: Some(portable.clone()), host: Some(s.host.to_string()), ..Ended::default() };
        let retried = RETRIED_STATES.contains(&status.state);
        let leaving = self.draining.is_some() || !self.closing.is_empty();
        match run.stopping {
            Some(Stop::Lost) => return self.drop_run(&id),
            // A session that got to its end is done, whatever was asked of it meanwhile.
            _ if status.state == SessionState::Completed => return self.end(core, &id, EndAs::Completed, ms, ended, None),
            Some(Stop::Cancel) => return self.end(core, &id, EndAs::Cancelled, ms, ended, None),
            Some(Stop::Release) if status.state == SessionState::Terminated => {
                // Stopped to hand it over, not failed: the next host's attempt is this one again.
                let note = Started {
                    session_id: String::new(),
                    host: s.host.to_string(),
                    attempt: run.attempt,
                    claude_session_id: run.claude_session_id.clone(),
                    status: None,
                    resumed: false,
                    note: None,
                    previous: None,
                    handed_over: true,
                };
                return self.end(core, &id, EndAs::Release, ms, ended, Some(note.to_json()));
            }
            Some(Stop::Release) => return self.end(core, &id, EndAs::Release, ms, ended, None),
            None if retried && leaving => return self.end(core, &id, EndAs::Release, ms, ended, None),
            None => {}
        }
        if s.restarter.is_some() && retried && run.attempt < s.max_attempts {
            run.previous = Some((Arc::clone(session_id), portable));
            run.attempt += 1;
            // Not before a rate-limit pause is over: the retry would meet the same limit.
            match self.paused_until {
                Some((_, at)) if at > Instant::now() => run.retry_at = Some(at),
                _ => self.retry(core, &id),
            }
            return;
        }
        let message = gave_up_message(&id, status, false);
        let ended = Ended { message: Some(message), code: Some("ERR_POOL_GAVE_UP".into()), ..ended };
        self.end(core, &id, EndAs::Failed, ms, ended, None);
    }

    /// The in-place retry of a crashed or timed-out session, if the run is still ours.
    fn retry(&mut self, core: &SharedCore, id: &Arc<str>) {
        let margin = core.settings.margin;
        let Some(run) = self.held.get_mut(id) else { return };
        run.retry_at = None;
        if run.finishing() {
            return;
        }
        let lapsing = Instant::now() + margin >= run.held_until;
        if run.stopping == Some(Stop::Lost) || lapsing {
            self.stop(core, id, Stop::Lost);
            return self.drop_run(id);
        }
        let previous = previous_ended(run.previous.take(), &core.settings.host);
        match run.stopping {
            Some(Stop::Cancel) => self.end(core, id, EndAs::Cancelled, 0, previous, None),
            Some(Stop::Release) => self.end(core, id, EndAs::Release, 0, previous, None),
            _ => {
                if let (Some(prev_id), Some(prev_status)) = (previous.session_id, previous.status) {
                    if let Some(run) = self.held.get_mut(id) {
                        run.previous = Some((prev_id.into(), prev_status));
                    }
                }
                let conversation = self.held.get(id).and_then(|r| r.claude_session_id.clone());
                self.launch(core, id, Some((conversation, core.settings.host.to_string())));
            }
        }
    }

    pub(super) fn rate_limited(&mut self, core: &SharedCore, session_id: &Arc<str>, until: SystemTime, reason: String) {
        if !core.settings.respect_rate_limits || self.draining.is_some() || !self.by_session.contains_key(session_id) {
            return;
        }
        if self.paused_until.is_some_and(|(at, _)| at >= until) {
            return;
        }
        let wait = until.duration_since(SystemTime::now()).unwrap_or_default();
        self.paused_until = Some((until, Instant::now() + wait));
        core.emit(SpawnerEvent::PoolThrottled { until, reason });
    }
}

/// The detail of the session before (an in-place retry), for the run's end.
fn previous_ended(previous: Option<(Arc<str>, SessionStatus)>, host: &str) -> Ended {
    match previous {
        Some((id, status)) => Ended { session_id: Some(id.to_string()), status: Some(status), host: Some(host.to_owned()), ..Ended::default() },
        None => Ended::default(),
    }
}
