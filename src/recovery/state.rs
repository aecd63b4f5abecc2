//! What a recovery manager reports: the contract's `RecoveryState`, `RecoveryAttempt`
//! and `RecoveryStatistics`, and its errors.

use std::time::SystemTime;

use super::analysis::CrashAnalysis;
use super::config::Strategy;
use crate::status::CrashReport;

/// Where a recovery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryStatus {
    /// Waiting for its next attempt (a backoff, the storm limit, or a manual trigger).
    Pending,
    /// An attempt's session is being started or runs.
    InProgress,
    Succeeded,
    Failed,
    Abandoned,
}

impl RecoveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::InProgress => "in_progress",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Abandoned => "abandoned",
        }
    }

    pub fn is_active(self) -> bool {
        matches!(self, Self::Pending | Self::InProgress)
    }
}

/// One attempt: a new session started from the crashed one's config.
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveryAttempt {
    /// The session that first crashed (the recovery's id).
    pub session_id: String,
    /// From 1.
    pub attempt_number: u32,
    pub timestamp: SystemTime,
    pub strategy: Strategy,
    pub success: bool,
    pub error: Option<String>,
    pub new_session_id: Option<String>,
    /// The new session resumed the crashed conversation (`--resume`).
    pub resumed: Option<bool>,
    /// What changed for this attempt (a longer timeout, a resume that fell back).
    pub note: Option<String>,
}

/// One recovery, from the first crash to its end.
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveryState {
    pub session_id: String,
    pub crash_report: CrashReport,
    pub attempts: Vec<RecoveryAttempt>,
    pub status: RecoveryStatus,
    pub started_at: SystemTime,
    pub completed_at: Option<SystemTime>,
    /// The analysis of the latest crash.
    pub analysis: CrashAnalysis,
}

/// Over current and finished recoveries.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RecoveryStatistics {
    pub total_crashes: u64,
    pub total_recovery_attempts: u64,
    pub successful_recoveries: u64,
    pub failed_recoveries: u64,
    pub abandoned_recoveries: u64,
    /// 0 to 1: succeeded over recoveries started.
    pub recovery_rate: f64,
    pub avg_attempts_per_recovery: f64,
}

/// Why a recovery manager refused a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecoveryError {
    #[error("no ended session {0} is known to the spawner")]
    UnknownSession(String),
    #[error("no recovery of session {0}")]
    UnknownRecovery(String),
    #[error("the recovery of session {0} is already in progress")]
    InProgress(String),
    #[error("the recovery manager is gone")]
    Gone,
}

impl RecoveryError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownSession(_) => "ERR_UNKNOWN_SESSION",
            Self::UnknownRecovery(_) => "ERR_UNKNOWN_RECOVERY",
            Self::InProgress(_) => "ERR_RECOVERY_IN_PROGRESS",
            Self::Gone => "ERR_RECOVERY_GONE",
        }
    }

    /// The session the error is about.
    pub fn session_id(&self) -> Option<&str> {
        match self {
            Self::UnknownSession(id) | Self::UnknownRecovery(id) | Self::InProgress(id) => Some(id),
            Self::Gone => None,
        }
    }
}
