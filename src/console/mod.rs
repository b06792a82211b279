//! The operator's console: one page served by the plugin on its own listener
//! (`lsps1-admin-bind`), the JSON it reads, and `/metrics` for Prometheus. A room of its own
//! over the same figures as `lsps1-status` ([`figures`]).
//!
//! Every API route *is* an `lsps1-*` command: the page's reads and actions run through
//! [`Operator::command`], the very handlers `lightning-cli` reaches, and each request's
//! rune is checked by lightningd's `checkrune` against that command and its params, as
//! clnrest does. A read-only rune (`method^lsps1-list|method^lsps1-get|method=lsps1-status`)
//! reads everything and can act on nothing.

pub mod figures;
mod server;

use std::future::Future;

use serde_json::Value;

pub use server::{router, spawn};

use crate::ports::{NodeError, RuneVerdict};

/// An `lsps1-*` command's error, as `lightning-cli` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError {
    pub code: i64,
    pub message: String,
}

impl CommandError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        CommandError { code, message: message.into() }
    }
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

/// Bad params (lightningd's code for them).
pub const INVALID_PARAMS: i64 = -32602;
/// The command cannot be done in the order's state (cancel a completed order).
pub const NOT_NOW: i64 = -32600;
/// The store or the node failed.
pub const INTERNAL: i64 = -32603;

/// What the console needs of the plugin: its commands, its metrics and lightningd's rune
/// check. `cln` implements it over the same handlers as its RPC methods.
pub trait Operator: Send + Sync + 'static {
    /// Run `lsps1-<method>` with `params` (by name).
    fn command(&self, method: &'static str, params: Value) -> impl Future<Output = Result<Value, CommandError>> + Send;

    /// The Prometheus text of the figures and running counts.
    fn metrics(&self) -> impl Future<Output = Result<String, CommandError>> + Send;

    /// `checkrune` for `method` with `params`.
    fn check_rune(
        &self,
        rune: String,
        method: &'static str,
        params: Value,
    ) -> impl Future<Output = Result<RuneVerdict, NodeError>> + Send;
}
