//! Rendering a session's config into the two texts the agent gets: the session's
//! CLAUDE.md (the charter, task and memory) and the task prompt.

use std::fmt::Write;

use crate::config::SessionConfig;

/// The generated CLAUDE.md. Sections in the contract's order: header, VP Identity,
/// Objectives, Constraints, Resource Limits, Memory Context, then a rule and the
/// base CLAUDE.md text when one is given.
pub fn render_claude_md(session_id: &str, config: &SessionConfig, base: Option<&str>) -> String {
    let charter = &config.charter;
    let task = &config.task_context;
    let mut md = String::with_capacity(2048);
    let _ = writeln!(md, "# Claude Session {session_id}\n");
    let _ = writeln!(md, "**Task ID:** {}", task.task_id);
    let _ = writeln!(md, "**Task:** {}", task.description);
    let _ = writeln!(md, "**Priority:** {}\n", task.priority);

    md.push_str("## VP Identity\n\n");
    let id = &charter.identity;
    let _ = writeln!(md, "- **Name:** {}", id.name);
    let _ = writeln!(md, "- **Email:** {}", id.email);
    let _ = writeln!(md, "- **Role:** {}\n", id.role);

    md.push_str("## Objectives\n\n");
    bullets(&mut md, charter.objectives.iter());

    let c = &charter.constraints;
    md.push_str("## Constraints\n\n### Forbidden Commands\n\n");
    bullets(&mut md, c.forbidden_commands.iter().map(|s| format!("`{s}`")));
    md.push_str("### Required Approvals\n\n");
    bullets(&mut md, c.required_approvals.iter());
    if !c.forbidden_patterns.is_empty() {
        md.push_str("### Forbidden Patterns\n\n");
        bullets(&mut md, c.forbidden_patterns.iter().map(|p| format!("`{p}`")));
    }

    let r = &charter.resources;
    md.push_str("## Resource Limits\n\n");
    let _ = writeln!(md, "- **Max Tokens:** {}", r.max_tokens);
    let _ = writeln!(md, "- **Max Execution Time:** {}ms", r.max_execution_time_ms);
    let _ = writeln!(md, "- **Allowed Tools:** {}\n", r.allowed_tools.join(", "));

    let m = &config.memory;
    md.push_str("## Memory Context\n\n### Recent Actions\n\n");
    bullets(
        &mut md,
        m.recent_actions.iter().map(|a| {
            let at = humantime::format_rfc3339_millis(a.timestamp);
            format!("[{at}] {}: {}", a.action, a.result)
        }),
    );
    md.push_str("### Preferences\n\n");
    bullets(&mut md, m.preferences.iter().map(|(k, v)| format!("{k}: {v}")));
    if !m.project_context.is_empty() {
        md.push_str("### Project Context\n\n");
        bullets(&mut md, m.project_context.iter().map(|(k, v)| format!("{k}: {v}")));
    }

    if let Some(base) = base {
        md.push_str("---\n\n");
        md.push_str(base);
        if !base.ends_with('\n') {
            md.push('\n');
        }
    }
    md
}

fn bullets<I: Iterator<Item = S>, S: std::fmt::Display>(md: &mut String, items: I) {
    let mut any = false;
    for item in items {
        any = true;
        let _ = writeln!(md, "- {item}");
    }
    if !any {
        md.push_str("- (none)\n");
    }
    md.push('\n');
}

/// Closing line of every task prompt.
pub const PROMPT_INSTRUCTION: &str =
    "Please proceed with this task, following your VP charter: its objectives, constraints and resource limits.";

