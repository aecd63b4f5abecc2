//! Starting an agent on Linux. As `posix_spawn` does, the child is a
//! `clone(CLONE_VM | CLONE_VFORK)` that shares the daemon's memory until its
//! `execve` (no copy of a large daemon's page tables, as `fork` would make); unlike
//! `posix_spawn`, it can ask for a parent-death signal, so an agent dies with a daemon
//! that was killed without a chance to stop it.
//!
//! Everything the child needs is prepared before the clone; the child only makes
//! system calls (no allocation, no locks: the daemon's other threads hold those).
//! Hardened as glibc's own `posix_spawn` is: every signal, glibc's internal ones too,
//! is blocked with the raw system call around the clone, so no handler of the daemon
//! runs on the child's stack; the child's stack is mapped with a guard page below it,
//! so an overflow faults in the child instead of writing over the daemon's memory; and
//! descriptors that other native code opened without close-on-exec do not reach the
//! agent. The kernel hands back a pidfd with the clone (Linux 5.2 and later), and a
//! script without a `#!` line runs under `/bin/sh`, as `execvp` would run it.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use super::unix::AgentProcess;
use super::AgentCommand;

const CHILD_STACK: usize = 64 * 1024;

/// The kernel's signal set: 64 signals on x86_64 and aarch64.
type KernelSigset = u64;

/// What the child reads; all of it lives in the parent's frame, which the kernel
/// keeps still (CLONE_VFORK) until the child has exec'd or exited.
struct ChildArgs {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    /// `/bin/sh`, the program, then its arguments: run when the program is not in an
    /// executable format (`ENOEXEC`).
    sh_argv: *const *const libc::c_char,
    stdio: [RawFd; 3],
    /// `Some(parent pid)`: set a parent-death signal (SIGKILL).
    parent_death: Option<libc::pid_t>,
    /// The errno of the step that failed in the child; 0 when it exec'd.
    error: AtomicI32,
    /// The boot-time clock (ns) just before the clone: with the child's own reading
    /// just after, it brackets the moment the kernel stamped as the child's start.
    before_clone_ns: u64,
    /// The length of the clock tick `/proc` counts a start time in (ns; 0: unknown).
    tick_ns: u64,
    /// The start time in clock ticks, when both readings fall in the same tick (all
    /// but about one spawn in a thousand); 0 when they do not.
    start_ticks: AtomicU64,
    /// Otherwise, where the child puts its own `/proc/self/stat` (`STAT_SIZE` bytes),
    /// and how much it read. Read by the parent afterwards: once the agent is in its
    /// `exec`, reading its stat waits until the `exec` is done (half a millisecond or
    /// more).
    stat: *mut u8,
    stat_len: AtomicI32,
}

const STAT_SIZE: usize = 1024;

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

/// Sets this thread's signal mask with the system call itself: glibc's wrappers refuse
/// to block the signals it keeps for itself (SIGCANCEL, SIGSETXID).
fn set_signal_mask(mask: KernelSigset, previous: Option<&mut KernelSigset>) {
    let previous = previous.map_or(std::ptr::null_mut(), |p| p as *mut KernelSigset);
    // SAFETY: the kernel reads one set and writes the old one where asked.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &mask as *const KernelSigset,
            previous,
            std::mem::size_of::<KernelSigset>(),
        );
    }
}

thread_local! {
    static CHILD_STACK_OF_THREAD: std::cell::RefCell<Option<ChildStack>> = const { std::cell::RefCell::new(None) };
}

/// The child's stack: mapped on its own, with an inaccessible guard page below it.
struct ChildStack {
    base: *mut libc::c_void,
    len: usize,
}

