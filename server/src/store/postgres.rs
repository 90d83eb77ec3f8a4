//! The store in PostgreSQL, shared by any number of replicas.
//!
//! ```text
//! action_host_schema      the schema's version (migrations run at start, under an advisory lock)
//! action_host_versions    every uploaded component by SHA-256, written once
//! action_host_actions     one row per action: its revision, the serving version (a foreign
//!                         key, so no record points at a missing version), the record as JSON
//!                         with secret values sealed, and the change sequence number; a
//!                         deleted action keeps its row with no record, so that replicas
//!                         that missed the notification learn of the delete
//! action_host_artifacts   compiled components by engine key, sealed by the host
//! ```
//!
//! A record changes by compare-and-set on its revision, in a transaction
//! that also sends `NOTIFY action_host_changes` with the action's name and
//! revision (never its data). Each replica listens on a connection of its
//! own and, on every notification, every (re)connection and every few
//! seconds, reads the rows whose change sequence number is above the last
//! it saw: a notification lost while it was disconnected is made up by the
//! next read. Invocations never touch the database, so while it is down
//! every replica goes on serving what it has; changes are refused (503) and
//! [`Store::degraded`] says why until the listener is connected again.

use action_host::{ArtifactCache, CacheEntry, EngineKey};
use anyhow::{Context as _, anyhow, bail};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_postgres::NoTls;

use super::at_rest::RecordCodec;
use super::{ActionRecord, Change, Store, StoreError, StoreResult};
use crate::keys::OperatorKey;
use crate::records::{InvocationRecord, RecordQuery, Retention};

/// The channel changes are announced on.
const CHANNEL: &str = "action_host_changes";
/// Held while the schema is created or migrated.
const MIGRATION_LOCK: i64 = 0x6163_7469_6f6e_0001;
/// How often a replica reads the changes even without a notification.
const RESYNC_EVERY: Duration = Duration::from_secs(2);

/// How long a write to an action's record waits for the writes before it.
const WRITE_LOCK_WAIT: Duration = Duration::from_secs(5);

/// How long PostgreSQL keeps a record write whose replica sends nothing more
/// (cut off mid-write) before it ends the write and frees the others.
const STALLED_WRITE: Duration = Duration::from_secs(30);
/// How long to wait between attempts to reconnect the listener.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);
/// How long a connection attempt or a wait for a pooled connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema, one step per version: step `i` takes version `i` to `i + 1`.
/// A step is never changed once released; a change is a new step.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE action_host_versions (
        sha256 text PRIMARY KEY,
        bytes bytea NOT NULL,
        stored_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE SEQUENCE action_host_change_seq;
    CREATE TABLE action_host_actions (
        name text PRIMARY KEY,
        revision bigint NOT NULL,
        serving_sha256 text REFERENCES action_host_versions (sha256),
        record jsonb,
        change_seq bigint NOT NULL DEFAULT nextval('action_host_change_seq'),
        CHECK ((record IS NULL) = (serving_sha256 IS NULL))
    );
    CREATE INDEX action_host_actions_by_change ON action_host_actions (change_seq);
    CREATE TABLE action_host_artifacts (
        engine_key text NOT NULL,
        entry text NOT NULL,
        bytes bytea NOT NULL,
        stored_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (engine_key, entry)
    );
",
    "
    CREATE TABLE action_host_invocations (
        id text PRIMARY KEY,
        action text NOT NULL,
        at_ms bigint NOT NULL,
        result text NOT NULL,
        record jsonb NOT NULL
    );
    CREATE INDEX action_host_invocations_by_action
        ON action_host_invocations (action, at_ms DESC, id DESC);
",
];

/// A PostgreSQL database as the store.
pub struct Postgres {
    pool: Pool,
    codec: RecordCodec,
    changes: broadcast::Sender<Change>,
    /// Why the store is degraded, while it is.
    degraded: Arc<Mutex<Option<String>>>,
    /// Runs the artifact cache's queries, which the host makes from
    /// blocking threads.
    runtime: tokio::runtime::Handle,
}

