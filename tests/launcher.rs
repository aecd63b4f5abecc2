//! The Linux launcher's hardening, observed from outside: what the agent inherits and
//! what it can be.

mod support;

use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;

use claude_session_spawner::*;
use support::*;

/// Every descriptor the agent holds, as the paths they point to.
fn descriptors_of(pid: u32) -> Vec<(i32, std::path::PathBuf)> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the agent's /proc entry")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let fd = e.file_name().to_str()?.parse().ok()?;
            Some((fd, std::fs::read_link(e.path()).ok()?))
        })
        .collect()
}

#[tokio::test]
async fn a_descriptor_opened_without_close_on_exec_does_not_reach_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("daemon-secret.txt");
    std::fs::write(&secret, "not for agents").unwrap();
    // What other native code in a daemon may do: open without O_CLOEXEC.
    let path = CString::new(secret.to_str().unwrap()).unwrap();
    // SAFETY: open on a NUL-terminated path; the descriptor is closed below.
    let leaky = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
    assert!(leaky > 2);

    let rec = Recorder::new();
    let spawner = spawner(&["out:ready", "hang"], &rec);
    let result = spawner.spawn_session(config(dir.path())).await.unwrap();
    let id = result.session_id.clone();
    wait_until("the agent's first line", || rec.output(&id, "stdout").contains("ready")).await;
    let held = descriptors_of(result.status.pid.unwrap());
    spawner.terminate_session(&id, false).await.unwrap();

    assert!(held.iter().all(|(_, target)| target != &secret), "the agent holds the daemon's file: {held:?}");
    assert!(held.iter().any(|(fd, _)| *fd == 0) && held.iter().any(|(fd, _)| *fd == 1));
    // The daemon's own descriptor is untouched: still open, still without close-on-exec.
    // SAFETY: fcntl on a descriptor this test owns.
    assert_eq!(unsafe { libc::fcntl(leaky, libc::F_GETFD) }, 0);
    unsafe { libc::close(leaky) };
}

#[tokio::test]
async fn a_script_without_a_shebang_runs_under_sh() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("agent-script");
    std::fs::write(&script, "printf 'arg=%s\\n' \"$1\"\nread line\nprintf 'stdin=%s\\n' \"$line\"\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();

    let rec = Recorder::new();
    let options = SpawnerOptions::default().claude_path(&script).protocol(Protocol::Text).extra_args(["first"]);
    let r = std::sync::Arc::clone(&rec);
    let spawner = Spawner::new(options, move |e: SpawnerEvent| r.record(e)).unwrap();
    let status = finished(spawner.spawn_session(config(dir.path())).await.unwrap().completion).await;
    assert_eq!(status.state, SessionState::Completed, "{:?}", status.error_message);
    assert_eq!(status.stdout, "arg=first\nstdin=Task: Run the fake task\n");
}

#[tokio::test]
async fn the_state_directory_records_the_agents_own_start_time() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    let options = SpawnerOptions { state_dir: Some(state.path().to_owned()), ..Default::default() };
    let spawner = spawner_with(options, &["out:ready", "hang"], &rec);
    let result = spawner.spawn_session(config(dir.path())).await.unwrap();
    let pid = result.status.pid.unwrap();
    // Written after the start is reported: wait for it.
    wait_until("the session's entry", || registry::recorded_sessions(state.path()).map(|s| s.len() == 1).unwrap_or(false)).await;
    let recorded = registry::recorded_sessions(state.path()).unwrap().remove(0);
    assert_eq!(recorded.pid, pid);
    // The launcher's child read it before its exec; it is the agent's, which a reaper
    // compares with /proc to tell the agent from a process that reused its pid.
    assert_eq!(Some(recorded.start_time), registry::start_time(pid));
    assert_ne!(recorded.start_time, 0);
    spawner.terminate_session(&result.session_id, false).await.unwrap();
    finished(result.completion).await;
    // Removed on the blocking pool once the session ended.
    wait_until("the entry's removal", || registry::recorded_sessions(state.path()).map(|s| s.is_empty()).unwrap_or(false)).await;
}
