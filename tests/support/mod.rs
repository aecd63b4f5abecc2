//! Shared helpers for the integration tests: the fake agent, configs, an event
//! recorder that can be waited on, and process-table checks.
#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use claude_session_spawner::*;
pub use recorder::{Recorder, Seen};

/// The fake agent example, which `cargo test` builds next to the test binaries.
pub fn fake_agent() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let agent = dir.join("examples").join("fake_agent");
    assert!(agent.exists(), "{} missing: run `cargo build --examples`", agent.display());
    agent
}

/// A spawner running the fake agent with `steps` (text protocol).
pub fn spawner(steps: &[&str], recorder: &Arc<Recorder>) -> Spawner {
    spawner_with(SpawnerOptions::default(), steps, recorder)
}

/// A spawner running the fake agent behind the stream-json protocol's flags.
pub fn json_spawner(steps: &[&str], recorder: &Arc<Recorder>) -> Spawner {
    let mut args = vec!["--steps"];
    args.extend_from_slice(steps);
    let rec = Arc::clone(recorder);
    let options = SpawnerOptions::default()
        .claude_path(fake_agent())
        .protocol(Protocol::StreamJson)
        .extra_args(args);
    Spawner::new(options, move |e: SpawnerEvent| rec.record(e)).expect("inside a runtime")
}

pub fn spawner_with(options: SpawnerOptions, steps: &[&str], recorder: &Arc<Recorder>) -> Spawner {
    let options = options
        .claude_path(fake_agent())
        .protocol(Protocol::Text)
        .extra_args(steps.iter().copied());
    let rec = Arc::clone(recorder);
    Spawner::new(options, move |e: SpawnerEvent| rec.record(e)).expect("inside a runtime")
}

pub fn config(dir: &Path) -> SessionConfig {
    let mut c = SessionConfig {
        working_directory: dir.to_owned(),
        ..Default::default()
    };
    c.task_context.task_id = "T-1".into();
    c.task_context.description = "Run the fake task".into();
    c.charter.identity.name = "Test VP".into();
    c.charter.objectives = vec!["finish".into()];
    c
}

pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `check` every few milliseconds until it holds; fails the test at the deadline.
pub async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    while !check() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tick.tick().await;
    }
}

/// Awaits a session's end, failing the test at the deadline.
pub async fn finished(completion: Completion) -> SessionStatus {
    tokio::time::timeout(DEADLINE, completion).await.expect("session did not end in time")
}

/// Whether `pid` still runs. A zombie counts as gone: it runs nothing, and here PID 1
/// does not reap the orphans it inherits.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits (with the deadline) until none of `pids` runs and group `pgid` has no live
/// member. A killed process closes its pipes a moment before it is a zombie, so right
/// after a session ends its leftovers may still be on their way out.
pub async fn all_gone(pids: &[u32], pgid: u32) {
    wait_until("the session's processes to be gone", || {
        pids.iter().all(|&p| !alive(p)) && group_members(pgid).is_empty()
    })
    .await;
}

/// One process as `/proc/<pid>/stat` shows it.
pub struct ProcStat {
    pub pid: u32,
    /// `R`, `S`, `Z`, ...
    pub state: String,
    pub ppid: u32,
    pub pgrp: u32,
}

/// Every process this test can see.
pub fn processes() -> Vec<ProcStat> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // The command name may hold spaces and parentheses: fields start after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let (Some(state), Some(Ok(ppid)), Some(Ok(pgrp))) =
            (fields.first(), fields.get(1).map(|f| f.parse()), fields.get(2).map(|f| f.parse()))
        else {
            continue;
        };
        found.push(ProcStat { pid, state: (*state).to_owned(), ppid, pgrp });
    }
    found
}

/// Live (non-zombie) processes whose process group is `pgid`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    processes().into_iter().filter(|p| p.state != "Z" && p.pgrp == pgid).map(|p| p.pid).collect()
}

/// Pids the fake agent printed as `sleeper: <pid>`.
pub fn sleeper_pids(stdout: &str) -> Vec<u32> {
    pids_after("sleeper: ", stdout)
}

/// Pids the fake agent printed as `<prefix><pid>` lines.
pub fn pids_after(prefix: &str, text: &str) -> Vec<u32> {
    text.lines().filter_map(|l| l.strip_prefix(prefix)).map(|p| p.trim().parse().unwrap()).collect()
}

/// Whether process `pid` has no descriptor `fd` open (false once `pid` is gone, when
/// nothing can be told).
pub fn fd_closed(pid: u32, fd: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}/fd")).exists()
        && std::fs::symlink_metadata(format!("/proc/{pid}/fd/{fd}")).is_err()
}

/// A `kB` field of `/proc/self/status` (`VmRSS`, `VmHWM`, ...), in bytes.
pub fn own_memory(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    line.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap() * 1024
}

