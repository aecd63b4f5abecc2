//! Tests of `from_json`.

use super::*;
use serde_json::json;

pub(crate) fn valid() -> Value {
    json!({
        "workingDirectory": "/tmp",
        "charter": {
            "identity": {"name": "Ada", "email": "ada@example.com", "role": "Engineer"},
            "objectives": ["ship"],
            "constraints": {
                "forbiddenCommands": ["rm -rf"],
                "forbiddenPatterns": [{"source": "secret", "flags": "i"}, "token"],
                "requiredApprovals": ["deploy"]
            },
            "resources": {"maxTokens": 1000, "maxExecutionTime": 60000, "allowedTools": ["read", "bash"]}
        },
        "taskContext": {"taskId": "T-1", "description": "Do it", "priority": "high"},
        "memory": {
            "recentActions": [{"timestamp": 0, "action": "a", "result": "ok"}],
            "conversationHistory": [{"role": "user", "content": "hi"}],
            "preferences": {"style": "terse"},
            "projectContext": {}
        },
        "environmentVariables": {"FOO": "bar"},
        "timeout": 0
    })
}

fn error_for(mutate: impl FnOnce(&mut Value)) -> ConfigError {
    let mut v = valid();
    mutate(&mut v);
    SessionConfig::from_json(&v).unwrap_err()
}

#[test]
fn reads_a_valid_config() {
    let c = SessionConfig::from_json(&valid()).unwrap();
    assert_eq!(c.charter.identity.name, "Ada");
    assert_eq!(c.task_context.priority, Priority::High);
    assert_eq!(c.timeout_ms, None, "timeout 0 means none");
    assert_eq!(c.charter.constraints.forbidden_patterns.len(), 2);
    assert!(c.charter.constraints.forbidden_patterns[0].is_match("SECRET"));
    assert_eq!(c.memory.recent_actions[0].timestamp, UNIX_EPOCH);
    assert_eq!(c.environment_variables["FOO"], "bar");
    assert!(c.task_context.related_tasks.is_empty());
}

#[test]
fn names_the_wrong_field() {
    let e = error_for(|v| v["charter"]["objectives"] = json!("ship"));
    assert_eq!(e.field, "config.charter.objectives");
    assert_eq!(e.message, "config.charter.objectives must be an array of strings");

    let e = error_for(|v| v["charter"]["objectives"] = json!(["a", 3]));
    assert_eq!(e.message, "config.charter.objectives must be an array of strings");

    let e = error_for(|v| v.as_object_mut().unwrap().remove("workingDirectory").map(drop).unwrap());
    assert_eq!(e.message, "config.workingDirectory is required (a string)");

    let e = error_for(|v| v["taskContext"]["priority"] = json!("urgent"));
    assert_eq!(e.field, "config.taskContext.priority");

    let e = error_for(|v| v["timeout"] = json!(-5));
    assert_eq!(e.message, "config.timeout must be a non-negative integer");

    let e = error_for(|v| v["memory"]["recentActions"][0]["timestamp"] = json!("yesterday"));
    assert_eq!(e.field, "config.memory.recentActions[0].timestamp");

    let e = error_for(|v| v["memory"]["conversationHistory"][0]["role"] = json!("system"));
    assert_eq!(e.field, "config.memory.conversationHistory[0].role");

    let e = error_for(|v| v["environmentVariables"]["FOO"] = json!(1));
    assert_eq!(e.field, "config.environmentVariables.FOO");

    let e = error_for(|v| v["charter"] = json!(null));
    assert_eq!(e.message, "config.charter is required (an object)");

    let e = error_for(|v| v["charter"]["resources"]["maxTokens"] = json!(1.5));
    assert_eq!(e.field, "config.charter.resources.maxTokens");
}

#[test]
fn names_the_pattern_the_engine_refuses() {
    let e = error_for(|v| {
        v["charter"]["constraints"]["forbiddenPatterns"] = json!(["ok", {"source": "a(?!b)", "flags": ""}])
    });
    assert_eq!(e.field, "config.charter.constraints.forbiddenPatterns[1]");
    assert!(e.message.contains("/a(?!b)/"), "{}", e.message);

    let e = error_for(|v| v["charter"]["constraints"]["forbiddenPatterns"] = json!([{}]));
    assert_eq!(
        e.message,
        "config.charter.constraints.forbiddenPatterns[0] must be a RegExp or a string"
    );
}

#[test]
fn budgets_and_the_effective_timeout() {
    let mut v = valid();
    v["maxBudgetUsd"] = json!(2.5);
    v["timeout"] = json!(90000);
    let c = SessionConfig::from_json(&v).unwrap();
    assert_eq!(c.max_budget_usd, Some(2.5));
    assert_eq!(c.effective_timeout_ms(), Some(60000), "the charter's 60 s is smaller");
    v["charter"]["resources"]["maxExecutionTime"] = json!(0);
    assert_eq!(SessionConfig::from_json(&v).unwrap().effective_timeout_ms(), Some(90000));
    v["timeout"] = json!(0);
    assert_eq!(SessionConfig::from_json(&v).unwrap().effective_timeout_ms(), None);
    v["maxBudgetUsd"] = json!(-1);
    assert_eq!(SessionConfig::from_json(&v).unwrap_err().field, "config.maxBudgetUsd");
}

#[test]
fn resume_ids_must_be_uuids() {
    let mut v = valid();
    v["resumeSessionId"] = json!("11111111-2222-4333-8444-555555555555");
    let c = SessionConfig::from_json(&v).unwrap();
    assert_eq!(c.resume_session_id.as_deref(), Some("11111111-2222-4333-8444-555555555555"));
    for bad in ["../../etc/passwd", "not-a-uuid", "11111111222243338444555555555555"] {
        v["resumeSessionId"] = json!(bad);
        let e = SessionConfig::from_json(&v).unwrap_err();
        assert_eq!(e.field, "config.resumeSessionId", "{bad}");
    }
}

#[test]
fn accepts_rfc3339_dates() {
    let mut v = valid();
    v["memory"]["recentActions"][0]["timestamp"] = json!("2024-05-01T10:00:00.000Z");
    let c = SessionConfig::from_json(&v).unwrap();
    assert_eq!(
        humantime::format_rfc3339_millis(c.memory.recent_actions[0].timestamp).to_string(),
        "2024-05-01T10:00:00.000Z"
    );
}
