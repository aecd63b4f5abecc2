//! [`RecoveryManager`]: watches a spawner it does not own and brings crashed
//! sessions back, as the contract's `SessionRecoveryManager` does.
//!
//! A session's end is booked in the spawner's notice of it, at once: its crash is
//! detected and analysed (or its attempt decided) before anything else can follow
//! from it, as the contract's listener on `session-ended` did; a pool's retry of the
//! same session never overtakes `crash-analyzed` or `recovery-deferred`. What needs
//! I/O or time goes to one task per manager: it keeps the timers (backoff, the storm
//! limit), writes dumps and looks for transcripts off the runtime (`spawn_blocking`),
//! and starts new sessions through the spawner. The rules are the
//! [`Book`]'s; its state sits behind a lock held only for a step (never across I/O
//! or the event handler), so queries, `abandon` and `trigger_manual_recovery` answer
//! at once, as the contract's synchronous methods must.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::SystemTime;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::analysis::{analyze, CrashAnalysis, CrashFacts};
use super::book::{Book, Effect, Step};
use super::config::RecoveryConfig;
use super::state::{RecoveryError, RecoveryState, RecoveryStatistics};
use crate::event::{EventHandler, SpawnerEvent};
use crate::notice::{Activity, Busy, Notice, Restarter};
use crate::spawner::Spawner;
use crate::status::{CrashReport, SessionState, SessionStatus};

enum Command {
    /// The end of an attempt's session that ended before its start was booked.
    Ended { session_id: Arc<str>, status: Arc<SessionStatus>, restarter: Option<Restarter>, reached_init: bool },
    /// A crash booked up to its dump, which is written before it is analysed.
    Dump(Crash),
    HandleCrash {
        session_id: Arc<str>,
        report: Option<CrashReport>,
        reply: oneshot::Sender<Result<(), RecoveryError>>,
    },
    /// Work a synchronous call decided (a manual attempt, a timer to drop).
    Effects(Vec<Effect>),
}

/// A crash detected and analysed, not booked yet.
struct Crash {
    session_id: Arc<str>,
    report: CrashReport,
    analysis: CrashAnalysis,
    owner: Option<&'static str>,
}

struct Inner {
    spawner: Spawner,
    book: Mutex<Book>,
    handler: Box<dyn EventHandler>,
    commands: mpsc::UnboundedSender<(Command, Busy)>,
    activity: Option<Arc<dyn Activity>>,
    watch: u64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The watcher holds the last other sender: the task ends with it.
        self.spawner.unwatch(self.watch);
    }
}

/// Recovers a spawner's crashed sessions. Dropping the last clone stops it (sessions
/// it started keep running).
#[derive(Clone)]
pub struct RecoveryManager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RecoveryManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoveryManager").field("config", self.inner.book.lock().config()).finish_non_exhaustive()
    }
}

impl RecoveryManager {
    /// A manager over `spawner` (its sessions, its runtime); `handler` gets the
    /// manager's events, after the session event each follows from.
    pub fn new(spawner: &Spawner, config: RecoveryConfig, handler: impl EventHandler) -> Self {
        Self::with_activity(spawner, config, Box::new(handler), None)
    }

    pub(crate) fn with_activity(
        spawner: &Spawner,
        config: RecoveryConfig,
        handler: Box<dyn EventHandler>,
        activity: Option<Arc<dyn Activity>>,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Arc::new_cyclic(|me: &Weak<Inner>| {
            let me = me.clone();
            let watch = spawner.watch(move |notice| {
                if let (Notice::Ended { session_id, status, restarter, reached_init }, Some(inner)) = (notice, me.upgrade()) {
                    inner.ended(session_id, status, *restarter, *reached_init);
                }
            });
            Inner { spawner: spawner.clone(), book: Mutex::new(Book::new(config)), handler, commands: tx, activity, watch }
        });
        spawner.runtime().spawn(run(Arc::downgrade(&inner), rx));
        Self { inner }
    }

    pub fn config(&self) -> RecoveryConfig {
        self.inner.book.lock().config().clone()
    }

