//! Invocation records: what one call did (its context and input, its
//! outcome or error, its log, each outbound exchange, its time and memory),
//! kept so that a designer can read it and replay it.
//!
//! Each action's setting ([`Recording`]) picks which calls leave a record.
//! A record never holds up its call: the catalog hands it to a bounded queue
//! ([`Recorder::offer`]) that one task drains into the store, and when the
//! queue is full the record is dropped and counted, not waited for. The same
//! task enforces the retention bound (a count per action and an age). A
//! designer's try is the exception: its record is written before the answer
//! ([`Recorder::keep_now`]), since the answer links to it.

use action_host::{
    CallContext, CallOptions, CallTrace, ErrorKind, Exchange, Invocation, InvokeError, LogLine,
    Prepared, Tape,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

use crate::metrics::Ended;
use crate::store::Store;

/// Which calls of an action leave a record.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recording {
    /// Which calls: none, those that did not succeed, or all.
    #[serde(default)]
    pub mode: RecordMode,
    /// The share of those calls recorded, from 0 to 1 (default 1: every one).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "share"
    )]
    pub sample: Option<f64>,
}

/// Which calls an action records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordMode {
    /// None.
    Off,
    /// Those whose outcome is a failure or that ended in an error.
    #[default]
    Failures,
    /// Every call.
    All,
}

/// Reads a share from 0 to 1, refusing any other number.
fn share<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<f64>, D::Error> {
    let share = f64::deserialize(deserializer)?;
    if (0.0..=1.0).contains(&share) {
        Ok(Some(share))
    } else {
        Err(serde::de::Error::custom(format!(
            "`sample` must be between 0 and 1, got {share}"
        )))
    }
}

impl Recording {
    /// Whether a call may be recorded at all, decided before it runs (the
    /// sample is drawn here), so that a call never recorded keeps no tape.
    pub fn may_record(&self) -> bool {
        self.mode != RecordMode::Off
            && self
                .sample
                .is_none_or(|share| share >= 1.0 || fastrand::f64() < share)
    }

    /// Whether a call that may be recorded and ended with `result` is.
    pub fn keeps(&self, result: &Result<Invocation, InvokeError>) -> bool {
        match self.mode {
            RecordMode::Off => false,
            RecordMode::All => true,
            RecordMode::Failures => !matches!(result, Ok(done) if done.success),
        }
    }
}

/// One call as a record keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvocationRecord {
    /// The invocation id (the action saw it in its context).
    pub id: String,
    /// The action.
    pub action: String,
    /// The number of the version that ran.
    pub version: u64,
    /// The SHA-256 of the version that ran.
    pub sha256: String,
    /// Where the call came from: `api`, a webhook (`rasa`, `dialogflow-cx`,
    /// `opendialog`), or `replay`.
    pub source: String,
    /// When it started, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// The clock the action read (`now-ms`); a replay reads the same.
    pub now_ms: i64,
    /// The context it was given.
    pub context: CallContext,
    /// The input it was given.
    pub input: Map<String, Json>,
    /// `success`, `failure`, or the error's kind.
    pub result: String,
    /// The outcome, when it ran to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<RecordedOutcome>,
    /// The error, when it ended in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RecordedError>,
    /// Its log.
    pub logs: Vec<LogLine>,
    /// Each outbound request, in order.
    pub exchanges: Vec<Exchange>,
    /// Wall-clock time of the call, in milliseconds.
    pub duration_ms: f64,
    /// The most bytes its memories held.
    pub memory_peak_bytes: u64,
}

/// An outcome as a record keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedOutcome {
    /// What the conversation branches on.
    pub success: bool,
    /// Attributes set (a null unsets).
    pub attributes: Map<String, Json>,
    /// Messages.
    pub messages: Vec<String>,
}

/// An error as a record keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedError {
    /// Its kind.
    pub kind: ErrorKind,
    /// What went wrong.
    pub message: String,
}

/// Which call ran, as the catalog knows it, for its record.
pub(crate) struct Ran<'a> {
    pub(crate) id: String,
    pub(crate) action: &'a str,
    /// The version's number and SHA-256.
    pub(crate) version: (u64, &'a str),
    pub(crate) source: &'static str,
    pub(crate) at_ms: i64,
    pub(crate) took: Duration,
}

