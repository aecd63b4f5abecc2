//! Unix process control. The agent is started as leader of a new process group,
//! without a `fork` of a large daemon: on Linux by a `clone` of our own (see
//! `linux_spawn`), elsewhere with the standard library's `posix_spawn`.

use std::io;
use std::os::fd::OwnedFd;

use super::{AgentCommand, ExitStatus};

/// A started agent: its pid (also its process group id) and its pipes.
#[derive(Debug)]
pub struct AgentProcess {
    pub pid: u32,
    /// A pidfd the kernel gave with the clone (Linux 5.2 and later), for [`wait_exit`](super::wait_exit).
    pub pidfd: Option<OwnedFd>,
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// Its start time in clock ticks since boot, when the spawn learnt it (the Linux
    /// launcher's child reads it before its `exec`; see `registry::start_time`).
    pub start_time: Option<u64>,
    /// Copies of the agent's ends of its stdout and stderr, where its exit has a pidfd to
    /// wake us: held until it exited, so its exit wakes the supervisor once (the pidfd)
    /// instead of once more for the streams it closes on its way out.
    pub output_ends: Vec<OwnedFd>,
}

impl AgentProcess {
    #[cfg(target_os = "linux")]
    pub fn spawn(cmd: &AgentCommand) -> io::Result<Self> {
        super::linux_spawn::spawn(cmd, cmd.parent_death_signal)
    }

    /// Without a parent-death signal: `posix_spawn` cannot ask for one.
    #[cfg(not(target_os = "linux"))]
    pub fn spawn(cmd: &AgentCommand) -> io::Result<Self> {
        use std::os::unix::process::CommandExt;
        use std::process::{Command, Stdio};
        let mut command = Command::new(&cmd.program);
        if let Some(base) = &cmd.base_env {
            command.env_clear().envs(base.iter().map(|(k, v)| (k, v)));
        }
        command
            .args(&cmd.args)
            .current_dir(&cmd.cwd)
            .envs(cmd.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = command.spawn()?;
        let pid = child.id();
        let take = |fd: Option<OwnedFd>| fd.ok_or_else(|| io::Error::other("pipe missing"));
        // Dropping a std `Child` neither kills nor waits: from here on the pid is ours
        // to watch and reap (see `wait_exit` and `reap`).
        Ok(Self {
            pid,
            pidfd: None,
            stdin: take(child.stdin.take().map(OwnedFd::from))?,
            stdout: take(child.stdout.take().map(OwnedFd::from))?,
            stderr: take(child.stderr.take().map(OwnedFd::from))?,
            start_time: None,
            output_ends: Vec::new(),
        })
    }
}

/// Sends `signal` to every process in group `pgid`. A group that no longer exists is
/// not an error: stopping something already gone succeeded.
pub fn signal_group(pgid: u32, signal: i32) -> io::Result<()> {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    if pgid <= 1 {
        // killpg(0) or (1) would hit our own group or everything: never.
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: plain syscall on integers.
    if unsafe { libc::killpg(pgid, signal) } == 0 {
        return Ok(());
    }
    match io::Error::last_os_error() {
        e if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        e => Err(e),
    }
}

/// How child `pid` ended, if it has, without reaping it.
/// Puts our end of an agent's stream in non-blocking mode, with one system call (no
/// reading of the flags first: `FIONBIO` sets only that one).
pub(crate) fn set_nonblocking(fd: std::os::fd::RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: FIONBIO reads one int; `fd` is a descriptor the caller owns.
    if unsafe { libc::ioctl(fd, libc::FIONBIO, &on) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn exit_status_nowait(pid: u32) -> io::Result<Option<ExitStatus>> {
    waitid(pid, libc::WEXITED | libc::WNOWAIT | libc::WNOHANG)
}

/// Reaps child `pid`, which must already have exited (see [`wait_exit`](super::wait_exit)).
pub fn reap(pid: u32) -> io::Result<ExitStatus> {
    waitid(pid, libc::WEXITED)?.ok_or_else(|| io::Error::other("child vanished"))
}

fn waitid(pid: u32, options: libc::c_int) -> io::Result<Option<ExitStatus>> {
    loop {
        // SAFETY: zeroed siginfo is valid; waitid fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, options) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let (child, code, status) = siginfo_fields(&info);
        if child == 0 {
            return Ok(None);
        }
        return Ok(Some(match code {
            libc::CLD_EXITED => ExitStatus::Code(status),
            libc::CLD_DUMPED => ExitStatus::Signal { signal: status, core_dumped: true },
            _ => ExitStatus::Signal { signal: status, core_dumped: false },
        }));
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn siginfo_fields(info: &libc::siginfo_t) -> (libc::pid_t, libc::c_int, libc::c_int) {
    // SAFETY: waitid filled the SIGCHLD fields (or left them zero).
    unsafe { (info.si_pid(), info.si_code, info.si_status()) }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn siginfo_fields(info: &libc::siginfo_t) -> (libc::pid_t, libc::c_int, libc::c_int) {
    (info.si_pid, info.si_code, info.si_status)
}
