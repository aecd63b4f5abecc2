#![cfg_attr(test, allow(dead_code))]
//! A `NativePool` on a shared queue: requests (their config checked here, by the host
//! that makes them), cancels wherever the request runs, the status with the queue's
//! own figures, and closing. The host loop is the core's; its events go down the
//! spawner's pipe like any pool's, with real request ids.

use std::sync::Arc;

use napi::bindgen_prelude::Object;
use napi::{Env, Result};
use napi_derive::napi;

use super::convert::{count, millis, time_from_millis, JsSessionStatus};
use super::pool::{Kind, NativePool};
use super::thrown;
use crate::pool::{PoolFailure, PoolStatus, RequestConfig, SharedCore, SharedStatus};

#[napi(object, js_name = "NativeQueuedRequest", object_from_js = false)]
pub struct JsQueuedRequest {
    pub request_id: String,
    pub priority: String,
    pub queued_at: f64,
    pub estimated_wait_time: f64,
    pub attempt: u32,
}

#[napi(object, js_name = "NativeSharedStatus", object_from_js = false)]
pub struct JsSharedStatus {
    pub host: String,
    pub hosts: u32,
    pub capacity: u32,
    pub leased: u32,
    pub reachable: bool,
    pub as_of: f64,
}

/// The contract's `PoolStatus` with the added `shared` part; times as epoch ms.
#[napi(object, js_name = "NativeSharedPoolStatus", object_from_js = false)]
pub struct JsSharedPoolStatus {
    pub capacity: u32,
    pub active_count: u32,
    pub idle_count: u32,
    pub queued_count: u32,
    pub utilization: f64,
    pub active_sessions: Vec<JsSessionStatus>,
    pub queued_requests: Vec<JsQueuedRequest>,
    pub shared: JsSharedStatus,
}

fn status_to_js((status, shared): (PoolStatus, SharedStatus)) -> JsSharedPoolStatus {
    JsSharedPoolStatus {
        capacity: count(status.capacity),
        active_count: count(status.active_count),
        idle_count: count(status.idle_count),
        queued_count: count(status.queued_count),
        utilization: status.utilization,
        active_sessions: status.active_sessions.into_iter().map(Into::into).collect(),
        queued_requests: status
            .queued_requests
            .into_iter()
            .map(|q| JsQueuedRequest {
                request_id: q.key,
                priority: q.priority.as_str().to_owned(),
                queued_at: millis(q.queued_at),
                estimated_wait_time: q.estimated_wait_ms,
                attempt: q.attempt,
            })
            .collect(),
        shared: JsSharedStatus {
            host: shared.host,
            hosts: count(shared.hosts),
            capacity: count(shared.capacity),
            leased: count(shared.leased),
            reachable: shared.reachable,
            as_of: millis(shared.as_of),
        },
    }
}

fn failure_error(env: &Env, failure: PoolFailure) -> napi::Error {
    match failure {
        PoolFailure::Spawn(crate::SpawnError::InvalidConfig(e)) => super::config_error(env, e),
        PoolFailure::Refused(crate::pool::PoolError::Draining) => {
            thrown(env, "ERR_POOL_DRAINING", "Pool is draining: it admits no new requests".into(), &[])
        }
        other => thrown(env, other.code(), other.to_string(), &[]),
    }
}

impl NativePool {
    fn shared(&self, env: &Env) -> Result<Arc<SharedCore>> {
        match &self.kind {
            Kind::Shared(core) => Ok(Arc::clone(core)),
            Kind::Local { .. } => Err(thrown(env, "ERR_INVALID_ARG", "this pool has no shared queue".into(), &[])),
        }
    }
}

#[napi]
impl NativePool {
    /// Puts a request in the shared queue (its events follow: `request-queued`, its
    /// allocation and end, or `request-failed`). A bad config is a TypeError here.
    #[napi(catch_unwind)]
    pub fn request(&self, env: Env, request_id: String, priority: u32, queued_at_ms: f64, config_json: String) -> Result<()> {
        let core = self.shared(&env)?;
        let priority = super::pool::priority_arg(&env, priority)?;
        let queued_at = time_from_millis(queued_at_ms);
        // Through the pipe, so Node is held from now on (the request is work in flight).
        let pipe = Arc::clone(&self.spawner.pipe);
        let requested = pipe.sync(&env, || core.request(request_id.into(), priority, queued_at, RequestConfig::Json(&config_json), None))?;
        requested.map_err(|f| failure_error(&env, f))
    }

    /// True when this host made or runs the request: the cancel then goes to the queue.
    #[napi(catch_unwind)]
    pub fn cancel_shared(&self, env: Env, request_id: String) -> Result<bool> {
        Ok(self.shared(&env)?.cancel(&request_id))
    }

    /// Cancels a request made on any host: true when it was queued or running.
    #[napi(catch_unwind, ts_return_type = "Promise<boolean>")]
    pub fn cancel_async<'e>(&self, env: &'e Env, request_id: String) -> Result<Object<'e>> {
        let answer = self.shared(env)?.cancel_async(&request_id);
        super::promise::spawn(env, "cancelRequestAsync", answer, |env, outcome| match outcome {
            Ok(Ok(found)) => Ok(found),
            Ok(Err(e)) => Err(thrown(env, e.code(), e.to_string(), &[])),
            Err(_) => Ok(false),
        })
    }

    /// The status, the queue part as of the last tick.
    #[napi(catch_unwind)]
    pub fn shared_status(&self, env: Env) -> Result<JsSharedPoolStatus> {
        Ok(status_to_js(self.shared(&env)?.status()))
    }

    /// The status with the queue read now.
    #[napi(catch_unwind, ts_return_type = "Promise<NativeSharedPoolStatus>")]
    pub fn shared_status_async<'e>(&self, env: &'e Env) -> Result<Object<'e>> {
        let core = self.shared(env)?;
        let answer = core.refresh();
        super::promise::spawn(env, "getPoolStatusAsync", answer, move |env, outcome| match outcome {
            Ok(Err(e)) => Err(thrown(env, e.code(), e.to_string(), &[])),
            _ => Ok(status_to_js(core.status())),
        })
    }

    /// Hands back what this host holds, leaves the queue and disconnects.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn close<'e>(&self, env: &'e Env) -> Result<Object<'e>> {
        let answer = self.shared(env)?.close();
        super::promise::spawn(env, "close", answer, |_, _| Ok(()))
    }
}