impl ChildStack {
    fn new() -> io::Result<Self> {
        // SAFETY: sysconf has no preconditions; mmap asks for fresh anonymous memory.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let len = CHILD_STACK + page;
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = Self { base, len };
        // The stack grows down; running off its end hits this page and faults.
        // SAFETY: the first page of the mapping made above.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// The stack grows down from its end, 16-byte aligned.
    fn top(&self) -> *mut libc::c_void {
        ((self.base as usize + self.len) & !15) as *mut libc::c_void
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`, which nothing uses any more.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// The highest descriptor number the last-resort sweep marks (capped: a limit of a
/// million would cost a million system calls per spawn). Asked in the child, only
/// when it comes to that: `getrlimit` is a plain system call.
fn descriptor_limit() -> libc::c_int {
    // SAFETY: getrlimit fills the struct it is given.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    limit.rlim_cur.min(65_536) as libc::c_int
}

/// The boot-time clock in nanoseconds: the clock the kernel stamps a process's start
/// with (`/proc/<pid>/stat` gives it in clock ticks). Read through the vDSO, without a
/// system call, so the child may read it too.
fn boot_time_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime fills the struct it is given.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut now) } != 0 {
        return 0;
    }
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// The clock tick `/proc` counts start times in (the kernel's USER_HZ, 100 a second on
/// the architectures this builds for), in nanoseconds; 0 when unknown. glibc answers
/// from what the kernel gave the process at its start, without a system call.
fn tick_ns() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        1_000_000_000 / hz as u64
    } else {
        0
    }
}

/// The clock tick both readings fall in, which is then the tick of every moment
/// between them; `None` when a tick began in between (or a reading or the tick's
/// length is unknown).
fn same_tick(before_ns: u64, after_ns: u64, tick_ns: u64) -> Option<u64> {
    if before_ns == 0 || tick_ns == 0 {
        return None;
    }
    let tick = before_ns / tick_ns;
    (tick == after_ns / tick_ns).then_some(tick)
}

extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `ChildArgs`, alive and unchanged (see `spawn`).
    let a = unsafe { &*(arg as *const ChildArgs) };
    // First, so that the two readings are as close as they can be.
    let started = same_tick(a.before_clone_ns, boot_time_ns(), a.tick_ns);
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
        match started {
            // 0 stands for "not known" (and is tick 0 only in the first 10 ms after boot).
            Some(ticks) if ticks > 0 => a.start_ticks.store(ticks, Ordering::SeqCst),
            _ => read_own_stat(a),
        }
        for (target, &fd) in a.stdio.iter().enumerate() {
            if libc::dup2(fd, target as libc::c_int) < 0 {
                return fail();
            }
        }
        if libc::chdir(a.cwd) != 0 {
            return fail();
        }
        close_on_exec_from_3();
        set_signal_mask(0, None);
        libc::execve(a.program, a.argv, a.envp);
        if *libc::__errno_location() == libc::ENOEXEC {
            libc::execve(*a.sh_argv, a.sh_argv, a.envp);
        }
    }
    fail()
}

/// In the child: its `/proc/self/stat` into the parent's buffer (nothing when there is
/// no `/proc`: the start time is then read later).
fn read_own_stat(a: &ChildArgs) {
    // SAFETY: a NUL-terminated path, and a buffer of the parent's (this memory is
    // shared until the exec) of STAT_SIZE bytes that the parent only reads afterwards.
    unsafe {
        let fd = libc::open(c"/proc/self/stat".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return;
        }
        let n = libc::read(fd, a.stat.cast(), STAT_SIZE);
        libc::close(fd);
        if n > 0 {
            a.stat_len.store(n as i32, Ordering::SeqCst);
        }
    }
}

/// In the child: marks every descriptor from 3 up close-on-exec, so that only stdin,
/// stdout and stderr reach the agent. `close_range` does it at once (Linux 5.11);
/// before that, the descriptors listed in `/proc/self/fd` one by one, and without
/// `/proc` every number below the descriptor limit. No allocation: the listing is read
/// into a buffer on the child's stack.
fn close_on_exec_from_3() {
    // SAFETY: system calls on descriptor numbers and a buffer on this stack.
    unsafe {
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) == 0 {
            return;
        }
        let dir = libc::open(c"/proc/self/fd".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC);
        if dir < 0 {
            for fd in 3..descriptor_limit() {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
            return;
        }
        let mut buf = [0u8; 2048];
        loop {
            let n = libc::syscall(libc::SYS_getdents64, dir, buf.as_mut_ptr(), buf.len());
            if n <= 0 {
                break;
            }
            let mut at = 0usize;
            while at < n as usize {
                // linux_dirent64: d_ino (8), d_off (8), d_reclen (2), d_type (1), d_name.
                let reclen = u16::from_ne_bytes([buf[at + 16], buf[at + 17]]) as usize;
                if reclen == 0 {
                    break;
                }
                let mut fd: libc::c_int = 0;
                let mut digits = 0;
                for &b in &buf[at + 19..at + reclen] {
                    if !b.is_ascii_digit() {
                        break;
                    }
                    fd = fd.saturating_mul(10).saturating_add((b - b'0') as libc::c_int);
                    digits += 1;
                }
                if digits > 0 && fd >= 3 && fd != dir {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
                at += reclen;
            }
        }
        libc::close(dir);
    }
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

    #[test]
    fn a_tick_boundary_between_the_readings_leaves_the_start_unknown() {
        const TICK: u64 = 10_000_000;
        assert_eq!(same_tick(5 * TICK + 1, 5 * TICK + 9_999_999, TICK), Some(5));
        assert_eq!(same_tick(5 * TICK + 9_999_999, 6 * TICK, TICK), None);
        assert_eq!(same_tick(0, 3, TICK), None, "a failed reading");
        assert_eq!(same_tick(5 * TICK, 5 * TICK, 0), None, "an unknown tick");
        assert_eq!(tick_ns(), TICK, "USER_HZ on this machine");
    }
}
