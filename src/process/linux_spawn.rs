//! Starting an agent on Linux. As `posix_spawn` does, the child is a
//! `clone(CLONE_VM | CLONE_VFORK)` that shares the daemon's memory until its
//! `execve` (no copy of a large daemon's page tables, as `fork` would make); unlike
//! `posix_spawn`, it can ask for a parent-death signal, so an agent dies with a daemon
//! that was killed without a chance to stop it.
//!
//! Everything the child needs is prepared before the clone; the child only makes
//! system calls (no allocation, no locks: the daemon's other threads hold those).

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

use super::unix::AgentProcess;
use super::AgentCommand;

const CHILD_STACK: usize = 64 * 1024;

/// What the child reads; all of it lives in the parent's frame, which the kernel
/// keeps still (CLONE_VFORK) until the child has exec'd or exited.
struct ChildArgs {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    stdio: [RawFd; 3],
    /// `Some(parent pid)`: set a parent-death signal (SIGKILL).
    parent_death: Option<libc::pid_t>,
    empty_mask: libc::sigset_t,
    /// The errno of the step that failed in the child; 0 when it exec'd.
    error: AtomicI32,
}

pub(super) fn spawn(cmd: &AgentCommand, parent_death: bool) -> io::Result<AgentProcess> {
    let env = environment(cmd);
    let program = cstring(resolve(&cmd.program, &env)?.into_os_string())?;
    let mut argv_owned = vec![cstring(cmd.program.clone().into_os_string())?];
    for arg in &cmd.args {
        argv_owned.push(cstring(arg.clone())?);
    }
    let argv = pointers(&argv_owned);
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
    let (stdout_read, stdout_write) = pipe()?;
    let (stderr_read, stderr_write) = pipe()?;

    // SAFETY: sigemptyset fills the set it is given.
    let mut empty_mask: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe { libc::sigemptyset(&mut empty_mask) };
    let args = ChildArgs {
        program: program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        cwd: cwd.as_ptr(),
        stdio: [stdin_read.as_raw_fd(), stdout_write.as_raw_fd(), stderr_write.as_raw_fd()],
        // SAFETY: getpid has no preconditions.
        parent_death: parent_death.then(|| unsafe { libc::getpid() }),
        empty_mask,
        error: AtomicI32::new(0),
    };
    let mut stack = vec![0u8; CHILD_STACK];
    // The stack grows down from its end, 16-byte aligned.
    let top = (stack.as_mut_ptr() as usize + CHILD_STACK) & !15;

    // No handler of the daemon may run in the child before it has reset them all.
    // SAFETY: plain signal-mask calls on sets we own.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut previous: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut previous);
    }
    // SAFETY: `child` only reads `args` and makes system calls; the parent thread is
    // suspended until the child exec'd or exited, so `args`, the strings it points to
    // and the stack outlive every use.
    let pid = unsafe {
        libc::clone(
            child,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &args as *const ChildArgs as *mut libc::c_void,
        )
    };
    let clone_error = io::Error::last_os_error();
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut()) };
    drop(stack);
    drop((stdin_read, stdout_write, stderr_write));
    if pid < 0 {
        return Err(clone_error);
    }
    let errno = args.error.load(Ordering::SeqCst);
    if errno != 0 {
        // It exited without exec'ing: reap it, report why.
        let _ = super::unix::reap(pid as u32);
        return Err(io::Error::from_raw_os_error(errno));
    }
    Ok(AgentProcess { pid: pid as u32, stdin: stdin_write, stdout: stdout_read, stderr: stderr_read })
}

extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `ChildArgs`, alive and unchanged (see `spawn`).
    let a = unsafe { &*(arg as *const ChildArgs) };
    let fail = || -> libc::c_int {
        // SAFETY: errno is readable; `_exit` ends the child without running anything
        // of the parent's (no atexit handlers, no flushing of shared buffers).
        unsafe {
            a.error.store((*libc::__errno_location()).max(1), Ordering::SeqCst);
            libc::_exit(127)
        }
    };
    // SAFETY: system calls on values prepared by the parent.
    unsafe {
        // Handlers belong to the parent (whose memory this still is); the agent
        // starts with every signal at its default, as child_process gives it.
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        for signal in 1..=64 {
            if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                // Fails for the signals glibc keeps for itself, which exec resets.
                libc::sigaction(signal, &default, std::ptr::null_mut());
            }
        }
        if let Some(parent) = a.parent_death {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return fail();
            }
            // A parent that died before the prctl sends nothing: do not run orphaned.
            if libc::getppid() != parent {
                *libc::__errno_location() = libc::ESRCH;
                return fail();
            }
        }
        if libc::setpgid(0, 0) != 0 {
            return fail();
        }
        for (target, &fd) in a.stdio.iter().enumerate() {
            if libc::dup2(fd, target as libc::c_int) < 0 {
                return fail();
            }
        }
        if libc::chdir(a.cwd) != 0 {
            return fail();
        }
        libc::sigprocmask(libc::SIG_SETMASK, &a.empty_mask, std::ptr::null_mut());
        libc::execve(a.program, a.argv, a.envp);
    }
    fail()
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
