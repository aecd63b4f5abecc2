//! Approvals: a tool call that hits one of the charter's `requiredApprovals` keywords
//! is put to the daemon, which answers yes or no. No handler, a handler that fails,
//! or no answer within the spawner's approval timeout all mean no.

use std::future::Future;
use std::pin::Pin;

use serde_json::Value;

/// What the daemon is asked.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalRequest {
    pub session_id: String,
    /// Claude Code's tool name, e.g. `Bash`.
    pub tool_name: String,
    /// The tool call's input, e.g. `{"command": "./deploy.sh"}`.
    pub input: Value,
    /// The `requiredApprovals` keyword that the call contains.
    pub reason: String,
}

/// Decides approval requests. Implemented for closures returning a future of `bool`.
pub trait ApprovalHandler: Send + Sync + 'static {
    fn approve(&self, request: ApprovalRequest) -> Pin<Box<dyn Future<Output = bool> + Send>>;
}

impl<F, Fut> ApprovalHandler for F
where
    F: Fn(ApprovalRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    fn approve(&self, request: ApprovalRequest) -> Pin<Box<dyn Future<Output = bool> + Send>> {
        Box::pin(self(request))
    }
}
