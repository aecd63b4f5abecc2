#![cfg_attr(test, allow(dead_code))]
//! The recovery building blocks for JavaScript: crash facts and analysis, dumps, and
//! respawning a crashed session from its stored config. Analyses travel as JSON text
//! in the contract's `CrashAnalysis` shape (plus `evidence` and `signal`).

use napi::{Env, Result};
use napi_derive::napi;
use std::path::Path;

use super::convert::{JsCrashReport, JsSpawned};
use super::spawner::{base_environment, inherited, parse_json, NativeSpawner};
use super::{config_error, js_error, thrown};
use crate::recovery::{self, CrashAnalysis, CrashFacts, RecoveryConfig};

/// Checks a recovery config; returns it with every field filled, as JSON.
#[napi(catch_unwind)]
pub fn recovery_config(env: Env, config_json: String) -> Result<String> {
    let value = parse_json(&env, &config_json, "config")?;
    let config = RecoveryConfig::from_json(&value).map_err(|e| config_error(&env, e))?;
    Ok(config.to_json().to_string())
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
            None => CrashFacts::from_report_json(&parse_json(&env, &report_json, "crashReport")?),
        };
        Ok(recovery::analyze(&facts).to_json().to_string())
    }

    /// Writes the crash dump of a session into `directory`; returns the file's path.
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
        let analysis = CrashAnalysis::from_json(&parse_json(&env, &analysis_json, "analysis")?);
        self.inner
            .write_crash_dump(&session_id, Path::new(&directory), report, &analysis)
            .map(|p| p.to_string_lossy().into_owned())
            .map_err(|e| {
                let code = if e.kind() == std::io::ErrorKind::InvalidInput { "ERR_INVALID_ARG" } else { "ERR_CRASH_DUMP" };
                thrown(&env, code, format!("cannot write the crash dump of {session_id} {e}"), &[])
            })
    }

    /// Starts the next session of a recovery (see `Spawner::respawn_plan`).
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
        let analysis = CrashAnalysis::from_json(&parse_json(&env, &analysis_json, "analysis")?);
        let base_env = base_environment(&env, env_json)?;
        let lookup = |name: &str| inherited(&base_env, name);
        let plan = self
            .inner
            .respawn_plan(&original_id, resume.then_some(latest_id.as_str()), &analysis, attempt, timeout_growth, &lookup)
            .ok_or_else(|| {
                thrown(
                    &env,
                    "ERR_UNKNOWN_SESSION",
                    format!("the config of session {original_id} is no longer kept (it left the spawner's history)"),
                    &[("sessionId", &original_id)],
                )
            })?;
        let result = self.inner.spawn_session_now(plan.config, base_env).map_err(|e| js_error(&env, e))?;
        Ok(JsRespawned { spawned: result.into(), resumed: plan.resumed, note: plan.note })
    }
}
