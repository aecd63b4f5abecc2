//! How a spawner runs its agents: which executable, which protocol, how long it
//! waits before killing, how much output and history it keeps in memory.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::approval::ApprovalHandler;
use crate::config::{ConfigError, Fields};
use crate::protocol::Protocol;

/// Which of the daemon's environment variables an agent inherits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InheritEnv {
    /// All of them (the TypeScript module's behaviour).
    All,
    /// Only these, plus `PATH`, `HOME` and `ANTHROPIC_*` (what Claude Code needs). The
    /// config's `environmentVariables` are set either way. `Only(vec![])` is the
    /// recommended setting: the daemon's secrets stay out of the session.
    Only(Vec<String>),
}

impl InheritEnv {
    /// Whether an inherited variable named `name` reaches the agent.
    pub fn passes(&self, name: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(names) => {
                matches!(name, "PATH" | "HOME") || name.starts_with("ANTHROPIC_") || names.iter().any(|n| n == name)
            }
        }
    }
}

/// Spawner-wide settings. Every field has a default; see [`SpawnerOptions::default`].
#[derive(Clone)]
pub struct SpawnerOptions {
    /// The agent executable. `None`: `$CLAUDE_PATH`, else `claude` on `PATH`.
    pub claude_path: Option<PathBuf>,
    pub protocol: Protocol,
    /// Appended to the agent's argument vector, after what the protocol passes.
    pub extra_args: Vec<String>,
    /// Between SIGTERM to a session's process group and SIGKILL.
    pub grace_period: Duration,
    /// How many ended sessions stay queryable.
    pub history_size: usize,
    /// How much of each stream (the newest part) a session's status keeps in memory.
    /// The complete stream is always in the session directory.
    pub output_buffer_bytes: usize,
    /// Bytes of output that may be on their way to the event handler at once, over all
    /// sessions. When the handler falls behind, the readers wait, and so do the agents.
    pub output_credit_bytes: usize,
    /// Decides tool calls that hit a `requiredApprovals` keyword; `None`: denied.
    pub approval_handler: Option<Arc<dyn ApprovalHandler>>,
    /// How long an approval may take before it counts as a no.
    pub approval_timeout: Duration,
    pub inherit_env: InheritEnv,
    /// Where the spawner records its live sessions (see [`crate::registry`]), so a
    /// later daemon can stop the agents of one that died. `None`: not recorded.
    pub state_dir: Option<PathBuf>,
}

impl fmt::Debug for SpawnerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpawnerOptions")
            .field("claude_path", &self.claude_path)
            .field("protocol", &self.protocol)
            .field("extra_args", &self.extra_args)
            .field("grace_period", &self.grace_period)
            .field("history_size", &self.history_size)
            .field("output_buffer_bytes", &self.output_buffer_bytes)
            .field("output_credit_bytes", &self.output_credit_bytes)
            .field("approval_handler", &self.approval_handler.as_ref().map(|_| "…"))
            .field("approval_timeout", &self.approval_timeout)
            .field("inherit_env", &self.inherit_env)
            .field("state_dir", &self.state_dir)
            .finish()
    }
}

impl Default for SpawnerOptions {
    fn default() -> Self {
        Self {
            claude_path: None,
            protocol: Protocol::StreamJson,
            extra_args: Vec::new(),
            grace_period: Duration::from_millis(5000),
            history_size: 100,
            output_buffer_bytes: 1 << 20,
            output_credit_bytes: 8 << 20,
            approval_handler: None,
            approval_timeout: Duration::from_secs(300),
            inherit_env: InheritEnv::All,
            state_dir: crate::registry::default_state_dir(),
        }
    }
}

