//! The config a host runs a shared-queue request with when an earlier attempt ran
//! elsewhere (or here) and did not finish: the host it ran on died or lost its
//! lease, or gave the request back while draining. With Claude Code the new session
//! continues that conversation when its transcript can be read from here (same
//! machine, or a shared home), and starts afresh with the original task otherwise.

use crate::config::SessionConfig;
use crate::recovery::{claude_config_dir, transcript_exists, Respawn};

/// What a taken-over session is told when it continues the conversation.
pub fn takeover_message(previous_host: &str) -> String {
    format!(
        "This task was started on host {previous_host}, which stopped before it finished. Continue \
         the task from where the conversation left off; check the current state of the files before \
         redoing work."
    )
}

/// `conversation`: the Claude Code conversation of the earlier attempt, if it had one.
/// `env` looks up the environment the agent will inherit.
pub fn takeover_config(
    original: &SessionConfig,
    conversation: Option<&str>,
    previous_host: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Respawn {
    let mut config = original.clone();
    let Some(id) = conversation else {
        return Respawn { config, resumed: false, note: None };
    };
    let note = match claude_config_dir(original, env) {
        Some(dir) if transcript_exists(&dir, id) => {
            config.resume_session_id = Some(id.to_owned());
            config.prompt = Some(takeover_message(previous_host));
            return Respawn { config, resumed: true, note: Some(format!("resumed conversation {id} from host {previous_host}")) };
        }
        Some(dir) => format!(
            "no transcript of conversation {id} (host {previous_host}) under {}: fresh session with the original task",
            dir.join("projects").display()
        ),
        None => format!("cannot tell where conversation {id} is kept: fresh session with the original task"),
    };
    Respawn { config, resumed: false, note: Some(note) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(home: &std::path::Path) -> SessionConfig {
        let mut c = SessionConfig::default();
        c.environment_variables.insert("HOME".into(), home.to_string_lossy().into_owned());
        c
    }

    #[test]
    fn resumes_only_a_conversation_whose_transcript_is_here() {
        let home = tempfile::tempdir().unwrap();
        let project = home.path().join(".claude/projects/-srv");
        std::fs::create_dir_all(&project).unwrap();
        std::fs::write(project.join("11111111-2222-4333-8444-555555555555.jsonl"), "{}\n").unwrap();
        let original = config(home.path());
        let none = |_: &str| None;

        let r = takeover_config(&original, Some("11111111-2222-4333-8444-555555555555"), "h1", &none);
        assert!(r.resumed);
        assert_eq!(r.config.resume_session_id.as_deref(), Some("11111111-2222-4333-8444-555555555555"));
        assert!(r.config.prompt.as_deref().unwrap().contains("host h1"));

        let r = takeover_config(&original, Some("99999999-2222-4333-8444-555555555555"), "h1", &none);
        assert!(!r.resumed && r.config.resume_session_id.is_none());
        assert!(r.note.unwrap().contains("fresh session"));

        let r = takeover_config(&original, None, "h1", &none);
        assert!(!r.resumed && r.note.is_none() && r.config.prompt == original.prompt);
    }
}
