//! One invocation: input checked against the manifest, a fresh `Store` and
//! instance, the deadline, memory and log limits, and the result mapped back.

use serde::{Serialize, Serializer};
use serde_json::{Map, Value as Json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::bindings::types::{ActionError, Attribute, Context, Outcome};
use crate::context::{self, CallContext, HostFacts};
use crate::error::{ErrorKind, InvokeError};
use crate::fault;
use crate::log::{Level, LogLine, LogSink};
use crate::plugin::Plugin;
use crate::sandbox;
use crate::settings::Limits;
use crate::tape::{Deck, Exchange, Tape};
use crate::value;

/// The result of an invocation that ran to an outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Invocation {
    /// The id the action saw in its context.
    pub invocation_id: String,
    /// What the conversation branches on.
    pub success: bool,
    /// Attributes to set, by name; a null value unsets.
    pub attributes: Map<String, Json>,
    /// Messages for the user or designer.
    pub messages: Vec<String>,
    /// The invocation's log.
    pub logs: Vec<LogLine>,
    /// Wall-clock time of the whole invocation, written as `duration_ms`.
    #[serde(rename = "duration_ms", serialize_with = "milliseconds")]
    pub duration: Duration,
}

fn milliseconds<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    // Whole nanoseconds over 1e6, so the figure prints without binary noise.
    serializer.serialize_f64(duration.as_nanos() as f64 / 1e6)
}

type RunParams<'a> = (&'a Context, &'a [Attribute]);
type RunResults = (Result<Outcome, ActionError>,);

/// The most an outcome may carry: the bytes of its attribute names and
/// values and its messages, each item counting [`ITEM_OVERHEAD`] more.
pub(crate) const OUTCOME_CAP: usize = 4 << 20;

/// What each attribute or message counts against [`OUTCOME_CAP`] besides its
/// text, so that a million empty messages are not free.
const ITEM_OVERHEAD: usize = 16;

/// What each value in a `json` attribute's text counts against
/// [`OUTCOME_CAP`] besides its text: its place in the host once parsed (a
/// `serde_json::Value` is 32 bytes), so that `[[],[],...]`, three bytes a
/// value, does not parse into many times the cap.
const JSON_VALUE_OVERHEAD: usize = 32;

/// The most bytes of an `action-error`'s message the host keeps.
const ERROR_MESSAGE_CAP: usize = 4 << 10;

/// How to run one call, besides its context and input.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// The deadline at most this: for a caller that waits less than the
    /// action's own deadline (a platform's webhook timeout).
    pub deadline_cap: Option<Duration>,
    /// The clock the action reads in its context (`now-ms`) instead of the
    /// host's: a replay's, to rerun a call as it was.
    pub now_ms: Option<i64>,
    /// What the call keeps of its outbound requests, or answers them from.
    pub tape: Tape,
}

/// What a call did besides its result, for a record of it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallTrace {
    /// The clock the action read in its context, in milliseconds since the
    /// Unix epoch.
    pub now_ms: i64,
    /// Its outbound requests in order, when the call kept them
    /// ([`Tape::Record`] or [`Tape::Replay`]).
    pub exchanges: Vec<Exchange>,
    /// The most bytes its memories held.
    pub memory_peak_bytes: u64,
}

/// Runs `plugin` once.
pub(crate) async fn run(
    plugin: &Plugin,
    invocation_id: String,
    call: CallContext,
    input: &Map<String, Json>,
    options: CallOptions,
) -> (Result<Invocation, InvokeError>, CallTrace) {
    let now_ms = options.now_ms.unwrap_or_else(now_ms);
    let mut trace = CallTrace {
        now_ms,
        ..CallTrace::default()
    };
    let result = run_traced(plugin, invocation_id, call, input, options, &mut trace).await;
    (result, trace)
}

