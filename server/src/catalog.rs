//! The catalog: the one place that knows what serves. Each action's serving
//! version, its record (settings, history) and its admission bound live
//! here; deploy, settings changes, delete, rollback and the restore at start
//! all go through it, and so does every invocation.
//!
//! A change is prepared first (compiled or read from the artifact cache,
//! described), then written to the store by compare-and-set on the record's
//! revision, and only then served: a failure at any step leaves what serves
//! as it was. Changes are serialized by one lock; invocations never take it.

use action_host::{
    ArtifactCache, CallContext, CallOptions, Host, Invocation, InvokeError, Prepared, Tape,
    sha256_hex,
};
use bytes::Bytes;
use serde_json::{Map, Value as Json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tracing::Instrument as _;

use crate::api::error::{ApiError, quoted};
use crate::api::views::{
    ActionList, ActionView, AskedHost, Health, TriedCall, VersionList, VersionView,
};
use crate::bound::{Bound, Slot};
use crate::config_file::{ActionDoc, HostFile};
use crate::metrics::{ActionStats, Ended, Metrics};
use crate::records::{InvocationRecord, Ran, RecordQuery, Recorder, Replay, Retention};
use crate::store::{ActionRecord, Store, StoreError, VersionEntry};

/// The bounds the catalog keeps.
#[derive(Debug, Clone)]
pub struct Bounds {
    /// Invocations running at once, in total; more get 429.
    pub max_concurrency: usize,
    /// Invocations running at once per action; more get 429.
    pub max_concurrency_per_action: usize,
    /// How long one compilation may take, waiting included, before the
    /// change is answered 503.
    pub compile_timeout: Duration,
    /// Compilations at once.
    pub max_parallel_compiles: usize,
    /// How many uploaded versions of each action are kept.
    pub keep_versions: usize,
    /// How long invocation records are kept.
    pub record_retention: Retention,
}

/// Which settings a rollback serves with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RollbackSettings {
    /// The settings serving now (the default): a rollback changes the code,
    /// not what the operator granted since.
    #[default]
    Current,
    /// The settings the version served with when it was uploaded.
    AsUploaded,
}

/// Which version a rollback serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionRef {
    /// By its number.
    Number(u64),
    /// By its SHA-256.
    Sha256(String),
}

impl VersionRef {
    /// Reads a version as a person writes it: a number, or a SHA-256.
    pub fn parse(text: &str) -> Result<VersionRef, String> {
        match text.parse::<u64>() {
            Ok(number) => Ok(VersionRef::Number(number)),
            Err(_) => VersionRef::sha256(text).map_err(|_| {
                format!(
                    "expected a version number or a SHA-256, got {}",
                    quoted(text)
                )
            }),
        }
    }

    /// Reads a SHA-256 in hexadecimal, either case (versions are listed in
    /// lower case). Anything else is refused here, naming the problem,
    /// rather than looked for and reported missing.
    pub fn sha256(text: &str) -> Result<VersionRef, String> {
        let lower = text.to_ascii_lowercase();
        if crate::store::is_sha256(&lower) {
            Ok(VersionRef::Sha256(lower))
        } else {
            Err(format!(
                "`sha256` must be 64 hexadecimal digits, as the versions list shows them, \
                 not {}",
                quoted(text)
            ))
        }
    }
}

/// What serves under one name.
struct Serving {
    record: ActionRecord,
    action: Prepared,
    /// The action's share of the invocation bound, kept across versions.
    calls: Arc<Bound>,
    /// Its calls' counters.
    stats: Arc<ActionStats>,
}

/// What is loading at start and what could not be served.
#[derive(Default)]
struct Startup {
    /// Names still loading, smallest first.
    loading: Vec<String>,
    /// Names that failed, with why.
    not_served: BTreeMap<String, String>,
}

/// The catalog of serving actions.
pub struct Catalog {
    host: Host,
    store: Arc<dyn Store>,
    host_file: HostFile,
    bounds: Bounds,
    serving: RwLock<HashMap<String, Arc<Serving>>>,
    startup: Mutex<Startup>,
    metrics: Metrics,
    /// Takes the records of calls to the store, off their path.
    recorder: Recorder,
    total: Arc<Bound>,
    compiles: Arc<Semaphore>,
    /// Held by every change, so that reading the record, writing it and
    /// serving it happen as one step.
    changes: tokio::sync::Mutex<()>,
    /// The store's feed, taken from the moment the catalog is made (so no
    /// change between the start's read and [`Catalog::follow`] is missed).
    feed: Mutex<Option<tokio::sync::broadcast::Receiver<crate::store::Change>>>,
}

