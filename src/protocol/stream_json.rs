//! The `stream-json` protocol: Claude Code run headless the way the Agent SDKs run
//! it, with JSON lines on stdin and stdout. The observer reads Claude Code's own
//! accounting: token usage and cost from `result` messages, commands and file edits
//! from tool calls that ran, approval prompts from `can_use_tool` requests (each of
//! which it answers), API trouble from `api_retry` messages.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;

use serde_json::{json, Value};

use super::{Findings, Launch, LaunchInput, Report};
use crate::config::SessionConfig;
use crate::output::{Line, LineSplitter};
use crate::status::{SessionMetrics, TokenUsage};

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
    line(&json!({"type": "user", "message": {"role": "user", "content": text}}))
}

fn line(value: &Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(value).expect("a Value always serialises");
    bytes.push(b'\n');
    bytes
}

/// A tool call seen in an assistant message.
struct ToolCall {
    name: String,
    /// For file tools, the file it changes.
    file: Option<String>,
}

pub(crate) struct Observer {
    lines: LineSplitter,
    /// Claude Code names of the allowed tools; `None`: all.
    allowed: Option<Vec<String>>,
    /// The charter's words, for denial reasons.
    allowed_words: String,
    calls: HashMap<String, ToolCall>,
    /// Calls this observer denied: they never ran.
    denied: HashSet<String>,
    /// Bash calls counted as run, until a turn's `permission_denials` says otherwise.
    commands: HashSet<String>,
    modified: HashSet<String>,
    metrics: SessionMetrics,
    usage: TokenUsage,
}

impl Observer {
    pub(super) fn new(config: &SessionConfig) -> Self {
        let words = &config.charter.resources.allowed_tools;
        Self {
            lines: LineSplitter::new(MAX_LINE),
            allowed: (!words.is_empty()).then(|| words.iter().map(|w| claude_tool_name(w)).collect()),
            allowed_words: words.join(", "),
            calls: HashMap::new(),
            denied: HashSet::new(),
            commands: HashSet::new(),
            modified: HashSet::new(),
            metrics: SessionMetrics::default(),
            usage: TokenUsage::default(),
        }
    }

    pub(super) fn on_stdout(&mut self, chunk: &[u8], found: &mut Findings) {
        let before = (self.metrics, self.usage);
        let mut lines = std::mem::replace(&mut self.lines, LineSplitter::new(0));
        lines.feed(chunk, |line| self.on_line(line, found));
        self.lines = lines;
        self.report_totals(before, found);
    }

    pub(super) fn on_eof(&mut self, found: &mut Findings) {
        let before = (self.metrics, self.usage);
        let mut lines = std::mem::replace(&mut self.lines, LineSplitter::new(0));
        lines.finish(|line| self.on_line(line, found));
        self.lines = lines;
        self.report_totals(before, found);
    }

    fn report_totals(&self, (metrics, usage): (SessionMetrics, TokenUsage), found: &mut Findings) {
        if self.metrics != metrics {
            found.metrics = Some(self.metrics);
        }
        if self.usage != usage {
            found.usage = Some(self.usage);
        }
    }

    fn on_line(&mut self, line: Line<'_>, found: &mut Findings) {
        match line {
            Line::TooLong(len) => {
                tracing::warn!(bytes = len, limit = MAX_LINE, "stdout line too long to parse; skipped");
                self.metrics.errors += 1;
            }
            Line::Complete(bytes) => {
                if bytes.iter().all(u8::is_ascii_whitespace) {
                    return;
                }
                // Not JSON: it stays what it is, output.
                let Ok(message) = serde_json::from_slice::<Value>(bytes) else { return };
                // The message itself is reported before what it causes (a retry).
                let at = found.reports.len();
                if message.is_object() {
                    self.on_message(&message, found);
                }
                found.reports.insert(at, Report::Message(message));
            }
        }
    }

