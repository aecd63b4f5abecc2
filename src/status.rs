//! What the daemon reads about sessions: state, status snapshots, metrics, crash
//! reports and the spawner-wide summary.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

/// A session's lifecycle state. The last five are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionState {
    Initializing,
    Running,
    WaitingInput,
    Completed,
    Failed,
    Timeout,
    Crashed,
    Terminated,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initializing => "initializing",
            Self::Running => "running",
            Self::WaitingInput => "waiting_input",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Timeout => "timeout",
            Self::Crashed => "crashed",
            Self::Terminated => "terminated",
        }
    }

    pub fn is_ended(self) -> bool {
        !matches!(self, Self::Initializing | Self::Running | Self::WaitingInput)
    }
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SessionState {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        [
            Self::Initializing,
            Self::Running,
            Self::WaitingInput,
            Self::Completed,
            Self::Failed,
            Self::Timeout,
            Self::Crashed,
            Self::Terminated,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
        .ok_or(())
    }
}

/// Counters of what the agent did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionMetrics {
    pub commands_executed: u64,
    pub files_modified: u64,
    pub approval_prompts: u64,
    pub escalations: u64,
    pub errors: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    pub input: u64,
    pub output: u64,
    pub total: u64,
}

/// A snapshot of one session.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionStatus {
    pub session_id: String,
    pub state: SessionState,
    pub pid: Option<u32>,
    pub start_time: SystemTime,
    pub end_time: Option<SystemTime>,
    /// Milliseconds from spawn to end.
    pub execution_time_ms: Option<u64>,
    pub exit_code: Option<i32>,
    /// The signal that ended the agent, e.g. `SIGSEGV` (extra to the contract).
    pub signal: Option<String>,
    pub error_message: Option<String>,
    /// The newest part of stdout, at most `output_buffer_bytes`; the whole is on disk.
    pub stdout: String,
    pub stderr: String,
    pub token_usage: Option<TokenUsage>,
    pub metrics: SessionMetrics,
    /// The Claude Code conversation id (`--session-id`), for `--resume` (extra).
    pub claude_session_id: Option<String>,
    /// Claude Code's latest `total_cost_usd` (extra).
    pub cost_usd: Option<f64>,
    /// Distinct files that Write, Edit, MultiEdit and NotebookEdit calls changed (extra).
    pub modified_files: Vec<String>,
    /// The charter's denials, newest last (at most [`MAX_VIOLATIONS`]) (extra).
    pub violations: Vec<PolicyViolation>,
}

/// How many violations a status keeps.
pub const MAX_VIOLATIONS: usize = 100;

/// A tool call the charter (or Claude Code itself) refused.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyViolation {
    pub timestamp: SystemTime,
    pub tool_name: String,
    pub input: serde_json::Value,
    /// `allowed-tools`, `forbidden-command`, `forbidden-pattern`, `required-approval`
    /// or `claude-code`.
    pub rule: String,
    /// Which entry: the tool, the command entry, the pattern, the keyword.
    pub detail: String,
}

/// One crashed session, for the daemon's crash handling.
#[derive(Debug, Clone, PartialEq)]
pub struct CrashReport {
    pub session_id: String,
    pub timestamp: SystemTime,
    pub signal: Option<String>,
    pub exit_code: Option<i32>,
    /// The state the session was in when its agent died.
    pub last_state: String,
    /// The last 1,000 characters of stdout.
    pub last_output: String,
    /// The last part of stderr, when there is any.
    pub stack_trace: Option<String>,
}

impl CrashReport {
    /// The contract's JSON shape (the timestamp as ISO text).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "sessionId": self.session_id,
            "timestamp": humantime::format_rfc3339_millis(self.timestamp).to_string(),
            "signal": self.signal,
            "exitCode": self.exit_code,
            "lastState": self.last_state,
            "lastOutput": self.last_output,
            "stackTrace": self.stack_trace,
        })
    }

    /// Reads a report in the contract's JSON shape, as a daemon may hand one over:
    /// missing fields are empty, `timestamp` is ISO text or epoch milliseconds (now
    /// when neither), and `session_id` fills in a missing `sessionId`.
    pub fn from_json(session_id: &str, v: &serde_json::Value) -> Self {
        let text = |k: &str| v[k].as_str().map(str::to_owned);
        let timestamp = match &v["timestamp"] {
            serde_json::Value::String(t) => humantime::parse_rfc3339_weak(t).ok(),
            serde_json::Value::Number(ms) => ms
                .as_f64()
                .filter(|ms| ms.is_finite() && *ms >= 0.0)
                .map(|ms| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64)),
            _ => None,
        };
        Self {
            session_id: text("sessionId").unwrap_or_else(|| session_id.to_owned()),
            timestamp: timestamp.unwrap_or_else(SystemTime::now),
            signal: text("signal"),
            exit_code: v["exitCode"].as_i64().and_then(|c| i32::try_from(c).ok()),
            last_state: text("lastState").unwrap_or_default(),
            last_output: text("lastOutput").unwrap_or_default(),
            stack_trace: text("stackTrace"),
        }
    }
}

/// Over every session the spawner knows (active set and history), each counted once.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MetricsSummary {
    pub total_sessions: u64,
    /// Sessions whose agent is still live (initializing, running, waiting for input).
    pub active_sessions: u64,
    pub completed_sessions: u64,
    pub failed_sessions: u64,
    pub crashed_sessions: u64,
    /// Mean execution time of ended sessions, milliseconds (0 when none ended).
    pub avg_execution_time_ms: f64,
    pub total_tokens_used: u64,
}

/// The last `n` characters of `text`.
pub(crate) fn last_chars(text: &str, n: usize) -> String {
    let start = text
        .char_indices()
        .rev()
        .nth(n.saturating_sub(1))
        .map_or(0, |(i, _)| i);
    if n == 0 {
        String::new()
    } else {
        text[start..].to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_know_when_they_are_final() {
        for s in ["initializing", "running", "waiting_input", "completed", "failed", "timeout", "crashed", "terminated"] {
            let st: SessionState = s.parse().unwrap();
            assert_eq!(st.as_str(), s);
            assert_eq!(st.is_ended(), !["initializing", "running", "waiting_input"].contains(&s));
        }
        assert!("done".parse::<SessionState>().is_err());
    }

    #[test]
    fn last_chars_counts_characters_not_bytes() {
        assert_eq!(last_chars("héllo wörld", 5), "wörld");
        assert_eq!(last_chars("ab", 5), "ab");
        assert_eq!(last_chars("ab", 0), "");
    }
}
