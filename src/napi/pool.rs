//! The pool's decisions ([`Scheduler`]) for the JavaScript `SessionPool`, which
//! carries them out with its spawner.
//!
//! Enqueueing tens of thousands of requests must stay cheap, so the per-request path
//! avoids what makes a napi call costly: the scheduler is not reached through a class
//! method (napi-rs tracks every borrow of a class instance in a global table) but by a
//! number, through plain functions; requests are numbers handed out in JavaScript,
//! priorities their index in [`Priority::ALL`], and the queue comes back as typed
//! arrays. `NativeScheduler` owns the scheduler's lifetime: when JavaScript collects
//! it, the scheduler goes. Everything runs on JavaScript's thread.
// napi-derive registers the functions only outside `cfg(test)`.
#![cfg_attr(test, allow(dead_code))]

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use napi::bindgen_prelude::{Float64Array, Uint32Array};
use napi::{Env, Result};
use napi_derive::napi;

use super::convert::millis;
use super::{config_error, thrown};
use crate::config::{ConfigError, Priority};
use crate::pool::{Admission, Outcome, PoolConfig, Scheduler};
use crate::status::SessionState;

thread_local! {
    static SCHEDULERS: RefCell<Registry> = RefCell::new(Registry::default());
}

#[derive(Default)]
struct Registry {
    next: u32,
    schedulers: HashMap<u32, Scheduler<u32>>,
}

fn with<T>(env: &Env, pool: u32, f: impl FnOnce(&mut Scheduler<u32>) -> T) -> Result<T> {
    SCHEDULERS.with(|r| match r.borrow_mut().schedulers.get_mut(&pool) {
        Some(scheduler) => Ok(f(scheduler)),
        None => Err(thrown(env, "ERR_POOL_GONE", format!("no scheduler {pool} on this thread"), &[])),
    })
}

fn time(ms: f64) -> SystemTime {
    if ms.is_finite() && ms >= 0.0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        SystemTime::now()
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Owns one scheduler; `handle` names it to the functions below.
#[napi]
pub struct NativeScheduler {
    handle: u32,
    default_session_timeout_ms: f64,
    capacity: u32,
}

impl Drop for NativeScheduler {
    fn drop(&mut self) {
        // Thread-local storage may already be gone when the thread ends.
        let _ = SCHEDULERS.try_with(|r| r.borrow_mut().schedulers.remove(&self.handle));
    }
}

#[napi]
impl NativeScheduler {
    #[napi(constructor, catch_unwind)]
    pub fn new(env: Env, config_json: String) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_str(&config_json)
            .map_err(|e| config_error(&env, ConfigError::new("config", format!("is not valid JSON: {e}"))))?;
        let config = PoolConfig::from_json(&value).map_err(|e| config_error(&env, e))?;
        let default_session_timeout_ms = config.default_session_timeout_ms as f64;
        let capacity = count(config.max_concurrent_sessions);
        let handle = SCHEDULERS.with(|r| {
            let mut r = r.borrow_mut();
            r.next = r.next.wrapping_add(1);
            while r.schedulers.contains_key(&r.next) {
                r.next = r.next.wrapping_add(1);
            }
            let handle = r.next;
            r.schedulers.insert(handle, Scheduler::new(config));
            handle
        });
        Ok(Self { handle, default_session_timeout_ms, capacity })
    }

    #[napi(getter)]
    pub fn handle(&self) -> u32 {
        self.handle
    }

    #[napi(getter)]
    pub fn default_session_timeout(&self) -> f64 {
        self.default_session_timeout_ms
    }

    #[napi(getter)]
    pub fn capacity(&self) -> u32 {
        self.capacity
    }
}

/// 0 when the request has a slot now, else its 1-based place in the queue.
/// Refusals throw with the pool's error codes.
#[napi(catch_unwind)]
pub fn scheduler_submit(env: Env, pool: u32, request: u32, priority: u32, queued_at_ms: f64) -> Result<u32> {
    let Some(&priority) = Priority::ALL.get(priority as usize) else {
        return Err(config_error(&env, ConfigError::new("request.priority", "must be one of 'critical', 'high', 'medium', 'low'")));
    };
    match with(&env, pool, |s| s.submit(request, priority, time(queued_at_ms)))? {
        Ok(Admission::Now) => Ok(0),
        Ok(Admission::Queued { position, .. }) => Ok(count(position)),
        Err(e) => Err(thrown(&env, e.code(), e.to_string(), &[])),
    }
}

