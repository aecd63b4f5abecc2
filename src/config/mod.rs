//! What a session is asked to do: the session config with its VP charter, task and
//! memory, as the daemon hands it over. Rust callers build these structs directly;
//! JSON callers (the Node binding among them) go through [`SessionConfig::from_json`],
//! which checks every field and names the one that is wrong.

mod from_json;
mod pattern;
mod to_json;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::SystemTime;

pub use from_json::ConfigError;
pub(crate) use from_json::Fields;
pub use pattern::{ForbiddenPattern, PatternError};
pub use to_json::REDACTED;

/// Task priority, shared by sessions and pool requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Priority {
    Critical,
    High,
    #[default]
    Medium,
    Low,
}

impl Priority {
    pub const ALL: [Priority; 4] = [Self::Critical, Self::High, Self::Medium, Self::Low];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::High => "high",
            Self::Medium => "medium",
            Self::Low => "low",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL.into_iter().find(|p| p.as_str() == s).ok_or(())
    }
}

/// Who the agent acts as.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identity {
    pub name: String,
    pub email: String,
    pub role: String,
}

#[derive(Debug, Clone, Default)]
pub struct Constraints {
    pub forbidden_commands: Vec<String>,
    pub forbidden_patterns: Vec<ForbiddenPattern>,
    pub required_approvals: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    pub max_tokens: u64,
    /// Milliseconds.
    pub max_execution_time_ms: u64,
    /// Lower-case tool words as the daemon writes them: `read`, `write`, `bash`, ...
    pub allowed_tools: Vec<String>,
}

/// The VP charter: identity, objectives, constraints and budgets.
#[derive(Debug, Clone, Default)]
pub struct Charter {
    pub identity: Identity,
    pub objectives: Vec<String>,
    pub constraints: Constraints,
    pub resources: Resources,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskContext {
    pub task_id: String,
    pub description: String,
    pub priority: Priority,
    pub related_tasks: Vec<String>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RecentAction {
    pub timestamp: SystemTime,
    pub action: String,
    pub result: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConversationMessage {
    pub role: Role,
    pub content: String,
}

/// What the agent remembers from earlier work.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryContext {
    pub recent_actions: Vec<RecentAction>,
    pub conversation_history: Vec<ConversationMessage>,
    pub preferences: serde_json::Map<String, serde_json::Value>,
    pub project_context: serde_json::Map<String, serde_json::Value>,
}

/// Everything one session needs.
#[derive(Debug, Clone, Default)]
pub struct SessionConfig {
    pub working_directory: PathBuf,
    pub charter: Charter,
    pub task_context: TaskContext,
    pub memory: MemoryContext,
    /// Layered over the daemon's own environment.
    pub environment_variables: BTreeMap<String, String>,
    /// Milliseconds; `None` (or 0 from JSON) means no timeout.
    pub timeout_ms: Option<u64>,
    pub verbose: bool,
    /// A base CLAUDE.md whose text is appended to the generated one.
    pub claude_config_path: Option<PathBuf>,
    /// With Claude Code: after a turn's result, wait for more input (`waiting_input`)
    /// instead of ending the session; `end_session` ends it.
    pub keep_alive: bool,
    /// With Claude Code: continue this earlier conversation (`--resume <id>`, the
    /// `claude_session_id` of an earlier session) instead of starting a new one.
    pub resume_session_id: Option<String>,
    /// With Claude Code: its own spending cap (`--max-budget-usd`).
    pub max_budget_usd: Option<f64>,
    /// The first user message, instead of the task prompt rendered from
    /// `task_context` (a recovery uses it to tell a resumed conversation why it goes on).
    pub prompt: Option<String>,
}

impl SessionConfig {
    /// The session's timeout: the smaller of `timeout_ms` and the charter's
    /// `max_execution_time_ms` (0 or absent is no limit).
    pub fn effective_timeout_ms(&self) -> Option<u64> {
        let charter = Some(self.charter.resources.max_execution_time_ms).filter(|&ms| ms > 0);
        match (self.timeout_ms.filter(|&ms| ms > 0), charter) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
