//! The core pool for the JavaScript `SessionPool` (without a shared queue): the
//! pool's task runs natively over the `NativeSpawner`, and its events go down the
//! spawner's pipe to the pool's target.
//!
//! Enqueueing tens of thousands of requests must stay cheap, so the per-request path
//! avoids what makes a napi call costly: the pool is not reached through a class
//! method (napi-rs tracks every borrow of a class instance in a global table) but by a
//! handle, through plain functions; requests are numbers handed out in JavaScript
//! (the events name them so), priorities their index in [`Priority::ALL`], configs
//! stay in JavaScript until the request is admitted (`pool-supply`), and the queue
//! comes back as typed arrays. `NativePool` owns the pool's lifetime: when JavaScript
//! collects it, the pool stops.
// napi-derive registers the functions only outside `cfg(test)`.
#![cfg_attr(test, allow(dead_code))]

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use napi::bindgen_prelude::{Float64Array, Reference, ToNapiValue, Uint32Array};
use napi::{sys, Env, Result};
use napi_derive::napi;

use super::convert::{count, millis, time_from_millis, JsMetricsSummary, JsSessionStatus};
use super::pipe::{Delivery, Payload, PipeHandler};
use super::spawner::{parse_json, NativeSpawner};
use super::{config_error, thrown};
use crate::config::{ConfigError, Priority, SessionConfig};
use crate::error::SpawnError;
use crate::event::SpawnerEvent;
use crate::pool::{redis_host, Admission, Body, Core, PoolConfig, PoolStatus, SharedCore};

thread_local! {
    static POOLS: RefCell<Registry> = RefCell::new(Registry::default());
}

#[derive(Default)]
struct Registry {
    next: u32,
    pools: HashMap<u32, Arc<Core<u32>>>,
}

/// Calls `f` with pool `pool`. A clone of it: `f` may call JavaScript (through the
/// pipe), which may make or drop a pool meanwhile.
fn with<T>(env: &Env, pool: u32, f: impl FnOnce(&Arc<Core<u32>>) -> T) -> Result<T> {
    let core = POOLS.with(|r| r.borrow().pools.get(&pool).cloned());
    match core {
        Some(core) => Ok(f(&core)),
        None => Err(gone(env, pool)),
    }
}

/// Calls `f` with pool `pool` borrowed, for the hot paths: `f` must not call JavaScript.
fn borrowed<T>(env: &Env, pool: u32, f: impl FnOnce(&Core<u32>) -> T) -> Result<T> {
    POOLS.with(|r| r.borrow().pools.get(&pool).map(|core| f(core))).ok_or_else(|| gone(env, pool))
}

fn gone(env: &Env, pool: u32) -> napi::Error {
    thrown(env, "ERR_POOL_GONE", format!("no pool {pool} on this thread"), &[])
}



/// A pool event's payload; which fields are set depends on the event. For a pool
/// without a shared queue `requestId` is the request's number, as text.
#[napi(object, js_name = "NativePoolEvent", object_from_js = false)]
pub struct JsPoolEvent {
    pub request_id: Option<String>,
    pub session_id: Option<String>,
    pub status: Option<JsSessionStatus>,
    pub attempt: Option<u32>,
    pub host: Option<String>,
    pub until: Option<f64>,
    pub reason: Option<String>,
    pub code: Option<String>,
    pub message: Option<String>,
    pub missed: Option<f64>,
    pub position: Option<u32>,
    pub queue_length: Option<u32>,
}

fn fields() -> JsPoolEvent {
    JsPoolEvent {
        request_id: None,
        session_id: None,
        status: None,
        attempt: None,
        host: None,
        until: None,
        reason: None,
        code: None,
        message: None,
        missed: None,
        position: None,
        queue_length: None,
    }
}

fn text(id: Option<Arc<str>>) -> Option<String> {
    id.map(|id| id.to_string())
}

