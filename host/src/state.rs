//! What one invocation's `Store` holds, and the host side of the contract's
//! imports: `log`, `config` and `http`, and of `wasi:http`'s outgoing handler.
//! Both HTTP paths go through the invocation's [`Gate`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use bytes::Bytes;
use http_body_util::BodyExt;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::bindings::webhook::action::{config, http, log as wit_log, types};
use crate::log::{Level, LogSink, Source};
use crate::outbound::{Gate, Outbound, OutboundError, Request};
use crate::tape::{Deck, RecordedBody};
use std::future::Future;

/// The most host resources (streams, pollables, HTTP fields, requests and
/// bodies) an invocation may hold at once; past it the call traps.
pub(crate) const MAX_RESOURCES: usize = 1024;

/// The most bytes one `wasi:http` fields resource (a request's or response's
/// headers) may hold. With [`MAX_RESOURCES`] this bounds what headers the
/// guest builds can pin in the host.
pub(crate) const FIELD_SIZE_LIMIT: usize = 16 << 10;

/// The most random bytes one `wasi:random` call returns; the host allocates
/// them before the guest can refuse them.
const MAX_RANDOM_BYTES: u64 = 1 << 20;

/// The data of one invocation's store.
pub(crate) struct State {
    /// Built on the guest's first WASI call (see [`WasiView::ctx`]).
    wasi: Option<WasiCtx>,
    table: ResourceTable,
    pub(crate) memory: MemoryLimiter,
    pub(crate) log: LogSink,
    config: Arc<BTreeMap<String, String>>,
    /// When the invocation must end; the epoch callback checks it.
    pub(crate) deadline: Instant,
    gate: HttpHooks,
    http: WasiHttpCtx,
    /// Calls to `wasi:random` so far, counted only where the store's linker
    /// counts them (the snapshot run, see `preinit`).
    pub(crate) random_draws: u64,
    /// Where WASI's wall clock starts, for an invocation (see
    /// [`State::start_clock_at`]); the host's clock otherwise.
    clock: Option<CallClock>,
}

/// A wall clock that reads `origin` when the call starts and runs on from
/// there with the monotonic clock: the call's own `now-ms`, which a replay
/// keeps from its record.
#[derive(Clone, Copy)]
struct CallClock {
    origin: Duration,
    started: Instant,
}

impl HostWallClock for CallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        self.origin + self.started.elapsed()
    }
}

impl State {
    /// Whether the guest holds handles to host resources (streams, pollables,
    /// HTTP bodies) that it has not dropped.
    pub(crate) fn holds_resources(&self) -> bool {
        !self.table.is_empty()
    }

    pub(crate) fn new(
        log: LogSink,
        config: Arc<BTreeMap<String, String>>,
        memory_bytes: usize,
        deadline: Instant,
        outbound: Arc<Outbound>,
        deck: Arc<Deck>,
    ) -> State {
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(FIELD_SIZE_LIMIT);
        State {
            wasi: None,
            table,
            memory: MemoryLimiter {
                limit: memory_bytes,
                used: 0,
                exceeded: false,
            },
            gate: HttpHooks {
                gate: Gate::new(outbound, deadline, deck),
                log: log.clone(),
            },
            log,
            config,
            deadline,
            http,
            random_draws: 0,
            clock: None,
        }
    }

    /// Has WASI's wall clock read `now_ms` (milliseconds since the Unix
    /// epoch) now and run on from there. Before the guest's first WASI call:
    /// the context is built then.
    pub(crate) fn start_clock_at(&mut self, now_ms: i64) {
        debug_assert!(self.wasi.is_none(), "set before WASI is built");
        self.clock = Some(CallClock {
            origin: Duration::from_millis(u64::try_from(now_ms).unwrap_or(0)),
            started: Instant::now(),
        });
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        // Most calls never reach WASI (an action's own imports are not WASI), and
        // building the context (its random sources, clocks and stdio) is a visible
        // part of a call's cost, so it is built on first use.
        let (log, clock) = (&self.log, self.clock);
        let ctx = self
            .wasi
            .get_or_insert_with(|| locked_down_wasi(log, clock));
        WasiCtxView {
            ctx,
            table: &mut self.table,
        }
    }
}

impl State {
    /// `wasi:random` for this store, counting the calls in `random_draws`.
    pub(crate) fn counted_random(&mut self) -> CountedRandom<'_> {
        let (log, clock) = (&self.log, self.clock);
        let wasi = self
            .wasi
            .get_or_insert_with(|| locked_down_wasi(log, clock));
        CountedRandom {
            random: wasi.random(),
            draws: &mut self.random_draws,
        }
    }
}

/// The store's `wasi:random`, counting each call.
pub(crate) struct CountedRandom<'a> {
    random: &'a mut wasmtime_wasi::random::WasiRandomCtx,
    draws: &'a mut u64,
}

impl wasmtime::component::HasData for CountedRandom<'static> {
    type Data<'a> = CountedRandom<'a>;
}

