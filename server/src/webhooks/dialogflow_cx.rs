//! Dialogflow CX's webhook (`WebhookRequest` and `WebhookResponse` of the v3
//! API, in their JSON form): `POST /webhooks/dialogflow-cx/{name}`, or
//! `POST /webhooks/dialogflow-cx` with the action chosen by the
//! fulfillment's tag. Attributes come back as session parameters (a null
//! removes one, as CX does) and messages as text responses.
//!
//! CX waits 5 s for a webhook unless its timeout is set otherwise; the
//! action's deadline is cut to end before that (`timeout_ms` in the
//! settings), so the flow hears the timeout rather than CX giving up.

use action_host::{CallContext, Invocation};
use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;

use super::{
    Adapter, Call, MESSAGE_INTENT, MESSAGE_TEXT, Platform, PlatformSettings, object_at,
    optional_object, text_at, without_nulls,
};
use crate::api::AppState;
use crate::api::error::ApiError;

/// CX's default webhook timeout, in milliseconds.
const DEFAULT_TIMEOUT_MS: u64 = 5000;

/// The largest webhook response CX accepts.
const MAX_RESPONSE_BYTES: usize = 64 << 10;

/// The Dialogflow CX adapter.
pub(crate) struct DialogflowCx<'a> {
    settings: &'a PlatformSettings,
}

impl<'a> DialogflowCx<'a> {
    pub(crate) fn new(settings: &'a PlatformSettings) -> DialogflowCx<'a> {
        DialogflowCx { settings }
    }
}

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/webhooks/dialogflow-cx",
            post(|state, query, headers, body| {
                super::unnamed(Platform::DialogflowCx, state, query, headers, body)
            }),
        )
        .route(
            "/webhooks/dialogflow-cx/{name}",
            post(|state, name, query, headers, body| {
                super::named(Platform::DialogflowCx, state, name, query, headers, body)
            }),
        )
}

impl Adapter for DialogflowCx<'_> {
    fn source(&self) -> &'static str {
        "dialogflow-cx"
    }

    fn decode(&self, path_name: Option<&str>, body: &Value) -> Result<Call, ApiError> {
        let action = match path_name {
            Some(name) => name.to_owned(),
            None => match body.pointer("/fulfillmentInfo/tag") {
                Some(Value::String(tag)) if !tag.is_empty() => self.settings.action(tag).to_owned(),
                Some(_) => {
                    return Err(super::bad_field("/fulfillmentInfo/tag", "must be a name"));
                }
                None => {
                    return Err(super::bad_field(
                        "/fulfillmentInfo/tag",
                        "is missing (name the action in the URL, or give the fulfillment a tag)",
                    ));
                }
            },
        };
        let session = object_at(body, "/sessionInfo")?;
        let parameters = optional_object(body, "/sessionInfo/parameters")?;
        let intent_parameters = optional_object(body, "/intentInfo/parameters")?;

        let mut input: Map<String, Value> = without_nulls(parameters)
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        // The intent's parameters are what the user just said: they are newer
        // than the session's.
        for (name, parameter) in intent_parameters {
            if let Some(value) = parameter.get("resolvedValue").filter(|v| !v.is_null()) {
                input.insert(name.clone(), value.clone());
            }
        }
        if let Some(text) = text_at(body, "/text").or_else(|| text_at(body, "/transcript")) {
            input.insert(MESSAGE_TEXT.into(), text.into());
        }
        let intent = text_at(body, "/intentInfo/displayName");
        if let Some(intent) = intent {
            input.insert(MESSAGE_INTENT.into(), intent.into());
        }

        let conversation = session
            .get("session")
            .and_then(Value::as_str)
            .and_then(|path| path.rsplit('/').next())
            .filter(|id| !id.is_empty());
        let timezone = parameters
            .get(self.settings.timezone_attribute())
            .and_then(Value::as_str);
        let context = CallContext {
            conversation_id: conversation.map(str::to_owned),
            user_id: None,
            scenario: text_at(body, "/pageInfo/displayName").map(str::to_owned),
            intent: intent.map(str::to_owned),
            locale: text_at(body, "/languageCode").map(str::to_owned),
            timezone: timezone.map(str::to_owned),
        };
        Ok(Call {
            action,
            context,
            input,
        })
    }

    fn encode(&self, _call: &Call, done: Invocation) -> (StatusCode, Value) {
        let mut parameters = done.attributes;
        if let Some(flag) = self.settings.success_attribute() {
            parameters.entry(flag).or_insert(Value::Bool(done.success));
        }
        let messages: Vec<Value> = done
            .messages
            .iter()
            .map(|text| json!({"text": {"text": [text]}}))
            .collect();
        let body = json!({
            "fulfillmentResponse": {"messages": messages},
            "sessionInfo": {"parameters": parameters},
        });
        let size = serde_json::to_vec(&body).map_or(usize::MAX, |bytes| bytes.len());
        if size > MAX_RESPONSE_BYTES {
            return self.encode_error(
                None,
                &ApiError::Internal(format!(
                    "the answer is {size} bytes, over the {MAX_RESPONSE_BYTES} bytes Dialogflow \
                     CX accepts from a webhook"
                )),
            );
        }
        (StatusCode::OK, body)
    }

    fn encode_error(&self, _request: Option<&Value>, error: &ApiError) -> (StatusCode, Value) {
        let (status, code) = error.status_and_code();
        let mut parameters = Map::new();
        if let Some(flag) = self.settings.success_attribute() {
            parameters.insert(flag.to_owned(), Value::Bool(false));
        }
        (
            status,
            json!({
                "sessionInfo": {"parameters": parameters},
                "payload": {"error": {"code": code, "message": error.message()}},
            }),
        )
    }

    fn deadline_cap(&self) -> Option<Duration> {
        self.settings.deadline_cap(Some(DEFAULT_TIMEOUT_MS))
    }
}
