//! What the service keeps: every uploaded version by SHA-256 (written once),
//! a record per action (what serves, its settings, its version history),
//! changed only by compare-and-set on a revision number, the compiled
//! artifacts by engine key, a feed of changes, and invocation records
//! (written once, removed by a retention bound).
//!
//! [`DataDir`] is the embedded implementation, for one service; [`Postgres`]
//! is shared by replicas. The catalog (`catalog.rs`) is the only writer and
//! knows nothing of where the store keeps things; secret values are
//! encrypted at rest in both (`at_rest.rs`).

mod at_rest;
mod data_dir;
mod postgres;

pub use data_dir::DataDir;
pub use postgres::Postgres;

/// Whether `text` is a SHA-256 as the store names versions by it
/// (`action_host::sha256_hex`): 64 lower-case hexadecimal digits.
pub(crate) fn is_sha256(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

use action_host::ArtifactCache;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::config_file::ActionDoc;
use crate::records::{InvocationRecord, RecordQuery, Retention};

/// One action's record: the version serving, its settings and history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// Counts the changes to this record, from 1: a writer names the
    /// revision it read, and the store refuses the write if another came
    /// first ([`Store::swap_record`]).
    #[serde(default)]
    pub revision: u64,
    /// The SHA-256 of the serving version.
    pub sha256: String,
    /// The number of the serving version.
    pub version: u64,
    /// The settings it serves with.
    pub settings: ActionDoc,
    /// When what serves last changed (upload, settings, rollback), in
    /// milliseconds since the Unix epoch.
    #[serde(default)]
    pub changed_at_ms: i64,
    /// The kept versions, oldest first.
    #[serde(default)]
    pub versions: Vec<VersionEntry>,
}

/// One uploaded version of an action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionEntry {
    /// Counts the uploads of this action name, from 1.
    pub version: u64,
    /// The SHA-256 of the component.
    pub sha256: String,
    /// When it was uploaded, in milliseconds since the Unix epoch.
    pub uploaded_at_ms: i64,
    /// Who uploaded it: a token role, or `host` for a deploy at start.
    pub uploaded_by: String,
    /// The version its manifest gave.
    pub manifest_version: String,
    /// The settings it served with when it was uploaded.
    pub settings: ActionDoc,
}

impl ActionRecord {
    /// The next upload's number: one more than any kept or serving version.
    pub fn next_version(&self) -> u64 {
        let newest = self.versions.iter().map(|v| v.version).max().unwrap_or(0);
        newest.max(self.version) + 1
    }

    /// The kept version numbered `version`.
    pub fn find_version(&self, version: u64) -> Option<&VersionEntry> {
        self.versions.iter().find(|v| v.version == version)
    }
}

/// A change to one action's record, as the feed reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The action.
    pub name: String,
    /// Its new revision, or `None` when the record was removed.
    pub revision: Option<u64>,
}

/// Why a write to the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another write to the record came first.
    #[error(
        "the action `{name}` changed meanwhile (revision {found:?}, expected {expected:?}); \
         read it again and retry"
    )]
    Conflict {
        /// The action.
        name: String,
        /// The revision the writer read.
        expected: Option<u64>,
        /// The revision the store holds.
        found: Option<u64>,
    },
    /// The store cannot be reached now (its database is down or
    /// unreachable); what serves goes on serving.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The store could not be read or written.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// What a store method gives.
pub type StoreResult<T> = Result<T, StoreError>;

/// Where the service keeps versions, records and artifacts.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a component under its SHA-256; a version already stored is
    /// left as it is (versions are written once).
    async fn put_version(&self, sha256: &str, bytes: bytes::Bytes) -> StoreResult<()>;

    /// The component stored under `sha256`.
    async fn version(&self, sha256: &str) -> StoreResult<Vec<u8>>;

    /// The size in bytes of the component stored under `sha256`.
    async fn version_len(&self, sha256: &str) -> StoreResult<u64>;

    /// Removes the versions among `sha256s` that no record keeps.
    async fn prune_versions(&self, sha256s: Vec<String>) -> StoreResult<()>;

    /// The record of the action `name`, if it has one.
    async fn record(&self, name: &str) -> StoreResult<Option<ActionRecord>>;

    /// Every action's record (or why it cannot be read), sorted by name: one
    /// damaged record does not hide the others.
    async fn records(&self) -> StoreResult<Vec<(String, anyhow::Result<ActionRecord>)>>;

    /// Replaces the record of `name` (or removes it, with `None`) if its
    /// revision is still `expected` (`None`: it has no record). A new record
    /// must carry the revision one above `expected`.
    async fn swap_record(
        &self,
        name: &str,
        expected: Option<u64>,
        new: Option<ActionRecord>,
    ) -> StoreResult<()>;

    /// Keeps invocation records (written once; one already kept is left).
    async fn put_invocations(&self, records: Vec<InvocationRecord>) -> StoreResult<()>;

    /// The records of `action` that `query` selects, newest first.
    async fn invocations(
        &self,
        action: &str,
        query: &RecordQuery,
    ) -> StoreResult<Vec<InvocationRecord>>;

    /// The record of the invocation `id`, if one is kept.
    async fn invocation(&self, id: &str) -> StoreResult<Option<InvocationRecord>>;

    /// Every action with invocation records kept, in no order (an action
    /// deleted since may still have some, until retention removes them).
    async fn recorded_actions(&self) -> StoreResult<Vec<String>>;

    /// Removes the records of `action` that `retention` no longer keeps at
    /// `now_ms`.
    async fn prune_invocations(
        &self,
        action: &str,
        retention: &Retention,
        now_ms: i64,
    ) -> StoreResult<()>;

    /// Where compiled components are kept, sealed by the host.
    fn artifacts(&self) -> Arc<dyn ArtifactCache>;

    /// Every change to a record from now on, in order.
    fn changes(&self) -> tokio::sync::broadcast::Receiver<Change>;

    /// Why the store is degraded (cannot be reached now), if it is.
    fn degraded(&self) -> Option<String> {
        None
    }
}
