//! Starting an agent on Linux. As `posix_spawn` does, the child is a
//! `clone(CLONE_VM | CLONE_VFORK)` that shares the daemon's memory until its
//! `execve` (no copy of a large daemon's page tables, as `fork` would make); unlike
//! `posix_spawn`, it can ask for a parent-death signal, so an agent dies with a daemon
//! that was killed without a chance to stop it.
//!
//! Everything the child needs is prepared here before the clone; the child (`child`)
//! only makes system calls (no allocation, no locks: the daemon's other threads hold
//! those).
//! Hardened as glibc's own `posix_spawn` is: every signal, glibc's internal ones too,
//! is blocked with the raw system call around the clone, so no handler of the daemon
//! runs on the child's stack; the child's stack is mapped with a guard page below it,
//! so an overflow faults in the child instead of writing over the daemon's memory; and
//! descriptors that other native code opened without close-on-exec do not reach the
//! agent. The kernel hands back a pidfd with the clone (Linux 5.2 and later), and a
//! script without a `#!` line runs under `/bin/sh`, as `execvp` would run it.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use super::unix::AgentProcess;
use super::AgentCommand;

mod child;
use child::{boot_time_ns, child, set_signal_mask, tick_ns, ChildArgs, ChildStack, KernelSigset, CHILD_STACK_OF_THREAD, STAT_SIZE};

pub(super) fn spawn(cmd: &AgentCommand, parent_death: bool) -> io::Result<AgentProcess> {
    let env = environment(cmd);
    let program = cstring(resolve(&cmd.program, &env)?.into_os_string())?;
    let mut argv_owned = vec![cstring(cmd.program.clone().into_os_string())?];
    for arg in &cmd.args {
        argv_owned.push(cstring(arg.clone())?);
    }
    let argv = pointers(&argv_owned);
    let sh = c"/bin/sh";
    let sh_argv: Vec<*const libc::c_char> = [sh.as_ptr(), program.as_ptr()]
        .into_iter()
        .chain(argv[1..].iter().copied())
        .collect();
    let env_owned = env
        .into_iter()
        .map(|(k, v)| {
            let mut pair = k.into_vec();
            pair.push(b'=');
            pair.extend(v.into_vec());
            cstring(OsString::from_vec(pair))
        })
        .collect::<io::Result<Vec<_>>>()?;
    let envp = pointers(&env_owned);
    let cwd = cstring(cmd.cwd.clone().into_os_string())?;

    let (stdin_read, stdin_write) = pipe()?;
    let (stdout_read, stdout_write) = output_socket()?;
    let (stderr_read, stderr_write) = output_socket()?;

    let mut stat = [0u8; STAT_SIZE];
    let mut args = ChildArgs {
        program: program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        cwd: cwd.as_ptr(),
        sh_argv: sh_argv.as_ptr(),
        stdio: [stdin_read.as_raw_fd(), stdout_write.as_raw_fd(), stderr_write.as_raw_fd()],
        // SAFETY: getpid has no preconditions.
        parent_death: parent_death.then(|| unsafe { libc::getpid() }),
        error: AtomicI32::new(0),
        before_clone_ns: 0,
        tick_ns: tick_ns(),
        start_ticks: AtomicU64::new(0),
        stat: stat.as_mut_ptr(),
        stat_len: AtomicI32::new(0),
    };
    // One stack per spawning thread, kept: a spawn blocks its thread until the child
    // has exec'd (CLONE_VFORK), so the stack is free again when it returns, and mapping
    // and unmapping it for each spawn would cost a TLB shootdown every time.
    let stack = CHILD_STACK_OF_THREAD.with(|cached| cached.borrow_mut().take()).map_or_else(ChildStack::new, Ok)?;

    // No handler of the daemon may run in the child before it has reset them all, not
    // even glibc's own (which pthread_sigmask would leave unblocked).
    let mut previous: KernelSigset = 0;
    set_signal_mask(!0, Some(&mut previous));
    let mut pidfd: libc::c_int = -1;
    args.before_clone_ns = boot_time_ns();
    // SAFETY: `child` only reads `args` and makes system calls; the parent thread is
    // suspended until the child exec'd or exited, so `args`, the strings it points to
    // and the stack outlive every use. The kernel writes the pidfd into `pidfd`.
    let pid = unsafe {
        libc::clone(
            child,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
            &args as *const ChildArgs as *mut libc::c_void,
            &mut pidfd as *mut libc::c_int,
        )
    };
    let clone_error = io::Error::last_os_error();
    set_signal_mask(previous, None);
    CHILD_STACK_OF_THREAD.with(|cached| *cached.borrow_mut() = Some(stack));
    drop(stdin_read);
    if pid < 0 {
        return Err(clone_error);
    }
    // A kernel older than 5.2 ignores CLONE_PIDFD and leaves -1 here.
    // SAFETY: the kernel just gave us this descriptor.
    let pidfd = (pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) });
    let errno = args.error.load(Ordering::SeqCst);
    if errno != 0 {
        // It exited without exec'ing: reap it, report why.
        let _ = super::unix::reap(pid as u32);
        return Err(io::Error::from_raw_os_error(errno));
    }
    let start_time = match args.start_ticks.load(Ordering::SeqCst) {
        0 => {
            let stat_len = usize::try_from(args.stat_len.load(Ordering::SeqCst)).unwrap_or(0).min(STAT_SIZE);
            crate::registry::start_time_in(&stat[..stat_len])
        }
        ticks => Some(ticks),
    };
    // Without a pidfd the exit is polled for, and the streams closing wake nothing more.
    let output_ends = if pidfd.is_some() { vec![stdout_write, stderr_write] } else { Vec::new() };
    Ok(AgentProcess {
        pid: pid as u32,
        pidfd,
        stdin: stdin_write,
        stdout: stdout_read,
        stderr: stderr_read,
        start_time,
        output_ends,
    })
}

