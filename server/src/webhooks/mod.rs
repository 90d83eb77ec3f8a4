//! Webhook adapters: each decodes a platform's request into an action, a
//! context and input attributes, and encodes the result (or the error) the
//! way the platform expects. One file per platform.

mod opendialog;

use action_host::{CallContext, Invocation};
use axum::Router;
use axum::http::StatusCode;
use serde_json::{Map, Value};
use std::sync::Arc;

use crate::api::AppState;
use crate::api::error::ApiError;

/// One platform's webhook format.
pub(crate) trait Adapter {
    /// What the platform sends, decoded: the action to run, its context and
    /// its input attributes.
    fn decode(&self, path_name: Option<&str>, body: &Value) -> Result<Call, ApiError>;
    /// The answer to a call that ran to an outcome.
    fn encode(&self, call: &Call, done: Invocation) -> (StatusCode, Value);
    /// The answer to a call that failed, in the platform's error form.
    fn encode_error(&self, error: &ApiError) -> (StatusCode, Value);
}

/// A decoded webhook call.
pub(crate) struct Call {
    /// The action to run.
    pub(crate) action: String,
    /// The conversation's context.
    pub(crate) context: CallContext,
    /// The input attributes.
    pub(crate) input: Map<String, Value>,
}

/// The webhook routes.
pub(crate) fn routes() -> Router<Arc<AppState>> {
    opendialog::routes()
}
