//! The handlers of the API's routes: each reads its request, asks the
//! catalog, and answers with a view.

use action_host::{CallContext, Invocation};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::api::AppState;
use crate::api::auth::{AsDesigner, AsInvoker, AsOperator, AsScraper, DESIGNER, Role};
use crate::api::body::{JsonBody, Upload};
use crate::api::error::ApiError;
use crate::api::name::ActionName;
use crate::api::precondition::IfRevision;
use crate::api::views::{ActionList, ActionView, Health, Me, TriedCall, VersionList};
use crate::catalog::{RollbackSettings, VersionRef};
use crate::config_file::{ActionDoc, REDACTED};

type Shared = State<Arc<AppState>>;

/// `GET /healthz`: `ok`, `starting` or `degraded`, for anyone (a load
/// balancer sends no token). What is loading, what failed and why are for a
/// designer's or the operator's token: the reasons can name files, secrets
/// and the database, and the names are the actions a caller may try.
pub(crate) async fn health(State(state): Shared, headers: HeaderMap) -> Json<Health> {
    let health = state.catalog.health();
    if state.auth.check(&headers, DESIGNER).is_ok() {
        return Json(health);
    }
    Json(Health {
        status: health.status,
        ..Health::default()
    })
}

/// `GET /metrics`, in the Prometheus text format.
pub(crate) async fn metrics(_: AsScraper, State(state): Shared) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.catalog.render_metrics(),
    )
        .into_response()
}

/// `GET /v1/me`: the role of the presented token, for a client (the page)
/// that shows only what the role may do. The API checks every route anyway.
pub(crate) async fn me(AsDesigner(role): AsDesigner) -> Json<Me> {
    Json(Me {
        role: role.unwrap_or(Role::Operator).name(),
        auth: role.is_some(),
    })
}

/// `GET /v1/actions`.
pub(crate) async fn list(_: AsDesigner, State(state): Shared) -> Json<ActionList> {
    Json(state.catalog.list())
}

/// `GET /v1/actions/{name}`.
pub(crate) async fn show(
    _: AsDesigner,
    State(state): Shared,
    ActionName(name): ActionName,
) -> Result<Json<ActionView>, ApiError> {
    state.catalog.view(&name).map(Json)
}

/// `PUT /v1/actions/{name}`: a new version; 201 for a new name.
pub(crate) async fn upload(
    AsDesigner(role): AsDesigner,
    State(state): Shared,
    Path(name): Path<String>,
    IfRevision(expect): IfRevision,
    Upload(bytes, _held): Upload,
) -> Result<(StatusCode, Json<ActionView>), ApiError> {
    let by = role.map_or("anonymous", |role| role.name());
    let (view, created) = state.catalog.deploy(&name, bytes, by, expect).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)))
}

