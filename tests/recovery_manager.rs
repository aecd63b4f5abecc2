//! The Rust `RecoveryManager` over a spawner it does not own, with real agent
//! processes (the fake agent): classification, dumps, respawns, backoff timing read
//! from event timestamps, the storm limit, abandon, and `--resume` of a Claude Code
//! conversation (the fake agent behind the stream-json protocol's flags).

mod support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use claude_session_spawner::recovery::{CrashType, RecoveryConfig, RecoveryError, RecoveryManager, RecoveryStatus, Strategy};
use claude_session_spawner::*;
use support::*;

/// The manager's events with the instant each arrived.
#[derive(Default)]
struct Events(Mutex<Vec<(Instant, SpawnerEvent)>>);

impl Events {
    fn record(&self, event: SpawnerEvent) {
        self.0.lock().unwrap().push((Instant::now(), event));
    }

    /// `name` of each event about `session_id`, in order.
    fn names(&self, session_id: &str) -> Vec<&'static str> {
        self.0.lock().unwrap().iter().filter(|(_, e)| e.session_id() == Some(session_id)).map(|(_, e)| e.name()).collect()
    }

    fn count(&self, name: &str) -> usize {
        self.0.lock().unwrap().iter().filter(|(_, e)| e.name() == name).count()
    }

    /// When each `name` event about `session_id` came.
    fn times(&self, session_id: &str, name: &str) -> Vec<Instant> {
        let events = self.0.lock().unwrap();
        events.iter().filter(|(_, e)| e.session_id() == Some(session_id) && e.name() == name).map(|(at, _)| *at).collect()
    }

    fn find<T>(&self, pick: impl Fn(&SpawnerEvent) -> Option<T>) -> Option<T> {
        self.0.lock().unwrap().iter().find_map(|(_, e)| pick(e))
    }

    async fn wait(&self, what: &str, session_id: &str, name: &str) {
        wait_until(what, || self.names(session_id).contains(&name)).await;
    }
}

fn manager(spawner: &Spawner, config: RecoveryConfig) -> (RecoveryManager, Arc<Events>) {
    let events = Arc::new(Events::default());
    let sink = Arc::clone(&events);
    (RecoveryManager::new(spawner, config, move |e: SpawnerEvent| sink.record(e)), events)
}

fn quiet(config: RecoveryConfig) -> RecoveryConfig {
    RecoveryConfig { save_crash_dumps: false, retry_delay_ms: 10, ..config }
}

fn steps(dir: &Path, steps: &[String]) -> SessionConfig {
    let mut c = config(dir);
    c.environment_variables.insert("FAKE_AGENT_STEPS".into(), steps.join(";"));
    c
}

/// Crashes (with `crash`) the first time, exits 0 once the marker exists.
fn crash_once(dir: &Path, name: &str, crash: &str) -> Vec<String> {
    let marker = dir.join(format!("{name}.ran"));
    vec![format!("exit-if-exists:{}", marker.display()), format!("touch:{}", marker.display()), crash.to_owned()]
}

#[tokio::test]
async fn a_segfault_is_classified_dumped_and_recovered_from_the_stored_config() {
    let dir = tempfile::tempdir().unwrap();
    let spawner = spawner(&["env-steps"], &Recorder::new());
    let dumps = dir.path().join("dumps");
    let config = RecoveryConfig { crash_dump_directory: dumps.clone(), retry_delay_ms: 10, ..RecoveryConfig::default() };
    let (m, events) = manager(&spawner, config);
    let s = spawner.spawn_session(steps(dir.path(), &crash_once(dir.path(), "segv", "signal:SEGV"))).await.unwrap();
    let id = s.session_id.clone();
    events.wait("the recovery to succeed", &id, "recovery-succeeded").await;
    assert_eq!(
        events.names(&id),
        ["crash-detected", "crash-dump-saved", "crash-analyzed", "recovery-attempt", "recovery-respawned", "recovery-succeeded"]
    );
    let analysis = events.find(|e| match e {
        SpawnerEvent::CrashAnalyzed { analysis, .. } => Some(analysis.clone()),
        _ => None,
    });
    assert_eq!(analysis.unwrap().crash_type, CrashType::Segfault);
    let state = m.recovery_status(&id).unwrap();
    assert_eq!(state.status, RecoveryStatus::Succeeded);
    let new_id = state.attempts[0].new_session_id.clone().unwrap();
    assert_eq!(spawner.session_status(&new_id).unwrap().state, SessionState::Completed);
    assert_eq!(m.recovery_status(&new_id).unwrap().session_id, id, "found by its new session too");
    assert_eq!(std::fs::read_dir(&dumps).unwrap().count(), 1);
    let stats = m.recovery_stats();
    assert_eq!((stats.total_crashes, stats.successful_recoveries, stats.recovery_rate), (1, 1, 1.0));
}

