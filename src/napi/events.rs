//! Delivery to JavaScript through a thread-safe function: core events, and approval
//! questions for the JavaScript `approvalHandler`. A spawner has the function only
//! while it has live sessions: it is created weak (it does not keep Node alive by
//! itself), ref'd while sessions run (as a child process handle is), and released
//! when the spawner goes idle, so an idle spawner holds nothing.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use napi::bindgen_prelude::{FnArgs, Function, ToNapiValue, Unknown};
use napi::threadsafe_function::{ThreadsafeCallContext, ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Status};
use napi_derive::napi;
use parking_lot::Mutex;

use super::convert::{millis, JsSessionStatus, JsText, RawValue};
use crate::approval::ApprovalRequest;
use crate::event::{EventHandler, SpawnerEvent};

/// What travels to JavaScript.
pub(crate) enum Delivery {
    Event(SpawnerEvent),
    /// Answered with `answerApproval(id, approved)`.
    Approval { id: u32, request: ApprovalRequest },
}

pub(crate) type EventFn =
    ThreadsafeFunction<Delivery, Unknown<'static>, FnArgs<(RawValue, RawValue)>, Status, false, true>;

/// The current queue to JavaScript, if the spawner has one.
pub(crate) type Slot = Arc<Mutex<Option<Arc<EventFn>>>>;

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

#[napi(object, js_name = "NativeViolationEvent", object_from_js = false)]
pub struct JsViolationEvent {
    pub session_id: String,
    pub timestamp: f64,
    pub tool_name: String,
    pub input_json: JsText,
    pub rule: String,
    pub detail: String,
}

#[napi(object, js_name = "NativeRateLimitEvent", object_from_js = false)]
pub struct JsRateLimitEvent {
    pub session_id: String,
    pub until: f64,
    pub reason: String,
}

#[napi(object, js_name = "NativeBudgetEvent", object_from_js = false)]
pub struct JsBudgetEvent {
    pub session_id: String,
    pub used: f64,
    pub limit: f64,
}

#[napi(object, js_name = "NativeApprovalRequest", object_from_js = false)]
pub struct JsApprovalRequest {
    pub id: u32,
    pub session_id: String,
    pub tool_name: String,
    pub input_json: JsText,
    pub reason: String,
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
        .build_threadsafe_function::<Delivery>()
        .weak::<true>()
        .callee_handled::<false>()
        .build_callback(|ctx: ThreadsafeCallContext<Delivery>| {
            // A panic must not unwind into Node (it would abort the process).
            match catch_unwind(AssertUnwindSafe(|| to_js(&ctx.env, ctx.value))) {
                Ok(Ok(args)) => Ok(args),
                Ok(Err(e)) => native_error(&ctx.env, &format!("converting an event failed: {e}")),
                Err(_) => native_error(&ctx.env, "converting an event panicked"),
            }
        })
}

/// The JavaScript listener gets `(name, payload)`.
fn to_js(env: &Env, delivery: Delivery) -> napi::Result<FnArgs<(RawValue, RawValue)>> {
    let raw = env.raw();
    let event = match delivery {
        Delivery::Approval { id, request } => {
            let name = unsafe { <&str>::to_napi_value(raw, "approval-request")? };
            let payload = unsafe {
                JsApprovalRequest::to_napi_value(
                    raw,
                    JsApprovalRequest {
                        id,
                        session_id: request.session_id,
                        tool_name: request.tool_name,
                        input_json: JsText(request.input.to_string()),
                        reason: request.reason,
                    },
                )?
            };
            return Ok(FnArgs::from((RawValue(name), RawValue(payload))));
        }
        Delivery::Event(event) => event,
    };
    let name = unsafe { <&str>::to_napi_value(raw, event.name())? };
    let payload = unsafe {
        match event {
            SpawnerEvent::SessionOutput(chunk) => JsOutputEvent::to_napi_value(
                raw,
                JsOutputEvent {
                    session_id: chunk.session_id.to_string(),
                    stream: chunk.stream.as_str().to_owned(),
                    data: JsText(chunk.data),
                },
            )?,
            SpawnerEvent::SessionMessage { session_id, message } => JsMessageEvent::to_napi_value(
                raw,
                JsMessageEvent {
                    session_id: session_id.to_string(),
                    message_json: JsText(message.to_string()),
                },
            )?,
            SpawnerEvent::SessionRetry { session_id, attempt, max_retries, retry_delay_ms, error } => {
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
            }
            SpawnerEvent::PolicyViolation { session_id, violation } => JsViolationEvent::to_napi_value(
                raw,
                JsViolationEvent {
                    session_id: session_id.to_string(),
                    timestamp: millis(violation.timestamp),
                    tool_name: violation.tool_name,
                    input_json: JsText(violation.input.to_string()),
                    rule: violation.rule,
                    detail: violation.detail,
                },
            )?,
            SpawnerEvent::SessionRateLimited { session_id, until, reason } => JsRateLimitEvent::to_napi_value(
                raw,
                JsRateLimitEvent {
                    session_id: session_id.to_string(),
                    until: millis(until),
                    reason,
                },
            )?,
            SpawnerEvent::BudgetExceeded { session_id, used, limit } => JsBudgetEvent::to_napi_value(
                raw,
                JsBudgetEvent {
                    session_id: session_id.to_string(),
                    used: used as f64,
                    limit: limit as f64,
                },
            )?,
            SpawnerEvent::SessionEnded { session_id, status } => JsEndedEvent::to_napi_value(
                raw,
                JsEndedEvent {
                    session_id: session_id.to_string(),
                    status: (*status).into(),
                },
            )?,
            other => JsSessionEvent::to_napi_value(
                raw,
                JsSessionEvent {
                    session_id: other.session_id().unwrap_or_default().to_owned(),
                },
            )?,
        }
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

/// Queues `delivery` if the spawner has a queue; false when it could not be queued.
pub(crate) fn deliver(slot: &Slot, delivery: Delivery) -> bool {
    let Some(tsfn) = slot.lock().clone() else { return false };
    // The queue is unbounded; output is bounded by the credit each chunk holds until
    // it has been converted. A closing queue means Node is exiting.
    tsfn.call(delivery, ThreadsafeFunctionCallMode::NonBlocking) == Status::Ok
}

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
        deliver(&self.slot, Delivery::Event(event));
    }
}
