//! The plain objects queue operations resolve with (times as epoch milliseconds).

use napi_derive::napi;

use super::events::event_to_js;
use crate::napi::convert::{count, millis};
use crate::pool::queue::{Expired, ExpiredFate, QueueSnapshot, RequestState, Taken};

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
