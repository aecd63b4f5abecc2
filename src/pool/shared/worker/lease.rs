//! Lease keeping: each tick a held request's lease is renewed (or, for a run that is
//! ending, its ending sent again), and a fence stops a session before an unrenewed
//! lease lapses, so it never runs while another host may take its request. A lease
//! found lost, a cancel the queue flags, or a hand-over stops the run's session.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::super::host::{Host, Op};
use super::super::SharedCore;
use super::{Run, Stop};
use crate::event::SpawnerEvent;
use crate::pool::queue::{QueueError, Renewal};

impl Run {
    /// When the session is stopped unless the lease is renewed first.
    pub(in crate::pool::shared) fn fence(&self, margin: Duration) -> Option<Instant> {
        let watched = !self.finishing() && self.stopping != Some(Stop::Lost);
        watched.then(|| self.held_until.checked_sub(margin).unwrap_or(self.held_until))
    }
}

impl Host {
    /// Stops the run's session: not ours any more, cancelled, or handed back.
    pub(in crate::pool::shared) fn stop(&mut self, core: &SharedCore, id: &Arc<str>, why: Stop) {
        let Some(run) = self.held.get_mut(id) else { return };
        if run.stopping == Some(Stop::Lost) || run.finishing() {
            return;
        }
        run.stopping = Some(why);
        if why == Stop::Lost {
            let (request_id, session_id, host) = (Arc::clone(id), run.session_id.clone(), Arc::clone(&core.settings.host));
            core.emit(SpawnerEvent::LeaseLost { request_id, session_id, host });
        }
        if std::mem::take(&mut run.awaiting_push) {
            // Never started: it ends here and now.
            let outcome = match why {
                Stop::Lost => return self.drop_run(id),
                Stop::Cancel => super::EndAs::Cancelled,
                Stop::Release => super::EndAs::Release,
            };
            return self.end(core, id, outcome, 0, super::Ended::default(), None);
        }
        match (&run.session_id, run.launching, run.retry_at) {
            (Some(session_id), false, _) => {
                // A session that ended meanwhile is what the stop wants anyway.
                let _ = core.spawner.request_stop(session_id, why != Stop::Lost);
            }
            // Between two sessions: nothing to stop, the retry is not made.
            (None, _, Some(_)) => self.retry(core, id),
            // Launching: stopped once its spawn reports.
            _ => {}
        }
    }

    pub(in crate::pool::shared) fn lost(&mut self, core: &SharedCore, id: &Arc<str>) {
        match self.held.get(id) {
            Some(run) if run.finishing() => self.drop_run(id),
            Some(_) => self.stop(core, id, Stop::Lost),
            None => {}
        }
    }

    /// Each tick, for each run: its ending again if it did not get through, else its
    /// `started` again if that did not, and its renewal.
    pub(in crate::pool::shared) fn keep(&mut self, core: &SharedCore, id: &Arc<str>) {
        let Some(run) = self.held.get(id) else { return };
        if run.finishing() {
            return self.send_ending(core, id);
        }
        if run.stopping == Some(Stop::Lost) {
            return;
        }
        self.announce(core, id);
        let (Some(queue), Some(run)) = (self.queue.clone(), self.held.get_mut(id)) else { return };
        if run.renewing {
            return;
        }
        run.renewing = true;
        let (host, lease, id, seq) = (Arc::clone(&core.settings.host), core.settings.lease, Arc::clone(id), run.seq);
        let sent_at = Instant::now();
        self.ops.spawn(async move {
            let result = queue.renew(&host, &id, lease).await;
            Op::Renewed { id, seq, sent_at, result }
        });
    }

    pub(in crate::pool::shared) fn renewed(
        &mut self,
        core: &SharedCore,
        id: &Arc<str>,
        seq: u64,
        sent_at: Instant,
        result: Result<Renewal, QueueError>,
    ) {
        let lease = core.settings.lease;
        let Some(run) = self.held.get_mut(id).filter(|r| r.seq == seq) else { return };
        run.renewing = false;
        match result {
            Ok(renewal) => {
                if !renewal.held {
                    self.answered(core);
                    return self.lost(core, id);
                }
                if run.stopping != Some(Stop::Lost) && !run.finishing() {
                    run.held_until = sent_at + lease;
                }
                let cancel = renewal.cancel_requested;
                self.answered(core);
                if cancel {
                    self.stop(core, id, Stop::Cancel);
                }
            }
            Err(e) => self.op_failed(core, &e),
        }
    }

    /// Fences that came due stop their sessions; retries that were waiting are made.
    pub(in crate::pool::shared) fn fences_and_retries(&mut self, core: &SharedCore, now: Instant) {
        let margin = core.settings.margin;
        let fenced: Vec<Arc<str>> = self.held.values().filter(|r| r.fence(margin).is_some_and(|at| at <= now)).map(|r| Arc::clone(&r.id)).collect();
        for id in fenced {
            self.stop(core, &id, Stop::Lost);
        }
        let due: Vec<Arc<str>> = self.held.values().filter(|r| r.retry_at.is_some_and(|at| at <= now)).map(|r| Arc::clone(&r.id)).collect();
        for id in due {
            self.retry(core, &id);
        }
    }
}