#[tokio::test]
async fn every_fatal_signal_exit_code_reads_as_a_crash_sigpipe_included_and_others_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let spawner = spawner(&["env-steps"], &Recorder::new());
    let (m, events) = manager(&spawner, quiet(RecoveryConfig::default()));
    let pipe = spawner.spawn_session(steps(dir.path(), &crash_once(dir.path(), "pipe", "exit:141"))).await.unwrap();
    events.wait("the SIGPIPE exit to be recovered", &pipe.session_id, "recovery-succeeded").await;
    let analysis = events.find(|e| match e {
        SpawnerEvent::CrashAnalyzed { analysis, session_id } if **session_id == *pipe.session_id => Some(analysis.clone()),
        _ => None,
    });
    assert_eq!(analysis.unwrap().signal.as_deref(), Some("SIGPIPE"));
    // 128 + SIGCHLD (a signal that does not kill) and a plain failure are not crashes.
    let chld = spawner.spawn_session(steps(dir.path(), &["exit:145".to_owned()])).await.unwrap();
    let plain = spawner.spawn_session(steps(dir.path(), &["exit:3".to_owned()])).await.unwrap();
    finished(chld.completion).await;
    finished(plain.completion).await;
    // A session started after them, crashing: once it is handled, the two before were seen too.
    let last = spawner.spawn_session(steps(dir.path(), &crash_once(dir.path(), "last", "signal:SEGV"))).await.unwrap();
    events.wait("the last crash", &last.session_id, "crash-analyzed").await;
    assert!(events.names(&chld.session_id).is_empty());
    assert!(events.names(&plain.session_id).is_empty());
    assert_eq!(m.recovery_stats().total_crashes, 2);
}