/// The agent's environment: the base (or this process's), the command's on top.
fn environment(cmd: &AgentCommand) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = match &cmd.base_env {
        Some(base) => base.clone(),
        None => std::env::vars_os().collect(),
    };
    for (key, value) in &cmd.env {
        match env.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.clone(),
            None => env.push((key.clone(), value.clone())),
        }
    }
    env
}

/// A bare name is looked up on the agent's `PATH` (the first executable file wins;
/// `EACCES` if only non-executable ones exist), as `execvp` would.
fn resolve(program: &Path, env: &[(OsString, OsString)]) -> io::Result<PathBuf> {
    if program.as_os_str().as_bytes().contains(&b'/') {
        return Ok(program.to_owned());
    }
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
    let mut denied = false;
    for dir in path.as_bytes().split(|b| *b == b':') {
        let dir = if dir.is_empty() { Path::new(".") } else { Path::new(OsStr::from_bytes(dir)) };
        let candidate = dir.join(program);
        let Ok(meta) = std::fs::metadata(&candidate) else { continue };
        if !meta.is_file() {
            continue;
        }
        let c = cstring(candidate.clone().into_os_string())?;
        // SAFETY: access reads a NUL-terminated path.
        if unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0 {
            return Ok(candidate);
        }
        denied = true;
    }
    Err(io::Error::from_raw_os_error(if denied { libc::EACCES } else { libc::ENOENT }))
}

fn cstring(s: OsString) -> io::Result<CString> {
    CString::new(s.into_vec()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in an argument or variable"))
}

fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings.iter().map(|s| s.as_ptr()).chain(std::iter::once(std::ptr::null())).collect()
}

/// A close-on-exec pipe, (read end, write end), both above the standard descriptors
/// so that the child's `dup2` onto 0, 1 and 2 never clobbers one of them.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us these descriptors.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((above_stdio(read)?, above_stdio(write)?))
}

/// The agent's stdout or stderr, (our end, the agent's end): a Unix stream socket, as
/// Node's `child_process` gives its children. At output speed a pipe costs more: the
/// kernel holds the pipe's lock while it copies, so the agent writing and us reading
/// spin on each other (a quarter less CPU for a 256 MiB flood with the socket). Left
/// two-way, as `child_process` leaves it (shutting each end's other way cost four
/// system calls per spawn): nothing is ever written to our end, so the socket only
/// carries the agent's output.
fn output_socket() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: socketpair fills two descriptors.
    if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us these descriptors.
    let (ours, agents) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((above_stdio(ours)?, above_stdio(agents)?))
}

fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: duplicates a descriptor we own; the original closes when `fd` drops.
    let moved = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if moved < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fcntl just gave us this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(moved) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_child_reports_its_start_time_before_its_exec() {
        let cmd = AgentCommand {
            program: "/bin/sh".into(),
            // Waits on its stdin (whose other end the test holds) until it is killed.
            args: vec!["-c".into(), "exec cat".into()],
            cwd: "/".into(),
            base_env: None,
            env: Vec::new(),
            parent_death_signal: false,
        };
        // Enough spawns that the clock's reading is checked against /proc many times.
        for _ in 0..20 {
            let agent = spawn(&cmd, false).unwrap();
            let read_afterwards = crate::registry::start_time(agent.pid);
            let _ = super::super::unix::signal_group(agent.pid, libc::SIGKILL);
            let _ = super::super::unix::reap(agent.pid);
            assert!(agent.start_time.is_some(), "the child read nothing");
            assert_eq!(agent.start_time, read_afterwards);
        }
    }
}
