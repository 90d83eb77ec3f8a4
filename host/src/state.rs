//! What one invocation's `Store` holds, and the host side of the contract's
//! imports: `log`, `config`, and `http` (which refuses every request until
//! outbound grants exist).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::webhook::action::{config, http, log as wit_log, types};
use crate::log::{Level, LogSink, Source};

/// The data of one invocation's store.
pub(crate) struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) memory: MemoryLimiter,
    pub(crate) log: LogSink,
    config: Arc<BTreeMap<String, String>>,
    /// When the invocation must end; the epoch callback checks it.
    pub(crate) deadline: Instant,
}

impl State {
    pub(crate) fn new(
        log: LogSink,
        config: Arc<BTreeMap<String, String>>,
        memory_bytes: usize,
        deadline: Instant,
    ) -> State {
        // WASI locked down: no preopened directories, environment, arguments,
        // network or name lookups; stdin is empty; stdout and stderr go to the
        // invocation's log.
        let wasi = WasiCtxBuilder::new()
            .stdout(log.stream(Source::Stdout))
            .stderr(log.stream(Source::Stderr))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        State {
            wasi,
            table: ResourceTable::new(),
            memory: MemoryLimiter {
                limit: memory_bytes,
                exceeded: false,
            },
            log,
            config,
            deadline,
        }
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Refuses linear memory growth past the action's limit and remembers that it
/// did, so a trap that follows is reported as the memory limit.
pub(crate) struct MemoryLimiter {
    limit: usize,
    pub(crate) exceeded: bool,
}

impl MemoryLimiter {
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.exceeded = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables are bounded by the pooling allocator's slot size.
        Ok(desired <= 100_000)
    }
}

impl types::Host for State {}

impl wit_log::Host for State {
    fn log(&mut self, level: wit_log::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            wit_log::Level::Trace => Level::Trace,
            wit_log::Level::Debug => Level::Debug,
            wit_log::Level::Info => Level::Info,
            wit_log::Level::Warn => Level::Warn,
            wit_log::Level::Error => Level::Error,
        };
        self.log.push(level, Source::Log, &message);
        Ok(())
    }
}

impl config::Host for State {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.config.get(&key).cloned())
    }
}

impl http::Host for State {
    async fn send(
        &mut self,
        request: http::Request,
    ) -> wasmtime::Result<Result<http::Response, http::HttpError>> {
        // No destination is granted to any action yet: refuse, as data the
        // action can branch on, never as a trap.
        Ok(Err(http::HttpError::Denied(format!(
            "{} {}: no outbound destination is granted to this action",
            request.method, request.url
        ))))
    }
}
