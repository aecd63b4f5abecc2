//! Session lifecycle with the fake agent: exit codes, signals, timeouts, termination,
//! input, history and the session directory.

mod support;

use std::time::Duration;

use claude_session_spawner::*;
use support::*;

#[tokio::test]
async fn exit_zero_completes_with_output_files_and_ordered_events() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    let spawner = spawner(&["out:hello", "err:warning", "out:bye"], &rec);
    let result = spawner.spawn_session(config(dir.path())).await.unwrap();
    assert!(result.session_id.starts_with("claude-session-"));
    assert_eq!(result.status.state, SessionState::Running);
    let pid = result.status.pid.unwrap();
    assert!(pid > 0);

    let status = finished(result.completion).await;
    assert_eq!(status.state, SessionState::Completed);
    assert_eq!(status.exit_code, Some(0));
    assert_eq!(status.stdout, "hello\nbye\n");
    assert_eq!(status.stderr, "warning\n");
    assert!(status.end_time.is_some() && status.execution_time_ms.is_some());

    let events = rec.for_session(&status.session_id);
    assert_eq!(events.first(), Some(&Seen::Spawned { id: status.session_id.clone(), pid }));
    assert_eq!(events.last(), Some(&Seen::Ended { id: status.session_id.clone(), state: "completed".into() }));
    assert_eq!(events.iter().filter(|e| matches!(e, Seen::Ended { .. })).count(), 1);
    assert_eq!(rec.output(&status.session_id, "stdout"), "hello\nbye\n");

    let session_dir = dir.path().join(".vp-daemon/sessions").join(&status.session_id);
    assert_eq!(spawner.session_directory(&status.session_id).unwrap(), session_dir);
    assert_eq!(std::fs::read_to_string(session_dir.join("stdout.log")).unwrap(), "hello\nbye\n");
    assert_eq!(std::fs::read_to_string(session_dir.join("stderr.log")).unwrap(), "warning\n");
    let md = std::fs::read_to_string(session_dir.join("CLAUDE.md")).unwrap();
    assert!(md.starts_with(&format!("# Claude Session {}", status.session_id)));
    assert!(md.contains("- **Name:** Test VP"));
}

#[tokio::test]
async fn the_prompt_arrives_on_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    let status = finished(spawner(&["read-line"], &rec).spawn_session(config(dir.path())).await.unwrap().completion).await;
    assert_eq!(status.stdout, "got: Task: Run the fake task\n");
}

#[tokio::test]
async fn nonzero_exit_fails_and_names_the_code() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    let status = finished(spawner(&["exit:3"], &rec).spawn_session(config(dir.path())).await.unwrap().completion).await;
    assert_eq!(status.state, SessionState::Failed);
    assert_eq!(status.exit_code, Some(3));
    assert_eq!(status.error_message.as_deref(), Some("agent exited with code 3"));
}

#[tokio::test]
async fn a_signal_death_is_a_crash_with_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    let spawner = spawner(&["out:before the crash", "err:stack line", "signal:SEGV"], &rec);
    let status = finished(spawner.spawn_session(config(dir.path())).await.unwrap().completion).await;
    assert_eq!(status.state, SessionState::Crashed);
    assert_eq!(status.signal.as_deref(), Some("SIGSEGV"));
    assert!(status.error_message.unwrap().contains("SIGSEGV"));
    let reports = spawner.crash_reports();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].session_id, status.session_id);
    assert_eq!(reports[0].signal.as_deref(), Some("SIGSEGV"));
    assert_eq!(reports[0].last_state, "running");
    assert_eq!(reports[0].last_output, "before the crash\n");
    assert_eq!(reports[0].stack_trace.as_deref(), Some("stack line\n"));
}

