//! The charter as a policy, decided in Rust for every tool call Claude Code asks
//! about (`can_use_tool`) or announces (the PreToolUse hook). In order:
//!
//! 1. a tool outside `allowed_tools` (when the list is not empty): deny;
//! 2. a `Bash` command that runs a forbidden command: deny (see [`commands`]);
//! 3. a forbidden pattern matching the command, a file path, or text being written: deny;
//! 4. a required-approval keyword in the command or input: ask the daemon;
//! 5. otherwise allow.

pub mod commands;
pub mod shell;

use std::fmt;

use serde_json::Value;

use crate::config::{Charter, ForbiddenPattern};
use crate::protocol::claude_tool_name;
use commands::ForbiddenCommand;

/// Which rule decided a denial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// The tool is not in `allowedTools`.
    AllowedTools,
    /// A `forbiddenCommands` entry (or a command that could not be read for certain).
    ForbiddenCommand,
    /// A `forbiddenPatterns` entry.
    ForbiddenPattern,
    /// A `requiredApprovals` keyword, and the daemon did not approve.
    RequiredApproval,
    /// Claude Code denied the call by itself.
    ClaudeCode,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AllowedTools => "allowed-tools",
            Self::ForbiddenCommand => "forbidden-command",
            Self::ForbiddenPattern => "forbidden-pattern",
            Self::RequiredApproval => "required-approval",
            Self::ClaudeCode => "claude-code",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the policy says about one tool call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// `detail` names the entry; `reason` is the sentence the model reads.
    Deny { rule: Rule, detail: String, reason: String },
    /// A required approval: the daemon decides. `keyword` is the charter's entry.
    Ask { keyword: String },
}

/// A charter, compiled for deciding tool calls.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Claude Code names of the allowed tools; `None`: all.
    allowed: Option<Vec<String>>,
    allowed_words: String,
    forbidden: Vec<ForbiddenCommand>,
    patterns: Vec<ForbiddenPattern>,
    approvals: Vec<String>,
}

impl Policy {
    pub fn new(charter: &Charter) -> Self {
        let words = &charter.resources.allowed_tools;
        Self {
            allowed: (!words.is_empty()).then(|| words.iter().map(|w| claude_tool_name(w)).collect()),
            allowed_words: words.join(", "),
            forbidden: charter
                .constraints
                .forbidden_commands
                .iter()
                .filter_map(|entry| ForbiddenCommand::parse(entry))
                .collect(),
            patterns: charter.constraints.forbidden_patterns.clone(),
            approvals: charter
                .constraints
                .required_approvals
                .iter()
                .filter(|k| !k.trim().is_empty())
                .cloned()
                .collect(),
        }
    }

    pub fn decide(&self, tool: &str, input: &Value) -> Decision {
        if let Some(names) = &self.allowed {
            if !names.iter().any(|n| n == tool) {
                return Decision::Deny {
                    rule: Rule::AllowedTools,
                    detail: tool.to_owned(),
                    reason: format!(
                        "Denied by the session's charter: the tool {tool} is not among its allowed tools ({}).",
                        self.allowed_words
                    ),
                };
            }
        }
        let command = (tool == "Bash").then(|| input["command"].as_str()).flatten();
        if let Some(command) = command {
            if let Some((entry, why)) = commands::find_forbidden(command, &self.forbidden) {
                let reason = match &why {
                    commands::Why::Runs => format!(
                        "Denied by the session's charter: this command runs `{entry}`, a forbidden command."
                    ),
                    commands::Why::Unsure(what) => format!(
                        "Denied by the session's charter: the charter forbids `{entry}`, and this command cannot be \
                         checked for it ({what}). Write the command plainly, without indirection."
                    ),
                };
                let detail = match why {
                    commands::Why::Runs => entry,
                    commands::Why::Unsure(what) => format!("{entry} (unsure: {what})"),
                };
                return Decision::Deny { rule: Rule::ForbiddenCommand, detail, reason };
            }
        }
        for (what, text) in checked_texts(tool, input) {
            if let Some(pattern) = self.patterns.iter().find(|p| p.is_match(text)) {
                return Decision::Deny {
                    rule: Rule::ForbiddenPattern,
                    detail: pattern.to_string(),
                    reason: format!(
                        "Denied by the session's charter: the {what} matches the forbidden pattern {pattern}."
                    ),
                };
            }
        }
        if !self.approvals.is_empty() {
            let haystack = command.map_or_else(|| input.to_string(), str::to_owned).to_lowercase();
            if let Some(keyword) = self.approvals.iter().find(|k| haystack.contains(&k.to_lowercase())) {
                return Decision::Ask { keyword: keyword.clone() };
            }
        }
        Decision::Allow
    }
}