    /// Handles a crash the daemon reports: recorded, dumped, analysed, then recovered
    /// (or left to the pool that restarts it). A session handled already is left
    /// alone. `report` stands in for the spawner's facts when it no longer knows the
    /// session.
    pub async fn handle_crash(&self, session_id: &str, report: Option<CrashReport>) -> Result<(), RecoveryError> {
        let (reply, answer) = oneshot::channel();
        let command = Command::HandleCrash { session_id: session_id.into(), report, reply };
        self.inner.send(command);
        answer.await.unwrap_or(Err(RecoveryError::Gone))
    }

    /// The recovery of `session_id` (the crashed session, or one of its attempts').
    pub fn recovery_status(&self, session_id: &str) -> Option<RecoveryState> {
        self.inner.book.lock().status(session_id)
    }

    /// Recoveries pending or in progress, oldest first.
    pub fn active_recoveries(&self) -> Vec<RecoveryState> {
        self.inner.book.lock().active()
    }

    pub fn recovery_stats(&self) -> RecoveryStatistics {
        self.inner.book.lock().stats()
    }

    /// Begins the next attempt of a pending recovery now, past its backoff and the
    /// storm limit; false when the recovery is over. Its session starts on the
    /// manager's task (`RecoveryRespawned` follows).
    pub fn trigger_manual_recovery(&self, session_id: &str) -> Result<bool, RecoveryError> {
        let mut step = Step::default();
        let started = self.inner.book.lock().trigger(session_id, SystemTime::now(), &mut step)?;
        self.inner.report(step);
        Ok(started)
    }

    /// Abandons a pending or running recovery (`RecoveryAbandoned`); a session it
    /// started keeps running.
    pub fn abandon_recovery(&self, session_id: &str) -> Result<(), RecoveryError> {
        let mut step = Step::default();
        self.inner.book.lock().abandon(session_id, SystemTime::now(), &mut step)?;
        self.inner.report(step);
        Ok(())
    }
}

impl Inner {
    fn send(&self, command: Command) {
        // The task lives as long as this manager.
        let _ = self.commands.send((command, Busy::new(&self.activity)));
    }

    fn emit(&self, event: SpawnerEvent) {
        crate::event::handle_guarded(&*self.handler, event, "recovery");
    }

    /// A session ended (the spawner's notice, in its call): its attempt is decided, or
    /// its crash booked, now; what needs I/O goes to the task.
    fn ended(&self, session_id: &Arc<str>, status: &Arc<SessionStatus>, restarter: Option<Restarter>, reached_init: bool) {
        let mut book = self.book.lock();
        if book.is_launching(session_id) {
            drop(book);
            // The task is starting it: decided there, once the start is booked.
            let (session_id, status) = (Arc::clone(session_id), Arc::clone(status));
            return self.send(Command::Ended { session_id, status, restarter, reached_init });
        }
        if book.current_of(session_id).is_some() {
            let mut step = Step::default();
            book.attempt_ended(session_id, status, reached_init, SystemTime::now(), &mut step);
            drop(book);
            return self.report(step);
        }
        let crash = !book.is_attempt_session(session_id) && book.handles(status);
        drop(book);
        if crash {
            match self.crashed(session_id, None, Some((status.state, restarter))) {
                Ok(Some(crash)) => self.send(Command::Dump(crash)),
                Ok(None) => {}
                Err(e) => self.emit(SpawnerEvent::RecoveryError { session_id: Arc::clone(session_id), code: e.code(), message: e.to_string() }),
            }
        }
    }

    /// A crash, up to its dump: recorded (`CrashDetected`) and analysed. With no dump
    /// to write it is booked here too (`analysed`); else what the task is to finish.
    /// `ended`: how it ended and who claimed it, from the spawner's notice (looked up
    /// otherwise).
    fn crashed(
        &self,
        session_id: &Arc<str>,
        report: Option<CrashReport>,
        ended: Option<(SessionState, Option<Restarter>)>,
    ) -> Result<Option<Crash>, RecoveryError> {
        let spawner = &self.spawner;
        if self.book.lock().was_handled(session_id) {
            return Ok(None);
        }
        let report = report
            .or_else(|| spawner.crash_report_for(session_id))
            .ok_or_else(|| RecoveryError::UnknownSession(session_id.to_string()))?;
        if !self.book.lock().first_crash(session_id) {
            return Ok(None);
        }
        self.emit(SpawnerEvent::CrashDetected { session_id: Arc::clone(session_id), crash_report: Box::new(report.clone()) });
        let facts = spawner.crash_facts(session_id).unwrap_or_else(|| CrashFacts::from_report(&report));
        let analysis = analyze(&facts);
        let (state, restarter) = match ended {
            Some(ended) => ended,
            None => (
                spawner.session_status(session_id).map_or(SessionState::Crashed, |s| s.state),
                spawner.restarter_of(session_id),
            ),
        };
        let owner = restarter.filter(|r| r.takes(state)).map(|r| r.owner);
        let crash = Crash { session_id: Arc::clone(session_id), report, analysis, owner };
        if self.book.lock().config().save_crash_dumps {
            return Ok(Some(crash));
        }
        let step = self.analysed(crash);
        self.report(step);
        Ok(None)
    }

