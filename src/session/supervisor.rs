//! The life of a running session, from spawn to its single `SessionEnded`, in one
//! task: it reads both output streams and writes stdin (as futures it polls, so a
//! session costs one task), watches the agent's exit,
//! the timeout and stop requests; stops the process group with SIGTERM then SIGKILL
//! after the grace period; stops whatever the agent left in its group when it exits
//! (SIGTERM, then SIGKILL a moment later); reaps it; finishes reading both streams,
//! killing whatever outside the group still holds them; then decides the final state,
//! which the launcher records and reports once the state directory's entry is blanked.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use std::os::fd::OwnedFd;

use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant, Sleep};
use tracing::Instrument;

use super::pump::Pump;
use super::stdin::{write_stdin, InputReceiver};
use super::{Entry, Session, StopReason, StopRequest};
use crate::event::SpawnerEvent;
use crate::notice::Notice;
use crate::process::{self, signal_name, ExitStatus};
use crate::spawner::Shared;
use crate::status::SessionState;
use crate::sweep;

/// How long what an agent left in its group may take to exit after SIGTERM, once the
/// agent itself has exited (at most the spawner's grace period).
const LEFTOVER_GRACE: Duration = Duration::from_secs(1);

/// How long the streams may stay open after the agent and its group are gone. Only a
/// process that left the group (`setsid`) can hold them that long.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// How long the output may stay open after the group was killed before the processes
/// holding it are looked for outside the group (see [`sweep`]).
const ESCAPE_CHECK: Duration = Duration::from_millis(100);

pub(crate) struct Running {
    pub pid: u32,
    pub pidfd: Option<OwnedFd>,
    /// See `AgentProcess::output_ends`: closed once the agent exited.
    pub output_ends: Vec<OwnedFd>,
    pub stops: mpsc::UnboundedReceiver<StopRequest>,
    pub stdout: Pump,
    pub stderr: Pump,
    pub stdin: OwnedFd,
    pub stdin_commands: InputReceiver,
}

/// Runs the session to its end. A panic inside is caught: the session then ends
/// `failed` and its group is killed, so nobody waits for it forever.
pub(crate) async fn supervise(shared: Arc<Shared>, session: Arc<Session>, running: Running) {
    let pid = running.pid;
    // The session's record and the OOM baseline are written here, off the spawning thread
    // (JavaScript's, for the Node binding), before anything can end the session.
    session.record.lock().oom = process::OomCounter::for_child();
    let span = tracing::info_span!("session", id = %session.id, pid);
    let run = run(Arc::clone(&shared), Arc::clone(&session), running).instrument(span.clone());
    if let Err(panic) = CatchUnwind(Box::pin(run)).await {
        if !session.record.lock().exited {
            let _ = process::signal_group(pid, libc::SIGKILL);
            let _ = process::reap(pid);
        }
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let message = format!("internal error while supervising the session: {what}");
        span.in_scope(|| tracing::error!("{message}"));
        end(&shared, &session, SessionState::Failed, Some(message));
    }
}

/// Polls `future` once: whether it finished.
async fn finished_now<F: Future + ?Sized>(mut future: Pin<&mut F>) -> bool {
    std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx).is_ready())).await
}

/// Resolves to `Err` with the payload if polling the inner future panics.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn std::any::Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