/// The task prompt: the task, related tasks, the earlier conversation, the instruction.
pub fn render_task_prompt(config: &SessionConfig) -> String {
    let task = &config.task_context;
    let mut p = format!("Task: {}\n\n", task.description);
    if !task.related_tasks.is_empty() {
        let _ = writeln!(p, "Related Tasks: {}\n", task.related_tasks.join(", "));
    }
    let history = &config.memory.conversation_history;
    if !history.is_empty() {
        p.push_str("Previous Conversation:\n");
        for message in history {
            let _ = writeln!(p, "{}: {}", message.role.as_str(), message.content);
        }
        p.push('\n');
    }
    p.push_str(PROMPT_INSTRUCTION);
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn config() -> SessionConfig {
        let mut c = SessionConfig {
            task_context: TaskContext {
                task_id: "T-7".into(),
                description: "Fix the flaky test".into(),
                priority: Priority::Critical,
                related_tasks: vec!["T-5".into(), "T-6".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        c.charter.identity = Identity {
            name: "Ada Lovelace".into(),
            email: "ada@example.com".into(),
            role: "Staff Engineer".into(),
        };
        c.charter.objectives = vec!["Keep CI green".into(), "Write tests".into()];
        c.charter.constraints.forbidden_commands = vec!["rm -rf".into()];
        c.charter.constraints.required_approvals = vec!["deploy".into()];
        c.charter.resources = Resources {
            max_tokens: 50000,
            max_execution_time_ms: 600000,
            allowed_tools: vec!["read".into(), "bash".into()],
        };
        c.memory.recent_actions = vec![RecentAction {
            timestamp: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            action: "ran tests".into(),
            result: "2 failed".into(),
        }];
        c.memory.preferences.insert("style".into(), serde_json::json!({"terse": true}));
        c
    }

    #[test]
    fn claude_md_has_the_sections_in_order() {
        let md = render_claude_md("claude-session-x", &config(), Some("Base rules here"));
        let order = [
            "# Claude Session claude-session-x",
            "**Task:** Fix the flaky test",
            "**Priority:** critical",
            "## VP Identity",
            "- **Name:** Ada Lovelace",
            "- **Email:** ada@example.com",
            "- **Role:** Staff Engineer",
            "## Objectives",
            "- Keep CI green\n- Write tests",
            "## Constraints",
            "### Forbidden Commands",
            "- `rm -rf`",
            "### Required Approvals",
            "- deploy",
            "## Resource Limits",
            "- **Max Tokens:** 50000",
            "- **Max Execution Time:** 600000ms",
            "- **Allowed Tools:** read, bash",
            "## Memory Context",
            "### Recent Actions",
            "- [2023-11-14T22:13:20.123Z] ran tests: 2 failed",
            "### Preferences",
            "- style: {\"terse\":true}",
            "---",
            "Base rules here",
        ];
        let mut at = 0;
        for needle in order {
            let found = md[at..].find(needle).unwrap_or_else(|| panic!("{needle:?} missing or out of order in\n{md}"));
            at += found + needle.len();
        }
    }

    #[test]
    fn empty_lists_say_none_and_no_base_means_no_rule() {
        let md = render_claude_md("s", &SessionConfig::default(), None);
        assert!(md.contains("## Objectives\n\n- (none)\n"));
        assert!(!md.contains("---"));
        assert!(!md.contains("Forbidden Patterns"));
    }

    #[test]
    fn prompt_with_related_tasks_and_history() {
        let mut c = config();
        c.memory.conversation_history = vec![
            ConversationMessage { role: Role::User, content: "Is it done?".into() },
            ConversationMessage { role: Role::Assistant, content: "Not yet.".into() },
        ];
        assert_eq!(
            render_task_prompt(&c),
            format!(
                "Task: Fix the flaky test\n\nRelated Tasks: T-5, T-6\n\nPrevious Conversation:\n\
                 user: Is it done?\nassistant: Not yet.\n\n{PROMPT_INSTRUCTION}"
            )
        );
    }

    #[test]
    fn prompt_without_extras() {
        let mut c = config();
        c.task_context.related_tasks.clear();
        assert_eq!(render_task_prompt(&c), format!("Task: Fix the flaky test\n\n{PROMPT_INSTRUCTION}"));
    }
}
