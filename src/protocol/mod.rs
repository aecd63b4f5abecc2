//! How the spawner talks to an agent: the argument vector, what goes on stdin, and
//! what is learnt from stdout. `stream-json` drives Claude Code headless; `text` is
//! for any other agent command line (prompt on stdin, raw output, metrics guessed
//! from the text as the TypeScript module did).

mod stream_json;
mod text;

use std::ffi::OsString;
use std::fmt;
use std::str::FromStr;

use crate::config::SessionConfig;
use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::status::{PolicyViolation, SessionMetrics, TokenUsage};

pub use stream_json::claude_tool_name;
pub(crate) use stream_json::{approval_reply, interrupt_request};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// Claude Code's headless mode: JSON lines both ways.
    #[default]
    StreamJson,
    /// Plain text: prompt on stdin, output as it comes.
    Text,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StreamJson => "stream-json",
            Self::Text => "text",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "stream-json" => Ok(Self::StreamJson),
            "text" => Ok(Self::Text),
            _ => Err(()),
        }
    }
}

/// What the protocol needs to start one session.
pub(crate) struct LaunchInput<'a> {
    pub config: &'a SessionConfig,
    pub claude_md: &'a str,
    pub prompt: &'a str,
    /// The Claude Code conversation id (`--session-id`).
    pub conversation_id: &'a str,
}

/// The argument vector (without the program, before `extraArgs`) and the first bytes
/// for stdin.
pub(crate) struct Launch {
    pub args: Vec<OsString>,
    pub first_input: Vec<u8>,
}

impl Protocol {
    pub(crate) fn launch(self, input: &LaunchInput<'_>) -> Launch {
        match self {
            Self::StreamJson => stream_json::launch(input),
            Self::Text => text::launch(input),
        }
    }

    /// How `sendInput` text is written to the agent.
    pub(crate) fn encode_input(self, text: &str) -> Vec<u8> {
        match self {
            Self::StreamJson => stream_json::user_message(text),
            Self::Text => text.as_bytes().to_vec(),
        }
    }

    pub(crate) fn observer(self, config: &SessionConfig, denied: DeniedCalls) -> Observer {
        match self {
            Self::StreamJson => Observer::StreamJson(Box::new(stream_json::Observer::new(config, denied))),
            Self::Text => Observer::Text(text::Observer::new()),
        }
    }
}

/// Reads what the agent prints on stdout and learns from it.
pub(crate) enum Observer {
    StreamJson(Box<stream_json::Observer>),
    Text(text::Observer),
}

/// Tool calls the spawner denied (by `tool_use_id`): they never ran, and Claude Code's
/// `permission_denials` that list them are not Claude Code's own decisions.
pub(crate) type DeniedCalls = Arc<Mutex<HashSet<String>>>;

/// Where the answer to a permission question goes.
#[derive(Debug, Clone)]
pub(crate) enum Question {
    /// A `can_use_tool` request.
    CanUseTool { request_id: serde_json::Value },
    /// A PreToolUse hook callback.
    Hook { request_id: serde_json::Value },
}

/// A tool call that needs the daemon's approval; answered by the reader's task.
#[derive(Debug, Clone)]
pub(crate) struct PendingApproval {
    pub question: Question,
    pub tool_name: String,
    pub input: serde_json::Value,
    pub tool_use_id: Option<String>,
    /// The `requiredApprovals` keyword.
    pub keyword: String,
}

/// Something an observer reports, emitted after the output chunk it came in.
#[derive(Debug)]
pub(crate) enum Report {
    /// A parsed stream-json message.
    Message(serde_json::Value),
    /// Claude Code could not reach the API and retries.
    Retry {
        attempt: u64,
        max_retries: u64,
        retry_delay_ms: u64,
        error: String,
    },
    /// The API refuses for now (HTTP 429 or 529, or a rejecting rate-limit event).
    RateLimited { until: std::time::SystemTime, reason: String },
}

/// What an observer learnt from a chunk; the reader applies it to the session.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    /// The protocol's metric totals, when they changed.
    pub metrics: Option<SessionMetrics>,
    /// Token totals, when they changed.
    pub usage: Option<TokenUsage>,
    pub cost_usd: Option<f64>,
    /// Files modified for the first time.
    pub modified_files: Vec<String>,
    /// A turn ended (a `result`); `Some(reason)` when it ended in error.
    pub turn_ended: Option<Option<String>>,
    /// Claude Code's `system`/`init` message: the conversation is live.
    pub reached_init: bool,
    /// Lines for the agent's stdin (control protocol answers), in order.
    pub replies: Vec<Vec<u8>>,
    pub reports: Vec<Report>,
    /// Tool calls refused by the charter or by Claude Code.
    pub violations: Vec<PolicyViolation>,
    pub approvals: Vec<PendingApproval>,
    /// The token budget was passed: (used, limit).
    pub budget_exceeded: Option<(u64, u64)>,
}

impl Findings {
    pub fn is_empty(&self) -> bool {
        self.metrics.is_none()
            && self.usage.is_none()
            && self.cost_usd.is_none()
            && self.modified_files.is_empty()
            && self.turn_ended.is_none()
            && !self.reached_init
            && self.replies.is_empty()
            && self.reports.is_empty()
            && self.violations.is_empty()
            && self.approvals.is_empty()
            && self.budget_exceeded.is_none()
    }
}

impl Observer {
    pub(crate) fn on_stdout(&mut self, chunk: &[u8], found: &mut Findings) {
        match self {
            Self::StreamJson(o) => o.on_stdout(chunk, found),
            Self::Text(o) => o.on_stdout(chunk, found),
        }
    }

    pub(crate) fn on_eof(&mut self, found: &mut Findings) {
        match self {
            Self::StreamJson(o) => o.on_eof(found),
            Self::Text(o) => o.on_eof(found),
        }
    }
}
