//! Finding a session's processes by the tag in their environment. Every process a
//! session starts inherits `CLAUDE_SESSION_SPAWNER_SESSION_ID=<id>` from the agent,
//! including one that left the agent's process group with `setsid`, which the group
//! signal cannot reach. Reading `/proc/<pid>/environ` of every process finds them.
//!
//! The environment is the one a process started with (`/proc` shows the initial
//! block), so a process that clears its own variables later is still found; one
//! started with a cleaned environment (`env -i`) is not. Linux only: elsewhere the
//! scan finds nothing.

use std::collections::HashMap;

/// Signals `signal` to every process (but this one) whose environment tags it with
/// one of `ids` under variable `key`. Returns, per id found, the pids signalled.
pub fn signal_tagged(key: &str, ids: &[&str], signal: i32) -> HashMap<String, Vec<u32>> {
    let mut found: HashMap<String, Vec<u32>> = HashMap::new();
    if ids.is_empty() {
        return found;
    }
    let wanted: Vec<Vec<u8>> = ids.iter().map(|id| format!("{key}={id}").into_bytes()).collect();
    let prefix = format!("{key}=").into_bytes();
    scan(|pid, environ| {
        let Some(var) = environ.split(|b| *b == 0).find(|v| v.starts_with(&prefix)) else {
            return;
        };
        let Some(at) = wanted.iter().position(|w| w.as_slice() == var) else {
            return;
        };
        if signal_checked(pid, signal, &wanted[at]) {
            found.entry(ids[at].to_owned()).or_default().push(pid);
        }
    });
    found
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn scan(mut visit: impl FnMut(u32, &[u8])) {
    use std::io::Read;
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else { return };
    let mut environ = Vec::with_capacity(8192);
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        environ.clear();
        // Unreadable (another user's, a kernel thread's, gone): not ours.
        let read = std::fs::File::open(format!("/proc/{pid}/environ")).and_then(|mut f| f.read_to_end(&mut environ));
        if read.is_ok() && !environ.is_empty() {
            visit(pid, &environ);
        }
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn scan(_visit: impl FnMut(u32, &[u8])) {}

/// Signals `pid` if it still carries `tag`. Through a pidfd where there is one: the
/// tag is read again after the pidfd is taken, so a pid that was reused after the
/// scan is never signalled.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn signal_checked(pid: u32, signal: i32, tag: &[u8]) -> bool {
    let Some(fd) = super::exit::pidfd_open(pid) else {
        // No pidfds (old kernel): the scan just saw the tag, the window is tiny.
        // SAFETY: plain syscall on integers.
        return unsafe { libc::kill(pid as libc::pid_t, signal) } == 0;
    };
    let still = std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| env.split(|b| *b == 0).any(|v| v == tag))
        .unwrap_or(false);
    if !still {
        return false;
    }
    use std::os::fd::AsRawFd;
    // SAFETY: pidfd_send_signal on a pidfd we own, no siginfo.
    let rc = unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, fd.as_raw_fd(), signal, std::ptr::null::<libc::siginfo_t>(), 0)
    };
    rc == 0
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn signal_checked(_pid: u32, _signal: i32, _tag: &[u8]) -> bool {
    false
}

#[cfg(all(test, any(target_os = "linux", target_os = "android")))]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn finds_only_processes_with_the_exact_tag() {
        let key = "CSS_TAGGED_TEST";
        let start = |value: &str| {
            Command::new("sleep").arg("30").env(key, value).stdin(Stdio::null()).spawn().unwrap()
        };
        let mut mine = start("claude-session-a");
        let mut other = start("claude-session-ab");
        // spawn can return before the child's execve has set up its new environment
        // (until then /proc shows an empty one, or ours): under load the scan below
        // could run in that window.
        let tagged = |pid: u32| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|e| e.split(|b| *b == 0).any(|v| v.starts_with(key.as_bytes())))
        };
        for child in [&mine, &other] {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !tagged(child.id()) {
                assert!(std::time::Instant::now() < deadline, "sleep {} never showed its environment", child.id());
                std::thread::yield_now();
            }
        }
        let found = signal_tagged(key, &["claude-session-a"], libc::SIGKILL);
        assert_eq!(found.get("claude-session-a"), Some(&vec![mine.id()]));
        assert!(mine.wait().unwrap().code().is_none(), "killed by the signal");
        assert!(other.try_wait().unwrap().is_none(), "a similar tag is left alone");
        other.kill().unwrap();
        other.wait().unwrap();
        assert!(signal_tagged(key, &[], libc::SIGKILL).is_empty());
    }
}