impl Postgres {
    /// Connects to the database at `url` (`postgres://USER@HOST/DB`; the
    /// password from `PGPASSWORD` when the URL has none), whose
    /// records' secret values are sealed under `key`; creates or migrates
    /// the schema, and starts following the changes other replicas make.
    pub async fn connect(url: &str, key: &OperatorKey) -> anyhow::Result<Arc<Postgres>> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| anyhow!("`{}` is not a PostgreSQL URL: {e}", redact_url(url)))?;
        config.connect_timeout(CONNECT_TIMEOUT);
        // Kept out of the URL, and so out of process listings.
        if config.get_password().is_none()
            && let Ok(password) = std::env::var("PGPASSWORD")
        {
            config.password(password);
        }
        if config.get_application_name().is_none() {
            config.application_name("action-host");
        }
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(8)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .context("cannot make the PostgreSQL connection pool")?;
        let where_ = redact_url(url);
        let mut client = pool
            .get()
            .await
            .map_err(|e| anyhow!("cannot connect to PostgreSQL at {where_}: {e}"))?;
        migrate(&mut client)
            .await
            .with_context(|| format!("cannot prepare the schema in {where_}"))?;
        let last_seen = client
            .query_one(
                "SELECT coalesce(max(change_seq), 0) FROM action_host_actions",
                &[],
            )
            .await?
            .get::<_, i64>(0);
        drop(client);
        let store = Arc::new(Postgres {
            pool,
            codec: RecordCodec::new(key),
            changes: broadcast::channel(1024).0,
            degraded: Arc::default(),
            runtime: tokio::runtime::Handle::current(),
        });
        tokio::spawn(listen(Arc::downgrade(&store), config, last_seen));
        Ok(store)
    }

    async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| {
            let why = format!("cannot reach PostgreSQL: {e}");
            self.set_degraded(Some(why.clone()));
            StoreError::Unavailable(why)
        })
    }

    fn set_degraded(&self, why: Option<String>) {
        set_degraded(&self.degraded, why);
    }

    /// A database error as the store's: unavailable when the database is
    /// down, unreachable or shutting down, else a fault.
    fn fail(&self, error: tokio_postgres::Error) -> StoreError {
        let unavailable = match error.code() {
            None => true,
            Some(code) => {
                let class = &code.code()[..2];
                // Connection exceptions, insufficient resources, operator
                // intervention (shutdown).
                matches!(class, "08" | "53" | "57")
            }
        };
        if unavailable {
            let why = format!("PostgreSQL is unavailable: {error}");
            self.set_degraded(Some(why.clone()));
            StoreError::Unavailable(why)
        } else {
            StoreError::Other(anyhow!("PostgreSQL refused a query: {error}"))
        }
    }

    fn decode(&self, name: &str, record: serde_json::Value) -> anyhow::Result<ActionRecord> {
        let bytes = serde_json::to_vec(&record)?;
        let (record, _) = self
            .codec
            .decode(name, &bytes)
            .with_context(|| format!("the stored record of `{name}` is not valid"))?;
        Ok(record)
    }

    fn encode(&self, name: &str, record: &ActionRecord) -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_slice(&self.codec.encode(name, record)?)?)
    }
}

