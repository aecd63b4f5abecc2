//! The recovery manager's state machine, without I/O or clocks of its own: every
//! recovery (its attempts, status, timers wanted), the storm limit's window, the
//! statistics. Each step returns what to report ([`Step::events`]) and what the
//! manager's task must do ([`Effect`]: arm or drop a timer, start a session, handle
//! a new session's crash), so the rules live here once and the task only carries
//! them out.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::analysis::CrashAnalysis;
use super::config::{RecoveryConfig, Strategy};
use super::state::{RecoveryAttempt, RecoveryError, RecoveryState, RecoveryStatistics, RecoveryStatus};
use crate::event::SpawnerEvent;
use crate::status::{CrashReport, SessionState, SessionStatus};

/// Finished recoveries kept for queries; the statistics count them all.
pub const FINISHED_KEPT: usize = 1000;
/// Crashed sessions remembered as handled, so a crash is handled once.
pub const HANDLED_KEPT: usize = 10_000;
/// The storm limit's window.
pub const STORM_WINDOW: Duration = Duration::from_secs(60);

/// What the manager's task does for a step.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Effect {
    /// Wake the recovery after `delay` (replacing its timer).
    Arm { recovery: Arc<str>, delay: Duration },
    /// Drop the recovery's timer.
    Disarm { recovery: Arc<str> },
    /// Start attempt `attempt`'s session; `resume` continues the conversation.
    Respawn { recovery: Arc<str>, attempt: u32, resume: bool },
    /// A new session of a recovery ended in a way that is a crash: handle it.
    HandleCrash { session_id: Arc<str>, state: SessionState },
}

#[derive(Debug, Default)]
pub(crate) struct Step {
    pub events: Vec<SpawnerEvent>,
    pub effects: Vec<Effect>,
}

struct Recovery {
    seq: u64,
    state: RecoveryState,
    /// The session whose conversation the next attempt resumes.
    latest: Arc<str>,
    /// The attempt's live session, whose end decides the attempt.
    current: Option<Arc<str>>,
}

/// What a respawn needs, read when it starts.
#[derive(Debug, Clone)]
pub(crate) struct RespawnInputs {
    pub original: Arc<str>,
    pub latest: Arc<str>,
    pub analysis: CrashAnalysis,
}

#[derive(Default)]
pub(crate) struct Book {
    config: RecoveryConfig,
    seq: u64,
    /// By the session that first crashed.
    recoveries: HashMap<Arc<str>, Recovery>,
    /// Each attempt's session -> its recovery.
    by_session: HashMap<Arc<str>, Arc<str>>,
    finished: VecDeque<Arc<str>>,
    handled: HashSet<Arc<str>>,
    handled_order: VecDeque<Arc<str>>,
    /// Attempts' sessions being started: their ends wait until the start is booked.
    launching: HashSet<Arc<str>>,
    /// When recent attempts started (the storm limit).
    starts: VecDeque<SystemTime>,
    crashes: u64,
    attempts: u64,
    started: u64,
    succeeded: u64,
    failed: u64,
    abandoned: u64,
}

impl Book {
    pub fn new(config: RecoveryConfig) -> Self {
        Self { config, ..Self::default() }
    }

    pub fn config(&self) -> &RecoveryConfig {
        &self.config
    }

    /// Whether an ending is one this manager recovers: a state in `recover_on`, or,
    /// when `crashed` is, a `failed` exit whose code is 128 + a fatal signal (shells
    /// and agents that trap a signal report a death that way).
    pub fn handles(&self, status: &SessionStatus) -> bool {
        let on = &self.config.recover_on;
        on.contains(&status.state)
            || (on.contains(&SessionState::Crashed)
                && status.state == SessionState::Failed
                && status.exit_code.and_then(super::signal_from_exit_code).is_some())
    }