async fn run(shared: Arc<Shared>, session: Arc<Session>, running: Running) {
    let Running {
        pid,
        pidfd,
        output_ends,
        mut stops,
        stdout,
        stderr,
        stdin,
        stdin_commands,
    } = running;
    let grace = shared.options.grace_period;
    let timeout_ms = session.config.effective_timeout_ms();
    // Three moments, each one timer armed in place: the runtime's timer wheel is
    // touched when a moment is set, not at every turn of the loop (each output chunk).
    let mut term = Moment::new(None);
    let mut deadline = Moment::new(timeout_ms.map(|ms| Instant::now() + Duration::from_millis(ms)));
    let mut kill = Moment::new(None);
    let mut exit = pin!(process::wait_exit(pid, pidfd));
    let (mut stdout, mut stderr) = (stdout, stderr);
    let logs = [stdout.written.take(), stderr.written.take()];
    // Boxed, not pinned in place: dropped before the logs are awaited (a reader left
    // behind would keep its log open for more).
    let exited = AtomicBool::new(false);
    let mut stdout = Box::pin(stdout.run(&session, &shared, &exited));
    let mut stderr = Box::pin(stderr.run(&session, &shared, &exited));
    let mut stdin = pin!(write_stdin(stdin, stdin_commands));
    let (mut stdout_done, mut stderr_done, mut stdin_done) = (false, false, false);
    // SIGTERM to the group, and SIGKILL after the grace period, unless already under way.
    let terminate = |kill: &mut Moment| {
        if !kill.is_set() {
            signal(pid, libc::SIGTERM);
            kill.set(Instant::now() + grace);
        }
    };
    tracing::info!("running");

    let exit = loop {
        tokio::select! {
            biased;
            status = &mut exit => break status,
            Some(request) = stops.recv() => {
                if let Some(after) = request.after {
                    let at = Instant::now() + after;
                    term.set(term.at().map_or(at, |t| t.min(at)));
                } else if request.graceful {
                    terminate(&mut kill);
                } else {
                    signal(pid, libc::SIGKILL);
                }
            }
            _ = term.elapsed(), if term.is_set() => {
                term.clear();
                terminate(&mut kill);
            }
            _ = deadline.elapsed(), if deadline.is_set() => {
                deadline.clear();
                if mark_stop(&session, StopReason::Timeout) {
                    tracing::info!("timed out");
                    shared.emit(SpawnerEvent::SessionTimeout { session_id: Arc::clone(&session.id) });
                }
                terminate(&mut kill);
            }
            _ = kill.elapsed(), if kill.is_set() => {
                tracing::info!("grace period over");
                signal(pid, libc::SIGKILL);
                kill.clear();
            }
            _ = &mut stdout, if !stdout_done => stdout_done = true,
            _ = &mut stderr, if !stderr_done => stderr_done = true,
            _ = &mut stdin, if !stdin_done => stdin_done = true,
        }
    };

    // The agent is a zombie now, so its pid (the group id) is still reserved: the
    // group can be signalled without any risk of hitting a reused id. What the agent
    // left behind gets SIGTERM and a moment to clean up (git removes its lock files
    // on SIGTERM) while its output is read to the end, then SIGKILL. Then reap.
    session.record.lock().exited = true;
    // The streams end when whatever else holds them closes them too.
    drop(output_ends);
    exited.store(true, Ordering::Relaxed);
    signal(pid, libc::SIGTERM);
    // Most often both streams end right here (see `Pump::read`), and then no timer is
    // set: setting one wakes the runtime's driver to re-arm it.
    stdout_done = stdout_done || finished_now(stdout.as_mut()).await;
    stderr_done = stderr_done || finished_now(stderr.as_mut()).await;
    let kill_at = Instant::now() + LEFTOVER_GRACE.min(grace);
    while !(stdout_done && stderr_done) {
        tokio::select! {
            _ = &mut stdout, if !stdout_done => stdout_done = true,
            _ = &mut stderr, if !stderr_done => stderr_done = true,
            _ = sleep_until(kill_at) => break,
        }
    }
    signal(pid, libc::SIGKILL);
    let exit = exit.and_then(|_| process::reap(pid));
    drop(stops);

    let drain_until = Instant::now() + DRAIN_LIMIT;
    let mut escape_check = Some(Instant::now() + ESCAPE_CHECK);
    while !(stdout_done && stderr_done) {
        tokio::select! {
            _ = &mut stdout, if !stdout_done => stdout_done = true,
            _ = &mut stderr, if !stderr_done => stderr_done = true,
            _ = sleep_until(escape_check.unwrap_or_else(Instant::now)), if escape_check.is_some() => {
                escape_check = None;
                let killed = sweep::soon(&session.id).await;
                session.record.lock().stopped_escapees.extend(killed);
            }
            _ = sleep_until(drain_until) => {
                tracing::warn!("output still open after the agent's group was killed; stopped reading it");
                break;
            }
        }
    }

    // The logs hold every byte read before the end is reported.
    drop((stdout, stderr));
    for written in logs.into_iter().flatten() {
        written.wait().await;
    }

    let (state, message) = {
        let mut r = session.record.lock();
        match exit {
            Ok(ExitStatus::Code(code)) => r.exit_code = Some(code),
            Ok(ExitStatus::Signal { signal, .. }) => r.signal = Some(signal_name(signal)),
            Err(_) => {}
        }
        match final_state(r.stop, &exit, timeout_ms, r.failure.clone()) {
            (SessionState::Completed, _) if r.turn_error.is_some() => (SessionState::Failed, r.turn_error.clone()),
            decided => decided,
        }
    };
    // What left the group without holding the output is found by the next sweep.
    let ended = Arc::downgrade(&session);
    sweep::later(&session.id, move |killed| {
        if let Some(session) = ended.upgrade() {
            session.record.lock().stopped_escapees.extend(killed);
        }
    });
    end_when_blanked(shared, session, state, message);
}

