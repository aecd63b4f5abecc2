//! One session: its config, its mutable record (state, output tails, metrics), the
//! channels to its supervisor and stdin writer, and its completion signal.

pub(crate) mod pump;
pub(crate) mod log;
pub(crate) mod stdin;
pub(crate) mod supervisor;

use std::collections::VecDeque;
use std::future::{Future, IntoFuture};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use crate::config::SessionConfig;
use crate::event::Stream;
use crate::output::TailBuffer;
use crate::protocol::Protocol;
use crate::status::{
    last_chars, CrashReport, PolicyViolation, SessionMetrics, SessionState, SessionStatus, TokenUsage, MAX_VIOLATIONS,
};

pub(crate) use stdin::{input_channel, InputReceiver, InputRefused, InputSender, INPUT_BACKLOG_LIMIT};

/// Why the spawner stopped a session; the first reason given wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    Timeout,
    Terminated,
    /// The spawner ended it `failed` (its reason is in the record's `failure`).
    Failed,
}

/// A request to the supervisor to signal the session's process group.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StopRequest {
    pub graceful: bool,
    /// Start stopping only after this long (a safety net for an agent asked to end).
    pub after: Option<std::time::Duration>,
}

/// What can change while a session lives. Locked briefly by readers and queries.
#[derive(Debug)]
pub(crate) struct Record {
    pub state: SessionState,
    pub pid: Option<u32>,
    pub start_time: SystemTime,
    pub started: Instant,
    pub end_time: Option<SystemTime>,
    pub execution_time_ms: Option<u64>,
    pub exit_code: Option<i32>,
    pub signal: Option<String>,
    pub error_message: Option<String>,
    pub stdout: TailBuffer,
    pub stderr: TailBuffer,
    pub token_usage: Option<TokenUsage>,
    pub metrics: SessionMetrics,
    pub claude_session_id: Option<String>,
    pub cost_usd: Option<f64>,
    pub modified_files: Vec<String>,
    /// Processes outside the group that the sweep killed.
    pub stopped_escapees: Vec<u32>,
    /// How the latest turn ended: `Some(reason)` when Claude Code reported an error.
    pub turn_error: Option<String>,
    pub violations: VecDeque<PolicyViolation>,
    /// Approvals refused (or not given): the charter's escalations.
    pub escalations: u64,
    /// Why the spawner ended the session `failed` (a budget), when it did.
    pub failure: Option<String>,
    pub stop: Option<StopReason>,
    /// The agent exited; its pid may already be reaped and must not be used.
    pub exited: bool,
    /// The last live state, for crash reports.
    pub last_live_state: SessionState,
    /// The memory cgroup's OOM-kill count at spawn, to tell the OOM killer's SIGKILL.
    pub oom: Option<crate::process::OomCounter>,
    /// Claude Code's `system`/`init` message came: its conversation is live.
    pub reached_init: bool,
}

impl Record {
    pub fn add_violation(&mut self, violation: PolicyViolation) {
        if self.violations.len() == MAX_VIOLATIONS {
            self.violations.pop_front();
        }
        self.violations.push_back(violation);
    }

    pub fn tail_mut(&mut self, stream: Stream) -> &mut TailBuffer {
        match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        }
    }
}

/// Channels into a running session.
pub(crate) struct Control {
    pub stop: mpsc::UnboundedSender<StopRequest>,
    pub stdin: InputSender,
}

pub(crate) struct Session {
    pub id: Arc<str>,
    /// Spawn order, for listings.
    pub seq: u64,
    pub config: Arc<SessionConfig>,
    pub dir: PathBuf,
    pub protocol: Protocol,
    pub record: Mutex<Record>,
    pub control: Option<Control>,
    /// Tool calls the charter denied, shared with the protocol observer.
    pub denied: crate::protocol::DeniedCalls,
    /// Who starts the session again when it ends in one of its states (a pool).
    pub restarter: Option<crate::notice::Restarter>,
    /// The session counted as work in flight, until it ends.
    pub busy: Mutex<Option<crate::notice::Busy>>,
    /// Its entry in the state directory (see `supervisor::record_entry`).
    pub entry: Mutex<Entry>,
    ended: watch::Sender<bool>,
}

/// Where a session's entry in the state directory is. The entry is written after the
/// session's start is reported, so a fast session can end before it is written: the
/// one who comes second (the writer, or the end) removes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    NotWritten,
    Written,
    Ended,
}

impl Session {
    pub fn new(
        id: Arc<str>,
        seq: u64,
        config: Arc<SessionConfig>,
        dir: PathBuf,
        protocol: Protocol,
        buffer_bytes: usize,
        control: Option<Control>,
    ) -> Self {
        Self {
            id,
            seq,
            config,
            dir,
            protocol,
            record: Mutex::new(Record {
                state: SessionState::Initializing,
                pid: None,
                start_time: SystemTime::now(),
                started: Instant::now(),
                end_time: None,
                execution_time_ms: None,
                exit_code: None,
                signal: None,
                error_message: None,
                stdout: TailBuffer::new(buffer_bytes),
                stderr: TailBuffer::new(buffer_bytes),
                token_usage: None,
                metrics: SessionMetrics::default(),
                claude_session_id: None,
                cost_usd: None,
                modified_files: Vec::new(),
                stopped_escapees: Vec::new(),
                turn_error: None,
                violations: VecDeque::new(),
                escalations: 0,
                failure: None,
                stop: None,
                exited: false,
                last_live_state: SessionState::Initializing,
                oom: None,
                reached_init: false,
            }),
            control,
            denied: Default::default(),
            restarter: None,
            busy: Mutex::new(None),
            entry: Mutex::new(Entry::NotWritten),
            ended: watch::channel(false).0,
        }
    }

