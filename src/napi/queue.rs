//! `NativeSharedQueue`: a [`RequestQueue`] handle for JavaScript (`lib/shared-queue.js`
//! wraps it), either in Redis (`connectRedis`, with the `redis` feature) or in this
//! process (`local`, where handles of the same name share one [`LocalQueue`]).
//!
//! Every operation runs on the process's runtime ([`super::runtime`]) and settles a
//! promise through a thread-safe deferred; a panic in it rejects the promise. Events
//! reach JavaScript through a weak thread-safe function that exists only between
//! `subscribe` and `unsubscribe`/`close`, so a handle never keeps Node alive by itself.
//! Results are plain objects with times as epoch milliseconds.
// napi-derive registers the functions only outside `cfg(test)`.
#![cfg_attr(test, allow(dead_code))]

use std::collections::HashMap;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use napi::bindgen_prelude::{FnArgs, Function, FromNapiValue, Object, ToNapiValue, Unknown};
use napi::threadsafe_function::{ThreadsafeCallContext, ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, JsValue, Result, Status, ValueType};
use napi_derive::napi;
use parking_lot::Mutex;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use super::convert::{count, millis, RawValue};
use super::{thrown, thrown_as};
use crate::config::Priority;
use crate::pool::queue::{
    CancelResult, Expired, ExpiredFate, FinishOutcome, LocalQueue, QueueError, QueueEvent, QueueSnapshot,
    QueuedRequest, RequestQueue, RequestState, Taken,
};

/// In-process queues by name; the handles own them, so a name nobody holds is free.
static LOCAL_QUEUES: LazyLock<Mutex<HashMap<String, Weak<LocalQueue>>>> = LazyLock::new(Mutex::default);

#[napi(object, js_name = "NativeQueuePushed", object_from_js = false)]
pub struct JsPushed {
    pub position: u32,
    pub queue_length: u32,
}

/// `note`: what the host of an earlier attempt said when its session started, or null.
#[napi(object, js_name = "NativeQueueTaken", object_from_js = false, use_nullable = true)]
pub struct JsTaken {
    pub id: String,
    pub priority: String,
    pub payload: String,
    pub attempt: u32,
    pub enqueued_at: f64,
    pub lease_expires_at: f64,
    pub note: Option<String>,
}

#[napi(object, js_name = "NativeQueueRenewal", object_from_js = false)]
pub struct JsRenewal {
    pub held: bool,
    pub cancel_requested: bool,
}

/// `fate` is `requeued` (with `attempt`, the one about to be made), `failed` (with
/// `attempts`) or `cancelled`.
#[napi(object, js_name = "NativeQueueExpired", object_from_js = false)]
pub struct JsExpired {
    pub id: String,
    pub host: String,
    pub fate: String,
    pub attempt: Option<u32>,
    pub attempts: Option<u32>,
}

#[napi(object, js_name = "NativeQueueEntry", object_from_js = false)]
pub struct JsQueueEntry {
    pub id: String,
    pub priority: String,
    pub attempt: u32,
    pub enqueued_at: f64,
}

#[napi(object, js_name = "NativeQueueSnapshot", object_from_js = false)]
pub struct JsQueueSnapshot {
    pub queued: Vec<JsQueueEntry>,
    pub leased: u32,
    pub mean_execution_ms: Option<f64>,
    /// Live announced hosts, and the sum of their capacities.
    pub hosts: u32,
    pub capacity: u32,
}

/// An event's payload; which fields are set depends on the event (see [`QueueEvent`]):
/// a `failed` without `host` was failed by the queue itself. `lagged` has `missed`.
#[napi(object, js_name = "NativeQueueEvent", object_from_js = false)]
pub struct JsQueueEvent {
    pub id: Option<String>,
    pub priority: Option<String>,
    pub host: Option<String>,
    pub attempt: Option<u32>,
    pub detail: Option<String>,
    pub missed: Option<f64>,
}

/// An event as `lookup` gives it: its `name` with the fields its payload has.
#[napi(object, js_name = "NativeQueueNamedEvent", object_from_js = false)]
pub struct JsNamedEvent {
    pub name: String,
    pub id: Option<String>,
    pub priority: Option<String>,
    pub host: Option<String>,
    pub attempt: Option<u32>,
    pub detail: Option<String>,
}

