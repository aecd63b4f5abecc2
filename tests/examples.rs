//! The runnable examples a README points Rust users to do what they say: a recovery
//! manager bringing a crashed session back, and three pools sharing a queue.

use std::path::PathBuf;
use std::process::Command;

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    dir.join("examples").join(name)
}

fn run(name: &str) -> String {
    let out = Command::new(example(name)).output().unwrap_or_else(|e| panic!("cannot run example {name}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{name} failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    text
}

#[test]
fn the_recovery_example_brings_a_crashed_session_back() {
    let out = run("recovery");
    assert!(out.contains(": segfault (exit status: signal SIGSEGV)"), "{out}");
    assert!(out.contains("respawned as claude-session-"), "{out}");
    assert!(out.contains("recovery-succeeded\ncrashes 1, recovered 1"), "{out}");
}

#[cfg(feature = "redis")]
#[test]
fn the_shared_pool_example_runs_every_task_once() {
    let out = run("shared_pool");
    for i in 0..8 {
        assert_eq!(out.lines().filter(|l| l.starts_with(&format!("task-{i}: completed on "))).count(), 1, "{out}");
    }
}
