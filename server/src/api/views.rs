//! The API's answers as types: what a client (the CLI, the coming web page)
//! can rely on. Each is serialized as it is; no handler builds JSON by hand.

use action_host::{LogLine, Manifest, StartsFrom};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config_file::ActionDoc;

/// An action as `GET /v1/actions/{name}` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ActionView {
    /// Its name.
    pub name: String,
    /// The number of the serving version (see [`VersionView::version`]).
    pub version: u64,
    /// The SHA-256 of the serving component.
    pub sha256: String,
    /// Counts the changes to the action; send it as `If-Match` to make a
    /// change only if no other came first.
    pub revision: u64,
    /// What the action says about itself.
    pub manifest: Arc<Manifest>,
    /// Where its calls start.
    pub starts_from: StartsFrom,
    /// Its settings, secret values redacted.
    pub settings: ActionDoc,
    /// When what serves last changed, in RFC 3339.
    pub changed_at: String,
    /// Invocations so far by result (`success`, `failure`, an error kind).
    pub invocations: BTreeMap<String, u64>,
    /// The median duration of its calls so far, in milliseconds, to the
    /// precision of the latency histogram's buckets; absent before the first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<f64>,
    /// Each destination the manifest asks for, with the grants that reach
    /// it: one asked for but not granted has none, and its requests will be
    /// denied. (Grants nobody asked for are in `settings.grants`.)
    pub hosts: Vec<AskedHost>,
}

/// A destination an action's manifest asks for, beside what grants it.
#[derive(Debug, Clone, Serialize)]
pub struct AskedHost {
    /// As the manifest names it.
    pub host: String,
    /// The grants that reach it, as written; empty when none does.
    pub granted_by: Vec<String>,
}

/// `POST /v1/actions/{name}/try`: what the call did, and whether its record
/// is kept.
#[derive(Debug, Clone, Serialize)]
pub struct TriedCall {
    /// The call's whole record: outcome or error, logs, every exchange.
    pub record: crate::records::InvocationRecord,
    /// Whether the store keeps the record, as the action's recording
    /// settings say. It is written before this answer, so that
    /// `GET /v1/invocations/{id}` finds it at once.
    pub recorded: bool,
}

/// `GET /v1/me`: who the presented token is.
#[derive(Debug, Clone, Serialize)]
pub struct Me {
    /// `operator` or `designer`; `operator` when auth is off.
    pub role: &'static str,
    /// Whether the service checks tokens at all.
    pub auth: bool,
}

/// `GET /v1/actions`.
#[derive(Debug, Clone, Serialize)]
pub struct ActionList {
    /// The serving actions, by name.
    pub actions: Vec<ActionView>,
}

/// One stored version of an action.
#[derive(Debug, Clone, Serialize)]
pub struct VersionView {
    /// Counts the uploads of this action name, from 1.
    pub version: u64,
    /// The SHA-256 of the component.
    pub sha256: String,
    /// When it was uploaded, in RFC 3339.
    pub uploaded_at: String,
    /// The role of the token that uploaded it (`operator`, `designer`), or
    /// `host` for a deploy at start.
    pub uploaded_by: String,
    /// The version its manifest gives.
    pub manifest_version: String,
    /// Whether it is the one serving.
    pub serving: bool,
}

/// `GET /v1/actions/{name}/versions`, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct VersionList {
    /// The action.
    pub name: String,
    /// Its kept versions, newest first.
    pub versions: Vec<VersionView>,
}

/// `GET /healthz`. Without a designer's or the operator's token, only its
/// `status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Health {
    /// `starting` while actions are still being restored or deployed at
    /// start, `degraded` while the store cannot be reached (what is loaded
    /// serves; changes are refused), else `ok`.
    pub status: &'static str,
    /// Why the store is degraded, while it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub degraded: Option<String>,
    /// The actions still loading, smallest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub loading: Vec<String>,
    /// Actions that could not be restored or deployed, with why.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub not_served: BTreeMap<String, String>,
}

/// An error: `{"error": {...}}`.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorView,
}

/// What went wrong.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorView {
    /// A stable code, such as `unknown-action` (docs/api.md lists them).
    pub code: &'static str,
    /// The problem in words.
    pub message: String,
    /// The action's log, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs: Option<Vec<LogLine>>,
    /// The failed invocation's id, when an action ran: its record, when the
    /// recording settings keep it, is `GET /v1/invocations/{id}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invocation_id: Option<String>,
}