/// `state` is `queued` (with `position`, from 1, and `attempt`), `leased` (with `host`
/// and `attempt`), `finished` (with `event`, the terminal one: `completed`, `failed`,
/// whose `host` is missing when the queue failed it, or `cancelled`) or `unknown`.
#[napi(object, js_name = "NativeQueueRequestState", object_from_js = false)]
pub struct JsRequestState {
    pub state: String,
    pub position: Option<u32>,
    pub attempt: Option<u32>,
    pub host: Option<String>,
    pub event: Option<JsNamedEvent>,
}

impl From<RequestState> for JsRequestState {
    fn from(state: RequestState) -> Self {
        let empty = |state: &str| Self { state: state.to_owned(), position: None, attempt: None, host: None, event: None };
        match state {
            RequestState::Queued { position, attempt } => {
                Self { position: Some(count(position)), attempt: Some(attempt), ..empty("queued") }
            }
            RequestState::Leased { host, attempt } => Self { host: Some(host), attempt: Some(attempt), ..empty("leased") },
            RequestState::Finished { event } => {
                let (name, p) = event_to_js(event);
                let event = JsNamedEvent {
                    name: name.to_owned(),
                    id: p.id,
                    priority: p.priority,
                    host: p.host,
                    attempt: p.attempt,
                    detail: p.detail,
                };
                Self { event: Some(event), ..empty("finished") }
            }
            RequestState::Unknown => empty("unknown"),
        }
    }
}


impl From<Taken> for JsTaken {
    fn from(t: Taken) -> Self {
        Self {
            id: t.request.id,
            priority: t.request.priority.as_str().to_owned(),
            payload: t.request.payload,
            attempt: t.request.attempt,
            enqueued_at: millis(t.enqueued_at),
            lease_expires_at: millis(t.lease_expires_at),
            note: t.note,
        }
    }
}

impl From<Expired> for JsExpired {
    fn from(e: Expired) -> Self {
        let (fate, attempt, attempts) = match e.fate {
            ExpiredFate::Requeued { attempt } => ("requeued", Some(attempt), None),
            ExpiredFate::Failed { attempts } => ("failed", None, Some(attempts)),
            ExpiredFate::Cancelled => ("cancelled", None, None),
        };
        Self { id: e.id, host: e.host, fate: fate.to_owned(), attempt, attempts }
    }
}

impl From<QueueSnapshot> for JsQueueSnapshot {
    fn from(s: QueueSnapshot) -> Self {
        Self {
            queued: s
                .queued
                .into_iter()
                .map(|e| JsQueueEntry {
                    id: e.id,
                    priority: e.priority.as_str().to_owned(),
                    attempt: e.attempt,
                    enqueued_at: millis(e.enqueued_at),
                })
                .collect(),
            leased: count(s.leased),
            mean_execution_ms: s.mean_execution_ms,
            hosts: count(s.hosts),
            capacity: count(s.capacity),
        }
    }
}

// ---- arguments: checked here too, so that a wrong one names itself whoever calls ----

fn arg_error(env: &Env, name: &str, message: String) -> napi::Error {
    thrown_as(env, true, "ERR_INVALID_ARG", format!("{name} {message}"), &[("field", name)])
}

fn describe(value: &Unknown<'_>) -> String {
    match value.get_type() {
        Ok(ValueType::Undefined) => "undefined".into(),
        Ok(ValueType::Null) => "null".into(),
        Ok(t) => format!("a value of type {t}"),
        Err(_) => "an unreadable value".into(),
    }
}

fn string_arg(env: &Env, value: Unknown<'_>, name: &str) -> Result<String> {
    if value.get_type()? != ValueType::String {
        return Err(arg_error(env, name, format!("must be a string, got {}", describe(&value))));
    }
    // SAFETY: a string of this environment, on its thread.
    unsafe { String::from_napi_value(env.raw(), value.raw()) }
}

fn id_arg(env: &Env, value: Unknown<'_>, name: &str) -> Result<String> {
    let text = string_arg(env, value, name)?;
    if text.is_empty() {
        return Err(arg_error(env, name, "must not be empty".into()));
    }
    Ok(text)
}

