//! The JavaScript `approvalHandler` as the core's [`ApprovalHandler`]: each question
//! goes to JavaScript through the event queue, and its answer comes back through
//! `answerApproval(id, approved)`. The core's approval timeout covers an answer that
//! never comes.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::pipe::{Delivery, Payload, Pipe};
use crate::approval::{ApprovalHandler, ApprovalRequest};

#[derive(Default)]
pub(crate) struct Pending {
    next: AtomicU32,
    waiting: Mutex<HashMap<u32, oneshot::Sender<bool>>>,
}

impl Pending {
    /// Hands JavaScript's answer to the question waiting for it (a late answer to a
    /// question that timed out is dropped).
    pub fn answer(&self, id: u32, approved: bool) {
        if let Some(waiter) = self.waiting.lock().remove(&id) {
            let _ = waiter.send(approved);
        }
    }
}

pub(crate) struct JsApprovals {
    pub pipe: Arc<Pipe>,
    pub pending: Arc<Pending>,
}

impl ApprovalHandler for JsApprovals {
    fn approve(&self, request: ApprovalRequest) -> Pin<Box<dyn Future<Output = bool> + Send>> {
        let id = self.pending.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.waiting.lock().insert(id, tx);
        let queued = self.pipe.deliver(Delivery { target: 0, payload: Payload::Approval { id, request } });
        let forget = Forget { pending: Arc::clone(&self.pending), id };
        Box::pin(async move {
            // Dropped on return, and when the core gives up waiting (timeout).
            let _forget = forget;
            queued && rx.await.unwrap_or(false)
        })
    }
}

struct Forget {
    pending: Arc<Pending>,
    id: u32,
}

impl Drop for Forget {
    fn drop(&mut self) {
        self.pending.waiting.lock().remove(&self.id);
    }
}
