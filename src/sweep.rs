//! Stopping what a session left outside its process group: processes that called
//! `setsid` (or `setpgid`) escape the group signal, but still carry the session's id
//! in their environment ([`SESSION_ID_ENV`]), so a scan of `/proc` finds them.
//!
//! A scan reads every process's environment, so scans are shared by one sweeper
//! thread: [`later`] queues an ended session for a scan at most once per
//! [`SWEEP_INTERVAL`] (for everything queued since); [`soon`] asks for a scan at once,
//! for a session whose output is still held open after its group was killed (a
//! process outside the group holds it), and is told when it is done; [`now`] scans on
//! the calling thread, for a daemon going away. The first two report the processes
//! they killed for the session, which its status lists.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

use crate::process::signal_tagged;
use crate::spawner::SESSION_ID_ENV;

/// The longest a process that escaped an ended session's group outlives it.
pub(crate) const SWEEP_INTERVAL: Duration = Duration::from_millis(200);

/// Told what a scan killed for a session (called only when it killed something).
type Report = Box<dyn FnOnce(Vec<u32>) + Send>;

#[derive(Default)]
struct Queue {
    ids: Vec<String>,
    /// Told, with what was killed for their id, when the next scan is done; they make
    /// it due at once.
    waiting: Vec<(String, oneshot::Sender<Vec<u32>>)>,
    reports: Vec<(String, Report)>,
    /// The sweeper waits for work and must be woken; otherwise it is gathering ids
    /// until its next scan is due, and only an urgent id needs to wake it.
    idle: bool,
}

struct Sweeper {
    queue: Mutex<Queue>,
    wake: Condvar,
}

static SWEEPER: OnceLock<Option<&'static Sweeper>> = OnceLock::new();

/// Kills (SIGKILL) every process tagged with one of `ids`; returns them by id.
pub(crate) fn now(ids: &[&str]) -> HashMap<String, Vec<u32>> {
    let found = signal_tagged(SESSION_ID_ENV, ids, libc::SIGKILL);
    for (id, pids) in &found {
        tracing::warn!(session = %id, ?pids, "killed processes that had left the session's process group");
    }
    found
}

/// Queues the id of a session that ended for the next shared scan; `report` hears of
/// what it killed for the session, if anything.
pub(crate) fn later(id: &str, report: impl FnOnce(Vec<u32>) + Send + 'static) {
    enqueue(id, None, Some(Box::new(report)));
}

/// Asks for a scan for `id` now; resolves when it is done (at once if the sweeper
/// cannot run) with what it killed for `id`.
pub(crate) async fn soon(id: &str) -> Vec<u32> {
    let (done, scanned) = oneshot::channel();
    enqueue(id, Some(done), None);
    scanned.await.unwrap_or_default()
}

fn enqueue(id: &str, done: Option<oneshot::Sender<Vec<u32>>>, report: Option<Report>) {
    let Some(sweeper) = SWEEPER.get_or_init(start) else { return };
    let mut queue = sweeper.queue.lock();
    queue.ids.push(id.to_owned());
    let urgent = done.is_some();
    queue.waiting.extend(done.map(|d| (id.to_owned(), d)));
    queue.reports.extend(report.map(|r| (id.to_owned(), r)));
    if queue.idle || urgent {
        queue.idle = false;
        sweeper.wake.notify_one();
    }
}

fn start() -> Option<&'static Sweeper> {
    let sweeper: &'static Sweeper = Box::leak(Box::new(Sweeper { queue: Mutex::default(), wake: Condvar::new() }));
    let started = std::thread::Builder::new().name("session-sweeper".into()).spawn(move || {
        let mut last = Instant::now() - SWEEP_INTERVAL;
        loop {
            let (ids, waiting, reports) = {
                let mut queue = sweeper.queue.lock();
                while queue.ids.is_empty() {
                    queue.idle = true;
                    sweeper.wake.wait(&mut queue);
                }
                queue.idle = false;
                let due = last + SWEEP_INTERVAL;
                while queue.waiting.is_empty() && Instant::now() < due {
                    sweeper.wake.wait_until(&mut queue, due);
                }
                (std::mem::take(&mut queue.ids), std::mem::take(&mut queue.waiting), std::mem::take(&mut queue.reports))
            };
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            // A scan that panics must not end the thread.
            let mut killed = std::panic::catch_unwind(|| now(&refs)).unwrap_or_default();
            last = Instant::now();
            for (id, done) in waiting {
                let _ = done.send(killed.remove(&id).unwrap_or_default());
            }
            for (id, report) in reports {
                if let Some(pids) = killed.remove(&id) {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| report(pids)));
                }
            }
        }
    });
    match started {
        Ok(_) => Some(sweeper),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the session sweeper thread");
            None
        }
    }
}
