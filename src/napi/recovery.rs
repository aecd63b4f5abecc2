#![cfg_attr(test, allow(dead_code))]
//! `NativeRecoveryManager`: the core [`RecoveryManager`] over a `NativeSpawner`, for
//! `lib/recovery.js`. Its events go down the spawner's pipe to its own target; their
//! payloads, and the recovery states, travel as JSON text in the contract's shapes
//! with times as epoch milliseconds (`lib/` makes them `Date`s).

use std::sync::Arc;

use napi::bindgen_prelude::{Object, Reference};
use napi::{Env, Result};
use napi_derive::napi;
use serde_json::{json, Value};

use super::convert::millis;
use super::pipe::{PipeHandler};
use super::spawner::{parse_json, NativeSpawner};
use super::config_error;
use crate::event::SpawnerEvent;
use crate::recovery::{RecoveryConfig, RecoveryError, RecoveryManager, RecoveryState};
use crate::status::CrashReport;

/// A recovery state as JSON; an attempt's optional fields only when set.
fn state_json(s: &RecoveryState) -> Value {
    let attempts: Vec<Value> = s
        .attempts
        .iter()
        .map(|a| {
            let mut v = json!({
                "sessionId": a.session_id,
                "attemptNumber": a.attempt_number,
                "timestamp": millis(a.timestamp),
                "strategy": a.strategy.as_str(),
                "success": a.success,
            });
            let set = |v: &mut Value, key: &str, value: Value| {
                if !value.is_null() {
                    v[key] = value;
                }
            };
            set(&mut v, "error", json!(a.error));
            set(&mut v, "newSessionId", json!(a.new_session_id));
            set(&mut v, "resumed", json!(a.resumed));
            set(&mut v, "note", json!(a.note));
            v
        })
        .collect();
    let mut v = json!({
        "sessionId": s.session_id,
        "crashReport": s.crash_report.to_json(),
        "attempts": attempts,
        "status": s.status.as_str(),
        "startedAt": millis(s.started_at),
        "analysis": s.analysis.to_json(),
    });
    if let Some(at) = s.completed_at {
        v["completedAt"] = json!(millis(at));
    }
    v
}

/// A recovery event's payload as JSON text; `None` for other events.
pub(crate) fn event_json(event: &SpawnerEvent) -> Option<String> {
    let v = match event {
        SpawnerEvent::CrashDetected { session_id, crash_report } => {
            json!({"sessionId": &**session_id, "crashReport": crash_report.to_json()})
        }
        SpawnerEvent::CrashDumpSaved { session_id, filepath } => {
            json!({"sessionId": &**session_id, "filepath": filepath.to_string_lossy()})
        }
        SpawnerEvent::CrashDumpFailed { session_id, message } => {
            json!({"sessionId": &**session_id, "code": "ERR_CRASH_DUMP", "message": message})
        }
        SpawnerEvent::CrashAnalyzed { session_id, analysis } => json!({"sessionId": &**session_id, "analysis": analysis.to_json()}),
        SpawnerEvent::RecoveryAttempt { session_id, attempt_number, analysis } => {
            json!({"sessionId": &**session_id, "attemptNumber": attempt_number, "analysis": analysis.to_json()})
        }
        SpawnerEvent::RecoveryRespawned { session_id, attempt_number, new_session_id, resumed } => json!({
            "sessionId": &**session_id, "attemptNumber": attempt_number, "newSessionId": &**new_session_id, "resumed": resumed
        }),
        SpawnerEvent::RecoverySucceeded { session_id, attempt_number, new_session_id } => {
            json!({"sessionId": &**session_id, "attemptNumber": attempt_number, "newSessionId": &**new_session_id})
        }
        SpawnerEvent::RecoveryAttemptFailed { session_id, attempt_number, error } => {
            json!({"sessionId": &**session_id, "attemptNumber": attempt_number, "error": error})
        }
        SpawnerEvent::RecoveryFailed { session_id, reason } => json!({"sessionId": &**session_id, "reason": reason}),
        SpawnerEvent::RecoveryAbandoned { session_id } => json!({"sessionId": &**session_id}),
        SpawnerEvent::RecoveryDeferred { session_id, owner } => json!({"sessionId": &**session_id, "owner": owner}),
        SpawnerEvent::RecoveryThrottled { session_id, attempt_number, until } => {
            json!({"sessionId": &**session_id, "attemptNumber": attempt_number, "until": millis(*until)})
        }
        SpawnerEvent::RecoveryError { session_id, code, message } => {
            json!({"sessionId": &**session_id, "code": code, "message": message})
        }
        _ => return None,
    };
    Some(v.to_string())
}

