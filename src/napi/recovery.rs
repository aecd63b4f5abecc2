#![cfg_attr(test, allow(dead_code))]
//! The recovery building blocks for JavaScript: crash facts and analysis, dumps, and
//! respawning a crashed session from its stored config. Analyses travel as JSON text
//! in the contract's `CrashAnalysis` shape (plus `evidence` and `signal`).

use napi::{Env, Result};
use napi_derive::napi;
use serde_json::{json, Value};

use super::convert::{JsCrashReport, JsSpawned};
use super::spawner::{environment, parse_json, NativeSpawner};
use super::{config_error, js_error, thrown};
use crate::config::SessionConfig;
use crate::recovery::{self, CrashAnalysis, CrashFacts, CrashType, RecoveryConfig};
use crate::status::SessionState;

/// Checks a recovery config; returns it with every field filled, as JSON.
#[napi(catch_unwind)]
pub fn recovery_config(env: Env, config_json: String) -> Result<String> {
    let value = parse_json(&env, &config_json, "config")?;
    let config = RecoveryConfig::from_json(&value).map_err(|e| config_error(&env, e))?;
    Ok(config.to_json().to_string())
}

fn analysis_json(a: &CrashAnalysis) -> Value {
    json!({
        "crashType": a.crash_type.as_str(),
        "rootCause": a.root_cause,
        "recommendation": a.recommendation,
        "confidence": a.confidence,
        "suggestedFixes": a.suggested_fixes,
        "evidence": a.evidence,
        "signal": a.signal,
    })
}

fn analysis_from_json(v: &Value) -> CrashAnalysis {
    let text = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
    let crash_type = [CrashType::Oom, CrashType::Timeout, CrashType::Segfault, CrashType::Network, CrashType::Permission]
        .into_iter()
        .find(|t| v["crashType"].as_str() == Some(t.as_str()))
        .unwrap_or(CrashType::Unknown);
    CrashAnalysis {
        crash_type,
        root_cause: text("rootCause"),
        recommendation: text("recommendation"),
        confidence: v["confidence"].as_f64().unwrap_or(0.5),
        suggested_fixes: Vec::new(),
        evidence: text("evidence"),
        signal: v["signal"].as_str().map(str::to_owned),
    }
}

#[napi(object, js_name = "NativeRespawned", object_from_js = false)]
pub struct JsRespawned {
    pub spawned: JsSpawned,
    /// The conversation was resumed with `--resume`.
    pub resumed: bool,
    pub note: Option<String>,
}

#[napi]
impl NativeSpawner {
    /// A crash report for any ended session, or `null`.
    #[napi(catch_unwind)]
    pub fn crash_report_for(&self, session_id: String) -> Option<JsCrashReport> {
        self.inner.crash_report_for(&session_id).map(Into::into)
    }

    /// Analyses a crash: from the session's facts when the spawner knows it, else
    /// from the report the caller gave (`report_json`).
    #[napi(catch_unwind)]
    pub fn analyze_crash(&self, env: Env, session_id: String, report_json: String) -> Result<String> {
        let facts = match self.inner.crash_facts(&session_id) {
            Some(facts) => facts,
            None => {
                let r = parse_json(&env, &report_json, "crashReport")?;
                let text = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
                CrashFacts {
                    state: r["state"].as_str().and_then(|s| s.parse::<SessionState>().ok()),
                    signal: r["signal"].as_str().map(str::to_owned),
                    exit_code: r["exitCode"].as_i64().and_then(|c| i32::try_from(c).ok()),
                    output: format!("{}\n{}", text("lastOutput"), text("stackTrace")),
                    ..CrashFacts::default()
                }
            }
        };
        Ok(analysis_json(&recovery::analyze(&facts)).to_string())
    }

