//! The reader of one output stream. Each chunk goes, in this order, to the log file
//! on disk (through its writer, see `log`), to the protocol observer, to the session's
//! bounded tail and to the event handler (as text), all sharing the one buffer it
//! was read into. Both streams are read concurrently, so a flood on one
//! never stalls the other.

use std::future::poll_fn;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::event::{OutputChunk, SpawnerEvent, Stream};
use crate::notice::Notice;
use crate::output::{Text, Utf8Decoder};
use crate::approval::ApprovalRequest;
use crate::policy::Rule;
use crate::protocol::{approval_reply, interrupt_request, Findings, Observer, PendingApproval, Report};
use super::log::{LogSink, LogWritten};
use crate::session::{Session, StopReason, StopRequest};
use crate::spawner::Shared;
use crate::status::{PolicyViolation, SessionState};

/// What one read takes at most. Larger reads mean fewer events, so fewer wake-ups of
/// JavaScript's thread (7 % less CPU for a 256 MiB flood than with 64 KiB), up to
/// where the string JavaScript gets would no longer fit V8's young generation (128 KiB:
/// beyond, each string is mapped and unmapped on its own).
const READ_SIZE: usize = 120 * 1024;

/// A read at least this big hands its buffer over; a smaller one is copied out, so a
/// buffer is at least half used by the output it holds.
const HAND_OVER: usize = READ_SIZE / 2;

pub(crate) struct Pump {
    pub stream: Stream,
    pub source: Source,
    /// The log file, opened and written by its own writer, off this reader's thread.
    pub log: LogSink,
    /// Taken by the supervisor, which awaits the log before reporting the end.
    pub written: Option<LogWritten>,
    pub observer: Option<Observer>,
}

impl Pump {
    /// Inside the runtime (the log's writer starts on it).
    pub fn new(stream: Stream, fd: OwnedFd, log: PathBuf, observer: Option<Observer>) -> std::io::Result<Self> {
        let source = Source::new(fd)?;
        let (log, written) = super::log::open(log);
        Ok(Self { stream, source, log, written: Some(written), observer })
    }

    /// Reads the stream to its end. `exited` is set by the supervisor once the agent
    /// has exited and its ends of the streams are closed.
    pub async fn run(mut self, session: &Arc<Session>, shared: &Arc<Shared>, exited: &AtomicBool) {
        let mut buf = BytesMut::with_capacity(READ_SIZE);
        let mut decoder = Utf8Decoder::default();
        loop {
            // A character the last read cut goes in front, so this read completes it
            // in place and the decoder can share the whole buffer.
            let carried = decoder.pending().to_vec();
            buf.clear();
            buf.reserve(READ_SIZE + carried.len());
            buf.extend_from_slice(&carried);
            let n = match self.source.read(&mut buf, exited).await {
                Ok(0) => break,
                Ok(n) => {
                    // In the buffer now (the decoder keeps it until a read completes it).
                    decoder.take_pending();
                    n
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(stream = self.stream.as_str(), error = %e, "read failed");
                    break;
                }
            };
            // One buffer for the log, the tail and the event: a big read is handed over
            // (the next read gets a new buffer), a small one copied out so that a
            // short line never pins a whole read buffer while it waits.
            let read = if n >= HAND_OVER { buf.split().freeze() } else { Bytes::copy_from_slice(&buf) };
            let bytes = read.slice(carried.len()..);
            self.log.write(bytes.clone()).await;
            let mut found = Findings::default();
            if let Some(observer) = self.observer.as_mut() {
                observer.on_stdout(&bytes, &mut found);
            }
            session.record.lock().tail_mut(self.stream).push_shared(bytes);
            if session.config.verbose {
                tracing::info!(stream = self.stream.as_str(), bytes = n, "output");
            }
            self.deliver(decoder.decode_bytes(read), session, shared).await;
            if !found.is_empty() {
                apply(found, session, shared);
            }
        }
        let mut found = Findings::default();
        if let Some(observer) = self.observer.as_mut() {
            observer.on_eof(&mut found);
        }
        let rest = decoder.finish();
        self.deliver(Text::from(rest), session, shared).await;
        if !found.is_empty() {
            apply(found, session, shared);
        }
    }

