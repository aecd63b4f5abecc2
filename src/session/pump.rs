//! The reader of one output stream. Each chunk goes, in this order, to the log file
//! on disk (through its writer, see `log`), to the session's bounded tail, to the event handler (as text), and to
//! the protocol observer. Both streams are read concurrently, so a flood on one
//! never stalls the other.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

use crate::event::{OutputChunk, SpawnerEvent, Stream};
use crate::notice::Notice;
use crate::output::Utf8Decoder;
use crate::approval::ApprovalRequest;
use crate::policy::Rule;
use crate::protocol::{approval_reply, interrupt_request, Findings, Observer, PendingApproval, Report};
use super::log::{LogSink, LogWritten};
use crate::session::{Session, StopReason, StopRequest};
use crate::spawner::Shared;
use crate::status::{PolicyViolation, SessionState};

/// A pipe holds 64 KiB on Linux; reading more at once gains nothing.
const READ_SIZE: usize = 64 * 1024;

/// A read at least this big hands its buffer to the event as is; a smaller one is
/// copied out, so a short line never pins a whole read buffer while it waits.
const HAND_OVER: usize = READ_SIZE / 2;

pub(crate) struct Pump {
    pub stream: Stream,
    pub pipe: pipe::Receiver,
    /// The log file, opened and written by its own writer, off this reader's thread.
    pub log: LogSink,
    /// Taken by the supervisor, which awaits the log before reporting the end.
    pub written: Option<LogWritten>,
    pub observer: Option<Observer>,
}

impl Pump {
    /// Inside the runtime (the log's writer starts on it).
    pub fn new(stream: Stream, fd: OwnedFd, log: PathBuf, observer: Option<Observer>) -> std::io::Result<Self> {
        let pipe = pipe::Receiver::from_owned_fd(fd)?;
        let (log, written) = super::log::open(log);
        Ok(Self { stream, pipe, log, written: Some(written), observer })
    }

    pub async fn run(mut self, session: &Arc<Session>, shared: &Arc<Shared>) {
        let mut buf = Vec::with_capacity(READ_SIZE);
        let mut decoder = Utf8Decoder::default();
        loop {
            buf.clear();
            let n = match self.pipe.read_buf(&mut buf).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(stream = self.stream.as_str(), error = %e, "read failed");
                    break;
                }
            };
            let bytes = &buf[..];
            self.log.write(bytes).await;
            let mut found = Findings::default();
            if let Some(observer) = self.observer.as_mut() {
                observer.on_stdout(bytes, &mut found);
            }
            session.record.lock().tail_mut(self.stream).push(bytes);
            if session.config.verbose {
                tracing::info!(stream = self.stream.as_str(), bytes = n, "output");
            }
            let text = if n >= HAND_OVER {
                decoder.decode_owned(std::mem::replace(&mut buf, Vec::with_capacity(READ_SIZE)))
            } else {
                decoder.decode(&buf)
            };
            self.deliver(text, session, shared).await;
            if !found.is_empty() {
                apply(found, session, shared);
            }
        }
        let mut found = Findings::default();
        if let Some(observer) = self.observer.as_mut() {
            observer.on_eof(&mut found);
        }
        self.deliver(decoder.finish(), session, shared).await;
        if !found.is_empty() {
            apply(found, session, shared);
        }
    }

    async fn deliver(&self, data: String, session: &Session, shared: &Shared) {
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
