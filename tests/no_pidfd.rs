//! On a kernel without pidfds (Linux before 5.3) an agent's exit is polled on the
//! runtime's timer: sessions hold no thread each, and every exit is still noticed.
//! The test hook makes this process take that path on any kernel; it is this test
//! binary's only test, as the hook is read once per process.

mod support;

use claude_session_spawner::*;
use support::*;

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_pidfds_sessions_hold_no_thread_each_and_every_exit_is_noticed() {
    // Before the first session of this process (the hook is read once).
    std::env::set_var("CLAUDE_SESSION_SPAWNER_TEST_NO_PIDFD", "1");
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    let spawner = spawner(&["out:up", "hang"], &rec);
    // One session first: the runtime's and the launcher's threads exist from then on.
    let first = spawner.spawn_session(config(dir.path())).await.unwrap();
    let baseline = threads();

    const SESSIONS: usize = 40;
    let mut sessions = vec![first];
    for _ in 1..SESSIONS {
        sessions.push(spawner.spawn_session(config(dir.path())).await.unwrap());
    }
    wait_until("every agent's first line", || sessions.iter().all(|s| rec.output(&s.session_id, "stdout") == "up\n")).await;
    let grown = threads().saturating_sub(baseline);

    for s in &sessions {
        spawner.terminate_session(&s.session_id, false).await.unwrap();
    }
    for s in sessions {
        let status = finished(s.completion).await;
        assert_eq!(status.state, SessionState::Terminated);
    }
    // Asserted once the agents are gone: a thread waiting in waitid per session would
    // have added SESSIONS threads.
    assert!(grown < 8, "{grown} more threads for {SESSIONS} sessions");

    // A short-lived agent's exit, with its code.
    let quick = spawner_with(SpawnerOptions::default(), &["exit:3"], &rec);
    let status = finished(quick.spawn_session(config(dir.path())).await.unwrap().completion).await;
    assert_eq!(status.state, SessionState::Failed);
    assert_eq!(status.exit_code, Some(3));
}
