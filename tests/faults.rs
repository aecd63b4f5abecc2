//! Faults of the agent's own making: a stdout closed early, an orphaned grandchild
//! holding stdout after the agent exits. The memory-measuring fault tests are in
//! `gigabyte.rs` and `churn.rs`, and the panic in `launch_panic.rs`: each needs a
//! test binary to itself.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use claude_session_spawner::*;
use support::*;

/// Steps of an agent that starts a sleeper (off its stdout, so the pipe's only
/// writer is the agent), closes its stdout and keeps running.
const CLOSES_STDOUT: [&str; 4] = ["quiet-sleepers:1", "close-stdout", "err:stdout closed", "hang"];

/// Starts such an agent and waits until it has closed its stdout while the session
/// is still running; returns the session and the sleeper's pid.
async fn running_without_stdout(spawner: &Spawner, rec: &Arc<Recorder>, cfg: SessionConfig) -> (SpawnResult, u32) {
    let result = spawner.spawn_session(cfg).await.unwrap();
    let id = result.session_id.clone();
    let pid = result.status.pid.unwrap();
    wait_until("the agent to close its stdout", || {
        rec.output(&id, "stderr").contains("stdout closed") && fd_closed(pid, 1)
    })
    .await;
    // Otherwise the session ended (or timed out) before the fault, and the test
    // would prove nothing about it.
    assert_eq!(spawner.session_status(&id).unwrap().state, SessionState::Running);
    assert!(!rec.for_session(&id).iter().any(|e| matches!(e, Seen::Timeout { .. })), "timed out too early");
    let sleepers = pids_after("sleeper: ", &rec.output(&id, "stderr"));
    assert_eq!(sleepers.len(), 1);
    assert!(alive(sleepers[0]));
    (result, sleepers[0])
}

#[tokio::test]
async fn an_agent_that_closed_its_stdout_still_times_out_and_its_group_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    let spawner = spawner(&CLOSES_STDOUT, &rec);
    let mut cfg = config(dir.path());
    // Long enough for the agent to close its stdout first, even on a loaded machine.
    cfg.timeout_ms = Some(1500);
    let (result, sleeper) = running_without_stdout(&spawner, &rec, cfg).await;
    let pid = result.status.pid.unwrap();
    let status = finished(result.completion).await;
    assert_eq!(status.state, SessionState::Timeout);
    assert_eq!(status.error_message.as_deref(), Some("session timed out after 1500 ms"));
    all_gone(&[pid, sleeper], pid).await;
}

#[tokio::test]
async fn an_agent_that_closed_its_stdout_still_terminates_gracefully_and_its_group_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    let spawner = spawner(&CLOSES_STDOUT, &rec);
    let (result, sleeper) = running_without_stdout(&spawner, &rec, config(dir.path())).await;
    let pid = result.status.pid.unwrap();
    let status = tokio::time::timeout(DEADLINE, spawner.terminate_session(&result.session_id, true))
        .await
        .expect("terminate did not end the session in time")
        .unwrap();
    assert_eq!(status.state, SessionState::Terminated);
    // SIGTERM, not the grace period's SIGKILL: the agent was reached at once.
    assert_eq!(status.signal.as_deref(), Some("SIGTERM"));
    all_gone(&[pid, sleeper], pid).await;
}

// `lifecycle.rs::leftover_background_processes_die_with_the_session` has the agent's
// own children hold stdout and checks that they die, not how soon the session ends.
// Here the holder is an orphaned grandchild (its parent, the agent's child, exited
// first), and the session must end in the time it takes to signal the group, not
// after the 2 s it would wait for a process that left the group.
#[tokio::test]
async fn an_orphaned_grandchild_holding_stdout_does_not_keep_the_session_open() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    // The agent exits when its stdin closes, so the test decides when, after
    // checking the grandchild is in place.
    let spawner = spawner(&["child-wait:spawn-sleepers:1", "out:orphaned", "drain-stdin", "exit:0"], &rec);
    let result = spawner.spawn_session(config(dir.path())).await.unwrap();
    let id = result.session_id.clone();
    let pid = result.status.pid.unwrap();
    wait_until("the agent's child to exit", || rec.output(&id, "stdout").contains("orphaned\n")).await;
    let grandchildren = pids_after("sleeper: ", &rec.output(&id, "stdout"));
    assert_eq!(grandchildren.len(), 1);
    let grandchild = grandchildren[0];
    assert!(alive(grandchild), "the grandchild died early");
    assert!(!fd_closed(grandchild, 1), "the grandchild holds stdout");

    let asked = Instant::now();
    spawner.end_session(&id).unwrap();
    let status = finished(result.completion).await;
    let took = asked.elapsed();
    assert_eq!(status.state, SessionState::Completed);
    assert_eq!(status.exit_code, Some(0));
    assert!(took < Duration::from_millis(1500), "the session ended {took:?} after the agent was told to exit");
    all_gone(&[grandchild], pid).await;
}
