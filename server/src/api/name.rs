//! The action name in a route's path, checked before anything uses it.
//!
//! axum decodes the path segment, so `/v1/actions/..%2Fx` names the action
//! `../x`; a name becomes a file name in the data directory, so one that no
//! action can have is refused here, before the catalog or the store sees it.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;

use crate::api::error::ApiError;

/// A name that an action can have (`action_host::check_name`).
pub(crate) struct ActionName(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for ActionName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(name) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
        match action_host::check_name(&name) {
            Ok(()) => Ok(ActionName(name)),
            Err(_) => Err(ApiError::ImpossibleName(name)),
        }
    }
}