#[async_trait::async_trait]
impl Store for Postgres {
    async fn put_version(&self, sha256: &str, bytes: bytes::Bytes) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO action_host_versions (sha256, bytes) VALUES ($1, $2) \
                 ON CONFLICT (sha256) DO NOTHING",
                &[&sha256, &bytes.as_ref()],
            )
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    async fn version(&self, sha256: &str) -> StoreResult<Vec<u8>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT bytes FROM action_host_versions WHERE sha256 = $1",
                &[&sha256],
            )
            .await
            .map_err(|e| self.fail(e))?;
        match row {
            Some(row) => Ok(row.get(0)),
            None => Err(anyhow!("the version {sha256} is not stored").into()),
        }
    }

    async fn version_len(&self, sha256: &str) -> StoreResult<u64> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT octet_length(bytes)::bigint FROM action_host_versions WHERE sha256 = $1",
                &[&sha256],
            )
            .await
            .map_err(|e| self.fail(e))?;
        match row {
            Some(row) => Ok(row.get::<_, i64>(0).try_into().unwrap_or(0)),
            None => Err(anyhow!("the version {sha256} is not stored").into()),
        }
    }

    async fn prune_versions(&self, sha256s: Vec<String>) -> StoreResult<()> {
        let client = self.client().await?;
        // A version another replica is about to point at is protected by
        // the foreign key: the delete of it fails, and it is kept.
        client
            .execute(
                "DELETE FROM action_host_versions v WHERE v.sha256 = ANY($1) AND NOT EXISTS ( \
                     SELECT 1 FROM action_host_actions a WHERE a.serving_sha256 = v.sha256 \
                     OR a.record -> 'versions' @> jsonb_build_array( \
                         jsonb_build_object('sha256', v.sha256)))",
                &[&sha256s],
            )
            .await
            .map_err(|e| self.fail(e))?;
        // An artifact is kept only while its version is (keys start with the
        // version's SHA-256): one of a version just removed goes, and so does
        // one whose version was never stored (an upload that lost a race).
        client
            .execute(
                "DELETE FROM action_host_artifacts f WHERE NOT EXISTS ( \
                     SELECT 1 FROM action_host_versions v \
                     WHERE v.sha256 = split_part(f.engine_key, '-', 1))",
                &[],
            )
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    async fn record(&self, name: &str) -> StoreResult<Option<ActionRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT record FROM action_host_actions WHERE name = $1 AND record IS NOT NULL",
                &[&name],
            )
            .await
            .map_err(|e| self.fail(e))?;
        match row {
            Some(row) => Ok(Some(self.decode(name, row.get(0))?)),
            None => Ok(None),
        }
    }

    async fn records(&self) -> StoreResult<Vec<(String, anyhow::Result<ActionRecord>)>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT name, record FROM action_host_actions WHERE record IS NOT NULL \
                 ORDER BY name",
                &[],
            )
            .await
            .map_err(|e| self.fail(e))?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let name: String = row.get(0);
                let record = self.decode(&name, row.get(1));
                (name, record)
            })
            .collect())
    }

    async fn swap_record(
        &self,
        name: &str,
        expected: Option<u64>,
        new: Option<ActionRecord>,
    ) -> StoreResult<()> {
        let revision = |r: u64| i64::try_from(r).map_err(|_| anyhow!("revision {r} is too large"));
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.fail(e))?;
        // Writers of records take their change numbers one at a time, each
        // committing before the next draws one, so that the feed, which
        // reads the numbers past the last it saw, never passes over one
        // committed late. (A mode that conflicts with itself and with row
        // writes, not with reads.) A writer that stops mid-way (a replica
        // cut off from the database) would hold every other: PostgreSQL
        // ends its transaction after a while, and the others stop waiting
        // sooner.
        tx.batch_execute(&format!(
            "SET LOCAL lock_timeout = '{}ms'; \
             SET LOCAL idle_in_transaction_session_timeout = '{}ms'; \
             LOCK TABLE action_host_actions IN SHARE ROW EXCLUSIVE MODE",
            WRITE_LOCK_WAIT.as_millis(),
            STALLED_WRITE.as_millis()
        ))
        .await
        .map_err(|e| match e.code() {
            Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
                StoreError::Unavailable(format!(
                    "another write to the actions held them for {} s (a replica cut off \
                     mid-write is ended after {} s); retry",
                    WRITE_LOCK_WAIT.as_secs(),
                    STALLED_WRITE.as_secs()
                ))
            }
            _ => self.fail(e),
        })?;
        let changed = match (expected, &new) {
            (None, Some(record)) => {
                tx.execute(
                    "INSERT INTO action_host_actions (name, revision, serving_sha256, record) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE SET \
                         revision = EXCLUDED.revision, serving_sha256 = EXCLUDED.serving_sha256, \
                         record = EXCLUDED.record, \
                         change_seq = nextval('action_host_change_seq') \
                     WHERE action_host_actions.record IS NULL",
                    &[
                        &name,
                        &revision(record.revision)?,
                        &record.sha256,
                        &self.encode(name, record)?,
                    ],
                )
                .await
            }
            (Some(expected), Some(record)) => {
                tx.execute(
                    "UPDATE action_host_actions SET revision = $2, serving_sha256 = $3, \
                         record = $4, change_seq = nextval('action_host_change_seq') \
                     WHERE name = $1 AND revision = $5 AND record IS NOT NULL",
                    &[
                        &name,
                        &revision(record.revision)?,
                        &record.sha256,
                        &self.encode(name, record)?,
                        &revision(expected)?,
                    ],
                )
                .await
            }
            (Some(expected), None) => {
                tx.execute(
                    "UPDATE action_host_actions SET serving_sha256 = NULL, record = NULL, \
                         change_seq = nextval('action_host_change_seq') \
                     WHERE name = $1 AND revision = $2 AND record IS NOT NULL",
                    &[&name, &revision(expected)?],
                )
                .await
            }
            (None, None) => Ok(0),
        };
        let changed = match changed {
            Ok(changed) => changed,
            // The version it points at is not stored: another replica's
            // prune removed it after this one stored it. Nothing changed.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) => {
                return Err(anyhow!(
                    "the version of `{name}` was removed while it was stored; upload it again"
                )
                .into());
            }
            Err(e) => return Err(self.fail(e)),
        };
        if changed == 0 && (expected.is_some() || new.is_some()) {
            let found = tx
                .query_opt(
                    "SELECT revision FROM action_host_actions WHERE name = $1 \
                     AND record IS NOT NULL",
                    &[&name],
                )
                .await
                .map_err(|e| self.fail(e))?
                .map(|row| row.get::<_, i64>(0) as u64);
            return Err(StoreError::Conflict {
                name: name.to_owned(),
                expected,
                found,
            });
        }
        let payload = serde_json::json!({
            "name": name,
            "revision": new.as_ref().map(|r| r.revision),
        });
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[&CHANNEL, &payload.to_string()],
        )
        .await
        .map_err(|e| self.fail(e))?;
        tx.commit().await.map_err(|e| self.fail(e))?;
        Ok(())
    }

    async fn put_invocations(&self, records: Vec<InvocationRecord>) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.fail(e))?;
        for record in &records {
            let body = serde_json::to_value(record).map_err(anyhow::Error::from)?;
            tx.execute(
                "INSERT INTO action_host_invocations (id, action, at_ms, result, record) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
                &[
                    &record.id,
                    &record.action,
                    &record.at_ms,
                    &record.result,
                    &body,
                ],
            )
            .await
            .map_err(|e| self.fail(e))?;
        }
        tx.commit().await.map_err(|e| self.fail(e))
    }

    async fn invocations(
        &self,
        action: &str,
        query: &RecordQuery,
    ) -> StoreResult<Vec<InvocationRecord>> {
        let client = self.client().await?;
        // The cursor is `<at_ms>-<id>`; one that does not parse starts at the top.
        let (after_at, after_id) = query
            .after
            .as_deref()
            .and_then(|c| c.split_once('-'))
            .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id.to_owned())))
            .unwrap_or((i64::MAX, String::new()));
        let result = query.result.as_deref().unwrap_or("");
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "SELECT record FROM action_host_invocations \
                 WHERE action = $1 AND (at_ms, id) < ($2, $3) \
                   AND CASE $4 WHEN '' THEN true \
                               WHEN 'error' THEN result NOT IN ('success', 'failure') \
                               WHEN 'not-success' THEN result <> 'success' \
                               ELSE result = $4 END \
                 ORDER BY at_ms DESC, id DESC LIMIT $5",
                &[&action, &after_at, &after_id, &result, &limit],
            )
            .await
            .map_err(|e| self.fail(e))?;
        Ok(rows
            .into_iter()
            .filter_map(|row| serde_json::from_value(row.get(0)).ok())
            .collect())
    }

    async fn invocation(&self, id: &str) -> StoreResult<Option<InvocationRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT record FROM action_host_invocations WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(|e| self.fail(e))?;
        Ok(row.and_then(|row| serde_json::from_value(row.get(0)).ok()))
    }

    async fn recorded_actions(&self) -> StoreResult<Vec<String>> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT DISTINCT action FROM action_host_invocations", &[])
            .await
            .map_err(|e| self.fail(e))?;
        Ok(rows.into_iter().map(|row| row.get(0)).collect())
    }

    async fn prune_invocations(
        &self,
        action: &str,
        retention: &Retention,
        now_ms: i64,
    ) -> StoreResult<()> {
        let client = self.client().await?;
        let cutoff = retention.cutoff(now_ms);
        let keep = i64::try_from(retention.per_action).unwrap_or(i64::MAX);
        let bytes = i64::try_from(retention.bytes_per_action).unwrap_or(i64::MAX);
        // Bytes as stored (compressed when large), summed from the newest.
        client
            .execute(
                "DELETE FROM action_host_invocations WHERE action = $1 AND (at_ms < $2 OR id IN \
                 (SELECT id FROM (SELECT id, row_number() OVER newest AS place, \
                    sum(pg_column_size(record)) OVER newest AS bytes \
                  FROM action_host_invocations WHERE action = $1 \
                  WINDOW newest AS (ORDER BY at_ms DESC, id DESC)) AS kept \
                  WHERE place > $3 OR (place > 1 AND bytes > $4)))",
                &[&action, &cutoff, &keep, &bytes],
            )
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    fn artifacts(&self) -> Arc<dyn ArtifactCache> {
        Arc::new(Artifacts {
            pool: self.pool.clone(),
            runtime: self.runtime.clone(),
        })
    }

    fn changes(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    fn degraded(&self) -> Option<String> {
        self.degraded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The compiled artifacts in the database, for the host's loader.
struct Artifacts {
    pool: Pool,
    runtime: tokio::runtime::Handle,
}

impl ArtifactCache for Artifacts {
    // The host calls the cache from blocking threads (never from an async
    // worker), where waiting on the runtime is allowed.
    fn get(&self, key: &EngineKey, entry: CacheEntry) -> Option<Vec<u8>> {
        self.runtime.block_on(async {
            let client = self.pool.get().await.ok()?;
            let row = client
                .query_opt(
                    "SELECT bytes FROM action_host_artifacts WHERE engine_key = $1 AND entry = $2",
                    &[&key.to_string(), &entry.as_str()],
                )
                .await
                .ok()??;
            Some(row.get(0))
        })
    }

    fn put(&self, key: &EngineKey, entry: CacheEntry, bytes: &[u8]) {
        let stored = self.runtime.block_on(async {
            let client = self.pool.get().await?;
            client
                .execute(
                    "INSERT INTO action_host_artifacts (engine_key, entry, bytes) \
                     VALUES ($1, $2, $3) ON CONFLICT (engine_key, entry) \
                     DO UPDATE SET bytes = EXCLUDED.bytes, stored_at = now()",
                    &[&key.to_string(), &entry.as_str(), &bytes],
                )
                .await?;
            anyhow::Ok(())
        });
        if let Err(error) = stored {
            // Only a later recompilation is lost.
            tracing::warn!("cannot keep the compiled component in PostgreSQL: {error:#}");
        }
    }
}

/// Creates the schema, or brings it to this build's version, under an
/// advisory lock: replicas starting at once on an empty database take turns.
async fn migrate(client: &mut deadpool_postgres::Object) -> anyhow::Result<()> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS action_host_schema (version integer NOT NULL); \
         INSERT INTO action_host_schema (version) \
             SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM action_host_schema)",
    )
    .await?;
    let version: i32 = tx
        .query_one("SELECT version FROM action_host_schema", &[])
        .await?
        .get(0);
    let known = MIGRATIONS.len();
    let Ok(from) = usize::try_from(version) else {
        bail!("the schema version {version} is not valid");
    };
    if from > known {
        bail!(
            "the database's schema is version {version}, newer than this build knows ({known}): \
             run a newer action-host"
        );
    }
    for (step, sql) in MIGRATIONS.iter().enumerate().skip(from) {
        tx.batch_execute(sql)
            .await
            .with_context(|| format!("migration to schema version {} failed", step + 1))?;
        tracing::info!("PostgreSQL schema migrated to version {}", step + 1);
    }
    tx.execute(
        "UPDATE action_host_schema SET version = $1",
        &[&(known as i32)],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Follows the changes in the database for as long as the store lives:
/// listens on a connection of its own, and reads the changed rows on each
/// notification, on each (re)connection and every [`RESYNC_EVERY`].
async fn listen(store: std::sync::Weak<Postgres>, config: tokio_postgres::Config, mut last: i64) {
    loop {
        let connected = config.connect(NoTls).await;
        let Some(strong) = store.upgrade() else {
            return;
        };
        let (client, mut connection) = match connected {
            Ok(connected) => connected,
            Err(error) => {
                strong.set_degraded(Some(format!("cannot reach PostgreSQL: {error}")));
                drop(strong);
                tokio::time::sleep(RECONNECT_EVERY).await;
                continue;
            }
        };
        drop(strong);
        // The connection delivers notifications as it is polled; any number
        // of them wakes the reader once (a stored permit, not a queue).
        let notified = Arc::new(tokio::sync::Notify::new());
        let wake = Arc::clone(&notified);
        let mut driver = tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = futures::StreamExt::next(&mut messages).await {
                match message {
                    Ok(tokio_postgres::AsyncMessage::Notification(_)) => wake.notify_one(),
                    Ok(_) => {}
                    Err(error) => return error.to_string(),
                }
            }
            "the connection closed".to_owned()
        });
        let lost = tokio::select! {
            lost = follow(&store, &client, &notified, &mut last) => lost,
            ended = &mut driver => Some(ended.unwrap_or_else(|e| e.to_string())),
        };
        driver.abort();
        let Some(why) = lost else { return };
        let Some(strong) = store.upgrade() else {
            return;
        };
        tracing::warn!("lost the connection to PostgreSQL ({why}); reconnecting");
        strong.set_degraded(Some(format!("lost the connection to PostgreSQL: {why}")));
        drop(strong);
        tokio::time::sleep(RECONNECT_EVERY).await;
    }
}