async fn run_traced(
    plugin: &Plugin,
    invocation_id: String,
    call: CallContext,
    input: &Map<String, Json>,
    options: CallOptions,
    trace: &mut CallTrace,
) -> Result<Invocation, InvokeError> {
    let started = Instant::now();
    // Checked before anything is instantiated: a bad call costs no instance.
    let attributes = value::input_attributes(&plugin.manifest, input)
        .map_err(|message| InvokeError::new(ErrorKind::InvalidInput, message))?;

    let limits = &Limits {
        deadline: options.deadline_cap.map_or(plugin.limits.deadline, |cap| {
            cap.min(plugin.limits.deadline)
                .max(Duration::from_millis(1))
        }),
        ..plugin.limits
    };
    let log = LogSink::new(limits.log_bytes);
    let keep = plugin.outbound.max_requests() as usize + 1;
    let deck = Arc::new(Deck::new(options.tape, keep));
    let (ctx, unknown_zone) = context::build(
        call,
        HostFacts {
            invocation_id: invocation_id.clone(),
            action: &plugin.name,
            now_ms: trace.now_ms,
            deadline_ms: u32::try_from(limits.deadline.as_millis()).unwrap_or(u32::MAX),
        },
    );
    if let Some(zone) = unknown_zone {
        log.note(
            Level::Warn,
            format!(
                "unknown time zone `{}`; the local hour is in UTC",
                crate::log::clip(&zone)
            ),
        );
    }

    let mut store = sandbox::new_store(
        plugin.pre.engine(),
        limits,
        Arc::clone(&plugin.config),
        Arc::clone(&plugin.outbound),
        log.clone(),
        Arc::clone(&deck),
    );
    // WASI's wall clock agrees with the context's `now-ms`, so that a replay
    // (which keeps the recorded `now-ms`) reads the recorded time there too.
    store.data_mut().start_clock_at(trace.now_ms);
    // The epoch callback stops guest code at the deadline; this timeout also
    // stops a call that is waiting in a host import.
    let ran = tokio::time::timeout(limits.deadline, async {
        // The contract's types were checked once at load (PluginPre::new), so
        // only `run` is looked up here, by its index.
        let instance = plugin
            .pre
            .instance_pre()
            .instantiate_async(&mut store)
            .await?;
        let run = instance.get_typed_func::<RunParams<'_>, RunResults>(&mut store, &plugin.run)?;
        let (result,) = run.call_async(&mut store, (&ctx, &attributes)).await?;
        wasmtime::Result::Ok(result)
    })
    .await;

    let result = match ran {
        Err(_elapsed) => Err(sandbox::timeout(limits)),
        Ok(Err(trap)) => Err(sandbox::trap_error(
            &store,
            trap,
            Vec::new(),
            limits,
            "outcome",
        )),
        Ok(Ok(Err(action_error))) => Err(from_action_error(action_error)),
        Ok(Ok(Ok(outcome))) if outcome_size(&outcome) > OUTCOME_CAP => Err(outcome_too_large()),
        Ok(Ok(Ok(outcome))) => value::output_object(outcome.attributes)
            .map(|attributes| (outcome.success, attributes, outcome.messages))
            .map_err(|why| {
                InvokeError::new(
                    ErrorKind::Internal,
                    format!("the action returned an invalid output: {why}"),
                )
            }),
    };
    trace.memory_peak_bytes = store.data().memory.peak() as u64;
    drop(store);
    trace.exchanges = deck.take();
    let dropped = deck.dropped();
    if dropped > 0 {
        log.closing_note(
            Level::Warn,
            format!(
                "the record keeps the first {keep} outbound requests (the budget and the first \
                 refusal past it); {dropped} more were made"
            ),
        );
    }
    let logs = log.finish();
    match result {
        Ok((success, attributes, messages)) => Ok(Invocation {
            invocation_id,
            success,
            attributes,
            messages,
            logs,
            duration: started.elapsed(),
        }),
        Err(mut error) => {
            if error.kind == ErrorKind::Internal
                && let Some(cause) = fault::cause(&logs)
            {
                error.message = format!("{} ({cause})", error.message);
            }
            error.logs = logs;
            Err(error)
        }
    }
}

/// The bytes an outcome counts against [`OUTCOME_CAP`].
fn outcome_size(outcome: &Outcome) -> usize {
    use crate::bindings::types::Value;
    let attributes = outcome.attributes.iter().map(|attribute| {
        let value = match &attribute.value {
            Value::Text(text) => text.len(),
            Value::Json(text) => text.len() + crate::value::json_values(text) * JSON_VALUE_OVERHEAD,
            _ => 8,
        };
        attribute.name.len() + value + ITEM_OVERHEAD
    });
    let messages = outcome.messages.iter().map(|m| m.len() + ITEM_OVERHEAD);
    attributes.chain(messages).sum()
}

pub(crate) fn outcome_too_large() -> InvokeError {
    InvokeError::new(
        ErrorKind::Internal,
        format!(
            "the action's outcome is over the host's cap of {} MiB (its attributes and \
             messages, each counting {ITEM_OVERHEAD} bytes besides its text, and each value \
             in a json attribute {JSON_VALUE_OVERHEAD})",
            OUTCOME_CAP >> 20
        ),
    )
}

