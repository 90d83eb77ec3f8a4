//! Pre-initialization: every call starts from the state `describe()` leaves.
//!
//! Language runtimes inside components set themselves up lazily on their
//! first export call: SpiderMonkey in a componentize-js component creates the
//! promise machinery its bindings wrap around every export and resolves the
//! built-in classes they use. With a fresh instance per call, that first-call
//! work would be paid on every call. So at load the host runs `describe()`
//! once in an instrumented instance and snapshots it (wasmtime-wizer): the
//! snapshot's memory becomes the component's copy-on-write image, and every
//! call starts from there. The JavaScript greeting's call falls from about
//! 500 us to about 310 us (BENCHMARKS.md).
//!
//! A snapshot is only taken when it is safe to resume from. Handles to host
//! resources (an output stream, a pollable) are numbered per instance: if the
//! guest still holds any after `describe()` returns, for example a cached
//! stdout stream, the numbers would dangle in the next instance, so the
//! component is used as built. So it is when it cannot be instrumented or
//! `describe()` fails here; the ordinary load then reports any real problem.
//! Either way the reason is kept ([`crate::StartsFrom`]) and the API shows it.

use std::sync::Arc;
use wasmtime::component::{Component, Instance, Lift, Linker, WasmList};
use wasmtime::{Engine, Store};
use wasmtime_wizer::{ComponentInstanceState, Wizer};

use crate::bindings::{Plugin as PluginWorld, PluginPre};
use crate::compact;
use crate::log::LogSink;
use crate::outbound::Outbound;
use crate::sandbox;
use crate::settings::Limits;
use crate::state::{CountedRandom, State};

/// Why a component is used as built rather than from a snapshot.
pub(crate) struct Skipped {
    pub(crate) why: String,
    /// Whether another try could succeed (`describe` ran out of time, perhaps
    /// on a busy machine), so the outcome should not be kept.
    pub(crate) transient: bool,
}

impl From<String> for Skipped {
    fn from(why: String) -> Skipped {
        Skipped {
            why,
            transient: false,
        }
    }
}

/// The linker for the run that is snapshotted: `linker` with `wasi:random`
/// counting what the guest draws ([`State::random_draws`]).
pub(crate) fn linker(linker: &Linker<State>) -> anyhow::Result<Linker<State>> {
    use wasmtime_wasi::p2::bindings::random::{insecure, insecure_seed, random};
    let mut counting = linker.clone();
    counting.allow_shadowing(true);
    fn counted(state: &mut State) -> CountedRandom<'_> {
        state.counted_random()
    }
    random::add_to_linker::<State, CountedRandom<'static>>(&mut counting, counted)?;
    insecure::add_to_linker::<State, CountedRandom<'static>>(&mut counting, counted)?;
    insecure_seed::add_to_linker::<State, CountedRandom<'static>>(&mut counting, counted)?;
    Ok(counting)
}

/// The component `bytes` rewritten to start from the state its `describe()`
/// leaves, run with `limits`, no config and no grants.
pub(crate) async fn snapshot_after_describe(
    engine: &Engine,
    linker: &Linker<State>,
    bytes: &[u8],
    limits: &Limits,
    outbound: Arc<Outbound>,
) -> Result<Vec<u8>, Skipped> {
    let wizer = Wizer::new();
    // Wizer reads and rewrites a component the host did not build; a panic
    // in it (it has assertions about shapes it does not expect) must cost
    // the snapshot, not the load or the host.
    let (context, instrumented) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wizer.instrument_component(bytes)
    }))
    .map_err(|panic| format!("instrumenting it failed: {}", panic_message(&*panic)))?
    .map_err(|e| format!("it cannot be instrumented: {e:#}"))?;
    let engine_for_compile = engine.clone();
    // Compiling is seconds of CPU for large components: off the async workers.
    let component =
        tokio::task::spawn_blocking(move || Component::new(&engine_for_compile, &instrumented))
            .await
            .map_err(|e| format!("the compiler thread failed: {e}"))?
            .map_err(|e| format!("the instrumented component does not compile: {e:#}"))?;
    let pre = linker
        .instantiate_pre(&component)
        .and_then(PluginPre::new)
        .map_err(|e| format!("it does not link: {e:#}"))?;

    let mut store = sandbox::new_store(
        engine,
        limits,
        Arc::default(),
        outbound,
        LogSink::new(limits.log_bytes),
        Arc::default(),
    );
    let described = tokio::time::timeout(limits.deadline, async {
        let instance = pre.instance_pre().instantiate_async(&mut store).await?;
        let world = PluginWorld::new(&mut store, &instance)?;
        world
            .webhook_action_action()
            .call_describe(&mut store)
            .await?;
        Ok::<_, wasmtime::Error>(instance)
    })
    .await;
    let instance = match described {
        Ok(Ok(instance)) => instance,
        Ok(Err(trap)) => {
            // A pool full of other calls is the host's load at that moment,
            // not the component's doing: a note kept for it would stand for
            // good, on every replica sharing the cache.
            let transient = trap.is::<wasmtime::PoolConcurrencyLimitError>();
            return Err(Skipped {
                why: format!("`describe` failed: {trap:#}"),
                transient,
            });
        }
        Err(_) => {
            return Err(Skipped {
                why: "`describe` did not return in time".into(),
                transient: true,
            });
        }
    };
    if store.data().holds_resources() {
        return Err(String::from("the guest still holds host resources after `describe`").into());
    }
    // What a runtime draws at its first call (a seed for its random module,
    // say) would be in the snapshot, and every call would start with it.
    let draws = store.data().random_draws;
    if draws > 0 {
        return Err(format!(
            "`describe` drew random numbers ({draws} calls to wasi:random), which a snapshot \
             would hand every call alike"
        )
        .into());
    }
    // Reading the state runs guest code (the accessors): it must not meet the
    // deadline that `describe` ran under, and each memory comes back whole
    // as one list, larger than a call's hostcall fuel.
    store.data_mut().deadline += FOREVER;
    store.set_hostcall_fuel(usize::MAX);
    let mut running = Running {
        store: &mut store,
        instance,
        failed: None,
    };
    let snapshot = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(
        wizer.snapshot_component(&context, &mut running),
    ))
    .await;
    // A failed read comes first: wizer may trip over the placeholder.
    if let Some(why) = running.failed {
        return Err(format!("reading the state failed: {why}").into());
    }
    let snapshot =
        snapshot.map_err(|panic| format!("the snapshot failed: {}", panic_message(&*panic)))?;
    let snapshot = snapshot.map_err(|e| Skipped::from(format!("the snapshot failed: {e:#}")))?;
    // A snapshot's segments lie in the memory `describe` was allowed; the
    // rewrite is CPU work on up to the whole component: off the async workers.
    let budget = limits.memory_bytes as u64;
    tokio::task::spawn_blocking(move || {
        compact::compact_component(&snapshot, budget).unwrap_or(snapshot)
    })
    .await
    .map_err(|e| Skipped::from(format!("the compacting thread failed: {e}")))
}