    fn on_message(&mut self, m: &Value, found: &mut Findings) {
        match m["type"].as_str() {
            Some("system") if m["subtype"] == "api_retry" => {
                self.metrics.errors += 1;
                found.reports.push(Report::Retry {
                    attempt: m["attempt"].as_u64().unwrap_or(0),
                    max_retries: m["max_retries"].as_u64().unwrap_or(0),
                    retry_delay_ms: m["retry_delay_ms"].as_f64().map_or(0, |ms| ms.max(0.0) as u64),
                    error: match &m["error"] {
                        Value::String(s) => s.clone(),
                        Value::Null => String::new(),
                        other => other.to_string(),
                    },
                });
            }
            Some("assistant") => {
                for block in blocks(m) {
                    if block["type"] == "tool_use" {
                        self.on_tool_use(block);
                    }
                }
            }
            Some("user") => {
                for block in blocks(m) {
                    if block["type"] == "tool_result" {
                        self.on_tool_result(block, found);
                    }
                }
            }
            Some("control_request") => self.on_control_request(m, found),
            Some("result") => self.on_result(m, found),
            _ => {}
        }
    }

    fn on_tool_use(&mut self, block: &Value) {
        let (Some(id), Some(name)) = (block["id"].as_str(), block["name"].as_str()) else { return };
        let file = FILE_TOOLS
            .iter()
            .find(|(tool, _)| *tool == name)
            .and_then(|(_, field)| block["input"][field].as_str())
            .map(str::to_owned);
        self.calls.insert(id.to_owned(), ToolCall { name: name.to_owned(), file });
    }

    fn on_tool_result(&mut self, block: &Value, found: &mut Findings) {
        let failed = block["is_error"].as_bool().unwrap_or(false);
        if failed {
            self.metrics.errors += 1;
        }
        let Some(id) = block["tool_use_id"].as_str() else { return };
        if self.denied.contains(id) {
            return;
        }
        let Some(call) = self.calls.get(id) else { return };
        if call.name == "Bash" {
            // A failing command ran too; a call Claude Code denied by itself is taken
            // back when the turn's `permission_denials` lists it.
            if self.commands.insert(id.to_owned()) {
                self.metrics.commands_executed += 1;
            }
        } else if let (Some(file), false) = (&call.file, failed) {
            if self.modified.insert(file.clone()) {
                self.metrics.files_modified += 1;
                found.modified_files.push(file.clone());
            }
        }
    }

    fn on_control_request(&mut self, m: &Value, found: &mut Findings) {
        let request_id = m["request_id"].clone();
        let request = &m["request"];
        let reply = match request["subtype"].as_str() {
            Some("can_use_tool") => {
                self.metrics.approval_prompts += 1;
                let tool = request["tool_name"].as_str().unwrap_or_default();
                let allowed = self.allowed.as_ref().is_none_or(|names| names.iter().any(|n| n == tool));
                if allowed {
                    json!({"behavior": "allow", "updatedInput": request["input"]})
                } else {
                    if let Some(id) = request["tool_use_id"].as_str() {
                        self.denied.insert(id.to_owned());
                    }
                    let message = format!(
                        "Denied by the session's charter: the tool {tool} is not among its allowed tools ({}).",
                        self.allowed_words
                    );
                    json!({"behavior": "deny", "message": message})
                }
            }
            // Unanswered, a request would hang the session: refuse what is unknown.
            other => {
                let subtype = other.unwrap_or("(none)");
                found.replies.push(line(&json!({
                    "type": "control_response",
                    "response": {"subtype": "error", "request_id": request_id, "error": format!("unsupported request {subtype}")}
                })));
                return;
            }
        };
        found.replies.push(line(&json!({
            "type": "control_response",
            "response": {"subtype": "success", "request_id": request_id, "response": reply}
        })));
    }