/// A pool event's payload; an event that is not a pool's comes back.
pub(crate) fn event_payload(raw: sys::napi_env, event: SpawnerEvent) -> Result<std::result::Result<sys::napi_value, SpawnerEvent>> {
    let e = match event {
        SpawnerEvent::SessionAllocated { request_id, session_id, host, status } => JsPoolEvent {
            request_id: Some(request_id.to_string()),
            session_id: Some(session_id.to_string()),
            host: text(host),
            status: status.map(|s| (*s).into()),
            ..fields()
        },
        SpawnerEvent::SessionReleased { session_id, status, request_id, host } => JsPoolEvent {
            session_id: Some(session_id.to_string()),
            status: Some((*status).into()),
            request_id: text(request_id),
            host: text(host),
            ..fields()
        },
        SpawnerEvent::SessionRecovering { session_id, request_id, attempt, host } => JsPoolEvent {
            request_id: Some(request_id.to_string()),
            session_id: Some(session_id.to_string()),
            attempt: Some(attempt),
            host: text(host),
            ..fields()
        },
        SpawnerEvent::RequestCancelled { request_id } => JsPoolEvent { request_id: Some(request_id.to_string()), ..fields() },
        SpawnerEvent::RequestCompleted { request_id, status } => {
            JsPoolEvent { request_id: Some(request_id.to_string()), status: Some((*status).into()), ..fields() }
        }
        SpawnerEvent::RequestFailed { request_id, code, message, status } => JsPoolEvent {
            request_id: Some(request_id.to_string()),
            code: Some(code.to_owned()),
            message: Some(message),
            status: status.map(|s| (*s).into()),
            ..fields()
        },
        SpawnerEvent::PoolThrottled { until, reason } => JsPoolEvent { until: Some(millis(until)), reason: Some(reason), ..fields() },
        SpawnerEvent::QueueUnavailable { host, code, message } => {
            JsPoolEvent { host: Some(host.to_string()), code: Some(code.to_owned()), message: Some(message), ..fields() }
        }
        SpawnerEvent::QueueReconnected { host } => JsPoolEvent { host: Some(host.to_string()), ..fields() },
        SpawnerEvent::LeaseLost { request_id, session_id, host } => JsPoolEvent {
            request_id: Some(request_id.to_string()),
            session_id: text(session_id),
            host: Some(host.to_string()),
            ..fields()
        },
        SpawnerEvent::QueueError { code, message } => JsPoolEvent { code: Some(code.to_owned()), message: Some(message), ..fields() },
        SpawnerEvent::QueueLagged { missed } => JsPoolEvent { missed: Some(missed as f64), ..fields() },
        SpawnerEvent::RequestQueued { request_id, position, queue_length } => JsPoolEvent {
            request_id: Some(request_id.to_string()),
            position: Some(count(position)),
            queue_length: Some(count(queue_length)),
            ..fields()
        },
        SpawnerEvent::PoolDraining | SpawnerEvent::PoolDrained | SpawnerEvent::PoolResumed => fields(),
        other => return Ok(Err(other)),
    };
    // SAFETY: on JavaScript's thread, in the current scope.
    Ok(Ok(unsafe { JsPoolEvent::to_napi_value(raw, e)? }))
}

/// Which pool a `NativePool` is.
pub(super) enum Kind {
    /// This process's queue; `handle` names it to the functions below.
    Local { handle: u32 },
    /// A queue shared with pools on other hosts.
    Shared(Arc<SharedCore>),
}

/// Owns one pool: when JavaScript collects it, the pool stops.
#[napi]
pub struct NativePool {
    pub(super) kind: Kind,
    target: u32,
    capacity: u32,
    pub(super) spawner: Reference<NativeSpawner>,
}

impl Drop for NativePool {
    fn drop(&mut self) {
        if let Kind::Local { handle } = self.kind {
            // Thread-local storage may already be gone when the thread ends.
            let _ = POOLS.try_with(|r| r.borrow_mut().pools.remove(&handle));
        }
    }
}

impl NativePool {
    fn local(&self, env: &Env) -> Result<u32> {
        match self.kind {
            Kind::Local { handle } => Ok(handle),
            Kind::Shared(_) => Err(thrown(env, "ERR_INVALID_ARG", "this pool serves a shared queue".into(), &[])),
        }
    }
}