/// Listens and reads changes on one connection until it fails (returning
/// why) or the store is dropped (`None`).
async fn follow(
    store: &std::sync::Weak<Postgres>,
    client: &tokio_postgres::Client,
    notified: &tokio::sync::Notify,
    last: &mut i64,
) -> Option<String> {
    if let Err(error) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
        return Some(error.to_string());
    }
    loop {
        let rows = client
            .query(
                "SELECT name, revision, record IS NULL, change_seq FROM action_host_actions \
                 WHERE change_seq > $1 ORDER BY change_seq",
                &[&*last],
            )
            .await;
        let store_alive = store.upgrade()?;
        match rows {
            Ok(rows) => {
                for row in rows {
                    let (name, revision, deleted, seq): (String, i64, bool, i64) =
                        (row.get(0), row.get(1), row.get(2), row.get(3));
                    *last = seq;
                    // No receiver is fine: nobody is following yet.
                    let _ = store_alive.changes.send(Change {
                        name,
                        revision: (!deleted).then_some(revision as u64),
                    });
                }
                // Reading works again: so do changes.
                if store_alive.degraded().is_some() {
                    tracing::info!("PostgreSQL is reachable again");
                    store_alive.set_degraded(None);
                }
            }
            Err(error) => return Some(error.to_string()),
        }
        drop(store_alive);
        tokio::select! {
            () = notified.notified() => {}
            () = tokio::time::sleep(RESYNC_EVERY) => {}
        }
    }
}

