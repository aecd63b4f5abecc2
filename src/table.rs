//! Which sessions a spawner knows. A session is in the *active set* from spawn until
//! `cleanup_completed_sessions` removes it, and in the *history* (the last
//! `history_size` ended sessions) from its end. Both are views of one map, so every
//! session is counted once. An ended session that ages out of the history also
//! leaves the active set, which keeps memory bounded for daemons that never clean up.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::session::Session;

struct Entry {
    session: Arc<Session>,
    in_active_set: bool,
    in_history: bool,
}

pub(crate) struct SessionTable {
    sessions: HashMap<Arc<str>, Entry>,
    /// Ended sessions, oldest first.
    history: VecDeque<Arc<str>>,
    history_size: usize,
}

impl SessionTable {
    pub fn new(history_size: usize) -> Self {
        Self {
            sessions: HashMap::new(),
            history: VecDeque::new(),
            history_size,
        }
    }

    pub fn insert(&mut self, session: Arc<Session>) {
        let id = Arc::clone(&session.id);
        self.sessions.insert(
            id,
            Entry {
                session,
                in_active_set: true,
                in_history: false,
            },
        );
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Session>> {
        self.sessions.get(id).map(|e| &e.session)
    }

    pub fn on_ended(&mut self, session: &Session) {
        let Some(entry) = self.sessions.get_mut(&session.id) else {
            return;
        };
        if entry.in_history {
            return;
        }
        entry.in_history = true;
        self.history.push_back(Arc::clone(&session.id));
        while self.history.len() > self.history_size {
            let Some(old) = self.history.pop_front() else { break };
            self.sessions.remove(&old);
        }
    }

    /// Sessions in the active set, in spawn order.
    pub fn active(&self) -> Vec<Arc<Session>> {
        let mut active: Vec<_> = self
            .sessions
            .values()
            .filter(|e| e.in_active_set)
            .map(|e| Arc::clone(&e.session))
            .collect();
        active.sort_by_key(|s| s.seq);
        active
    }

    /// Ended sessions in the order they ended.
    pub fn history(&self) -> impl Iterator<Item = &Arc<Session>> {
        self.history.iter().filter_map(|id| self.get(id))
    }

    /// Every known session, once.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Session>> {
        self.sessions.values().map(|e| &e.session)
    }

    /// Removes ended sessions from the active set (they stay in the history).
    pub fn cleanup_ended(&mut self) -> usize {
        let mut removed = 0;
        self.sessions.retain(|_, e| {
            if e.in_active_set && e.session.state().is_ended() {
                e.in_active_set = false;
                removed += 1;
            }
            e.in_active_set || e.in_history
        });
        removed
    }
}