/// How many descriptors this process has open (the one listing them included, the
/// same in every count).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Children of this process that have exited and were not reaped.
pub fn zombie_children() -> Vec<u32> {
    let me = std::process::id();
    processes().into_iter().filter(|p| p.state == "Z" && p.ppid == me).map(|p| p.pid).collect()
}

/// Checks that `err` is a launch failure (`ERR_SPAWN_FAILED`) of a session recorded
/// `failed` with the error's text, seen as exactly `SpawnFailed` then `Ended`;
/// returns the text.
pub fn assert_spawn_failed(spawner: &Spawner, rec: &Recorder, err: &SpawnError) -> String {
    assert_eq!(err.code(), "ERR_SPAWN_FAILED");
    let text = err.to_string();
    let id = err.session_id().expect("a failed launch names its session").to_owned();
    let status = spawner.session_status(&id).expect("the failed session is kept");
    assert_eq!(status.state, SessionState::Failed);
    assert_eq!(status.pid, None, "no agent runs");
    assert_eq!(status.error_message.as_deref(), Some(text.as_str()));
    assert_eq!(
        rec.for_session(&id),
        vec![
            Seen::SpawnFailed { id: id.clone(), code: "ERR_SPAWN_FAILED" },
            Seen::Ended { id, state: "failed".into() }
        ]
    );
    text
}

/// Line `n` of the fake agent's `numbered-out` (kept the same as its `numbered_line`).
pub fn numbered_line(n: u64) -> [u8; 1024] {
    let mut line = [b'.'; 1024];
    line[..16].copy_from_slice(format!("{n:016x}").as_bytes());
    line[1023] = b'\n';
    line
}

pub mod recorder {
    use std::sync::{Arc, Mutex};

    use claude_session_spawner::SpawnerEvent;

    /// What a test keeps of an event.
    #[derive(Debug, Clone, PartialEq)]
    pub enum Seen {
        Spawned { id: String, pid: u32 },
        SpawnFailed { id: String, code: &'static str },
        Output { id: String, stream: &'static str, data: String },
        Timeout { id: String },
        Ended { id: String, state: String },
        Message { id: String, message: serde_json::Value },
        Retry { id: String, attempt: u64 },
    }

    impl Seen {
        pub fn id(&self) -> &str {
            match self {
                Seen::Spawned { id, .. }
                | Seen::SpawnFailed { id, .. }
                | Seen::Output { id, .. }
                | Seen::Timeout { id }
                | Seen::Ended { id, .. }
                | Seen::Message { id, .. }
                | Seen::Retry { id, .. } => id,
            }
        }
    }

    #[derive(Default)]
    pub struct Recorder {
        events: Mutex<Vec<Seen>>,
    }

    impl Recorder {
        pub fn new() -> Arc<Self> {
            Arc::default()
        }

        pub fn record(&self, event: SpawnerEvent) {
            let seen = match event {
                SpawnerEvent::SessionSpawned { session_id, pid, .. } => Seen::Spawned { id: session_id.to_string(), pid },
                SpawnerEvent::SpawnFailed { session_id, code, .. } => Seen::SpawnFailed { id: session_id.to_string(), code },
                SpawnerEvent::SessionOutput(c) => Seen::Output {
                    id: c.session_id.to_string(),
                    stream: c.stream.as_str(),
                    data: c.data.to_string(),
                },
                SpawnerEvent::SessionTimeout { session_id } => Seen::Timeout { id: session_id.to_string() },
                SpawnerEvent::SessionMessage { session_id, message } => Seen::Message { id: session_id.to_string(), message },
                SpawnerEvent::SessionRetry { session_id, attempt, .. } => Seen::Retry { id: session_id.to_string(), attempt },
                SpawnerEvent::SessionEnded { session_id, status } => Seen::Ended {
                    id: session_id.to_string(),
                    state: status.state.to_string(),
                },
                _ => return,
            };
            self.events.lock().unwrap().push(seen);
        }

        pub fn for_session(&self, id: &str) -> Vec<Seen> {
            self.events.lock().unwrap().iter().filter(|e| e.id() == id).cloned().collect()
        }

        pub fn messages(&self, id: &str) -> Vec<serde_json::Value> {
            self.for_session(id)
                .into_iter()
                .filter_map(|e| match e {
                    Seen::Message { message, .. } => Some(message),
                    _ => None,
                })
                .collect()
        }

        pub fn output(&self, id: &str, stream: &str) -> String {
            self.for_session(id)
                .into_iter()
                .filter_map(|e| match e {
                    Seen::Output { stream: s, data, .. } if s == stream => Some(data),
                    _ => None,
                })
                .collect()
        }
    }
}
