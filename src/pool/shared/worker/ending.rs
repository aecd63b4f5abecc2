//! How a run's end reaches the queue: a finish or a release, sent once the run ends
//! and again on every tick while the queue cannot be reached, then the run is
//! dropped.

use std::sync::Arc;

use super::super::host::{Host, Op};
use super::super::wire::Ended;
use super::super::SharedCore;
use crate::pool::queue::{FinishOutcome, QueueError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EndAs {
    Completed,
    Failed,
    Cancelled,
    Release,
}

/// What goes to the queue when a run ends: a finish (its detail serialised once, only
/// for the outcomes that carry one), or a release with the next attempt's note.
#[derive(Clone)]
pub(super) enum Ending {
    Finish(FinishOutcome, u64),
    Release(Option<String>),
}

impl Host {
    /// Reports how the run ended (again on every tick while the queue cannot be
    /// reached). `note`: for a release, what the next attempt reads.
    pub(super) fn end(&mut self, core: &SharedCore, id: &Arc<str>, outcome: EndAs, ms: u64, detail: Ended, note: Option<String>) {
        let Some(run) = self.held.get_mut(id) else { return };
        run.retry_at = None;
        run.ending = Some(match outcome {
            EndAs::Completed => Ending::Finish(FinishOutcome::Completed(detail.to_json()), ms),
            EndAs::Failed => Ending::Finish(FinishOutcome::Failed(detail.to_json()), ms),
            EndAs::Cancelled => Ending::Finish(FinishOutcome::Cancelled, ms),
            EndAs::Release => Ending::Release(note),
        });
        self.send_ending(core, id);
        self.pump(core);
    }

    pub(super) fn send_ending(&mut self, core: &SharedCore, id: &Arc<str>) {
        let Some(queue) = self.queue.clone() else { return };
        let Some(run) = self.held.get_mut(id) else { return };
        let Some(ending) = run.ending.as_ref().filter(|_| !run.sending) else { return };
        run.sending = true;
        // A `started` that has not got through goes first, so the requester learns of the session.
        let release = matches!(ending, Ending::Release(_));
        let unannounced = run.unannounced.clone().filter(|_| !release);
        let ending = ending.clone();
        let (host, id, seq) = (Arc::clone(&core.settings.host), Arc::clone(id), run.seq);
        self.ops.spawn(async move {
            if let Some(detail) = &unannounced {
                if let Err(e) = queue.started(&host, &id, detail).await {
                    return Op::EndSent { id, seq, announced: false, result: Err(e) };
                }
            }
            let result = match ending {
                Ending::Release(note) => queue.release_with_note(&host, &id, note.as_deref()).await,
                Ending::Finish(outcome, ms) => queue.finish(&host, &id, outcome, ms).await,
            };
            Op::EndSent { id, seq, announced: unannounced.is_some(), result }
        });
    }

    pub(in crate::pool::shared) fn end_sent(&mut self, core: &SharedCore, id: &Arc<str>, seq: u64, announced: bool, result: Result<(), QueueError>) {
        let Some(run) = self.held.get_mut(id).filter(|r| r.seq == seq) else { return };
        run.sending = false;
        if announced {
            run.unannounced = None;
        }
        match result {
            Ok(()) => self.drop_run(id),
            Err(e) => {
                self.op_failed(core, &e);
                // Only an outage is worth another try; otherwise (not ours any more: the
                // lease lapsed and the queue moved on; or a refusal) the queue's lease
                // rules decide.
                if !matches!(e, QueueError::Unavailable { .. }) {
                    self.drop_run(id);
                }
            }
        }
    }

    pub(in crate::pool::shared) fn drop_run(&mut self, id: &Arc<str>) {
        // Its session reports to nobody now (one still launching is stopped when its
        // spawn reports): an end must not reach a later run of the same request.
        if let Some(session_id) = self.held.remove(id).and_then(|run| run.session_id) {
            self.by_session.remove(&session_id);
        }
    }

}