/// `DELETE /v1/actions/{name}`.
pub(crate) async fn delete(
    AsDesigner(role): AsDesigner,
    State(state): Shared,
    ActionName(name): ActionName,
    IfRevision(expect): IfRevision,
) -> Result<StatusCode, ApiError> {
    let by_operator = role != Some(Role::Designer);
    state.catalog.delete(&name, expect, by_operator).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/actions/{name}/versions`, newest first.
pub(crate) async fn versions(
    _: AsDesigner,
    State(state): Shared,
    ActionName(name): ActionName,
) -> Result<Json<VersionList>, ApiError> {
    state.catalog.versions(&name).map(Json)
}

/// What `POST /v1/actions/{name}/rollback` takes: a version by number or by
/// SHA-256, and which settings to serve it with.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    version: Option<u64>,
    sha256: Option<String>,
    #[serde(default)]
    settings: RollbackSettings,
}

/// `POST /v1/actions/{name}/rollback`.
pub(crate) async fn rollback(
    AsDesigner(role): AsDesigner,
    State(state): Shared,
    ActionName(name): ActionName,
    IfRevision(expect): IfRevision,
    JsonBody(body): JsonBody,
) -> Result<Json<ActionView>, ApiError> {
    let usage = "send {\"version\": N} or {\"sha256\": \"...\"}, and optionally \
                 \"settings\": \"current\" or \"as-uploaded\"";
    let body: RollbackBody = serde_json::from_value(body)
        .map_err(|e| ApiError::InvalidInput(format!("invalid rollback: {e}; {usage}")))?;
    // The settings a version had may grant more than the operator allows
    // now: bringing them back is the operator's decision, as grants are.
    if body.settings == RollbackSettings::AsUploaded && role == Some(Role::Designer) {
        return Err(ApiError::Forbidden(
            "serving a version with the settings it was uploaded with restores its grants \
             and secrets: that needs the operator token"
                .into(),
        ));
    }
    let to = match (body.version, body.sha256) {
        (Some(version), None) => VersionRef::Number(version),
        (None, Some(sha256)) => VersionRef::sha256(&sha256).map_err(ApiError::InvalidInput)?,
        _ => return Err(ApiError::InvalidInput(format!("name one version: {usage}"))),
    };
    state
        .catalog
        .rollback(&name, to, body.settings, expect)
        .await
        .map(Json)
}

/// `PUT /v1/actions/{name}/grants`: the operator's settings, whole. A
/// secret sent without a `value` keeps the value it has now, so that a
/// client that read the settings (values redacted) can change the grants
/// without knowing the secrets.
pub(crate) async fn grants(
    _: AsOperator,
    State(state): Shared,
    ActionName(name): ActionName,
    IfRevision(expect): IfRevision,
    JsonBody(body): JsonBody,
) -> Result<Json<ActionView>, ApiError> {
    let doc: ActionDoc = serde_json::from_value(body)
        .map_err(|e| ApiError::InvalidSettings(format!("invalid settings: {e}")))?;
    if let Some(secret) = doc.secrets.iter().find(|s| s.value_env.is_some()) {
        return Err(ApiError::InvalidSettings(format!(
            "secret `{}`: `value_env` reads the host's environment and is for the host \
             configuration file only; send the value",
            secret.name
        )));
    }
    state
        .catalog
        .set_settings(&name, expect, |current| keep_secret_values(doc, &current))
        .await
        .map(Json)
}

/// `doc` with each secret that has no value given the value of the secret
/// of that name in `current`, or which secret has none.
fn keep_secret_values(mut doc: ActionDoc, current: &ActionDoc) -> Result<ActionDoc, ApiError> {
    if let Some(secret) = doc
        .secrets
        .iter()
        .find(|s| s.value.as_deref() == Some(REDACTED))
    {
        return Err(ApiError::InvalidSettings(format!(
            "secret `{}`: `{REDACTED}` is how the API shows a value, not a value; leave \
             `value` out to keep the one it has",
            secret.name
        )));
    }
    for secret in doc.secrets.iter_mut().filter(|s| s.value.is_none()) {
        let kept = current
            .secrets
            .iter()
            .find(|c| c.name == secret.name)
            .and_then(|c| c.value.clone());
        match kept {
            Some(value) => secret.value = Some(value),
            None => {
                return Err(ApiError::InvalidSettings(format!(
                    "secret `{}` has no value: send its `value` (a secret already set keeps \
                     its value when `value` is left out)",
                    secret.name
                )));
            }
        }
    }
    Ok(doc)
}

/// `PUT /v1/actions/{name}/config`: the designer's part of the settings.
pub(crate) async fn config(
    _: AsDesigner,
    State(state): Shared,
    ActionName(name): ActionName,
    IfRevision(expect): IfRevision,
    JsonBody(body): JsonBody,
) -> Result<Json<ActionView>, ApiError> {
    let config: BTreeMap<String, String> = serde_json::from_value(body).map_err(|e| {
        ApiError::InvalidSettings(format!(
            "invalid config: {e}; send a JSON object of strings, {{\"key\": \"value\"}}"
        ))
    })?;
    state
        .catalog
        .set_settings(&name, expect, |current| Ok(ActionDoc { config, ..current }))
        .await
        .map(Json)
}

/// `POST /v1/actions/{name}/invoke` with `{"input": {...}, "context": {...}}`.
pub(crate) async fn invoke(
    _: AsInvoker,
    State(state): Shared,
    ActionName(name): ActionName,
    JsonBody(body): JsonBody,
) -> Result<Json<Invocation>, ApiError> {
    let (context, input) = invoke_body(body)?;
    state.catalog.invoke(&name, context, &input).await.map(Json)
}

/// `POST /v1/actions/{name}/try`, with the body of `invoke`: the call's
/// whole record, its error included (the answer is 200 when the action ran
/// at all), for a designer trying an action; kept as the recording settings
/// say, with the source `try-it`.
pub(crate) async fn try_it(
    _: AsDesigner,
    State(state): Shared,
    ActionName(name): ActionName,
    JsonBody(body): JsonBody,
) -> Result<Json<TriedCall>, ApiError> {
    let (context, input) = invoke_body(body)?;
    state
        .catalog
        .try_call(&name, context, &input)
        .await
        .map(Json)
}

/// Reads `{"input": {...}, "context": {...}}`, naming what is wrong.
fn invoke_body(body: Value) -> Result<(CallContext, Map<String, Value>), ApiError> {
    let Value::Object(mut object) = body else {
        return Err(ApiError::InvalidInput(
            "the body must be a JSON object".into(),
        ));
    };
    if let Some(unknown) = object.keys().find(|k| *k != "input" && *k != "context") {
        return Err(ApiError::InvalidInput(format!(
            "unknown field `{unknown}`: send {{\"input\": {{...}}, \"context\": {{...}}}}"
        )));
    }
    let input = match object.remove("input") {
        None => Map::new(),
        Some(Value::Object(input)) => input,
        Some(_) => {
            return Err(ApiError::InvalidInput(
                "`input` must be a JSON object of attributes".into(),
            ));
        }
    };
    let context = match object.get("context") {
        None | Some(Value::Null) => CallContext::default(),
        Some(context) => CallContext::from_json(context).map_err(ApiError::InvalidInput)?,
    };
    Ok((context, input))
}