fn set_degraded(degraded: &Mutex<Option<String>>, why: Option<String>) {
    *degraded.lock().unwrap_or_else(|p| p.into_inner()) = why;
}

/// `url` without its password, for messages and logs.
pub(crate) fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "(an unreadable URL)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::VersionEntry;

    #[test]
    fn a_url_s_password_never_reaches_a_message() {
        assert_eq!(
            redact_url("postgres://app:hunter2@db.internal:5432/actions"),
            "postgres://app:***@db.internal:5432/actions"
        );
        assert_eq!(
            redact_url("postgres://app@db/actions"),
            "postgres://app@db/actions"
        );
        assert!(!redact_url("not a url hunter2").contains("hunter2"));
    }

    fn record(revision: u64, sha256: &str) -> ActionRecord {
        ActionRecord {
            revision,
            sha256: sha256.into(),
            version: revision,
            settings: crate::ActionDoc::default(),
            changed_at_ms: revision as i64,
            versions: vec![VersionEntry {
                version: revision,
                sha256: sha256.into(),
                uploaded_at_ms: 0,
                uploaded_by: "designer".into(),
                manifest_version: "1.0.0".into(),
                settings: crate::ActionDoc::default(),
            }],
        }
    }

    async fn next_change(feed: &mut broadcast::Receiver<Change>) -> Change {
        tokio::time::timeout(Duration::from_secs(10), feed.recv())
            .await
            .expect("a change within 10 s")
            .expect("the feed is open")
    }

    async fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // One cluster for the whole story: starting one takes seconds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_stores_on_one_database_share_records_by_compare_and_set_and_hear_of_changes() {
        let cluster = xtask::postgres::Cluster::start().unwrap();
        let url = cluster.url();
        let key = OperatorKey::generate();
        // Two stores starting at once on an empty database: one makes the
        // schema while the other waits for it.
        let (a, b) = tokio::join!(Postgres::connect(&url, &key), Postgres::connect(&url, &key));
        let (a, b) = (a.unwrap(), b.unwrap());
        let mut feed = b.changes();

        a.put_version("x", "component x".into()).await.unwrap();
        a.put_version("x", "written once".into()).await.unwrap();
        assert_eq!(b.version("x").await.unwrap(), b"component x");
        assert_eq!(b.version_len("x").await.unwrap(), 11);
        a.swap_record("greeting", None, Some(record(1, "x")))
            .await
            .unwrap();
        assert_eq!(
            next_change(&mut feed).await,
            Change {
                name: "greeting".into(),
                revision: Some(1)
            }
        );
        assert_eq!(b.record("greeting").await.unwrap(), Some(record(1, "x")));

        // The loser of a race is told what it lost to, and changes nothing.
        let lost = b.swap_record("greeting", None, Some(record(1, "x"))).await;
        assert!(
            matches!(lost, Err(StoreError::Conflict { found: Some(1), .. })),
            "{lost:?}"
        );
        let stale = b.swap_record("greeting", Some(7), None).await;
        assert!(
            matches!(stale, Err(StoreError::Conflict { found: Some(1), .. })),
            "{stale:?}"
        );
        // A record cannot point at a version that is not stored.
        let dangling = b
            .swap_record("greeting", Some(1), Some(record(2, "missing")))
            .await;
        assert!(format!("{:#}", dangling.unwrap_err()).contains("upload it again"));
        assert_eq!(a.record("greeting").await.unwrap(), Some(record(1, "x")));

        // Pruning keeps what a record keeps.
        a.put_version("y", "component y".into()).await.unwrap();
        b.swap_record("greeting", Some(1), Some(record(2, "y")))
            .await
            .unwrap();
        assert_eq!(next_change(&mut feed).await.revision, Some(2));
        let cache = a.artifacts();
        let kept = tokio::task::spawn_blocking(move || {
            let key = |sha256: &str| EngineKey::parse(&format!("{sha256}-1-built")).unwrap();
            for sha256 in ["x", "y", "xx"] {
                cache.put(&key(sha256), CacheEntry::Artifact, b"native");
            }
            (cache, key)
        });
        let (cache, key) = kept.await.unwrap();
        a.prune_versions(vec!["x".into(), "y".into()])
            .await
            .unwrap();
        assert!(a.version("y").await.is_ok(), "serving");
        assert!(a.version("x").await.is_err(), "kept by no record");
        // The artifacts of a removed version go with it, and those of a
        // version never stored; the serving version's stay.
        let left = tokio::task::spawn_blocking(move || {
            ["x", "y", "xx"].map(|sha256| cache.get(&key(sha256), CacheEntry::Artifact).is_some())
        });
        assert_eq!(left.await.unwrap(), [false, true, false]);

        // A delete is heard of too, and the name can be used again.
        a.swap_record("greeting", Some(2), None).await.unwrap();
        assert_eq!(
            next_change(&mut feed).await,
            Change {
                name: "greeting".into(),
                revision: None
            }
        );
        assert_eq!(b.record("greeting").await.unwrap(), None);
        assert!(b.records().await.unwrap().is_empty());
        b.swap_record("greeting", None, Some(record(1, "y")))
            .await
            .unwrap();
        assert_eq!(next_change(&mut feed).await.revision, Some(1));
        assert_eq!(a.records().await.unwrap().len(), 1);

        // Artifacts are shared, read from blocking threads as the host does.
        let (cache_a, cache_b) = (a.artifacts(), b.artifacts());
        let key_ = EngineKey::parse("abc-1-built").unwrap();
        let k = key_.clone();
        tokio::task::spawn_blocking(move || cache_a.put(&k, CacheEntry::Artifact, b"native"))
            .await
            .unwrap();
        let got = tokio::task::spawn_blocking(move || {
            (
                cache_b.get(&key_, CacheEntry::Artifact),
                cache_b.get(&key_, CacheEntry::SnapshotNote),
            )
        })
        .await
        .unwrap();
        assert_eq!(got, (Some(b"native".to_vec()), None));

        // The database goes away: the stores say so, and refuse; it comes
        // back: they catch up by themselves, and no change is lost.
        cluster.stop().unwrap();
        until("degraded", || {
            a.degraded().is_some() && b.degraded().is_some()
        })
        .await;
        assert!(
            a.degraded().unwrap().contains("PostgreSQL"),
            "{:?}",
            a.degraded()
        );
        let refused = a.record("greeting").await;
        assert!(
            matches!(refused, Err(StoreError::Unavailable(_))),
            "{refused:?}"
        );
        cluster.restart().unwrap();
        until("reconnected", || {
            a.degraded().is_none() && b.degraded().is_none()
        })
        .await;
        a.swap_record("greeting", Some(1), Some(record(2, "y")))
            .await
            .unwrap();
        assert_eq!(next_change(&mut feed).await.revision, Some(2));

        // A key that is not the one the records were sealed with is refused.
        let other = Postgres::connect(&url, &OperatorKey::generate())
            .await
            .unwrap();
        let mut secret = record(3, "y");
        secret.settings.secrets.push(crate::SecretDoc {
            name: "token".into(),
            value: Some("s3cr3t".into()),
            value_env: None,
            allow: vec!["https://crm.example.com".into()],
            headers: None,
        });
        a.swap_record("greeting", Some(2), Some(secret.clone()))
            .await
            .unwrap();
        assert_eq!(b.record("greeting").await.unwrap(), Some(secret));
        let why = format!("{:#}", other.record("greeting").await.unwrap_err());
        assert!(why.contains("another operator key"), "{why}");
    }
}
