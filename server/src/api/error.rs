//! Every way a request can fail, and the one table that gives each its
//! status and code. Handlers return [`ApiError`]; axum turns it into
//! `{"error": {"code", "message"}}` (with the action's logs when it ran).

use action_host::{ErrorKind, InvokeError, LoadError, LogLine};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::time::Duration;

use crate::api::views::{ErrorBody, ErrorView};

/// Why a request failed.
#[derive(Debug)]
pub enum ApiError {
    /// No bearer token, or one the service does not know.
    Unauthorized(String),
    /// A token whose role may not use the route.
    Forbidden(String),
    /// No route has this path.
    NoRoute,
    /// The route does not take this method.
    MethodNotAllowed(String),
    /// No action is deployed under the name.
    UnknownAction(String),
    /// No action can have the name (`action_host::check_name`).
    ImpossibleName(String),
    /// The action is being restored or deployed at start and serves soon.
    Loading {
        /// Which action.
        name: String,
        /// When to ask again.
        retry_after: Duration,
    },
    /// The action has no such version.
    UnknownVersion(String),
    /// No invocation record is kept under the id.
    UnknownInvocation(String),
    /// The upload is not a valid action.
    InvalidAction(LoadError),
    /// The settings are not valid.
    InvalidSettings(String),
    /// The request's input or context is not valid.
    InvalidInput(String),
    /// The host configuration file owns these settings.
    ManagedByHostFile(String),
    /// Another change to the action came first.
    Conflict(String),
    /// Every place for compiling was taken for the whole compile timeout,
    /// or the room for uploads for the whole body timeout.
    Busy(String),
    /// Compiling took longer than the compile timeout.
    CompileTimeout(String),
    /// The client did not send the body in time.
    RequestTimeout(String),
    /// The body is over its cap.
    TooLarge(String),
    /// The body could not be read.
    BadRequest(String),
    /// The body is not JSON.
    MalformedJson(String),
    /// Too many invocations at once.
    Overloaded,
    /// The invocation ran and failed; with its id when it has one, so that
    /// the caller can find its record.
    Invocation {
        error: InvokeError,
        invocation_id: Option<String>,
    },
    /// The store cannot be reached: changes wait until it is back.
    StoreUnavailable(String),
    /// A fault of the host or its store.
    Internal(String),
}

/// At most 64 characters of `text` that a client sent, for a message.
fn clipped(text: &str) -> String {
    text.chars().take(64).collect()
}

/// `text` that a client sent, quoted for a message: whole when short, else
/// [`clipped`] and its length, so that a mistake is named without echoing
/// whatever was sent.
pub(crate) fn quoted(text: &str) -> String {
    let clipped = clipped(text);
    if clipped.len() == text.len() {
        format!("{text:?}")
    } else {
        format!("{clipped:?}... ({} characters)", text.chars().count())
    }
}

/// A name a client sent, for a message: in backticks as the service writes
/// names when it is short and plain, else [`quoted`].
fn named(text: &str) -> String {
    let plain = text.len() <= 64 && text.bytes().all(|b| b.is_ascii_graphic() && b != b'`');
    if plain {
        format!("`{text}`")
    } else {
        quoted(text)
    }
}

