//! The config a recovery starts its new session with: the crashed session's own,
//! a longer timeout after a `timeout`, and with Claude Code the same conversation
//! resumed (`--resume`) with a short note of what happened, when its transcript is
//! there to resume.

use std::path::{Path, PathBuf};

use crate::config::SessionConfig;

use super::analysis::{CrashAnalysis, CrashType};

/// A new session's config, and what was decided about resuming.
#[derive(Debug, Clone)]
pub struct Respawn {
    pub config: SessionConfig,
    /// The conversation is resumed (`--resume`).
    pub resumed: bool,
    /// Why it was not, or what changed, for the attempt's record.
    pub note: Option<String>,
}

/// The first user message of a resumed conversation.
pub fn resume_message(analysis: &CrashAnalysis) -> String {
    format!(
        "This session was restarted after a crash ({}: {}). Continue the task from where the \
         conversation left off; check the current state of the files before redoing work.",
        analysis.crash_type, analysis.root_cause
    )
}

/// Where Claude Code keeps transcripts for an agent with this config:
/// `CLAUDE_CONFIG_DIR`, else `$HOME/.claude`, each looked up in the config's
/// variables first, then in `env` (the environment the agent inherits).
pub fn claude_config_dir(config: &SessionConfig, env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let var = |name: &str| config.environment_variables.get(name).cloned().or_else(|| env(name));
    var("CLAUDE_CONFIG_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| Path::new(&h).join(".claude")))
}

/// Whether a transcript of conversation `id` is under `config_dir/projects/`.
pub fn transcript_exists(config_dir: &Path, id: &str) -> bool {
    if id.contains('/') || id.contains("..") {
        return false;
    }
    let file = format!("{id}.jsonl");
    std::fs::read_dir(config_dir.join("projects"))
        .map(|dirs| dirs.flatten().any(|d| d.path().join(&file).is_file()))
        .unwrap_or(false)
}

/// The config for the next session of a recovery. `original` is the config of the
/// session that first crashed; `conversation` the Claude Code conversation to resume
/// (`None` for other agents, or to start afresh); `timeout_growth` multiplies the
/// timeout after a `timeout`.
pub fn respawn_config(
    original: &SessionConfig,
    analysis: &CrashAnalysis,
    timeout_growth: f64,
    attempt: u32,
    conversation: Option<(&str, Option<&Path>)>,
) -> Respawn {
    let mut config = original.clone();
    let mut notes = Vec::new();
    if analysis.crash_type == CrashType::Timeout {
        if let Some(ms) = original.effective_timeout_ms() {
            let factor = timeout_growth.powi(attempt.max(1) as i32);
            let grown = (ms as f64 * factor).round() as u64;
            config.timeout_ms = Some(grown);
            if config.charter.resources.max_execution_time_ms > 0 {
                config.charter.resources.max_execution_time_ms = grown;
            }
            notes.push(format!("timeout {ms} ms -> {grown} ms"));
        }
    }
    let mut resumed = false;
    if let Some((id, config_dir)) = conversation {
        match config_dir {
            Some(dir) if transcript_exists(dir, id) => {
                config.resume_session_id = Some(id.to_owned());
                config.prompt = Some(resume_message(analysis));
                resumed = true;
                notes.push(format!("resumed conversation {id}"));
            }
            Some(dir) => notes.push(format!(
                "no transcript of conversation {id} under {}: fresh session with the original task",
                dir.join("projects").display()
            )),
            None => notes.push(format!("cannot tell where conversation {id} is kept: fresh session with the original task")),
        }
    }
    Respawn { config, resumed, note: (!notes.is_empty()).then(|| notes.join("; ")) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recovery::analysis::{analyze, CrashFacts};
    use crate::status::SessionState;

    fn crash(state: SessionState, signal: Option<&str>) -> CrashAnalysis {
        analyze(&CrashFacts { state: Some(state), signal: signal.map(str::to_owned), ..CrashFacts::default() })
    }

    #[test]
    fn a_timeout_gets_more_time_each_attempt() {
        let mut c = SessionConfig { timeout_ms: Some(1000), ..SessionConfig::default() };
        c.charter.resources.max_execution_time_ms = 4000;
        let r = respawn_config(&c, &crash(SessionState::Timeout, None), 1.5, 1, None);
        assert_eq!((r.config.timeout_ms, r.config.charter.resources.max_execution_time_ms), (Some(1500), 1500));
        assert_eq!(respawn_config(&c, &crash(SessionState::Timeout, None), 1.5, 2, None).config.timeout_ms, Some(2250));
        let r = respawn_config(&c, &crash(SessionState::Crashed, Some("SIGSEGV")), 1.5, 1, None);
        assert_eq!(r.config.timeout_ms, Some(1000));
        assert!(r.note.is_none());
    }

    #[test]
    fn resumes_only_a_conversation_whose_transcript_exists() {
        let home = tempfile::tempdir().unwrap();
        let project = home.path().join("projects/-srv-repo");
        std::fs::create_dir_all(&project).unwrap();
        std::fs::write(project.join("u-1.jsonl"), "{}\n").unwrap();
        let c = SessionConfig::default();
        let a = crash(SessionState::Crashed, Some("SIGKILL"));
        let r = respawn_config(&c, &a, 1.5, 1, Some(("u-1", Some(home.path()))));
        assert!(r.resumed);
        assert_eq!(r.config.resume_session_id.as_deref(), Some("u-1"));
        assert!(r.config.prompt.as_deref().unwrap().starts_with("This session was restarted after a crash"));
        let r = respawn_config(&c, &a, 1.5, 1, Some(("u-2", Some(home.path()))));
        assert!(!r.resumed && r.config.resume_session_id.is_none() && r.config.prompt.is_none());
        assert!(r.note.unwrap().contains("fresh session with the original task"));
        assert!(!transcript_exists(home.path(), "../projects/-srv-repo/u-1"));
    }

    #[test]
    fn finds_the_config_dir_like_claude_code() {
        let mut c = SessionConfig::default();
        let env = |name: &str| (name == "HOME").then(|| "/home/ada".to_owned());
        assert_eq!(claude_config_dir(&c, &env), Some(PathBuf::from("/home/ada/.claude")));
        c.environment_variables.insert("CLAUDE_CONFIG_DIR".into(), "/tmp/cc".into());
        assert_eq!(claude_config_dir(&c, &env), Some(PathBuf::from("/tmp/cc")));
    }
}