#[napi]
impl NativePool {
    /// Over `spawner`; `config_json` is checked (a wrong field is a TypeError naming
    /// it). With `config.queue`, a host of that shared queue, connecting in the background.
    #[napi(constructor, catch_unwind)]
    pub fn new(env: Env, spawner: Reference<NativeSpawner>, config_json: String) -> Result<Self> {
        let config = PoolConfig::from_json(&parse_json(&env, &config_json, "config")?).map_err(|e| config_error(&env, e))?;
        let capacity = count(config.max_concurrent_sessions);
        let pipe = Arc::clone(&spawner.pipe);
        let target = pipe.attach();
        let handler = Box::new(PipeHandler { pipe: Arc::clone(&pipe), target });
        let activity: Arc<dyn crate::notice::Activity> = Arc::clone(&pipe) as _;
        if let Some(queue) = config.queue.clone() {
            let core = redis_host(&spawner.inner, &config, &queue, handler, Some(activity)).map_err(|e| super::js_error(&env, e))?;
            return Ok(Self { kind: Kind::Shared(core), target, capacity, spawner });
        }
        // No `request-queued` comes through the handler: `lib/` emits it from
        // `poolSubmit`'s answer, synchronously and only when someone listens.
        let ask = Arc::clone(&pipe);
        let supply = Box::new(move |request: &u32| {
            ask.deliver(Delivery { target, payload: Payload::Supply { request: *request } });
        });
        let core = Core::start(&spawner.inner, config, handler, Some(activity), Some(supply));
        let handle = POOLS.with(|r| {
            let mut r = r.borrow_mut();
            r.next = r.next.wrapping_add(1);
            while r.pools.contains_key(&r.next) {
                r.next = r.next.wrapping_add(1);
            }
            let handle = r.next;
            r.pools.insert(handle, core);
            handle
        });
        Ok(Self { kind: Kind::Local { handle }, target, capacity, spawner })
    }

    /// The handle of a pool without a shared queue, for the functions below (0 for one with).
    #[napi(getter)]
    pub fn handle(&self) -> u32 {
        match self.kind {
            Kind::Local { handle } => handle,
            Kind::Shared(_) => 0,
        }
    }

    /// With a shared queue: this pool's host name in it.
    #[napi(getter)]
    pub fn host(&self) -> Option<String> {
        match &self.kind {
            Kind::Shared(core) => Some(core.settings.host.to_string()),
            Kind::Local { .. } => None,
        }
    }

    /// Where this pool's events arrive in the spawner's listener.
    #[napi(getter)]
    pub fn target(&self) -> u32 {
        self.target
    }

    /// The config of an admitted request (`pool-supply`, or `poolSubmit` answering 0):
    /// its session starts. A config that cannot be used fails the request (its
    /// `request-failed` comes before this returns); `problem` says why JavaScript could
    /// not encode it.
    #[napi(catch_unwind)]
    pub fn supply(&self, env: Env, request: u32, config_json: Option<String>, problem: Option<String>, env_json: Option<String>) -> Result<()> {
        let handle = self.local(&env)?;
        let base_env = self.spawner.daemon_environment(&env, env_json)?;
        let config = match (config_json, problem) {
            (Some(json), None) => serde_json::from_str(&json)
                .map_err(|e| ConfigError::new("config", format!("is not valid JSON: {e}")))
                .and_then(|v| SessionConfig::from_json(&v)),
            (_, problem) => Err(ConfigError::new("config", problem.unwrap_or_else(|| "is missing".into()))),
        };
        let pipe = Arc::clone(&self.spawner.pipe);
        with(&env, handle, |core| {
            pipe.sync(&env, || match config {
                Ok(config) => {
                    core.supply(&request, config, base_env);
                }
                Err(e) => core.refuse(&request, SpawnError::InvalidConfig(e)),
            })
        })?
    }

    /// Removes a queued request; its `request-cancelled` and `request-failed` come
    /// before this returns. False when it is not queued.
    #[napi(catch_unwind)]
    pub fn cancel(&self, env: Env, request: u32) -> Result<bool> {
        let handle = self.local(&env)?;
        let pipe = Arc::clone(&self.spawner.pipe);
        with(&env, handle, |core| pipe.sync(&env, || core.cancel(&request)))?
    }

    /// Stops admitting, waits for the sessions to end (past `timeout_ms`: stops them, or
    /// with a shared queue hands them over); `pool-drained` says when.
    #[napi(catch_unwind)]
    pub fn drain(&self, env: Env, timeout_ms: f64) -> Result<()> {
        let timeout = Duration::from_millis(timeout_ms.max(0.0) as u64);
        let pipe = Arc::clone(&self.spawner.pipe);
        match &self.kind {
            Kind::Shared(core) => pipe.sync(&env, || drop(core.drain(timeout))),
            Kind::Local { handle } => with(&env, *handle, |core| pipe.sync(&env, || drop(core.drain(timeout))))?,
        }
    }