#[napi(catch_unwind)]
pub fn scheduler_queued_count(env: Env, pool: u32) -> Result<u32> {
    with(&env, pool, |s| count(s.queued_count()))
}

#[napi(catch_unwind)]
pub fn scheduler_active_count(env: Env, pool: u32) -> Result<u32> {
    with(&env, pool, |s| count(s.active_count()))
}

/// Requests that get a slot now, in serving order.
#[napi(catch_unwind)]
pub fn scheduler_admit_next(env: Env, pool: u32) -> Result<Vec<u32>> {
    with(&env, pool, Scheduler::admit_next)
}

#[napi(catch_unwind)]
pub fn scheduler_spawn_failed(env: Env, pool: u32, request: u32) -> Result<bool> {
    with(&env, pool, |s| s.spawn_failed(&request))
}

/// `completed`, `ended`, `gave-up`, or the attempt about to be made (a number) when
/// the request was queued again; `null` for a request that holds no slot.
#[napi(catch_unwind, ts_return_type = "'completed' | 'ended' | 'gave-up' | number | null")]
pub fn scheduler_session_ended(env: Env, pool: u32, request: u32, state: String, execution_ms: f64) -> Result<Option<napi::Either<&'static str, u32>>> {
    let Ok(state) = state.parse::<SessionState>() else { return Ok(None) };
    let outcome = with(&env, pool, |s| s.session_ended(&request, state, execution_ms.max(0.0) as u64))?;
    Ok(outcome.map(|o| match o {
        Outcome::Completed => napi::Either::A("completed"),
        Outcome::Ended => napi::Either::A("ended"),
        Outcome::GaveUp => napi::Either::A("gave-up"),
        Outcome::Requeued { attempt } => napi::Either::B(attempt),
    }))
}

#[napi(catch_unwind)]
pub fn scheduler_cancel(env: Env, pool: u32, request: u32) -> Result<bool> {
    with(&env, pool, |s| s.cancel(&request))
}

/// Stops admitting; returns the queued requests, which the caller fails.
#[napi(catch_unwind)]
pub fn scheduler_drain(env: Env, pool: u32) -> Result<Vec<u32>> {
    with(&env, pool, Scheduler::drain)
}

/// Pauses admission until `untilMs`; true when this started or extended a pause.
#[napi(catch_unwind)]
pub fn scheduler_throttle(env: Env, pool: u32, until_ms: f64) -> Result<bool> {
    with(&env, pool, |s| s.throttle(time(until_ms)))
}

#[napi(catch_unwind)]
pub fn scheduler_resume_if_due(env: Env, pool: u32, now_ms: f64) -> Result<bool> {
    with(&env, pool, |s| s.resume_if_due(time(now_ms)))
}

/// When the rate-limit pause ends (ms since the epoch), if one is on.
#[napi(catch_unwind)]
pub fn scheduler_throttled_until(env: Env, pool: u32) -> Result<Option<f64>> {
    with(&env, pool, |s| s.throttled_until().map(millis))
}

#[napi(catch_unwind)]
pub fn scheduler_queue_wait_ms(env: Env, pool: u32) -> Result<f64> {
    with(&env, pool, |s| s.queue_wait_ms(SystemTime::now()))
}

/// The queue in serving order: request numbers and estimated waits (ms).
#[napi(object, js_name = "NativeQueue", object_from_js = false)]
pub struct JsQueue {
    pub requests: Uint32Array,
    pub estimated_waits: Float64Array,
}

#[napi(catch_unwind)]
pub fn scheduler_queue(env: Env, pool: u32) -> Result<JsQueue> {
    with(&env, pool, |s| {
        let mut requests = Vec::with_capacity(s.queued_count());
        let mut waits = Vec::with_capacity(s.queued_count());
        s.for_each_queued(|request, _, _, wait| {
            requests.push(*request);
            waits.push(wait);
        });
        JsQueue { requests: Uint32Array::new(requests), estimated_waits: Float64Array::new(waits) }
    })
}
