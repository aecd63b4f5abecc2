//! Learning that an agent exited, without reaping it and without a thread per session
//! (Tokio's blocking pool stops at 512 threads, which would cap concurrent sessions).
//! A descriptor that becomes readable at the exit wakes the runtime: a pidfd on Linux
//! 5.3 and later (the one the spawn's `clone` gave, else `pidfd_open`), a kqueue with
//! an `EVFILT_PROC`/`NOTE_EXIT` filter on macOS. Where neither exists (Linux before
//! 5.3, such as RHEL 8's 4.18) the exit is polled on the runtime's timer: often at
//! first, for the short-lived agent, then every [`POLL_MAX`].

use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use super::unix::exit_status_nowait;
use super::ExitStatus;

/// The longest a polled exit goes unnoticed.
const POLL_MAX: Duration = Duration::from_millis(50);

/// Test hook: when set, the exit is polled as on a kernel without pidfds, so the tests
/// can run that path here. Read once per process.
#[cfg(any(target_os = "linux", target_os = "android"))]
static TEST_NO_PIDFD: std::sync::LazyLock<bool> =
    std::sync::LazyLock::new(|| std::env::var_os("CLAUDE_SESSION_SPAWNER_TEST_NO_PIDFD").is_some());

/// Waits until child `pid` exits, without reaping it.
pub async fn wait_exit(pid: u32, pidfd: Option<OwnedFd>) -> io::Result<ExitStatus> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if !*TEST_NO_PIDFD {
        if let Some(fd) = pidfd.or_else(|| pidfd_open(pid)) {
            return wait_readable(pid, fd).await;
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    drop(pidfd);
    #[cfg(target_os = "macos")]
    match exit_kqueue(pid) {
        Ok(Some(kqueue)) => return wait_readable(pid, kqueue).await,
        // Gone before the filter was added: the first poll finds it.
        Ok(None) => {}
        Err(e) => tracing::debug!(pid, error = %e, "no kqueue for the agent's exit; polling"),
    }
    poll_exit(pid).await
}

/// Waits for `fd` (readable once `pid` exited) on the runtime, then for the status.
async fn wait_readable(pid: u32, fd: OwnedFd) -> io::Result<ExitStatus> {
    // SAFETY: the AsyncFd owns `fd`, which stays open and unchanged while it lives.
    let fd = unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    // Registration reports an exit that already happened, so no check is needed first.
    loop {
        let mut ready = fd.readable().await?;
        if let Some(status) = exit_status_nowait(pid)? {
            return Ok(status);
        }
        ready.clear_ready();
    }
}

/// Asks the kernel, 1 ms after the start, then twice as long after each time, at
/// most [`POLL_MAX`] apart: a system call now and then per session, no thread.
async fn poll_exit(pid: u32) -> io::Result<ExitStatus> {
    let mut wait = Duration::from_millis(1);
    loop {
        if let Some(status) = exit_status_nowait(pid)? {
            return Ok(status);
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(POLL_MAX);
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just gave us this descriptor.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A kqueue that becomes readable when `pid` exits; `None` when it already has.
#[cfg(target_os = "macos")]
fn exit_kqueue(pid: u32) -> io::Result<Option<OwnedFd>> {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: kqueue takes nothing and returns a new descriptor or -1 (a kqueue is not
    // inherited by children, so it needs no close-on-exec).
    let raw = unsafe { libc::kqueue() };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor.
    let kqueue = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: a zeroed kevent is valid; the fields set are the documented ones.
    let mut change: libc::kevent = unsafe { std::mem::zeroed() };
    change.ident = pid as libc::uintptr_t;
    change.filter = libc::EVFILT_PROC;
    change.flags = libc::EV_ADD | libc::EV_ONESHOT;
    change.fflags = libc::NOTE_EXIT;
    // SAFETY: one change in, no events out, no timeout: it only registers the filter.
    let rc = unsafe { libc::kevent(kqueue.as_raw_fd(), &change, 1, std::ptr::null_mut(), 0, std::ptr::null()) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ESRCH) { Ok(None) } else { Err(e) };
    }
    Ok(Some(kqueue))
}
