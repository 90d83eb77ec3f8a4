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

/// Builds the engine for a host configured by `config`.
pub(crate) fn build(config: &HostConfig) -> Result<Engine> {
    let slots = config.pool_size.max(1);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(slots)
        // Components built by ordinary toolchains hold several core instances
        // (the program, WASI adapters, shims) and sometimes a second memory.
        .max_core_instances_per_component(64)
        .total_core_instances(slots.saturating_mul(8))
        .max_memories_per_component(4)
        .total_memories(slots.saturating_mul(2))
        .max_tables_per_component(8)
        .total_tables(slots.saturating_mul(4))
        .table_elements(100_000)
        .total_stacks(slots)
        .max_memory_size(config.max_memory_bytes)
        // Reset a finished instance by finding its dirty pages (PAGEMAP_SCAN,
        // Linux 6.7+) and rewriting just those, keeping them resident: unmapping
        // pages instead costs page faults on the next call and, with several
        // threads, TLB shootdowns on every core. Measured in BENCHMARKS.md.
        .pagemap_scan(wasmtime::Enabled::Auto)
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
        .context("failed to create the WebAssembly engine")
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