    async fn deliver(&self, data: Text, session: &Session, shared: &Shared) {
        if data.is_empty() {
            return;
        }
        let credit = shared.output_credit(data.len()).await;
        shared.emit(SpawnerEvent::SessionOutput(OutputChunk {
            session_id: Arc::clone(&session.id),
            stream: self.stream,
            data,
            _credit: credit,
        }));
    }
}

/// What the protocol learnt from a chunk: into the record, onto stdin, out as events
/// (after the chunk's own output event).
fn apply(found: Findings, session: &Arc<Session>, shared: &Arc<Shared>) {
    let mut close_stdin = false;
    let mut budget = None;
    {
        let mut r = session.record.lock();
        if let Some(metrics) = found.metrics {
            r.metrics = metrics;
        }
        if let Some(usage) = found.usage {
            r.token_usage = Some(usage);
        }
        if let Some(cost) = found.cost_usd {
            r.cost_usd = Some(cost);
        }
        r.reached_init |= found.reached_init;
        r.modified_files.extend(found.modified_files);
        for violation in &found.violations {
            r.add_violation(violation.clone());
        }
        if let Some(error) = found.turn_ended {
            r.turn_error = error;
            if session.config.keep_alive {
                if r.state == SessionState::Running {
                    r.state = SessionState::WaitingInput;
                }
            } else {
                // One task, one turn: closing stdin lets Claude Code exit.
                close_stdin = true;
            }
        }
        if let Some((used, limit)) = found.budget_exceeded {
            if r.stop.is_none() && !r.state.is_ended() {
                r.stop = Some(StopReason::Failed);
                r.failure = Some(format!("token budget exceeded ({used} > {limit})"));
                budget = Some((used, limit));
            }
        }
    }
    if let Some(control) = &session.control {
        for reply in found.replies {
            control.stdin.reply(reply);
        }
        if budget.is_some() {
            // Stop the turn, let Claude Code end, and stop it for good if it does not.
            control.stdin.reply(interrupt_request());
            close_stdin = true;
            let after = Some(shared.options.grace_period.min(BUDGET_STOP));
            let _ = control.stop.send(StopRequest { graceful: true, after });
        }
        if close_stdin {
            control.stdin.close();
        }
    }
    for approval in found.approvals {
        tokio::spawn(answer_approval(Arc::clone(session), Arc::clone(shared), approval));
    }
    for report in found.reports {
        let session_id = Arc::clone(&session.id);
        shared.emit(match report {
            Report::Message(message) => SpawnerEvent::SessionMessage { session_id, message },
            Report::Retry { attempt, max_retries, retry_delay_ms, error } => SpawnerEvent::SessionRetry {
                session_id,
                attempt,
                max_retries,
                retry_delay_ms,
                error,
            },
            Report::RateLimited { until, reason } => {
                shared.notify(&Notice::RateLimited { session_id: Arc::clone(&session_id), until, reason: reason.clone() });
                SpawnerEvent::SessionRateLimited { session_id, until, reason }
            }
        });
    }
    for violation in found.violations {
        shared.emit(SpawnerEvent::PolicyViolation { session_id: Arc::clone(&session.id), violation });
    }
    if let Some((used, limit)) = budget {
        tracing::warn!(used, limit, "token budget exceeded");
        shared.emit(SpawnerEvent::BudgetExceeded { session_id: Arc::clone(&session.id), used, limit });
    }
}

/// How long an agent told to stop for its budget gets before it is stopped.
const BUDGET_STOP: Duration = Duration::from_secs(3);

/// Where a stream's output comes from: our end of the agent's stdout or stderr (a
/// socket from the Linux launcher, a pipe elsewhere), watched for reading only. With
/// interest in writing too, as a socket stream of the runtime has, registering it
/// would wake the runtime's driver at once, for each stream of every session: a socket
/// is writable from the start.
pub(crate) struct Source(AsyncFd<OwnedFd>);

