//! OpenDialog's webhook action format: `POST /webhooks/opendialog/{name}`
//! with `{"input_data": {"attributes": {...}}}`, answered with
//! `{"successful": true, "output_data": {"attributes": {...}}}` or
//! `{"successful": false, "errors": [{"message": ...}]}`.

use action_host::Invocation;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};
use std::sync::Arc;

use super::{Adapter, Call, Platform};
use crate::api::AppState;
use crate::api::error::ApiError;

/// The OpenDialog adapter.
pub(crate) struct OpenDialog;

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new().route(
        "/webhooks/opendialog/{name}",
        post(|state, name, query, headers, body| {
            super::named(Platform::OpenDialog, state, name, query, headers, body)
        }),
    )
}

impl Adapter for OpenDialog {
    fn source(&self) -> &'static str {
        "opendialog"
    }

    fn decode(&self, path_name: Option<&str>, body: &Value) -> Result<Call, ApiError> {
        let input = super::object_at(body, "/input_data/attributes")?.clone();
        Ok(Call {
            action: path_name.unwrap_or_default().to_owned(),
            context: Default::default(),
            input,
        })
    }

    fn encode(&self, _call: &Call, done: Invocation) -> (StatusCode, Value) {
        let body = if done.success {
            json!({"successful": true, "output_data": {"attributes": done.attributes}})
        } else {
            let message = if done.messages.is_empty() {
                "the action reported no success".to_owned()
            } else {
                done.messages.join(" ")
            };
            json!({"successful": false, "errors": [{"message": message}]})
        };
        (StatusCode::OK, body)
    }

    fn encode_error(&self, _request: Option<&Value>, error: &ApiError) -> (StatusCode, Value) {
        let (status, _) = error.status_and_code();
        (
            status,
            json!({"successful": false, "errors": [{"message": error.message()}]}),
        )
    }
}