    /// Marks a crash handled; false when it already was.
    pub fn first_crash(&mut self, session_id: &Arc<str>) -> bool {
        if self.handled.contains(session_id) {
            return false;
        }
        self.remember(session_id);
        self.crashes += 1;
        true
    }

    pub fn was_handled(&self, session_id: &str) -> bool {
        self.handled.contains(session_id)
    }

    /// Never handles `session_id`'s ending (a session of ours that did not start).
    pub fn ignore(&mut self, session_id: &Arc<str>) {
        self.remember(session_id);
    }

    /// An attempt's session is registered and about to start (see `is_launching`).
    pub fn launching(&mut self, session_id: &Arc<str>) {
        self.launching.insert(Arc::clone(session_id));
    }

    /// Whether `session_id` is an attempt's session whose start is not booked yet
    /// (`respawned` or `ignore` books it): its end must wait for that.
    pub fn is_launching(&self, session_id: &str) -> bool {
        self.launching.contains(session_id)
    }

    /// The start of `session_id` is booked (with `respawned` or `ignore`, under the
    /// same lock).
    pub fn launched(&mut self, session_id: &str) {
        self.launching.remove(session_id);
    }

    /// Whether `session_id` is one of the recoveries' new sessions.
    pub fn is_attempt_session(&self, session_id: &str) -> bool {
        self.by_session.contains_key(session_id)
    }

    fn remember(&mut self, session_id: &Arc<str>) {
        if self.handled.insert(Arc::clone(session_id)) {
            self.handled_order.push_back(Arc::clone(session_id));
            if self.handled_order.len() > HANDLED_KEPT {
                if let Some(old) = self.handled_order.pop_front() {
                    self.handled.remove(&old);
                }
            }
        }
    }

    /// The recovery whose current attempt `session_id` is, if any.
    pub fn current_of(&self, session_id: &str) -> Option<Arc<str>> {
        let id = self.by_session.get(session_id)?;
        let rec = self.recoveries.get(id)?;
        (rec.current.as_deref() == Some(session_id)).then(|| Arc::clone(id))
    }

    /// A crash analysed: counted against the recovery whose new session it was, left
    /// to its restarter, or a new recovery (when enabled).
    pub fn crash_analyzed(
        &mut self,
        session_id: &Arc<str>,
        report: CrashReport,
        analysis: CrashAnalysis,
        restarter: Option<&'static str>,
        now: SystemTime,
        step: &mut Step,
    ) {
        if let Some(id) = self.current_of(session_id) {
            let error = format!("its new session {session_id} crashed ({})", analysis.crash_type);
            if let Some(rec) = self.recoveries.get_mut(&id) {
                rec.state.analysis = analysis;
            }
            self.attempt_failed(&id, error, now, step);
            return;
        }
        if let Some(owner) = restarter {
            step.events.push(SpawnerEvent::RecoveryDeferred { session_id: Arc::clone(session_id), owner });
            return;
        }
        if !self.config.enabled {
            return;
        }
        self.seq += 1;
        let state = RecoveryState {
            session_id: session_id.to_string(),
            crash_report: report,
            attempts: Vec::new(),
            status: RecoveryStatus::Pending,
            started_at: now,
            completed_at: None,
            analysis,
        };
        let rec = Recovery { seq: self.seq, state, latest: Arc::clone(session_id), current: None };
        self.recoveries.insert(Arc::clone(session_id), rec);
        self.started += 1;
        self.schedule(session_id, now, step);
    }

    /// Sets up the next attempt: after its backoff, or on a manual trigger; fails the
    /// recovery past `max_retries`.
    fn schedule(&mut self, id: &Arc<str>, now: SystemTime, step: &mut Step) {
        let Some(rec) = self.recoveries.get_mut(id) else { return };
        let n = rec.state.attempts.len() as u32 + 1;
        if n > self.config.max_retries {
            let tried = self.config.max_retries;
            let reason = if tried == 0 {
                "maxRetries is 0".to_owned()
            } else {
                format!("the session did not recover in {tried} attempt(s)")
            };
            self.fail(id, reason, now, step);
            return;
        }
        rec.state.status = RecoveryStatus::Pending;
        if self.config.strategy == Strategy::Manual {
            return;
        }
        step.effects.push(Effect::Arm { recovery: Arc::clone(id), delay: self.config.delay_before(n) });
    }