#[tokio::test]
async fn timeout_ends_timeout_with_its_event_and_stops_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    let spawner = spawner(&["spawn-sleepers:2", "hang"], &rec);
    let mut cfg = config(dir.path());
    cfg.timeout_ms = Some(300);
    let result = spawner.spawn_session(cfg).await.unwrap();
    let pid = result.status.pid.unwrap();
    let status = finished(result.completion).await;
    assert_eq!(status.state, SessionState::Timeout);
    assert_eq!(status.error_message.as_deref(), Some("session timed out after 300 ms"));
    let events = rec.for_session(&status.session_id);
    let timeout_at = events.iter().position(|e| matches!(e, Seen::Timeout { .. })).expect("timeout event");
    assert!(timeout_at < events.len() - 1, "timeout before ended");
    let sleepers = sleeper_pids(&status.stdout);
    assert_eq!(sleepers.len(), 2);
    all_gone(&sleepers, pid).await;
}

#[tokio::test]
async fn graceful_terminate_stops_the_whole_tree() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    let spawner = spawner(&["spawn-sleepers:2", "out:ready", "hang"], &rec);
    let result = spawner.spawn_session(config(dir.path())).await.unwrap();
    let id = result.session_id.clone();
    let pid = result.status.pid.unwrap();
    wait_until("two sleepers", || sleeper_pids(&rec.output(&id, "stdout")).len() == 2).await;
    let sleepers = sleeper_pids(&rec.output(&id, "stdout"));

    let status = tokio::time::timeout(DEADLINE, spawner.terminate_session(&id, true)).await.unwrap().unwrap();
    assert_eq!(status.state, SessionState::Terminated);
    assert_eq!(status.signal.as_deref(), Some("SIGTERM"));
    all_gone(&sleepers, pid).await;
    assert_eq!(spawner.session_status(&id).unwrap().state, SessionState::Terminated);
}

#[tokio::test]
async fn an_agent_ignoring_sigterm_is_killed_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    let options = SpawnerOptions::default().grace_period(Duration::from_millis(200));
    let spawner = spawner_with(options, &["ignore-term", "out:stubborn", "hang"], &rec);
    let result = spawner.spawn_session(config(dir.path())).await.unwrap();
    let id = result.session_id.clone();
    wait_until("the agent to ignore SIGTERM", || rec.output(&id, "stdout").contains("stubborn")).await;
    let status = tokio::time::timeout(DEADLINE, spawner.terminate_session(&id, true)).await.unwrap().unwrap();
    assert_eq!(status.state, SessionState::Terminated);
    assert_eq!(status.signal.as_deref(), Some("SIGKILL"));
}

#[tokio::test]
async fn forced_terminate_kills_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    // The default grace period is 5 s: ending well before it shows SIGKILL came first.
    let spawner = spawner(&["ignore-term", "hang"], &rec);
    let result = spawner.spawn_session(config(dir.path())).await.unwrap();
    let started = std::time::Instant::now();
    let status = spawner.terminate_session(&result.session_id, false).await.unwrap();
    assert_eq!(status.state, SessionState::Terminated);
    assert_eq!(status.signal.as_deref(), Some("SIGKILL"));
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn terminate_of_an_ended_session_keeps_its_state_and_unknown_ids_fail() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    let spawner = spawner(&["exit:0"], &rec);
    let result = spawner.spawn_session(config(dir.path())).await.unwrap();
    let id = result.session_id.clone();
    finished(result.completion).await;
    let status = spawner.terminate_session(&id, true).await.unwrap();
    assert_eq!(status.state, SessionState::Completed);
    assert_eq!(rec.for_session(&id).iter().filter(|e| matches!(e, Seen::Ended { .. })).count(), 1);
    let err = spawner.terminate_session("claude-session-nope", true).await.unwrap_err();
    assert_eq!(err.code(), "ERR_UNKNOWN_SESSION");
}

#[tokio::test]
async fn leftover_background_processes_die_with_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    let spawner = spawner(&["spawn-sleepers:2", "exit:0"], &rec);
    let result = spawner.spawn_session(config(dir.path())).await.unwrap();
    let pid = result.status.pid.unwrap();
    let status = finished(result.completion).await;
    assert_eq!(status.state, SessionState::Completed);
    let sleepers = sleeper_pids(&status.stdout);
    assert_eq!(sleepers.len(), 2);
    all_gone(&sleepers, pid).await;
}

