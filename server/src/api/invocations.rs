//! The routes of invocation records: which calls an action records, the
//! list of its records, one record whole, and its replay.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::api::AppState;
use crate::api::auth::AsDesigner;
use crate::api::body::{JsonBody, Upload};
use crate::api::error::ApiError;
use crate::api::name::ActionName;
use crate::api::precondition::IfRevision;
use crate::api::views::ActionView;
use crate::catalog::VersionRef;
use crate::config_file::ActionDoc;
use crate::records::{InvocationRecord, RecordQuery, RecordSummary, Recording, Replay};

type Shared = State<Arc<AppState>>;

/// The most records one page lists.
const MAX_PAGE: usize = 200;

/// `PUT /v1/actions/{name}/recording` with `{"mode": "all", "sample": 0.1}`.
pub(crate) async fn recording(
    _: AsDesigner,
    State(state): Shared,
    ActionName(name): ActionName,
    IfRevision(expect): IfRevision,
    JsonBody(body): JsonBody,
) -> Result<Json<ActionView>, ApiError> {
    let recording: Recording = serde_json::from_value(body).map_err(|e| {
        ApiError::InvalidSettings(format!(
            "invalid recording: {e}; send {{\"mode\": \"off\" | \"failures\" | \"all\", \
             \"sample\": 0 to 1}}"
        ))
    })?;
    state
        .catalog
        .set_settings(&name, expect, |current| {
            Ok(ActionDoc {
                recording: Some(recording),
                ..current
            })
        })
        .await
        .map(Json)
}

/// The query of `GET /v1/actions/{name}/invocations`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// `success`, `failure`, `error`, `not-success` or an error kind.
    result: Option<String>,
    /// The `next` of the page before.
    after: Option<String>,
    /// How many, at most [50, at most 200].
    limit: Option<usize>,
}

/// One page of an action's records, newest first.
#[derive(Debug, Serialize, Deserialize)]
pub struct InvocationPage {
    /// The records, as summaries.
    pub invocations: Vec<RecordSummary>,
    /// Where the next page starts (`?after=`), when there may be one.
    pub next: Option<String>,
}

/// `GET /v1/actions/{name}/invocations?result=&after=&limit=`.
pub(crate) async fn list(
    _: AsDesigner,
    State(state): Shared,
    ActionName(name): ActionName,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<InvocationPage>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = query.limit.unwrap_or(50).clamp(1, MAX_PAGE);
    let records = state
        .catalog
        .invocations(
            &name,
            &RecordQuery {
                result: query.result,
                after: query.after,
                limit,
            },
        )
        .await?;
    let next = (records.len() == limit)
        .then(|| records.last().map(InvocationRecord::cursor))
        .flatten();
    Ok(Json(InvocationPage {
        invocations: records.iter().map(InvocationRecord::summary).collect(),
        next,
    }))
}

/// `GET /v1/invocations/{id}`: one record whole.
pub(crate) async fn show(
    _: AsDesigner,
    State(state): Shared,
    Path(id): Path<String>,
) -> Result<Json<InvocationRecord>, ApiError> {
    state.catalog.invocation(&id).await.map(Json)
}

/// What a replay runs on, as its body names it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayOn {
    version: Option<u64>,
    sha256: Option<String>,
}

/// `POST /v1/invocations/{id}/replay`: reruns a recorded call. The body is
/// empty (the version serving), `{"version": N}` or `{"sha256": "..."}` (a
/// kept version), or a component (a candidate, not deployed).
pub(crate) async fn replay(
    _: AsDesigner,
    State(state): Shared,
    Path(id): Path<String>,
    Upload(body, _held): Upload,
) -> Result<Json<Replay>, ApiError> {
    let usage = "send no body (the version serving), {\"version\": N}, {\"sha256\": \"...\"}, \
                 or a component to try";
    let (version, candidate) = if body.is_empty() {
        (None, None)
    } else if body.starts_with(b"\0asm") {
        (None, Some(body))
    } else {
        let on: ReplayOn = serde_json::from_slice(&body)
            .map_err(|e| ApiError::InvalidInput(format!("invalid replay: {e}; {usage}")))?;
        match (on.version, on.sha256) {
            (None, None) => (None, None),
            (Some(version), None) => (Some(VersionRef::Number(version)), None),
            (None, Some(sha256)) => (
                Some(VersionRef::sha256(&sha256).map_err(ApiError::InvalidInput)?),
                None,
            ),
            (Some(_), Some(_)) => {
                return Err(ApiError::InvalidInput(format!(
                    "name one version, not both: {usage}"
                )));
            }
        }
    };
    state
        .catalog
        .replay(&id, version, candidate)
        .await
        .map(Json)
}