fn number_arg(env: &Env, value: Unknown<'_>, name: &str) -> Result<f64> {
    if value.get_type()? != ValueType::Number {
        return Err(arg_error(env, name, format!("must be a number, got {}", describe(&value))));
    }
    // SAFETY: as in `string_arg`.
    let n = unsafe { f64::from_napi_value(env.raw(), value.raw())? };
    if !n.is_finite() {
        return Err(arg_error(env, name, format!("must be finite, got {n}")));
    }
    Ok(n)
}

/// A lease of `ms` milliseconds: positive, as a zero lease would be born lapsed.
fn lease_arg(env: &Env, value: Unknown<'_>, name: &str) -> Result<Duration> {
    let ms = number_arg(env, value, name)?;
    if ms <= 0.0 || ms > u32::MAX as f64 {
        return Err(arg_error(env, name, format!("must be a positive number of milliseconds, got {ms}")));
    }
    Ok(Duration::from_secs_f64(ms / 1000.0))
}

/// A whole number from `min` to `u32::MAX`.
fn whole_arg(env: &Env, value: Unknown<'_>, name: &str, min: u32) -> Result<u32> {
    let n = number_arg(env, value, name)?;
    if n.fract() != 0.0 || n < f64::from(min) || n > f64::from(u32::MAX) {
        return Err(arg_error(env, name, format!("must be a whole number from {min}, got {n}")));
    }
    Ok(n as u32)
}

fn priority_arg(env: &Env, value: Unknown<'_>, name: &str) -> Result<Priority> {
    let text = string_arg(env, value, name)?;
    text.parse()
        .map_err(|()| arg_error(env, name, format!("must be one of 'critical', 'high', 'medium', 'low', got {text:?}")))
}

/// An optional argument: `None` when left out, `undefined` or `null`.
fn given(value: Option<Unknown<'_>>) -> Result<Option<Unknown<'_>>> {
    match value {
        Some(v) if !matches!(v.get_type()?, ValueType::Undefined | ValueType::Null) => Ok(Some(v)),
        _ => Ok(None),
    }
}

fn optional_string_arg(env: &Env, value: Option<Unknown<'_>>, name: &str) -> Result<Option<String>> {
    given(value)?.map(|v| string_arg(env, v, name)).transpose()
}

fn queue_error(env: &Env, e: QueueError) -> napi::Error {
    thrown(env, e.code(), e.to_string(), &[])
}

/// Runs `work` on the runtime; the promise gets `convert(output)` on JavaScript's thread.
fn start<'e, T, D>(
    env: &'e Env,
    what: &'static str,
    work: impl Future<Output = std::result::Result<T, QueueError>> + Send + 'static,
    convert: impl FnOnce(&Env, T) -> Result<D> + Send + 'static,
) -> Result<Object<'e>>
where
    T: Send + 'static,
    D: ToNapiValue + 'static,
{
    super::promise::spawn(env, what, work, move |env, outcome| match outcome {
        Ok(value) => convert(env, value),
        Err(e) => Err(queue_error(env, e)),
    })
}

// ---- events ----

enum Notice {
    Event(QueueEvent),
    /// The subscription fell this many events behind and lost them.
    Lagged(u64),
}

type QueueFn = ThreadsafeFunction<Notice, Unknown<'static>, FnArgs<(RawValue, RawValue)>, Status, false, true>;

const NO_EVENT: JsQueueEvent = JsQueueEvent { id: None, priority: None, host: None, attempt: None, detail: None, missed: None };

/// An event's name and payload, as listeners and `lookup` get them.
fn event_to_js(event: QueueEvent) -> (&'static str, JsQueueEvent) {
    let empty = NO_EVENT;
    match event {
        QueueEvent::Queued { id, priority } => {
            ("queued", JsQueueEvent { id: Some(id), priority: Some(priority.as_str().to_owned()), ..empty })
        }
        QueueEvent::Allocated { id, host, attempt } => {
            ("allocated", JsQueueEvent { id: Some(id), host: Some(host), attempt: Some(attempt), ..empty })
        }
        QueueEvent::Started { id, host, attempt, detail } => (
            "started",
            JsQueueEvent { id: Some(id), host: Some(host), attempt: Some(attempt), detail: Some(detail), ..empty },
        ),
        QueueEvent::Completed { id, host, detail } => {
            ("completed", JsQueueEvent { id: Some(id), host: Some(host), detail: Some(detail), ..empty })
        }
        QueueEvent::Failed { id, host, detail } => ("failed", JsQueueEvent { id: Some(id), host, detail: Some(detail), ..empty }),
        QueueEvent::Cancelled { id } => ("cancelled", JsQueueEvent { id: Some(id), ..empty }),
        QueueEvent::Requeued { id, attempt } => ("requeued", JsQueueEvent { id: Some(id), attempt: Some(attempt), ..empty }),
    }
}