impl SpawnerOptions {
    pub fn claude_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.claude_path = Some(path.into());
        self
    }

    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    pub fn extra_args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.extra_args = args.into_iter().map(Into::into).collect();
        self
    }

    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace_period = grace;
        self
    }

    pub fn history_size(mut self, size: usize) -> Self {
        self.history_size = size;
        self
    }

    pub fn output_buffer_bytes(mut self, bytes: usize) -> Self {
        self.output_buffer_bytes = bytes;
        self
    }

    pub fn approval_handler(mut self, handler: impl ApprovalHandler) -> Self {
        self.approval_handler = Some(Arc::new(handler));
        self
    }

    pub fn approval_timeout(mut self, timeout: Duration) -> Self {
        self.approval_timeout = timeout;
        self
    }

    pub fn inherit_env(mut self, inherit: InheritEnv) -> Self {
        self.inherit_env = inherit;
        self
    }

    /// The executable this spawner will start. A relative path with a directory part
    /// (`./bin/agent`) is taken from the current directory now, not from each
    /// session's working directory; a bare name (`claude`) is looked up on `PATH`.
    pub fn resolved_claude_path(&self) -> PathBuf {
        let path = self
            .claude_path
            .clone()
            .or_else(|| std::env::var_os("CLAUDE_PATH").filter(|p| !p.is_empty()).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("claude"));
        if path.is_relative() && path.components().count() > 1 {
            if let Ok(cwd) = std::env::current_dir() {
                let tidy = path.components().filter(|c| !matches!(c, std::path::Component::CurDir));
                return cwd.join(tidy.collect::<PathBuf>());
            }
        }
        path
    }

    /// Reads options in the JavaScript shape (`claudePath`, `gracePeriodMs`, ...).
    /// Unknown keys are refused: a misspelt option silently ignored is a surprise.
    pub fn from_json(value: &Value) -> Result<Self, ConfigError> {
        let o = Fields::of(value, "options")?;
        // `approvalHandler` is a function: the JavaScript side keeps it and sends
        // `true` here when there is one.
        const KNOWN: [&str; 11] = [
            "claudePath",
            "protocol",
            "extraArgs",
            "gracePeriodMs",
            "historySize",
            "outputBufferBytes",
            "outputCreditBytes",
            "approvalHandler",
            "approvalTimeoutMs",
            "inheritEnv",
            "stateDir",
        ];
        if let Some(unknown) = o.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(ConfigError::new(
                o.path_of(unknown),
                format!("is not an option (known: {})", KNOWN.join(", ")),
            ));
        }
        let mut options = Self::default();
        if let Some(path) = o.opt_string("claudePath")? {
            if path.is_empty() {
                return Err(ConfigError::new("options.claudePath", "must not be empty"));
            }
            options.claude_path = Some(path.into());
        }
        if let Some(protocol) = o.opt_string("protocol")? {
            options.protocol = protocol.parse().map_err(|_| {
                ConfigError::new("options.protocol", "must be 'stream-json' or 'text'")
            })?;
        }
        if let Some(args) = o.opt_strings("extraArgs")? {
            options.extra_args = args;
        }
        if let Some(ms) = o.opt_count("gracePeriodMs")? {
            options.grace_period = Duration::from_millis(ms);
        }
        if let Some(n) = o.opt_count("historySize")? {
            options.history_size = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(n) = o.opt_count("outputBufferBytes")? {
            options.output_buffer_bytes = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(n) = o.opt_count("outputCreditBytes")? {
            if n == 0 {
                return Err(ConfigError::new("options.outputCreditBytes", "must be positive"));
            }
            options.output_credit_bytes = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(ms) = o.opt_count("approvalTimeoutMs")? {
            options.approval_timeout = Duration::from_millis(ms);
        }
        options.inherit_env = match o.get("inheritEnv") {
            None | Some(Value::Bool(true)) => InheritEnv::All,
            Some(Value::Bool(false)) => InheritEnv::Only(Vec::new()),
            Some(Value::Array(_)) => InheritEnv::Only(o.strings("inheritEnv")?),
            Some(_) => {
                return Err(ConfigError::new(
                    "options.inheritEnv",
                    "must be true, false or an array of variable names",
                ))
            }
        };
        options.state_dir = match o.get("stateDir") {
            None => options.state_dir,
            Some(Value::Bool(false)) => None,
            Some(Value::String(dir)) if !dir.is_empty() => Some(PathBuf::from(dir)),
            Some(_) => {
                return Err(ConfigError::new("options.stateDir", "must be a directory path or false"))
            }
        };
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults() {
        let o = SpawnerOptions::from_json(&json!({})).unwrap();
        assert_eq!(o.protocol, Protocol::StreamJson);
        assert_eq!(o.grace_period, Duration::from_secs(5));
        assert_eq!(o.history_size, 100);
        assert_eq!(o.output_buffer_bytes, 1 << 20);
    }

    #[test]
    fn relative_agent_paths_are_fixed_at_construction() {
        let cwd = std::env::current_dir().unwrap();
        let o = SpawnerOptions::default().claude_path("./bin/agent");
        assert_eq!(o.resolved_claude_path(), cwd.join("bin/agent"));
        let o = SpawnerOptions::default().claude_path("claude");
        assert_eq!(o.resolved_claude_path(), PathBuf::from("claude"));
        let o = SpawnerOptions::default().claude_path("/usr/bin/claude");
        assert_eq!(o.resolved_claude_path(), PathBuf::from("/usr/bin/claude"));
    }

    #[test]
    fn reads_and_refuses() {
        let o = SpawnerOptions::from_json(&json!({"protocol": "text", "gracePeriodMs": 10, "extraArgs": ["-x"]}))
            .unwrap();
        assert_eq!(o.protocol, Protocol::Text);
        assert_eq!(o.grace_period, Duration::from_millis(10));
        assert_eq!(o.extra_args, ["-x"]);
        let e = SpawnerOptions::from_json(&json!({"protocol": "xml"})).unwrap_err();
        assert_eq!(e.field, "options.protocol");
        let e = SpawnerOptions::from_json(&json!({"gracePeriod": 5})).unwrap_err();
        assert_eq!(e.field, "options.gracePeriod");
        let e = SpawnerOptions::from_json(&json!({"extraArgs": "-x"})).unwrap_err();
        assert_eq!(e.message, "options.extraArgs must be an array of strings");
        let e = SpawnerOptions::from_json(&json!({"inheritEnv": "no"})).unwrap_err();
        assert_eq!(e.field, "options.inheritEnv");
    }

    #[test]
    fn inherit_env_keeps_what_claude_code_needs() {
        let o = SpawnerOptions::from_json(&json!({"inheritEnv": ["TEAM"], "approvalTimeoutMs": 50})).unwrap();
        assert_eq!(o.approval_timeout, Duration::from_millis(50));
        for kept in ["PATH", "HOME", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "TEAM"] {
            assert!(o.inherit_env.passes(kept), "{kept}");
        }
        for dropped in ["AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "TEAMS"] {
            assert!(!o.inherit_env.passes(dropped), "{dropped}");
        }
        let all = SpawnerOptions::from_json(&json!({"inheritEnv": true})).unwrap();
        assert!(all.inherit_env.passes("GITHUB_TOKEN"));
        let none = SpawnerOptions::from_json(&json!({"inheritEnv": false})).unwrap();
        assert_eq!(none.inherit_env, InheritEnv::Only(vec![]));
    }
}
