//! The `stream-json` protocol: Claude Code run headless the way the Agent SDKs run
//! it, with JSON lines on stdin and stdout. The observer reads Claude Code's own
//! accounting: token usage and cost from `result` messages, commands and file edits
//! from tool calls that ran, approval prompts from `can_use_tool` requests (each of
//! which it answers), API trouble from `api_retry` messages.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::{DeniedCalls, Findings, Launch, LaunchInput, PendingApproval, Question, Report};
use crate::config::SessionConfig;
use crate::output::{Line, LineSplitter};
use crate::policy::{Decision, Policy, Rule};
use crate::status::{PolicyViolation, SessionMetrics, TokenUsage};

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

/// A tool call seen in an assistant message.
struct ToolCall {
    name: String,
    /// For file tools, the file it changes.
    file: Option<String>,
}

pub(crate) struct Observer {
    lines: LineSplitter,
    policy: Policy,
    /// Calls the spawner denied; approval tasks add theirs too.
    denied: DeniedCalls,
    calls: HashMap<String, ToolCall>,
    /// Bash calls counted as run, until a turn's `permission_denials` says otherwise.
    commands: HashSet<String>,
    modified: HashSet<String>,
    metrics: SessionMetrics,
    usage: TokenUsage,
    /// The charter's token budget (0: none), and whether its passing was reported.
    max_tokens: u64,
    budget_reported: bool,
    /// Tokens of the running turn's API calls so far, by message id (the turn's
    /// `result` replaces the estimate with Claude Code's own count).
    turn: HashMap<String, u64>,
}