/// What a record keeps of a call's result: its label, outcome or error, log.
type ResultFields = (
    String,
    Option<RecordedOutcome>,
    Option<RecordedError>,
    Vec<LogLine>,
);

impl InvocationRecord {
    /// The record of a call that ran.
    pub(crate) fn of_call(
        ran: Ran<'_>,
        context: CallContext,
        input: &Map<String, Json>,
        result: &Result<Invocation, InvokeError>,
        trace: CallTrace,
    ) -> InvocationRecord {
        let (result, outcome, error, logs) = InvocationRecord::result_fields(result);
        InvocationRecord {
            id: ran.id,
            action: ran.action.to_owned(),
            version: ran.version.0,
            sha256: ran.version.1.to_owned(),
            source: ran.source.to_owned(),
            at_ms: ran.at_ms,
            now_ms: trace.now_ms,
            context,
            input: input.clone(),
            result,
            outcome,
            error,
            logs,
            exchanges: trace.exchanges,
            duration_ms: ran.took.as_nanos() as f64 / 1e6,
            memory_peak_bytes: trace.memory_peak_bytes,
        }
    }

    /// The outcome and error fields for `result`.
    fn result_fields(result: &Result<Invocation, InvokeError>) -> ResultFields {
        let ended = Ended::of(result).name().to_owned();
        match result {
            Ok(done) => (
                ended,
                Some(RecordedOutcome {
                    success: done.success,
                    attributes: done.attributes.clone(),
                    messages: done.messages.clone(),
                }),
                None,
                done.logs.clone(),
            ),
            Err(error) => (
                ended,
                None,
                Some(RecordedError {
                    kind: error.kind,
                    message: error.message.clone(),
                }),
                error.logs.clone(),
            ),
        }
    }

    /// About the bytes this record holds in memory: what the action and its
    /// upstreams could make large (bodies, log, attributes), and a little
    /// for the rest.
    pub fn weight(&self) -> u64 {
        let body = |b: &action_host::RecordedBody| {
            b.text.as_ref().map_or(0, String::len) + b.base64.as_ref().map_or(0, String::len)
        };
        // A header, like a log line, costs its place besides its text.
        let headers = |headers: &[(String, String)]| -> usize {
            headers.iter().map(|(n, v)| n.len() + v.len() + 32).sum()
        };
        let exchanges: usize = self
            .exchanges
            .iter()
            .map(|e| {
                let answer = match &e.outcome {
                    action_host::ExchangeOutcome::Response {
                        body: b,
                        headers: sent_back,
                        ..
                    } => body(b) + headers(sent_back),
                    action_host::ExchangeOutcome::Error { message, .. } => {
                        message.as_ref().map_or(0, String::len)
                    }
                };
                e.url.len() + headers(&e.request_headers) + body(&e.request_body) + answer
            })
            .sum();
        // A line of the log or an exchange costs its place besides its text:
        // an action can make many empty ones.
        let logs: usize = self.logs.iter().map(|l| l.message.len() + 32).sum();
        let outcome = self.outcome.as_ref().map_or(0, |o| {
            o.messages.iter().map(String::len).sum::<usize>() + map_weight(&o.attributes)
        });
        let error = self.error.as_ref().map_or(0, |e| e.message.len());
        let CallContext {
            conversation_id,
            user_id,
            scenario,
            intent,
            locale,
            timezone,
        } = &self.context;
        let context: usize = [conversation_id, user_id, scenario, intent, locale, timezone]
            .into_iter()
            .map(|field| field.as_ref().map_or(0, String::len))
            .sum();
        let each = 64 * self.exchanges.len();
        (exchanges + each + logs + outcome + error + context + map_weight(&self.input) + 1024)
            as u64
    }

    /// What a list of records shows of this one.
    pub fn summary(&self) -> RecordSummary {
        RecordSummary {
            id: self.id.clone(),
            action: self.action.clone(),
            version: self.version,
            source: self.source.clone(),
            at_ms: self.at_ms,
            result: self.result.clone(),
            error: self.error.as_ref().map(|e| e.message.clone()),
            duration_ms: self.duration_ms,
            exchanges: self.exchanges.len(),
        }
    }

