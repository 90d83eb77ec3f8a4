//! Rasa's action server protocol, as `rasa_sdk` answers it: `POST
//! /webhooks/rasa` (or `.../rasa/webhook`, the path Rasa's `action_endpoint`
//! usually names) with `{"next_action", "sender_id", "tracker", "domain",
//! "version"}`, answered with `{"events": [...], "responses": [...]}`, or
//! with `{"action_name", "error"}` and a status Rasa reads: 400 rejects the
//! action, 404 says there is no such action, anything else is a failed action.
//!
//! The host needs nothing of the domain, so Rasa Pro's domain digest
//! handshake (a request with `domain_digest` and no `domain`) is answered
//! like any other call: the action server asks for the domain (status 449)
//! only when it needs it.

use action_host::{CallContext, ErrorKind, Invocation};
use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Map, Value, json};
use std::sync::Arc;

use super::{
    Adapter, Call, MESSAGE_INTENT, MESSAGE_TEXT, Platform, PlatformSettings, object_at,
    optional_object, text_at, without_nulls,
};
use crate::api::AppState;
use crate::api::error::ApiError;

/// The input attribute holding the latest message's entities, as Rasa sends them.
const ENTITIES: &str = "message_entities";

/// The Rasa adapter.
pub(crate) struct Rasa<'a> {
    settings: &'a PlatformSettings,
}

impl<'a> Rasa<'a> {
    pub(crate) fn new(settings: &'a PlatformSettings) -> Rasa<'a> {
        Rasa { settings }
    }
}

pub(super) fn routes() -> Router<Arc<AppState>> {
    let handle =
        |state, query, headers, body| super::unnamed(Platform::Rasa, state, query, headers, body);
    Router::new()
        .route("/webhooks/rasa", post(handle))
        .route("/webhooks/rasa/webhook", post(handle))
}

impl Adapter for Rasa<'_> {
    fn source(&self) -> &'static str {
        "rasa"
    }

    fn decode(&self, _path_name: Option<&str>, body: &Value) -> Result<Call, ApiError> {
        let name = match body.get("next_action") {
            Some(Value::String(name)) if !name.is_empty() => name,
            Some(_) => return Err(super::bad_field("/next_action", "must be a name")),
            None => return Err(super::bad_field("/next_action", "is missing")),
        };
        object_at(body, "/tracker")?;
        let slots = optional_object(body, "/tracker/slots")?;
        let message = body.pointer("/tracker/latest_message");

        let mut input: Map<String, Value> = without_nulls(slots)
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        if let Some(text) = message.and_then(|m| text_at(m, "/text")) {
            input.insert(MESSAGE_TEXT.into(), text.into());
        }
        let intent = message.and_then(|m| text_at(m, "/intent/name"));
        if let Some(intent) = intent {
            input.insert(MESSAGE_INTENT.into(), intent.into());
        }
        if let Some(Value::Array(entities)) = message.and_then(|m| m.get("entities")) {
            // An entity the message carries stands in for a slot without a
            // value; a slot that has one wins, as Rasa's own mapping does.
            for entity in entities {
                if let (Some(name), Some(value)) = (
                    text_at(entity, "/entity"),
                    entity.get("value").filter(|v| !v.is_null()),
                ) && !input.contains_key(name)
                {
                    input.insert(name.to_owned(), value.clone());
                }
            }
            input.insert(ENTITIES.into(), Value::Array(entities.clone()));
        }

        let sender = text_at(body, "/sender_id").or_else(|| text_at(body, "/tracker/sender_id"));
        let zone_key = self.settings.timezone_attribute();
        let timezone = slots
            .get(zone_key)
            .and_then(Value::as_str)
            .or_else(|| message.and_then(|m| m.get("metadata")?.get(zone_key)?.as_str()));
        let context = CallContext {
            conversation_id: sender.map(str::to_owned),
            user_id: sender.map(str::to_owned),
            scenario: text_at(body, "/tracker/active_loop/name").map(str::to_owned),
            intent: intent.map(str::to_owned),
            locale: message
                .and_then(|m| text_at(m, "/metadata/language"))
                .map(str::to_owned),
            timezone: timezone.map(str::to_owned),
        };
        Ok(Call {
            action: self.settings.action(name).to_owned(),
            context,
            input,
        })
    }

    fn encode(&self, _call: &Call, done: Invocation) -> (StatusCode, Value) {
        let mut events: Vec<Value> = done
            .attributes
            .iter()
            .map(|(name, value)| slot(name, value.clone()))
            .collect();
        if let Some(flag) = self.settings.success_attribute()
            && !done.attributes.contains_key(flag)
        {
            events.push(slot(flag, Value::Bool(done.success)));
        }
        let responses: Vec<Value> = done
            .messages
            .iter()
            .map(|text| json!({"text": text}))
            .collect();
        (
            StatusCode::OK,
            json!({"events": events, "responses": responses}),
        )
    }

    /// Rasa's `token:` setting sends the token in the query, under the
    /// name its `token_name:` gives (`token` unless set).
    fn query_token(&self) -> Option<&str> {
        Some(self.settings.token_name())
    }

    fn encode_error(&self, request: Option<&Value>, error: &ApiError) -> (StatusCode, Value) {
        let action_name = request
            .and_then(|body| body.get("next_action"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        (
            status(error),
            json!({"action_name": action_name, "error": error.message()}),
        )
    }
}

/// The status Rasa reads for `error`: 400 rejects the action (the request
/// or its input cannot run), 404 names no action, 500 is an action that
/// failed while running; the service's own refusals keep their status.
fn status(error: &ApiError) -> StatusCode {
    match error {
        ApiError::UnknownAction(_) => StatusCode::NOT_FOUND,
        ApiError::BadRequest(_) | ApiError::MalformedJson(_) | ApiError::InvalidInput(_) => {
            StatusCode::BAD_REQUEST
        }
        ApiError::Invocation { error: failed, .. } => match failed.kind {
            ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
            ErrorKind::UnknownAction => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        },
        other => other.status_and_code().0,
    }
}

/// A `SlotSet` event, as `rasa_sdk` writes one.
fn slot(name: &str, value: Value) -> Value {
    json!({"event": "slot", "timestamp": null, "name": name, "value": value})
}
