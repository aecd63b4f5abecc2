//! A panic inside the core while a session starts reaches the caller as an error and
//! the session is recorded `failed`; nothing aborts.
//!
//! The trigger, `CLAUDE_SESSION_SPAWNER_TEST_PANIC=launch`, is read once per process
//! and then holds for every spawner in it, so this test has a binary of its own: in
//! one with other tests, every session they start would panic too. The variable is
//! set before any thread that could read the environment exists, so setting it is
//! sound.

mod support;

use claude_session_spawner::*;
use support::*;

const PANIC_MESSAGE: &str = "internal error (panic) while starting the agent";

#[test]
fn a_panic_while_launching_is_an_error_and_a_failed_session() {
    std::env::set_var("CLAUDE_SESSION_SPAWNER_TEST_PANIC", "launch");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let rec = Recorder::new();
        let spawner = spawner(&["out:should never run", "hang"], &rec);

        // Through the launcher thread (spawn_session), then on the caller's thread
        // (spawn_session_now, the path the Node binding takes); the second launch
        // also shows the launcher thread survived the first panic.
        let via_launcher = spawner.spawn_session(config(dir.path())).await.unwrap_err();
        let spawner2 = spawner.clone();
        let cfg = config(dir.path());
        let on_caller = tokio::task::spawn_blocking(move || spawner2.spawn_session_now(cfg, None).unwrap_err())
            .await
            .unwrap();
        let again = tokio::time::timeout(DEADLINE, spawner.spawn_session(config(dir.path())))
            .await
            .expect("the launcher thread answers after a panic")
            .unwrap_err();

        for err in [via_launcher, on_caller, again] {
            let text = assert_spawn_failed(&spawner, &rec, &err);
            assert!(text.contains(PANIC_MESSAGE), "{text}");
        }
        assert_eq!(spawner.metrics_summary().failed_sessions, 3);
        assert!(spawner.active_sessions().iter().all(|s| s.state == SessionState::Failed));
    });
}
