//! Request bodies, read within a size cap and a time limit: a client that
//! sends slowly holds a connection and memory, and is cut off; one that
//! sends too much is refused before it is all read.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::HeaderMap;
use http_body_util::{BodyExt, Limited};
use serde_json::Value as Json;
use std::sync::Arc;
use std::time::Duration;

use crate::api::AppState;
use crate::api::error::ApiError;

/// The largest JSON body a request may carry.
pub(crate) const MAX_JSON_BYTES: usize = 1 << 20;

/// A component, at most [`AppState::max_upload_bytes`].
pub(crate) struct Upload(pub(crate) Bytes);

/// A JSON body, at most [`MAX_JSON_BYTES`].
pub(crate) struct JsonBody(pub(crate) Json);

impl FromRequest<Arc<AppState>> for Upload {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let cap = state.max_upload_bytes;
        refuse_declared_over(request.headers(), cap)?;
        read(request.into_body(), cap, state.body_timeout)
            .await
            .map(Upload)
    }
}

impl FromRequest<Arc<AppState>> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        refuse_declared_over(request.headers(), MAX_JSON_BYTES)?;
        let bytes = read(request.into_body(), MAX_JSON_BYTES, state.body_timeout).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Refuses a body whose declared length is over `cap` before reading any
/// of it: the client learns at once, and no byte of it is held.
pub(crate) fn refuse_declared_over(headers: &HeaderMap, cap: usize) -> Result<(), ApiError> {
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(length) if length > cap as u64 => Err(too_large(cap)),
        _ => Ok(()),
    }
}

fn too_large(cap: usize) -> ApiError {
    ApiError::TooLarge(format!("the body is larger than {cap} bytes"))
}

/// `bytes` as JSON, or why not.
pub(crate) fn parse_json(bytes: &[u8]) -> Result<Json, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::MalformedJson(format!("the body is not valid JSON: {e}")))
}

/// Reads a body, at most `cap` bytes within `timeout`.
pub(crate) async fn read(body: Body, cap: usize, timeout: Duration) -> Result<Bytes, ApiError> {
    let collected = tokio::time::timeout(timeout, Limited::new(body, cap).collect())
        .await
        .map_err(|_| {
            ApiError::RequestTimeout(format!(
                "the body did not arrive within {} s",
                timeout.as_secs_f64()
            ))
        })?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(too_large(cap)),
        Err(error) => Err(ApiError::BadRequest(format!(
            "cannot read the body: {error}"
        ))),
    }
}
