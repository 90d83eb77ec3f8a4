//! The process's one wasmtime `Engine`: pooling allocator, copy-on-write memory
//! images, async support and epoch interruption driven by a ticker thread.

use anyhow::{Context as _, Result};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::HostConfig;

/// How often the ticker advances the engine's epoch. A running action is
/// checked against its deadline (and yields to the executor) once per tick, so
/// this bounds how late a timeout fires and how long a busy guest holds a worker.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(2);

/// Whether finished instances may be reset with the kernel's page scan.
///
/// Not while swap is on: the scan reports only pages that are present, so a
/// page that a call dirtied and the kernel then swapped out would be neither
/// rewritten nor unmapped, and the next call in that slot would read the last
/// call's data. Without the scan, wasmtime rewrites the first
/// `linear_memory_keep_resident` bytes and unmaps the rest, which is slower
/// (BENCHMARKS.md) but resets swapped pages too. Swap turned on after the host
/// has started is not seen; that needs a restart.
pub(crate) fn page_scan_is_safe() -> bool {
    // Without /proc there is no page scan to use either (it reads
    // /proc/self/pagemap), so an unreadable file changes nothing.
    let swaps = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
    !swap_is_on(&swaps)
}

/// Whether `/proc/swaps` (its text) lists an active swap area below its header.
fn swap_is_on(proc_swaps: &str) -> bool {
    proc_swaps
        .lines()
        .skip(1)
        .any(|line| !line.trim().is_empty())
}

/// What one instance of an action may take from the pool: core instances,
/// memories and tables. The pool holds exactly this much for each of its
/// slots, so however many instances of whichever actions run, a free slot
/// always finds the rest it needs: one action run at its concurrency cannot
/// use up the core instances, memories or tables that other actions' calls
/// need. A component that needs more is refused when it is loaded.
///
/// Components built by ordinary toolchains hold several core instances (the
/// program, WASI adapters, shims; componentize-py's hold 14), one memory
/// (some toolchains keep a second one for an adapter) and two tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Share {
    pub(crate) core_instances: u32,
    pub(crate) memories: u32,
    pub(crate) tables: u32,
}

/// Each instance's share of the pool.
pub(crate) const SHARE: Share = Share {
    core_instances: 20,
    memories: 2,
    tables: 4,
};

/// Builds the engine for a host configured by `config`; `page_scan` says
/// whether instances may be reset with the page scan ([`page_scan_is_safe`]).
pub(crate) fn build(config: &HostConfig, page_scan: bool) -> Result<Engine> {
    let slots = config.pool_size.max(1);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(slots)
        .max_core_instances_per_component(SHARE.core_instances)
        .total_core_instances(slots.saturating_mul(SHARE.core_instances))
        .max_memories_per_component(SHARE.memories)
        .total_memories(slots.saturating_mul(SHARE.memories))
        .max_tables_per_component(SHARE.tables)
        .total_tables(slots.saturating_mul(SHARE.tables))
        .table_elements(100_000)
        .total_stacks(slots)
        .max_memory_size(config.max_memory_bytes)
        // Reset a finished instance by finding its dirty pages (PAGEMAP_SCAN,
        // Linux 6.7+) and rewriting just those, keeping them resident: unmapping
        // pages instead costs page faults on the next call and, with several
        // threads, TLB shootdowns on every core. Measured in BENCHMARKS.md.
        .pagemap_scan(if page_scan {
            wasmtime::Enabled::Auto
        } else {
            wasmtime::Enabled::No
        })
        .linear_memory_keep_resident(1 << 20)
        .table_keep_resident(1 << 16)
        .decommit_batch_size(16);

    let mut wasm = Config::new();
    wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .memory_init_cow(true)
        .epoch_interruption(true)
        .wasm_component_model(true)
        .cranelift_opt_level(wasmtime::OptLevel::Speed);
    Engine::new(&wasm)
        .map_err(anyhow::Error::from)
        .with_context(|| {
            let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
            match address_space_limit(&limits) {
                // The pool's reservation is the usual reason then, and its
                // size in hexadecimal bytes does not say what to change.
                Some(bytes) => format!(
                    "failed to create the WebAssembly engine: its instance pool reserves \
                     address space for {slots} instances up front (reserved, not used), and \
                     this process may map only {} MiB (its virtual memory limit, `ulimit -v`): \
                     lift that limit",
                    bytes >> 20
                ),
                None => "failed to create the WebAssembly engine".into(),
            }
        })
}