impl ApiError {
    /// The status and code of each kind: the one place they are decided.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NoRoute => (StatusCode::NOT_FOUND, "not-found"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed"),
            ApiError::UnknownAction(_) | ApiError::ImpossibleName(_) => {
                (StatusCode::NOT_FOUND, "unknown-action")
            }
            ApiError::Loading { .. } => (StatusCode::SERVICE_UNAVAILABLE, "loading"),
            ApiError::UnknownVersion(_) => (StatusCode::NOT_FOUND, "unknown-version"),
            ApiError::UnknownInvocation(_) => (StatusCode::NOT_FOUND, "unknown-invocation"),
            ApiError::InvalidAction(LoadError::Host(_)) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
            ApiError::InvalidAction(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid-action"),
            ApiError::InvalidSettings(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid-settings"),
            ApiError::InvalidInput(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid-input"),
            ApiError::ManagedByHostFile(_) => (StatusCode::CONFLICT, "managed-by-host-file"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            ApiError::CompileTimeout(_) => (StatusCode::SERVICE_UNAVAILABLE, "compile-timeout"),
            ApiError::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "request-timeout"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too-large"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request"),
            ApiError::MalformedJson(_) => (StatusCode::BAD_REQUEST, "malformed-json"),
            ApiError::Overloaded => (StatusCode::TOO_MANY_REQUESTS, "overloaded"),
            ApiError::Invocation { error, .. } => {
                (invocation_status(error.kind), error.kind.as_str())
            }
            ApiError::StoreUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "store-unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// What went wrong, in words that name the problem.
    pub fn message(&self) -> String {
        match self {
            ApiError::NoRoute => "no such route".into(),
            ApiError::MethodNotAllowed(method) => format!("{method} is not allowed here"),
            // The name may come from a webhook body of any length: quoted, not echoed.
            ApiError::UnknownAction(name) => format!("no action is deployed as {}", named(name)),
            ApiError::ImpossibleName(name) => format!(
                "no action can be deployed as {}: a name is 1 to 64 characters of a-z, 0-9, \
                 '-' and '_'",
                named(name)
            ),
            ApiError::UnknownInvocation(id) => format!(
                "no record is kept of the invocation `{}` (it was not recorded, or is past \
                 the retention bound)",
                clipped(id)
            ),
            ApiError::Loading { name, retry_after } => format!(
                "the action `{name}` is still loading after the start; retry in {} s",
                retry_after.as_secs()
            ),
            ApiError::InvalidAction(error) => error.to_string(),
            ApiError::Overloaded => "too many invocations at once; retry shortly".into(),
            ApiError::Invocation { error, .. } => error.message.clone(),
            ApiError::Unauthorized(m)
            | ApiError::Forbidden(m)
            | ApiError::UnknownVersion(m)
            | ApiError::InvalidSettings(m)
            | ApiError::InvalidInput(m)
            | ApiError::ManagedByHostFile(m)
            | ApiError::Conflict(m)
            | ApiError::Busy(m)
            | ApiError::CompileTimeout(m)
            | ApiError::RequestTimeout(m)
            | ApiError::TooLarge(m)
            | ApiError::BadRequest(m)
            | ApiError::MalformedJson(m)
            | ApiError::Internal(m) => m.clone(),
            ApiError::StoreUnavailable(why) => format!(
                "changes are refused until the store is back ({why}); what is deployed goes on \
                 serving"
            ),
        }
    }

    /// The action's log, when the error comes from running it.
    pub fn logs(&self) -> Option<&[LogLine]> {
        match self {
            ApiError::Invocation { error, .. } => Some(&error.logs),
            _ => None,
        }
    }

    /// When to ask again, for the errors that pass.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Loading { retry_after, .. } => Some(*retry_after),
            ApiError::StoreUnavailable(_) => Some(STORE_RETRY),
            _ => None,
        }
    }

    /// The error as the API's body.
    pub fn body(&self) -> ErrorBody {
        let (_, code) = self.status_and_code();
        ErrorBody {
            error: ErrorView {
                code,
                message: self.message(),
                logs: self.logs().map(<[LogLine]>::to_vec),
                invocation_id: match self {
                    ApiError::Invocation { invocation_id, .. } => invocation_id.clone(),
                    _ => None,
                },
            },
        }
    }

    /// A fault of the host, with its causes.
    pub fn internal(error: impl Into<anyhow::Error>) -> ApiError {
        ApiError::Internal(format!("{:#}", error.into()))
    }
}

/// When to try a change again while the store is unavailable.
const STORE_RETRY: Duration = Duration::from_secs(5);

/// The status of an invocation that failed, by its kind.
fn invocation_status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::InvalidInput => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::UnknownAction => StatusCode::NOT_FOUND,
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Upstream | ErrorKind::Denied => StatusCode::BAD_GATEWAY,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<LoadError> for ApiError {
    fn from(error: LoadError) -> ApiError {
        ApiError::InvalidAction(error)
    }
}

impl From<InvokeError> for ApiError {
    fn from(error: InvokeError) -> ApiError {
        ApiError::Invocation {
            error,
            invocation_id: None,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, _) = self.status_and_code();
        let mut response = (status, axum::Json(self.body())).into_response();
        if let Some(retry_after) = self.retry_after() {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after.as_secs().max(1)),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loading_action_is_503_with_retry_after() {
        let response = ApiError::Loading {
            name: "greeting".into(),
            retry_after: Duration::from_secs(2),
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
    }

    #[test]
    fn a_host_fault_while_loading_is_internal_not_the_uploader_s() {
        let error = ApiError::from(LoadError::Host(anyhow::anyhow!("disk full")));
        assert_eq!(
            error.status_and_code(),
            (StatusCode::INTERNAL_SERVER_ERROR, "internal")
        );
        let error = ApiError::from(LoadError::InvalidName("A".into()));
        assert_eq!(error.status_and_code().1, "invalid-action");
    }

    #[test]
    fn an_unknown_name_is_named_whole_when_short_and_by_its_length_when_long() {
        let short = ApiError::UnknownAction("action_nope".into()).message();
        assert_eq!(short, "no action is deployed as `action_nope`");
        let odd = ApiError::UnknownAction("two\nlines".into()).message();
        assert!(!odd.contains('\n'), "{odd}");
        let long = ApiError::UnknownAction("a".repeat(100_000)).message();
        assert!(long.len() < 200, "{long}");
        assert!(long.ends_with("... (100000 characters)"), "{long}");
    }
}