mod random_bindings {
    pub(super) use wasmtime_wasi::p2::bindings::random::{insecure, insecure_seed, random};
}
use random_bindings::{insecure, insecure_seed, random};

impl random::Host for CountedRandom<'_> {
    fn get_random_bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        *self.draws += 1;
        random::Host::get_random_bytes(self.random, len)
    }

    fn get_random_u64(&mut self) -> wasmtime::Result<u64> {
        *self.draws += 1;
        random::Host::get_random_u64(self.random)
    }
}

impl insecure::Host for CountedRandom<'_> {
    fn get_insecure_random_bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        *self.draws += 1;
        insecure::Host::get_insecure_random_bytes(self.random, len)
    }

    fn get_insecure_random_u64(&mut self) -> wasmtime::Result<u64> {
        *self.draws += 1;
        insecure::Host::get_insecure_random_u64(self.random)
    }
}

impl insecure_seed::Host for CountedRandom<'_> {
    fn insecure_seed(&mut self) -> wasmtime::Result<(u64, u64)> {
        *self.draws += 1;
        insecure_seed::Host::insecure_seed(self.random)
    }
}

/// WASI locked down: no preopened directories, environment, arguments, network
/// or name lookups; stdin is empty; stdout and stderr go to the invocation's
/// log; the wall clock is the call's when it has one.
fn locked_down_wasi(log: &LogSink, clock: Option<CallClock>) -> WasiCtx {
    let mut builder = WasiCtxBuilder::new();
    builder
        .stdout(log.stream(Source::Stdout))
        .stderr(log.stream(Source::Stderr))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .max_random_size(MAX_RANDOM_BYTES);
    if let Some(clock) = clock {
        builder.wall_clock(clock);
    }
    builder.build()
}

/// Refuses linear memory growth past the action's limit and remembers that it
/// did, so a trap that follows is reported as the memory limit. The limit is
/// on the sum of the instance's memories: a component may hold several (its
/// program, adapters, shims), and each under the limit must not add up to more.
pub(crate) struct MemoryLimiter {
    limit: usize,
    /// Bytes of all the instance's memories, as the limiter allowed them.
    used: usize,
    pub(crate) exceeded: bool,
}

impl MemoryLimiter {
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// The most bytes the instance's memories held: they never shrink, so
    /// what they hold now.
    pub(crate) fn peak(&self) -> usize {
        self.used
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|maximum| desired > maximum) {
            // Past the memory's own maximum: wasmtime refuses the growth
            // itself, so it is not counted.
            return Ok(true);
        }
        // A new memory arrives here too, growing from 0 to its initial size.
        // A growth that fails after this (the system is out of memory) stays
        // counted: the error is on the safe side, and only this call sees it.
        let growth = desired.saturating_sub(current);
        match self.used.checked_add(growth) {
            Some(total) if total <= self.limit => {
                self.used = total;
                Ok(true)
            }
            _ => {
                self.exceeded = true;
                Ok(false)
            }
        }
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
        let request = Request {
            method: request.method,
            url: request.url,
            headers: request.headers,
            body: request.body.map(Bytes::from).unwrap_or_default(),
            timeout: request
                .timeout_ms
                .map(|ms| std::time::Duration::from_millis(ms.into())),
        };
        // Refusals and failures are values the action branches on, never traps.
        let gate = &self.gate.gate;
        let outbound = Arc::clone(gate.outbound());
        let deck = Arc::clone(gate.deck());
        let seen = gate.seen(&request);
        let sent = match gate.admit(request) {
            Ok(admitted) => deck.send(&outbound, seen.as_ref(), admitted).await,
            Err(error) => Err(error),
        };
        outbound.record(&sent);
        deck.kept(seen, &sent);
        let response = sent.map_err(|error| match noted(&self.log, error) {
            OutboundError::Denied(why) => http::HttpError::Denied(why),
            OutboundError::Timeout => http::HttpError::Timeout,
            OutboundError::TooLarge => http::HttpError::TooLarge,
            OutboundError::InvalidRequest(why) => http::HttpError::InvalidRequest(why),
            OutboundError::Transport(why) => http::HttpError::Transport(why),
            OutboundError::BudgetExhausted => http::HttpError::BudgetExhausted,
        });
        Ok(response.map(|response| http::Response {
            status: response.status,
            headers: response.headers,
            body: response.body.to_vec(),
        }))
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            hooks: &mut self.gate,
            table: &mut self.table,
            ctx: &mut self.http,
        }
    }
}

/// The invocation's gate, also serving as the `wasi:http` hooks.
struct HttpHooks {
    gate: Gate,
    log: LogSink,
}

/// Notes why a request failed in the invocation's log, so the designer sees it.
fn noted(log: &LogSink, error: OutboundError) -> OutboundError {
    let why = match &error {
        OutboundError::Denied(why) => format!("denied: {why}"),
        OutboundError::InvalidRequest(why) => format!("invalid: {why}"),
        OutboundError::Transport(why) => format!("failed: {why}"),
        OutboundError::Timeout => "timed out".into(),
        OutboundError::TooLarge => "got a response over the size cap".into(),
        OutboundError::BudgetExhausted => "exceeded the invocation's request budget".into(),
    };
    log.note(Level::Warn, format!("outbound request {why}"));
    error
}

