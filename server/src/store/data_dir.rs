//! The embedded store: a data directory holding every uploaded version by
//! SHA-256, its compiled artifacts, and each action's record (current
//! version, settings, version history).
//!
//! ```text
//! data/
//!   versions/<sha256>.wasm           the component as uploaded
//!   artifacts/<engine key>.cwasm     compiled for one engine configuration, sealed
//!   artifacts/<engine key>.note      why it was compiled without a snapshot, sealed
//!   actions/<name>.json              the action's record, secret values encrypted
//!   invocations/<name>/<at>-<id>.json  an invocation record (`at` in ms, 16 digits)
//!   secret.key                       the operator key, when none is given (0600)
//! ```
//!
//! Every file is written to a temporary name, fsynced, and renamed into place,
//! then the directory is fsynced: a crash leaves the old file or the new one,
//! never half of one, and a temporary file left by a failed write or a crash
//! is removed. A pointer moves only after the version it names is on disk.
//!
//! One service owns a data directory: records are compared and set under a
//! lock of this process, not of the file system.
//!
//! The directory holds native code the host loads (artifacts) and settings
//! whose secret values are encrypted (`at_rest.rs`) but whose grants and
//! config are not, so it is private: its folders are made (and kept) 0700,
//! files 0600. A key file kept here protects the values only from a copy
//! made without it; an operator who gives the key from elsewhere
//! (`ACTION_HOST_SECRET_KEY`) keeps them from any copy of the directory.

use anyhow::{Context as _, Result};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use action_host::{ArtifactCache, CacheEntry, EngineKey};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

use super::at_rest::RecordCodec;
use super::{ActionRecord, Change, Store, StoreError, StoreResult};
use crate::keys::OperatorKey;
use crate::records::{InvocationRecord, RecordQuery, Retention};

/// A data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
    codec: RecordCodec,
    /// Held while a record is compared and set, and while versions are pruned.
    records: Arc<Mutex<()>>,
    changes: broadcast::Sender<Change>,
}