    /// The recovery's timer went off: its next attempt, unless the storm limit holds it.
    pub fn timer_fired(&mut self, id: &Arc<str>, now: SystemTime, step: &mut Step) {
        if self.recoveries.get(id).is_some_and(|r| r.state.status == RecoveryStatus::Pending) {
            self.attempt(id, false, now, step);
        }
    }

    /// Begins the next attempt: recorded, `in_progress`, and its session to start.
    /// Outside a manual trigger, the storm limit may hold it (an `Arm` until the
    /// window has room).
    fn attempt(&mut self, id: &Arc<str>, manual: bool, now: SystemTime, step: &mut Step) {
        while self.starts.front().is_some_and(|t| *t + STORM_WINDOW <= now) {
            self.starts.pop_front();
        }
        let Some(rec) = self.recoveries.get_mut(id) else { return };
        let n = rec.state.attempts.len() as u32 + 1;
        if !manual && self.starts.len() >= self.config.max_recoveries_per_minute as usize {
            let until = self.starts[0] + STORM_WINDOW;
            step.events.push(SpawnerEvent::RecoveryThrottled { session_id: Arc::clone(id), attempt_number: n, until });
            let delay = until.duration_since(now).unwrap_or(Duration::ZERO);
            step.effects.push(Effect::Arm { recovery: Arc::clone(id), delay });
            return;
        }
        self.starts.push_back(now);
        self.attempts += 1;
        rec.state.attempts.push(RecoveryAttempt {
            session_id: id.to_string(),
            attempt_number: n,
            timestamp: now,
            strategy: self.config.strategy,
            success: false,
            error: None,
            new_session_id: None,
            resumed: None,
            note: None,
        });
        rec.state.status = RecoveryStatus::InProgress;
        let analysis = Box::new(rec.state.analysis.clone());
        step.events.push(SpawnerEvent::RecoveryAttempt { session_id: Arc::clone(id), attempt_number: n, analysis });
        step.effects.push(Effect::Respawn { recovery: Arc::clone(id), attempt: n, resume: true });
    }

    /// What attempt `attempt`'s respawn needs, if the recovery still waits for it.
    pub fn respawn_inputs(&self, id: &str, attempt: u32) -> Option<RespawnInputs> {
        let rec = self.recoveries.get(id)?;
        let waiting = rec.state.status == RecoveryStatus::InProgress
            && rec.current.is_none()
            && rec.state.attempts.len() as u32 == attempt;
        waiting.then(|| RespawnInputs {
            original: Arc::from(rec.state.session_id.as_str()),
            latest: Arc::clone(&rec.latest),
            analysis: rec.state.analysis.clone(),
        })
    }

    /// The attempt's session started (`Ok(new session, resumed, note)`) or could not.
    /// A recovery that was abandoned meanwhile lets the session run, unwatched.
    pub fn respawned(
        &mut self,
        id: &Arc<str>,
        attempt: u32,
        result: Result<(Arc<str>, bool, Option<String>), String>,
        now: SystemTime,
        step: &mut Step,
    ) {
        let Some(rec) = self.recoveries.get_mut(id) else { return };
        if rec.state.status != RecoveryStatus::InProgress || rec.state.attempts.len() as u32 != attempt {
            return;
        }
        let (new_id, resumed, note) = match result {
            Ok(started) => started,
            Err(error) => {
                if let Some(last) = rec.state.attempts.last_mut() {
                    last.error = Some(error.clone());
                }
                self.attempt_failed(id, error, now, step);
                return;
            }
        };
        if let Some(last) = rec.state.attempts.last_mut() {
            last.new_session_id = Some(new_id.to_string());
            last.resumed = Some(resumed);
            if let Some(note) = note {
                add_note(last, note);
            }
        }
        rec.current = Some(Arc::clone(&new_id));
        self.by_session.insert(Arc::clone(&new_id), Arc::clone(id));
        step.events.push(SpawnerEvent::RecoveryRespawned {
            session_id: Arc::clone(id),
            attempt_number: attempt,
            new_session_id: new_id,
            resumed,
        });
    }