/// The process's virtual memory limit in bytes, from the text of
/// `/proc/self/limits`; `None` when it is unlimited or unknown.
fn address_space_limit(proc_limits: &str) -> Option<u64> {
    let line = proc_limits
        .lines()
        .find(|line| line.starts_with("Max address space"))?;
    // The columns: the name, the soft limit, the hard limit, the unit.
    line["Max address space".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Advances an engine's epoch every [`EPOCH_TICK`] until dropped.
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    /// Starts the ticker thread for `engine`.
    pub(crate) fn start(engine: &Engine) -> Result<EpochTicker> {
        let stop = Arc::new(AtomicBool::new(false));
        let engine = engine.clone();
        let flag = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("action-host-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .context("failed to start the epoch ticker thread")?;
        Ok(EpochTicker { stop })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::{Instance, Module, Store};

    #[test]
    fn swap_is_on_when_proc_swaps_lists_an_area() {
        let header = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n";
        assert!(!swap_is_on(header));
        assert!(!swap_is_on(""));
        assert!(swap_is_on(&format!(
            "{header}/swapfile                               file\t\t1048572\t\t0\t\t-2\n"
        )));
        assert!(swap_is_on(&format!(
            "{header}/dev/zram0                              partition\t4194300\t\t512\t\t100\n"
        )));
    }

    #[test]
    fn the_address_space_limit_is_read_from_proc_limits() {
        let header =
            "Limit                     Soft Limit           Hard Limit           Units     \n";
        let limited = format!(
            "{header}Max stack size            8388608              unlimited            bytes     \n\
             Max address space         4096000000           unlimited            bytes     \n"
        );
        assert_eq!(address_space_limit(&limited), Some(4_096_000_000));
        let unlimited = format!(
            "{header}Max address space         unlimited            unlimited            bytes\n"
        );
        assert_eq!(address_space_limit(&unlimited), None);
        assert_eq!(address_space_limit(""), None);
    }

    /// Each instance must see the memory image, whatever the one before it in
    /// the slot wrote: with the page scan and without it, and with more
    /// separately dirtied runs than the scan reports at once.
    #[test]
    fn a_new_instance_sees_the_image_not_the_last_ones_writes() {
        let wat = r#"(module
            (memory (export "memory") 96)
            (data (i32.const 0) "image")
            (data (i32.const 0x200000) "image")
            ;; Writes a byte into every other 64 KiB wasm page up to 5 MiB: 40
            ;; separate dirty runs, more than the scan reports at once.
            (func (export "scribble")
                (local $at i32)
                (loop $next
                    (i32.store8 (local.get $at) (i32.const 0x58))
                    (local.set $at (i32.add (local.get $at) (i32.const 0x20000)))
                    (br_if $next (i32.lt_u (local.get $at) (i32.const 0x500000)))))
            ;; The first byte of the image, the byte scribbled at 0x200000 and
            ;; a zero page, summed: 0x69 ('i') twice when nothing leaked.
            (func (export "look") (result i32)
                (i32.add
                    (i32.add (i32.load8_u (i32.const 0)) (i32.load8_u (i32.const 0x200000)))
                    (i32.load8_u (i32.const 0x20000)))))"#;
        for page_scan in [true, false] {
            let engine = build(&HostConfig::default(), page_scan).unwrap();
            let module = Module::new(&engine, wat::parse_str(wat).unwrap()).unwrap();
            for call in 0..3 {
                let mut store = Store::new(&engine, ());
                store.set_epoch_deadline(u64::MAX / 2);
                let instance = Instance::new(&mut store, &module, &[]).unwrap();
                let look = instance
                    .get_typed_func::<(), i32>(&mut store, "look")
                    .unwrap();
                let scribble = instance
                    .get_typed_func::<(), ()>(&mut store, "scribble")
                    .unwrap();
                assert_eq!(
                    look.call(&mut store, ()).unwrap(),
                    2 * i32::from(b'i'),
                    "call {call}, page scan {page_scan}"
                );
                scribble.call(&mut store, ()).unwrap();
                assert_eq!(look.call(&mut store, ()).unwrap(), 3 * 0x58);
            }
        }
    }
}
