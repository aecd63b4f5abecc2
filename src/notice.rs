//! What a spawner tells the components that work over it (pools and recovery
//! managers), apart from its event handler: when a session ended (with who restarts
//! it) and when one hit a rate limit. Components act on these notices, never on the
//! user-facing events, so a user's handler or listener cannot change their outcome.
//!
//! Also the activity hook: a count of work in flight (live sessions, requests a pool
//! holds, a recovery waiting for its backoff) that the Node binding uses to keep
//! Node's event loop alive exactly while something is going on. Work is counted in
//! the same call that hands it over, so the count never drops to zero in between.

use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::RwLock;

use crate::status::{SessionState, SessionStatus};

/// Who starts a session again when it ends in one of `states` (the recovery manager
/// leaves those endings alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restarter {
    pub owner: &'static str,
    pub states: &'static [SessionState],
}

impl Restarter {
    /// Whether this restarter takes a session that ended `state`.
    pub fn takes(&self, state: SessionState) -> bool {
        self.states.contains(&state)
    }
}

/// A session event for the components over a spawner.
#[derive(Debug, Clone)]
pub(crate) enum Notice {
    /// After the session's `SessionEnded` went to the spawner's handler.
    Ended {
        session_id: Arc<str>,
        status: Arc<SessionStatus>,
        restarter: Option<Restarter>,
        /// With Claude Code: its `system`/`init` message came (the conversation is
        /// live, which is how a resume that failed at start-up is told apart).
        reached_init: bool,
    },
    RateLimited { session_id: Arc<str>, until: SystemTime, reason: String },
}

type Watcher = Arc<dyn Fn(&Notice) + Send + Sync>;

/// The watchers of one spawner. Each is called on the thread where the notice arises
/// (a session's supervisor), so it must not block: it hands the notice to its
/// component's task, or books it under a short lock (the recovery manager, so its
/// events follow `SessionEnded` before anything can act on the end).
#[derive(Default)]
pub(crate) struct Watchers {
    list: RwLock<Vec<(u64, Watcher)>>,
    next: std::sync::atomic::AtomicU64,
}

impl Watchers {
    pub fn add(&self, watcher: Watcher) -> u64 {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.list.write().push((id, watcher));
        id
    }

    pub fn remove(&self, id: u64) {
        self.list.write().retain(|(i, _)| *i != id);
    }

    pub fn is_empty(&self) -> bool {
        self.list.read().is_empty()
    }

    /// Calls each watcher, on a copy of the list taken under the lock and called after
    /// it: a watcher may end its component (a recovery manager's watcher holds the
    /// manager's last reference for a moment when the daemon drops it meanwhile), whose
    /// removal of the watcher would otherwise wait on this very lock for ever.
    pub fn notify(&self, notice: &Notice) {
        let watchers: Vec<Watcher> = self.list.read().iter().map(|(_, watcher)| Arc::clone(watcher)).collect();
        for watcher in watchers {
            watcher(notice);
        }
    }
}

/// Counts work in flight (see the module docs).
pub(crate) trait Activity: Send + Sync + 'static {
    fn begin(&self);
    fn end(&self);
}

/// One unit of work, counted from its creation until it is dropped.
pub(crate) struct Busy(Option<Arc<dyn Activity>>);

impl Busy {
    pub fn new(activity: &Option<Arc<dyn Activity>>) -> Self {
        if let Some(a) = activity {
            a.begin();
        }
        Self(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Some(a) = self.0.take() {
            a.end();
        }
    }
}

impl std::fmt::Debug for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Busy")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watcher_that_removes_itself_while_notified_does_not_deadlock() {
        let watchers = Arc::new(Watchers::default());
        let id = Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
        let (on_list, seen) = (Arc::downgrade(&watchers), Arc::clone(&id));
        let own = watchers.add(Arc::new(move |_: &Notice| {
            // What dropping its component's last reference does.
            if let Some(list) = on_list.upgrade() {
                list.remove(seen.load(std::sync::atomic::Ordering::SeqCst));
            }
        }));
        id.store(own, std::sync::atomic::Ordering::SeqCst);
        let (done, finished) = std::sync::mpsc::channel();
        let notifying = Arc::clone(&watchers);
        std::thread::spawn(move || {
            notifying.notify(&Notice::RateLimited {
                session_id: "claude-session-x".into(),
                until: SystemTime::now(),
                reason: String::new(),
            });
            let _ = done.send(());
        });
        finished
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("notify did not return: the watcher's removal waited on the notifying lock");
        assert!(watchers.is_empty(), "the watcher removed itself");
    }
}
