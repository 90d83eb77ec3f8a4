//! Webhook adapters: each decodes a platform's request into an action, a
//! context and input attributes, and encodes the result (or the error) the
//! way the platform expects. One file per platform; what they share (the
//! token, the body's caps, the call) is `answer` here. `docs/platforms.md`
//! describes each format and its mapping.

mod dialogflow_cx;
mod opendialog;
mod rasa;
mod settings;

use action_host::{CallContext, Invocation};
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

use crate::api::AppState;
use crate::api::auth::INVOKE;
use crate::api::body::{self, MAX_JSON_BYTES};
use crate::api::error::ApiError;

pub use settings::{PlatformSettings, WebhookSettings};

/// A platform whose webhook format the service speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// OpenDialog's webhook actions.
    OpenDialog,
    /// Rasa's action server protocol.
    Rasa,
    /// Dialogflow CX's webhook (`WebhookRequest` / `WebhookResponse`, v3).
    DialogflowCx,
}

/// One platform's webhook format.
pub trait Adapter: Send + Sync {
    /// What the platform sends, decoded: the action to run, its context and
    /// its input attributes. `path_name` is the action named in the URL.
    /// An error names the field that is missing or wrong.
    fn decode(&self, path_name: Option<&str>, body: &Value) -> Result<Call, ApiError>;
    /// The answer to a call that ran to an outcome.
    fn encode(&self, call: &Call, done: Invocation) -> (StatusCode, Value);
    /// The answer to a call that failed, in the platform's error form;
    /// `request` is the body, when it was JSON.
    fn encode_error(&self, request: Option<&Value>, error: &ApiError) -> (StatusCode, Value);
    /// The platform's name, as an invocation record gives its source.
    fn source(&self) -> &'static str;
    /// The longest deadline a call may have: the platform waits no longer.
    fn deadline_cap(&self) -> Option<Duration> {
        None
    }
    /// The query parameter the platform sends the token in, for a platform
    /// whose simplest setting puts it there.
    fn query_token(&self) -> Option<&str> {
        None
    }
}

/// A decoded webhook call.
#[derive(Debug, Clone)]
pub struct Call {
    /// The action to run.
    pub action: String,
    /// The conversation's context.
    pub context: CallContext,
    /// The input attributes.
    pub input: Map<String, Value>,
}

/// The adapter of `platform`, with the host file's `settings`.
pub fn adapter(platform: Platform, settings: &WebhookSettings) -> Box<dyn Adapter + '_> {
    match platform {
        Platform::OpenDialog => Box::new(opendialog::OpenDialog),
        Platform::Rasa => Box::new(rasa::Rasa::new(&settings.rasa)),
        Platform::DialogflowCx => {
            Box::new(dialogflow_cx::DialogflowCx::new(&settings.dialogflow_cx))
        }
    }
}

/// The webhook routes.
pub(crate) fn routes() -> Router<Arc<AppState>> {
    opendialog::routes()
        .merge(rasa::routes())
        .merge(dialogflow_cx::routes())
}

/// A webhook route whose path names the action.
async fn named(
    platform: Platform,
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    request: axum::body::Body,
) -> Response {
    let adapter = adapter(platform, &state.webhooks);
    answer(
        &*adapter,
        &state,
        Some(&name),
        &headers,
        query.as_deref(),
        request,
    )
    .await
}

/// A webhook route whose request names the action.
async fn unnamed(
    platform: Platform,
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    request: axum::body::Body,
) -> Response {
    let adapter = adapter(platform, &state.webhooks);
    answer(&*adapter, &state, None, &headers, query.as_deref(), request).await
}

/// A webhook request answered by `adapter`: the token, the body, the call.
/// Every failure, the token's included, answers in the platform's form.
async fn answer(
    adapter: &dyn Adapter,
    state: &AppState,
    path_name: Option<&str>,
    headers: &HeaderMap,
    query: Option<&str>,
    request: axum::body::Body,
) -> Response {
    let mut json = None;
    let answered = async {
        state
            .auth
            .check_webhook(headers, query, adapter.query_token(), INVOKE)?;
        body::refuse_declared_over(headers, MAX_JSON_BYTES)?;
        let bytes = body::read(request, MAX_JSON_BYTES, state.body_timeout).await?;
        let body = json.insert(body::parse_json(&bytes)?);
        let call = adapter.decode(path_name, body)?;
        let done = state
            .catalog
            .invoke_within(
                &call.action,
                call.context.clone(),
                &call.input,
                adapter.deadline_cap(),
                adapter.source(),
            )
            .await?;
        Ok(adapter.encode(&call, done))
    }
    .await;
    match answered {
        Ok((status, body)) => (status, axum::Json(body)).into_response(),
        Err(error) => {
            let (status, body) = adapter.encode_error(json.as_ref(), &error);
            let mut response = (status, axum::Json(body)).into_response();
            if let Some(retry_after) = error.retry_after() {
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after.as_secs().max(1)),
                );
            }
            response
        }
    }
}