impl Source {
    fn new(fd: OwnedFd) -> std::io::Result<Self> {
        crate::process::set_nonblocking(fd.as_raw_fd())?;
        // SAFETY: the AsyncFd owns `fd`, which stays open and unchanged while it lives.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(|e| e.into_parts().1)?;
        Ok(Self(fd))
    }

    /// Reads what is there into `buf`'s spare room, waiting until something is. Once
    /// the agent has exited (`exited`, also while this waits), a read is tried at
    /// once: what is left, or the end, is most likely there already, and the runtime
    /// would only report it after a round of its driver (tens of microseconds at every
    /// session's end). When something else still holds the stream, it waits as before.
    async fn read(&mut self, buf: &mut BytesMut, exited: &AtomicBool) -> io::Result<usize> {
        poll_fn(|cx| {
            if exited.load(Ordering::Relaxed) {
                if let Some(read) = read_now(self.fd(), buf) {
                    return Poll::Ready(read);
                }
            }
            self.poll_read(cx, buf)
        })
        .await
    }

    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        loop {
            let mut ready = ready!(self.0.poll_read_ready(cx))?;
            match read_now(self.fd(), buf) {
                Some(read) => return Poll::Ready(read),
                // The readiness was stale: cleared, so the next poll waits for a new one.
                None => ready.clear_ready(),
            }
        }
    }

    fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// One read from a non-blocking descriptor into `buf`'s spare room: `None` when there
/// is nothing to read yet.
fn read_now(fd: RawFd, buf: &mut BytesMut) -> Option<io::Result<usize>> {
    let spare = buf.spare_capacity_mut();
    // SAFETY: the kernel writes at most `spare.len()` bytes into memory `buf` owns.
    let n = unsafe { libc::read(fd, spare.as_mut_ptr().cast(), spare.len()) };
    if n < 0 {
        let error = io::Error::last_os_error();
        return (error.kind() != io::ErrorKind::WouldBlock).then_some(Err(error));
    }
    // SAFETY: the kernel initialised these `n` bytes.
    unsafe { buf.set_len(buf.len() + n as usize) };
    Some(Ok(n as usize))
}

/// Puts a tool call to the daemon and answers Claude Code. No handler, a handler that
/// fails, or no answer in time: denied, counted as an escalation.
async fn answer_approval(session: Arc<Session>, shared: Arc<Shared>, pending: PendingApproval) {
    let request = ApprovalRequest {
        session_id: session.id.to_string(),
        tool_name: pending.tool_name.clone(),
        input: pending.input.clone(),
        reason: pending.keyword.clone(),
    };
    let approved = match shared.options.approval_handler.clone() {
        None => false,
        Some(handler) => {
            // Its own task: a handler that panics only loses its answer.
            let answer = tokio::spawn(async move { handler.approve(request).await });
            let abort = answer.abort_handle();
            match tokio::time::timeout(shared.options.approval_timeout, answer).await {
                Ok(Ok(approved)) => approved,
                Ok(Err(_)) => false,
                Err(_) => {
                    abort.abort();
                    tracing::warn!(keyword = %pending.keyword, "approval timed out");
                    false
                }
            }
        }
    };
    if !approved {
        if let Some(id) = &pending.tool_use_id {
            // Before Claude Code hears the answer, so its tool result finds it.
            session.denied.lock().insert(id.clone());
        }
    }
    tracing::info!(keyword = %pending.keyword, approved, "approval");
    if let Some(control) = &session.control {
        let reply = approval_reply(&pending.question, &pending.input, approved, &pending.keyword);
        control.stdin.reply(reply);
    }
    if !approved {
        let violation = PolicyViolation {
            timestamp: SystemTime::now(),
            tool_name: pending.tool_name,
            input: pending.input,
            rule: Rule::RequiredApproval.as_str().to_owned(),
            detail: pending.keyword,
        };
        {
            let mut r = session.record.lock();
            r.escalations += 1;
            r.add_violation(violation.clone());
        }
        shared.emit(SpawnerEvent::PolicyViolation { session_id: Arc::clone(&session.id), violation });
    }
}