    /// The current attempt's session ended: success, a resume that never got going (the
    /// same attempt again, fresh), a crash to handle, or a failed attempt.
    pub fn attempt_ended(&mut self, session_id: &Arc<str>, status: &SessionStatus, reached_init: bool, now: SystemTime, step: &mut Step) {
        let Some(id) = self.current_of(session_id) else { return };
        let handles = self.handles(status);
        let Some(rec) = self.recoveries.get_mut(&id) else { return };
        let Some(last) = rec.state.attempts.last_mut() else { return };
        let n = last.attempt_number;
        if status.state == SessionState::Completed {
            last.success = true;
            rec.current = None;
            self.finish(&id, RecoveryStatus::Succeeded, now, step);
            step.events.push(SpawnerEvent::RecoverySucceeded {
                session_id: Arc::clone(&id),
                attempt_number: n,
                new_session_id: Arc::clone(session_id),
            });
            return;
        }
        // A resume that never reached Claude Code's `init` (no transcript, a refused id):
        // the same attempt again, with a fresh session and the original task.
        if last.resumed == Some(true) && !reached_init {
            let why = [status.stderr.trim(), status.error_message.as_deref().unwrap_or("").trim(), status.state.as_str()]
                .into_iter()
                .find(|t| !t.is_empty())
                .and_then(|t| t.lines().last())
                .unwrap_or_default()
                .to_owned();
            last.resumed = Some(false);
            add_note(last, format!("resume failed at start-up ({why}): fresh session with the original task"));
            rec.current = None;
            self.remember(session_id);
            step.effects.push(Effect::Respawn { recovery: id, attempt: n, resume: false });
            return;
        }
        rec.latest = Arc::clone(session_id);
        if handles {
            step.effects.push(Effect::HandleCrash { session_id: Arc::clone(session_id), state: status.state });
            return;
        }
        if status.state == SessionState::Terminated {
            let error = format!("its new session {session_id} was terminated");
            last.error = Some(error.clone());
            rec.current = None;
            self.remember(session_id);
            step.events.push(SpawnerEvent::RecoveryAttemptFailed { session_id: Arc::clone(&id), attempt_number: n, error });
            self.fail(&id, format!("the new session {session_id} was terminated"), now, step);
            return;
        }
        self.remember(session_id);
        let ended = match &status.error_message {
            Some(message) => format!("{} ({message})", status.state),
            None => status.state.to_string(),
        };
        self.attempt_failed(&id, format!("its new session {session_id} ended {ended}"), now, step);
    }

    fn attempt_failed(&mut self, id: &Arc<str>, error: String, now: SystemTime, step: &mut Step) {
        let Some(rec) = self.recoveries.get_mut(id) else { return };
        let Some(last) = rec.state.attempts.last_mut() else { return };
        if last.error.is_none() {
            last.error = Some(error.clone());
        }
        let n = last.attempt_number;
        rec.current = None;
        step.events.push(SpawnerEvent::RecoveryAttemptFailed { session_id: Arc::clone(id), attempt_number: n, error });
        self.schedule(id, now, step);
    }

    fn fail(&mut self, id: &Arc<str>, reason: String, now: SystemTime, step: &mut Step) {
        self.finish(id, RecoveryStatus::Failed, now, step);
        step.events.push(SpawnerEvent::RecoveryFailed { session_id: Arc::clone(id), reason });
    }

