//! A queue's events on their way to JavaScript: their names and payloads, and the
//! subscription that forwards them through a weak thread-safe function.

use std::sync::Arc;

use napi::bindgen_prelude::{FnArgs, ToNapiValue, Unknown};
use napi::threadsafe_function::ThreadsafeFunction;
use napi::{Env, Result, Status};
use parking_lot::Mutex;
use tokio::task::JoinHandle;

use super::objects::JsQueueEvent;
use crate::napi::convert::RawValue;
use crate::pool::queue::QueueEvent;

pub(super) enum Notice {
    Event(QueueEvent),
    /// The subscription fell this many events behind and lost them.
    Lagged(u64),
}

pub(super) type QueueFn = ThreadsafeFunction<Notice, Unknown<'static>, FnArgs<(RawValue, RawValue)>, Status, false, true>;

pub(super) const NO_EVENT: JsQueueEvent = JsQueueEvent { id: None, priority: None, host: None, attempt: None, detail: None, missed: None };

/// An event's name and payload, as listeners and `lookup` get them.
pub(super) fn event_to_js(event: QueueEvent) -> (&'static str, JsQueueEvent) {
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

pub(super) fn notice_to_js(env: &Env, notice: Notice) -> Result<FnArgs<(RawValue, RawValue)>> {
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

pub(super) fn native_error_args(env: &Env, message: &str) -> Result<FnArgs<(RawValue, RawValue)>> {
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
pub(super) struct Subscription {
    pub(super) function: Arc<Mutex<Option<QueueFn>>>,
    pub(super) task: JoinHandle<()>,
}

impl Subscription {
    /// On JavaScript's thread. Aborting (not releasing) the function discards what is
    /// queued on it and not yet dispatched, so that nothing arrives after this.
    #[allow(deprecated)] // napi-rs deprecates `abort` in favour of dropping, which delivers what is queued.
    pub(super) fn stop(self) {
        self.task.abort();
        if let Some(function) = self.function.lock().take() {
            let _ = function.abort();
        }
    }
}