#[tokio::test]
async fn failed_attempts_wait_the_backoff_measured_between_event_timestamps_then_the_recovery_fails() {
    let dir = tempfile::tempdir().unwrap();
    let spawner = spawner(&["env-steps"], &Recorder::new());
    let config = RecoveryConfig { retry_delay_ms: 80, backoff_multiplier: 2.0, max_retries: 3, ..quiet(RecoveryConfig::default()) };
    let (m, events) = manager(&spawner, config);
    let s = spawner.spawn_session(steps(dir.path(), &["signal:SEGV".to_owned()])).await.unwrap();
    let id = s.session_id.clone();
    events.wait("the recovery to fail", &id, "recovery-failed").await;
    let attempts = events.times(&id, "recovery-attempt");
    let failures = events.times(&id, "recovery-attempt-failed");
    assert_eq!((attempts.len(), failures.len()), (3, 3));
    // None before the first; 80 × 2^(n-1) before attempt n.
    assert!(attempts[1] - failures[0] >= Duration::from_millis(160), "{:?}", attempts[1] - failures[0]);
    assert!(attempts[2] - failures[1] >= Duration::from_millis(320), "{:?}", attempts[2] - failures[1]);
    let state = m.recovery_status(&id).unwrap();
    assert_eq!(state.status, RecoveryStatus::Failed);
    assert!(state.attempts[0].error.as_deref().unwrap().contains("crashed (segfault)"));
    let reason = events.find(|e| match e {
        SpawnerEvent::RecoveryFailed { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert_eq!(reason.as_deref(), Some("the session did not recover in 3 attempt(s)"));
    let stats = m.recovery_stats();
    assert_eq!((stats.total_crashes, stats.total_recovery_attempts, stats.failed_recoveries), (4, 3, 1));
}

#[tokio::test]
async fn the_storm_limit_holds_an_attempt_until_the_window_has_room_and_a_manual_trigger_passes_it() {
    let dir = tempfile::tempdir().unwrap();
    let spawner = spawner(&["env-steps"], &Recorder::new());
    let (m, events) = manager(&spawner, RecoveryConfig { max_recoveries_per_minute: 1, ..quiet(RecoveryConfig::default()) });
    let first = spawner.spawn_session(steps(dir.path(), &crash_once(dir.path(), "a", "signal:SEGV"))).await.unwrap();
    events.wait("the first recovery", &first.session_id, "recovery-succeeded").await;
    let second = spawner.spawn_session(steps(dir.path(), &crash_once(dir.path(), "b", "signal:SEGV"))).await.unwrap();
    events.wait("the second to be held", &second.session_id, "recovery-throttled").await;
    let until = events.find(|e| match e {
        SpawnerEvent::RecoveryThrottled { until, attempt_number, .. } => Some((*until, *attempt_number)),
        _ => None,
    });
    let first_attempt = m.recovery_status(&first.session_id).unwrap().attempts[0].timestamp;
    assert_eq!(until, Some((first_attempt + Duration::from_secs(60), 1)));
    assert_eq!(m.recovery_status(&second.session_id).unwrap().status, RecoveryStatus::Pending);
    assert_eq!(m.trigger_manual_recovery(&second.session_id), Ok(true));
    assert_eq!(m.trigger_manual_recovery(&second.session_id), Err(RecoveryError::InProgress(second.session_id.clone())));
    events.wait("the held one to recover", &second.session_id, "recovery-succeeded").await;
    assert_eq!(m.trigger_manual_recovery(&second.session_id), Ok(false));
    assert_eq!(m.active_recoveries(), vec![]);
}

#[tokio::test]
async fn abandoning_during_the_backoff_drops_the_pending_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let spawner = spawner(&["env-steps"], &Recorder::new());
    let config = RecoveryConfig { retry_delay_ms: 150, backoff_multiplier: 1.0, ..quiet(RecoveryConfig::default()) };
    let (m, events) = manager(&spawner, config);
    let a = spawner.spawn_session(steps(dir.path(), &["signal:SEGV".to_owned()])).await.unwrap();
    events.wait("a's first attempt to fail", &a.session_id, "recovery-attempt-failed").await;
    let b = spawner.spawn_session(steps(dir.path(), &["signal:SEGV".to_owned()])).await.unwrap();
    m.abandon_recovery(&a.session_id).unwrap();
    assert_eq!(m.recovery_status(&a.session_id).unwrap().status, RecoveryStatus::Abandoned);
    assert_eq!(events.names(&a.session_id).last(), Some(&"recovery-abandoned"));
    // b's second attempt comes after a's would have.
    wait_until("b's second attempt", || events.times(&b.session_id, "recovery-attempt").len() == 2).await;
    m.abandon_recovery(&b.session_id).unwrap();
    assert_eq!(events.times(&a.session_id, "recovery-attempt").len(), 1);
    assert_eq!(m.recovery_stats().abandoned_recoveries, 2);
    assert_eq!(m.abandon_recovery("claude-session-nope"), Err(RecoveryError::UnknownRecovery("claude-session-nope".into())));
    assert_eq!(m.handle_crash("claude-session-nope", None).await, Err(RecoveryError::UnknownSession("claude-session-nope".into())));
}

/// A Claude Code conversation's transcript, where Claude Code keeps it for `home`.
fn transcript(home: &Path, conversation: &str) {
    let project = home.join(".claude/projects/-work");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(project.join(format!("{conversation}.jsonl")), "{}\n").unwrap();
}

const INIT: &str = r#"out:{"type":"system","subtype":"init","session_id":"x"}"#;

#[tokio::test]
async fn a_crashed_conversation_is_resumed_and_a_resume_that_never_reaches_init_starts_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let spawner = json_spawner(&["env-steps"], &Recorder::new());
    let (m, events) = manager(&spawner, quiet(RecoveryConfig { strategy: Strategy::Immediate, ..RecoveryConfig::default() }));

    // Resumed: the new session gets `--resume <conversation>` and completes.
    let (marker, gate) = (dir.path().join("a.ran"), dir.path().join("a.gate"));
    let mut c = steps(dir.path(), &[
        "args".into(),
        INIT.into(),
        format!("exit-if-exists:{}", marker.display()),
        format!("touch:{}", marker.display()),
        // Crashes only once the test has written the transcript.
        format!("wait-file:{}", gate.display()),
        "signal:SEGV".into(),
    ]);
    c.environment_variables.insert("HOME".into(), home.to_string_lossy().into_owned());
    let a = spawner.spawn_session(c.clone()).await.unwrap();
    let conversation = a.status.claude_session_id.clone().expect("a conversation id");
    transcript(&home, &conversation);
    std::fs::write(&gate, "").unwrap();
    events.wait("the resumed recovery", &a.session_id, "recovery-succeeded").await;
    let attempt = m.recovery_status(&a.session_id).unwrap().attempts[0].clone();
    assert_eq!(attempt.resumed, Some(true));
    assert_eq!(attempt.note.as_deref(), Some(format!("resumed conversation {conversation}").as_str()));
    let resumed = spawner.session_status(attempt.new_session_id.as_deref().unwrap()).unwrap();
    assert!(resumed.stdout.contains(&format!("arg: --resume\narg: {conversation}")), "{}", resumed.stdout);
    assert_eq!(resumed.claude_session_id.as_deref(), Some(conversation.as_str()));

    // A resume that exits before Claude Code's init: the same attempt, fresh.
    let (m1, m2, gate) = (dir.path().join("b1"), dir.path().join("b2"), dir.path().join("b.gate"));
    let mut c = steps(dir.path(), &[
        format!("exit-if-exists:{}", m2.display()),
        format!("if-exists:{}=touch:{}", m1.display(), m2.display()),
        format!("if-exists:{}=exit:1", m1.display()),
        format!("touch:{}", m1.display()),
        INIT.into(),
        format!("wait-file:{}", gate.display()),
        "signal:SEGV".into(),
    ]);
    c.environment_variables.insert("HOME".into(), home.to_string_lossy().into_owned());
    let b = spawner.spawn_session(c).await.unwrap();
    transcript(&home, b.status.claude_session_id.as_deref().unwrap());
    std::fs::write(&gate, "").unwrap();
    events.wait("the fresh recovery", &b.session_id, "recovery-succeeded").await;
    let state = m.recovery_status(&b.session_id).unwrap();
    assert_eq!(state.attempts.len(), 1, "one attempt, two sessions");
    let attempt = &state.attempts[0];
    assert_eq!(attempt.resumed, Some(false));
    assert!(attempt.note.as_deref().unwrap().contains("resume failed at start-up (agent exited with code 1): fresh session"), "{:?}", attempt.note);
    let fresh = spawner.session_status(attempt.new_session_id.as_deref().unwrap()).unwrap();
    assert_ne!(fresh.claude_session_id, b.status.claude_session_id, "a new conversation");
    assert_eq!(events.count("recovery-respawned"), 3);
}

#[tokio::test]
async fn a_dropped_manager_stops_watching() {
    let dir = tempfile::tempdir().unwrap();
    let spawner = spawner(&["env-steps"], &Recorder::new());
    let (m, events) = manager(&spawner, quiet(RecoveryConfig::default()));
    drop(m);
    let s = spawner.spawn_session(steps(dir.path(), &["signal:SEGV".to_owned()])).await.unwrap();
    let status = finished(s.completion).await;
    assert_eq!(status.state, SessionState::Crashed);
    // A later manager sees the next crash: the dropped one saw none.
    let (_m2, later) = manager(&spawner, quiet(RecoveryConfig::default()));
    let s2 = spawner.spawn_session(steps(dir.path(), &crash_once(dir.path(), "later", "signal:SEGV"))).await.unwrap();
    later.wait("the later manager", &s2.session_id, "recovery-succeeded").await;
    assert_eq!(events.count("crash-detected"), 0);
}
