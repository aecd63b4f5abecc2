//! The stream-json reader against a fake agent that prints what Claude Code might:
//! huge lines, junk, invalid UTF-8, lines cut across reads, unknown messages, and
//! control requests that must be answered.

mod support;

use claude_session_spawner::*;
use serde_json::json;
use support::*;

const RESULT: &str = r#"{"type":"result","subtype":"success","is_error":false,"total_cost_usd":0.25,"usage":{"input_tokens":10,"cache_creation_input_tokens":2,"cache_read_input_tokens":3,"output_tokens":5}}"#;

fn out(line: &str) -> String {
    format!("out:{line}")
}

#[tokio::test]
async fn a_line_over_16_mib_is_skipped_and_counted_while_the_session_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    let steps = ["json-blob:20971520".to_owned(), out(RESULT)];
    let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
    let status = finished(json_spawner(&steps, &rec).spawn_session(config(dir.path())).await.unwrap().completion).await;
    assert_eq!(status.state, SessionState::Completed);
    assert_eq!(status.metrics.errors, 1, "the overlong line");
    assert_eq!(status.token_usage, Some(TokenUsage { input: 15, output: 5, total: 20 }));
    let messages = rec.messages(&status.session_id);
    assert_eq!(messages.len(), 1, "only the result was parsed");
    assert_eq!(messages[0]["type"], "result");
    let log = dir.path().join(".vp-daemon/sessions").join(&status.session_id).join("stdout.log");
    assert!(std::fs::metadata(log).unwrap().len() > 20 << 20, "the skipped line is on disk");
}

#[tokio::test]
async fn a_line_just_under_16_mib_is_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    let status =
        finished(json_spawner(&["json-blob:16000000"], &rec).spawn_session(config(dir.path())).await.unwrap().completion)
            .await;
    let messages = rec.messages(&status.session_id);
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["type"], "blob");
    assert!(messages[0]["data"].as_str().unwrap().len() > 15_900_000);
    assert_eq!(status.metrics.errors, 0);
}

#[tokio::test]
async fn junk_invalid_utf8_and_unknown_messages_pass_through() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    let steps = [
        "out:this is not json".to_owned(),
        "invalid-utf8".to_owned(),
        out(r#"{"type":"from_a_newer_version","x":1}"#),
        out(RESULT),
    ];
    let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
    let status = finished(json_spawner(&steps, &rec).spawn_session(config(dir.path())).await.unwrap().completion).await;
    assert_eq!(status.state, SessionState::Completed);
    let types: Vec<_> = rec.messages(&status.session_id).iter().map(|m| m["type"].clone()).collect();
    assert_eq!(types, [json!("from_a_newer_version"), json!("result")]);
    let output = rec.output(&status.session_id, "stdout");
    assert!(output.starts_with("this is not json\nbad \u{fffd}\u{fffd} bytes \u{fffd}\n{\"type\":\"from_a_newer_version\""));
    assert_eq!(status.cost_usd, Some(0.25));
}

#[tokio::test]
async fn a_result_split_across_reads_counts_once_and_messages_follow_their_output() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    let steps = [format!("split:{RESULT}")];
    let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
    let status = finished(json_spawner(&steps, &rec).spawn_session(config(dir.path())).await.unwrap().completion).await;
    assert_eq!(status.token_usage.unwrap().total, 20);
    let events = rec.for_session(&status.session_id);
    let message_at = events.iter().position(|e| matches!(e, Seen::Message { .. })).unwrap();
    let outputs_before = events[..message_at].iter().filter(|e| matches!(e, Seen::Output { .. })).count();
    assert!(outputs_before >= 2, "both halves were output before the message: {events:?}");
}

#[tokio::test]
async fn an_error_result_fails_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    let steps = [out(r#"{"type":"result","subtype":"error_max_turns","is_error":true,"result":"ran out of turns"}"#)];
    let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
    let status = finished(json_spawner(&steps, &rec).spawn_session(config(dir.path())).await.unwrap().completion).await;
    assert_eq!(status.exit_code, Some(0));
    assert_eq!(status.state, SessionState::Failed);
    assert!(status.error_message.unwrap().contains("error_max_turns"));
}

#[tokio::test]
async fn control_requests_are_answered_on_stdin_and_the_prompt_is_a_user_message() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    let request = r#"{"type":"control_request","request_id":"req-7","request":{"subtype":"can_use_tool","tool_name":"Write","input":{"file_path":"x"},"tool_use_id":"t1"}}"#;
    let steps = ["read-line".to_owned(), "read-line".to_owned(), out(request), "read-line".to_owned()];
    let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
    let mut cfg = config(dir.path());
    cfg.charter.resources.allowed_tools = vec!["read".into()];
    let status = finished(json_spawner(&steps, &rec).spawn_session(cfg).await.unwrap().completion).await;
    let lines: Vec<&str> = status.stdout.lines().collect();
    let got = |i: usize| -> serde_json::Value { serde_json::from_str(lines[i].strip_prefix("got: ").unwrap()).unwrap() };
    assert_eq!(got(0)["request"]["subtype"], "initialize", "the charter's hook is registered first");
    let prompt = got(1);
    assert_eq!(prompt["type"], "user");
    assert!(prompt["message"]["content"].as_str().unwrap().starts_with("Task: Run the fake task"));
    let answer = got(3);
    assert_eq!(answer["type"], "control_response");
    assert_eq!(answer["response"]["request_id"], "req-7");
    assert_eq!(answer["response"]["response"]["behavior"], "deny");
    assert_eq!(status.metrics.approval_prompts, 1);
}

#[tokio::test]
async fn claude_code_is_invoked_headless_with_the_charter_and_a_conversation_id() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    let mut cfg = config(dir.path());
    cfg.charter.resources.allowed_tools = vec!["read".into(), "bash".into()];
    let status = finished(json_spawner(&["args"], &rec).spawn_session(cfg).await.unwrap().completion).await;
    let args: Vec<&str> = status.stdout.lines().map(|l| l.strip_prefix("arg: ").unwrap_or(l)).collect();
    let conversation = status.claude_session_id.clone().unwrap();
    assert!(uuid::Uuid::parse_str(&conversation).is_ok());
    assert_eq!(&args[..10], ["-p", "--input-format", "stream-json", "--output-format", "stream-json", "--verbose", "--permission-prompt-tool", "stdio", "--session-id", conversation.as_str()]);
    assert_eq!(args[10], "--append-system-prompt");
    assert!(args[11].starts_with(&format!("# Claude Session {}", status.session_id)));
    let tools_at = args.iter().position(|a| *a == "--tools").unwrap();
    assert_eq!(args[tools_at + 1], "Read,Bash");
    assert_eq!(&args[tools_at + 2..], ["--steps", "args"], "extraArgs come last");
}
