//! The recovery manager's settings, in the contract's JSON shape plus the added
//! fields; errors name the field.

use std::path::PathBuf;

use serde_json::Value;

use crate::config::{ConfigError, Fields};
use crate::status::SessionState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Respawn at once, every attempt.
    Immediate,
    /// Wait `retry_delay × backoff_multiplier^(n-1)` before attempt n.
    Delayed,
    /// Nothing happens until `trigger_manual_recovery`.
    Manual,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Immediate => "immediate",
            Self::Delayed => "delayed",
            Self::Manual => "manual",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RecoveryConfig {
    pub enabled: bool,
    /// Attempts per recovery (0: crashes are recorded, nothing is respawned).
    pub max_retries: u32,
    pub retry_delay_ms: u64,
    pub backoff_multiplier: f64,
    pub save_crash_dumps: bool,
    /// Where dumps go; relative paths are under the crashed session's working
    /// directory. Default `.vp-daemon/crash-dumps`.
    pub crash_dump_directory: PathBuf,
    pub strategy: Strategy,
    /// Which endings are recovered (default `crashed` and `timeout`).
    pub recover_on: Vec<SessionState>,
    /// A `timeout` crash's next session gets the timeout multiplied by this.
    pub timeout_growth: f64,
    /// Recoveries started per minute over all sessions; beyond, they wait.
    pub max_recoveries_per_minute: u32,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_retries: 3,
            retry_delay_ms: 1000,
            backoff_multiplier: 2.0,
            save_crash_dumps: true,
            crash_dump_directory: PathBuf::from(".vp-daemon/crash-dumps"),
            strategy: Strategy::Delayed,
            recover_on: vec![SessionState::Crashed, SessionState::Timeout],
            timeout_growth: 1.5,
            max_recoveries_per_minute: 10,
        }
    }
}

impl RecoveryConfig {
    /// Reads the contract's `RecoveryConfig` (every field optional here, with the
    /// defaults above) plus `recoverOn`, `timeoutGrowth` and `maxRecoveriesPerMinute`.
    pub fn from_json(value: &Value) -> Result<Self, ConfigError> {
        let c = Fields::of(value, "config")?;
        let d = Self::default();
        let number = |key: &str, min: f64, what: &str| -> Result<Option<f64>, ConfigError> {
            match c.get(key) {
                None => Ok(None),
                Some(v) => match v.as_f64() {
                    Some(n) if n.is_finite() && n >= min => Ok(Some(n)),
                    _ => Err(ConfigError::new(c.path_of(key), what)),
                },
            }
        };
        let max_retries = match c.get("maxRetries") {
            None => d.max_retries,
            Some(_) => u32::try_from(c.opt_count("maxRetries")?.unwrap_or(0))
                .map_err(|_| ConfigError::new("config.maxRetries", "is too large"))?,
        };
        let retry_delay_ms = match number("retryDelay", 0.0, "must be a non-negative number of milliseconds")? {
            Some(ms) => ms.round() as u64,
            None => d.retry_delay_ms,
        };
        let strategy = match c.opt_string("strategy")?.as_deref() {
            None => d.strategy,
            Some("immediate") => Strategy::Immediate,
            Some("delayed") => Strategy::Delayed,
            Some("manual") => Strategy::Manual,
            Some(_) => return Err(ConfigError::new("config.strategy", "must be 'immediate', 'delayed' or 'manual'")),
        };
        let recover_on = match c.opt_strings("recoverOn")? {
            None => d.recover_on,
            Some(states) => {
                let mut out = Vec::new();
                for s in states {
                    match s.parse::<SessionState>() {
                        Ok(st @ (SessionState::Crashed | SessionState::Timeout | SessionState::Failed)) => {
                            if !out.contains(&st) {
                                out.push(st)
                            }
                        }
                        _ => {
                            return Err(ConfigError::new(
                                "config.recoverOn",
                                format!("may hold 'crashed', 'timeout' and 'failed', not {s:?} (a terminated session is never recovered)"),
                            ))
                        }
                    }
                }
                out
            }
        };
        let max_per_minute = c.opt_count("maxRecoveriesPerMinute")?.unwrap_or(u64::from(d.max_recoveries_per_minute));
        if max_per_minute == 0 {
            return Err(ConfigError::new("config.maxRecoveriesPerMinute", "must be a positive integer"));
        }
        Ok(Self {
            enabled: c.opt_bool("enabled")?.unwrap_or(d.enabled),
            max_retries,
            retry_delay_ms,
            backoff_multiplier: number("backoffMultiplier", 1.0, "must be a number of at least 1")?.unwrap_or(d.backoff_multiplier),
            save_crash_dumps: c.opt_bool("saveCrashDumps")?.unwrap_or(d.save_crash_dumps),
            crash_dump_directory: match c.opt_string("crashDumpDirectory")? {
                Some(dir) if dir.is_empty() => return Err(ConfigError::new("config.crashDumpDirectory", "must not be empty")),
                Some(dir) => PathBuf::from(dir),
                None => d.crash_dump_directory,
            },
            strategy,
            recover_on,
            timeout_growth: number("timeoutGrowth", 1.0, "must be a number of at least 1")?.unwrap_or(d.timeout_growth),
            max_recoveries_per_minute: u32::try_from(max_per_minute).unwrap_or(u32::MAX),
        })
    }