fn notice_to_js(env: &Env, notice: Notice) -> Result<FnArgs<(RawValue, RawValue)>> {
    let (name, payload) = match notice {
        Notice::Lagged(missed) => ("lagged", JsQueueEvent { missed: Some(missed as f64), ..NO_EVENT }),
        Notice::Event(event) => event_to_js(event),
    };
    let raw = env.raw();
    // SAFETY: on JavaScript's thread, inside the thread-safe function's call scope.
    unsafe {
        let name = <&str>::to_napi_value(raw, name)?;
        let payload = JsQueueEvent::to_napi_value(raw, payload)?;
        Ok(FnArgs::from((RawValue(name), RawValue(payload))))
    }
}

fn native_error_args(env: &Env, message: &str) -> Result<FnArgs<(RawValue, RawValue)>> {
    tracing::error!("{message}");
    let raw = env.raw();
    // SAFETY: as in `notice_to_js`.
    unsafe {
        let name = <&str>::to_napi_value(raw, "native-error")?;
        let text = <&str>::to_napi_value(raw, message)?;
        Ok(FnArgs::from((RawValue(name), RawValue(text))))
    }
}

/// One listener's delivery: the forwarding task and the function it calls.
struct Subscription {
    function: Arc<Mutex<Option<QueueFn>>>,
    task: JoinHandle<()>,
}

impl Subscription {
    /// On JavaScript's thread. Aborting (not releasing) the function discards what is
    /// queued on it and not yet dispatched, so that nothing arrives after this.
    #[allow(deprecated)] // napi-rs deprecates `abort` in favour of dropping, which delivers what is queued.
    fn stop(self) {
        self.task.abort();
        if let Some(function) = self.function.lock().take() {
            let _ = function.abort();
        }
    }
}

// ---- the class ----

#[napi]
pub struct NativeSharedQueue {
    /// `None` once closed.
    queue: Mutex<Option<Arc<dyn RequestQueue>>>,
    kind: &'static str,
    subscription: Mutex<Option<Subscription>>,
}

impl Drop for NativeSharedQueue {
    fn drop(&mut self) {
        if let Some(subscription) = self.subscription.get_mut().take() {
            subscription.stop();
        }
    }
}

impl NativeSharedQueue {
    fn new(queue: Arc<dyn RequestQueue>, kind: &'static str) -> Self {
        Self { queue: Mutex::new(Some(queue)), kind, subscription: Mutex::new(None) }
    }

    fn queue(&self, env: &Env) -> Result<Arc<dyn RequestQueue>> {
        self.queue
            .lock()
            .clone()
            .ok_or_else(|| thrown(env, "ERR_QUEUE_CLOSED", "the queue handle is closed".into(), &[]))
    }
}

#[cfg(feature = "redis")]
fn redis_options(env: &Env, url: String, name: String, json: Option<String>) -> Result<crate::pool::queue::RedisQueueOptions> {
    let mut options = crate::pool::queue::RedisQueueOptions::new(url, name);
    let Some(json) = json else { return Ok(options) };
    let value: serde_json::Value = serde_json::from_str(&json)
        .map_err(|e| arg_error(env, "options", format!("is not valid JSON: {e}")))?;
    let Some(fields) = value.as_object() else {
        return Err(arg_error(env, "options", "must be an object".into()));
    };
    for (key, value) in fields {
        let field = format!("options.{key}");
        let target = match key.as_str() {
            "connectTimeoutMs" => &mut options.connect_timeout,
            "responseTimeoutMs" => &mut options.response_timeout,
            _ => return Err(arg_error(env, &field, "is not an option (connectTimeoutMs, responseTimeoutMs)".into())),
        };
        match value.as_f64() {
            Some(ms) if ms > 0.0 && ms <= u32::MAX as f64 => *target = Duration::from_secs_f64(ms / 1000.0),
            _ => return Err(arg_error(env, &field, format!("must be a positive number of milliseconds, got {value}"))),
        }
    }
    Ok(options)
}