/// A moment the supervisor waits for, if set: one timer, made when first set and
/// re-armed in place after that.
struct Moment {
    at: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Moment {
    fn new(at: Option<Instant>) -> Self {
        Self { at, timer: at.map(|at| Box::pin(sleep_until(at))) }
    }

    fn at(&self) -> Option<Instant> {
        self.at
    }

    fn is_set(&self) -> bool {
        self.at.is_some()
    }

    fn set(&mut self, at: Instant) {
        match &mut self.timer {
            Some(timer) if self.at != Some(at) => timer.as_mut().reset(at),
            Some(_) => {}
            None => self.timer = Some(Box::pin(sleep_until(at))),
        }
        self.at = Some(at);
    }

    fn clear(&mut self) {
        self.at = None;
    }

    /// Resolves at the moment (polled only while it is set: never without a timer).
    async fn elapsed(&mut self) {
        match &mut self.timer {
            Some(timer) => timer.await,
            None => std::future::pending().await,
        }
    }
}

/// The state a session ends in: the spawner's own reason to stop it comes first, then
/// how the agent exited.
fn final_state(
    stop: Option<StopReason>,
    exit: &std::io::Result<ExitStatus>,
    timeout_ms: Option<u64>,
    failure: Option<String>,
) -> (SessionState, Option<String>) {
    match (stop, exit) {
        (Some(StopReason::Failed), _) => (SessionState::Failed, failure),
        (Some(StopReason::Timeout), _) => (
            SessionState::Timeout,
            Some(format!("session timed out after {} ms", timeout_ms.unwrap_or(0))),
        ),
        (Some(StopReason::Terminated), _) => (SessionState::Terminated, None),
        (None, Ok(ExitStatus::Code(0))) => (SessionState::Completed, None),
        (None, Ok(ExitStatus::Code(code))) => (
            SessionState::Failed,
            Some(format!("agent exited with code {code}")),
        ),
        (None, Ok(ExitStatus::Signal { signal, core_dumped })) => (
            SessionState::Crashed,
            Some(format!(
                "agent was killed by signal {}{}",
                signal_name(*signal),
                if *core_dumped { " (core dumped)" } else { "" }
            )),
        ),
        (None, Err(e)) => (SessionState::Failed, Some(format!("lost track of the agent: {e}"))),
    }
}

/// Writes the session's entry in the state directory, on the thread that started the
/// session (the launcher, or a `spawn_session_now` caller), after its start was
/// reported. A session that ended meanwhile has its entry removed at once (its end
/// found none to remove).
pub(crate) fn record_entry(shared: &Shared, session: &Session, pid: u32, started: Option<u64>) {
    let Some(registry) = &shared.registry else { return };
    if *session.entry.lock() == Entry::Ended {
        return;
    }
    if let Err(e) = registry.add(&session.id, pid, started, &session.config.working_directory) {
        tracing::warn!(session = %session.id, error = %e, "cannot record the session in the state directory");
        return;
    }
    let mut entry = session.entry.lock();
    if *entry == Entry::Ended {
        drop(entry);
        registry.remove(&session.id);
    } else {
        *entry = Entry::Written;
    }
}

/// Reports the end once the session's entry in the state directory is gone, so whoever
/// hears of the end finds it gone. The launcher blanks it, with the sessions' other
/// file work (a slow state directory delays only the ends), and reports the end itself
/// right after: the end crosses threads once, not there and back. An entry not written
/// yet is written, then removed, by the launcher job that started the session
/// (`record_entry` sees the end); this job comes after that one.
fn end_when_blanked(shared: Arc<Shared>, session: Arc<Session>, state: SessionState, message: Option<String>) {
    let Some(registry) = take_entry(&shared, &session) else {
        return end(&shared, &session, state, message);
    };
    let span = tracing::Span::current();
    crate::launcher::launch(move || {
        let _span = span.enter();
        // The end is reported whatever happens to the removal.
        if catch_unwind(AssertUnwindSafe(|| registry.remove(&session.id))).is_err() {
            tracing::error!("removing the session from the state directory panicked");
        }
        let _runtime = shared.runtime.enter();
        end(&shared, &session, state, message);
    });
}

/// The state directory to blank the session's entry in, the first time after its end
/// (`None` after that, or without a state directory).
fn take_entry(shared: &Shared, session: &Session) -> Option<Arc<crate::registry::Registry>> {
    let registry = shared.registry.as_ref()?;
    (std::mem::replace(&mut *session.entry.lock(), Entry::Ended) != Entry::Ended).then(|| Arc::clone(registry))
}

/// Records the final state, moves the session to history, reports `SessionEnded`,
/// and only then releases whoever awaits the completion.
pub(crate) fn end(shared: &Shared, session: &Arc<Session>, state: SessionState, message: Option<String>) {
    let Some(status) = session.finish(state, message) else {
        return;
    };
    tracing::info!(state = state.as_str(), "ended");
    // Blanked already, unless supervising failed or the session never ran.
    if let Some(registry) = take_entry(shared, session) {
        let id = Arc::clone(&session.id);
        crate::launcher::launch(move || registry.remove(&id));
    }
    shared.table.lock().on_ended(session);
    // The pools and recovery managers hear of it after the handler, so their events
    // follow the session's own.
    let notice = (!shared.watchers.is_empty()).then(|| Notice::Ended {
        session_id: Arc::clone(&session.id),
        status: Arc::new(status.clone()),
        restarter: session.restarter,
        reached_init: session.record.lock().reached_init,
    });
    shared.emit(SpawnerEvent::SessionEnded {
        session_id: Arc::clone(&session.id),
        status: Box::new(status),
    });
    if let Some(notice) = notice {
        shared.notify(&notice);
    }
    session.notify_ended();
    drop(session.busy.lock().take());
}

/// Sets the stop reason unless one is set; true when this call set it.
pub(crate) fn mark_stop(session: &Session, reason: StopReason) -> bool {
    let mut r = session.record.lock();
    if r.stop.is_some() || r.state.is_ended() {
        return false;
    }
    r.stop = Some(reason);
    true
}

fn signal(pgid: u32, sig: i32) {
    tracing::debug!(signal = %signal_name(sig), "signalling the process group");
    if let Err(e) = process::signal_group(pgid, sig) {
        tracing::warn!(error = %e, "signalling the process group failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_moment_set_again_waits_for_its_new_time() {
        let mut moment = Moment::new(None);
        let first = Instant::now() + Duration::from_millis(20);
        moment.set(first);
        moment.elapsed().await;
        assert!(Instant::now() >= first);
        moment.clear();
        // Set again after it fired: it must not count as elapsed already.
        let second = Instant::now() + Duration::from_millis(20);
        moment.set(second);
        moment.elapsed().await;
        assert!(Instant::now() >= second, "the timer was not re-armed");
        // Moved earlier: it fires at the earlier time, not the first one set.
        moment.set(Instant::now() + Duration::from_secs(60));
        let sooner = Instant::now() + Duration::from_millis(20);
        moment.set(sooner);
        tokio::time::timeout(Duration::from_secs(10), moment.elapsed()).await.expect("fired at the earlier time");
        assert!(Instant::now() >= sooner);
    }

    #[test]
    fn stop_reasons_come_before_exit_status() {
        let term = Ok(ExitStatus::Code(143));
        assert_eq!(final_state(Some(StopReason::Timeout), &term, Some(50), None).0, SessionState::Timeout);
        assert_eq!(
            final_state(Some(StopReason::Timeout), &term, Some(50), None).1.as_deref(),
            Some("session timed out after 50 ms")
        );
        let killed = Ok(ExitStatus::Signal { signal: libc::SIGKILL, core_dumped: false });
        assert_eq!(final_state(Some(StopReason::Terminated), &killed, None, None).0, SessionState::Terminated);
        let budget = final_state(Some(StopReason::Failed), &Ok(ExitStatus::Code(0)), None, Some("over budget".into()));
        assert_eq!(budget, (SessionState::Failed, Some("over budget".into())));
    }

    #[test]
    fn exit_status_decides_otherwise() {
        assert_eq!(final_state(None, &Ok(ExitStatus::Code(0)), None, None), (SessionState::Completed, None));
        let (state, msg) = final_state(None, &Ok(ExitStatus::Code(3)), None, None);
        assert_eq!(state, SessionState::Failed);
        assert_eq!(msg.as_deref(), Some("agent exited with code 3"));
        let (state, msg) =
            final_state(None, &Ok(ExitStatus::Signal { signal: libc::SIGSEGV, core_dumped: true }), None, None);
        assert_eq!(state, SessionState::Crashed);
        assert_eq!(msg.as_deref(), Some("agent was killed by signal SIGSEGV (core dumped)"));
        let lost = Err(std::io::Error::from_raw_os_error(libc::ECHILD));
        assert_eq!(final_state(None, &lost, None, None).0, SessionState::Failed);
    }
}
