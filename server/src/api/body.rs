//! Request bodies, read within a size cap and a time limit: a client that
//! sends slowly holds a connection and memory, and is cut off; one that
//! sends too much is refused before it is all read.

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{FromRequest, Request};
use axum::http::HeaderMap;
use http_body_util::{BodyExt, Limited};
use serde_json::Value as Json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::api::AppState;
use crate::api::error::ApiError;

/// The largest JSON body a request may carry.
pub(crate) const MAX_JSON_BYTES: usize = 1 << 20;

/// A component, at most [`AppState::max_upload_bytes`], with its share of
/// [`AppState::upload_room`], held until the upload is answered.
pub(crate) struct Upload(pub(crate) Bytes, pub(crate) OwnedSemaphorePermit);

/// The room for uploads being received and compiled at once, in KiB
/// ([`AppState::upload_room`]): each compile slot's and two more uploads of
/// the largest size. An upload is held whole until it is answered, so
/// without this bound every open connection could hold one (1024 × 64 MiB
/// with the defaults).
pub fn upload_room(max_upload_bytes: usize, max_parallel_compiles: usize) -> Semaphore {
    let kib = (max_parallel_compiles.max(1) + 2).saturating_mul(kib(max_upload_bytes) as usize);
    Semaphore::new(kib.min(Semaphore::MAX_PERMITS))
}

/// `bytes` in KiB, rounded up, as the upload room counts them.
fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

/// A JSON body, at most [`MAX_JSON_BYTES`].
pub(crate) struct JsonBody(pub(crate) Json);

impl FromRequest<Arc<AppState>> for Upload {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let cap = state.max_upload_bytes;
        let declared = refuse_declared_over(request.headers(), cap)?;
        // Room for the whole body before reading any of it: its declared
        // length, or the length it is known to have (none, for a request
        // without a body), or else the cap.
        let known = declared.or_else(|| HttpBody::size_hint(request.body()).exact());
        let wanted = kib(known.map_or(cap, |length| length.min(cap as u64) as usize));
        let room = Arc::clone(&state.upload_room);
        let mut held = tokio::time::timeout(state.body_timeout, room.acquire_many_owned(wanted))
            .await
            .map_err(|_| {
                ApiError::Busy(format!(
                    "other uploads held the room for uploads in progress for {} s; retry later",
                    state.body_timeout.as_secs()
                ))
            })?
            .map_err(|_| ApiError::Internal("the room for uploads is closed".into()))?;
        let bytes = read(request.into_body(), cap, state.body_timeout).await?;
        // Give back what a body without a declared length did not need.
        drop(held.split(wanted.saturating_sub(kib(bytes.len())) as usize));
        Ok(Upload(bytes, held))
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
/// of it: the client learns at once, and no byte of it is held. Returns the
/// declared length.
pub(crate) fn refuse_declared_over(
    headers: &HeaderMap,
    cap: usize,
) -> Result<Option<u64>, ApiError> {
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(length) if length > cap as u64 => Err(too_large(cap)),
        _ => Ok(declared),
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