    /// The status but for the queue (`poolQueue` gives that as numbers).
    #[napi(catch_unwind)]
    pub fn local_status(&self, env: Env) -> Result<JsLocalStatus> {
        let handle = self.local(&env)?;
        let spawner = &self.spawner.inner;
        let (ids, active) = with(&env, handle, |core| core.session_ids_and_active())?;
        let sessions: Vec<_> = ids.iter().filter_map(|id| spawner.session_status(id)).collect();
        let status = PoolStatus::new(self.capacity as usize, active, sessions, Vec::new());
        Ok(JsLocalStatus {
            capacity: self.capacity,
            active_count: count(status.active_count),
            idle_count: count(status.idle_count),
            utilization: status.utilization,
            active_sessions: status.active_sessions.into_iter().map(Into::into).collect(),
        })
    }

    /// The spawner's summary and the pool's figures.
    #[napi(catch_unwind)]
    pub fn metrics(&self, env: Env) -> Result<JsPoolMetrics> {
        let m = match &self.kind {
            Kind::Shared(core) => core.metrics(),
            Kind::Local { handle } => with(&env, *handle, |core| core.metrics())?,
        };
        Ok(JsPoolMetrics {
            summary: m.sessions.into(),
            pool_utilization: m.pool_utilization,
            queue_length: count(m.queue_length),
            queue_wait_time: m.queue_wait_ms,
        })
    }
}

/// A pool's status without its queue.
#[napi(object, js_name = "NativeLocalStatus", object_from_js = false)]
pub struct JsLocalStatus {
    pub capacity: u32,
    pub active_count: u32,
    pub idle_count: u32,
    pub utilization: f64,
    pub active_sessions: Vec<JsSessionStatus>,
}

/// The contract's `PoolMetrics`: the spawner's summary and the pool's figures.
#[napi(object, js_name = "NativePoolMetrics", object_from_js = false)]
pub struct JsPoolMetrics {
    pub summary: JsMetricsSummary,
    pub pool_utilization: f64,
    pub queue_length: u32,
    pub queue_wait_time: f64,
}

/// 0 when the request has a slot now (supply its config); else where it queued, as
/// `position + queueLength * 2^26` (1-based place, then the queue's length with it):
/// one call instead of two on the hottest path, exact while the queue holds fewer than
/// 2^27 requests, far more than a process's memory does. Refusals throw with the
/// pool's error codes.
#[napi(catch_unwind)]
pub fn pool_submit(env: Env, pool: u32, request: u32, priority: u32, queued_at_ms: f64) -> Result<f64> {
    let priority = priority_arg(&env, priority)?;
    // A submit calls no JavaScript: its `request-queued` is `lib/`'s to emit.
    match borrowed(&env, pool, |core| core.submit(request, priority, time_from_millis(queued_at_ms), Body::Deferred, None))? {
        Ok(Admission::Now) => Ok(0.0),
        Ok(Admission::Queued { position, queue_length }) => Ok(position as f64 + queue_length as f64 * QUEUED_SHIFT),
        Err(e) => Err(thrown(&env, e.code(), e.to_string(), &[])),
    }
}

/// A priority as its index in `Priority::ALL` (what `lib/pool.js` sends).
pub(super) fn priority_arg(env: &Env, index: u32) -> Result<Priority> {
    Priority::ALL.get(index as usize).copied().ok_or_else(|| {
        config_error(env, ConfigError::new("request.priority", "must be one of 'critical', 'high', 'medium', 'low'"))
    })
}

/// Where `pool_submit` puts the queue's length (`lib/pool.js` divides by the same).
const QUEUED_SHIFT: f64 = (1u64 << 26) as f64;

/// The queue in serving order: request numbers and estimated waits (ms).
#[napi(object, js_name = "NativeQueue", object_from_js = false)]
pub struct JsQueue {
    pub requests: Uint32Array,
    pub estimated_waits: Float64Array,
}

#[napi(catch_unwind)]
pub fn pool_queue(env: Env, pool: u32) -> Result<JsQueue> {
    borrowed(&env, pool, |core| {
        let mut requests = Vec::new();
        let mut waits = Vec::new();
        core.for_each_queued(|request, _, _, wait| {
            requests.push(*request);
            waits.push(wait);
        });
        JsQueue { requests: Uint32Array::new(requests), estimated_waits: Float64Array::new(waits) }
    })
}