// napi-derive cannot register a method under `cfg`, but it can a whole block.
#[cfg(feature = "redis")]
#[napi]
impl NativeSharedQueue {
    /// A handle on the queue `name` in the Redis at `url`. `optionsJson`:
    /// `{connectTimeoutMs, responseTimeoutMs}` (2000 each by default).
    #[napi(catch_unwind, ts_return_type = "Promise<NativeSharedQueue>")]
    pub fn connect_redis<'e>(
        env: &'e Env,
        url: Unknown<'_>,
        name: Unknown<'_>,
        options_json: Option<Unknown<'_>>,
    ) -> Result<Object<'e>> {
        let url = id_arg(env, url, "url")?;
        let name = id_arg(env, name, "name")?;
        let json = optional_string_arg(env, options_json, "optionsJson")?;
        let options = redis_options(env, url, name, json)?;
        start(env, "connect", crate::pool::queue::RedisQueue::connect(options), |_, queue| {
            Ok(NativeSharedQueue::new(Arc::new(queue), "redis"))
        })
    }
}

#[napi]
impl NativeSharedQueue {
    /// A handle on the in-process queue `name`, shared with every other handle of that
    /// name in this process.
    #[napi(factory, catch_unwind)]
    pub fn local(env: Env, name: Unknown<'_>) -> Result<Self> {
        let name = id_arg(&env, name, "name")?;
        let mut queues = LOCAL_QUEUES.lock();
        queues.retain(|_, queue| queue.strong_count() > 0);
        let queue = match queues.get(&name).and_then(Weak::upgrade) {
            Some(queue) => queue,
            None => {
                let queue = Arc::new(LocalQueue::new());
                queues.insert(name, Arc::downgrade(&queue));
                queue
            }
        };
        Ok(Self::new(queue, "local"))
    }

