//! The launcher: one thread per process that does the blocking part of starting a
//! session (writing the session directory, starting the agent), so that neither Node's
//! event loop nor a Tokio worker waits on a slow disk. It lives as long as the
//! process, which is what a parent-death signal needs of the spawning thread.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send>;

thread_local! {
    static IS_LAUNCHER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the calling thread lives as long as the process: the launcher, or the
/// process's main thread (JavaScript's, for the Node binding). A parent-death signal
/// is only safe from such a thread.
pub(crate) fn thread_outlives_sessions() -> bool {
    // The system call, not `libc::gettid`: glibc has that wrapper only from 2.30 on, and
    // the published binary must load on glibc 2.17.
    // SAFETY: the gettid system call and getpid have no preconditions.
    #[cfg(target_os = "linux")]
    let main = unsafe { libc::syscall(libc::SYS_gettid) as libc::pid_t == libc::getpid() };
    #[cfg(not(target_os = "linux"))]
    let main = false;
    main || IS_LAUNCHER.with(|l| l.get())
}

/// Whether the calling thread is the launcher (where blocking file work is in place).
pub(crate) fn on_launcher() -> bool {
    IS_LAUNCHER.with(|l| l.get())
}

static LAUNCHER: OnceLock<Mutex<Sender<Job>>> = OnceLock::new();

fn sender() -> &'static Mutex<Sender<Job>> {
    LAUNCHER.get_or_init(|| {
        let (tx, rx) = channel::<Job>();
        std::thread::Builder::new()
            .name("session-launcher".into())
            .spawn(move || {
                IS_LAUNCHER.with(|l| l.set(true));
                for job in rx {
                    // A job reports its own failures; a panic must not end the thread.
                    if catch_unwind(AssertUnwindSafe(job)).is_err() {
                        tracing::error!("a session launch panicked");
                    }
                }
            })
            .expect("cannot start the session launcher thread");
        Mutex::new(tx)
    })
}

/// Runs `job` on the launcher thread, after the jobs queued before it.
pub(crate) fn launch(job: impl FnOnce() + Send + 'static) {
    let tx = sender().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    // The thread never exits, so the receiver is always there.
    let _ = tx.send(Box::new(job));
}