impl DataDir {
    /// Opens (creating if needed) the data directory at `root`, whose
    /// records' secret values are sealed under `key`: makes its folders
    /// private, removes temporary files a crash left, and seals the values
    /// an earlier version stored in the clear. `root` itself is made 0700
    /// when it is created here; one that exists is left as it is (it may be
    /// a folder the operator shares), since everything in it is private on
    /// its own.
    pub fn open(root: impl Into<PathBuf>, key: &OperatorKey) -> Result<DataDir> {
        let root = root.into();
        create_root(&root)?;
        for dir in ["versions", "artifacts", "actions", "invocations"].map(|d| root.join(d)) {
            match fs::DirBuilder::new().mode(0o700).create(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(e).with_context(|| format!("cannot create {}", dir.display()));
                }
                _ => {}
            }
            // One made by an earlier version, or by someone else, may be
            // readable by others.
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                .with_context(|| format!("cannot make {} private", dir.display()))?;
            remove_temporary_files(&dir)?;
        }
        // Records are written in a folder per action.
        for entry in fs::read_dir(root.join("invocations"))
            .with_context(|| format!("cannot read {}", root.join("invocations").display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                remove_temporary_files(&path)?;
            }
        }
        remove_temporary_files(&root)?;
        // Sealed by a key of its own before artifacts were sealed by one
        // derived from the operator key: no longer read.
        let _ = fs::remove_file(root.join("artifact.key"));
        let data = DataDir {
            root,
            codec: RecordCodec::new(key),
            records: Arc::default(),
            changes: broadcast::channel(1024).0,
        };
        data.seal_values_in_the_clear()?;
        Ok(data)
    }

    /// The operator key kept in the data directory at `root`, made (0600)
    /// the first time: for a service given no key of its own.
    pub fn kept_key(root: &Path) -> Result<OperatorKey> {
        create_root(root)?;
        let path = root.join("secret.key");
        match fs::read_to_string(&path) {
            Ok(text) => OperatorKey::from_hex(&text).map_err(|why| {
                anyhow::anyhow!(
                    "{}: {why}; it seals the stored secret values, so it cannot simply be \
                     replaced",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = OperatorKey::generate();
                write_atomically(&path, key.to_hex().as_bytes())?;
                Ok(key)
            }
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes again, sealed, every record that holds a secret value in the
    /// clear; a record that cannot be read is left for the service to report.
    fn seal_values_in_the_clear(&self) -> Result<()> {
        for entry in fs::read_dir(self.root.join("actions"))? {
            let path = entry?.path();
            let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            if path.extension().is_none_or(|e| e != "json")
                || action_host::check_name(name).is_err()
            {
                continue;
            }
            let Ok(stored) = fs::read(&path) else {
                continue;
            };
            if let Ok((record, true)) = self.codec.decode(name, &stored) {
                self.set_action(name, &record)?;
            }
        }
        Ok(())
    }

    /// Stores a component by its SHA-256 (a no-op when it is already there).
    fn write_version(&self, sha256: &str, bytes: &[u8]) -> Result<()> {
        let path = self.version_path(sha256)?;
        if path.exists() {
            return Ok(());
        }
        write_atomically(&path, bytes)
    }

    /// The component stored under `sha256`.
    fn read_version(&self, sha256: &str) -> Result<Vec<u8>> {
        let path = self.version_path(sha256)?;
        fs::read(&path).with_context(|| format!("cannot read {}", path.display()))
    }

    /// Points the action `name` at a record, replacing the pointer atomically.
    fn set_action(&self, name: &str, record: &ActionRecord) -> Result<()> {
        let stored = self.codec.encode(name, record)?;
        write_atomically(&self.action_path(name)?, &stored)
    }

    /// The record of the action `name`, if it has one.
    fn action(&self, name: &str) -> Result<Option<ActionRecord>> {
        let path = self.action_path(name)?;
        match fs::read(&path) {
            Ok(bytes) => {
                let (record, _) = self
                    .codec
                    .decode(name, &bytes)
                    .with_context(|| format!("{} is not a valid record", path.display()))?;
                Ok(Some(record))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Removes the action `name`'s record (its versions stay until pruned).
    fn remove_action(&self, name: &str) -> Result<()> {
        let path = self.action_path(name)?;
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(path.parent().expect("actions/ has a parent")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
        }
    }

    /// Every action's name and record (or why the record cannot be read),
    /// sorted by name: one damaged record does not hide the others.
    fn actions(&self) -> Result<Vec<(String, Result<ActionRecord>)>> {
        let mut found = Vec::new();
        for entry in fs::read_dir(self.root.join("actions"))? {
            let path = entry?.path();
            // A file no action could have written (`Greeting.json`, a
            // backup) is not a record: it is left alone, as it always was.
            if path.extension().is_some_and(|e| e == "json")
                && let Some(name) = path.file_stem().and_then(|s| s.to_str())
                && action_host::check_name(name).is_ok()
            {
                let record = self
                    .action(name)
                    .and_then(|r| r.context("the record vanished"));
                found.push((name.to_owned(), record));
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found)
    }

    // The three paths below are made from names and hashes that requests
    // carry: each refuses what is not one, so that no caller can reach
    // outside its folder (`../x`) by forgetting to check first.

    fn version_path(&self, sha256: &str) -> Result<PathBuf> {
        anyhow::ensure!(
            super::is_sha256(sha256),
            "`{sha256:.80}` is not a SHA-256 in lower-case hex"
        );
        Ok(self.root.join("versions").join(format!("{sha256}.wasm")))
    }

    fn artifact_path(&self, key: &EngineKey, entry: CacheEntry) -> PathBuf {
        let extension = match entry {
            CacheEntry::Artifact => "cwasm",
            CacheEntry::SnapshotNote => "note",
        };
        self.root
            .join("artifacts")
            .join(format!("{key}.{extension}"))
    }

    fn action_path(&self, name: &str) -> Result<PathBuf> {
        action_host::check_name(name)?;
        Ok(self.root.join("actions").join(format!("{name}.json")))
    }
}

impl ArtifactCache for DataDir {
    fn get(&self, key: &EngineKey, entry: CacheEntry) -> Option<Vec<u8>> {
        fs::read(self.artifact_path(key, entry)).ok()
    }

    fn put(&self, key: &EngineKey, entry: CacheEntry, bytes: &[u8]) {
        if let Err(error) = write_atomically(&self.artifact_path(key, entry), bytes) {
            // Only a later recompilation is lost.
            tracing::warn!("cannot cache the compiled component: {error:#}");
        }
    }
}

#[async_trait::async_trait]
impl Store for DataDir {
    async fn put_version(&self, sha256: &str, bytes: bytes::Bytes) -> StoreResult<()> {
        let (data, sha256) = (self.clone(), sha256.to_owned());
        Ok(blocking(move || data.write_version(&sha256, &bytes)).await?)
    }

    async fn version(&self, sha256: &str) -> StoreResult<Vec<u8>> {
        let (data, sha256) = (self.clone(), sha256.to_owned());
        Ok(blocking(move || data.read_version(&sha256)).await?)
    }

    async fn version_len(&self, sha256: &str) -> StoreResult<u64> {
        let path = self.version_path(sha256)?;
        let metadata = tokio::fs::metadata(&path)
            .await
            .with_context(|| format!("cannot read {}", path.display()))?;
        Ok(metadata.len())
    }

    async fn prune_versions(&self, sha256s: Vec<String>) -> StoreResult<()> {
        let data = self.clone();
        blocking(move || {
            let _records = data.records.lock().unwrap_or_else(|p| p.into_inner());
            let mut kept = HashSet::new();
            for (_, record) in data.actions()? {
                // A record that cannot be read may still name them: keep all.
                let record = record?;
                kept.insert(record.sha256.clone());
                kept.extend(record.versions.into_iter().map(|v| v.sha256));
            }
            for sha256 in sha256s.iter().filter(|s| !kept.contains(*s)) {
                remove_if_there(&data.version_path(sha256)?)?;
            }
            // An artifact is kept only while its version is: one of a version
            // just removed goes, and so does one whose version was never
            // stored (an upload that lost a race after compiling).
            let artifacts = data.root.join("artifacts");
            for entry in fs::read_dir(&artifacts)? {
                let path = entry?.path();
                let sha256 = (path.file_name().and_then(|n| n.to_str()))
                    .and_then(|name| name.split_once('-'))
                    .map(|(sha256, _)| sha256);
                let versioned = sha256.is_some_and(|sha256| {
                    data.version_path(sha256)
                        .is_ok_and(|version| version.exists())
                });
                if !versioned {
                    remove_if_there(&path)?;
                }
            }
            sync_dir(&data.root.join("versions"))?;
            sync_dir(&artifacts)
        })
        .await?;
        Ok(())
    }

    async fn record(&self, name: &str) -> StoreResult<Option<ActionRecord>> {
        let (data, name) = (self.clone(), name.to_owned());
        Ok(blocking(move || data.action(&name)).await?)
    }

    async fn records(&self) -> StoreResult<Vec<(String, Result<ActionRecord>)>> {
        let data = self.clone();
        Ok(blocking(move || data.actions()).await?)
    }

    async fn swap_record(
        &self,
        name: &str,
        expected: Option<u64>,
        new: Option<ActionRecord>,
    ) -> StoreResult<()> {
        let (data, owned) = (self.clone(), name.to_owned());
        let revision = new.as_ref().map(|r| r.revision);
        let swapped = tokio::task::spawn_blocking(move || {
            let _records = data.records.lock().unwrap_or_else(|p| p.into_inner());
            let found = data.action(&owned)?.map(|r| r.revision);
            if found != expected {
                return Err(StoreError::Conflict {
                    name: owned,
                    expected,
                    found,
                });
            }
            match &new {
                Some(record) => data.set_action(&owned, record)?,
                None => data.remove_action(&owned)?,
            }
            Ok(())
        })
        .await
        .map_err(|e| StoreError::Other(e.into()))?;
        swapped?;
        // No receiver is fine: nobody is following the feed.
        let _ = self.changes.send(Change {
            name: name.to_owned(),
            revision,
        });
        Ok(())
    }

    async fn put_invocations(&self, records: Vec<InvocationRecord>) -> StoreResult<()> {
        let data = self.clone();
        Ok(blocking(move || records.iter().try_for_each(|r| data.write_invocation(r))).await?)
    }

    async fn invocations(
        &self,
        action: &str,
        query: &RecordQuery,
    ) -> StoreResult<Vec<InvocationRecord>> {
        let (data, action, query) = (self.clone(), action.to_owned(), query.clone());
        Ok(blocking(move || data.read_invocations(&action, &query)).await?)
    }

    async fn invocation(&self, id: &str) -> StoreResult<Option<InvocationRecord>> {
        let (data, id) = (self.clone(), id.to_owned());
        Ok(blocking(move || data.find_invocation(&id)).await?)
    }

    async fn recorded_actions(&self) -> StoreResult<Vec<String>> {
        let data = self.clone();
        Ok(blocking(move || data.invocation_folders()).await?)
    }

    async fn prune_invocations(
        &self,
        action: &str,
        retention: &Retention,
        now_ms: i64,
    ) -> StoreResult<()> {
        let (data, action, retention) = (self.clone(), action.to_owned(), *retention);
        Ok(blocking(move || data.remove_old_invocations(&action, &retention, now_ms)).await?)
    }

    fn artifacts(&self) -> Arc<dyn ArtifactCache> {
        Arc::new(self.clone())
    }

    fn changes(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }
}

/// Runs file I/O off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .context("the store's I/O thread failed")?
}

/// Creates the data directory's root (0700) if it is not there.
fn create_root(root: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .with_context(|| format!("cannot create {}", root.display()))
}

/// Removes the temporary files of writes that did not finish.
fn remove_temporary_files(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with('.') && name.ends_with(".tmp") && path.is_file() {
            fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(())
}

/// Removes the file at `path`; one already gone is no error.
fn remove_if_there(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

/// Invocation records: one file each, under a folder per action, named so
/// that names sort as the records do (by start, then id). A record is
/// written whole and renamed into place but not fsynced: a crash may lose the
/// last records, which are a log, and a file a crash left damaged is skipped.
impl DataDir {
    fn invocations_of(&self, action: &str) -> Result<PathBuf> {
        action_host::check_name(action)?;
        Ok(self.root.join("invocations").join(action))
    }

    fn write_invocation(&self, record: &InvocationRecord) -> Result<()> {
        if !is_invocation_id(&record.id) {
            anyhow::bail!("`{}` is not an invocation id", record.id);
        }
        let dir = self.invocations_of(&record.action)?;
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(e).with_context(|| format!("cannot create {}", dir.display()));
            }
            _ => {}
        }
        let path = dir.join(format!("{:016}-{}.json", record.at_ms.max(0), record.id));
        if path.exists() {
            return Ok(());
        }
        let tmp = dir.join(format!(".{}.tmp", record.id));
        let written = (|| {
            let mut file = File::options()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("cannot create {}", tmp.display()))?;
            file.write_all(&serde_json::to_vec(record)?)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            fs::rename(&tmp, &path)
                .with_context(|| format!("cannot move {} into place", path.display()))
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written
    }

    /// The actions with a folder of records.
    fn invocation_folders(&self) -> Result<Vec<String>> {
        let root = self.root.join("invocations");
        let entries = match fs::read_dir(&root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", root.display())),
        };
        Ok(entries
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|entry| entry.file_name().into_string().ok())
            // Only folders the store made: another would fail every sweep.
            .filter(|name| action_host::check_name(name).is_ok())
            .collect())
    }

    /// The record files of `action`, newest first, as (cursor, path).
    fn invocation_files(&self, action: &str) -> Result<Vec<(String, PathBuf)>> {
        let dir = self.invocations_of(action)?;
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
        };
        let mut files: Vec<(i64, String, PathBuf)> = entries
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                let (at, id) = name.strip_suffix(".json")?.split_once('-')?;
                Some((at.parse().ok()?, id.to_owned(), entry.path()))
            })
            .collect();
        files.sort_by(|a, b| (b.0, &b.1).cmp(&(a.0, &a.1)));
        Ok(files
            .into_iter()
            .map(|(at, id, path)| (format!("{at}-{id}"), path))
            .collect())
    }

    fn read_invocations(&self, action: &str, query: &RecordQuery) -> Result<Vec<InvocationRecord>> {
        let files = self.invocation_files(action)?;
        let start = match &query.after {
            Some(after) => files
                .iter()
                .position(|(cursor, _)| cursor == after)
                .map_or(files.len(), |i| i + 1),
            None => 0,
        };
        let mut records = Vec::new();
        for (_, path) in &files[start..] {
            if records.len() >= query.limit {
                break;
            }
            let Some(record) = read_record_file(path) else {
                continue;
            };
            if query.result.as_deref().is_none_or(|r| record.matches(r)) {
                records.push(record);
            }
        }
        Ok(records)
    }

    fn find_invocation(&self, id: &str) -> Result<Option<InvocationRecord>> {
        if !is_invocation_id(id) {
            return Ok(None);
        }
        let suffix = format!("-{id}.json");
        let root = self.root.join("invocations");
        for action in
            fs::read_dir(&root).with_context(|| format!("cannot read {}", root.display()))?
        {
            let Ok(action) = action else { continue };
            let Ok(files) = fs::read_dir(action.path()) else {
                continue;
            };
            for file in files.filter_map(|f| f.ok()) {
                if file.file_name().to_string_lossy().ends_with(&suffix) {
                    return Ok(read_record_file(&file.path()));
                }
            }
        }
        Ok(None)
    }

    fn remove_old_invocations(
        &self,
        action: &str,
        retention: &Retention,
        now_ms: i64,
    ) -> Result<()> {
        let cutoff = retention.cutoff(now_ms);
        // The bytes of this record and every newer one.
        let mut bytes = 0;
        for (index, (cursor, path)) in self.invocation_files(action)?.into_iter().enumerate() {
            let at: i64 = cursor
                .split_once('-')
                .and_then(|(at, _)| at.parse().ok())
                .unwrap_or(0);
            bytes += fs::metadata(&path).map_or(0, |m| m.len());
            let over_bytes = index > 0 && bytes > retention.bytes_per_action;
            if index >= retention.per_action || at < cutoff || over_bytes {
                match fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(e).with_context(|| format!("cannot remove {}", path.display()));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// Whether `id` has the shape of an invocation id (a UUID as the host
/// writes it: lowercase, hyphenated): so that no id read from a request
/// names a path, and only a whole id finds a record's file by its end.
fn is_invocation_id(id: &str) -> bool {
    id.len() == 36
        && id.bytes().enumerate().all(|(at, b)| match at {
            8 | 13 | 18 | 23 => b == b'-',
            _ => matches!(b, b'0'..=b'9' | b'a'..=b'f'),
        })
}

/// The record in `path`, or `None` when a crash left it damaged.
fn read_record_file(path: &Path) -> Option<InvocationRecord> {
    let bytes = fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Writes `bytes` to `path` (mode 0600) so that readers see the old file or
/// the whole new one; a failed write leaves no temporary file behind.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().context("a stored file has a directory")?;
    // Unique per write: two writes of one file at once never share a name.
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id(),
        WRITES.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut file = File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        drop(file);
        fs::rename(&tmp, path).with_context(|| format!("cannot move {} into place", path.display()))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component's SHA-256, as the store names versions.
    const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// One key for every test: the directories are reopened with it.
    fn test_key() -> OperatorKey {
        OperatorKey::from_hex(&"5a".repeat(32)).unwrap()
    }

    #[test]
    fn records_and_versions_survive_reopening() {
        let tmp = tempfile::tempdir().unwrap();
        let data = DataDir::open(tmp.path(), &test_key()).unwrap();
        data.write_version(SHA, b"component").unwrap();
        let record = ActionRecord {
            revision: 1,
            sha256: SHA.into(),
            version: 3,
            settings: crate::ActionDoc::default(),
            changed_at_ms: 0,
            versions: Vec::new(),
        };
        data.set_action("greeting", &record).unwrap();
        let key = EngineKey::parse("abc-1-built").unwrap();
        data.put(&key, CacheEntry::Artifact, b"artifact");
        data.put(&key, CacheEntry::SnapshotNote, b"why");

        let again = DataDir::open(tmp.path(), &test_key()).unwrap();
        assert_eq!(again.read_version(SHA).unwrap(), b"component");
        assert_eq!(again.action("greeting").unwrap().unwrap().version, 3);
        assert_eq!(again.get(&key, CacheEntry::Artifact).unwrap(), b"artifact");
        assert_eq!(again.get(&key, CacheEntry::SnapshotNote).unwrap(), b"why");
        assert_eq!(again.actions().unwrap().len(), 1);
        fs::write(tmp.path().join("actions/broken.json"), b"{not json").unwrap();
        let listed = again.actions().unwrap();
        assert_eq!(listed.len(), 2);
        let broken = listed[0].1.as_ref().unwrap_err().to_string();
        assert!(
            broken.contains("broken.json is not a valid record"),
            "{broken}"
        );
        assert!(listed[1].1.is_ok());
        fs::remove_file(tmp.path().join("actions/broken.json")).unwrap();
        // A file no action could have written is not a record.
        fs::write(tmp.path().join("actions/Greeting.bak.json"), b"{}").unwrap();
        assert_eq!(again.actions().unwrap().len(), 1);
        DataDir::open(tmp.path(), &test_key()).unwrap();
        again.remove_action("greeting").unwrap();
        assert!(again.action("greeting").unwrap().is_none());
        assert!(
            again.read_version(SHA).is_ok(),
            "versions outlive their pointer"
        );
    }

    #[test]
    fn the_directory_is_private_and_its_files_too() {
        let tmp = tempfile::tempdir().unwrap();
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        let made = tmp.path().join("made/here");
        DataDir::open(&made, &test_key()).unwrap();
        assert_eq!(mode(&made), 0o700);
        // An existing root is the operator's; what is inside is tightened.
        let root = tmp.path().join("data");
        fs::create_dir(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir(root.join("versions")).unwrap();
        fs::set_permissions(root.join("versions"), fs::Permissions::from_mode(0o755)).unwrap();
        let data = DataDir::open(&root, &test_key()).unwrap();
        data.write_version(SHA, b"component").unwrap();
        DataDir::kept_key(&root).unwrap();
        assert_eq!(mode(&root), 0o755);
        for dir in ["versions", "artifacts", "actions"] {
            assert_eq!(mode(&root.join(dir)), 0o700, "{dir}");
        }
        assert_eq!(mode(&root.join(format!("versions/{SHA}.wasm"))), 0o600);
        assert_eq!(mode(&root.join("secret.key")), 0o600);
        // The key is made once and then kept.
        assert_eq!(
            DataDir::kept_key(&root).unwrap(),
            DataDir::kept_key(&root).unwrap()
        );
        fs::write(root.join("secret.key"), "short").unwrap();
        let why = DataDir::kept_key(&root).unwrap_err().to_string();
        assert!(why.contains("64 hex digits"), "{why}");
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file_and_what_a_crash_left_is_swept() {
        let tmp = tempfile::tempdir().unwrap();
        let data = DataDir::open(tmp.path(), &test_key()).unwrap();
        // A directory where the file should go: the rename fails.
        fs::create_dir(tmp.path().join("versions/abc.wasm")).unwrap();
        fs::write(tmp.path().join("versions/abc.wasm/x"), b"x").unwrap();
        assert!(write_atomically(&tmp.path().join("versions/abc.wasm"), b"new").is_err());
        let names = |dir: &str| -> Vec<String> {
            fs::read_dir(tmp.path().join(dir))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        };
        assert_eq!(names("versions"), ["abc.wasm"]);
        // What a crash leaves is removed when the directory is opened again.
        fs::write(tmp.path().join("actions/.greeting.json.1.0.tmp"), b"{").unwrap();
        fs::create_dir(tmp.path().join("invocations/greeting")).unwrap();
        fs::write(tmp.path().join("invocations/greeting/.0f3a.tmp"), b"{").unwrap();
        drop(data);
        DataDir::open(tmp.path(), &test_key()).unwrap();
        assert!(names("actions").is_empty());
        assert!(names("invocations/greeting").is_empty());
    }

    #[test]
    fn no_temporary_file_is_left_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let data = DataDir::open(tmp.path(), &test_key()).unwrap();
        data.write_version(SHA, b"x").unwrap();
        let names: Vec<_> = fs::read_dir(tmp.path().join("versions"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [format!("{SHA}.wasm").as_str()]);
    }

    fn record(revision: u64, sha256: &str) -> ActionRecord {
        ActionRecord {
            revision,
            sha256: sha256.into(),
            version: 1,
            settings: crate::ActionDoc::default(),
            changed_at_ms: 0,
            versions: vec![crate::store::VersionEntry {
                version: 1,
                sha256: sha256.into(),
                uploaded_at_ms: 0,
                uploaded_by: "designer".into(),
                manifest_version: "1.0.0".into(),
                settings: crate::ActionDoc::default(),
            }],
        }
    }

    #[tokio::test]
    async fn a_record_changes_only_from_the_revision_its_writer_read_and_the_feed_says_so() {
        let tmp = tempfile::tempdir().unwrap();
        let data = DataDir::open(tmp.path(), &test_key()).unwrap();
        let mut feed = data.changes();
        data.swap_record("a", None, Some(record(1, "x")))
            .await
            .unwrap();
        // A second writer that also saw no record loses.
        let lost = data.swap_record("a", None, Some(record(1, "y"))).await;
        assert!(
            matches!(lost, Err(StoreError::Conflict { found: Some(1), .. })),
            "{lost:?}"
        );
        let stale = data.swap_record("a", Some(7), None).await;
        assert!(matches!(stale, Err(StoreError::Conflict { .. })));
        assert_eq!(data.record("a").await.unwrap().unwrap().sha256, "x");
        data.swap_record("a", Some(1), Some(record(2, "y")))
            .await
            .unwrap();
        data.swap_record("a", Some(2), None).await.unwrap();
        let mut seen = Vec::new();
        while let Ok(change) = feed.try_recv() {
            seen.push(change.revision);
        }
        assert_eq!(
            seen,
            [Some(1), Some(2), None],
            "refused writes are not in the feed"
        );
    }

    #[tokio::test]
    async fn versions_are_written_once_and_pruned_only_when_no_record_keeps_them() {
        let tmp = tempfile::tempdir().unwrap();
        let data = DataDir::open(tmp.path(), &test_key()).unwrap();
        const OTHER: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
        data.put_version(SHA, "first".into()).await.unwrap();
        data.put_version(SHA, "second".into()).await.unwrap();
        assert_eq!(data.version(SHA).await.unwrap(), b"first");
        assert_eq!(data.version_len(SHA).await.unwrap(), 5);
        data.put_version(OTHER, "other".into()).await.unwrap();
        data.swap_record("a", None, Some(record(1, SHA)))
            .await
            .unwrap();
        let key = |sha256: &str| EngineKey::parse(&format!("{sha256}-1-built")).unwrap();
        const NEVER_STORED: &str =
            "1111111111111111111111111111111111111111111111111111111111111111";
        for sha256 in [SHA, OTHER, NEVER_STORED] {
            data.put(&key(sha256), CacheEntry::Artifact, b"artifact");
            data.put(&key(sha256), CacheEntry::SnapshotNote, b"why");
        }
        data.prune_versions(vec![SHA.into(), OTHER.into()])
            .await
            .unwrap();
        assert!(data.version(SHA).await.is_ok(), "kept by a's record");
        assert!(data.version(OTHER).await.is_err());
        // Its artifacts went with it.
        assert!(data.get(&key(SHA), CacheEntry::Artifact).is_some());
        assert!(data.get(&key(OTHER), CacheEntry::Artifact).is_none());
        assert!(data.get(&key(OTHER), CacheEntry::SnapshotNote).is_none());
        assert!(data.get(&key(NEVER_STORED), CacheEntry::Artifact).is_none());
    }

    #[test]
    fn secret_values_are_sealed_on_disk_and_clear_text_from_before_is_sealed_at_open() {
        let tmp = tempfile::tempdir().unwrap();
        let mut record = record(1, "x");
        record.settings.secrets.push(crate::SecretDoc {
            name: "crm_token".into(),
            value: Some("s3cr3t".into()),
            value_env: None,
            allow: vec!["https://crm.example.com".into()],
            headers: None,
        });
        let data = DataDir::open(tmp.path(), &test_key()).unwrap();
        data.set_action("crm", &record).unwrap();
        let on_disk = fs::read_to_string(tmp.path().join("actions/crm.json")).unwrap();
        assert!(!on_disk.contains("s3cr3t"), "{on_disk}");
        assert_eq!(data.action("crm").unwrap().unwrap(), record);
        // Another key does not open it, and says why.
        let other = DataDir::open(tmp.path(), &OperatorKey::generate()).unwrap();
        let why = format!("{:#}", other.action("crm").unwrap_err());
        assert!(why.contains("another operator key"), "{why}");
        // A record an earlier version wrote in the clear is sealed at open.
        fs::write(
            tmp.path().join("actions/old.json"),
            serde_json::to_vec(&record).unwrap(),
        )
        .unwrap();
        let data = DataDir::open(tmp.path(), &test_key()).unwrap();
        let on_disk = fs::read_to_string(tmp.path().join("actions/old.json")).unwrap();
        assert!(!on_disk.contains("s3cr3t"), "{on_disk}");
        assert_eq!(data.action("old").unwrap().unwrap(), record);
    }
}
