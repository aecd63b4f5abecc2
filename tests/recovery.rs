//! Crash recovery's building blocks from Rust, with real agent processes (the fake
//! agent): the facts the spawner keeps about a crash, their analysis, the dump, and a
//! new session started from the stored config.

mod support;

use std::os::unix::fs::PermissionsExt;
use claude_session_spawner::recovery::{analyze, respawn_config, CrashType, RecoveryConfig};
use claude_session_spawner::*;
use support::*;

#[tokio::test]
async fn a_segfault_is_analysed_from_the_exit_status_and_dumped() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    let spawner = spawner(&["out:before the fault", "signal:SEGV"], &rec);
    let mut config = config(dir.path());
    config.environment_variables.insert("API_TOKEN".into(), "hunter2".into());
    let s = spawner.spawn_session(config).await.unwrap();
    let status = finished(s.completion).await;
    assert_eq!(status.state, SessionState::Crashed);

    let facts = spawner.crash_facts(&s.session_id).expect("facts of an ended session");
    assert_eq!(facts.signal.as_deref(), Some("SIGSEGV"));
    assert!(facts.output.contains("before the fault"));
    let analysis = analyze(&facts);
    assert_eq!((analysis.crash_type, analysis.evidence.as_str()), (CrashType::Segfault, "exit status: signal SIGSEGV"));

    assert!(spawner.session_config(&s.session_id).is_some(), "the config is kept");
    let dumps = dir.path().join("dumps");
    let report = serde_json::json!({"sessionId": s.session_id, "signal": "SIGSEGV"});
    let path = spawner.write_crash_dump(&s.session_id, &dumps, report, &analysis).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("[redacted]") && !text.contains("hunter2"));
    let dump: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(dump["analysis"]["crashType"], "segfault");
    assert_eq!(dump["exitStatus"]["signal"], "SIGSEGV");
    assert!(dump["stdoutTail"].as_str().unwrap().contains("before the fault"));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(&path), mode(&dumps)), (0o600, 0o700));
}

#[tokio::test]
async fn exit_137_reads_as_sigkill_and_a_live_session_has_no_facts() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    let spawner = spawner(&["env-steps"], &rec);
    let mut hung = config(dir.path());
    hung.environment_variables.insert("FAKE_AGENT_STEPS".into(), "hang".into());
    let live = spawner.spawn_session(hung).await.unwrap();
    assert!(spawner.crash_facts(&live.session_id).is_none());
    let mut killed = config(dir.path());
    killed.environment_variables.insert("FAKE_AGENT_STEPS".into(), "exit:137".into());
    let s = spawner.spawn_session(killed).await.unwrap();
    finished(s.completion).await;
    let a = analyze(&spawner.crash_facts(&s.session_id).unwrap());
    assert_eq!((a.crash_type, a.signal.as_deref()), (CrashType::Unknown, Some("SIGKILL")));
    assert!(a.evidence.starts_with("exit code 137 = 128 + SIGKILL"), "{}", a.evidence);
    spawner.terminate_session(&live.session_id, false).await.unwrap();
}

#[tokio::test]
async fn a_timed_out_session_comes_back_with_more_time_and_completes() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let rec = Recorder::new();
    let spawner = spawner(&["env-steps"], &rec);
    let mut c = config(dir.path());
    c.timeout_ms = Some(200);
    let steps = format!("exit-if-exists:{0};touch:{0};hang", marker.display());
    c.environment_variables.insert("FAKE_AGENT_STEPS".into(), steps);
    let s = spawner.spawn_session(c).await.unwrap();
    assert_eq!(finished(s.completion).await.state, SessionState::Timeout);

    let analysis = analyze(&spawner.crash_facts(&s.session_id).unwrap());
    assert_eq!((analysis.crash_type, analysis.confidence), (CrashType::Timeout, 1.0));
    let original = spawner.session_config(&s.session_id).unwrap();
    let plan = respawn_config(&original, &analysis, RecoveryConfig::default().timeout_growth, 1, None);
    assert_eq!(plan.config.timeout_ms, Some(300));
    let again = spawner.spawn_session(plan.config).await.unwrap();
    assert_eq!(finished(again.completion).await.state, SessionState::Completed);
}
