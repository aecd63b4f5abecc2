//! Errors of the spawner's API. Each has a stable code (`ERR_...`) that the Node
//! binding puts on the JavaScript error; config errors become `TypeError`s there.

use std::io;
use std::path::PathBuf;

use crate::config::ConfigError;
use crate::status::SessionState;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    #[error(transparent)]
    InvalidConfig(#[from] ConfigError),

    #[error("working directory {path:?} cannot be used: {source}")]
    WorkingDirectory {
        session_id: String,
        path: PathBuf,
        source: io::Error,
    },

    #[error("claudeConfigPath {path:?} cannot be read: {source}")]
    ClaudeConfig {
        session_id: String,
        path: PathBuf,
        source: io::Error,
    },

    #[error("session directory {path:?} cannot be written: {source}")]
    SessionDirectory {
        session_id: String,
        path: PathBuf,
        source: io::Error,
    },

    #[error("failed to start agent {path:?}: {source}")]
    Spawn {
        session_id: String,
        path: PathBuf,
        source: io::Error,
    },

    #[error("session {session_id} was stopped before its agent started")]
    Stopped { session_id: String },

    #[error("unknown session {0:?}")]
    UnknownSession(String),

    #[error("session {id} is not running (state: {state})")]
    NotRunning { id: String, state: SessionState },

    #[error("session {id}: the agent has already exited")]
    AgentExited { id: String },

    #[error("session {id}: the agent's stdin is closed")]
    StdinClosed { id: String },

    /// The agent has not read this much earlier input yet; the daemon keeps no more.
    #[error(
        "session {id}: {pending} bytes of earlier input are still waiting for the agent to read them \
         (at most {limit} may wait); send again once it has read them",
        limit = crate::session::INPUT_BACKLOG_LIMIT
    )]
    InputBacklog { id: String, pending: usize },

    #[error("a spawner needs a Tokio runtime: create it inside one, or pass a runtime handle")]
    NoRuntime,
}

impl SpawnError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidConfig(_) => "ERR_INVALID_CONFIG",
            Self::WorkingDirectory { .. } => "ERR_WORKING_DIRECTORY",
            Self::ClaudeConfig { .. } => "ERR_CLAUDE_CONFIG",
            Self::SessionDirectory { .. } => "ERR_SESSION_DIRECTORY",
            Self::Spawn { .. } => "ERR_SPAWN_FAILED",
            Self::Stopped { .. } => "ERR_SESSION_STOPPED",
            Self::UnknownSession(_) => "ERR_UNKNOWN_SESSION",
            Self::NotRunning { .. } => "ERR_SESSION_NOT_RUNNING",
            Self::AgentExited { .. } => "ERR_AGENT_EXITED",
            Self::StdinClosed { .. } => "ERR_STDIN_CLOSED",
            Self::InputBacklog { .. } => "ERR_INPUT_BACKLOG",
            Self::NoRuntime => "ERR_NO_RUNTIME",
        }
    }

    /// The session this error recorded as failed, for errors raised after an id was given.
    pub fn session_id(&self) -> Option<&str> {
        match self {
            Self::WorkingDirectory { session_id, .. }
            | Self::ClaudeConfig { session_id, .. }
            | Self::SessionDirectory { session_id, .. }
            | Self::Spawn { session_id, .. }
            | Self::Stopped { session_id } => Some(session_id),
            _ => None,
        }
    }
}
