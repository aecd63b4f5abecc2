//! A pool's settings, in the contract's JSON shape or built directly.

use serde_json::Value;

use crate::config::{ConfigError, Fields, Priority};

/// Admission weight of each priority: higher first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PriorityWeights {
    pub critical: f64,
    pub high: f64,
    pub medium: f64,
    pub low: f64,
}

impl Default for PriorityWeights {
    fn default() -> Self {
        Self { critical: 4.0, high: 3.0, medium: 2.0, low: 1.0 }
    }
}

impl PriorityWeights {
    pub fn of(&self, priority: Priority) -> f64 {
        match priority {
            Priority::Critical => self.critical,
            Priority::High => self.high,
            Priority::Medium => self.medium,
            Priority::Low => self.low,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// Sessions at once, counting those being spawned.
    pub max_concurrent_sessions: usize,
    /// Reserved: accepted, not acted on (sessions are one task each, so an idle one
    /// cannot be handed a new task).
    pub min_idle_sessions: usize,
    /// Milliseconds, for requests whose config has no timeout (0: none).
    pub default_session_timeout_ms: u64,
    pub max_queue_size: usize,
    /// Queue a request again when its session ends `timeout` or `crashed`.
    pub auto_recovery: bool,
    pub priority_weights: PriorityWeights,
    /// Sessions a request may get in all, first included (default 3).
    pub max_request_attempts: u32,
    /// Pause admission while Claude Code reports rate limits (default true).
    pub respect_rate_limits: bool,
    /// A queue shared with pools on other hosts; `None`: this pool's own queue.
    pub queue: Option<SharedQueueConfig>,
}

/// Where a pool's shared queue lives and how this host takes part (`config.queue`).
#[derive(Debug, Clone, PartialEq)]
pub struct SharedQueueConfig {
    /// A `redis://` or `rediss://` URL.
    pub url: String,
    /// The queue's name: pools with the same URL and name share it.
    pub name: String,
    /// This host's name in the queue; unique per pool (default: hostname, pid and a
    /// random suffix, chosen by the caller).
    pub host: Option<String>,
    /// How long a taken request stays this host's without a renewal (default 30 s).
    pub lease_ms: u64,
    /// How often an idle host looks for work and lapsed leases (default 1 s).
    pub poll_interval_ms: u64,
    pub connect_timeout_ms: Option<u64>,
    pub response_timeout_ms: Option<u64>,
}

/// Shortest lease accepted: a renewal every third of it must be able to get through.
pub const MIN_LEASE_MS: u64 = 300;

/// A shared queue's lease when the config gives none (`leaseMs`).
pub(crate) const DEFAULT_LEASE_MS: u64 = 30_000;
/// How often a host polls the shared queue when the config does not say (`pollIntervalMs`).
pub(crate) const DEFAULT_POLL_INTERVAL_MS: u64 = 1000;

impl SharedQueueConfig {
    fn from_fields(q: &Fields<'_>) -> Result<Self, ConfigError> {
        match q.string("kind")?.as_str() {
            "redis" => {}
            _ => return Err(ConfigError::new(q.path_of("kind"), "must be 'redis'")),
        }
        let url = q.string("url")?;
        if !(url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("redis+unix://") || url.starts_with("unix://")) {
            return Err(ConfigError::new(q.path_of("url"), "must be a redis:// or rediss:// URL"));
        }
        let name = q.string("name")?;
        if name.is_empty() {
            return Err(ConfigError::new(q.path_of("name"), "must be a non-empty string"));
        }
        let host = q.opt_string("host")?;
        if host.as_deref() == Some("") {
            return Err(ConfigError::new(q.path_of("host"), "must be a non-empty string"));
        }
        let lease_ms = q.opt_count("leaseMs")?.unwrap_or(DEFAULT_LEASE_MS);
        if lease_ms < MIN_LEASE_MS {
            return Err(ConfigError::new(q.path_of("leaseMs"), format!("must be at least {MIN_LEASE_MS} ms")));
        }
        let positive = |key: &str| -> Result<Option<u64>, ConfigError> {
            match q.opt_count(key)? {
                Some(0) => Err(ConfigError::new(q.path_of(key), "must be a positive integer")),
                other => Ok(other),
            }
        };
        Ok(Self {
            url,
            name,
            host,
            lease_ms,
            poll_interval_ms: positive("pollIntervalMs")?.unwrap_or(DEFAULT_POLL_INTERVAL_MS),
            connect_timeout_ms: positive("connectTimeoutMs")?,
            response_timeout_ms: positive("responseTimeoutMs")?,
        })
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_concurrent_sessions: 4,
            min_idle_sessions: 0,
            default_session_timeout_ms: 0,
            max_queue_size: 1000,
            auto_recovery: true,
            priority_weights: PriorityWeights::default(),
            max_request_attempts: 3,
            respect_rate_limits: true,
            queue: None,
        }
    }
}

impl PoolConfig {
    /// Reads the contract's `SessionPoolConfig` (plus `maxRequestAttempts` and
    /// `respectRateLimits`); errors name the field from `config`.
    pub fn from_json(value: &Value) -> Result<Self, ConfigError> {
        let c = Fields::of(value, "config")?;
        let capacity = c.count("maxConcurrentSessions")?;
        if capacity == 0 {
            return Err(ConfigError::new("config.maxConcurrentSessions", "must be a positive integer"));
        }
        let attempts = c.opt_count("maxRequestAttempts")?.unwrap_or(3);
        if attempts == 0 {
            return Err(ConfigError::new("config.maxRequestAttempts", "must be a positive integer"));
        }
        let weights = match c.get("priorityWeights") {
            None => PriorityWeights::default(),
            Some(_) => {
                let w = c.object("priorityWeights")?;
                let weight = |key: &str| -> Result<f64, ConfigError> {
                    match w.get(key).and_then(Value::as_f64) {
                        Some(v) if v.is_finite() => Ok(v),
                        _ => Err(ConfigError::new(w.path_of(key), "must be a number")),
                    }
                };
                PriorityWeights {
                    critical: weight("critical")?,
                    high: weight("high")?,
                    medium: weight("medium")?,
                    low: weight("low")?,
                }
            }
        };
        Ok(Self {
            max_concurrent_sessions: usize::try_from(capacity).unwrap_or(usize::MAX),
            min_idle_sessions: usize::try_from(c.opt_count("minIdleSessions")?.unwrap_or(0)).unwrap_or(usize::MAX),
            default_session_timeout_ms: c.count("defaultSessionTimeout")?,
            max_queue_size: usize::try_from(c.count("maxQueueSize")?).unwrap_or(usize::MAX),
            auto_recovery: c.opt_bool("autoRecovery")?.unwrap_or(true),
            priority_weights: weights,
            max_request_attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            respect_rate_limits: c.opt_bool("respectRateLimits")?.unwrap_or(true),
            queue: match c.get("queue") {
                None | Some(Value::Null) => None,
                Some(_) => Some(SharedQueueConfig::from_fields(&c.object("queue")?)?),
            },
        })
    }
}


/// The timeout a request's session gets from its pool's `default_session_timeout_ms`
/// when its config sets none (`None`: the config's own stands).
pub(crate) fn default_timeout_for(timeout_ms: Option<u64>, default_ms: u64) -> Option<u64> {
    (timeout_ms.unwrap_or(0) == 0 && default_ms > 0).then_some(default_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_contract_shape() {
        let c = PoolConfig::from_json(&json!({
            "maxConcurrentSessions": 3, "defaultSessionTimeout": 60000, "maxQueueSize": 10,
            "priorityWeights": {"critical": 10, "high": 5, "medium": 5, "low": 0.5}
        }))
        .unwrap();
        assert_eq!(c.max_concurrent_sessions, 3);
        assert!(c.auto_recovery && c.respect_rate_limits);
        assert_eq!(c.max_request_attempts, 3);
        assert_eq!(c.priority_weights.of(Priority::Low), 0.5);
    }

    #[test]
    fn names_the_wrong_field() {
        let base = json!({"maxConcurrentSessions": 1, "defaultSessionTimeout": 0, "maxQueueSize": 1});
        let with = |key: &str, v: Value| {
            let mut c = base.clone();
            c[key] = v;
            PoolConfig::from_json(&c).unwrap_err()
        };
        assert_eq!(with("maxConcurrentSessions", json!(0)).message, "config.maxConcurrentSessions must be a positive integer");
        assert_eq!(with("maxConcurrentSessions", json!(-2)).field, "config.maxConcurrentSessions");
        assert_eq!(with("maxQueueSize", json!("10")).field, "config.maxQueueSize");
        assert_eq!(with("priorityWeights", json!({"critical": 1, "high": 1, "medium": 1})).field, "config.priorityWeights.low");
        assert_eq!(with("autoRecovery", json!("yes")).field, "config.autoRecovery");
        assert_eq!(with("maxRequestAttempts", json!(0)).field, "config.maxRequestAttempts");
        assert_eq!(PoolConfig::from_json(&json!({"maxQueueSize": 1})).unwrap_err().field, "config.maxConcurrentSessions");
    }

    #[test]
    fn reads_a_shared_queue_and_names_its_wrong_fields() {
        let base = json!({"maxConcurrentSessions": 1, "defaultSessionTimeout": 0, "maxQueueSize": 1});
        let with = |queue: Value| {
            let mut c = base.clone();
            c["queue"] = queue;
            PoolConfig::from_json(&c)
        };
        assert_eq!(PoolConfig::from_json(&base).unwrap().queue, None);
        let q = with(json!({"kind": "redis", "url": "redis://127.0.0.1:6379/", "name": "vp"})).unwrap().queue.unwrap();
        assert_eq!((q.name.as_str(), q.lease_ms, q.poll_interval_ms, q.host), ("vp", 30_000, 1000, None));
        let field = |queue: Value| with(queue).unwrap_err().field;
        assert_eq!(field(json!("redis://x")), "config.queue");
        assert_eq!(field(json!({"kind": "memcached", "url": "redis://x", "name": "vp"})), "config.queue.kind");
        assert_eq!(field(json!({"kind": "redis", "url": "http://x", "name": "vp"})), "config.queue.url");
        assert_eq!(field(json!({"kind": "redis", "url": "redis://x"})), "config.queue.name");
        assert_eq!(field(json!({"kind": "redis", "url": "redis://x", "name": ""})), "config.queue.name");
        assert_eq!(field(json!({"kind": "redis", "url": "redis://x", "name": "vp", "host": ""})), "config.queue.host");
        assert_eq!(field(json!({"kind": "redis", "url": "redis://x", "name": "vp", "leaseMs": 10})), "config.queue.leaseMs");
        assert_eq!(field(json!({"kind": "redis", "url": "redis://x", "name": "vp", "pollIntervalMs": 0})), "config.queue.pollIntervalMs");
    }
}