type WasiBody = wasmtime_wasi_http::WasiBody;
type BodySent = Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>;
type SendFuture = Box<
    dyn Future<Output = wasmtime_wasi_http::Result<(::http::Response<WasiBody>, BodySent)>> + Send,
>;

/// The most bytes of one write to an outgoing `wasi:http` body; the host
/// holds at most two such writes of a body that is not being sent. The
/// default (1 MiB) let a guest park 2 MiB in the host per body it kept,
/// hundreds of them per call, past its own memory limit.
const OUTGOING_BODY_CHUNK: usize = 8 << 10;

impl wasmtime_wasi_http::WasiHttpHooks for HttpHooks {
    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        OUTGOING_BODY_CHUNK
    }

    fn send_request(
        &mut self,
        request: ::http::Request<WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _body_sent: BodySent,
    ) -> SendFuture {
        use wasmtime_wasi_http::Error as E;
        let (parts, body) = request.into_parts();
        let request = Request {
            method: parts.method.as_str().to_owned(),
            url: parts.uri.to_string(),
            headers: parts
                .headers
                .iter()
                // wasi:http sets Host from the URL itself; the gate checks the
                // URL. A client's Content-Length (fetch() sets one for a body)
                // wasi:http has checked against the body written; the host
                // sends its own for the body it read.
                .filter(|(name, _)| {
                    *name != ::http::header::HOST && *name != ::http::header::CONTENT_LENGTH
                })
                .map(|(name, value)| {
                    let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                    (name.as_str().to_owned(), value)
                })
                .collect(),
            // wasi:http streams the body after the headers; it is read below,
            // within the cap, once the gate has admitted the request.
            body: Bytes::new(),
            timeout: options.and_then(|o| o.first_byte_timeout),
        };
        let mut seen = self.gate.seen(&request);
        let admitted = self.gate.admit(request);
        let outbound = Arc::clone(self.gate.outbound());
        let deck = Arc::clone(self.gate.deck());
        let log = self.log.clone();
        Box::new(async move {
            let sent = async {
                let mut admitted = admitted?;
                let cap = outbound.body_cap();
                let body = http_body_util::Limited::new(body, cap)
                    .collect()
                    .await
                    .map_err(|_| {
                        OutboundError::InvalidRequest(format!(
                            "the request body is over the cap of {cap} bytes"
                        ))
                    })?
                    .to_bytes();
                if let Some(seen) = &mut seen {
                    seen.body = RecordedBody::of(&body);
                }
                admitted.set_body(body);
                deck.send(&outbound, seen.as_ref(), admitted).await
            }
            .await;
            outbound.record(&sent);
            deck.kept(seen, &sent);
            let response = match sent {
                Ok(response) => response,
                Err(error) => return Err(to_error_code(noted(&log, error))),
            };
            let mut builder = ::http::Response::builder().status(response.status);
            for (name, value) in &response.headers {
                builder = builder.header(name, value);
            }
            let body = http_body_util::Full::new(response.body)
                .map_err(|never| match never {})
                .boxed_unsync();
            let response = builder
                .body(body)
                .map_err(|e| E::InternalError(Some(e.to_string())))?;
            let sent: BodySent = Box::new(async { Ok(()) });
            Ok((response, sent))
        })
    }
}

/// wasi:http's nearest error code for each failure of the gate and client.
fn to_error_code(error: OutboundError) -> wasmtime_wasi_http::Error {
    use wasmtime_wasi_http::Error as E;
    match error {
        OutboundError::Denied(_) => E::HttpRequestDenied,
        OutboundError::Timeout => E::HttpResponseTimeout,
        OutboundError::TooLarge => E::HttpResponseBodySize(None),
        OutboundError::InvalidRequest(why) => {
            E::InternalError(Some(format!("invalid request: {why}")))
        }
        OutboundError::Transport(why) => E::InternalError(Some(why)),
        OutboundError::BudgetExhausted => E::ConnectionLimitReached,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HttpLimits;

    #[test]
    fn the_wasi_context_is_built_on_first_use_and_then_kept() {
        let outbound = Outbound::new(
            Vec::new(),
            Vec::new(),
            HttpLimits::default(),
            Arc::default(),
            Arc::new(crate::outbound::Network::new(&[], Default::default()).unwrap()),
        )
        .unwrap();
        let mut state = State::new(
            LogSink::new(1024),
            Arc::default(),
            1 << 20,
            Instant::now(),
            Arc::new(outbound),
            Arc::default(),
        );
        assert!(state.wasi.is_none());
        let first: *const WasiCtx = state.ctx().ctx;
        assert!(state.wasi.is_some());
        let again: *const WasiCtx = state.ctx().ctx;
        assert_eq!(first, again);
    }
}
