//! The pool's task: what comes from the spawner (session ends, rate limits, spawn
//! results) and drains, taken from one channel in order, and the timers only the task
//! keeps (the end of a rate-limit pause, drain deadlines).

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{Command, Core};
use crate::error::SpawnError;
use crate::event::SpawnerEvent;
use crate::notice::{Busy, Notice};
use crate::spawner::SpawnResult;
use crate::status::SessionStatus;
use crate::pool::request::{gave_up_message, Allocation, PoolFailure, RequestKey, RequestOutcome};
use crate::pool::scheduler::Outcome;

/// A drain waiting for the pool to be idle.
struct Waiter {
    deadline: Instant,
    stopped: bool,
    reply: oneshot::Sender<()>,
    _busy: Busy,
}

/// What only the task touches: its timers and drains.
#[derive(Default)]
struct Timers {
    resume_at: Option<Instant>,
    drains: Vec<Waiter>,
    drained: bool,
}

pub(super) async fn run<K: RequestKey>(core: Weak<Core<K>>, mut commands: mpsc::UnboundedReceiver<(Command<K>, Busy)>) {
    let mut timers = Timers::default();
    loop {
        let deadline = timers.drains.iter().filter(|w| !w.stopped).map(|w| w.deadline).min();
        let next = [timers.resume_at, deadline].into_iter().flatten().min();
        let command = tokio::select! {
            command = commands.recv() => match command {
                Some(command) => Some(command),
                None => break,
            },
            _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => None,
        };
        let Some(core) = core.upgrade() else { break };
        match command {
            Some((command, _busy)) => core.on(command, &mut timers),
            None => core.on_time(&mut timers),
        }
        core.check_drained(&mut timers);
        core.release_if_idle();
    }
}

impl<K: RequestKey> Core<K> {
    fn on(&self, command: Command<K>, timers: &mut Timers) {
        match command {
            Command::Spawned { key, session_id, result } => self.spawned(key, session_id, result),
            Command::Notice(Notice::Ended { session_id, status, .. }) => self.session_ended(&session_id, status),
            Command::Notice(Notice::RateLimited { session_id, until, reason }) => {
                {
                    let mut table = self.table.lock();
                    let ours = table.slots.contains_key(&session_id);
                    if !ours || table.scheduler.is_draining() || !table.scheduler.throttle(until) {
                        return;
                    }
                }
                let wait = until.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
                timers.resume_at = Some(Instant::now() + wait);
                self.emit(SpawnerEvent::PoolThrottled { until, reason });
            }
            Command::Drain { timeout, reply } => {
                timers.resume_at = None;
                let busy = Busy::new(&self.activity);
                timers.drains.push(Waiter { deadline: Instant::now() + timeout, stopped: false, reply, _busy: busy });
            }
        }
    }

    fn on_time(&self, timers: &mut Timers) {
        let now = Instant::now();
        if timers.resume_at.is_some_and(|at| at <= now) {
            timers.resume_at = None;
            let (resumed, until) = {
                let mut table = self.table.lock();
                let resumed = table.scheduler.resume_if_due(SystemTime::now());
                (resumed, table.scheduler.throttled_until())
            };
            if resumed {
                self.emit(SpawnerEvent::PoolResumed);
                self.admit();
            } else if let Some(until) = until {
                timers.resume_at = Some(now + until.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO));
            }
        }
        if timers.drains.iter().any(|w| !w.stopped && w.deadline <= now) {
            for w in timers.drains.iter_mut().filter(|w| w.deadline <= now) {
                w.stopped = true;
            }
            for id in self.session_ids() {
                // A session that ended meanwhile is what drain waits for anyway.
                let _ = self.spawner.request_stop(&id, true);
            }
        }
    }

    fn check_drained(&self, timers: &mut Timers) {
        if timers.drains.is_empty() || self.table.lock().scheduler.active_count() > 0 {
            return;
        }
        if !timers.drained {
            timers.drained = true;
            self.emit(SpawnerEvent::PoolDrained);
        }
        for w in timers.drains.drain(..) {
            let _ = w.reply.send(());
        }
    }

    pub(super) fn spawned(&self, key: K, session_id: Arc<str>, result: Result<SpawnResult, SpawnError>) {
        let session = match result {
            Ok(session) => session,
            Err(error) => {
                let entry = {
                    let mut table = self.table.lock();
                    table.slots.remove(&session_id);
                    table.scheduler.spawn_failed(&key);
                    table.remove(&key)
                };
                if let Some(entry) = entry {
                    let message = error.to_string();
                    self.fail(&key, entry, PoolFailure::Spawn(error), message);
                }
                self.admit();
                return;
            }
        };
        let (first, early_end) = {
            let mut table = self.table.lock();
            let early_end = table.slots.get_mut(&session_id).and_then(|slot| {
                slot.allocated = true;
                slot.early_end.take()
            });
            let first = table.entries.get_mut(&key).and_then(|e| {
                let first = !e.allocated;
                e.allocated = true;
                first.then(|| (e.allocation.take(), e.outcome_rx.take()))
            });
            (first, early_end)
        };
        self.emit(SpawnerEvent::SessionAllocated { request_id: key.id(), session_id: Arc::clone(&session_id), host: None, status: None });
        if let Some((Some(allocation), Some(outcome))) = first {
            let request_id = key.id().to_string();
            let _ = allocation.send(Ok(Allocation { request_id, session, outcome: RequestOutcome(outcome), host: None }));
        }
        if let Some(status) = early_end {
            self.session_ended(&session_id, status);
        }
    }

    fn session_ended(&self, session_id: &Arc<str>, status: Arc<SessionStatus>) {
        let (key, outcome, entry, draining) = {
            let mut table = self.table.lock();
            let Some(slot) = table.slots.get_mut(session_id) else { return };
            if !slot.allocated {
                // Handled once the spawn's result is in (a failed spawn ends too).
                slot.early_end = Some(status);
                return;
            }
            let key = slot.key.clone();
            table.slots.remove(session_id);
            let ms = status.execution_time_ms.unwrap_or(0);
            let outcome = table.scheduler.session_ended(&key, status.state, ms);
            let entry = match outcome {
                Some(Outcome::Requeued { .. }) | None => None,
                Some(_) => table.remove(&key),
            };
            (key, outcome, entry, table.scheduler.is_draining())
        };
        let owned = || Box::new((*status).clone());
        self.emit(SpawnerEvent::SessionReleased { session_id: Arc::clone(session_id), status: owned(), request_id: None, host: None });
        match (outcome, entry) {
            (Some(Outcome::Requeued { attempt }), _) => {
                let event = SpawnerEvent::SessionRecovering { session_id: Arc::clone(session_id), request_id: key.id(), attempt, host: None };
                self.emit(event)
            }
            (Some(Outcome::GaveUp), Some(entry)) => {
                let message = gave_up_message(&key.id(), &status, draining);
                self.fail(&key, entry, PoolFailure::GaveUp(owned()), message);
            }
            (_, Some(mut entry)) => {
                self.emit(SpawnerEvent::RequestCompleted { request_id: key.id(), status: owned() });
                if let Some(outcome) = entry.outcome.take() {
                    let _ = outcome.send(Ok((*status).clone()));
                }
            }
            _ => {}
        }
        self.admit();
    }
}