fn recovery_error(env: &Env, e: RecoveryError) -> napi::Error {
    super::thrown_for_session(env, e.code(), e.to_string(), e.session_id())
}

#[napi]
pub struct NativeRecoveryManager {
    inner: RecoveryManager,
    spawner: Reference<NativeSpawner>,
    target: u32,
}

#[napi]
impl NativeRecoveryManager {
    /// Over `spawner`; `config_json` is checked (a wrong field is a TypeError naming it).
    #[napi(constructor, catch_unwind)]
    pub fn new(env: Env, spawner: Reference<NativeSpawner>, config_json: String) -> Result<Self> {
        let config = RecoveryConfig::from_json(&parse_json(&env, &config_json, "config")?).map_err(|e| config_error(&env, e))?;
        let pipe = Arc::clone(&spawner.pipe);
        let target = pipe.attach();
        let handler = Box::new(PipeHandler { pipe: Arc::clone(&pipe), target });
        let activity: Arc<dyn crate::notice::Activity> = pipe;
        let inner = RecoveryManager::with_activity(&spawner.inner, config, handler, Some(activity));
        Ok(Self { inner, spawner, target })
    }

    /// Where this manager's events arrive in the spawner's listener.
    #[napi(getter)]
    pub fn target(&self) -> u32 {
        self.target
    }

    /// The config with every field filled, as JSON.
    #[napi(getter)]
    pub fn config_json(&self) -> String {
        self.inner.config().to_json().to_string()
    }

    /// `report_json`: the daemon's crash report, when it gave one.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn handle_crash<'e>(&self, env: &'e Env, session_id: String, report_json: Option<String>) -> Result<Object<'e>> {
        let report = match report_json {
            Some(text) => Some(CrashReport::from_json(&session_id, &parse_json(env, &text, "crashReport")?)),
            None => None,
        };
        let manager = self.inner.clone();
        let work = async move { manager.handle_crash(&session_id, report).await };
        super::promise::spawn(env, "handleCrash", work, |env, outcome| outcome.map_err(|e| recovery_error(env, e)))
    }

    /// The recovery state as JSON, or null.
    #[napi(catch_unwind)]
    pub fn recovery_status(&self, session_id: String) -> Option<String> {
        self.inner.recovery_status(&session_id).map(|s| state_json(&s).to_string())
    }

    /// Recoveries pending or in progress, as a JSON array.
    #[napi(catch_unwind)]
    pub fn active_recoveries(&self) -> String {
        Value::Array(self.inner.active_recoveries().iter().map(state_json).collect()).to_string()
    }

    #[napi(catch_unwind)]
    pub fn recovery_stats(&self) -> String {
        let s = self.inner.recovery_stats();
        json!({
            "totalCrashes": s.total_crashes,
            "totalRecoveryAttempts": s.total_recovery_attempts,
            "successfulRecoveries": s.successful_recoveries,
            "failedRecoveries": s.failed_recoveries,
            "abandonedRecoveries": s.abandoned_recoveries,
            "recoveryRate": s.recovery_rate,
            "avgAttemptsPerRecovery": s.avg_attempts_per_recovery,
        })
        .to_string()
    }

    /// Begins the next attempt now; its `recovery-attempt` is delivered before this returns.
    #[napi(catch_unwind)]
    pub fn trigger_manual_recovery(&self, env: Env, session_id: String) -> Result<bool> {
        let pipe = Arc::clone(&self.spawner.pipe);
        pipe.sync(&env, || self.inner.trigger_manual_recovery(&session_id))?.map_err(|e| recovery_error(&env, e))
    }

    /// Its `recovery-abandoned` is delivered before this returns.
    #[napi(catch_unwind)]
    pub fn abandon_recovery(&self, env: Env, session_id: String) -> Result<()> {
        let pipe = Arc::clone(&self.spawner.pipe);
        pipe.sync(&env, || self.inner.abandon_recovery(&session_id))?.map_err(|e| recovery_error(&env, e))
    }
}