#[tokio::test]
async fn leftovers_get_sigterm_to_clean_up_before_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("cleaned");
    let rec = Recorder::new();
    // The agent exits once the leftover's SIGTERM handler is in place.
    let ready = dir.path().join("handling");
    let step = format!("child:on-term-write:{},touch:{},hang", marker.display(), ready.display());
    let wait = format!("wait-file:{}", ready.display());
    let spawner = spawner(&[&step, &wait, "exit:0"], &rec);
    let status = finished(spawner.spawn_session(config(dir.path())).await.unwrap().completion).await;
    assert_eq!(status.state, SessionState::Completed);
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "cleaned\n", "the leftover ran its SIGTERM handler");
}

#[tokio::test]
async fn what_a_leftover_writes_after_the_agent_exited_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    // Once the agent has exited its streams are read at once; this one is still held
    // (by the leftover, which outlives its SIGTERM), so the read must wait for it. The
    // agent exits once the leftover ignores SIGTERM; the leftover writes once the
    // agent has exited.
    let ready = dir.path().join("ignoring");
    let child = format!("child:ignore-term,touch:{},wait-orphaned,out:late", ready.display());
    let wait = format!("wait-file:{}", ready.display());
    let spawner = spawner(&[&child, &wait, "exit:0"], &rec);
    let status = finished(spawner.spawn_session(config(dir.path())).await.unwrap().completion).await;
    assert_eq!(status.state, SessionState::Completed);
    assert!(status.stdout.lines().any(|l| l == "late"), "stdout: {:?}", status.stdout);
}

#[tokio::test]
async fn a_leftover_that_ignores_sigterm_is_killed_a_moment_later() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    // A long grace period: the leftover's moment is capped at one second regardless.
    let options = SpawnerOptions::default().grace_period(Duration::from_secs(30));
    // The agent exits once the leftover ignores SIGTERM.
    let ready = dir.path().join("ignoring");
    let child = format!("child:ignore-term,touch:{},hang", ready.display());
    let wait = format!("wait-file:{}", ready.display());
    let spawner = spawner_with(options, &[&child, &wait, "exit:0"], &rec);
    let started = std::time::Instant::now();
    let result = spawner.spawn_session(config(dir.path())).await.unwrap();
    let status = finished(result.completion).await;
    assert_eq!(status.state, SessionState::Completed);
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    let child: u32 = status.stdout.lines().find_map(|l| l.strip_prefix("child: ")).unwrap().parse().unwrap();
    all_gone(&[child], result.status.pid.unwrap()).await;
}

#[tokio::test]
async fn a_process_that_left_the_group_holding_the_output_is_killed_and_the_session_ends() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    let spawner = spawner(&["spawn-escapee", "exit:0"], &rec);
    let status = finished(spawner.spawn_session(config(dir.path())).await.unwrap().completion).await;
    assert_eq!(status.state, SessionState::Completed);
    let [escapee] = pids_after("escapee: ", &status.stdout)[..] else { panic!("no escapee pid") };
    wait_until("the escapee to be killed", || !alive(escapee)).await;
}

#[tokio::test]
async fn a_daemon_started_by_the_agent_outside_its_group_dies_with_the_session() {
    for stop in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let rec = Recorder::new();
        let steps: &[&str] = if stop { &["spawn-daemon", "hang"] } else { &["spawn-daemon", "exit:0"] };
        let spawner = spawner(steps, &rec);
        let result = spawner.spawn_session(config(dir.path())).await.unwrap();
        let id = result.session_id.clone();
        wait_until("the daemon's pid", || rec.output(&id, "stdout").contains("daemon: ")).await;
        let [daemon] = pids_after("daemon: ", &rec.output(&id, "stdout"))[..] else { panic!("no daemon pid") };
        // (It hangs: only a kill ends it. Without a stop, the agent may already be gone.)
        if stop {
            assert!(alive(daemon));
        }
        let status = if stop {
            spawner.terminate_session(&id, true).await.unwrap()
        } else {
            finished(result.completion).await
        };
        assert_eq!(status.state, if stop { SessionState::Terminated } else { SessionState::Completed });
        // It holds nothing of the session, so the shared sweep after the end finds it.
        wait_until("the daemon to be killed", || !alive(daemon)).await;
    }
}

