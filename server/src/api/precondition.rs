//! `If-Match`: a change made only if the action is still at the revision
//! the client read (`revision` in its view), so that two clients (or two
//! replicas behind a load balancer) changing one action cannot overwrite
//! each other unknowingly: the later one gets 409.

use axum::extract::FromRequestParts;
use axum::http::header::IF_MATCH;
use axum::http::request::Parts;

use crate::api::error::ApiError;

/// The revision a change expects to find, if the request names one.
pub(crate) struct IfRevision(pub Option<u64>);

impl<S: Send + Sync> FromRequestParts<S> for IfRevision {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<IfRevision, ApiError> {
        let Some(value) = parts.headers.get(IF_MATCH) else {
            return Ok(IfRevision(None));
        };
        let text = value.to_str().unwrap_or_default().trim();
        // As an entity tag (`"7"`, or weak `W/"7"`) or the bare number.
        let number = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
        match number.parse() {
            Ok(revision) => Ok(IfRevision(Some(revision))),
            Err(_) => Err(ApiError::BadRequest(format!(
                "If-Match must name one revision of the action, such as \"7\" (its `revision`), \
                 not `{text}`"
            ))),
        }
    }
}
