#![cfg_attr(test, allow(dead_code))]
//! What the JavaScript `SessionPool` needs from the core to serve a shared queue: its
//! `config.queue` read and checked, a request's config checked on the host that makes
//! the request (so a bad one is refused there, not on whichever host takes it), and a
//! taken-over request's session started, resuming its conversation when it can.

use napi::{Env, Result};
use napi_derive::napi;

use super::spawner::{inherited, parse_json, pool_restarter, NativeSpawner};
use super::{config_error, js_error};
use crate::config::SessionConfig;
use crate::pool::{takeover_config, PoolConfig};

#[napi(object, js_name = "NativeSharedQueueConfig", object_from_js = false)]
pub struct JsSharedQueueConfig {
    pub url: String,
    pub name: String,
    pub host: Option<String>,
    pub lease_ms: f64,
    pub poll_interval_ms: f64,
    pub max_request_attempts: u32,
    pub respect_rate_limits: bool,
    pub connect_timeout_ms: Option<f64>,
    pub response_timeout_ms: Option<f64>,
}

/// `config.queue` of a pool config, checked (errors name the field), or null.
#[napi(catch_unwind)]
pub fn shared_queue_config(env: Env, config_json: String) -> Result<Option<JsSharedQueueConfig>> {
    let config = PoolConfig::from_json(&parse_json(&env, &config_json, "config")?).map_err(|e| config_error(&env, e))?;
    let attempts = config.max_request_attempts;
    let respect_rate_limits = config.respect_rate_limits;
    Ok(config.queue.map(|q| JsSharedQueueConfig {
        url: q.url,
        name: q.name,
        host: q.host,
        lease_ms: q.lease_ms as f64,
        poll_interval_ms: q.poll_interval_ms as f64,
        max_request_attempts: attempts,
        respect_rate_limits,
        connect_timeout_ms: q.connect_timeout_ms.map(|v| v as f64),
        response_timeout_ms: q.response_timeout_ms.map(|v| v as f64),
    }))
}

/// Throws the TypeError a spawn of this config would throw.
#[napi(catch_unwind)]
pub fn check_session_config(env: Env, config_json: String) -> Result<()> {
    SessionConfig::from_json(&parse_json(&env, &config_json, "config")?).map_err(|e| config_error(&env, e))?;
    Ok(())
}

/// A taken-over request's session: its id, and whether it continues the conversation.
#[napi(object, js_name = "NativeTakenOver", object_from_js = false)]
pub struct JsTakenOver {
    pub session_id: String,
    /// The conversation was resumed with `--resume`.
    pub resumed: bool,
    pub note: Option<String>,
}

#[napi]
impl NativeSpawner {
    /// Starts a session for a request an earlier attempt of which did not finish
    /// (on `previous_host`): with `conversation`, Claude Code continues it when its
    /// transcript is reachable from here. `pool`: the pool retries its crashes itself.
    #[napi(catch_unwind)]
    pub fn spawn_taken_over(
        &self,
        env: Env,
        config_json: String,
        conversation: Option<String>,
        previous_host: String,
        env_json: Option<String>,
        pool: Option<bool>,
    ) -> Result<JsTakenOver> {
        let config = SessionConfig::from_json(&parse_json(&env, &config_json, "config")?).map_err(|e| config_error(&env, e))?;
        let base_env = self.daemon_environment(&env, env_json)?;
        let lookup = |name: &str| inherited(&base_env, name);
        let plan = takeover_config(&config, conversation.as_deref(), &previous_host, &lookup);
        let result = self.pipe.sync(&env, || self.inner.spawn_claimed_now(plan.config, base_env, pool_restarter(pool)))?;
        let session_id = result.map_err(|e| js_error(&env, e))?.session_id;
        Ok(JsTakenOver { session_id, resumed: plan.resumed, note: plan.note })
    }
}
