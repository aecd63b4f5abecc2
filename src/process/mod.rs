//! Process control for agents: start one in a process group of its own with an
//! argument vector (never a shell), signal the whole group, learn that the agent
//! exited without reaping it (so its pid, which is also the group id, cannot be
//! reused while the group is still being signalled), then reap it.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::*;
#[cfg(target_os = "linux")]
mod linux_spawn;
#[cfg(unix)]
mod exit;
#[cfg(unix)]
pub use exit::wait_exit;

mod oom;
pub use oom::OomCounter;

mod tagged;
pub use tagged::signal_tagged;

#[cfg(not(unix))]
compile_error!(
    "claude-session-spawner needs Unix process groups and signals (Linux, macOS); \
     Windows would need job objects and is not supported yet"
);

/// What to start.
#[derive(Debug, Clone)]
pub struct AgentCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub cwd: PathBuf,
    /// The environment to start from; `None` inherits this process's environment.
    pub base_env: Option<Vec<(OsString, OsString)>>,
    /// Set on top of the base environment.
    pub env: Vec<(OsString, OsString)>,
    /// The agent gets SIGKILL when the thread that starts it ends (Linux only). Only
    /// for threads that live as long as the daemon: the signal follows the parent
    /// thread, not the process.
    pub parent_death_signal: bool,
}

/// How an agent ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal { signal: i32, core_dumped: bool },
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Code(code) => write!(f, "exit code {code}"),
            Self::Signal { signal, core_dumped } => {
                write!(f, "signal {}", signal_name(signal))?;
                if core_dumped {
                    f.write_str(" (core dumped)")?;
                }
                Ok(())
            }
        }
    }
}

/// The conventional name of a signal number, e.g. `SIGSEGV`; `SIG<n>` when unknown.
pub fn signal_name(signal: i32) -> String {
    known_signal_name(signal).map_or_else(|| format!("SIG{signal}"), str::to_owned)
}

/// The conventional name of a signal number this platform defines.
pub fn known_signal_name(signal: i32) -> Option<&'static str> {
    SIGNALS.iter().find(|(n, _)| *n == signal).map(|(_, name)| *name)
}

/// The number of a signal named like `SIGTERM` or `TERM`.
pub fn signal_number(name: &str) -> Option<i32> {
    let name = name.strip_prefix("SIG").unwrap_or(name);
    SIGNALS
        .iter()
        .find(|(_, n)| &n[3..] == name)
        .map(|(number, _)| *number)
}

#[cfg(unix)]
const SIGNALS: &[(i32, &str)] = &[
    (libc::SIGHUP, "SIGHUP"),
    (libc::SIGINT, "SIGINT"),
    (libc::SIGQUIT, "SIGQUIT"),
    (libc::SIGILL, "SIGILL"),
    (libc::SIGTRAP, "SIGTRAP"),
    (libc::SIGABRT, "SIGABRT"),
    (libc::SIGBUS, "SIGBUS"),
    (libc::SIGFPE, "SIGFPE"),
    (libc::SIGKILL, "SIGKILL"),
    (libc::SIGUSR1, "SIGUSR1"),
    (libc::SIGSEGV, "SIGSEGV"),
    (libc::SIGUSR2, "SIGUSR2"),
    (libc::SIGPIPE, "SIGPIPE"),
    (libc::SIGALRM, "SIGALRM"),
    (libc::SIGTERM, "SIGTERM"),
    (libc::SIGCHLD, "SIGCHLD"),
    (libc::SIGCONT, "SIGCONT"),
    (libc::SIGSTOP, "SIGSTOP"),
    (libc::SIGTSTP, "SIGTSTP"),
    (libc::SIGTTIN, "SIGTTIN"),
    (libc::SIGTTOU, "SIGTTOU"),
    (libc::SIGURG, "SIGURG"),
    (libc::SIGXCPU, "SIGXCPU"),
    (libc::SIGXFSZ, "SIGXFSZ"),
    (libc::SIGVTALRM, "SIGVTALRM"),
    (libc::SIGPROF, "SIGPROF"),
    (libc::SIGWINCH, "SIGWINCH"),
    (libc::SIGIO, "SIGIO"),
    (libc::SIGSYS, "SIGSYS"),
];


#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn signal_names_both_ways() {
        assert_eq!(signal_name(libc::SIGSEGV), "SIGSEGV");
        assert_eq!(signal_name(99), "SIG99");
        assert_eq!(signal_number("SIGTERM"), Some(libc::SIGTERM));
        assert_eq!(signal_number("KILL"), Some(libc::SIGKILL));
        assert_eq!(signal_number("NOPE"), None);
    }

    #[test]
    fn exit_status_reads_well() {
        assert_eq!(ExitStatus::Code(3).to_string(), "exit code 3");
        let s = ExitStatus::Signal { signal: libc::SIGSEGV, core_dumped: true };
        assert_eq!(s.to_string(), "signal SIGSEGV (core dumped)");
    }
}