    /// Books an analysed crash: counted against its recovery, left to its restarter, or
    /// recovered. `CrashAnalyzed` goes out once the book has it (a listener finds the
    /// recovery); the step's events follow.
    fn analysed(&self, crash: Crash) -> Step {
        let Crash { session_id, report, analysis, owner } = crash;
        let mut step = Step::default();
        let analyzed = SpawnerEvent::CrashAnalyzed { session_id: Arc::clone(&session_id), analysis: Box::new(analysis.clone()) };
        self.book.lock().crash_analyzed(&session_id, report, analysis, owner, SystemTime::now(), &mut step);
        self.emit(analyzed);
        step
    }

    /// A step taken outside the task: its events now, its effects on the task.
    fn report(&self, step: Step) {
        for event in step.events {
            self.emit(event);
        }
        if !step.effects.is_empty() {
            self.send(Command::Effects(step.effects));
        }
    }
}

/// Timers by recovery, each counted as work until it fires or is dropped.
type Timers = HashMap<Arc<str>, (Instant, Busy)>;

async fn run(inner: Weak<Inner>, mut commands: mpsc::UnboundedReceiver<(Command, Busy)>) {
    let mut timers = Timers::new();
    loop {
        let next = timers.values().map(|(at, _)| *at).min();
        let command = tokio::select! {
            command = commands.recv() => match command {
                Some(command) => Some(command),
                None => break,
            },
            _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => None,
        };
        let Some(inner) = inner.upgrade() else { break };
        let mut work = Work { inner: &inner, timers: &mut timers, pending: VecDeque::new() };
        match command {
            Some((command, _busy)) => work.command(command).await,
            None => {
                let now = Instant::now();
                let due: Vec<Arc<str>> = work.timers.iter().filter(|(_, (at, _))| *at <= now).map(|(id, _)| Arc::clone(id)).collect();
                for id in due {
                    // Still counted while the attempt it starts gets going.
                    let _busy = work.timers.remove(&id).map(|(_, busy)| busy);
                    let mut step = Step::default();
                    inner.book.lock().timer_fired(&id, SystemTime::now(), &mut step);
                    work.carry_out(step).await;
                }
            }
        }
    }
}

/// One turn of the task: a command or the due timers, carried out to the end.
struct Work<'a> {
    inner: &'a Inner,
    timers: &'a mut Timers,
    pending: VecDeque<Effect>,
}