    fn on_result(&mut self, m: &Value, found: &mut Findings) {
        let usage = &m["usage"];
        let count = |key: &str| usage[key].as_u64().unwrap_or(0);
        self.usage.input +=
            count("input_tokens") + count("cache_creation_input_tokens") + count("cache_read_input_tokens");
        self.usage.output += count("output_tokens");
        self.usage.total = self.usage.input + self.usage.output;
        if let Some(cost) = m["total_cost_usd"].as_f64() {
            found.cost_usd = Some(cost);
        }
        if let Some(denials) = m["permission_denials"].as_array() {
            for denial in denials {
                if let Some(id) = denial["tool_use_id"].as_str() {
                    if self.commands.remove(id) {
                        self.metrics.commands_executed -= 1;
                    }
                }
            }
        }
        let failed = m["is_error"].as_bool().unwrap_or(false) || m["subtype"].as_str().is_some_and(|s| s != "success");
        let error = failed.then(|| {
            self.metrics.errors += 1;
            let subtype = m["subtype"].as_str().unwrap_or("error");
            match m["result"].as_str().filter(|r| !r.is_empty()) {
                Some(text) => format!("Claude Code ended the turn with an error ({subtype}): {text}"),
                None => format!("Claude Code ended the turn with an error ({subtype})"),
            }
        });
        found.turn_ended = Some(error);
    }
}

