//! One invocation: input checked against the manifest, a fresh `Store` and
//! instance, the deadline, memory and log limits, and the result mapped back.

use serde::{Serialize, Serializer};
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wasmtime::{Engine, Store, Trap, UpdateDeadline};

use crate::bindings::types::{ActionError, Attribute, Context, Outcome};
use crate::context::{self, CallContext, HostFacts};
use crate::error::{ErrorKind, InvokeError};
use crate::fault;
use crate::log::{Level, LogLine, LogSink};
use crate::outbound::Outbound;
use crate::plugin::Plugin;
use crate::settings::Limits;
use crate::state::State;
use crate::value;

/// The result of an invocation that ran to an outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Invocation {
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

/// A store for one call of `plugin`-like code: limits, log, and an epoch
/// callback that yields to the executor on every tick and traps at the deadline.
pub(crate) fn new_store(
    engine: &Engine,
    limits: &Limits,
    config: Arc<BTreeMap<String, String>>,
    outbound: Arc<Outbound>,
    log: LogSink,
) -> Store<State> {
    let deadline = Instant::now() + limits.deadline;
    let mut store = Store::new(
        engine,
        State::new(log, config, limits.memory_bytes, deadline, outbound),
    );
    store.limiter(|state| &mut state.memory);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|store| {
        Ok(if Instant::now() >= store.data().deadline {
            UpdateDeadline::Interrupt
        } else {
            // Yield so that a busy action cannot hold an executor thread.
            UpdateDeadline::Yield(1)
        })
    });
    store
}

/// Runs `plugin` once.
pub(crate) async fn run(
    plugin: &Plugin,
    call: CallContext,
    input: &Map<String, Json>,
) -> Result<Invocation, InvokeError> {
    let started = Instant::now();
    // Checked before anything is instantiated: a bad call costs no instance.
    let attributes = value::input_attributes(&plugin.manifest, input)
        .map_err(|message| InvokeError::new(ErrorKind::InvalidInput, message))?;

    let limits = &plugin.limits;
    let log = LogSink::new(limits.log_bytes);
    let (ctx, unknown_zone) = context::build(
        call,
        HostFacts {
            invocation_id: invocation_id(),
            action: &plugin.name,
            now_ms: now_ms(),
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

    let mut store = new_store(
        plugin.pre.engine(),
        limits,
        Arc::clone(&plugin.config),
        Arc::clone(&plugin.outbound),
        log.clone(),
    );
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
        Err(_elapsed) => Err(timeout(limits)),
        Ok(Err(trap)) => Err(trap_error(&store, trap, Vec::new(), limits)),
        Ok(Ok(Err(action_error))) => Err(from_action_error(action_error)),
        Ok(Ok(Ok(outcome))) => value::output_object(outcome.attributes)
            .map(|attributes| (outcome.success, attributes, outcome.messages))
            .map_err(|why| {
                InvokeError::new(
                    ErrorKind::Internal,
                    format!("the action returned an invalid output: {why}"),
                )
            }),
    };
    drop(store);
    let logs = log.finish();
    match result {
        Ok((success, attributes, messages)) => Ok(Invocation {
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

/// Classifies a trap: the deadline, the memory limit, or a fault in the action.
pub(crate) fn trap_error(
    store: &Store<State>,
    error: wasmtime::Error,
    logs: Vec<LogLine>,
    limits: &Limits,
) -> InvokeError {
    let trap = error.downcast_ref::<Trap>().copied();
    let mut invoke_error = if trap == Some(Trap::Interrupt) {
        timeout(limits)
    } else if store.data().memory.exceeded {
        InvokeError::new(
            ErrorKind::Internal,
            format!(
                "the action exceeded its memory limit of {} MiB",
                store.data().memory.limit() >> 20
            ),
        )
    } else if let Some(trap) = trap {
        InvokeError::new(
            ErrorKind::Internal,
            format!("the action failed with a {trap}"),
        )
    } else {
        InvokeError::new(ErrorKind::Internal, format!("the action failed: {error:#}"))
    };
    invoke_error.logs = logs;
    invoke_error
}

fn timeout(limits: &Limits) -> InvokeError {
    InvokeError::new(
        ErrorKind::Timeout,
        format!(
            "the action did not finish within its deadline of {} ms",
            limits.deadline.as_millis()
        ),
    )
}

fn from_action_error(error: ActionError) -> InvokeError {
    match error {
        ActionError::InvalidInput(why) => InvokeError::new(ErrorKind::InvalidInput, why),
        ActionError::Upstream(why) => InvokeError::new(ErrorKind::Upstream, why),
        ActionError::Denied(why) => InvokeError::new(ErrorKind::Denied, why),
        ActionError::Timeout => {
            InvokeError::new(ErrorKind::Timeout, "the action reported a timeout")
        }
        ActionError::Internal(why) => InvokeError::new(ErrorKind::Internal, why),
    }
}

fn now_ms() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

fn invocation_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