impl Observer {
    pub(super) fn new(config: &SessionConfig, denied: DeniedCalls) -> Self {
        Self {
            lines: LineSplitter::new(MAX_LINE),
            policy: Policy::new(&config.charter),
            denied,
            calls: HashMap::new(),
            commands: HashSet::new(),
            modified: HashSet::new(),
            metrics: SessionMetrics::default(),
            usage: TokenUsage::default(),
            max_tokens: config.charter.resources.max_tokens,
            budget_reported: false,
            turn: HashMap::new(),
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

    fn report_totals(&mut self, (metrics, usage): (SessionMetrics, TokenUsage), found: &mut Findings) {
        if self.metrics != metrics {
            found.metrics = Some(self.metrics);
        }
        if self.usage != usage {
            found.usage = Some(self.usage);
        }
        let used = self.usage.total + self.turn.values().sum::<u64>();
        if self.max_tokens > 0 && used > self.max_tokens && !self.budget_reported {
            self.budget_reported = true;
            found.budget_exceeded = Some((used, self.max_tokens));
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
            Some("system") if m["subtype"] == "init" => found.reached_init = true,
            Some("system") if m["subtype"] == "api_retry" => {
                self.metrics.errors += 1;
                let delay_ms = m["retry_delay_ms"].as_f64().unwrap_or(0.0).max(0.0) as u64;
                if let Some(status @ (429 | 529)) = m["error_status"].as_u64() {
                    let wait = if delay_ms > 0 { Duration::from_millis(delay_ms) } else { RATE_LIMIT_PAUSE };
                    let what = m["error"].as_str().unwrap_or("rate_limit");
                    found.reports.push(Report::RateLimited {
                        until: SystemTime::now() + wait,
                        reason: format!("{what} (HTTP {status})"),
                    });
                }
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
                let message = &m["message"];
                if let Some(id) = message["id"].as_str() {
                    let u = &message["usage"];
                    let count = |key: &str| u[key].as_u64().unwrap_or(0);
                    let tokens = count("input_tokens")
                        + count("cache_creation_input_tokens")
                        + count("cache_read_input_tokens")
                        + count("output_tokens");
                    let seen = self.turn.entry(id.to_owned()).or_default();
                    *seen = (*seen).max(tokens);
                }
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
            Some("rate_limit_event") if m["rate_limit_info"]["status"] == "rejected" => {
                let info = &m["rate_limit_info"];
                let until = info["resetsAt"]
                    .as_f64()
                    .filter(|s| *s > 0.0)
                    .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(s))
                    .filter(|t| *t > SystemTime::now())
                    .unwrap_or_else(|| SystemTime::now() + RATE_LIMIT_PAUSE);
                let kind = info["rateLimitType"].as_str().unwrap_or("usage");
                found.reports.push(Report::RateLimited { until, reason: format!("rate limit reached ({kind})") });
            }
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
        if self.denied.lock().contains(id) {
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
        let request_id = &m["request_id"];
        let request = &m["request"];
        match request["subtype"].as_str() {
            Some("can_use_tool") => {
                self.metrics.approval_prompts += 1;
                let question = Question::CanUseTool { request_id: request_id.clone() };
                let tool = request["tool_name"].as_str().unwrap_or_default();
                let input = &request["input"];
                match self.decide(tool, input, request["tool_use_id"].as_str(), question, false, found) {
                    Some(Decision::Allow) => {
                        found.replies.push(success(request_id, json!({"behavior": "allow", "updatedInput": input})));
                    }
                    Some(Decision::Deny { reason, .. }) => {
                        found.replies.push(success(request_id, json!({"behavior": "deny", "message": reason})));
                    }
                    _ => {}
                }
            }
            Some("hook_callback") => {
                let hook = &request["input"];
                if hook["hook_event_name"] != "PreToolUse" {
                    found.replies.push(success(request_id, json!({})));
                    return;
                }
                let question = Question::Hook { request_id: request_id.clone() };
                let tool = hook["tool_name"].as_str().unwrap_or_default();
                let input = &hook["tool_input"];
                match self.decide(tool, input, hook["tool_use_id"].as_str(), question, true, found) {
                    // No objection: Claude Code's own permission flow goes on (and may
                    // ask `can_use_tool`, decided by the same policy).
                    Some(Decision::Allow) => found.replies.push(success(request_id, json!({}))),
                    Some(Decision::Deny { reason, .. }) => {
                        found.replies.push(success(request_id, hook_decision("deny", &reason)));
                    }
                    _ => {}
                }
            }
            // Unanswered, a request would hang the session: refuse what is unknown.
            other => {
                let subtype = other.unwrap_or("(none)");
                found.replies.push(line(&json!({
                    "type": "control_response",
                    "response": {"subtype": "error", "request_id": request_id, "error": format!("unsupported request {subtype}")}
                })));
            }
        }
    }

    /// Applies the policy to one tool call. A denial is recorded (violation, denied
    /// call); a question for the daemon becomes a pending approval and `None`.
    fn decide(
        &mut self,
        tool: &str,
        input: &Value,
        tool_use_id: Option<&str>,
        question: Question,
        from_hook: bool,
        found: &mut Findings,
    ) -> Option<Decision> {
        let decision = self.policy.decide(tool, input);
        match &decision {
            Decision::Allow => Some(decision),
            Decision::Deny { rule, detail, .. } => {
                if let Some(id) = tool_use_id {
                    self.denied.lock().insert(id.to_owned());
                }
                found.violations.push(violation(tool, input, rule.as_str(), detail));
                Some(decision)
            }
            Decision::Ask { keyword } => {
                // A `can_use_tool` request is counted where it arrives.
                if from_hook {
                    self.metrics.approval_prompts += 1;
                }
                found.approvals.push(PendingApproval {
                    question,
                    tool_name: tool.to_owned(),
                    input: input.clone(),
                    tool_use_id: tool_use_id.map(str::to_owned),
                    keyword: keyword.clone(),
                });
                None
            }
        }
    }

    fn on_result(&mut self, m: &Value, found: &mut Findings) {
        let usage = &m["usage"];
        let count = |key: &str| usage[key].as_u64().unwrap_or(0);
        self.usage.input +=
            count("input_tokens") + count("cache_creation_input_tokens") + count("cache_read_input_tokens");
        self.usage.output += count("output_tokens");
        self.usage.total = self.usage.input + self.usage.output;
        self.turn.clear();
        if let Some(cost) = m["total_cost_usd"].as_f64() {
            found.cost_usd = Some(cost);
        }
        if let Some(denials) = m["permission_denials"].as_array() {
            let denied = self.denied.lock();
            for denial in denials {
                let id = denial["tool_use_id"].as_str().unwrap_or_default();
                if self.commands.remove(id) {
                    self.metrics.commands_executed -= 1;
                }
                if !denied.contains(id) {
                    let tool = denial["tool_name"].as_str().unwrap_or_default();
                    found.violations.push(violation(tool, &denial["tool_input"], Rule::ClaudeCode.as_str(), "denied by Claude Code"));
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

fn violation(tool: &str, input: &Value, rule: &str, detail: &str) -> PolicyViolation {
    PolicyViolation {
        timestamp: SystemTime::now(),
        tool_name: tool.to_owned(),
        input: input.clone(),
        rule: rule.to_owned(),
        detail: detail.to_owned(),
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

    fn observe(tools: &[&str], lines: &[Value]) -> (Observer, Findings) {
        let mut config = SessionConfig::default();
        config.charter.resources.allowed_tools = tools.iter().map(|t| t.to_string()).collect();
        observe_with(&config, lines)
    }

    fn observe_with(config: &SessionConfig, lines: &[Value]) -> (Observer, Findings) {
        let mut o = Observer::new(config, Default::default());
        let mut all = Findings::default();
        for l in lines {
            let mut f = Findings::default();
            o.on_stdout(&line(l), &mut f);
            all.replies.extend(f.replies);
            all.reports.extend(f.reports);
            all.modified_files.extend(f.modified_files);
            all.turn_ended = f.turn_ended.or(all.turn_ended);
            all.cost_usd = f.cost_usd.or(all.cost_usd);
            all.violations.extend(f.violations);
            all.approvals.extend(f.approvals);
            all.budget_exceeded = f.budget_exceeded.or(all.budget_exceeded);
        }
        (o, all)
    }

    fn hook(request_id: &str, id: &str, tool: &str, input: Value) -> Value {
        json!({"type": "control_request", "request_id": request_id, "request": {"subtype": "hook_callback", "callback_id": "charter",
               "input": {"hook_event_name": "PreToolUse", "tool_name": tool, "tool_input": input, "tool_use_id": id}}})
    }

    fn charter_config() -> SessionConfig {
        let mut config = SessionConfig::default();
        config.charter.constraints.forbidden_commands = vec!["rm -rf".into()];
        config.charter.constraints.required_approvals = vec!["deploy".into()];
        config
    }

    #[test]
    fn hook_callbacks_are_decided_by_the_charter() {
        let (o, f) = observe_with(
            &charter_config(),
            &[
                hook("h1", "t1", "Bash", json!({"command": "ls && rm -fr x"})),
                hook("h2", "t2", "Bash", json!({"command": "ls"})),
                tool_use("t1", "Bash", json!({"command": "ls && rm -fr x"})),
                tool_result("t1", true),
            ],
        );
        let replies: Vec<Value> = f.replies.iter().map(|r| serde_json::from_slice(r).unwrap()).collect();
        assert_eq!(replies[0]["response"]["request_id"], "h1");
        let out = &replies[0]["response"]["response"]["hookSpecificOutput"];
        assert_eq!(out["permissionDecision"], "deny");
        assert!(out["permissionDecisionReason"].as_str().unwrap().contains("`rm -rf`"));
        assert_eq!(replies[1]["response"]["response"], json!({}), "no objection");
        assert_eq!(f.violations.len(), 1);
        assert_eq!((f.violations[0].rule.as_str(), f.violations[0].detail.as_str()), ("forbidden-command", "rm -rf"));
        assert_eq!(o.metrics.commands_executed, 0, "a denied command did not run");
    }

    #[test]
    fn approval_keywords_wait_for_the_daemon() {
        let (o, f) = observe_with(&charter_config(), &[hook("h1", "t1", "Bash", json!({"command": "./deploy.sh"}))]);
        assert!(f.replies.is_empty(), "answered later, by the approval task");
        assert_eq!(f.approvals.len(), 1);
        assert_eq!(f.approvals[0].keyword, "deploy");
        assert_eq!(f.approvals[0].tool_use_id.as_deref(), Some("t1"));
        assert_eq!(o.metrics.approval_prompts, 1);
        let allow: Value = serde_json::from_slice(&approval_reply(&f.approvals[0].question, &f.approvals[0].input, true, "deploy")).unwrap();
        assert_eq!(allow["response"]["response"]["hookSpecificOutput"]["permissionDecision"], "allow");
        let deny: Value = serde_json::from_slice(&approval_reply(&Question::CanUseTool { request_id: json!("r") }, &json!({}), false, "deploy")).unwrap();
        assert_eq!(deny["response"]["response"]["behavior"], "deny");
    }

    #[test]
    fn claude_codes_own_denials_are_reported() {
        let (_, f) = observe_with(
            &charter_config(),
            &[
                hook("h1", "t1", "Bash", json!({"command": "rm -rf x"})),
                json!({"type": "result", "subtype": "success", "permission_denials": [
                    {"tool_name": "Bash", "tool_use_id": "t1", "tool_input": {"command": "rm -rf x"}},
                    {"tool_name": "Write", "tool_use_id": "t9", "tool_input": {"file_path": "/x"}}
                ]}),
            ],
        );
        let rules: Vec<_> = f.violations.iter().map(|v| (v.rule.as_str(), v.tool_name.as_str())).collect();
        assert_eq!(rules, [("forbidden-command", "Bash"), ("claude-code", "Write")]);
    }

    #[test]
    fn the_token_budget_counts_streaming_usage_and_is_reported_once() {
        let mut config = SessionConfig::default();
        config.charter.resources.max_tokens = 500;
        let assistant = |id: &str, input: u64| json!({"type": "assistant", "message": {"id": id, "usage": {"input_tokens": input, "output_tokens": 1}, "content": []}});
        let (_, f) = observe_with(&config, &[assistant("m1", 300), assistant("m1", 300)]);
        assert_eq!(f.budget_exceeded, None, "one API call counted once: 301");
        let (_, f) = observe_with(&config, &[assistant("m1", 300), assistant("m2", 300)]);
        assert_eq!(f.budget_exceeded, Some((602, 500)));
        let result = json!({"type": "result", "subtype": "success", "usage": {"input_tokens": 450, "output_tokens": 100}});
        let (_, f) = observe_with(&config, &[result.clone(), result]);
        assert_eq!(f.budget_exceeded, Some((550, 500)), "reported once, when passed");
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
        let mut o = Observer::new(&SessionConfig::default(), Default::default());
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
    fn rate_limits_are_reported_with_their_end() {
        let mut o = Observer::new(&SessionConfig::default(), Default::default());
        let mut f = Findings::default();
        let before = SystemTime::now();
        o.on_stdout(b"{\"type\":\"system\",\"subtype\":\"api_retry\",\"attempt\":1,\"retry_delay_ms\":2000,\"error_status\":429,\"error\":\"rate_limit\"}\n", &mut f);
        o.on_stdout(b"{\"type\":\"system\",\"subtype\":\"api_retry\",\"attempt\":1,\"retry_delay_ms\":500,\"error_status\":500,\"error\":\"server_error\"}\n", &mut f);
        o.on_stdout(b"{\"type\":\"rate_limit_event\",\"rate_limit_info\":{\"status\":\"allowed_warning\"}}\n{\"type\":\"rate_limit_event\",\"rate_limit_info\":{\"status\":\"rejected\",\"resetsAt\":4102444800,\"rateLimitType\":\"five_hour\"}}\n", &mut f);
        let limits: Vec<_> = f.reports.iter().filter_map(|r| match r { Report::RateLimited { until, reason } => Some((*until, reason.clone())), _ => None }).collect();
        assert_eq!(limits.len(), 2, "a 500 and a warning are not rate limits");
        assert!(limits[0].0 >= before + Duration::from_millis(2000) && limits[0].0 < before + Duration::from_secs(10));
        assert_eq!(limits[0].1, "rate_limit (HTTP 429)");
        assert_eq!(limits[1].0, SystemTime::UNIX_EPOCH + Duration::from_secs(4102444800));
        assert_eq!(limits[1].1, "rate limit reached (five_hour)");
    }

    #[test]
    fn a_result_split_across_reads_is_parsed_once_whole() {
        let mut o = Observer::new(&SessionConfig::default(), Default::default());
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
