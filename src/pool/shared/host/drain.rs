//! The host's draining and closing: a drain waits for the requests it runs, hands
//! them back to the queue when its time is up, leaves the queue, and then lets a
//! closing host fail what it asked for and let go of the queue.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Drain, Host, Op};
use crate::event::SpawnerEvent;
use crate::pool::shared::worker::Stop;
use crate::pool::shared::SharedCore;

impl Host {
    pub(super) fn drain(&mut self, core: &SharedCore, timeout: Duration) {
        if self.drained {
            for waiter in self.drain_waiters.drain(..) {
                let _ = waiter.send(());
            }
            self.finish_close(core);
            return;
        }
        if let Some(Drain::Waiting(at)) = &mut self.draining {
            *at = (*at).min(Instant::now() + timeout);
        }
        if self.draining.is_some() {
            return;
        }
        self.draining = Some(Drain::Waiting(Instant::now() + timeout));
        core.view.lock().draining = true;
        core.emit(SpawnerEvent::PoolDraining);
    }

    /// Handed over, not dropped: each running request goes back to the front of its
    /// priority (the last taken first, so their order stays), and the host that takes
    /// it continues the conversation where it can.
    pub(super) fn hand_back(&mut self, core: &SharedCore) {
        let mut runs: Vec<(u64, Arc<str>)> = self.held.values().map(|r| (r.seq, Arc::clone(&r.id))).collect();
        runs.sort_unstable_by_key(|r| std::cmp::Reverse(r.0));
        for (_, id) in runs {
            self.stop(core, &id, Stop::Release);
        }
    }

    pub(super) fn idle(&self) -> bool {
        self.held.is_empty() && !self.taking
    }

    /// After each wake: a drain that can move on does, and the view is brought up to date.
    pub(super) fn settle(&mut self, core: &SharedCore) {
        let now = Instant::now();
        match self.draining {
            Some(Drain::Waiting(at)) if !self.idle() && now >= at => {
                self.hand_back(core);
                self.draining = Some(Drain::HandedBack(now + core.settings.lease));
            }
            Some(Drain::HandedBack(at)) if !self.idle() && now >= at => {
                // Ends that cannot be reported (the queue away): by now the queue hands
                // those requests on by itself.
                let ids: Vec<Arc<str>> = self.held.keys().cloned().collect();
                for id in ids {
                    self.drop_run(&id);
                }
            }
            _ => {}
        }
        if matches!(self.draining, Some(Drain::Waiting(_) | Drain::HandedBack(_))) && self.idle() {
            self.draining = Some(Drain::Leaving);
            match self.queue.clone() {
                Some(queue) => {
                    let host = Arc::clone(&core.settings.host);
                    self.ops.spawn(async move { Op::Left(queue.leave(&host).await) });
                }
                None => self.drained(core),
            }
        }
        self.update_view(core);
    }

    pub(super) fn drained(&mut self, core: &SharedCore) {
        self.drained = true;
        core.emit(SpawnerEvent::PoolDrained);
        for waiter in self.drain_waiters.drain(..) {
            let _ = waiter.send(());
        }
        self.finish_close(core);
    }

    /// Once drained: a closing host fails what it asked for (it stays in the queue for
    /// the other hosts) and lets go of the queue.
    pub(super) fn finish_close(&mut self, core: &SharedCore) {
        if self.closing.is_empty() || !self.drained {
            return;
        }
        self.closed = true;
        core.view.lock().closed = true;
        let ids: Vec<Arc<str>> = self.own.keys().cloned().collect();
        for id in ids {
            let message = format!("Pool is closed: request {id} stays in the shared queue for the other hosts");
            self.settle_failed(core, &id, crate::pool::PoolFailure::Closed, message);
        }
        self.events = None;
        self.queue = None;
        for reply in self.closing.drain(..) {
            let _ = reply.send(());
        }
    }
}
