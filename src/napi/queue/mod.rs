//! `NativeSharedQueue`: a [`RequestQueue`] handle for JavaScript (`lib/shared-queue.js`
//! wraps it), either in Redis (`connectRedis`, with the `redis` feature) or in this
//! process (`local`, where handles of the same name share one [`LocalQueue`]).
//!
//! Every operation runs on the process's runtime ([`super::runtime`]) and settles a
//! promise through a thread-safe deferred; a panic in it rejects the promise. Events
//! reach JavaScript through a weak thread-safe function that exists only between
//! `subscribe` and `unsubscribe`/`close`, so a handle never keeps Node alive by itself.
//! Results are plain objects with times as epoch milliseconds.
//!
//! Here the class and its operations; the checks of its arguments in `args`, the
//! objects it resolves with in `objects`, its events' way to JavaScript in `events`.
// napi-derive registers the functions only outside `cfg(test)`.
#![cfg_attr(test, allow(dead_code))]

use std::collections::HashMap;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, LazyLock, Weak};

use napi::bindgen_prelude::{Function, Object, ToNapiValue, Unknown};
use napi::threadsafe_function::{ThreadsafeCallContext, ThreadsafeFunctionCallMode};
use napi::{Env, Result, Status};
use napi_derive::napi;
use parking_lot::Mutex;
use tokio::sync::broadcast::error::RecvError;

use super::convert::count;
use super::thrown;
use crate::pool::queue::{CancelResult, FinishOutcome, LocalQueue, QueueError, QueuedRequest, RequestQueue};

/// In-process queues by name; the handles own them, so a name nobody holds is free.
static LOCAL_QUEUES: LazyLock<Mutex<HashMap<String, Weak<LocalQueue>>>> = LazyLock::new(Mutex::default);

mod args;
mod events;
mod objects;

#[cfg(feature = "redis")]
use args::redis_options;
use args::{
    arg_error, given, id_arg, lease_arg, number_arg, optional_string_arg, priority_arg, queue_error, string_arg,
    whole_arg,
};
use events::{native_error_args, notice_to_js, Notice, QueueFn, Subscription};
use objects::{JsExpired, JsPushed, JsQueueSnapshot, JsRenewal, JsRequestState, JsTaken};

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
