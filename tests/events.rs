//! How events reach a handler: `EventHandler::together` groups the two reports of a
//! start that a binding passes down one queue, and nothing else.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use claude_session_spawner::*;
use support::*;

/// Notes each event with whether it came inside `together`.
#[derive(Default)]
struct Grouping {
    inside: AtomicBool,
    seen: Mutex<Vec<(&'static str, bool)>>,
}

impl Grouping {
    fn note(&self, what: &'static str) {
        let inside = self.inside.load(Ordering::SeqCst);
        self.seen.lock().unwrap().push((what, inside));
    }

    fn seen(&self) -> Vec<(&'static str, bool)> {
        self.seen.lock().unwrap().clone()
    }
}

struct Handler(Arc<Grouping>);

impl EventHandler for Handler {
    fn handle(&self, event: SpawnerEvent) {
        self.0.note(event.name());
    }

    fn together(&self, work: &mut dyn FnMut()) {
        assert!(!self.0.inside.swap(true, Ordering::SeqCst), "together nested");
        work();
        self.0.inside.store(false, Ordering::SeqCst);
    }
}

fn grouping_spawner(grouping: &Arc<Grouping>) -> Spawner {
    let options = SpawnerOptions::default().claude_path(fake_agent()).protocol(Protocol::Text).extra_args(["exit:0"]);
    Spawner::new(options, Handler(Arc::clone(grouping))).expect("inside a runtime")
}

#[tokio::test]
async fn a_bindings_start_reports_the_spawn_and_the_outcome_together() {
    let dir = tempfile::tempdir().unwrap();
    let grouping = Arc::new(Grouping::default());
    let spawner = grouping_spawner(&grouping);
    let noted = Arc::clone(&grouping);
    let id = spawner.start_session_then(config(dir.path()), None, move |outcome| {
        assert!(outcome.is_ok());
        noted.note("started");
    });
    wait_until("the session to end", || grouping.seen().iter().any(|(what, _)| *what == "session-ended")).await;
    assert_eq!(
        grouping.seen(),
        [("session-spawned", true), ("started", true), ("session-ended", false)],
        "session {id}"
    );
}

#[tokio::test]
async fn a_start_awaited_elsewhere_is_not_held_back() {
    // The outcome wakes the awaiting task, whose reactions (a pool's `session-allocated`)
    // must not overtake a `SessionSpawned` held for later.
    let dir = tempfile::tempdir().unwrap();
    let grouping = Arc::new(Grouping::default());
    let spawner = grouping_spawner(&grouping);
    let status = finished(spawner.spawn_session(config(dir.path())).await.unwrap().completion).await;
    assert_eq!(status.state, SessionState::Completed);
    assert_eq!(grouping.seen(), [("session-spawned", false), ("session-ended", false)]);
}

/// A handler whose `together` panics before it runs the work.
struct Panicking(Arc<Grouping>);

impl EventHandler for Panicking {
    fn handle(&self, event: SpawnerEvent) {
        self.0.note(event.name());
    }

    fn together(&self, _work: &mut dyn FnMut()) {
        panic!("a handler's together panics");
    }
}

#[tokio::test]
async fn a_handler_whose_together_panics_still_gets_the_start_and_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let grouping = Arc::new(Grouping::default());
    let options = SpawnerOptions::default().claude_path(fake_agent()).protocol(Protocol::Text).extra_args(["exit:0"]);
    let spawner = Spawner::new(options, Panicking(Arc::clone(&grouping))).expect("inside a runtime");
    let noted = Arc::clone(&grouping);
    spawner.start_session_then(config(dir.path()), None, move |outcome| {
        assert!(outcome.is_ok());
        noted.note("started");
    });
    // Supervised all the same: its end comes.
    wait_until("the session to end", || grouping.seen().iter().any(|(what, _)| *what == "session-ended")).await;
    assert_eq!(grouping.seen(), [("session-spawned", false), ("started", false), ("session-ended", false)]);
}
