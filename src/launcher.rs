//! The launcher: one thread per process that does the blocking part of starting a
//! session (writing the session directory, starting the agent, its entry in the state
//! directory, and removing that entry at the end, then reporting the end), so that
//! neither Node's event loop nor a Tokio worker waits on a slow disk. It lives as long
//! as the process, which is what a parent-death signal needs of the spawning thread.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send>;

thread_local! {
    static IS_LAUNCHER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the calling thread lives as long as the process: the launcher, or the
/// process's main thread (JavaScript's, for the Node binding). A parent-death signal
/// is only safe from such a thread.
pub(crate) fn thread_outlives_sessions() -> bool {
    // The launcher (most spawns) is known without a system call.
    if IS_LAUNCHER.with(|l| l.get()) {
        return true;
    }
    // The system call, not `libc::gettid`: glibc has that wrapper only from 2.30 on, and
    // the published binary must load on glibc 2.17.
    // SAFETY: the gettid system call and getpid have no preconditions.
    #[cfg(target_os = "linux")]
    return unsafe { libc::syscall(libc::SYS_gettid) as libc::pid_t == libc::getpid() };
    #[cfg(not(target_os = "linux"))]
    false
}

/// The jobs waiting, and the bell that wakes the thread when it waits for one.
struct Launcher {
    queue: Arc<Mutex<Queue>>,
    /// A byte written here wakes the thread. A socket rather than a condition variable:
    /// a write to a socket wakes its reader with the hint that the writer is about to
    /// wait (as JavaScript's thread is, back in its event loop), so the kernel tends to
    /// run the launcher on the writer's CPU instead of waking an idle one, which on a
    /// virtual machine costs tens of microseconds each way (`examples/wake_probe`).
    bell: UnixStream,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// The thread found no job and waits for the bell.
    waiting: bool,
}

static LAUNCHER: OnceLock<Launcher> = OnceLock::new();

fn launcher() -> &'static Launcher {
    LAUNCHER.get_or_init(|| {
        let (bell, mut ear) = UnixStream::pair().expect("cannot create the session launcher's bell");
        let queue = Arc::new(Mutex::new(Queue::default()));
        let shared = Arc::clone(&queue);
        std::thread::Builder::new()
            .name("session-launcher".into())
            .spawn(move || {
                IS_LAUNCHER.with(|l| l.set(true));
                loop {
                    let next = {
                        let mut queue = shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                        let next = queue.jobs.pop_front();
                        queue.waiting = next.is_none();
                        next
                    };
                    match next {
                        // A job reports its own failures; a panic must not end the thread.
                        Some(job) => {
                            if catch_unwind(AssertUnwindSafe(job)).is_err() {
                                tracing::error!("a session launch panicked");
                            }
                        }
                        // One byte per wait (see `launch`); an error (never expected) only
                        // makes this a busier loop.
                        None => {
                            let _ = ear.read(&mut [0u8; 16]);
                        }
                    }
                }
            })
            .expect("cannot start the session launcher thread");
        Launcher { queue, bell }
    })
}

/// Runs `job` on the launcher thread, after the jobs queued before it.
pub(crate) fn launch(job: impl FnOnce() + Send + 'static) {
    let launcher = launcher();
    let ring = {
        let mut queue = launcher.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        queue.jobs.push_back(Box::new(job));
        std::mem::take(&mut queue.waiting)
    };
    if ring {
        // Read before the thread looks at the queue again, or still unread when it
        // does: either way the job is found.
        let _ = (&launcher.bell).write(&[1]);
    }
}
