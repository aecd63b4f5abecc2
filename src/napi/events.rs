//! Delivery of core events to JavaScript through a thread-safe function. A spawner
//! has one only while it has live sessions: it is created weak (it does not keep
//! Node alive by itself), ref'd while sessions run (as a child process handle is),
//! and released when the last one ends, so an idle spawner holds nothing.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use parking_lot::Mutex;

use napi::bindgen_prelude::{FnArgs, Function, ToNapiValue, Unknown};
use napi::threadsafe_function::{ThreadsafeCallContext, ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Status};
use napi_derive::napi;

use super::convert::{JsSessionStatus, JsText, RawValue};
use crate::event::{EventHandler, SpawnerEvent};

pub(crate) type EventFn =
    ThreadsafeFunction<SpawnerEvent, Unknown<'static>, FnArgs<(RawValue, RawValue)>, Status, false, true>;

#[napi(object, js_name = "NativeOutputEvent", object_from_js = false)]
pub struct JsOutputEvent {
    pub session_id: String,
    #[napi(js_name = "type")]
    pub stream: String,
    pub data: JsText,
}

/// `message` travels as JSON text: `JSON.parse` builds it faster than Node-API calls.
#[napi(object, js_name = "NativeMessageEvent", object_from_js = false)]
pub struct JsMessageEvent {
    pub session_id: String,
    pub message_json: JsText,
}

#[napi(object, js_name = "NativeRetryEvent", object_from_js = false)]
pub struct JsRetryEvent {
    pub session_id: String,
    pub attempt: f64,
    pub max_retries: f64,
    pub retry_delay_ms: f64,
    pub error: String,
}

#[napi(object, js_name = "NativeSessionEvent", object_from_js = false)]
pub struct JsSessionEvent {
    pub session_id: String,
}

#[napi(object, js_name = "NativeEndedEvent", object_from_js = false)]
pub struct JsEndedEvent {
    pub session_id: String,
    pub status: JsSessionStatus,
}

pub(crate) fn build(callback: Function<'_, (), Unknown<'static>>) -> napi::Result<EventFn> {
    callback
        .build_threadsafe_function::<SpawnerEvent>()
        .weak::<true>()
        .callee_handled::<false>()
        .build_callback(|ctx: ThreadsafeCallContext<SpawnerEvent>| {
            // A panic must not unwind into Node (it would abort the process).
            match catch_unwind(AssertUnwindSafe(|| to_js(&ctx.env, ctx.value))) {
                Ok(Ok(args)) => Ok(args),
                Ok(Err(e)) => native_error(&ctx.env, &format!("converting an event failed: {e}")),
                Err(_) => native_error(&ctx.env, "converting an event panicked"),
            }
        })
}

/// The JavaScript listener gets `(name, payload)`.
fn to_js(env: &Env, event: SpawnerEvent) -> napi::Result<FnArgs<(RawValue, RawValue)>> {
    let raw = env.raw();
    let name = unsafe { <&str>::to_napi_value(raw, event.name())? };
    let payload = match event {
        SpawnerEvent::SessionOutput(chunk) => unsafe {
            JsOutputEvent::to_napi_value(
                raw,
                JsOutputEvent {
                    session_id: chunk.session_id.to_string(),
                    stream: chunk.stream.as_str().to_owned(),
                    data: JsText(chunk.data),
                },
            )?
        },
        SpawnerEvent::SessionMessage { session_id, message } => unsafe {
            JsMessageEvent::to_napi_value(
                raw,
                JsMessageEvent {
                    session_id: session_id.to_string(),
                    message_json: JsText(message.to_string()),
                },
            )?
        },
        SpawnerEvent::SessionRetry { session_id, attempt, max_retries, retry_delay_ms, error } => unsafe {
            JsRetryEvent::to_napi_value(
                raw,
                JsRetryEvent {
                    session_id: session_id.to_string(),
                    attempt: attempt as f64,
                    max_retries: max_retries as f64,
                    retry_delay_ms: retry_delay_ms as f64,
                    error,
                },
            )?
        },
        SpawnerEvent::SessionEnded { session_id, status } => unsafe {
            JsEndedEvent::to_napi_value(
                raw,
                JsEndedEvent {
                    session_id: session_id.to_string(),
                    status: (*status).into(),
                },
            )?
        },
        other => unsafe {
            JsSessionEvent::to_napi_value(
                raw,
                JsSessionEvent {
                    session_id: other.session_id().to_owned(),
                },
            )?
        },
    };
    Ok(FnArgs::from((RawValue(name), RawValue(payload))))
}

/// Reported to JavaScript as a `native-error` event instead of a fatal exception.
fn native_error(env: &Env, message: &str) -> napi::Result<FnArgs<(RawValue, RawValue)>> {
    tracing::error!("{message}");
    let raw = env.raw();
    let name = unsafe { <&str>::to_napi_value(raw, "native-error")? };
    let text = unsafe { <&str>::to_napi_value(raw, message)? };
    Ok(FnArgs::from((RawValue(name), RawValue(text))))
}

/// The current queue to JavaScript, if the spawner has one.
pub(crate) type Slot = Arc<Mutex<Option<Arc<EventFn>>>>;

/// The spawner's event handler in the binding.
pub(crate) struct JsEvents {
    pub slot: Slot,
}

impl EventHandler for JsEvents {
    fn handle(&self, event: SpawnerEvent) {
        // spawnSession returns the spawn's outcome itself, on JavaScript's thread,
        // before anything of the session can come through the queue.
        if matches!(event, SpawnerEvent::SessionSpawned { .. } | SpawnerEvent::SpawnFailed { .. }) {
            return;
        }
        // Every event belongs to a session that is live or has just failed to start,
        // and the queue exists from before such a session until after its end.
        let Some(tsfn) = self.slot.lock().clone() else { return };
        // The queue is unbounded; output is bounded by the credit each chunk holds
        // until it has been converted. A closing queue means Node is exiting.
        let _ = tsfn.call(event, ThreadsafeFunctionCallMode::NonBlocking);
    }
}