#[tokio::test]
async fn send_input_reaches_the_agent_and_end_session_closes_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    let spawner = spawner(&["echo-stdin"], &rec);
    let result = spawner.spawn_session(config(dir.path())).await.unwrap();
    let id = result.session_id.clone();
    spawner.send_input(&id, "more input\n").unwrap();
    wait_until("the echo", || rec.output(&id, "stdout").contains("echo: more input")).await;
    spawner.end_session(&id).unwrap();
    let status = finished(result.completion).await;
    assert_eq!(status.state, SessionState::Completed);
    assert!(status.stdout.ends_with("echo: more input\n"));

    let err = spawner.send_input(&id, "late").unwrap_err();
    assert_eq!(err.code(), "ERR_SESSION_NOT_RUNNING");
    assert!(err.to_string().contains("not running (state: completed)"));
    assert_eq!(spawner.send_input("claude-session-nope", "x").unwrap_err().code(), "ERR_UNKNOWN_SESSION");
}

#[tokio::test]
async fn input_far_larger_than_the_pipe_reaches_the_agent_whole() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    let spawner = spawner(&["count-stdin:y"], &rec);
    let mut cfg = config(dir.path());
    // A prompt and an input of many pipefuls each: the writer waits for room again and
    // again, and nothing of either may be lost or reordered past the other.
    cfg.task_context.description = "x".repeat(1 << 20);
    // The text protocol's first input: the prompt and a newline.
    let prompt = claude_session_spawner::charter::render_task_prompt(&cfg) + "\n";
    let input = "y".repeat(3 << 20);
    let result = spawner.spawn_session(cfg).await.unwrap();
    let id = result.session_id.clone();
    spawner.send_input(&id, &input).unwrap();
    spawner.end_session(&id).unwrap();
    let status = finished(result.completion).await;
    assert_eq!(status.state, SessionState::Completed);
    let ys = prompt.bytes().filter(|&b| b == b'y').count() + input.len();
    assert!(
        status.stdout.contains(&format!("stdin: {} bytes, {ys} of y", prompt.len() + input.len())),
        "every byte of the prompt and the input: {}",
        status.stdout.lines().find(|l| l.starts_with("stdin: ")).unwrap_or("no count")
    );
}

#[tokio::test]
async fn an_agent_that_exits_before_reading_its_prompt_breaks_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    let spawner = spawner(&["exit:0"], &rec);
    let mut cfg = config(dir.path());
    // Far more than a pipe holds, so the write meets a closed pipe (EPIPE).
    cfg.task_context.description = "x".repeat(4 << 20);
    let status = finished(spawner.spawn_session(cfg).await.unwrap().completion).await;
    assert_eq!(status.state, SessionState::Completed);
}

#[tokio::test]
async fn environment_and_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    let spawner = spawner(
        &["cwd", "env:FOO", "env:CI", "env:CLAUDE_NON_INTERACTIVE", "env:CLAUDE_CONFIG_PATH", "env:CLAUDE_SESSION_SPAWNER_SESSION_ID"],
        &rec,
    );
    let mut cfg = config(dir.path());
    cfg.environment_variables.insert("FOO".into(), "bar baz".into());
    let status = finished(spawner.spawn_session(cfg).await.unwrap().completion).await;
    let id = &status.session_id;
    let md = dir.path().join(".vp-daemon/sessions").join(id).join("CLAUDE.md");
    assert_eq!(
        status.stdout,
        format!(
            "cwd: {}\nFOO=bar baz\nCI=true\nCLAUDE_NON_INTERACTIVE=true\nCLAUDE_CONFIG_PATH={}\nCLAUDE_SESSION_SPAWNER_SESSION_ID={id}\n",
            dir.path().canonicalize().unwrap().display(),
            md.display()
        )
    );
}