fn from_action_error(error: ActionError) -> InvokeError {
    let (kind, why) = match error {
        ActionError::InvalidInput(why) => (ErrorKind::InvalidInput, why),
        ActionError::Upstream(why) => (ErrorKind::Upstream, why),
        ActionError::Denied(why) => (ErrorKind::Denied, why),
        ActionError::Timeout => (ErrorKind::Timeout, "the action reported a timeout".into()),
        ActionError::Internal(why) => (ErrorKind::Internal, why),
    };
    let why = match crate::log::clip_at(&why, ERROR_MESSAGE_CAP) {
        std::borrow::Cow::Borrowed(_) => why,
        std::borrow::Cow::Owned(clipped) => clipped,
    };
    InvokeError::new(kind, why)
}

fn now_ms() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

/// A new invocation id: a version 7 UUID, which starts with the time and
/// sorts after every id this process made before it. Records list calls
/// newest first by start, then id, so two calls in the same millisecond keep
/// the order they ran in.
///
/// The time and a sequence number within its millisecond come from one
/// atomic counter, the rest is random: every call makes an id, and the uuid
/// crate's own ordered ids take a lock that all threads share.
pub fn new_invocation_id() -> String {
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    String::from(
        ordered_uuid(&LAST_ID, now_ms())
            .hyphenated()
            .encode_lower(&mut text),
    )
}

/// The last id's millisecond and sequence number, `ms << SEQUENCE_BITS | n`.
static LAST_ID: AtomicU64 = AtomicU64::new(0);

/// Ids one millisecond numbers: more in one millisecond borrow the next one,
/// so ids stay in order and unique, a little ahead of the clock.
const SEQUENCE_BITS: u32 = 16;

/// A version 7 UUID at `now_ms`, after every one made before it with `last`:
/// 48 bits of milliseconds, the version, 16 bits of sequence (the 12 of
/// `rand_a` and the first 4 after the variant), then 58 random bits.
fn ordered_uuid(last: &AtomicU64, now_ms: i64) -> uuid::Uuid {
    let now = u64::try_from(now_ms).unwrap_or(0) << SEQUENCE_BITS;
    let previous = last
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(now.max(last + 1))
        })
        .expect("the update always returns a value");
    let next = now.max(previous + 1);
    let (ms, sequence) = (next >> SEQUENCE_BITS, next & ((1 << SEQUENCE_BITS) - 1));
    let random = fastrand::u64(..);
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    bytes[6] = 0x70 | (sequence >> 12) as u8;
    bytes[7] = (sequence >> 4) as u8;
    bytes[8] = 0x80 | ((sequence & 0xf) as u8) << 2 | (random >> 62) as u8;
    bytes[9..].copy_from_slice(&random.to_be_bytes()[1..]);
    uuid::Uuid::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::{AtomicU64, new_invocation_id, ordered_uuid};

    #[test]
    fn invocation_ids_sort_in_the_order_they_were_made() {
        // Many ids in one millisecond: the order records are listed in
        // (start, then id) must be the order of the calls.
        let ids: Vec<String> = (0..1000).map(|_| new_invocation_id()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len(), "ids repeat");
    }

    #[test]
    fn an_invocation_id_is_a_version_7_uuid_of_its_time() {
        let at = 1_768_465_800_123;
        let id = ordered_uuid(&AtomicU64::new(0), at);
        assert_eq!(id.get_version(), Some(uuid::Version::SortRand));
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        let (seconds, nanos) = id.get_timestamp().unwrap().to_unix();
        assert_eq!(seconds * 1000 + u64::from(nanos) / 1_000_000, at as u64);
        let text = new_invocation_id();
        assert_eq!(
            uuid::Uuid::parse_str(&text)
                .unwrap()
                .hyphenated()
                .to_string(),
            text
        );
    }

    #[test]
    fn ids_made_on_many_threads_at_once_are_unique_and_each_threads_in_order() {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| (0..20_000).map(|_| new_invocation_id()).collect::<Vec<_>>())
            })
            .collect();
        let mut all = Vec::new();
        for thread in threads {
            let ids = thread.join().unwrap();
            assert!(ids.is_sorted(), "one thread's ids are in the order made");
            all.extend(ids);
        }
        let made = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), made, "ids repeat");
    }

    #[test]
    fn a_clock_that_goes_back_never_makes_an_earlier_id() {
        let last = AtomicU64::new(0);
        let later = ordered_uuid(&last, 1_900_000_000_000);
        let earlier_clock = ordered_uuid(&last, 1_800_000_000_000);
        assert!(earlier_clock > later);
        // More ids in one millisecond than it numbers borrow the next.
        let ids: Vec<_> = (0..70_000)
            .map(|_| ordered_uuid(&last, 1_900_000_000_000))
            .collect();
        assert!(ids.is_sorted() && ids[0] > earlier_clock);
    }
}
