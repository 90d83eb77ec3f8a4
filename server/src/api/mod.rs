//! The HTTP API: one axum router over the [`Catalog`]. Each route names the
//! roles it admits in its handler's arguments (`auth.rs`), reads its body
//! within the service's caps (`body.rs`), and answers with a typed view
//! (`views.rs`) or an [`ApiError`](error::ApiError) (`error.rs`). The
//! webhook adapters live in `crate::webhooks`.
//!
//! | route | roles |
//! | --- | --- |
//! | `GET /`, `GET /page/...` (the designer's page, no data) | anyone |
//! | `GET /healthz` | anyone |
//! | `GET /metrics` | operator, metrics |
//! | `GET /v1/me`, `GET /v1/actions`, `GET /v1/actions/{name}`, `GET .../versions` | operator, designer |
//! | `POST /v1/actions/{name}/try` | operator, designer |
//! | `PUT /v1/actions/{name}`, `DELETE ...`, `PUT .../config`, `POST .../rollback` | operator, designer |
//! | `PUT .../recording`, `GET .../invocations`, `GET /v1/invocations/{id}`, `POST .../replay` | operator, designer |
//! | `PUT /v1/actions/{name}/grants` | operator |
//! | `POST /v1/actions/{name}/invoke`, `POST /webhooks/...` | operator, designer, invoke |

pub(crate) mod actions;
pub mod auth;
pub(crate) mod body;
pub mod error;
pub mod invocations;
pub(crate) mod name;
pub(crate) mod precondition;
pub(crate) mod traced;
pub mod views;

use axum::Router;
use axum::http::Method;
use axum::routing::{get, post, put};
use std::sync::Arc;
use std::time::Duration;

use crate::catalog::Catalog;
use auth::Auth;
pub use body::upload_room;
use error::ApiError;
pub use traced::{CALL_FIELDS, TraceRequests, Traced};

/// What every handler shares.
pub struct AppState {
    /// What serves.
    pub catalog: Arc<Catalog>,
    /// Who may use which route.
    pub auth: Auth,
    /// The largest component an upload may carry.
    pub max_upload_bytes: usize,
    /// The room, in KiB, for uploads being received and compiled at once:
    /// [`upload_room`] makes it.
    pub upload_room: Arc<tokio::sync::Semaphore>,
    /// How long a client may take to send a request's body.
    pub body_timeout: Duration,
    /// How the webhook adapters map each platform's names and fields.
    pub webhooks: crate::webhooks::WebhookSettings,
}

/// The API as it serves: the routes, each request with its id and span
/// (`traced.rs`). The layer wraps the router once, not each route (as
/// `Router::layer` would), so a request passes through it once, without a
/// boxed copy per route.
pub type Api = Traced<Router>;

/// The service's routes, with request ids and a tracing span per request.
pub fn router(state: Arc<AppState>) -> Api {
    let routes = Router::new()
        .route("/healthz", get(actions::health))
        .route("/metrics", get(actions::metrics))
        .route("/v1/me", get(actions::me))
        .route("/v1/actions", get(actions::list))
        .route(
            "/v1/actions/{name}",
            get(actions::show)
                .put(actions::upload)
                .delete(actions::delete),
        )
        .route("/v1/actions/{name}/versions", get(actions::versions))
        .route("/v1/actions/{name}/rollback", post(actions::rollback))
        .route("/v1/actions/{name}/grants", put(actions::grants))
        .route("/v1/actions/{name}/config", put(actions::config))
        .route("/v1/actions/{name}/invoke", post(actions::invoke))
        .route("/v1/actions/{name}/try", post(actions::try_it))
        .route("/v1/actions/{name}/recording", put(invocations::recording))
        .route("/v1/actions/{name}/invocations", get(invocations::list))
        .route("/v1/invocations/{id}", get(invocations::show))
        .route("/v1/invocations/{id}/replay", post(invocations::replay))
        .merge(crate::webhooks::routes())
        .merge(crate::page::routes())
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|method: Method| async move {
            ApiError::MethodNotAllowed(method.to_string())
        })
        .with_state(state);
    tower::Layer::layer(&TraceRequests, routes)
}
