//! Invocation records: what one call did (its context and input, its
//! outcome or error, its log, each outbound exchange, its time and memory),
//! kept so that a designer can read it and replay it.
//!
//! Each action's setting ([`Recording`]) picks which calls leave a record.
//! A record never holds up its call: the catalog hands it to a bounded queue
//! ([`Recorder::offer`]) that one task drains into the store, and when the
//! queue is full the record is dropped and counted, not waited for. The same
//! task enforces the retention bound (a count per action and an age).

use action_host::{CallContext, ErrorKind, Exchange, Invocation, InvokeError, LogLine};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

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

impl InvocationRecord {
    /// The outcome and error fields for `result`.
    pub fn result_fields(
        result: &Result<Invocation, InvokeError>,
    ) -> (
        String,
        Option<RecordedOutcome>,
        Option<RecordedError>,
        Vec<LogLine>,
    ) {
        match result {
            Ok(done) => (
                if done.success { "success" } else { "failure" }.to_owned(),
                Some(RecordedOutcome {
                    success: done.success,
                    attributes: done.attributes.clone(),
                    messages: done.messages.clone(),
                }),
                None,
                done.logs.clone(),
            ),
            Err(error) => (
                error.kind.as_str().to_owned(),
                None,
                Some(RecordedError {
                    kind: error.kind,
                    message: error.message.clone(),
                }),
                error.logs.clone(),
            ),
        }
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
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            per_action: 1000,
            max_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// The records waiting to be written: at most this many; more are dropped.
pub const QUEUE: usize = 1024;

/// The most records written to the store in one batch.
const BATCH: usize = 64;

/// Takes records from calls and writes them to the store off their path.
pub struct Recorder {
    queue: mpsc::Sender<InvocationRecord>,
    counts: Arc<RecordCounts>,
}

/// What became of the records offered.
#[derive(Debug, Default)]
pub struct RecordCounts {
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
        let (queue, mut waiting) = mpsc::channel::<InvocationRecord>(QUEUE);
        let counts = Arc::new(RecordCounts::default());
        let written = Arc::clone(&counts);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while waiting.recv_many(&mut batch, BATCH).await > 0 {
                let n = batch.len() as u64;
                let actions: Vec<String> = {
                    let mut names: Vec<String> = batch.iter().map(|r| r.action.clone()).collect();
                    names.sort();
                    names.dedup();
                    names
                };
                match store.put_invocations(std::mem::take(&mut batch)).await {
                    Ok(()) => {
                        written.written.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(error) => {
                        written.failed.fetch_add(n, Ordering::Relaxed);
                        tracing::warn!("cannot keep {n} invocation record(s): {error}");
                    }
                }
                let now = crate::catalog::now_ms();
                for action in actions {
                    if let Err(error) = store.prune_invocations(&action, &retention, now).await {
                        tracing::warn!(action = %action, "cannot remove old invocation records: {error}");
                    }
                }
            }
        });
        Recorder { queue, counts }
    }

    /// Queues `record` for the store, or drops and counts it when the queue
    /// is full: a call never waits for its record.
    pub fn offer(&self, record: InvocationRecord) {
        if self.queue.try_send(record).is_err() {
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// What became of the records so far.
    pub fn counts(&self) -> &RecordCounts {
        &self.counts
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
