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
    /// With a shared queue: the host that ran the session (extra).
    pub host: Option<String>,
    /// The tails were cut shorter to travel between hosts (extra; the whole output is
    /// in the session directory on the host that ran it).
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// Processes that left the session's process group and were killed by the sweep
    /// (see README, "Process model") (extra). Those found after the end appear in later
    /// statuses, not in the one `SessionEnded` carried.
    pub stopped_escapees: Vec<u32>,
}

fn iso(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn time_of(v: &serde_json::Value) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(v.as_str()?).ok()
}

impl SessionStatus {
    /// The contract's JSON shape (times as ISO text; `undefined` fields left out), as a
    /// status travels to the host that made a shared-queue request.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::{json, Value};
        let mut v = json!({
            "sessionId": self.session_id,
            "state": self.state.as_str(),
            "startTime": iso(self.start_time),
            "stdout": self.stdout,
            "stderr": self.stderr,
            "metrics": {
                "commandsExecuted": self.metrics.commands_executed,
                "filesModified": self.metrics.files_modified,
                "approvalPrompts": self.metrics.approval_prompts,
                "escalations": self.metrics.escalations,
                "errors": self.metrics.errors,
            },
            "modifiedFiles": self.modified_files,
            "violations": self.violations.iter().map(|x| json!({
                "timestamp": iso(x.timestamp), "toolName": x.tool_name, "input": x.input, "rule": x.rule, "detail": x.detail,
            })).collect::<Vec<_>>(),
        });
        let mut set = |key: &str, value: Value| {
            if !value.is_null() {
                v[key] = value;
            }
        };
        set("pid", json!(self.pid));
        set("endTime", json!(self.end_time.map(iso)));
        set("executionTime", json!(self.execution_time_ms));
        set("exitCode", json!(self.exit_code));
        set("signal", json!(self.signal));
        set("errorMessage", json!(self.error_message));
        set("tokenUsage", json!(self.token_usage.map(|t| json!({"input": t.input, "output": t.output, "total": t.total}))));
        set("claudeSessionId", json!(self.claude_session_id));
        set("costUsd", json!(self.cost_usd));
        set("host", json!(self.host));
        set("stdoutTruncated", json!(self.stdout_truncated.then_some(true)));
        set("stderrTruncated", json!(self.stderr_truncated.then_some(true)));
        set("stoppedEscapees", json!((!self.stopped_escapees.is_empty()).then_some(&self.stopped_escapees)));
        v
    }

    /// Reads [`SessionStatus::to_json`]'s shape; `None` without a session id, a known
    /// state and a start time.
    pub fn from_json(v: &serde_json::Value) -> Option<Self> {
        let text = |k: &str| v[k].as_str().map(str::to_owned);
        let count = |x: &serde_json::Value, k: &str| x[k].as_u64().unwrap_or(0);
        let m = &v["metrics"];
        Some(Self {
            session_id: text("sessionId")?,
            state: v["state"].as_str()?.parse().ok()?,
            pid: v["pid"].as_u64().and_then(|p| u32::try_from(p).ok()),
            start_time: time_of(&v["startTime"])?,
            end_time: time_of(&v["endTime"]),
            execution_time_ms: v["executionTime"].as_u64(),
            exit_code: v["exitCode"].as_i64().and_then(|c| i32::try_from(c).ok()),
            signal: text("signal"),
            error_message: text("errorMessage"),
            stdout: text("stdout").unwrap_or_default(),
            stderr: text("stderr").unwrap_or_default(),
            token_usage: v["tokenUsage"].is_object().then(|| {
                let t = &v["tokenUsage"];
                TokenUsage { input: count(t, "input"), output: count(t, "output"), total: count(t, "total") }
            }),
            metrics: SessionMetrics {
                commands_executed: count(m, "commandsExecuted"),
                files_modified: count(m, "filesModified"),
                approval_prompts: count(m, "approvalPrompts"),
                escalations: count(m, "escalations"),
                errors: count(m, "errors"),
            },
            claude_session_id: text("claudeSessionId"),
            cost_usd: v["costUsd"].as_f64(),
            modified_files: v["modifiedFiles"]
                .as_array()
                .map(|a| a.iter().filter_map(|f| f.as_str().map(str::to_owned)).collect())
                .unwrap_or_default(),
            violations: v["violations"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| {
                            Some(PolicyViolation {
                                timestamp: time_of(&x["timestamp"])?,
                                tool_name: x["toolName"].as_str()?.to_owned(),
                                input: x["input"].clone(),
                                rule: x["rule"].as_str().unwrap_or_default().to_owned(),
                                detail: x["detail"].as_str().unwrap_or_default().to_owned(),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default(),
            host: text("host"),
            stdout_truncated: v["stdoutTruncated"] == serde_json::Value::Bool(true),
            stderr_truncated: v["stderrTruncated"] == serde_json::Value::Bool(true),
            stopped_escapees: v["stoppedEscapees"]
                .as_array()
                .map(|a| a.iter().filter_map(|p| p.as_u64().and_then(|p| u32::try_from(p).ok())).collect())
                .unwrap_or_default(),
        })
    }

    /// The status as it travels between hosts: the newest `chars` characters of each
    /// stream (flagged when cut), and the host that ran it.
    pub fn portable(&self, host: &str, chars: usize) -> Self {
        let mut s = self.clone();
        for (text, cut) in [(&mut s.stdout, &mut s.stdout_truncated), (&mut s.stderr, &mut s.stderr_truncated)] {
            if text.chars().count() > chars {
                *text = last_chars(text, chars);
                *cut = true;
            }
        }
        s.host = Some(host.to_owned());
        s
    }
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
            "timestamp": iso(self.timestamp),
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
    fn a_status_round_trips_through_json_and_travels_cut() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        let status = SessionStatus {
            session_id: "claude-session-x".into(),
            state: SessionState::Crashed,
            pid: Some(42),
            start_time: at,
            end_time: Some(at),
            execution_time_ms: Some(5),
            exit_code: None,
            signal: Some("SIGSEGV".into()),
            error_message: Some("agent was killed".into()),
            stdout: "héllo".repeat(10),
            stderr: String::new(),
            token_usage: Some(TokenUsage { input: 1, output: 2, total: 3 }),
            metrics: SessionMetrics { errors: 4, ..SessionMetrics::default() },
            claude_session_id: Some("c".into()),
            cost_usd: Some(0.5),
            modified_files: vec!["a.txt".into()],
            violations: vec![PolicyViolation {
                timestamp: at,
                tool_name: "Bash".into(),
                input: serde_json::json!({"command": "rm -rf /"}),
                rule: "forbidden-command".into(),
                detail: "rm -rf".into(),
            }],
            host: None,
            stdout_truncated: false,
            stderr_truncated: false,
            stopped_escapees: vec![77],
        };
        assert_eq!(SessionStatus::from_json(&status.to_json()), Some(status.clone()));
        let cut = status.portable("h1", 7);
        assert_eq!((cut.stdout.as_str(), cut.stdout_truncated, cut.host.as_deref()), ("lohéllo", true, Some("h1")));
        let json = cut.to_json();
        assert_eq!((json["stdoutTruncated"].as_bool(), json.get("stderrTruncated")), (Some(true), None));
        assert_eq!(SessionStatus::from_json(&json), Some(cut));
    }

    #[test]
    fn last_chars_counts_characters_not_bytes() {
        assert_eq!(last_chars("héllo wörld", 5), "wörld");
        assert_eq!(last_chars("ab", 5), "ab");
        assert_eq!(last_chars("ab", 0), "");
    }
}