    fn finish(&mut self, id: &Arc<str>, status: RecoveryStatus, now: SystemTime, step: &mut Step) {
        let Some(rec) = self.recoveries.get_mut(id) else { return };
        step.effects.push(Effect::Disarm { recovery: Arc::clone(id) });
        rec.state.status = status;
        rec.state.completed_at = Some(now);
        match status {
            RecoveryStatus::Succeeded => self.succeeded += 1,
            RecoveryStatus::Failed => self.failed += 1,
            _ => self.abandoned += 1,
        }
        self.finished.push_back(Arc::clone(id));
        if self.finished.len() > FINISHED_KEPT {
            if let Some(old) = self.finished.pop_front().and_then(|old| self.recoveries.remove(&old)) {
                for a in &old.state.attempts {
                    if let Some(new_id) = &a.new_session_id {
                        self.by_session.remove(new_id.as_str());
                    }
                }
            }
        }
    }

    fn find(&self, session_id: &str) -> Option<&Recovery> {
        self.recoveries.get(session_id).or_else(|| self.recoveries.get(self.by_session.get(session_id)?))
    }

    /// The daemon's explicit choice: the next attempt now, past the storm limit.
    pub fn trigger(&mut self, session_id: &str, now: SystemTime, step: &mut Step) -> Result<bool, RecoveryError> {
        let rec = self.find(session_id).ok_or_else(|| RecoveryError::UnknownRecovery(session_id.to_owned()))?;
        let id: Arc<str> = Arc::from(rec.state.session_id.as_str());
        match rec.state.status {
            RecoveryStatus::InProgress => return Err(RecoveryError::InProgress(id.to_string())),
            RecoveryStatus::Pending => {}
            _ => return Ok(false),
        }
        step.effects.push(Effect::Disarm { recovery: Arc::clone(&id) });
        self.attempt(&id, true, now, step);
        Ok(true)
    }

    /// Stops a recovery; a session already started keeps running, unwatched.
    pub fn abandon(&mut self, session_id: &str, now: SystemTime, step: &mut Step) -> Result<(), RecoveryError> {
        let rec = self.find(session_id).ok_or_else(|| RecoveryError::UnknownRecovery(session_id.to_owned()))?;
        if !rec.state.status.is_active() {
            return Ok(());
        }
        let id: Arc<str> = Arc::from(rec.state.session_id.as_str());
        if let Some(rec) = self.recoveries.get_mut(&id) {
            rec.current = None;
        }
        self.finish(&id, RecoveryStatus::Abandoned, now, step);
        step.events.push(SpawnerEvent::RecoveryAbandoned { session_id: id });
        Ok(())
    }

    pub fn status(&self, session_id: &str) -> Option<RecoveryState> {
        self.find(session_id).map(|r| r.state.clone())
    }

    /// Recoveries pending or in progress, oldest first.
    pub fn active(&self) -> Vec<RecoveryState> {
        let mut active: Vec<&Recovery> = self.recoveries.values().filter(|r| r.state.status.is_active()).collect();
        active.sort_by_key(|r| r.seq);
        active.into_iter().map(|r| r.state.clone()).collect()
    }

    pub fn stats(&self) -> RecoveryStatistics {
        let per = |n: u64| if self.started == 0 { 0.0 } else { n as f64 / self.started as f64 };
        RecoveryStatistics {
            total_crashes: self.crashes,
            total_recovery_attempts: self.attempts,
            successful_recoveries: self.succeeded,
            failed_recoveries: self.failed,
            abandoned_recoveries: self.abandoned,
            recovery_rate: per(self.succeeded),
            avg_attempts_per_recovery: per(self.attempts),
        }
    }
}

/// Appends to an attempt's note.
fn add_note(attempt: &mut RecoveryAttempt, note: String) {
    attempt.note = Some(match attempt.note.take() {
        Some(earlier) => format!("{earlier}; {note}"),
        None => note,
    });
}
