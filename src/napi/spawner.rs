//! `NativeSpawner`: the core [`Spawner`] as a JavaScript class. Arguments arrive as
//! JSON text (the JavaScript side encodes `RegExp` and `Date`), results leave as the
//! contract's objects.

use std::sync::Arc;

use std::cell::{Cell, RefCell};

use napi::bindgen_prelude::{Function, Unknown};
use napi::{Env, Result};
use napi_derive::napi;

use super::approvals::{JsApprovals, Pending};
use super::convert::{JsCrashReport, JsMetricsSummary, JsSessionStatus};
use super::pipe::{Args, Delivery, Payload, Pipe, PipeHandler};
use super::{config_error, js_error};
use crate::config::{ConfigError, SessionConfig};
use crate::options::SpawnerOptions;
use crate::spawner::{Spawner, WeakSpawner};

#[napi]
pub struct NativeSpawner {
    pub(super) inner: Spawner,
    /// Its events, and those of the pools and recovery managers over it, to JavaScript.
    pub(super) pipe: Arc<Pipe>,
    approvals: Arc<Pending>,
    /// Numbers `startSession` calls, so that `session-started` names the one it ends.
    next_start: Cell<u32>,
}

thread_local! {
    /// This Node environment's spawners, for `killSessionsOnExit`.
    static SPAWNERS: RefCell<Vec<WeakSpawner>> = const { RefCell::new(Vec::new()) };
}

/// Kills the live sessions of every spawner of this environment (JavaScript's
/// `process.on('exit')`: `process.exit()` skips Node-API cleanup hooks on the main
/// thread).
#[napi]
#[cfg_attr(test, allow(dead_code))]
pub fn kill_sessions_on_exit() {
    SPAWNERS.with(|s| {
        for spawner in s.borrow().iter().filter_map(WeakSpawner::upgrade) {
            spawner.kill_all();
        }
    });
}


pub(super) fn parse_json(env: &Env, text: &str, what: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text)
        .map_err(|e| config_error(env, ConfigError::new(what, format!("is not valid JSON: {e}"))))
}

/// `process.env` as pairs; values that are not strings (impossible from Node) are skipped.
pub(super) fn environment(value: &serde_json::Value) -> Vec<(String, String)> {
    value
        .as_object()
        .map(|vars| {
            vars.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .filter(|(k, v)| !k.is_empty() && !k.contains(['=', '\0']) && !v.contains('\0'))
                .collect()
        })
        .unwrap_or_default()
}

/// `process.env` from its JSON (sent when Node's differs from the process's own), or none.
pub(super) fn base_environment(env: &Env, env_json: Option<String>) -> Result<Option<Vec<(String, String)>>> {
    env_json.map(|text| parse_json(env, &text, "process.env").map(|v| environment(&v))).transpose()
}

#[napi]
impl NativeSpawner {
    /// `options_json`: the spawner options as JSON; `env_json`: the daemon's
    /// environment when it is not this process's. `on_event(target, name, payload)`
    /// gets every delivery of the pipe; `owner` (the JavaScript spawner) is kept alive
    /// while sessions run.
    #[napi(constructor, catch_unwind)]
    pub fn new(
        env: Env,
        options_json: String,
        env_json: Option<String>,
        on_event: Function<'_, Args, Unknown<'static>>,
        owner: Unknown<'_>,
    ) -> Result<Self> {
        let json = parse_json(&env, &options_json, "options")?;
        let mut options = SpawnerOptions::from_json(&json).map_err(|e| config_error(&env, e))?;
        let pipe = Arc::new(Pipe::new(&env, on_event, owner)?);
        let approvals = Arc::new(Pending::default());
        // JavaScript keeps the handler function and answers through `answerApproval`.
        if json["approvalHandler"] == serde_json::Value::Bool(true) {
            options.approval_handler = Some(Arc::new(JsApprovals { pipe: Arc::clone(&pipe), pending: Arc::clone(&approvals) }));
        }
        let handler = PipeHandler { pipe: Arc::clone(&pipe), target: 0 };
        let activity: Arc<dyn crate::notice::Activity> = Arc::clone(&pipe) as _;
        let inner = Spawner::with_activity(options, handler, super::runtime(&env)?, Some(activity));
        inner.set_base_env(base_environment(&env, env_json)?);
        // When this Node environment goes away (process.exit, a worker ending) with
        // sessions still running, their process groups go with it.
        let weak = inner.downgrade();
        env.add_env_cleanup_hook(weak.clone(), |weak| {
            if let Some(spawner) = weak.upgrade() {
                spawner.kill_all();
            }
        })?;
        SPAWNERS.with(|s| {
            let mut s = s.borrow_mut();
            s.retain(|w| w.upgrade().is_some());
            s.push(weak);
        });
        Ok(Self { inner, pipe, approvals, next_start: Cell::new(0) })
    }

