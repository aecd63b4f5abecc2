//! The `stream-json` protocol: Claude Code run headless the way the Agent SDKs run
//! it, with JSON lines on stdin and stdout. The observer reads Claude Code's own
//! accounting: token usage and cost from `result` messages, commands and file edits
//! from tool calls that ran, approval prompts from `can_use_tool` requests (each of
//! which it answers), API trouble from `api_retry` messages.

use std::ffi::OsString;
use std::time::Duration;

use serde_json::{json, Value};

use super::{Launch, LaunchInput};

/// Longest stdout line parsed (16 MiB); a longer one is skipped and counted as an
/// error. Its bytes are in the session's stdout log and output events like any other.
pub const MAX_LINE: usize = 16 << 20;

/// Claude Code's name for one of the charter's lower-case tool words (`read` → `Read`,
/// `multiedit` → `MultiEdit`). Words it does not know are capitalised.
pub fn claude_tool_name(word: &str) -> String {
    const KNOWN: [&str; 14] = [
        "Bash", "Read", "Write", "Edit", "MultiEdit", "Glob", "Grep", "LS", "NotebookEdit",
        "NotebookRead", "WebFetch", "WebSearch", "TodoWrite", "Task",
    ];
    if let Some(known) = KNOWN.iter().find(|k| k.eq_ignore_ascii_case(word)) {
        return (*known).to_owned();
    }
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// How long a rate limit is taken to last when Claude Code says nothing more.
const RATE_LIMIT_PAUSE: Duration = Duration::from_secs(60);

/// Tools whose calls modify a file, and the input field naming it.
const FILE_TOOLS: [(&str, &str); 4] = [
    ("Write", "file_path"),
    ("Edit", "file_path"),
    ("MultiEdit", "file_path"),
    ("NotebookEdit", "notebook_path"),
];

pub(super) fn launch(input: &LaunchInput<'_>) -> Launch {
    let mut args: Vec<OsString> = [
        "-p",
        "--input-format",
        "stream-json",
        "--output-format",
        "stream-json",
        "--verbose",
        "--permission-prompt-tool",
        "stdio",
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    // Claude Code refuses both together; a resumed conversation keeps its id.
    match &input.config.resume_session_id {
        Some(id) => args.extend(["--resume".into(), id.into()]),
        None => args.extend(["--session-id".into(), input.conversation_id.into()]),
    }
    // A second line of defence: Claude Code refuses these itself should the control
    // channel fail (the policy's own check comes first, through the hook).
    let deny: Vec<String> = input
        .config
        .charter
        .constraints
        .forbidden_commands
        .iter()
        .map(|c| c.trim())
        .filter(|c| !c.is_empty())
        .map(|c| format!("Bash({c}:*)"))
        .collect();
    if !deny.is_empty() {
        args.push("--disallowedTools".into());
        args.extend(deny.into_iter().map(OsString::from));
    }
    if let Some(usd) = input.config.max_budget_usd {
        args.push("--max-budget-usd".into());
        args.push(usd.to_string().into());
    }
    args.push("--append-system-prompt".into());
    args.push(input.claude_md.into());
    let tools = &input.config.charter.resources.allowed_tools;
    if !tools.is_empty() {
        let names: Vec<String> = tools.iter().map(|t| claude_tool_name(t)).collect();
        args.push("--tools".into());
        args.push(names.join(",").into());
    }
    let mut first_input = initialize();
    first_input.extend(user_message(input.prompt));
    Launch { args, first_input }
}

/// One user turn as a JSON line.
pub(super) fn user_message(text: &str) -> Vec<u8> {
    line(&json!({"type": "user", "message": {"role": "user", "content": text}}))
}

/// The control request that registers the charter's PreToolUse hook for every tool:
/// sent before the first user message, so every tool call is decided by the policy,
/// including those Claude Code would allow without asking.
pub(super) fn initialize() -> Vec<u8> {
    line(&json!({
        "type": "control_request",
        "request_id": "initialize",
        "request": {"subtype": "initialize", "hooks": {"PreToolUse": [{"hookCallbackIds": [HOOK_ID]}]}}
    }))
}

const HOOK_ID: &str = "charter";

/// Asks Claude Code to stop the running turn.
pub(crate) fn interrupt_request() -> Vec<u8> {
    line(&json!({"type": "control_request", "request_id": "interrupt", "request": {"subtype": "interrupt"}}))
}

/// The answer to a permission question once the daemon has decided an approval.
pub(crate) fn approval_reply(question: &super::Question, input: &Value, approved: bool, keyword: &str) -> Vec<u8> {
    match question {
        super::Question::CanUseTool { request_id } => {
            let response = if approved {
                json!({"behavior": "allow", "updatedInput": input})
            } else {
                json!({"behavior": "deny", "message": approval_denied(keyword)})
            };
            success(request_id, response)
        }
        super::Question::Hook { request_id } => {
            let (decision, reason) = if approved {
                ("allow", format!("Approved by the daemon (the charter requires approval for `{keyword}`)."))
            } else {
                ("deny", approval_denied(keyword))
            };
            success(request_id, hook_decision(decision, &reason))
        }
    }
}

fn approval_denied(keyword: &str) -> String {
    format!(
        "Denied by the session's charter: calls involving `{keyword}` need the daemon's approval, and it was not given."
    )
}

fn hook_decision(decision: &str, reason: &str) -> Value {
    json!({"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": decision, "permissionDecisionReason": reason}})
}

fn success(request_id: &Value, response: Value) -> Vec<u8> {
    line(&json!({"type": "control_response", "response": {"subtype": "success", "request_id": request_id, "response": response}}))
}

fn line(value: &Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(value).expect("a Value always serialises");
    bytes.push(b'\n');
    bytes
}

mod observer;

pub(crate) use observer::Observer;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SessionConfig;

    #[test]
    fn tool_words_map_to_claude_code_names() {
        assert_eq!(claude_tool_name("read"), "Read");
        assert_eq!(claude_tool_name("bash"), "Bash");
        assert_eq!(claude_tool_name("multiedit"), "MultiEdit");
        assert_eq!(claude_tool_name("ls"), "LS");
        assert_eq!(claude_tool_name("webfetch"), "WebFetch");
        assert_eq!(claude_tool_name("custom"), "Custom");
    }

    #[test]
    fn invocation_is_headless_stream_json() {
        let mut config = SessionConfig::default();
        config.charter.resources.allowed_tools = vec!["read".into(), "bash".into()];
        let l = launch(&LaunchInput { config: &config, claude_md: "# md", prompt: "go", conversation_id: "u-1" });
        let args: Vec<_> = l.args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "-p", "--input-format", "stream-json", "--output-format", "stream-json", "--verbose",
                "--permission-prompt-tool", "stdio", "--session-id", "u-1", "--append-system-prompt",
                "# md", "--tools", "Read,Bash"
            ]
        );
        config.resume_session_id = Some("u-0".into());
        let resumed = launch(&LaunchInput { config: &config, claude_md: "", prompt: "", conversation_id: "u-1" });
        let resumed: Vec<_> = resumed.args.iter().map(|a| a.to_str().unwrap()).collect();
        assert!(resumed.windows(2).any(|w| w == ["--resume", "u-0"]));
        assert!(!resumed.contains(&"--session-id"));
        config.charter.constraints.forbidden_commands = vec!["rm -rf".into(), "git push --force".into()];
        config.max_budget_usd = Some(1.5);
        let guarded = launch(&LaunchInput { config: &config, claude_md: "md", prompt: "", conversation_id: "u" });
        let guarded: Vec<_> = guarded.args.iter().map(|a| a.to_str().unwrap()).collect();
        let at = guarded.iter().position(|a| *a == "--disallowedTools").unwrap();
        assert_eq!(&guarded[at..at + 6], ["--disallowedTools", "Bash(rm -rf:*)", "Bash(git push --force:*)", "--max-budget-usd", "1.5", "--append-system-prompt"]);
        let lines: Vec<Value> = l.first_input.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap()).collect();
        assert_eq!(lines[0]["request"]["subtype"], "initialize");
        assert_eq!(lines[0]["request"]["hooks"]["PreToolUse"][0]["hookCallbackIds"], json!(["charter"]));
        assert_eq!(lines[1], json!({"type": "user", "message": {"role": "user", "content": "go"}}));
        assert!(l.first_input.ends_with(b"\n"));
    }
}