/// The texts of a tool call that forbidden patterns are matched against: the Bash
/// command, file paths, and text being written or edited in.
fn checked_texts<'a>(tool: &str, input: &'a Value) -> Vec<(&'static str, &'a str)> {
    let mut texts = Vec::new();
    let mut add = |what, value: &'a Value| {
        if let Some(text) = value.as_str() {
            texts.push((what, text));
        }
    };
    if tool == "Bash" {
        add("command", &input["command"]);
    }
    for field in ["file_path", "notebook_path", "path"] {
        add("file path", &input[field]);
    }
    add("text written", &input["content"]);
    add("text written", &input["new_string"]);
    add("text written", &input["new_source"]);
    if let Some(edits) = input["edits"].as_array() {
        for edit in edits {
            add("text written", &edit["new_string"]);
        }
    }
    texts
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy() -> Policy {
        let mut charter = Charter::default();
        charter.resources.allowed_tools = vec!["bash".into(), "write".into(), "edit".into(), "multiedit".into()];
        charter.constraints.forbidden_commands = vec!["rm -rf".into(), "git push --force".into()];
        charter.constraints.forbidden_patterns =
            vec![ForbiddenPattern::new(r"AKIA[0-9A-Z]{16}", "").unwrap(), ForbiddenPattern::new(r"/etc/", "").unwrap()];
        charter.constraints.required_approvals = vec!["deploy".into()];
        Policy::new(&charter)
    }

    fn rule_of(d: Decision) -> Option<Rule> {
        match d {
            Decision::Deny { rule, .. } => Some(rule),
            _ => None,
        }
    }

    #[test]
    fn tools_outside_the_list_are_denied() {
        let d = policy().decide("WebFetch", &json!({"url": "x"}));
        assert_eq!(rule_of(d.clone()), Some(Rule::AllowedTools));
        let Decision::Deny { reason, detail, .. } = d else { unreachable!() };
        assert_eq!(detail, "WebFetch");
        assert!(reason.contains("(bash, write, edit, multiedit)"));
        assert_eq!(Policy::new(&Charter::default()).decide("WebFetch", &json!({})), Decision::Allow);
    }

    #[test]
    fn forbidden_commands_are_denied_with_the_entry() {
        let d = policy().decide("Bash", &json!({"command": "cd x && sudo rm -fr build"}));
        let Decision::Deny { rule, detail, reason } = d else { panic!("{d:?}") };
        assert_eq!(rule, Rule::ForbiddenCommand);
        assert_eq!(detail, "rm -rf");
        assert!(reason.contains("`rm -rf`"));
        assert_eq!(policy().decide("Bash", &json!({"command": "echo 'rm -rf'"})), Decision::Allow);
    }

    #[test]
    fn patterns_check_commands_paths_and_written_text() {
        let p = policy();
        assert_eq!(rule_of(p.decide("Bash", &json!({"command": "export KEY=AKIAABCDEFGHIJKLMNOP"}))), Some(Rule::ForbiddenPattern));
        assert_eq!(rule_of(p.decide("Write", &json!({"file_path": "/etc/passwd", "content": "x"}))), Some(Rule::ForbiddenPattern));
        assert_eq!(rule_of(p.decide("Write", &json!({"file_path": "a", "content": "id AKIAABCDEFGHIJKLMNOP"}))), Some(Rule::ForbiddenPattern));
        assert_eq!(rule_of(p.decide("Edit", &json!({"file_path": "a", "old_string": "AKIAABCDEFGHIJKLMNOP", "new_string": "gone"}))), None);
        assert_eq!(
            rule_of(p.decide("MultiEdit", &json!({"file_path": "a", "edits": [{"old_string": "x", "new_string": "AKIAABCDEFGHIJKLMNOP"}]}))),
            Some(Rule::ForbiddenPattern)
        );
    }

    #[test]
    fn approval_keywords_ask_the_daemon() {
        assert_eq!(policy().decide("Bash", &json!({"command": "./Deploy.sh prod"})), Decision::Ask { keyword: "deploy".into() });
        assert_eq!(policy().decide("Write", &json!({"file_path": "deploy/notes.md", "content": "x"})), Decision::Ask { keyword: "deploy".into() });
        assert_eq!(policy().decide("Bash", &json!({"command": "ls"})), Decision::Allow);
    }

    #[test]
    fn denials_come_before_approvals() {
        let d = policy().decide("Bash", &json!({"command": "deploy && rm -rf /"}));
        assert_eq!(rule_of(d), Some(Rule::ForbiddenCommand));
    }
}
