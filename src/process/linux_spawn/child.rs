//! The child's side of the Linux spawn: what it is given (all prepared by the parent
//! before the clone) and what it does between the clone and its `execve`, with only
//! system calls (no allocation, no locks: this is still the daemon's memory, and its
//! other threads hold those). Also the child's stack, mapped with a guard page below.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

const CHILD_STACK: usize = 64 * 1024;

/// The kernel's signal set: 64 signals on x86_64 and aarch64.
pub(super) type KernelSigset = u64;

/// What the child reads; all of it lives in the parent's frame, which the kernel
/// keeps still (CLONE_VFORK) until the child has exec'd or exited.
pub(super) struct ChildArgs {
    pub(super) program: *const libc::c_char,
    pub(super) argv: *const *const libc::c_char,
    pub(super) envp: *const *const libc::c_char,
    pub(super) cwd: *const libc::c_char,
    /// `/bin/sh`, the program, then its arguments: run when the program is not in an
    /// executable format (`ENOEXEC`).
    pub(super) sh_argv: *const *const libc::c_char,
    pub(super) stdio: [RawFd; 3],
    /// `Some(parent pid)`: set a parent-death signal (SIGKILL).
    pub(super) parent_death: Option<libc::pid_t>,
    /// The errno of the step that failed in the child; 0 when it exec'd.
    pub(super) error: AtomicI32,
    /// The boot-time clock (ns) just before the clone: with the child's own reading
    /// just after, it brackets the moment the kernel stamped as the child's start.
    pub(super) before_clone_ns: u64,
    /// The length of the clock tick `/proc` counts a start time in (ns; 0: unknown).
    pub(super) tick_ns: u64,
    /// The start time in clock ticks, when both readings fall in the same tick (all
    /// but about one spawn in a thousand); 0 when they do not.
    pub(super) start_ticks: AtomicU64,
    /// Otherwise, where the child puts its own `/proc/self/stat` (`STAT_SIZE` bytes),
    /// and how much it read. Read by the parent afterwards: once the agent is in its
    /// `exec`, reading its stat waits until the `exec` is done (half a millisecond or
    /// more).
    pub(super) stat: *mut u8,
    pub(super) stat_len: AtomicI32,
}

pub(super) const STAT_SIZE: usize = 1024;

/// Sets this thread's signal mask with the system call itself: glibc's wrappers refuse
/// to block the signals it keeps for itself (SIGCANCEL, SIGSETXID).
pub(super) fn set_signal_mask(mask: KernelSigset, previous: Option<&mut KernelSigset>) {
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
    pub(super) static CHILD_STACK_OF_THREAD: std::cell::RefCell<Option<ChildStack>> = const { std::cell::RefCell::new(None) };
}

/// The child's stack: mapped on its own, with an inaccessible guard page below it.
pub(super) struct ChildStack {
    base: *mut libc::c_void,
    len: usize,
}

impl ChildStack {
    pub(super) fn new() -> io::Result<Self> {
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
    pub(super) fn top(&self) -> *mut libc::c_void {
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
pub(super) fn boot_time_ns() -> u64 {
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
pub(super) fn tick_ns() -> u64 {
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

pub(super) extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
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

#[cfg(test)]
mod tests {
    use super::*;

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
