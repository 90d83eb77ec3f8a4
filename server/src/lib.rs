//! The action-host service: the HTTP API, the catalog of what serves, the
//! store of versions and records, the webhook adapters and the metrics, over
//! one [`action_host::Host`].
//!
//! The path of one HTTP request: the listener (`listener.rs`, connection
//! bounds) hands it to the axum router (`api/mod.rs`), which gives it an id
//! and a span (`api/traced.rs`); its handler (`api/actions.rs`, or an
//! adapter in `webhooks/`) checks the token's role (`api/auth.rs`), reads
//! the body within its caps (`api/body.rs`) and asks the [`Catalog`]
//! (`catalog.rs`): to invoke the serving version within the admission bounds
//! (`bound.rs`), or to deploy, configure, roll back or delete, which it
//! prepares with the host, writes to the [`Store`] (`store/`) by
//! compare-and-set, and only then serves. The answer is a typed view
//! (`api/views.rs`) or an [`ApiError`] (`api/error.rs`, one table of status
//! and code).
//!
//! A call the action's `recording` setting picks leaves an invocation record
//! (`records.rs`): the catalog hands it to a bounded queue that one thread
//! writes to the store, and a replay reruns it answered from the record.
//!
//! The designer's page (`page.rs`, its files in `page/`) is three static
//! files built into the binary; it holds no data and is a client of the API
//! like any other.
//!
//! [`Service::start`] opens the store and lists what to load;
//! [`Service::load_in_background`] restores and deploys it while [`serve`]
//! already answers (`serve.rs`, with progress from `progress.rs`).

mod api;
mod bound;
mod catalog;
mod client;
mod config_file;
mod keys;
mod listener;
pub mod logging;
mod metrics;
mod page;
mod progress;
pub mod records;
mod serve;
mod store;
pub mod webhooks;

pub use api::auth::{Auth, Role, Tokens};
pub use api::error::ApiError;
pub use api::traced::{MAX_REQUEST_ID_LEN, REQUEST_ID, TraceRequests, Traced};
pub use api::views;
pub use api::{Api, AppState, router, upload_room};
pub use catalog::{Bounds, Catalog, RollbackSettings, VersionRef};
pub use client::{Client, MAX_ANSWER_BYTES, printable};
pub use config_file::{ActionDoc, HostFile, LimitsDoc, SecretDoc};
pub use keys::OperatorKey;
pub use progress::{LogWriter, Progress};
pub use serve::{ServeOptions, Service, serve};
pub use store::{
    ActionRecord, Change, DataDir, Postgres, Store, StoreError, StoreResult, VersionEntry,
};
pub use webhooks::{PlatformSettings, WebhookSettings};