    /// Whether `result` (`success`, `failure`, `error`, `not-success`, or an
    /// error kind) selects this record.
    pub fn matches(&self, result: &str) -> bool {
        match result {
            "error" => self.result != "success" && self.result != "failure",
            "not-success" => self.result != "success",
            other => self.result == other,
        }
    }

    /// Where a page of records that ends at this one resumes: its place in
    /// the order (newest first).
    pub fn cursor(&self) -> String {
        format!("{}-{}", self.at_ms, self.id)
    }
}

/// A rerun of a recorded call beside the record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Replay {
    /// The call as it was recorded.
    pub recorded: InvocationRecord,
    /// The same call run again: same context, input and clock, its outbound
    /// requests answered from the record.
    pub replayed: InvocationRecord,
    /// Where the two differ; empty when the rerun did what the record did.
    pub differences: Vec<Difference>,
}

/// One place where a replay differs from its record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Difference {
    /// What differs: `result`, `outcome.success`, `outcome.attributes.NAME`,
    /// `outcome.messages`, `error`, or `exchanges[i]`.
    pub field: String,
    /// Its value in the record (null when absent).
    pub recorded: Json,
    /// Its value in the replay (null when absent).
    pub replayed: Json,
}

/// Reruns `recorded` on `action` (version `version`, SHA-256 `sha256`;
/// number 0 for a component not deployed) with the record's context, input,
/// clock and invocation id, its outbound requests answered from the record.
pub async fn replay(
    action: &Prepared,
    recorded: InvocationRecord,
    version: u64,
    sha256: &str,
) -> Replay {
    let options = CallOptions {
        deadline_cap: None,
        now_ms: Some(recorded.now_ms),
        tape: Tape::Replay(recorded.exchanges.clone()),
    };
    let started = Instant::now();
    let at_ms = crate::catalog::now_ms();
    // The action sees what it saw then, its invocation id included.
    let (result, trace) = action
        .call(
            recorded.id.clone(),
            recorded.context.clone(),
            &recorded.input,
            options,
        )
        .await;
    let replayed = InvocationRecord::of_call(
        Ran {
            id: recorded.id.clone(),
            action: &recorded.action,
            version: (version, sha256),
            source: "replay",
            at_ms,
            took: started.elapsed(),
        },
        recorded.context.clone(),
        &recorded.input,
        &result,
        trace,
    );
    let differences = differences(&recorded, &replayed);
    Replay {
        recorded,
        replayed,
        differences,
    }
}

/// Where `replayed` differs from `recorded`: the result, the outcome field by
/// field, the error, and each outbound request (method, URL and what came
/// of it). Durations, ids and logs are left out: they differ on every run.
pub fn differences(recorded: &InvocationRecord, replayed: &InvocationRecord) -> Vec<Difference> {
    let mut found = Vec::new();
    let mut compare = |field: String, a: Json, b: Json| {
        if a != b {
            found.push(Difference {
                field,
                recorded: a,
                replayed: b,
            });
        }
    };
    compare(
        "result".into(),
        json_of(&recorded.result),
        json_of(&replayed.result),
    );
    let outcome = |r: &InvocationRecord| r.outcome.clone();
    match (outcome(recorded), outcome(replayed)) {
        (Some(a), Some(b)) => {
            compare(
                "outcome.success".into(),
                Json::Bool(a.success),
                Json::Bool(b.success),
            );
            let names: std::collections::BTreeSet<&String> =
                a.attributes.keys().chain(b.attributes.keys()).collect();
            for name in names {
                compare(
                    format!("outcome.attributes.{name}"),
                    a.attributes.get(name).cloned().unwrap_or(Json::Null),
                    b.attributes.get(name).cloned().unwrap_or(Json::Null),
                );
            }
            compare(
                "outcome.messages".into(),
                json_of(&a.messages),
                json_of(&b.messages),
            );
        }
        (a, b) => compare("outcome".into(), json_of(&a), json_of(&b)),
    }
    compare(
        "error".into(),
        json_of(&recorded.error),
        json_of(&replayed.error),
    );
    let requests = recorded.exchanges.len().max(replayed.exchanges.len());
    for i in 0..requests {
        let brief = |e: Option<&Exchange>| e.map_or(Json::Null, brief_exchange);
        compare(
            format!("exchanges[{i}]"),
            brief(recorded.exchanges.get(i)),
            brief(replayed.exchanges.get(i)),
        );
    }
    found
}

