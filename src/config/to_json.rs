//! A session config back in the contract's JSON shape, for crash dumps and for
//! callers that keep configs as JSON. Environment values can be redacted: a dump must
//! not carry the daemon's secrets to whoever reads it.

use serde_json::{json, Map, Value};

use super::SessionConfig;

/// What an environment value is replaced with in a redacted config.
pub const REDACTED: &str = "[redacted]";

impl SessionConfig {
    /// The config as [`SessionConfig::from_json`] reads it (patterns as `{source,
    /// flags}`, dates as RFC 3339). With `redact_env`, every environment value is
    /// [`REDACTED`] (the names stay, they tell what was set).
    pub fn to_json(&self, redact_env: bool) -> Value {
        let c = &self.charter;
        let env: Map<String, Value> = self
            .environment_variables
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(if redact_env { REDACTED.into() } else { v.clone() })))
            .collect();
        let mut out = json!({
            "workingDirectory": self.working_directory.to_string_lossy(),
            "charter": {
                "identity": {"name": c.identity.name, "email": c.identity.email, "role": c.identity.role},
                "objectives": c.objectives,
                "constraints": {
                    "forbiddenCommands": c.constraints.forbidden_commands,
                    "forbiddenPatterns": c.constraints.forbidden_patterns.iter()
                        .map(|p| json!({"source": p.source(), "flags": p.flags()}))
                        .collect::<Vec<_>>(),
                    "requiredApprovals": c.constraints.required_approvals,
                },
                "resources": {
                    "maxTokens": c.resources.max_tokens,
                    "maxExecutionTime": c.resources.max_execution_time_ms,
                    "allowedTools": c.resources.allowed_tools,
                },
            },
            "taskContext": {
                "taskId": self.task_context.task_id,
                "description": self.task_context.description,
                "priority": self.task_context.priority.as_str(),
                "relatedTasks": self.task_context.related_tasks,
                "metadata": self.task_context.metadata,
            },
            "memory": {
                "recentActions": self.memory.recent_actions.iter().map(|a| json!({
                    "timestamp": humantime::format_rfc3339_millis(a.timestamp).to_string(),
                    "action": a.action,
                    "result": a.result,
                })).collect::<Vec<_>>(),
                "conversationHistory": self.memory.conversation_history.iter()
                    .map(|m| json!({"role": m.role.as_str(), "content": m.content}))
                    .collect::<Vec<_>>(),
                "preferences": self.memory.preferences,
                "projectContext": self.memory.project_context,
            },
            "environmentVariables": env,
            "timeout": self.timeout_ms.unwrap_or(0),
            "verbose": self.verbose,
            "keepAlive": self.keep_alive,
        });
        let o = out.as_object_mut().expect("an object");
        if let Some(p) = &self.claude_config_path {
            o.insert("claudeConfigPath".into(), p.to_string_lossy().into());
        }
        if let Some(id) = &self.resume_session_id {
            o.insert("resumeSessionId".into(), id.clone().into());
        }
        if let Some(usd) = self.max_budget_usd {
            o.insert("maxBudgetUsd".into(), usd.into());
        }
        if let Some(prompt) = &self.prompt {
            o.insert("prompt".into(), prompt.clone().into());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_json::tests::valid;

    #[test]
    fn round_trips_through_from_json() {
        let mut v = valid();
        v["environmentVariables"] = json!({"API_TOKEN": "s3cret"});
        v["timeout"] = json!(1500);
        v["prompt"] = json!("carry on");
        let config = SessionConfig::from_json(&v).unwrap();
        let again = SessionConfig::from_json(&config.to_json(false)).unwrap();
        assert_eq!(again.to_json(false), config.to_json(false));
        assert_eq!(again.environment_variables["API_TOKEN"], "s3cret");
        assert_eq!(again.timeout_ms, Some(1500));
        assert_eq!(again.prompt.as_deref(), Some("carry on"));
    }

    #[test]
    fn redaction_keeps_names_and_hides_values() {
        let mut v = valid();
        v["environmentVariables"] = json!({"API_TOKEN": "s3cret"});
        let dumped = SessionConfig::from_json(&v).unwrap().to_json(true);
        assert_eq!(dumped["environmentVariables"], json!({"API_TOKEN": REDACTED}));
        assert!(!dumped.to_string().contains("s3cret"));
    }
}
