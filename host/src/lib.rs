//! action-host runs *actions* (WebAssembly components that implement
//! `wit/action.wit`) in a sandbox, once per call, in a fresh instance.
//!
//! # Embedding
//!
//! 1. Create one [`Host`] for the process: it owns the engine (pooling
//!    allocator, copy-on-write memory images, epoch deadlines).
//! 2. [`Host::load`] an action's bytes under a name. The component is
//!    validated, run up to the end of its `describe()` and snapshotted there
//!    (`preinit.rs`; see [`HostConfig::snapshot_after_describe`]), compiled,
//!    pre-instantiated, and its manifest is read.
//! 3. [`Host::invoke`] it with the conversation's [`CallContext`] and the input
//!    attributes as a JSON object. Each call gets a fresh store and instance,
//!    its own deadline, memory limit and log cap.
//!
//! ```no_run
//! use action_host::{CallContext, Host, HostConfig};
//! use serde_json::json;
//!
//! # async fn demo() -> anyhow::Result<()> {
//! let host = Host::new(HostConfig::default())?;
//! let bytes = std::fs::read("greeting.wasm")?;
//! host.load("greeting", &bytes).await?;
//!
//! let context = CallContext { timezone: Some("Europe/London".into()), ..CallContext::default() };
//! let input = json!({ "first_name": "Ada", "is_member": true });
//! match host.invoke("greeting", context, input.as_object().unwrap()).await {
//!     Ok(done) => println!("{} {:?}", done.success, done.attributes),
//!     Err(error) => eprintln!("{}: {}", error.kind, error.message),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! An invocation ends in an [`Invocation`] (an outcome, successful or a
//! business failure) or an [`InvokeError`] whose [`ErrorKind`] says why:
//! invalid input, a timeout, a trap or the memory limit (`internal`), or an
//! error the action returned. None of them disturbs other calls.
//!
//! An application that keeps its own catalog of what serves (as the
//! `action-host-server` crate does) calls [`Host::prepare`] and invokes the
//! [`Prepared`] action it gets ([`Prepared::invoke`]); [`Host::load`] and
//! [`Host::invoke`] by name are the short way for one that does not. A
//! [`ArtifactCache`] given to the load keeps compiled components between
//! runs, keyed by an [`EngineKey`] that is stable across builds of the host.
//!
//! The path of a load: [`Host::prepare`] (`host.rs`) hands the bytes to the
//! pipeline in `load.rs`: settings checked, the header, the snapshot after
//! `describe()` (`preinit.rs`, `compact.rs`), compilation or the cached
//! artifact (`cache.rs`, sealed by `sealed.rs`), linking against the
//! contract, and `describe()` for the manifest (`manifest.rs`).
//!
//! The path of one call: [`Prepared::invoke`] (`host.rs`) calls `invoke.rs`,
//! which checks the input against the manifest (`value.rs`), builds the
//! context (`context.rs`) and a fresh store (`sandbox.rs`: limits, deadline,
//! the state of `state.rs` with the log capture of `log.rs`), runs `run`, and
//! maps the result back (a trap read by `sandbox.rs` and `fault.rs`).
//!
//! # Outbound HTTP
//!
//! An action reaches the network only through grants the operator gives it
//! in [`ActionSettings`].
//! Both of its ways out, the `http` import and `wasi:http`, pass one gate
//! (`outbound.rs`): the grant check (`policy.rs`), the internal-address check
//! on the address actually connected to (`ssrf.rs`, `resolve.rs`), secrets
//! filled into headers only for the destinations and headers they are bound
//! to and redacted wherever a response repeats them (`redact.rs`), and the
//! request budget, size caps and timeouts.
//!
//! # Records and replay
//!
//! [`Prepared::call`] runs a call as [`CallOptions`] say and also returns a
//! [`CallTrace`]: the clock the action read (the context's `now-ms`, where
//! WASI's wall clock starts too), the memory peak, and, with
//! [`Tape::Record`], each outbound request with its answer ([`Exchange`],
//! headers as the action wrote them, so a secret is still its placeholder).
//! [`Tape::Replay`] with a record's exchanges and its clock reruns the call:
//! requests pass the gate as usual and are then answered from the record, in
//! order, instead of the network (`tape.rs`); a request the record does not
//! have is denied with a message saying so.
//!
//! # What is not here
//!
//! The HTTP API, the catalog, the store of versions, the host configuration
//! file and the CLI are the `action-host-server` crate: embedding the sandbox
//! compiles no web server, CLI parser or database driver.

mod bindings;
mod cache;
mod compact;
mod context;
mod engine;
mod error;
mod fault;
mod host;
mod invoke;
mod load;
mod log;
mod manifest;
mod outbound;
mod plugin;
mod policy;
mod preinit;
mod redact;
mod resolve;
mod sandbox;
mod sealed;
mod settings;
mod ssrf;
mod state;
mod tape;
mod value;

pub use cache::{ArtifactCache, CacheEntry, EngineKey, sha256_hex};
pub use context::CallContext;
pub use error::{ErrorKind, InvokeError, LoadError};
pub use host::{Host, Inspection, Prepared};
pub use invoke::{CallOptions, CallTrace, Invocation, new_invocation_id};
pub use load::check_name;
pub use log::{Level, LogLine, Source};
pub use manifest::{AttributeSpec, Manifest, ValueKind};
pub use plugin::{Interface, StartsFrom};
pub use policy::{Grant, GrantError};
pub use resolve::{Resolve, Resolver};
pub use sealed::ArtifactKey;
pub use settings::{ActionSettings, HostConfig, HttpLimits, Limits, Secret};
pub use tape::{Exchange, ExchangeOutcome, RecordedBody, Tape};