    /// Writes the crash dump of a session into `directory` (relative: under the
    /// session's working directory); returns the file's path.
    #[napi(catch_unwind)]
    pub fn write_crash_dump(
        &self,
        env: Env,
        session_id: String,
        directory: String,
        report_json: String,
        analysis_json: String,
    ) -> Result<String> {
        let report = parse_json(&env, &report_json, "crashReport")?;
        let analysis = parse_json(&env, &analysis_json, "analysis")?;
        let config = self.inner.session_config(&session_id);
        let status = self.inner.session_status(&session_id);
        let session_dir = self.inner.session_directory(&session_id);
        let mut dir = std::path::PathBuf::from(&directory);
        if dir.is_relative() {
            if let Some(c) = &config {
                dir = c.working_directory.join(dir);
            }
        }
        let log = |name: &str| session_dir.as_ref().map(|d| recovery::file_tail(&d.join(name), recovery::DUMP_TAIL_BYTES));
        let dump = json!({
            "sessionId": session_id,
            "crashReport": report,
            "analysis": analysis,
            "config": config.as_ref().map(|c| c.to_json(true)),
            "exitStatus": status.as_ref().map(|s| json!({
                "state": s.state.as_str(),
                "exitCode": s.exit_code,
                "signal": s.signal,
                "executionTime": s.execution_time_ms,
            })),
            "claudeSessionId": status.as_ref().and_then(|s| s.claude_session_id.clone()),
            "cliVersion": session_dir.as_ref().and_then(|d| recovery::cli_version(&d.join("stdout.log"))),
            "sessionDirectory": session_dir.as_ref().map(|d| d.to_string_lossy().into_owned()),
            "stdoutTail": log("stdout.log").or_else(|| status.as_ref().map(|s| s.stdout.clone())),
            "stderrTail": log("stderr.log").or_else(|| status.as_ref().map(|s| s.stderr.clone())),
            "writtenAt": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        });
        let at = report["timestamp"]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
            .unwrap_or_else(std::time::SystemTime::now);
        recovery::write_dump(&dir, &session_id, at, &dump)
            .map(|p| p.to_string_lossy().into_owned())
            .map_err(|e| {
                let code = if e.kind() == std::io::ErrorKind::InvalidInput { "ERR_INVALID_ARG" } else { "ERR_CRASH_DUMP" };
                thrown(&env, code, format!("cannot write the crash dump of {session_id} in {}: {e}", dir.display()), &[])
            })
    }

    /// Starts the next session of a recovery: the config of `original_id` (the
    /// session that first crashed), adjusted for `analysis` and `attempt`, resuming
    /// `latest_id`'s Claude Code conversation when `resume` and its transcript exists.
    #[allow(clippy::too_many_arguments)]
    #[napi(catch_unwind)]
    pub fn respawn_session(
        &self,
        env: Env,
        original_id: String,
        latest_id: String,
        analysis_json: String,
        attempt: u32,
        timeout_growth: f64,
        resume: bool,
        env_json: Option<String>,
    ) -> Result<JsRespawned> {
        let unknown = |id: &str| {
            thrown(
                &env,
                "ERR_UNKNOWN_SESSION",
                format!("the config of session {id} is no longer kept (it left the spawner's history)"),
                &[("sessionId", id)],
            )
        };
        let original: std::sync::Arc<SessionConfig> =
            self.inner.session_config(&original_id).ok_or_else(|| unknown(&original_id))?;
        let analysis = analysis_from_json(&parse_json(&env, &analysis_json, "analysis")?);
        let base_env = match env_json {
            Some(text) => Some(environment(&parse_json(&env, &text, "process.env")?)),
            None => None,
        };
        let lookup = |name: &str| match &base_env {
            Some(vars) => vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
            None => std::env::var(name).ok(),
        };
        let conversation = match (resume, self.inner.session_status(&latest_id).and_then(|s| s.claude_session_id)) {
            (true, Some(id)) => Some((id, recovery::claude_config_dir(&original, &lookup))),
            _ => None,
        };
        let plan = recovery::respawn_config(
            &original,
            &analysis,
            timeout_growth,
            attempt,
            conversation.as_ref().map(|(id, dir)| (id.as_str(), dir.as_deref())),
        );
        let result = napi::bindgen_prelude::within_runtime_if_available(|| self.inner.spawn_session_now(plan.config, base_env))
            .map_err(|e| js_error(&env, e))?;
        Ok(JsRespawned { spawned: result.into(), resumed: plan.resumed, note: plan.note })
    }
}