#[tokio::test]
async fn spawn_failures_name_the_cause_and_are_recorded_failed() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    let options = SpawnerOptions::default().claude_path("/nonexistent/agent").protocol(Protocol::Text);
    let r = std::sync::Arc::clone(&rec);
    let spawner = Spawner::new(options, move |e: SpawnerEvent| r.record(e)).unwrap();
    let err = spawner.spawn_session(config(dir.path())).await.unwrap_err();
    let text = assert_spawn_failed(&spawner, &rec, &err);
    assert!(text.contains("/nonexistent/agent") && text.contains("No such file or directory"), "{text}");
    assert_eq!(spawner.metrics_summary().failed_sessions, 1);

    let mut cfg = config(dir.path());
    cfg.working_directory = dir.path().join("missing");
    let err = spawner.spawn_session(cfg).await.unwrap_err();
    assert_eq!(err.code(), "ERR_WORKING_DIRECTORY");
    assert!(err.to_string().contains("missing"), "{err}");
}

#[tokio::test]
async fn a_non_executable_file_is_refused_with_the_os_error() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("not-executable");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    let rec = Recorder::new();
    let r = std::sync::Arc::clone(&rec);
    let options = SpawnerOptions::default().claude_path(&script).protocol(Protocol::Text);
    let spawner = Spawner::new(options, move |e: SpawnerEvent| r.record(e)).unwrap();
    let err = spawner.spawn_session(config(dir.path())).await.unwrap_err();
    assert!(err.to_string().contains("Permission denied"), "{err}");
}

#[tokio::test]
async fn history_cleanup_and_summary_count_each_session_once() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    let options = SpawnerOptions::default().history_size(2);
    let spawner = spawner_with(options, &["exit:0"], &rec);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = spawner.spawn_session(config(dir.path())).await.unwrap();
        ids.push(r.session_id.clone());
        finished(r.completion).await;
    }
    // The oldest aged out of the history (size 2) and with it out of everything.
    assert!(spawner.session_status(&ids[0]).is_none());
    assert_eq!(spawner.active_sessions().len(), 2);
    let summary = spawner.metrics_summary();
    assert_eq!(summary.total_sessions, 2);
    assert_eq!(summary.completed_sessions, 2);
    assert_eq!(summary.active_sessions, 0);

    assert_eq!(spawner.cleanup_completed_sessions(), 2);
    assert!(spawner.active_sessions().is_empty());
    assert_eq!(spawner.cleanup_completed_sessions(), 0);
    assert_eq!(spawner.session_status(&ids[2]).unwrap().state, SessionState::Completed);
    assert_eq!(spawner.metrics_summary().total_sessions, 2);
}

#[tokio::test]
async fn running_sessions_are_active_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    let spawner = spawner(&["hang"], &rec);
    let a = spawner.spawn_session(config(dir.path())).await.unwrap();
    let b = spawner.spawn_session(config(dir.path())).await.unwrap();
    let active: Vec<_> = spawner.active_sessions().into_iter().map(|s| s.session_id).collect();
    assert_eq!(active, [a.session_id.clone(), b.session_id.clone()]);
    assert_eq!(spawner.metrics_summary().active_sessions, 2);
    spawner.kill_all();
    let (sa, sb) = (finished(a.completion).await, finished(b.completion).await);
    assert_eq!((sa.state, sb.state), (SessionState::Terminated, SessionState::Terminated));
}

#[tokio::test]
async fn a_process_killed_for_holding_the_output_is_listed_in_the_ended_status() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    let spawner = spawner(&["spawn-escapee", "exit:0"], &rec);
    let status = finished(spawner.spawn_session(config(dir.path())).await.unwrap().completion).await;
    let [escapee] = pids_after("escapee: ", &status.stdout)[..] else { panic!("no escapee pid") };
    assert_eq!(status.stopped_escapees, vec![escapee]);
}

#[tokio::test]
async fn a_process_the_sweep_kills_after_the_end_is_listed_in_later_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    let spawner = spawner(&["spawn-daemon", "exit:0"], &rec);
    let status = finished(spawner.spawn_session(config(dir.path())).await.unwrap().completion).await;
    let [daemon] = pids_after("daemon: ", &status.stdout)[..] else { panic!("no daemon pid") };
    let id = status.session_id.clone();
    wait_until("the daemon in the session's status", || {
        spawner.session_status(&id).is_some_and(|s| s.stopped_escapees == vec![daemon])
    })
    .await;
    // Killed with SIGKILL, which the kernel may take a moment to finish.
    wait_until("the daemon to be gone", || !alive(daemon)).await;
}