fn blocks(m: &Value) -> &[Value] {
    m["message"]["content"].as_array().map_or(&[], Vec::as_slice)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let first: Value = serde_json::from_slice(&l.first_input).unwrap();
        assert_eq!(first, json!({"type": "user", "message": {"role": "user", "content": "go"}}));
        assert!(l.first_input.ends_with(b"\n"));
    }

    fn observe(tools: &[&str], lines: &[Value]) -> (Observer, Findings) {
        let mut config = SessionConfig::default();
        config.charter.resources.allowed_tools = tools.iter().map(|t| t.to_string()).collect();
        let mut o = Observer::new(&config);
        let mut all = Findings::default();
        for l in lines {
            let mut f = Findings::default();
            o.on_stdout(&line(l), &mut f);
            all.replies.extend(f.replies);
            all.reports.extend(f.reports);
            all.modified_files.extend(f.modified_files);
            all.turn_ended = f.turn_ended.or(all.turn_ended);
            all.cost_usd = f.cost_usd.or(all.cost_usd);
        }
        (o, all)
    }

    fn tool_use(id: &str, name: &str, input: Value) -> Value {
        json!({"type": "assistant", "message": {"content": [{"type": "tool_use", "id": id, "name": name, "input": input}]}})
    }

    fn tool_result(id: &str, is_error: bool) -> Value {
        json!({"type": "user", "message": {"content": [{"type": "tool_result", "tool_use_id": id, "is_error": is_error, "content": "x"}]}})
    }

    fn can_use(request_id: &str, id: &str, tool: &str) -> Value {
        json!({"type": "control_request", "request_id": request_id, "request": {"subtype": "can_use_tool", "tool_name": tool, "input": {"command": "ls"}, "tool_use_id": id}})
    }

    #[test]
    fn counts_what_ran_from_tool_calls() {
        let (o, f) = observe(
            &[],
            &[
                tool_use("t1", "Bash", json!({"command": "npm test"})),
                tool_use("t2", "Write", json!({"file_path": "/w/a.txt", "content": "A"})),
                tool_use("t3", "Edit", json!({"file_path": "/w/a.txt"})),
                tool_use("t4", "Edit", json!({"file_path": "/w/b.txt"})),
                tool_use("t5", "Bash", json!({"command": "false"})),
                tool_result("t1", false),
                tool_result("t2", false),
                tool_result("t3", false),
                tool_result("t4", true),
                tool_result("t5", true),
            ],
        );
        assert_eq!(o.metrics.commands_executed, 2, "a failing command ran too");
        assert_eq!(o.metrics.files_modified, 1, "distinct paths; a failed edit changed nothing");
        assert_eq!(f.modified_files, ["/w/a.txt"]);
        assert_eq!(o.metrics.errors, 2);
    }

    #[test]
    fn answers_every_request_and_denies_tools_outside_the_charter() {
        let (o, f) = observe(
            &["read", "bash"],
            &[
                tool_use("t1", "Bash", json!({"command": "ls"})),
                can_use("r1", "t1", "Bash"),
                tool_use("t2", "Write", json!({"file_path": "/w/x"})),
                can_use("r2", "t2", "Write"),
                tool_result("t1", false),
                tool_result("t2", true),
                json!({"type": "control_request", "request_id": "r3", "request": {"subtype": "mystery"}}),
            ],
        );
        let replies: Vec<Value> = f.replies.iter().map(|r| serde_json::from_slice(r).unwrap()).collect();
        assert_eq!(replies.len(), 3);
        assert_eq!(replies[0]["response"]["request_id"], "r1");
        assert_eq!(replies[0]["response"]["response"]["behavior"], "allow");
        assert_eq!(replies[0]["response"]["response"]["updatedInput"], json!({"command": "ls"}));
        assert_eq!(replies[1]["response"]["response"]["behavior"], "deny");
        assert!(replies[1]["response"]["response"]["message"].as_str().unwrap().contains("Write is not among its allowed tools (read, bash)"));
        assert_eq!(replies[2]["response"]["subtype"], "error");
        assert_eq!(replies[2]["response"]["request_id"], "r3");
        assert_eq!(o.metrics.approval_prompts, 2);
        assert_eq!(o.metrics.commands_executed, 1);
        assert_eq!(o.metrics.files_modified, 0, "the denied write did not run");
    }

    #[test]
    fn results_sum_tokens_and_take_back_commands_claude_code_denied() {
        let (o, f) = observe(
            &[],
            &[
                tool_use("t1", "Bash", json!({"command": "rm -rf x"})),
                tool_result("t1", true),
                json!({"type": "result", "subtype": "success", "is_error": false, "total_cost_usd": 0.5,
                       "usage": {"input_tokens": 100, "cache_creation_input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 20},
                       "permission_denials": [{"tool_name": "Bash", "tool_use_id": "t1"}]}),
                json!({"type": "result", "subtype": "error_max_turns", "is_error": true, "total_cost_usd": 0.7,
                       "usage": {"input_tokens": 1, "output_tokens": 2}}),
            ],
        );
        assert_eq!(o.usage, TokenUsage { input: 116, output: 22, total: 138 });
        assert_eq!(f.cost_usd, Some(0.7));
        assert_eq!(o.metrics.commands_executed, 0);
        assert_eq!(o.metrics.errors, 2, "the denied call's error result and the error turn");
        assert!(f.turn_ended.unwrap().unwrap().contains("error_max_turns"));
    }

    #[test]
    fn api_retries_are_reported_and_junk_is_ignored() {
        let mut o = Observer::new(&SessionConfig::default());
        let mut f = Findings::default();
        o.on_stdout(b"not json\n{\"type\":\"from_the_future\"}\n[1,2]\n", &mut f);
        o.on_stdout(b"{\"type\":\"system\",\"subtype\":\"api_retry\",\"attempt\":2,\"max_retries\":10,\"retry_delay_ms\":1200.5,\"error\":\"unknown\"}\n", &mut f);
        assert!(matches!(&f.reports[0], Report::Message(m) if m["type"] == "from_the_future"));
        assert!(matches!(&f.reports[1], Report::Message(m) if m == &json!([1, 2])));
        assert!(matches!(&f.reports[2], Report::Message(_)));
        assert!(matches!(&f.reports[3], Report::Retry { attempt: 2, max_retries: 10, retry_delay_ms: 1200, error } if error == "unknown"));
        assert_eq!(o.metrics.errors, 1);
    }

    #[test]
    fn a_result_split_across_reads_is_parsed_once_whole() {
        let mut o = Observer::new(&SessionConfig::default());
        let text = line(&json!({"type": "result", "subtype": "success", "usage": {"input_tokens": 3, "output_tokens": 4}}));
        let (a, b) = text.split_at(text.len() / 2);
        let mut f = Findings::default();
        o.on_stdout(a, &mut f);
        assert!(f.turn_ended.is_none());
        o.on_stdout(b, &mut f);
        assert_eq!(f.turn_ended, Some(None));
        assert_eq!(o.usage.total, 7);
    }
}
