//! Spawn, supervise and query Claude Code sessions (or any agent command line).
//!
//! A [`Spawner`] starts each session as its own process group with an argument vector
//! (no shell), writes the session's CLAUDE.md and complete output under
//! `<workingDirectory>/.vp-daemon/sessions/<sessionId>/`, keeps a bounded tail of each
//! stream in memory, and reports what happens through one [`SpawnerEvent`] type to an
//! [`EventHandler`]. Stopping a session stops its whole process group.
//!
//! ```no_run
//! use claude_session_spawner::{Protocol, SessionConfig, Spawner, SpawnerEvent, SpawnerOptions};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let options = SpawnerOptions::default().claude_path("/usr/local/bin/my-agent").protocol(Protocol::Text);
//! let spawner = Spawner::new(options, |event: SpawnerEvent| {
//!     if let SpawnerEvent::SessionOutput(chunk) = event {
//!         print!("{}", chunk.data);
//!     }
//! })?;
//! let mut config = SessionConfig::default();
//! config.working_directory = "/tmp".into();
//! config.task_context.description = "Say hello".into();
//! let session = spawner.spawn_session(config).await?;
//! let status = session.completion.await;
//! println!("{} ended {}", status.session_id, status.state);
//! # Ok(())
//! # }
//! ```
//!
//! Over a spawner, a [`pool::Pool`] runs requests at most so many at once (queued by
//! priority, in this process or in a queue shared with pools on other hosts) and a
//! [`recovery::RecoveryManager`] brings crashed sessions back; both are tasks on the
//! spawner's runtime that report through their own handlers.
//!
//! The Node package (`claude-session-spawner` on npm) is this crate built with the
//! `napi` feature, wrapped in `EventEmitter` classes that only convert and forward.

mod approval;
pub mod charter;
pub mod config;
mod error;
mod event;
mod launcher;
pub(crate) mod notice;
pub mod options;
pub mod output;
pub mod paths;
pub mod policy;
pub mod pool;
pub mod process;
pub mod protocol;
pub mod recovery;
pub mod registry;
mod session;
mod spawner;
pub mod status;
mod sweep;
mod table;

#[cfg(feature = "napi")]
mod napi;

pub use config::{
    Charter, ConfigError, Constraints, ConversationMessage, ForbiddenPattern, Identity, MemoryContext,
    PatternError, Priority, RecentAction, Resources, Role, SessionConfig, TaskContext,
};
pub use approval::{ApprovalHandler, ApprovalRequest};
pub use error::SpawnError;
pub use event::{EventHandler, OutputChunk, SpawnerEvent, Stream};
pub use options::{InheritEnv, SpawnerOptions};
pub use protocol::Protocol;
pub use session::Completion;
pub use spawner::{PendingSpawn, SpawnResult, Spawner, WeakSpawner, SESSION_ID_ENV};
pub use status::{
    CrashReport, MetricsSummary, PolicyViolation, SessionMetrics, SessionState, SessionStatus, TokenUsage,
};