/// The text of a caught panic.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "without a message".into());
    format!("wizer panicked: {text}")
}

/// Far enough ahead not to matter, near enough not to overflow an `Instant`.
const FOREVER: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

/// The instance being snapshotted. Wizer reads its state through accessor
/// functions that the instrumentation exported.
struct Running<'a> {
    store: &'a mut Store<State>,
    instance: Instance,
    /// The first accessor that failed. Wizer's interface has no error path, so
    /// a failure is recorded here, a placeholder returned, and the snapshot
    /// thrown away.
    failed: Option<String>,
}

impl Running<'_> {
    /// Calls the accessor `func` of the exported instance `instance`.
    async fn read<R: Lift + 'static, T: Default>(
        &mut self,
        instance: &str,
        func: &str,
        take: impl FnOnce(&Store<State>, R) -> T,
    ) -> T {
        if self.failed.is_some() {
            return T::default();
        }
        match self.call(instance, func).await {
            Ok(value) => take(&*self.store, value),
            Err(why) => {
                self.failed = Some(why);
                T::default()
            }
        }
    }

    async fn call<R: Lift + 'static>(&mut self, instance: &str, func: &str) -> Result<R, String> {
        let store = &mut *self.store;
        let missing = || format!("the instrumented component does not export `{instance}#{func}`");
        let (_, exported) = self
            .instance
            .get_export(&mut *store, None, instance)
            .ok_or_else(missing)?;
        let (_, accessor) = self
            .instance
            .get_export(&mut *store, Some(&exported), func)
            .ok_or_else(missing)?;
        let accessor = self
            .instance
            .get_typed_func::<(), (R,)>(&mut *store, accessor)
            .map_err(|e| format!("`{func}` has an unexpected type: {e:#}"))?;
        let (value,) = accessor
            .call_async(&mut *store, ())
            .await
            .map_err(|e| format!("`{func}` trapped: {e:#}"))?;
        Ok(value)
    }
}

impl ComponentInstanceState for Running<'_> {
    async fn call_func_ret_list_u8(
        &mut self,
        instance: &str,
        func: &str,
        contents: impl FnOnce(&[u8]) + Send,
    ) {
        self.read(instance, func, |store, list: WasmList<u8>| {
            contents(list.as_le_slice(store))
        })
        .await
    }

    async fn call_func_ret_s32(&mut self, instance: &str, func: &str) -> i32 {
        self.read(instance, func, |_, value| value).await
    }

    async fn call_func_ret_s64(&mut self, instance: &str, func: &str) -> i64 {
        self.read(instance, func, |_, value| value).await
    }

    async fn call_func_ret_f32(&mut self, instance: &str, func: &str) -> u32 {
        self.read(instance, func, |_, value: f32| value.to_bits())
            .await
    }

    async fn call_func_ret_f64(&mut self, instance: &str, func: &str) -> u64 {
        self.read(instance, func, |_, value: f64| value.to_bits())
            .await
    }
}