impl Work<'_> {
    async fn command(&mut self, command: Command) {
        match command {
            Command::Ended { session_id, status, restarter, reached_init } => {
                self.inner.ended(&session_id, &status, restarter, reached_init);
            }
            Command::Dump(crash) => {
                self.dump_and_book(crash).await;
                self.drain().await;
            }
            Command::HandleCrash { session_id, report, reply } => {
                let result = self.handle(&session_id, report, None).await;
                self.drain().await;
                let _ = reply.send(result);
            }
            Command::Effects(effects) => {
                self.pending.extend(effects);
                self.drain().await;
            }
        }
    }

    /// Events now; effects in order, including those the effects lead to.
    async fn carry_out(&mut self, step: Step) {
        self.record(step);
        self.drain().await;
    }

    /// A step's events now, its effects queued.
    fn record(&mut self, step: Step) {
        for event in step.events {
            self.inner.emit(event);
        }
        self.pending.extend(step.effects);
    }

    async fn drain(&mut self) {
        while let Some(effect) = self.pending.pop_front() {
            let mut step = Step::default();
            match effect {
                Effect::Arm { recovery, delay } => {
                    let busy = Busy::new(&self.inner.activity);
                    self.timers.insert(recovery, (Instant::now() + delay, busy));
                }
                Effect::Disarm { recovery } => {
                    self.timers.remove(&recovery);
                }
                Effect::Respawn { recovery, attempt, resume } => {
                    let result = self.respawn(&recovery, attempt, resume).await;
                    let Some(result) = result else { continue };
                    let mut book = self.inner.book.lock();
                    if let Ok((new_id, ..)) = &result {
                        book.launched(new_id);
                    }
                    book.respawned(&recovery, attempt, result, SystemTime::now(), &mut step);
                }
                Effect::HandleCrash { session_id, state } => {
                    if let Err(e) = self.handle(&session_id, None, Some((state, None))).await {
                        self.inner.emit(SpawnerEvent::RecoveryError { session_id, code: e.code(), message: e.to_string() });
                    }
                    continue;
                }
            }
            self.record(step);
        }
    }

    /// Starts attempt `attempt`'s session: `None` when the recovery no longer waits
    /// for it (abandoned meanwhile).
    async fn respawn(&self, recovery: &str, attempt: u32, resume: bool) -> Option<Result<(Arc<str>, bool, Option<String>), String>> {
        let inputs = self.inner.book.lock().respawn_inputs(recovery, attempt)?;
        let spawner = self.inner.spawner.clone();
        let growth = self.inner.book.lock().config().timeout_growth;
        // Reading the transcript directory is disk I/O: not on the runtime's worker.
        let plan = tokio::task::spawn_blocking(move || {
            let latest = resume.then_some(&*inputs.latest);
            let env = |name: &str| spawner.inherited_var(name);
            spawner.respawn_plan(&inputs.original, latest, &inputs.analysis, attempt, growth, &env)
        })
        .await
        .ok()
        .flatten();
        let Some(plan) = plan else {
            return Some(Err(format!(
                "the config of session {recovery} is no longer kept (it left the spawner's history)"
            )));
        };
        // Known to the book before it can end: its end waits until its start is booked.
        let registered = self.inner.spawner.register_session(plan.config, None);
        let new_id = Arc::clone(registered.id());
        self.inner.book.lock().launching(&new_id);
        let pending = self.inner.spawner.start_registered(registered, None);
        Some(match pending.await {
            Ok(_) => Ok((new_id, plan.resumed, plan.note)),
            Err(e) => {
                // It ends `failed` without having run: no crash to recover.
                let mut book = self.inner.book.lock();
                book.ignore(&new_id);
                book.launched(&new_id);
                Err(e.to_string())
            }
        })
    }

    /// A crash the daemon reported, or one an attempt's end left to handle: booked as
    /// the spawner's notice books one, its dump (if any) written here.
    async fn handle(
        &mut self,
        session_id: &Arc<str>,
        report: Option<CrashReport>,
        ended: Option<(SessionState, Option<Restarter>)>,
    ) -> Result<(), RecoveryError> {
        if let Some(crash) = self.inner.crashed(session_id, report, ended)? {
            self.dump_and_book(crash).await;
        }
        Ok(())
    }

    /// Writes a crash's dump off the runtime (`CrashDumpSaved` or `CrashDumpFailed`),
    /// then books it.
    async fn dump_and_book(&mut self, crash: Crash) {
        let dir = self.inner.book.lock().config().crash_dump_directory.clone();
        let (spawner, id) = (self.inner.spawner.clone(), Arc::clone(&crash.session_id));
        let (json, analysis) = (crash.report.to_json(), crash.analysis.clone());
        let written = tokio::task::spawn_blocking(move || spawner.write_crash_dump(&id, &dir, json, &analysis)).await;
        let session_id = Arc::clone(&crash.session_id);
        self.inner.emit(match written {
            Ok(Ok(filepath)) => SpawnerEvent::CrashDumpSaved { session_id, filepath },
            Ok(Err(e)) => SpawnerEvent::CrashDumpFailed { message: format!("cannot write the crash dump of {session_id} {e}"), session_id },
            Err(_) => SpawnerEvent::CrashDumpFailed { message: format!("cannot write the crash dump of {session_id}: internal error"), session_id },
        });
        let step = self.inner.analysed(crash);
        self.record(step);
    }
}
