//! Recovery over a spawner's own sessions: the dump of a crashed session (its stored
//! config, logs and exit status) and the plan for its next session (its stored
//! config, resumed where Claude Code kept the transcript).

use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::{json, Value};

use super::analysis::CrashAnalysis;
use super::dump::{cli_version, file_tail, write_dump, DUMP_TAIL_BYTES};
use super::respawn::{claude_config_dir, respawn_config, Respawn};
use crate::spawner::Spawner;

impl Spawner {
    /// Writes the crash dump of session `id` into `directory` (a relative one is
    /// under the session's working directory): `report` and `analysis` with the
    /// session's config (environment values redacted), exit status, conversation id,
    /// Claude Code version and the last 64 KiB of each log. Returns the file's path.
    pub fn write_crash_dump(&self, id: &str, directory: &Path, report: Value, analysis: &CrashAnalysis) -> io::Result<PathBuf> {
        let config = self.session_config(id);
        let status = self.session_status(id);
        let session_dir = self.session_directory(id);
        let dir = match &config {
            Some(c) if directory.is_relative() => c.working_directory.join(directory),
            _ => directory.to_owned(),
        };
        let log = |name: &str| session_dir.as_ref().map(|d| file_tail(&d.join(name), DUMP_TAIL_BYTES));
        let at = report["timestamp"]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
            .unwrap_or_else(SystemTime::now);
        let dump = json!({
            "sessionId": id,
            "crashReport": report,
            "analysis": analysis.to_json(),
            "config": config.as_ref().map(|c| c.to_json(true)),
            "exitStatus": status.as_ref().map(|s| json!({
                "state": s.state.as_str(),
                "exitCode": s.exit_code,
                "signal": s.signal,
                "executionTime": s.execution_time_ms,
            })),
            "claudeSessionId": status.as_ref().and_then(|s| s.claude_session_id.clone()),
            "cliVersion": session_dir.as_ref().and_then(|d| cli_version(&d.join("stdout.log"))),
            "sessionDirectory": session_dir.as_ref().map(|d| d.to_string_lossy().into_owned()),
            "stdoutTail": log("stdout.log"),
            "stderrTail": log("stderr.log"),
            "writtenAt": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        });
        write_dump(&dir, id, at, &dump).map_err(|e| io::Error::new(e.kind(), format!("in {}: {e}", dir.display())))
    }

    /// The config of the next session of a recovery: that of `original_id` (the
    /// session that first crashed), adjusted for `analysis` and `attempt`, resuming
    /// the Claude Code conversation of session `resume_from` when given and its
    /// transcript exists. `env` is the environment the agent inherits (for `CLAUDE_CONFIG_DIR`
    /// and `HOME`). `None` when `original_id`'s config is no longer kept.
    pub fn respawn_plan(
        &self,
        original_id: &str,
        resume_from: Option<&str>,
        analysis: &CrashAnalysis,
        attempt: u32,
        timeout_growth: f64,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<Respawn> {
        let original = self.session_config(original_id)?;
        let conversation = resume_from
            .and_then(|latest| self.session_status(latest))
            .and_then(|s| s.claude_session_id)
            .map(|id| (id, claude_config_dir(&original, env)));
        Some(respawn_config(
            &original,
            analysis,
            timeout_growth,
            attempt,
            conversation.as_ref().map(|(id, dir)| (id.as_str(), dir.as_deref())),
        ))
    }
}