impl Catalog {
    /// A catalog serving nothing yet, over `host` and `store`.
    pub fn new(host: Host, store: Arc<dyn Store>, host_file: HostFile, bounds: Bounds) -> Catalog {
        Catalog {
            feed: Mutex::new(Some(store.changes())),
            total: Bound::new(bounds.max_concurrency),
            compiles: Arc::new(Semaphore::new(bounds.max_parallel_compiles.max(1))),
            recorder: Recorder::start(Arc::clone(&store), bounds.record_retention),
            host,
            store,
            host_file,
            bounds,
            serving: RwLock::default(),
            startup: Mutex::default(),
            metrics: Metrics::default(),
            changes: tokio::sync::Mutex::new(()),
        }
    }

    /// The host the catalog drives.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The store behind the catalog.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The service's metrics in the Prometheus text format.
    pub fn render_metrics(&self) -> String {
        use std::fmt::Write as _;
        use std::sync::atomic::Ordering;
        let mut out = self.metrics.render(&self.host);
        let counts = self.recorder.counts();
        out.push_str(
            "# HELP action_host_invocation_records_total Invocation records by what became of \
             them: written to the store, dropped because the queue was full, or failed to \
             write.\n# TYPE action_host_invocation_records_total counter\n",
        );
        for (outcome, count) in [
            ("written", &counts.written),
            ("dropped", &counts.dropped),
            ("failed", &counts.failed),
        ] {
            let _ = writeln!(
                out,
                "action_host_invocation_records_total{{outcome=\"{outcome}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        out
    }

    /// Runs the action `name` once, within the admission bounds.
    pub async fn invoke(
        &self,
        name: &str,
        context: CallContext,
        input: &Map<String, Json>,
    ) -> Result<Invocation, ApiError> {
        self.invoke_within(name, context, input, None, "api").await
    }

    /// Like [`Catalog::invoke`], with the action's deadline at most
    /// `deadline_cap` (for a platform that waits no longer than that), from
    /// `source` (`api`, a webhook's platform), as its record will say.
    pub async fn invoke_within(
        &self,
        name: &str,
        context: CallContext,
        input: &Map<String, Json>,
        deadline_cap: Option<Duration>,
        source: &'static str,
    ) -> Result<Invocation, ApiError> {
        let called = self
            .call(name, context, input, deadline_cap, source, Keep::AsSettings)
            .await?;
        called.result.map_err(|error| ApiError::Invocation {
            error,
            invocation_id: Some(called.id),
        })
    }

    /// Runs `name` once for a designer trying it: the whole record comes
    /// back (outcome or error, logs, every outbound exchange, memory peak),
    /// whatever the recording settings; the store keeps it as they say,
    /// with the source `try-it`, written before this returns.
    pub async fn try_call(
        &self,
        name: &str,
        context: CallContext,
        input: &Map<String, Json>,
    ) -> Result<TriedCall, ApiError> {
        let called = self
            .call(name, context, input, None, "try-it", Keep::Always)
            .await?;
        Ok(TriedCall {
            record: called.record.expect("a call kept always has its record"),
            recorded: called.recorded,
        })
    }

    /// Runs `name` once within the admission bounds, counts it, and offers
    /// its record to the recorder as the action's settings say; with
    /// [`Keep::Always`] the record is made and returned in any case.
    async fn call(
        &self,
        name: &str,
        context: CallContext,
        input: &Map<String, Json>,
        deadline_cap: Option<Duration>,
        source: &'static str,
        keep: Keep,
    ) -> Result<Called, ApiError> {
        let serving = self.serving(name).ok_or_else(|| self.missing(name))?;
        let _permits = self.admit(&serving)?;
        let recording = serving.record.settings.recording.unwrap_or_default();
        let may_record = recording.may_record();
        let kept_context = (may_record || keep == Keep::Always).then(|| context.clone());
        let started_at_ms = now_ms();
        let started = Instant::now();
        let id = action_host::new_invocation_id();
        // The call's log lines name the action and the invocation: in the
        // request's span when there is one (an HTTP request), else in a span
        // of their own (an embedder calling the catalog directly).
        let current = tracing::Span::current();
        let (span, own_span) = if crate::api::CALL_FIELDS
            .iter()
            .all(|field| current.has_field(*field))
        {
            current.record("action", tracing::field::display(name));
            current.record("invocation_id", tracing::field::display(&id));
            (current, false)
        } else {
            let span = tracing::info_span!("invoke", action = %name, invocation_id = %id);
            (span, true)
        };
        let options = CallOptions {
            deadline_cap,
            now_ms: None,
            tape: if kept_context.is_some() {
                Tape::Record
            } else {
                Tape::Off
            },
        };
        let call = serving.action.call(id.clone(), context, input, options);
        let (result, trace) = if own_span {
            call.instrument(span.clone()).await
        } else {
            call.await
        };
        let ended = Ended::of(&result);
        let took = started.elapsed();
        serving.stats.invocation(ended, took);
        span.in_scope(|| tracing::debug!(result = ended.name(), took_us = took.as_micros() as u64));
        let offer = may_record && recording.keeps(&result);
        // Built only when kept or shown: with the default (failures only),
        // a successful call costs no record.
        let Some(context) = kept_context.filter(|_| offer || keep == Keep::Always) else {
            return Ok(Called {
                id,
                result,
                record: None,
                recorded: false,
            });
        };
        let record = InvocationRecord::of_call(
            Ran {
                id: id.clone(),
                action: name,
                version: (serving.record.version, &serving.record.sha256),
                source,
                at_ms: started_at_ms,
                took,
            },
            context,
            input,
            &result,
            trace,
        );
        let (returned, recorded) = match keep {
            Keep::Always => {
                let recorded = offer && self.recorder.keep_now(record.clone()).await;
                (Some(record), recorded)
            }
            Keep::AsSettings => {
                if offer {
                    self.recorder.offer(record);
                }
                (None, offer)
            }
        };
        Ok(Called {
            id,
            result,
            record: returned,
            recorded,
        })
    }

    /// Reruns the recorded call `id` with the same context, input and clock,
    /// its outbound requests answered from the record: on the version
    /// serving, on the kept version `version`, or on `candidate` (a component
    /// not deployed), with the settings serving now.
    pub async fn replay(
        &self,
        id: &str,
        version: Option<VersionRef>,
        candidate: Option<Bytes>,
    ) -> Result<Replay, ApiError> {
        let recorded = self.invocation(id).await?;
        let name = recorded.action.as_str();
        let serving = self.serving(name).ok_or_else(|| self.missing(name))?;
        let doc = &serving.record.settings;
        let (action, number, sha256) = match (candidate, version) {
            (Some(bytes), _) => {
                let sha256 = sha256_hex(&bytes);
                // Not cached: a candidate has no version in the store, so
                // nothing would ever remove its artifact.
                let prepared = self.prepare_bounded(name, &bytes, doc, None).await?;
                (prepared, 0, sha256)
            }
            (None, Some(to)) => {
                let kept = find_version(name, &serving.record, &to)?;
                let action = self.reload(name, &kept.sha256, doc).await?;
                (action, kept.version, kept.sha256.clone())
            }
            (None, None) => (
                serving.action.clone(),
                serving.record.version,
                serving.record.sha256.clone(),
            ),
        };
        // A replay runs code like any call: within the same bounds.
        let _permits = self.admit(&serving)?;
        Ok(crate::records::replay(&action, recorded, number, &sha256).await)
    }

    /// The records of `name`'s calls that `query` selects, newest first;
    /// an action deleted since keeps its records until they expire.
    pub async fn invocations(
        &self,
        name: &str,
        query: &RecordQuery,
    ) -> Result<Vec<InvocationRecord>, ApiError> {
        if self.serving(name).is_none()
            && self
                .store
                .record(name)
                .await
                .map_err(store_error)?
                .is_none()
        {
            let kept = self
                .store
                .invocations(name, query)
                .await
                .map_err(store_error)?;
            if kept.is_empty() && query.after.is_none() {
                return Err(self.missing(name));
            }
            return Ok(kept);
        }
        self.store
            .invocations(name, query)
            .await
            .map_err(store_error)
    }

    /// The record of the invocation `id`.
    pub async fn invocation(&self, id: &str) -> Result<InvocationRecord, ApiError> {
        self.store
            .invocation(id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| ApiError::UnknownInvocation(id.to_owned()))
    }

    /// What became of the records of calls so far.
    pub fn record_counts(&self) -> &crate::records::RecordCounts {
        self.recorder.counts()
    }

    /// The action `name` as the API shows it.
    pub fn view(&self, name: &str) -> Result<ActionView, ApiError> {
        let serving = self.serving(name).ok_or_else(|| self.missing(name))?;
        Ok(self.view_of(name, &serving))
    }

    /// Every serving action, by name.
    pub fn list(&self) -> ActionList {
        let serving = self.read_serving();
        let mut names: Vec<&String> = serving.keys().collect();
        names.sort();
        ActionList {
            actions: names
                .into_iter()
                .map(|name| self.view_of(name, &serving[name]))
                .collect(),
        }
    }

    /// The kept versions of `name`, newest first.
    pub fn versions(&self, name: &str) -> Result<VersionList, ApiError> {
        let serving = self.serving(name).ok_or_else(|| self.missing(name))?;
        let record = &serving.record;
        let versions = record
            .versions
            .iter()
            .rev()
            .map(|v| VersionView {
                version: v.version,
                sha256: v.sha256.clone(),
                uploaded_at: rfc3339(v.uploaded_at_ms),
                uploaded_by: v.uploaded_by.clone(),
                manifest_version: v.manifest_version.clone(),
                serving: v.version == record.version,
            })
            .collect();
        Ok(VersionList {
            name: name.to_owned(),
            versions,
        })
    }

    /// Whether start-up is done, and what is not served.
    pub fn health(&self) -> Health {
        let startup = self.startup.lock().unwrap_or_else(|p| p.into_inner());
        let degraded = self.store.degraded();
        Health {
            status: match (&degraded, startup.loading.is_empty()) {
                (Some(_), _) => "degraded",
                (None, false) => "starting",
                (None, true) => "ok",
            },
            degraded,
            loading: startup.loading.clone(),
            not_served: startup.not_served.clone(),
        }
    }

    /// Deploys `bytes` as a new version of `name`, uploaded by `by`; the same
    /// bytes as the serving version are not a new version. Returns the action
    /// and whether the name is new.
    pub async fn deploy(
        &self,
        name: &str,
        bytes: Bytes,
        by: &str,
        expect: Option<u64>,
    ) -> Result<(ActionView, bool), ApiError> {
        let sha256 = sha256_hex(&bytes);
        let same = |serving: &Option<Arc<Serving>>| {
            serving
                .as_ref()
                .filter(|s| s.record.sha256 == sha256)
                .map(|s| self.view_of(name, s))
        };
        if expect.is_none()
            && let Some(view) = same(&self.serving(name))
        {
            return Ok((view, false));
        }
        self.check_store()?;
        let doc = self.settings_for_upload(name);
        // Compiled before the change lock is taken, so that a slow
        // compilation holds up no other change.
        let prepared = (self.prepare_bounded(name, &bytes, &doc, self.cache())).await?;
        let _one_change = self.changes.lock().await;
        // What the store holds, not what serves here: another replica may
        // have changed it since.
        let stored = self.stored(name).await?;
        check_expected(name, expect, stored.as_ref())?;
        if let Some(record) = stored.as_ref().filter(|r| r.sha256 == sha256) {
            // Already stored as serving (through another replica): serve it
            // here too, if this one has not yet.
            let serving = match self.serving(name) {
                Some(serving) if same_change(&serving.record, record) => serving,
                _ => self.catch_up(name, record.clone()).await?,
            };
            return Ok((self.view_of(name, &serving), false));
        }
        // Settings changed while it compiled: prepare it again with the new
        // ones, from the artifact just cached.
        let current = self.settings_for(name, stored.as_ref());
        let prepared = if current == doc {
            prepared
        } else {
            (self.prepare_bounded(name, &bytes, &current, self.cache())).await?
        };
        let now = now_ms();
        let mut record = match stored.clone() {
            Some(record) => record,
            None => ActionRecord {
                revision: 0,
                sha256: String::new(),
                version: 0,
                settings: ActionDoc::default(),
                changed_at_ms: now,
                versions: Vec::new(),
            },
        };
        let version = record.next_version();
        record.versions.push(VersionEntry {
            version,
            sha256: sha256.clone(),
            uploaded_at_ms: now,
            uploaded_by: by.to_owned(),
            manifest_version: prepared.manifest().version.clone(),
            settings: current.clone(),
        });
        let dropped = trim_versions(&mut record.versions, self.bounds.keep_versions);
        record.revision += 1;
        record.sha256 = sha256.clone();
        record.version = version;
        record.settings = current;
        record.changed_at_ms = now;
        self.store
            .put_version(&sha256, bytes)
            .await
            .map_err(store_error)?;
        self.swap(
            name,
            stored.as_ref().map(|r| r.revision),
            Some(record.clone()),
        )
        .await?;
        self.prune(dropped).await;
        let serving = self.install(name, record, prepared);
        Ok((self.view_of(name, &serving), stored.is_none()))
    }

    /// Changes an action's settings (`change` makes the new ones from the
    /// current ones): its version is prepared again with them (from the
    /// cached artifact), stored, then served. Settings the host file gives
    /// cannot be changed here.
    pub async fn set_settings(
        &self,
        name: &str,
        expect: Option<u64>,
        change: impl FnOnce(ActionDoc) -> Result<ActionDoc, ApiError>,
    ) -> Result<ActionView, ApiError> {
        self.check_store()?;
        let _one_change = self.changes.lock().await;
        let previous = self.stored_or_missing(name).await?;
        check_expected(name, expect, Some(&previous))?;
        if self.host_file.docs.contains_key(name) {
            return Err(ApiError::ManagedByHostFile(format!(
                "the settings of `{name}` come from the host configuration file; change them \
                 there"
            )));
        }
        let doc = change(previous.settings.clone())?;
        let prepared = self.reload(name, &previous.sha256, &doc).await?;
        let record = ActionRecord {
            revision: previous.revision + 1,
            settings: doc,
            changed_at_ms: now_ms(),
            ..previous.clone()
        };
        self.swap(name, Some(previous.revision), Some(record.clone()))
            .await?;
        let serving = self.install(name, record, prepared);
        Ok(self.view_of(name, &serving))
    }

    /// Serves a kept earlier version again, with the settings `settings`
    /// says (the host file's, for an action it names). Without a
    /// recompilation when its artifact is cached; what serves changes only
    /// once the new state is stored.
    pub async fn rollback(
        &self,
        name: &str,
        to: VersionRef,
        settings: RollbackSettings,
        expect: Option<u64>,
    ) -> Result<ActionView, ApiError> {
        self.check_store()?;
        let _one_change = self.changes.lock().await;
        let previous = self.stored_or_missing(name).await?;
        check_expected(name, expect, Some(&previous))?;
        let target = find_version(name, &previous, &to)?.clone();
        let doc = match (self.host_file.docs.get(name), settings) {
            (Some(doc), _) => doc.clone(),
            (None, RollbackSettings::Current) => previous.settings.clone(),
            (None, RollbackSettings::AsUploaded) => target.settings.clone(),
        };
        let prepared = self.reload(name, &target.sha256, &doc).await?;
        let record = ActionRecord {
            revision: previous.revision + 1,
            sha256: target.sha256.clone(),
            version: target.version,
            settings: doc,
            changed_at_ms: now_ms(),
            versions: previous.versions.clone(),
        };
        self.swap(name, Some(previous.revision), Some(record.clone()))
            .await?;
        let serving = self.install(name, record, prepared);
        Ok(self.view_of(name, &serving))
    }

    /// Stops serving `name` and removes its record and versions; calls
    /// already running finish. Without `by_operator`, an action whose
    /// record holds the operator's settings (grants, secrets, limits) is
    /// refused: it would come back without them on its next upload, limits
    /// included.
    pub async fn delete(
        &self,
        name: &str,
        expect: Option<u64>,
        by_operator: bool,
    ) -> Result<(), ApiError> {
        self.check_store()?;
        let _one_change = self.changes.lock().await;
        let previous = self.stored_or_missing(name).await?;
        check_expected(name, expect, Some(&previous))?;
        let settings = &previous.settings;
        let holds_operator_settings = !settings.grants.is_empty()
            || !settings.secrets.is_empty()
            || settings
                .limits
                .as_ref()
                .is_some_and(|l| *l != Default::default());
        // The host file's settings come back with the next upload anyway.
        if !by_operator && holds_operator_settings && !self.host_file.docs.contains_key(name) {
            return Err(ApiError::Forbidden(format!(
                "`{name}` has grants, secrets or limits the operator set, which deleting it \
                 would drop: that needs the operator token"
            )));
        }
        self.swap(name, Some(previous.revision), None).await?;
        self.write_serving().remove(name);
        let versions = previous.versions.iter().map(|v| v.sha256.clone());
        self.prune(versions.collect()).await;
        Ok(())
    }

    /// Serves what the store holds for `name` now (it may have changed
    /// since the start read it): the record's version, with the host file's
    /// settings when it names the action.
    pub async fn restore(&self, name: &str) -> Result<(), ApiError> {
        let _one_change = self.changes.lock().await;
        match self.stored(name).await? {
            Some(record) => self.catch_up(name, record).await.map(drop),
            // Deleted through another replica meanwhile.
            None => Ok(()),
        }
    }

    /// Follows the store's feed of changes for as long as the catalog
    /// lives, so that what another writer (another replica) stores is
    /// served here too. A missed part of the feed is made up by comparing
    /// every record.
    pub async fn follow(catalog: std::sync::Weak<Catalog>) {
        let Some(mut feed) = catalog.upgrade().and_then(|c| c.feed.lock().ok()?.take()) else {
            return;
        };
        loop {
            let received = feed.recv().await;
            let Some(catalog) = catalog.upgrade() else {
                return;
            };
            match received {
                Ok(change) => catalog.follow_change(&change.name).await,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!("missed {missed} changes of the store: comparing every action");
                    catalog.follow_all().await;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Serves what the store holds for `name`, if that is not what serves.
    async fn follow_change(&self, name: &str) {
        let _one_change = self.changes.lock().await;
        let stored = match self.stored(name).await {
            Ok(stored) => stored,
            Err(error) => {
                // The next change or resync tries again.
                tracing::warn!(action = %name, "cannot read a changed record: {}", error.message());
                return;
            }
        };
        let serving = self.serving(name);
        match (stored, serving) {
            (None, None) => {}
            (None, Some(_)) => {
                tracing::info!(action = %name, "deleted through another replica");
                self.write_serving().remove(name);
            }
            (Some(stored), Some(serving)) if same_change(&stored, &serving.record) => {}
            (Some(stored), _) => {
                let version = stored.version;
                match self.catch_up(name, stored).await {
                    Ok(_) => {
                        tracing::info!(action = %name, version, "serving a change stored by another replica")
                    }
                    Err(error) => tracing::warn!(
                        action = %name,
                        "cannot serve a change stored by another replica: {}",
                        error.message()
                    ),
                }
            }
        }
    }

    /// Compares every stored record with what serves, and catches up.
    async fn follow_all(&self) {
        let mut names: Vec<String> = self.read_serving().keys().cloned().collect();
        match self.store.records().await {
            Ok(records) => names.extend(records.into_iter().map(|(name, _)| name)),
            Err(error) => {
                tracing::warn!("cannot list the stored actions: {error:#}");
                return;
            }
        }
        names.sort();
        names.dedup();
        for name in names {
            self.follow_change(&name).await;
        }
    }

    /// Serves `record` under `name`, prepared from the store (from the
    /// cached artifact when there is one), with the host file's settings
    /// when it names the action. The caller holds the change lock.
    async fn catch_up(
        &self,
        name: &str,
        mut record: ActionRecord,
    ) -> Result<Arc<Serving>, ApiError> {
        match self.host_file.docs.get(name) {
            Some(doc) => record.settings = doc.clone(),
            // Stored settings came through the API, which may not read the
            // host's environment (an older version let it).
            None if record
                .settings
                .secrets
                .iter()
                .any(|s| s.value_env.is_some()) =>
            {
                return Err(ApiError::InvalidSettings(
                    "its stored settings read a secret from the host's environment \
                     (`value_env`), which only the host configuration file may do"
                        .into(),
                ));
            }
            None => {}
        }
        let prepared = self
            .reload(name, &record.sha256.clone(), &record.settings.clone())
            .await?;
        if let Some(entry) = record
            .versions
            .iter_mut()
            .find(|v| v.version == record.version)
            && entry.manifest_version.is_empty()
        {
            entry.manifest_version = prepared.manifest().version.clone();
        }
        Ok(self.install(name, record, prepared))
    }

    /// Refuses a change at once while the store cannot be reached, rather
    /// than after compiling it.
    fn check_store(&self) -> Result<(), ApiError> {
        match self.store.degraded() {
            Some(why) => Err(ApiError::StoreUnavailable(why)),
            None => Ok(()),
        }
    }

    /// The stored record of `name`, if it has one.
    async fn stored(&self, name: &str) -> Result<Option<ActionRecord>, ApiError> {
        let record = self.store.record(name).await.map_err(store_error)?;
        Ok(record.map(|mut record| {
            if record.versions.is_empty() {
                // A record from before versions were kept: its one version.
                record.versions.push(VersionEntry {
                    version: record.version,
                    sha256: record.sha256.clone(),
                    uploaded_at_ms: record.changed_at_ms,
                    uploaded_by: "unknown".into(),
                    manifest_version: String::new(),
                    settings: record.settings.clone(),
                });
            }
            record
        }))
    }

    /// The stored record of `name`, or why there is none to change.
    async fn stored_or_missing(&self, name: &str) -> Result<ActionRecord, ApiError> {
        match self.stored(name).await? {
            Some(record) => Ok(record),
            None => Err(self.missing(name)),
        }
    }

    /// Marks `names` as loading at start, in the order they will load.
    pub fn loading(&self, names: Vec<String>) {
        self.startup
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .loading = names;
    }

    /// Marks `name` as done loading at start, or as not served and why.
    pub fn loaded(&self, name: &str, failed: Option<String>) {
        let mut startup = self.startup.lock().unwrap_or_else(|p| p.into_inner());
        startup.loading.retain(|n| n != name);
        match failed {
            Some(why) => startup.not_served.insert(name.to_owned(), why),
            None => startup.not_served.remove(name),
        };
    }

    /// The settings a new version of `name` is compiled with before the
    /// change lock is taken: the host file's, or the serving version's, or
    /// none.
    fn settings_for_upload(&self, name: &str) -> ActionDoc {
        self.settings_for(name, self.serving(name).as_ref().map(|s| &s.record))
    }

    /// The settings a new version of `name` serves with: the host file's, or
    /// those of `record`, or none.
    fn settings_for(&self, name: &str, record: Option<&ActionRecord>) -> ActionDoc {
        match (self.host_file.docs.get(name), record) {
            (Some(doc), _) => doc.clone(),
            (None, Some(record)) => record.settings.clone(),
            (None, None) => ActionDoc::default(),
        }
    }

    /// The store's artifact cache, for what is or becomes a stored version
    /// (whose artifacts the store removes with it).
    fn cache(&self) -> Option<Arc<dyn ArtifactCache>> {
        Some(self.store.artifacts())
    }

    /// Prepares `bytes` as `name` with `doc`, at most
    /// [`Bounds::max_parallel_compiles`] at once and within
    /// [`Bounds::compile_timeout`] (waiting included). A compilation past the
    /// timeout cannot be stopped: it goes on, holding its place, and its
    /// artifact is cached (in `cache`, when given) for the next upload of the
    /// same bytes.
    async fn prepare_bounded(
        &self,
        name: &str,
        bytes: &Bytes,
        doc: &ActionDoc,
        cache: Option<Arc<dyn ArtifactCache>>,
    ) -> Result<Prepared, ApiError> {
        let settings = doc.settings().map_err(ApiError::InvalidSettings)?;
        let timeout = self.bounds.compile_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let place = tokio::time::timeout_at(deadline, Arc::clone(&self.compiles).acquire_owned())
            .await
            .map_err(|_| {
                ApiError::Busy(format!(
                    "other uploads kept the compiler busy for {} s; retry later",
                    timeout.as_secs()
                ))
            })?
            .map_err(ApiError::internal)?;
        let (host, name, bytes) = (self.host.clone(), name.to_owned(), bytes.clone());
        let compiling = tokio::spawn(async move {
            let _place = place;
            host.prepare(&name, &bytes, settings, cache).await
        });
        match tokio::time::timeout_at(deadline, compiling).await {
            Ok(Ok(prepared)) => Ok(prepared?),
            Ok(Err(failed)) => Err(ApiError::Internal(format!(
                "the compilation failed: {failed}"
            ))),
            Err(_) => Err(ApiError::CompileTimeout(format!(
                "compiling it took longer than {} s; it goes on in the background and its \
                 artifact is kept, so uploading it again later is quicker",
                timeout.as_secs()
            ))),
        }
    }

    /// Prepares the stored version `sha256` of `name` with `doc` (from the
    /// cached artifact when there is one).
    async fn reload(
        &self,
        name: &str,
        sha256: &str,
        doc: &ActionDoc,
    ) -> Result<Prepared, ApiError> {
        let bytes = self.store.version(sha256).await.map_err(store_error)?;
        (self.prepare_bounded(name, &Bytes::from(bytes), doc, self.cache())).await
    }

    /// Writes the record by compare-and-set.
    async fn swap(
        &self,
        name: &str,
        expected: Option<u64>,
        record: Option<ActionRecord>,
    ) -> Result<(), ApiError> {
        self.store
            .swap_record(name, expected, record)
            .await
            .map_err(store_error)
    }

    /// Removes the versions no record keeps any longer; a failure only
    /// leaves files behind.
    async fn prune(&self, sha256s: Vec<String>) {
        if sha256s.is_empty() {
            return;
        }
        if let Err(error) = self.store.prune_versions(sha256s).await {
            tracing::warn!("cannot remove versions no longer kept: {error:#}");
        }
    }

    /// Serves a prepared version with its record.
    fn install(&self, name: &str, record: ActionRecord, action: Prepared) -> Arc<Serving> {
        let mut serving = self.write_serving();
        let calls = serving.get(name).map_or_else(
            || Bound::new(self.bounds.max_concurrency_per_action),
            |previous| Arc::clone(&previous.calls),
        );
        let entry = Arc::new(Serving {
            record,
            action,
            calls,
            stats: self.metrics.action(name),
        });
        serving.insert(name.to_owned(), Arc::clone(&entry));
        entry
    }

    fn view_of(&self, name: &str, serving: &Serving) -> ActionView {
        ActionView {
            name: name.to_owned(),
            version: serving.record.version,
            sha256: serving.record.sha256.clone(),
            revision: serving.record.revision,
            manifest: Arc::clone(serving.action.manifest()),
            starts_from: serving.action.starts_from().clone(),
            settings: serving.record.settings.redacted(),
            changed_at: rfc3339(serving.record.changed_at_ms),
            invocations: self.metrics.counts(name),
            p50_ms: self.metrics.p50_ms(name),
            hosts: asked_hosts(serving.action.manifest(), &serving.record.settings.grants),
        }
    }

    /// Why `name` is not serving: it is still loading at start, or unknown.
    fn missing(&self, name: &str) -> ApiError {
        let startup = self.startup.lock().unwrap_or_else(|p| p.into_inner());
        if startup.loading.iter().any(|n| n == name) {
            ApiError::Loading {
                name: name.to_owned(),
                retry_after: Duration::from_secs(2),
            }
        } else {
            ApiError::UnknownAction(name.to_owned())
        }
    }

    /// Takes a place for one invocation of `name`, or refuses at once: the
    /// service never queues calls without bound.
    fn admit(&self, serving: &Serving) -> Result<(Slot, Slot), ApiError> {
        let overloaded = || {
            serving.stats.refused();
            ApiError::Overloaded
        };
        let total = self.total.try_take().ok_or_else(overloaded)?;
        let action = serving.calls.try_take().ok_or_else(overloaded)?;
        Ok((total, action))
    }

    fn serving(&self, name: &str) -> Option<Arc<Serving>> {
        self.read_serving().get(name).cloned()
    }

    fn read_serving(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Serving>>> {
        // The map holds only Arcs, so it is whole even if a writer panicked.
        self.serving.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_serving(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Serving>>> {
        self.serving.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// The kept version of `name` that `to` names.
fn find_version<'a>(
    name: &str,
    record: &'a ActionRecord,
    to: &VersionRef,
) -> Result<&'a VersionEntry, ApiError> {
    record
        .versions
        .iter()
        .find(|v| match to {
            VersionRef::Number(n) => v.version == *n,
            VersionRef::Sha256(sha256) => v.sha256 == *sha256,
        })
        .ok_or_else(|| {
            let kept: Vec<String> = record
                .versions
                .iter()
                .map(|v| v.version.to_string())
                .collect();
            let which = match to {
                VersionRef::Number(n) => format!("version {n}"),
                VersionRef::Sha256(sha256) => format!("a version with SHA-256 {sha256}"),
            };
            ApiError::UnknownVersion(format!(
                "`{name}` has no {which}; the kept versions are {}",
                kept.join(", ")
            ))
        })
}

/// The answer to a store that failed.
fn store_error(error: impl Into<StoreError>) -> ApiError {
    match error.into() {
        error @ StoreError::Conflict { .. } => ApiError::Conflict(error.to_string()),
        StoreError::Unavailable(why) => ApiError::StoreUnavailable(why),
        StoreError::Other(error) => ApiError::internal(error),
    }
}

/// Refuses a change made for a revision (`If-Match`) that is not the
/// stored one.
fn check_expected(
    name: &str,
    expect: Option<u64>,
    stored: Option<&ActionRecord>,
) -> Result<(), ApiError> {
    let found = stored.map(|r| r.revision);
    match expect {
        Some(expected) if found != Some(expected) => Err(ApiError::Conflict(format!(
            "`{name}` is at revision {}, not {expected} as If-Match says: another change came \
             first; read it again and retry",
            found.map_or_else(|| "none (it is not deployed)".into(), |r| r.to_string())
        ))),
        _ => Ok(()),
    }
}

/// Whether two records of one action are the same change. The settings may
/// differ where the host file overrides them, so the revision, the moment
/// and the version are compared (a record deleted and made again starts
/// from revision 1 at another moment).
fn same_change(a: &ActionRecord, b: &ActionRecord) -> bool {
    (a.revision, a.changed_at_ms, &a.sha256, a.version)
        == (b.revision, b.changed_at_ms, &b.sha256, b.version)
}

/// Keeps the newest `keep` versions (at least one); returns the SHA-256 of
/// those dropped.
fn trim_versions(versions: &mut Vec<VersionEntry>, keep: usize) -> Vec<String> {
    let excess = versions.len().saturating_sub(keep.max(1));
    versions.drain(..excess).map(|v| v.sha256).collect()
}

pub(crate) fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// What [`Catalog::call`] did.
struct Called {
    /// The invocation's id, also on its record.
    id: String,
    result: Result<Invocation, InvokeError>,
    /// The call's record, when one was made to be returned.
    record: Option<InvocationRecord>,
    /// Whether the record went to the store (or its queue).
    recorded: bool,
}

/// Whether a call's record is made only as the action's recording settings
/// say, or always (try-it shows it to the designer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    AsSettings,
    Always,
}

/// Each host `manifest` asks for, with the grants among `grants` that
/// reach it. A grant that does not parse reaches nothing (the settings were
/// checked when they were set; this only shows them).
fn asked_hosts(manifest: &action_host::Manifest, grants: &[String]) -> Vec<AskedHost> {
    let parsed: Vec<action_host::Grant> = grants
        .iter()
        .filter_map(|g| action_host::Grant::parse(g).ok())
        .collect();
    manifest
        .hosts
        .iter()
        .map(|host| AskedHost {
            host: host.clone(),
            granted_by: parsed
                .iter()
                .filter(|grant| grant.reaches(host))
                .map(|grant| grant.as_str().to_owned())
                .collect(),
        })
        .collect()
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(version: u64) -> VersionEntry {
        VersionEntry {
            version,
            sha256: format!("sha-{version}"),
            uploaded_at_ms: 0,
            uploaded_by: "designer".into(),
            manifest_version: "1.0.0".into(),
            settings: ActionDoc::default(),
        }
    }

    #[test]
    fn a_version_is_a_number_or_a_sha256_and_anything_else_is_named() {
        assert_eq!(VersionRef::parse("3"), Ok(VersionRef::Number(3)));
        let upper = "AB".repeat(32);
        assert_eq!(
            VersionRef::parse(&upper),
            Ok(VersionRef::Sha256("ab".repeat(32)))
        );
        let latest = VersionRef::parse("latest").unwrap_err();
        assert!(latest.contains("\"latest\""), "{latest}");
        for bad in ["", "../../versions/x", &"a".repeat(63), &"g".repeat(64)] {
            let why = VersionRef::sha256(bad).unwrap_err();
            assert!(why.contains("64 hexadecimal digits"), "{why}");
        }
        // What a client sent is not echoed at any length.
        let long = VersionRef::sha256(&"x".repeat(5000)).unwrap_err();
        assert!(
            long.len() < 200 && long.contains("5000 characters"),
            "{long}"
        );
    }

    #[test]
    fn trimming_keeps_the_newest_versions() {
        let mut versions: Vec<_> = (1..=5).map(entry).collect();
        assert_eq!(trim_versions(&mut versions, 3), ["sha-1", "sha-2"]);
        assert_eq!(
            versions.iter().map(|v| v.version).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        assert_eq!(trim_versions(&mut versions, 0), ["sha-3", "sha-4"]);
        assert_eq!(versions.len(), 1);
    }

    #[test]
    fn the_next_version_is_above_every_kept_and_serving_one() {
        let record = ActionRecord {
            revision: 4,
            sha256: "sha-2".into(),
            version: 2,
            settings: ActionDoc::default(),
            changed_at_ms: 0,
            versions: vec![entry(2), entry(7)],
        };
        assert_eq!(record.next_version(), 8);
    }
}
