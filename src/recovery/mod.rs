//! Crash recovery: the [`RecoveryManager`] that watches a spawner and brings crashed
//! sessions back, and its building blocks: why a session crashed ([`analyze`]), the
//! crash dump on disk ([`write_dump`]), the settings ([`RecoveryConfig`]: which
//! endings, how many attempts, the backoff) and the config a new session gets
//! ([`respawn_config`]: the crashed session's own, resumed with Claude Code). The
//! Spawner keeps each ended session's config and crash facts
//! ([`Spawner::session_config`](crate::Spawner::session_config),
//! [`Spawner::crash_facts`](crate::Spawner::crash_facts)). The npm package's
//! `SessionRecoveryManager` is this manager behind an `EventEmitter`.

mod analysis;
mod book;
mod config;
mod dump;
mod manager;
mod respawn;
mod session;
mod state;

pub use analysis::{analyze, signal_from_exit_code, CrashAnalysis, CrashFacts, CrashType};
pub use config::{RecoveryConfig, Strategy};
pub use dump::{cli_version, dump_file_name, file_tail, write_dump, DUMP_TAIL_BYTES};
pub use book::{FINISHED_KEPT, HANDLED_KEPT, STORM_WINDOW};
pub use manager::RecoveryManager;
pub use respawn::{claude_config_dir, respawn_config, resume_message, transcript_exists, Respawn};
pub use state::{RecoveryAttempt, RecoveryError, RecoveryState, RecoveryStatistics, RecoveryStatus};