fn json_of<T: Serialize>(value: &T) -> Json {
    serde_json::to_value(value).unwrap_or(Json::Null)
}

/// What a comparison looks at in an exchange.
fn brief_exchange(exchange: &Exchange) -> Json {
    use action_host::ExchangeOutcome;
    let outcome = match &exchange.outcome {
        ExchangeOutcome::Response { status, .. } => serde_json::json!({"status": status}),
        ExchangeOutcome::Error { kind, message } => {
            serde_json::json!({"error": kind, "message": message})
        }
    };
    serde_json::json!({
        "method": exchange.method,
        "url": exchange.url,
        "request_body": exchange.request_body,
        "outcome": outcome,
    })
}

/// About the bytes a JSON object holds.
fn map_weight(map: &Map<String, Json>) -> usize {
    map.iter().map(|(k, v)| k.len() + json_weight(v)).sum()
}

/// A JSON value's weight: its text, and 32 bytes for its place (the size of
/// a `serde_json::Value`), so that a wide array of empty values weighs what
/// it holds in memory.
fn json_weight(value: &Json) -> usize {
    const PLACE: usize = 32;
    match value {
        Json::String(text) => text.len() + PLACE,
        Json::Array(items) => items.iter().map(json_weight).sum::<usize>() + PLACE,
        Json::Object(map) => map_weight(map) + PLACE,
        _ => PLACE,
    }
}

/// One line of a list of records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordSummary {
    /// The invocation id.
    pub id: String,
    /// The action.
    pub action: String,
    /// The version that ran.
    pub version: u64,
    /// Where the call came from.
    pub source: String,
    /// When it started, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// `success`, `failure`, or the error's kind.
    pub result: String,
    /// The error's message, when it ended in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Wall-clock time of the call, in milliseconds.
    pub duration_ms: f64,
    /// How many outbound requests it made.
    pub exchanges: usize,
}

/// Which records a list asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordQuery {
    /// Only those with this result (see [`InvocationRecord::matches`]).
    pub result: Option<String>,
    /// Only those after this cursor in the order, newest first.
    pub after: Option<String>,
    /// At most this many.
    pub limit: usize,
}

/// How long records are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// At most this many records per action, the newest.
    pub per_action: usize,
    /// None older than this.
    pub max_age: Duration,
    /// At most this many bytes of records per action as the store keeps
    /// them, the newest; the newest record is kept whatever its size. A
    /// record may hold a megabyte of input and as much of context, so the
    /// count alone would let one action's records take gigabytes.
    pub bytes_per_action: u64,
}

impl Retention {
    /// The start time before which a record is too old at `now_ms`.
    pub fn cutoff(&self, now_ms: i64) -> i64 {
        now_ms.saturating_sub(i64::try_from(self.max_age.as_millis()).unwrap_or(i64::MAX))
    }
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            per_action: 1000,
            max_age: Duration::from_secs(7 * 24 * 3600),
            bytes_per_action: 64 << 20,
        }
    }
}

/// The records waiting to be written: at most this many; more are dropped.
pub const QUEUE: usize = 1024;

/// The bytes of records waiting to be written, at most: a record may hold a
/// megabyte of bodies (64 KiB each way for each of its requests), so the
/// count alone would let a queue of them hold a gigabyte.
pub const QUEUE_BYTES: usize = 64 << 20;

/// The most records written to the store in one batch.
const BATCH: usize = 64;

/// How often an action's records are checked against the retention bound.
const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// How often every action with records is checked against the bound, those
/// no longer written included (one that stopped recording, or was deleted):
/// their records still age out. The first sweep comes at start.
const SWEEP_EVERY: Duration = Duration::from_secs(600);

/// Takes records from calls and writes them to the store off their path.
pub struct Recorder {
    queue: mpsc::Sender<InvocationRecord>,
    counts: Arc<RecordCounts>,
    store: Arc<dyn Store>,
    retention: Retention,
}