/// The input attribute holding the text the user sent.
const MESSAGE_TEXT: &str = "message_text";
/// The input attribute holding the intent the platform matched.
const MESSAGE_INTENT: &str = "message_intent";

/// The string at `pointer` in `body`, if it is one and not empty.
fn text_at<'a>(body: &'a Value, pointer: &str) -> Option<&'a str> {
    body.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|text| !text.is_empty())
}

/// A required object field, or an error naming it.
fn object_at<'a>(body: &'a Value, pointer: &str) -> Result<&'a Map<String, Value>, ApiError> {
    match body.pointer(pointer) {
        Some(Value::Object(object)) => Ok(object),
        Some(_) => Err(bad_field(pointer, "must be an object")),
        None => Err(bad_field(pointer, "is missing")),
    }
}

/// An optional object field (absent or null is empty), or an error naming it.
fn optional_object<'a>(body: &'a Value, pointer: &str) -> Result<&'a Map<String, Value>, ApiError> {
    static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);
    match body.pointer(pointer) {
        None | Some(Value::Null) => Ok(&EMPTY),
        Some(Value::Object(object)) => Ok(object),
        Some(_) => Err(bad_field(pointer, "must be an object")),
    }
}

/// The error of a request that is not the platform's shape.
fn bad_field(pointer: &str, why: &str) -> ApiError {
    let field = pointer.trim_start_matches('/').replace('/', ".");
    ApiError::BadRequest(format!("the request's `{field}` {why}"))
}

/// The object's entries with a value, the nulls left out.
fn without_nulls(object: &Map<String, Value>) -> impl Iterator<Item = (&String, &Value)> {
    object.iter().filter(|(_, value)| !value.is_null())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// JSON built from the names the adapters read, so that generated bodies
    /// reach their deeper paths with every wrong type.
    fn body() -> impl Strategy<Value = Value> {
        let key = prop::sample::select(vec![
            "next_action",
            "sender_id",
            "tracker",
            "slots",
            "latest_message",
            "text",
            "intent",
            "name",
            "entities",
            "entity",
            "value",
            "metadata",
            "language",
            "timezone",
            "active_loop",
            "sessionInfo",
            "session",
            "parameters",
            "intentInfo",
            "resolvedValue",
            "displayName",
            "fulfillmentInfo",
            "tag",
            "pageInfo",
            "languageCode",
            "transcript",
            "input_data",
            "attributes",
        ]);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-z/]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(5, 64, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((key.clone(), inner), 0..6).prop_map(|entries| {
                    Value::Object(
                        entries
                            .into_iter()
                            .map(|(k, v)| (k.to_owned(), v))
                            .collect(),
                    )
                }),
            ]
        })
    }

    proptest! {
        #[test]
        fn no_body_makes_an_adapter_panic(body in body()) {
            let settings = WebhookSettings::default();
            for platform in [Platform::OpenDialog, Platform::Rasa, Platform::DialogflowCx] {
                let adapter = adapter(platform, &settings);
                for path_name in [None, Some("fixture")] {
                    if let Err(error) = adapter.decode(path_name, &body) {
                        let (status, _) = adapter.encode_error(Some(&body), &error);
                        prop_assert!(status.is_client_error(), "{status} for {error}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_missing_field_is_named_with_its_path() {
        let settings = WebhookSettings::default();
        let rasa = adapter(Platform::Rasa, &settings);
        let error = rasa
            .decode(
                None,
                &serde_json::json!({"next_action": "a", "tracker": {"slots": 1}}),
            )
            .unwrap_err();
        assert_eq!(
            error.message(),
            "the request's `tracker.slots` must be an object"
        );
        let cx = adapter(Platform::DialogflowCx, &settings);
        let error = cx.decode(Some("a"), &serde_json::json!({})).unwrap_err();
        assert_eq!(error.message(), "the request's `sessionInfo` is missing");
    }
}