    /// `local` or `redis`.
    #[napi(getter)]
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    #[napi(catch_unwind, ts_return_type = "Promise<NativeQueuePushed>")]
    pub fn push<'e>(
        &self,
        env: &'e Env,
        id: Unknown<'_>,
        priority: Unknown<'_>,
        payload: Unknown<'_>,
        attempt: Unknown<'_>,
        limit: Option<Unknown<'_>>,
    ) -> Result<Object<'e>> {
        let request = QueuedRequest {
            id: id_arg(env, id, "id")?,
            priority: priority_arg(env, priority, "priority")?,
            payload: string_arg(env, payload, "payload")?,
            attempt: whole_arg(env, attempt, "attempt", 1)?,
        };
        let limit = given(limit)?.map(|v| whole_arg(env, v, "limit", 0).map(|l| l as usize)).transpose()?;
        let queue = self.queue(env)?;
        start(env, "push", async move { queue.push_within(request, limit).await }, |_, pushed| {
            Ok(JsPushed { position: count(pushed.position), queue_length: count(pushed.queue_length) })
        })
    }

    /// The next request under a lease of `leaseMs` for `host`, or `null`.
    #[napi(catch_unwind, ts_return_type = "Promise<NativeQueueTaken | null>")]
    pub fn take<'e>(&self, env: &'e Env, host: Unknown<'_>, lease_ms: Unknown<'_>) -> Result<Object<'e>> {
        let host = id_arg(env, host, "host")?;
        let lease = lease_arg(env, lease_ms, "leaseMs")?;
        let queue = self.queue(env)?;
        start(env, "take", async move { queue.take(&host, lease).await }, |_, taken| Ok(taken.map(JsTaken::from)))
    }

    #[napi(catch_unwind, ts_return_type = "Promise<NativeQueueRenewal>")]
    pub fn renew<'e>(&self, env: &'e Env, host: Unknown<'_>, id: Unknown<'_>, lease_ms: Unknown<'_>) -> Result<Object<'e>> {
        let host = id_arg(env, host, "host")?;
        let id = id_arg(env, id, "id")?;
        let lease = lease_arg(env, lease_ms, "leaseMs")?;
        let queue = self.queue(env)?;
        start(env, "renew", async move { queue.renew(&host, &id, lease).await }, |_, r| {
            Ok(JsRenewal { held: r.held, cancel_requested: r.cancel_requested })
        })
    }

    /// The holder's session on `id` started; `detail` becomes the request's note (the
    /// next attempt's `take` sees it) and goes out in a `started` event.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn started<'e>(&self, env: &'e Env, host: Unknown<'_>, id: Unknown<'_>, detail: Unknown<'_>) -> Result<Object<'e>> {
        let host = id_arg(env, host, "host")?;
        let id = id_arg(env, id, "id")?;
        let detail = string_arg(env, detail, "detail")?;
        let queue = self.queue(env)?;
        start(env, "started", async move { queue.started(&host, &id, &detail).await }, |_, ()| Ok(()))
    }

    /// `outcome`: `completed` or `failed`, with `detail` (the serialised status or
    /// error, empty when left out), or `cancelled`, without.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn finish<'e>(
        &self,
        env: &'e Env,
        host: Unknown<'_>,
        id: Unknown<'_>,
        outcome: Unknown<'_>,
        execution_ms: Unknown<'_>,
        detail: Option<Unknown<'_>>,
    ) -> Result<Object<'e>> {
        let host = id_arg(env, host, "host")?;
        let id = id_arg(env, id, "id")?;
        let outcome_name = string_arg(env, outcome, "outcome")?;
        let execution = number_arg(env, execution_ms, "executionMs")?;
        if execution < 0.0 {
            return Err(arg_error(env, "executionMs", format!("must not be negative, got {execution}")));
        }
        let detail = optional_string_arg(env, detail, "detail")?;
        let outcome = match (outcome_name.as_str(), detail) {
            ("completed", detail) => FinishOutcome::Completed(detail.unwrap_or_default()),
            ("failed", detail) => FinishOutcome::Failed(detail.unwrap_or_default()),
            ("cancelled", None) => FinishOutcome::Cancelled,
            ("cancelled", Some(_)) => {
                return Err(arg_error(env, "detail", "must be left out for a cancelled request".into()))
            }
            (other, _) => {
                return Err(arg_error(
                    env,
                    "outcome",
                    format!("must be one of 'completed', 'failed', 'cancelled', got {other:?}"),
                ))
            }
        };
        let queue = self.queue(env)?;
        let execution = execution.round() as u64;
        start(env, "finish", async move { queue.finish(&host, &id, outcome, execution).await }, |_, ()| Ok(()))
    }

    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn release<'e>(&self, env: &'e Env, host: Unknown<'_>, id: Unknown<'_>, note: Option<Unknown<'_>>) -> Result<Object<'e>> {
        let host = id_arg(env, host, "host")?;
        let id = id_arg(env, id, "id")?;
        let note = optional_string_arg(env, note, "note")?.filter(|n| !n.is_empty());
        let queue = self.queue(env)?;
        start(env, "release", async move { queue.release_with_note(&host, &id, note.as_deref()).await }, |_, ()| Ok(()))
    }

    #[napi(catch_unwind, ts_return_type = "Promise<NativeQueueExpired[]>")]
    pub fn requeue_expired<'e>(&self, env: &'e Env, max_attempts: Unknown<'_>) -> Result<Object<'e>> {
        let max_attempts = whole_arg(env, max_attempts, "maxAttempts", 1)?;
        let queue = self.queue(env)?;
        start(env, "requeueExpired", async move { queue.requeue_expired(max_attempts).await }, |_, expired| {
            Ok(expired.into_iter().map(JsExpired::from).collect::<Vec<_>>())
        })
    }

    /// `removed` (it was queued), `flagged` (leased: its holder sees it on renewal) or
    /// `unknown`.
    #[napi(catch_unwind, ts_return_type = "Promise<'removed' | 'flagged' | 'unknown'>")]
    pub fn cancel<'e>(&self, env: &'e Env, id: Unknown<'_>) -> Result<Object<'e>> {
        let id = id_arg(env, id, "id")?;
        let queue = self.queue(env)?;
        start(env, "cancel", async move { queue.cancel(&id).await }, |_, result| {
            Ok(match result {
                CancelResult::Removed => "removed",
                CancelResult::Flagged => "flagged",
                CancelResult::Unknown => "unknown",
            })
        })
    }

    #[napi(catch_unwind, ts_return_type = "Promise<NativeQueueSnapshot>")]
    pub fn snapshot<'e>(&self, env: &'e Env) -> Result<Object<'e>> {
        let queue = self.queue(env)?;
        start(env, "snapshot", async move { queue.snapshot().await }, |_, s| Ok(JsQueueSnapshot::from(s)))
    }

    /// Where request `id` stands, or how it ended (its terminal event, kept for an hour
    /// by the queue's clock): for a host that may have missed the event.
    #[napi(catch_unwind, ts_return_type = "Promise<NativeQueueRequestState>")]
    pub fn lookup<'e>(&self, env: &'e Env, id: Unknown<'_>) -> Result<Object<'e>> {
        let id = id_arg(env, id, "id")?;
        let queue = self.queue(env)?;
        start(env, "lookup", async move { queue.lookup(&id).await }, |_, state| Ok(JsRequestState::from(state)))
    }

    /// `host` is live with `capacity` sessions for `ttlMs` from now, by the queue's
    /// clock; announcing again refreshes both.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn announce<'e>(&self, env: &'e Env, host: Unknown<'_>, capacity: Unknown<'_>, ttl_ms: Unknown<'_>) -> Result<Object<'e>> {
        let host = id_arg(env, host, "host")?;
        let capacity = whole_arg(env, capacity, "capacity", 0)?;
        let ttl = lease_arg(env, ttl_ms, "ttlMs")?;
        let queue = self.queue(env)?;
        start(env, "announce", async move { queue.announce(&host, capacity, ttl).await }, |_, ()| Ok(()))
    }

    /// `host` is no longer live.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn leave<'e>(&self, env: &'e Env, host: Unknown<'_>) -> Result<Object<'e>> {
        let host = id_arg(env, host, "host")?;
        let queue = self.queue(env)?;
        start(env, "leave", async move { queue.leave(&host).await }, |_, ()| Ok(()))
    }

    /// `listener(name, payload)` gets every event published from now on, by any host,
    /// until `unsubscribe` or `close`; it replaces an earlier listener. The delivery
    /// does not keep Node alive.
    #[napi(catch_unwind, ts_args_type = "listener: (name: string, payload: NativeQueueEvent) => void")]
    pub fn subscribe(&self, env: Env, listener: Function<'_, (), Unknown<'static>>) -> Result<()> {
        let queue = self.queue(&env)?;
        let runtime = super::runtime(&env)?;
        let function: QueueFn = listener
            .build_threadsafe_function::<Notice>()
            .weak::<true>()
            .callee_handled::<false>()
            .build_callback(|ctx: ThreadsafeCallContext<Notice>| {
                // A panic must not unwind into Node (it would abort the process).
                match catch_unwind(AssertUnwindSafe(|| notice_to_js(&ctx.env, ctx.value))) {
                    Ok(Ok(args)) => Ok(args),
                    Ok(Err(e)) => native_error_args(&ctx.env, &format!("converting a queue event failed: {e}")),
                    Err(_) => native_error_args(&ctx.env, "converting a queue event panicked"),
                }
            })?;
        let function = Arc::new(Mutex::new(Some(function)));
        let mut events = queue.subscribe();
        let target = Arc::clone(&function);
        let task = runtime.spawn(async move {
            loop {
                let notice = match events.recv().await {
                    Ok(event) => Notice::Event(event),
                    Err(RecvError::Lagged(missed)) => Notice::Lagged(missed),
                    Err(RecvError::Closed) => return,
                };
                let slot = target.lock();
                let Some(function) = slot.as_ref() else { return };
                // Unbounded queue: events are small and few next to the sessions they announce.
                if function.call(notice, ThreadsafeFunctionCallMode::NonBlocking) != Status::Ok {
                    return;
                }
            }
        });
        if let Some(previous) = self.subscription.lock().replace(Subscription { function, task }) {
            previous.stop();
        }
        Ok(())
    }

    /// Stops delivery to the listener: nothing more arrives once this returns. False
    /// when there was none.
    #[napi(catch_unwind)]
    pub fn unsubscribe(&self) -> bool {
        let subscription = self.subscription.lock().take();
        subscription.map(Subscription::stop).is_some()
    }

    /// Unsubscribes and lets go of the queue (for Redis, its connections); later calls
    /// fail with `ERR_QUEUE_CLOSED`. Operations in flight still settle.
    #[napi(catch_unwind)]
    pub fn close(&self) {
        self.unsubscribe();
        self.queue.lock().take();
    }
}