/// What became of the records offered.
#[derive(Debug, Default)]
pub struct RecordCounts {
    /// The bytes of the records in the queue now (see [`QUEUE_BYTES`]).
    pub queued_bytes: AtomicU64,
    /// Written to the store.
    pub written: AtomicU64,
    /// Dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Lost because the store refused the write.
    pub failed: AtomicU64,
}

impl Recorder {
    /// A recorder writing to `store`, keeping what `retention` allows; its
    /// task runs on the current runtime until the recorder is dropped.
    pub fn start(store: Arc<dyn Store>, retention: Retention) -> Recorder {
        let (queue, waiting) = mpsc::channel::<InvocationRecord>(QUEUE);
        let counts = Arc::new(RecordCounts::default());
        let written = Arc::clone(&counts);
        let (writer_store, writer_retention) = (Arc::clone(&store), retention);
        let writer = std::thread::Builder::new()
            .name("action-host-records".into())
            .spawn(move || {
                // Writing records (serializing, the file system or the
                // database) must not take CPU from calls: this thread and
                // the threads it starts run only when a core is otherwise
                // idle. Under load the queue then fills and records are
                // dropped, not calls slowed.
                lower_priority();
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match runtime {
                    Ok(runtime) => {
                        runtime.block_on(write(writer_store, writer_retention, waiting, written))
                    }
                    Err(error) => tracing::warn!("cannot start the record writer: {error}"),
                }
            });
        if let Err(error) = writer {
            tracing::warn!("cannot start the record writer: {error}");
        }
        Recorder {
            queue,
            counts,
            store,
            retention,
        }
    }