    /// The wait before attempt `n` (1-based): as the contract has it, none before the
    /// first, `retry_delay × backoff^(n-1)` before each later one with `delayed`,
    /// none with the other strategies.
    pub fn delay_before(&self, attempt: u32) -> std::time::Duration {
        if self.strategy != Strategy::Delayed || attempt <= 1 {
            return std::time::Duration::ZERO;
        }
        let factor = self.backoff_multiplier.powi(attempt.saturating_sub(1) as i32);
        let ms = (self.retry_delay_ms as f64 * factor).min(24.0 * 3600.0 * 1000.0);
        std::time::Duration::from_millis(ms.round() as u64)
    }

    /// The config as JSON, every field filled (what the JavaScript class reads).
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "enabled": self.enabled,
            "maxRetries": self.max_retries,
            "retryDelay": self.retry_delay_ms,
            "backoffMultiplier": self.backoff_multiplier,
            "saveCrashDumps": self.save_crash_dumps,
            "crashDumpDirectory": self.crash_dump_directory.to_string_lossy(),
            "strategy": self.strategy.as_str(),
            "recoverOn": self.recover_on.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            "timeoutGrowth": self.timeout_growth,
            "maxRecoveriesPerMinute": self.max_recoveries_per_minute,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_contract_fields() {
        let c = RecoveryConfig::from_json(&json!({
            "enabled": true, "maxRetries": 2, "retryDelay": 100, "backoffMultiplier": 3,
            "saveCrashDumps": false, "strategy": "immediate"
        }))
        .unwrap();
        assert_eq!((c.max_retries, c.retry_delay_ms, c.strategy), (2, 100, Strategy::Immediate));
        assert_eq!(c.recover_on, vec![SessionState::Crashed, SessionState::Timeout]);
        assert_eq!((c.timeout_growth, c.max_recoveries_per_minute), (1.5, 10));
        assert_eq!(RecoveryConfig::from_json(&json!({})).unwrap(), RecoveryConfig::default());
    }

    #[test]
    fn backoff_grows_from_the_second_attempt() {
        let c = RecoveryConfig { retry_delay_ms: 100, backoff_multiplier: 2.0, ..RecoveryConfig::default() };
        let ms: Vec<u128> = (1..=4).map(|n| c.delay_before(n).as_millis()).collect();
        assert_eq!(ms, [0, 200, 400, 800]);
        let now = RecoveryConfig { strategy: Strategy::Immediate, ..c };
        assert_eq!(now.delay_before(3).as_millis(), 0);
    }

    #[test]
    fn names_the_wrong_field() {
        let err = |v: Value| RecoveryConfig::from_json(&v).unwrap_err();
        assert_eq!(err(json!({"maxRetries": -1})).field, "config.maxRetries");
        assert_eq!(err(json!({"retryDelay": -5})).field, "config.retryDelay");
        assert_eq!(err(json!({"backoffMultiplier": 0.5})).field, "config.backoffMultiplier");
        assert_eq!(err(json!({"strategy": "soon"})).field, "config.strategy");
        assert!(err(json!({"recoverOn": ["terminated"]})).message.contains("never recovered"));
        assert_eq!(err(json!({"maxRecoveriesPerMinute": 0})).field, "config.maxRecoveriesPerMinute");
        assert_eq!(err(json!([])).field, "config");
    }
}
