//! `NativeSpawner`: the core [`Spawner`] as a JavaScript class. Arguments arrive as
//! JSON text (the JavaScript side encodes `RegExp` and `Date`), results leave as the
//! contract's objects.

use std::sync::Arc;

use napi::bindgen_prelude::{Function, FunctionRef, Unknown};
use napi::{Env, Result};
use napi_derive::napi;

use super::convert::{JsCrashReport, JsMetricsSummary, JsSessionStatus, JsSpawned};
use super::approvals::{JsApprovals, Pending};
use super::events::{self, JsEvents, Slot};
use super::{config_error, js_error, native_error};
use crate::config::{ConfigError, SessionConfig};
use crate::options::SpawnerOptions;
use crate::spawner::Spawner;

#[napi]
pub struct NativeSpawner {
    pub(super) inner: Spawner,
    /// The JavaScript event listener, from which the queue is made when needed.
    listener: FunctionRef<(), Unknown<'static>>,
    events: Slot,
    approvals: Arc<Pending>,
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

/// A variable of the environment an agent inherits: `base`, else this process's.
pub(super) fn inherited(base: &Option<Vec<(String, String)>>, name: &str) -> Option<String> {
    match base {
        Some(vars) => vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
        None => std::env::var(name).ok(),
    }
}

#[napi]
impl NativeSpawner {
    /// `options_json`: the spawner options as JSON. `on_event(name, payload)` gets every
    /// event but `session-spawned`.
    #[napi(constructor, catch_unwind)]
    pub fn new(env: Env, options_json: String, on_event: Function<'_, (), Unknown<'static>>) -> Result<Self> {
        let json = parse_json(&env, &options_json, "options")?;
        let mut options = SpawnerOptions::from_json(&json).map_err(|e| config_error(&env, e))?;
        let listener = on_event.create_ref()?;
        let events = Slot::default();
        let approvals = Arc::new(Pending::default());
        // JavaScript keeps the handler function and answers through `answerApproval`.
        if json["approvalHandler"] == serde_json::Value::Bool(true) {
            options.approval_handler = Some(Arc::new(JsApprovals {
                slot: Arc::clone(&events),
                pending: Arc::clone(&approvals),
            }));
        }
        let handler = JsEvents { slot: Arc::clone(&events) };
        let inner = Spawner::with_runtime(options, handler, super::runtime(&env)?);
        // When this Node environment goes away (process.exit, a worker ending) with
        // sessions still running, their process groups go with it.
        let weak = inner.downgrade();
        env.add_env_cleanup_hook(weak, |weak| {
            if let Some(spawner) = weak.upgrade() {
                spawner.kill_all();
            }
        })?;
        Ok(Self { inner, listener, events, approvals })
    }

    #[napi(getter)]
    pub fn claude_path(&self) -> String {
        self.inner.claude_path().to_string_lossy().into_owned()
    }

    /// Starts a session on this (JavaScript's) thread, as `child_process.spawn` does,
    /// and returns once its agent runs. `env_json`: the daemon's environment
    /// (`process.env`) when it is not this process's own.
    #[napi(catch_unwind)]
    pub fn spawn_session(&self, env: Env, config_json: String, env_json: Option<String>) -> Result<JsSpawned> {
        let config = SessionConfig::from_json(&parse_json(&env, &config_json, "config")?)
            .map_err(|e| config_error(&env, e))?;
        let base_env = match env_json {
            Some(text) => Some(environment(&parse_json(&env, &text, "process.env")?)),
            None => None,
        };
        let result = self.inner.spawn_session_now(config, base_env).map_err(|e| js_error(&env, e))?;
        Ok(result.into())
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

    /// Opens the event queue if needed and makes it keep Node's event loop alive
    /// (before spawning); with `false`, lets the loop exit (the last session ended).
    #[napi]
    pub fn hold_event_loop(&self, env: Env, hold: bool) -> Result<()> {
        let mut slot = self.events.lock();
        if hold && slot.is_none() {
            *slot = Some(Arc::new(events::build(self.listener.borrow_back(&env)?)?));
        }
        let Some(tsfn) = slot.as_ref() else { return Ok(()) };
        // SAFETY: on the JavaScript thread, with this environment and a live queue.
        let status = unsafe {
            if hold {
                napi::sys::napi_ref_threadsafe_function(env.raw(), tsfn.raw())
            } else {
                napi::sys::napi_unref_threadsafe_function(env.raw(), tsfn.raw())
            }
        };
        if status != napi::sys::Status::napi_ok {
            return Err(native_error(&env, format!("ref/unref of the event queue failed ({status})")));
        }
        Ok(())
    }

    /// Releases the event queue of an idle spawner, which then holds nothing.
    #[napi]
    pub fn release_events(&self) {
        // Dropping the last reference releases it; queued calls still run.
        self.events.lock().take();
    }
}
