//! Core events as what JavaScript's listener gets: `(target, name, payload)`, the
//! payload a plain object in the shapes `lib/` turns into the contract's events.

use napi::bindgen_prelude::ToNapiValue;
use napi::{sys, Env};
use napi_derive::napi;

use super::convert::{millis, JsSessionStatus, JsText};
use super::pipe::{raw_args, Args, Delivery, Payload};
use super::ErrorFields;
use crate::event::SpawnerEvent;
use crate::output::Text;

#[napi(object, js_name = "NativeOutputEvent", object_from_js = false)]
pub struct JsOutputEvent {
    pub session_id: String,
    #[napi(js_name = "type")]
    pub stream: String,
    pub data: JsText<Text>,
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

/// A session's start: what varies in its first status (`lib/` fills in the rest).
#[napi(object, js_name = "NativeSpawnedEvent", object_from_js = false)]
pub struct JsSpawnedEvent {
    pub session_id: String,
    pub pid: u32,
    pub start_time: f64,
    pub claude_session_id: Option<String>,
}

/// How a `startSession` call ended: the session's id, or the error to reject with.
#[napi(object, js_name = "NativeStartedEvent", object_from_js = false)]
pub struct JsStartedEvent {
    pub token: u32,
    pub session_id: Option<String>,
    pub error: Option<JsStartError>,
}

/// An error as `lib/convert.js`'s `error()` turns it into an `Error` or `TypeError`.
#[napi(object, js_name = "NativeStartError", object_from_js = false)]
pub struct JsStartError {
    pub code: String,
    pub message: String,
    pub session_id: Option<String>,
    pub field: Option<String>,
}

impl JsStartedEvent {
    fn new(token: u32, outcome: Result<String, crate::SpawnError>) -> Self {
        match outcome {
            Ok(session_id) => Self { token, session_id: Some(session_id), error: None },
            Err(e) => {
                let ErrorFields { code, message, session_id, field } = e.into();
                let error = JsStartError { code: code.to_owned(), message, session_id, field };
                Self { token, session_id: None, error: Some(error) }
            }
        }
    }
}

/// A delivery as the listener's arguments.
pub(crate) fn to_js(env: &Env, delivery: Delivery) -> napi::Result<Args> {
    let raw = env.raw();
    let Delivery { target, payload } = delivery;
    let event = match payload {
        Payload::Recheck => return raw_args(env, target, "recheck", unsafe { <()>::to_napi_value(raw, ())? }),
        Payload::Supply { request } => return raw_args(env, target, "pool-supply", unsafe { u32::to_napi_value(raw, request)? }),
        Payload::Started { token, outcome } => {
            let payload = JsStartedEvent::new(token, outcome);
            return raw_args(env, target, "session-started", unsafe { JsStartedEvent::to_napi_value(raw, payload)? });
        }
        Payload::Approval { id, request } => {
            let payload = JsApprovalRequest {
                id,
                session_id: request.session_id,
                tool_name: request.tool_name,
                input_json: JsText(request.input.to_string()),
                reason: request.reason,
            };
            // SAFETY: on JavaScript's thread, in the current scope (here and below).
            return raw_args(env, target, "approval-request", unsafe { JsApprovalRequest::to_napi_value(raw, payload)? });
        }
        Payload::Batch(held) => return batch(env, held),
        Payload::Event(event) => event,
    };
    let name = event.name();
    if let Some(json) = super::recovery::event_json(&event) {
        return raw_args(env, target, name, unsafe { JsText::to_napi_value(raw, JsText(json))? });
    }
    let payload = unsafe {
        match event {
            SpawnerEvent::SessionSpawned { session_id, pid, status } => JsSpawnedEvent::to_napi_value(
                raw,
                JsSpawnedEvent {
                    session_id: session_id.to_string(),
                    pid,
                    start_time: millis(status.start_time),
                    claude_session_id: status.claude_session_id,
                },
            )?,
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
            other => match super::pool::event_payload(raw, other)? {
                Ok(payload) => payload,
                Err(other) => {
                    let session_id = other.session_id().unwrap_or_default().to_owned();
                    JsSessionEvent::to_napi_value(raw, JsSessionEvent { session_id })?
                }
            },
        }
    };
    raw_args(env, target, name, payload)
}

/// Several deliveries as one `batch`: an array of `[target, name, payload]`, which
/// `lib/spawner.js` routes one by one, in order.
fn batch(env: &Env, held: Vec<Delivery>) -> napi::Result<Args> {
    let raw = env.raw();
    let mut list = std::ptr::null_mut();
    // SAFETY: on JavaScript's thread, in the current scope, with values made here.
    unsafe {
        napi::check_status!(sys::napi_create_array_with_length(raw, held.len(), &mut list), "building a batch of events failed")?;
        for (index, delivery) in held.into_iter().enumerate() {
            let (target, name, payload) = to_js(env, delivery)?.data;
            let mut entry = std::ptr::null_mut();
            napi::check_status!(sys::napi_create_array_with_length(raw, 3, &mut entry), "building a batch of events failed")?;
            for (slot, value) in [target, name, payload].into_iter().enumerate() {
                napi::check_status!(sys::napi_set_element(raw, entry, slot as u32, value.0), "building a batch of events failed")?;
            }
            napi::check_status!(sys::napi_set_element(raw, list, index as u32, entry), "building a batch of events failed")?;
        }
    }
    raw_args(env, 0, "batch", list)
}

/// Reported to JavaScript as a `native-error` delivery instead of a fatal exception.
pub(crate) fn native_error(env: &Env, message: &str) -> napi::Result<Args> {
    tracing::error!("{message}");
    // SAFETY: on JavaScript's thread, in the current scope.
    let text = unsafe { <&str>::to_napi_value(env.raw(), message)? };
    raw_args(env, 0, "native-error", text)
}
