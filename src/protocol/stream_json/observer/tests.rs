//! The observer's tests: whole stream-json exchanges in, findings and answers out.

use super::super::{approval_reply, line};
use super::*;

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
