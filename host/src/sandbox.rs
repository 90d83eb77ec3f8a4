//! The sandbox of one call: a fresh `Store` with its deadline, memory limit,
//! hostcall fuel and log, and the reading of a trap into an [`InvokeError`]
//! that names the bound it hit. Both the load pipeline (`describe`, the
//! snapshot run) and invocations build their stores here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::{Engine, Store, Trap, UpdateDeadline};

use crate::error::{ErrorKind, InvokeError};
use crate::log::{LogLine, LogSink};
use crate::outbound::Outbound;
use crate::settings::Limits;
use crate::state::State;
use crate::tape::Deck;

/// What one call from the guest into the host (its arguments) may carry, and
/// what the host lifts of `run`'s result: wasmtime's hostcall fuel. Lifting
/// copies, so without this bound a guest could hand the host the same string
/// a hundred thousand times; with it the host copies at most this much per
/// call. Raised for actions whose request body cap is larger.
pub(crate) const HOSTCALL_FUEL: usize = 4 << 20;

/// A store for one call: limits, log, and an epoch
/// callback that yields to the executor on every tick and traps at the deadline.
pub(crate) fn new_store(
    engine: &Engine,
    limits: &Limits,
    config: Arc<BTreeMap<String, String>>,
    outbound: Arc<Outbound>,
    log: LogSink,
    deck: Arc<Deck>,
) -> Store<State> {
    let deadline = Instant::now() + limits.deadline;
    let outbound_body_cap = outbound.body_cap();
    let mut store = Store::new(
        engine,
        State::new(log, config, limits.memory_bytes, deadline, outbound, deck),
    );
    store.limiter(|state| &mut state.memory);
    store.set_hostcall_fuel(HOSTCALL_FUEL.max(outbound_body_cap.saturating_add(1 << 20)));
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

/// Classifies a trap: the deadline, the memory limit, a bound on what the
/// host holds, or a fault in the action. `returning` names what the export
/// returns (`outcome`, `manifest`), for a result over the host's cap.
pub(crate) fn trap_error(
    store: &Store<State>,
    error: wasmtime::Error,
    logs: Vec<LogLine>,
    limits: &Limits,
    returning: &str,
) -> InvokeError {
    let trap = error.downcast_ref::<Trap>().copied();
    let mut invoke_error = if trap == Some(Trap::Interrupt) {
        timeout(limits)
    } else if is_hostcall_fuel_exhausted(&error) {
        // An import's arguments are lifted while the guest waits in the call,
        // so the error carries the guest's backtrace; the export's result is
        // lifted after the guest has returned, with no guest frame left.
        let fuel = store.hostcall_fuel();
        let message = if error.downcast_ref::<wasmtime::WasmBacktrace>().is_some() {
            format!(
                "the action passed more than {fuel} bytes to the host in one call (the host's cap)"
            )
        } else if returning == "outcome" {
            return InvokeError {
                logs,
                ..crate::invoke::outcome_too_large()
            };
        } else {
            format!("the action's {returning} is over the host's cap of {fuel} bytes")
        };
        InvokeError::new(ErrorKind::Internal, message)
    } else if is_resource_table_full(&error) {
        InvokeError::new(
            ErrorKind::Internal,
            format!(
                "the action held more than {} host resources at once (streams, pollables, \
                 HTTP fields, requests and bodies)",
                crate::state::MAX_RESOURCES
            ),
        )
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
    } else if format!("{error:#}").contains("total size of fields exceeds limit") {
        InvokeError::new(
            ErrorKind::Internal,
            format!(
                "the action built HTTP headers over the host's cap of {} KiB for one set of fields",
                crate::state::FIELD_SIZE_LIMIT >> 10
            ),
        )
    } else {
        // The causes without wasmtime's backtrace, which names frames only.
        let causes: Vec<String> = error
            .chain()
            .map(ToString::to_string)
            .filter(|cause| !cause.starts_with("error while executing at wasm backtrace"))
            .collect();
        InvokeError::new(
            ErrorKind::Internal,
            format!("the action failed: {}", causes.join(": ")),
        )
    };
    invoke_error.logs = logs;
    invoke_error
}

pub(crate) fn timeout(limits: &Limits) -> InvokeError {
    InvokeError::new(
        ErrorKind::Timeout,
        format!(
            "the action did not finish within its deadline of {} ms",
            limits.deadline.as_millis()
        ),
    )
}

/// Whether `error` is wasmtime's refusal to copy more than the hostcall fuel
/// allows from the guest.
fn is_hostcall_fuel_exhausted(error: &wasmtime::Error) -> bool {
    // wasmtime's error type for it is private; its message is stable within
    // the pinned release.
    format!("{error:#}").contains("fuel allocated for hostcalls has been exhausted")
}

/// Whether `error` is the resource table refusing one more entry.
fn is_resource_table_full(error: &wasmtime::Error) -> bool {
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<wasmtime::component::ResourceTableError>(),
            Some(wasmtime::component::ResourceTableError::Full)
        )
    })
}