    #[napi(getter)]
    pub fn claude_path(&self) -> String {
        self.inner.claude_path().to_string_lossy().into_owned()
    }

    /// Starts a session on the launcher thread (the session directory, CLAUDE.md and
    /// the agent's start all wait on the disk, which JavaScript's thread must not) and
    /// returns this call's number at once. `session-started` with that number follows,
    /// after the session's `session-spawned` (or, when it failed, `session-ended`).
    /// `env_json`: the daemon's environment (`process.env`) when it is not this
    /// process's own. A config error is thrown here, before anything starts.
    #[napi(catch_unwind)]
    pub fn start_session(&self, env: Env, config_json: String, env_json: Option<String>) -> Result<u32> {
        let config = SessionConfig::from_json(&parse_json(&env, &config_json, "config")?)
            .map_err(|e| config_error(&env, e))?;
        let base_env = self.daemon_environment(&env, env_json)?;
        let token = self.next_start.get().wrapping_add(1);
        self.next_start.set(token);
        let pipe = Arc::clone(&self.pipe);
        // Through `sync`: the session now registered holds Node alive from this call on,
        // not only from a recheck the event loop might exit before running.
        self.pipe.sync(&env, || {
            self.inner.start_session_then(config, base_env, move |outcome| {
                let outcome = outcome.map(|r| r.session_id);
                pipe.deliver(Delivery { target: 0, payload: Payload::Started { token, outcome } });
            })
        })?;
        Ok(token)
    }

    /// The daemon's environment from JavaScript, which also becomes the one sessions
    /// the core starts by itself (recoveries, shared-queue runs) inherit.
    pub(super) fn daemon_environment(&self, env: &Env, env_json: Option<String>) -> Result<Option<Vec<(String, String)>>> {
        let vars = base_environment(env, env_json)?;
        if vars.is_some() {
            self.inner.set_base_env(vars.clone());
        }
        Ok(vars)
    }

    #[napi(catch_unwind)]
    pub fn get_session_status(&self, session_id: String) -> Option<JsSessionStatus> {
        self.inner.session_status(&session_id).map(Into::into)
    }

    #[napi(catch_unwind)]
    pub fn get_active_sessions(&self) -> Vec<JsSessionStatus> {
        self.inner.active_sessions().into_iter().map(Into::into).collect()
    }

    /// Starts stopping a session; the JavaScript side waits for its `session-ended`.
    #[napi(catch_unwind)]
    pub fn request_stop(&self, env: Env, session_id: String, graceful: bool) -> Result<()> {
        self.inner.request_stop(&session_id, graceful).map(drop).map_err(|e| js_error(&env, e))
    }

    #[napi(catch_unwind)]
    pub fn send_input(&self, env: Env, session_id: String, input: String) -> Result<()> {
        self.inner.send_input(&session_id, &input).map_err(|e| js_error(&env, e))
    }

    #[napi(catch_unwind)]
    pub fn end_session(&self, env: Env, session_id: String) -> Result<()> {
        self.inner.end_session(&session_id).map_err(|e| js_error(&env, e))
    }

    #[napi(catch_unwind)]
    pub fn cleanup_completed_sessions(&self) -> u32 {
        self.inner.cleanup_completed_sessions() as u32
    }

    #[napi(catch_unwind)]
    pub fn get_crash_reports(&self) -> Vec<JsCrashReport> {
        self.inner.crash_reports().into_iter().map(Into::into).collect()
    }

    #[napi(catch_unwind)]
    pub fn get_metrics_summary(&self) -> JsMetricsSummary {
        self.inner.metrics_summary().into()
    }

    #[napi(catch_unwind)]
    pub fn session_directory(&self, session_id: String) -> Option<String> {
        self.inner.session_directory(&session_id).map(|p| p.to_string_lossy().into_owned())
    }

    /// JavaScript's answer to an `approval-request`.
    #[napi(catch_unwind)]
    pub fn answer_approval(&self, id: u32, approved: bool) {
        self.approvals.answer(id, approved);
    }

    /// Kills every live session's process group now.
    #[napi(catch_unwind)]
    pub fn kill_all(&self) {
        self.inner.kill_all()
    }
}