    pub fn state(&self) -> SessionState {
        self.record.lock().state
    }

    pub fn status(&self) -> SessionStatus {
        snapshot(&self.id, &self.record.lock())
    }

    /// Marks the session ended with `state` and returns the final status; `None` when
    /// it had already ended (a session ends once).
    pub fn finish(&self, state: SessionState, error_message: Option<String>) -> Option<SessionStatus> {
        let mut r = self.record.lock();
        if r.state.is_ended() {
            return None;
        }
        r.last_live_state = r.state;
        r.state = state;
        r.exited = true;
        if r.error_message.is_none() {
            r.error_message = error_message;
        }
        let now = SystemTime::now();
        r.end_time = Some(now);
        r.execution_time_ms = Some(r.started.elapsed().as_millis() as u64);
        Some(snapshot(&self.id, &r))
    }

    pub fn notify_ended(&self) {
        self.ended.send_replace(true);
    }

    pub fn completion(self: &Arc<Self>) -> Completion {
        Completion(Waiting::Local { ended: self.ended.subscribe(), session: Arc::clone(self) })
    }

    pub fn crash_report(&self) -> Option<CrashReport> {
        if self.record.lock().state != SessionState::Crashed {
            return None;
        }
        self.report()
    }

    /// The crash report of an ended session, whatever its state.
    pub fn report(&self) -> Option<CrashReport> {
        let r = self.record.lock();
        if !r.state.is_ended() {
            return None;
        }
        let stderr = r.stderr.to_text();
        Some(CrashReport {
            session_id: self.id.to_string(),
            timestamp: r.end_time.unwrap_or(r.start_time),
            signal: r.signal.clone(),
            exit_code: r.exit_code,
            last_state: r.last_live_state.as_str().to_owned(),
            last_output: last_chars(&r.stdout.to_text(), 1000),
            stack_trace: (!stderr.is_empty()).then(|| last_chars(&stderr, 4000)),
        })
    }
}

/// A status snapshot from a record the caller has locked.
pub(crate) fn snapshot_of(session: &Session, r: &Record) -> SessionStatus {
    snapshot(&session.id, r)
}

fn snapshot(id: &str, r: &Record) -> SessionStatus {
    SessionStatus {
        session_id: id.to_owned(),
        state: r.state,
        pid: r.pid,
        start_time: r.start_time,
        end_time: r.end_time,
        execution_time_ms: r.execution_time_ms,
        exit_code: r.exit_code,
        signal: r.signal.clone(),
        error_message: r.error_message.clone(),
        stdout: r.stdout.to_text(),
        stderr: r.stderr.to_text(),
        token_usage: r.token_usage,
        metrics: SessionMetrics {
            escalations: r.escalations,
            ..r.metrics
        },
        claude_session_id: r.claude_session_id.clone(),
        cost_usd: r.cost_usd,
        modified_files: r.modified_files.clone(),
        stopped_escapees: r.stopped_escapees.clone(),
        violations: r.violations.iter().cloned().collect(),
        host: None,
        stdout_truncated: false,
        stderr_truncated: false,
    }
}

/// Resolves with the final status once the session has ended and its
/// `SessionEnded` event has been handed to the event handler. For a shared-queue
/// request's session on another host: once the request's end has arrived here.
pub struct Completion(Waiting);

enum Waiting {
    Local { ended: watch::Receiver<bool>, session: Arc<Session> },
    /// Another host's session; `last` is what is known if its end never arrives.
    Remote { end: tokio::sync::oneshot::Receiver<SessionStatus>, last: Box<SessionStatus> },
}

impl Completion {
    pub(crate) fn remote(end: tokio::sync::oneshot::Receiver<SessionStatus>, last: SessionStatus) -> Self {
        Self(Waiting::Remote { end, last: Box::new(last) })
    }

    pub async fn wait(self) -> SessionStatus {
        match self.0 {
            Waiting::Local { mut ended, session } => {
                // The sender lives in the session we hold, so this cannot fail.
                let _ = ended.wait_for(|ended| *ended).await;
                session.status()
            }
            Waiting::Remote { end, last } => end.await.unwrap_or(*last),
        }
    }
}

impl IntoFuture for Completion {
    type Output = SessionStatus;
    type IntoFuture = Pin<Box<dyn Future<Output = SessionStatus> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.wait())
    }
}

impl std::fmt::Debug for Completion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Waiting::Local { session, .. } => f.debug_struct("Completion").field("session_id", &session.id).finish(),
            Waiting::Remote { last, .. } => f.debug_struct("Completion").field("session_id", &last.session_id).finish(),
        }
    }
}
