//! The `stream-json` protocol: Claude Code run headless the way the Agent SDKs run
//! it, with JSON lines on stdin and stdout.

use std::ffi::OsString;

use serde_json::json;

use super::{Findings, Launch, LaunchInput};

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
        "--session-id",
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    args.push(input.conversation_id.into());
    args.push("--append-system-prompt".into());
    args.push(input.claude_md.into());
    let tools = &input.config.charter.resources.allowed_tools;
    if !tools.is_empty() {
        let names: Vec<String> = tools.iter().map(|t| claude_tool_name(t)).collect();
        args.push("--tools".into());
        args.push(names.join(",").into());
    }
    Launch {
        args,
        first_input: user_message(input.prompt),
    }
}

/// One user turn as a JSON line.
pub(super) fn user_message(text: &str) -> Vec<u8> {
    let mut line = json!({"type": "user", "message": {"role": "user", "content": text}}).to_string();
    line.push('\n');
    line.into_bytes()
}

pub(crate) struct Observer {}

impl Observer {
    pub(super) fn new() -> Self {
        Self {}
    }

    pub(super) fn on_stdout(&mut self, _chunk: &[u8], _found: &mut Findings) {}

    pub(super) fn on_eof(&mut self, _found: &mut Findings) {}
}

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
        let first: serde_json::Value = serde_json::from_slice(&l.first_input).unwrap();
        assert_eq!(first, json!({"type": "user", "message": {"role": "user", "content": "go"}}));
        assert!(l.first_input.ends_with(b"\n"));
    }
}