    /// Queues `record` for the store, or drops and counts it when the queue
    /// is full: a call never waits for its record.
    pub fn offer(&self, record: InvocationRecord) {
        let bytes = record.weight();
        let queued = self.counts.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        if queued + bytes > QUEUE_BYTES as u64 || self.queue.try_send(record).is_err() {
            self.counts.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Writes `record` to the store now, on the caller's path, and keeps its
    /// action within the retention bound; whether the store took it. For a
    /// designer's try, whose answer links to the record: the writer runs
    /// only on idle CPU, so a queued record may not be readable for a while
    /// on a busy host, and a try is not a hot path.
    pub async fn keep_now(&self, record: InvocationRecord) -> bool {
        let action = record.action.clone();
        if let Err(error) = self.store.put_invocations(vec![record]).await {
            tracing::warn!(action = %action, "cannot keep an invocation record: {error}");
            self.counts.failed.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.counts.written.fetch_add(1, Ordering::Relaxed);
        prune(&*self.store, &self.retention, &action).await;
        true
    }

    /// What became of the records so far.
    pub fn counts(&self) -> &RecordCounts {
        &self.counts
    }
}

/// Writes what comes through `waiting` to `store` in batches, and keeps each
/// action within `retention`.
async fn write(
    store: Arc<dyn Store>,
    retention: Retention,
    mut waiting: mpsc::Receiver<InvocationRecord>,
    counts: Arc<RecordCounts>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut pruning = Pruning::default();
    loop {
        // Idle for a while: bring the actions written since their last
        // pruning within the bound, so that a burst does not stay over it.
        let received =
            match tokio::time::timeout(PRUNE_EVERY, waiting.recv_many(&mut batch, BATCH)).await {
                Ok(received) => received,
                Err(_idle) => {
                    pruning.all(&*store, &retention).await;
                    pruning.sweep(&*store, &retention).await;
                    continue;
                }
            };
        if received == 0 {
            return;
        }
        let n = batch.len() as u64;
        let bytes: u64 = batch.iter().map(InvocationRecord::weight).sum();
        counts.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
        for record in &batch {
            pruning.written(&record.action);
        }
        match store.put_invocations(std::mem::take(&mut batch)).await {
            Ok(()) => counts.written.fetch_add(n, Ordering::Relaxed),
            Err(error) => {
                tracing::warn!("cannot keep {n} invocation record(s): {error}");
                counts.failed.fetch_add(n, Ordering::Relaxed)
            }
        };
        pruning.due(&*store, &retention).await;
        pruning.sweep(&*store, &retention).await;
    }
}

/// Which actions to prune when. Pruning lists an action's records: at most
/// once a second per action while records stream in, not once per batch, so
/// that the writer does not spend its time listing; the bound is therefore
/// kept to within a second's records, and met once the stream pauses.
#[derive(Default)]
struct Pruning {
    /// Each action written since its last pruning, with when that was.
    waiting: std::collections::HashMap<String, Option<Instant>>,
    /// When each action was last pruned.
    last: std::collections::HashMap<String, Instant>,
    /// When every action was last pruned.
    swept: Option<Instant>,
}

impl Pruning {
    fn written(&mut self, action: &str) {
        if !self.waiting.contains_key(action) {
            let last = self.last.get(action).copied();
            self.waiting.insert(action.to_owned(), last);
        }
    }

    /// Prunes the actions written since and not pruned for a second.
    async fn due(&mut self, store: &dyn Store, retention: &Retention) {
        let due: Vec<String> = self
            .waiting
            .iter()
            .filter(|(_, last)| last.is_none_or(|at| at.elapsed() >= PRUNE_EVERY))
            .map(|(action, _)| action.clone())
            .collect();
        for action in due {
            self.prune(store, retention, action).await;
        }
    }

    /// Prunes every action written since its last pruning.
    async fn all(&mut self, store: &dyn Store, retention: &Retention) {
        let waiting: Vec<String> = self.waiting.keys().cloned().collect();
        for action in waiting {
            self.prune(store, retention, action).await;
        }
    }

    /// Prunes every action the store has records of, once per
    /// [`SWEEP_EVERY`].
    async fn sweep(&mut self, store: &dyn Store, retention: &Retention) {
        if self.swept.is_some_and(|at| at.elapsed() < SWEEP_EVERY) {
            return;
        }
        self.swept = Some(Instant::now());
        match store.recorded_actions().await {
            Ok(actions) => {
                for action in actions {
                    self.prune(store, retention, action).await;
                }
            }
            Err(error) => tracing::warn!("cannot list the actions with records: {error}"),
        }
    }

    async fn prune(&mut self, store: &dyn Store, retention: &Retention, action: String) {
        prune(store, retention, &action).await;
        self.waiting.remove(&action);
        self.last.insert(action, Instant::now());
    }
}

/// Removes the records of `action` that `retention` no longer keeps; a
/// failure is logged, and the next pruning tries again.
async fn prune(store: &dyn Store, retention: &Retention, action: &str) {
    let now = crate::catalog::now_ms();
    if let Err(error) = store.prune_invocations(action, retention, now).await {
        tracing::warn!(action = %action, "cannot remove old invocation records: {error}");
    }
}

/// Puts the calling thread in the idle scheduling class (threads it starts
/// inherit it); where that is refused, at the lowest nice level.
fn lower_priority() {
    // SAFETY: plain system calls on the calling thread, with a parameter
    // struct that lives across the call.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
            libc::setpriority(libc::PRIO_PROCESS, 0, 19);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_outside_zero_to_one_is_refused() {
        let bad = serde_json::from_str::<Recording>(r#"{"mode": "all", "sample": 1.5}"#);
        assert!(bad.unwrap_err().to_string().contains("between 0 and 1"));
        let good: Recording = serde_json::from_str(r#"{"mode": "all", "sample": 0.25}"#).unwrap();
        assert_eq!(good.sample, Some(0.25));
        let default: Recording = serde_json::from_str("{}").unwrap();
        assert_eq!(default.mode, RecordMode::Failures);
    }

    #[test]
    fn the_mode_and_sample_pick_the_calls() {
        let off = Recording {
            mode: RecordMode::Off,
            sample: None,
        };
        assert!(!off.may_record());
        let none = Recording {
            mode: RecordMode::All,
            sample: Some(0.0),
        };
        assert!((0..1000).all(|_| !none.may_record()));
        let half = Recording {
            mode: RecordMode::All,
            sample: Some(0.5),
        };
        let taken = (0..10_000).filter(|_| half.may_record()).count();
        assert!((4_000..6_000).contains(&taken), "{taken}");
        assert!(Recording::default().may_record());
    }
}
