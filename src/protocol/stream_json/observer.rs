//! The observer of Claude Code's stream-json output: it reads Claude Code's own
//! accounting (token usage and cost from `result` messages, commands and file edits
//! from tool calls that ran), answers its control requests (hook callbacks decided by
//! the charter, `can_use_tool` prompts, approvals put to the daemon) and reports API
//! retries and rate limits.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::{hook_decision, line, success, FILE_TOOLS, MAX_LINE, RATE_LIMIT_PAUSE};
use crate::config::SessionConfig;
use crate::output::{Line, LineSplitter};
use crate::policy::{Decision, Policy, Rule};
use crate::protocol::{DeniedCalls, Findings, PendingApproval, Question, Report};
use crate::status::{PolicyViolation, SessionMetrics, TokenUsage};

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
    pub(in crate::protocol) fn new(config: &SessionConfig, denied: DeniedCalls) -> Self {
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

    pub(in crate::protocol) fn on_stdout(&mut self, chunk: &[u8], found: &mut Findings) {
        let before = (self.metrics, self.usage);
        let mut lines = std::mem::replace(&mut self.lines, LineSplitter::new(0));
        lines.feed(chunk, |line| self.on_line(line, found));
        self.lines = lines;
        self.report_totals(before, found);
    }

    pub(in crate::protocol) fn on_eof(&mut self, found: &mut Findings) {
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
mod tests;
