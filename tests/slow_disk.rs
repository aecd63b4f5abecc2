//! A session whose working directory is on a slow disk holds up nothing of the others:
//! its logs are written off the worker that keeps every session's timeout. The slow
//! disk is the log writer's test hook (`CLAUDE_SESSION_SPAWNER_TEST_SLOW_LOG`): each
//! write to a log under `slow-disk/` takes 300 ms longer.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use claude_session_spawner::*;
use support::*;

#[tokio::test]
async fn a_slow_disk_under_one_session_does_not_delay_another_sessions_timeout() {
    // Read once per process, before the first log opens; this file is its own process.
    std::env::set_var("CLAUDE_SESSION_SPAWNER_TEST_SLOW_LOG", "slow-disk:300");
    let root = tempfile::tempdir().unwrap();
    let slow = root.path().join("slow-disk");
    let fast = root.path().join("fast");
    std::fs::create_dir_all(&slow).unwrap();
    std::fs::create_dir_all(&fast).unwrap();

    // What the test needs of the events, kept cheaply: the handler runs on the thread
    // that also keeps the timers.
    let timeouts: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let output = Arc::new(AtomicUsize::new(0));
    let (seen, counted) = (Arc::clone(&timeouts), Arc::clone(&output));
    let options = SpawnerOptions::default().claude_path(fake_agent()).protocol(Protocol::Text).extra_args(["env-steps"]);
    let spawner = Spawner::new(options, move |e: SpawnerEvent| match &e {
        SpawnerEvent::SessionTimeout { session_id } => {
            seen.lock().unwrap().insert(session_id.to_string(), Instant::now());
        }
        SpawnerEvent::SessionOutput(chunk) => {
            counted.fetch_add(chunk.data.len(), Ordering::Relaxed);
        }
        _ => {}
    })
    .unwrap();

    // A line every 50 ms for 3 s (little work for the worker), every write of its log
    // 300 ms slow.
    let mut flood = config(&slow);
    let steps: Vec<String> = (0..60).map(|i| format!("out:line {i};sleep:50")).collect();
    flood.environment_variables.insert("FAKE_AGENT_STEPS".into(), format!("{};hang", steps.join(";")));
    let flooding = spawner.spawn_session(flood).await.unwrap();
    wait_until("the output to be under way", || output.load(Ordering::Relaxed) > 20).await;

    // Meanwhile another session, with a 400 ms timeout, on a fast disk.
    let mut quiet = config(&fast);
    quiet.environment_variables.insert("FAKE_AGENT_STEPS".into(), "hang".into());
    quiet.timeout_ms = Some(400);
    let started = Instant::now();
    let waiting = spawner.spawn_session(quiet).await.unwrap();
    let status = finished(waiting.completion).await;
    assert_eq!(status.state, SessionState::Timeout);
    let fired = timeouts.lock().unwrap()[&status.session_id];
    let late = fired.duration_since(started).saturating_sub(Duration::from_millis(400));
    println!("timeout fired {} ms late", late.as_millis());
    // Written on the worker, each 300 ms write held the timer up that long.
    assert!(late < Duration::from_millis(100), "the timeout fired {late:?} late");

    spawner.terminate_session(&flooding.session_id, false).await.unwrap();
    // The flood's log, slow as it is, is complete when its session has ended.
    let flood_status = spawner.session_status(&flooding.session_id).unwrap();
    let log = std::fs::read(spawner.session_directory(&flooding.session_id).unwrap().join("stdout.log")).unwrap();
    assert_eq!(log.len(), output.load(Ordering::Relaxed));
    assert!(flood_status.state.is_ended());
}
