//! The embedding API: one engine, the load pipeline, and the loaded actions
//! by name.

use anyhow::{Context as _, Result};
use serde_json::{Map, Value as Json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use wasmtime::PoolingAllocationConfig;
use wasmtime::component::{HasSelf, Linker};

use crate::bindings::Plugin as PluginWorld;
use crate::cache::ArtifactCache;
use crate::context::CallContext;
use crate::engine::{self, EpochTicker};
use crate::error::{ErrorKind, InvokeError, LoadError};
use crate::invoke::{self, CallOptions, CallTrace, Invocation};
use crate::load::{Loader, check_name};
use crate::manifest::Manifest;
use crate::outbound::{ActionOutbound, Network};
use crate::plugin::{Interface, Plugin, StartsFrom};
use crate::preinit;
use crate::settings::{ActionSettings, HostConfig};
use crate::state::State;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// A host for actions. Cheap to clone: clones share the engine and the actions.
#[derive(Clone)]
pub struct Host {
    inner: Arc<Inner>,
}

struct Inner {
    loader: Arc<Loader>,
    /// What [`Host::load`] serves by name. An application that keeps its own
    /// catalog holds [`Prepared`] actions instead and leaves this empty.
    actions: RwLock<HashMap<String, Prepared>>,
    /// What each action name's versions share of their outbound requests.
    outbound: std::sync::Mutex<HashMap<String, Arc<ActionOutbound>>>,
    /// Whether finished instances are reset with the kernel's page scan.
    page_scan: bool,
    _ticker: EpochTicker,
}

/// A loaded action: validated, compiled, pre-instantiated and described,
/// ready to [`invoke`](Prepared::invoke). Cheap to clone; calls running on
/// one finish on it even after it is replaced.
#[derive(Clone)]
pub struct Prepared(Arc<Plugin>);

impl Prepared {
    /// The action's manifest.
    pub fn manifest(&self) -> &Arc<Manifest> {
        &self.0.manifest
    }

    /// Where the action's calls start.
    pub fn starts_from(&self) -> &StartsFrom {
        &self.0.starts_from
    }

    /// The name it was loaded under.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Runs the action once, in a fresh instance, with the caller's context
    /// and the input attributes (a JSON object keyed by name).
    pub async fn invoke(
        &self,
        context: CallContext,
        input: &Map<String, Json>,
    ) -> Result<Invocation, InvokeError> {
        self.invoke_as(invoke::new_invocation_id(), context, input)
            .await
    }

    /// Like [`Prepared::invoke`], with the invocation id the caller chose
    /// (to name the call in its own logs before it runs).
    pub async fn invoke_as(
        &self,
        invocation_id: String,
        context: CallContext,
        input: &Map<String, Json>,
    ) -> Result<Invocation, InvokeError> {
        invoke::run(
            &self.0,
            invocation_id,
            context,
            input,
            CallOptions::default(),
        )
        .await
        .0
    }

    /// Like [`Prepared::invoke_as`], with the deadline at most `cap`: for a
    /// caller that waits less than the action's own deadline (a platform's
    /// webhook timeout), so that the call ends as `timeout` while the caller
    /// still listens. The action sees the shorter deadline in its context.
    pub async fn invoke_within(
        &self,
        invocation_id: String,
        context: CallContext,
        input: &Map<String, Json>,
        cap: Duration,
    ) -> Result<Invocation, InvokeError> {
        let options = CallOptions {
            deadline_cap: Some(cap),
            ..CallOptions::default()
        };
        invoke::run(&self.0, invocation_id, context, input, options)
            .await
            .0
    }

    /// Runs the action once as `options` say (a deadline cap, a clock, a
    /// tape to record or replay its outbound requests), and tells what the
    /// call did besides its result: for a record of it, or a replay.
    pub async fn call(
        &self,
        invocation_id: String,
        context: CallContext,
        input: &Map<String, Json>,
        options: CallOptions,
    ) -> (Result<Invocation, InvokeError>, CallTrace) {
        invoke::run(&self.0, invocation_id, context, input, options).await
    }
}

/// A component's manifest with its imports and exports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Inspection {
    /// What the action says about itself.
    pub manifest: Manifest,
    /// Its imports and exports.
    #[serde(flatten)]
    pub interface: Interface,
}

impl Host {
    /// Creates a host: the engine, its epoch ticker, and the linker with WASI
    /// (locked down) and the contract's imports.
    pub fn new(config: HostConfig) -> Result<Host> {
        let page_scan = engine::page_scan_is_safe();
        let engine = engine::build(&config, page_scan)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)
            .context("failed to link WASI")?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)
            .context("failed to link wasi:http")?;
        PluginWorld::add_to_linker::<State, HasSelf<State>>(&mut linker, |state| state)
            .map_err(anyhow::Error::from)
            .context("failed to link the action imports")?;
        let snapshot_linker = preinit::linker(&linker)?;
        let tls_roots = match &config.tls_roots_pem {
            None => Vec::new(),
            Some(pem) => {
                let roots = CertificateDer::pem_slice_iter(pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| anyhow::anyhow!("invalid TLS root certificates: {e}"))?;
                anyhow::ensure!(
                    !roots.is_empty(),
                    "the TLS root certificates hold no PEM certificate"
                );
                roots
            }
        };
        let network = Arc::new(Network::new(&tls_roots, config.resolver.clone())?);
        let ticker = EpochTicker::start(&engine)?;
        Ok(Host {
            inner: Arc::new(Inner {
                loader: Arc::new(Loader {
                    engine,
                    linker,
                    snapshot_linker,
                    config,
                    network,
                    compilations: AtomicU64::new(0),
                    rejected_artifacts: AtomicU64::new(0),
                }),
                actions: RwLock::new(HashMap::new()),
                outbound: std::sync::Mutex::new(HashMap::new()),
                page_scan: page_scan && PoolingAllocationConfig::is_pagemap_scan_available(),
                _ticker: ticker,
            }),
        })
    }

    /// Loads `bytes` as the action `name` with default settings, replacing any
    /// action of that name once the new one is ready. See [`Host::load_with`].
    pub async fn load(
        &self,
        name: &str,
        bytes: impl AsRef<[u8]>,
    ) -> Result<Arc<Manifest>, LoadError> {
        self.load_with(name, bytes, ActionSettings::default()).await
    }

    /// Validates, compiles and pre-instantiates `bytes` as the action `name`,
    /// calls its `describe` and checks the manifest. Only then does the action
    /// replace the one of that name: a failed load changes nothing, and calls
    /// already running finish on the version they started with.
    pub async fn load_with(
        &self,
        name: &str,
        bytes: impl AsRef<[u8]>,
        settings: ActionSettings,
    ) -> Result<Arc<Manifest>, LoadError> {
        self.load_from(name, bytes.as_ref(), settings, None).await
    }

    /// Like [`Host::load_with`], but takes the compiled component from `cache`
    /// when it holds one, and stores it there after compiling.
    pub async fn load_cached(
        &self,
        name: &str,
        bytes: impl AsRef<[u8]>,
        settings: ActionSettings,
        cache: Arc<dyn ArtifactCache>,
    ) -> Result<Arc<Manifest>, LoadError> {
        self.load_from(name, bytes.as_ref(), settings, Some(cache))
            .await
    }

    /// How many components this host has compiled rather than read from a cache.
    pub fn compilations(&self) -> u64 {
        self.inner.loader.compilations.load(Ordering::Relaxed)
    }

    /// How many cached artifacts this host refused to load because they were
    /// not as it had stored them (see [`HostConfig::artifact_key`]).
    pub fn rejected_artifacts(&self) -> u64 {
        self.inner.loader.rejected_artifacts.load(Ordering::Relaxed)
    }

    async fn load_from(
        &self,
        name: &str,
        bytes: &[u8],
        settings: ActionSettings,
        cache: Option<Arc<dyn ArtifactCache>>,
    ) -> Result<Arc<Manifest>, LoadError> {
        let prepared = self.prepare(name, bytes, settings, cache).await?;
        let manifest = Arc::clone(prepared.manifest());
        self.install(prepared);
        Ok(manifest)
    }

    /// Does all the work of a load (validate, compile or read from `cache`,
    /// pre-instantiate, describe) without serving the result by name: the
    /// caller invokes the [`Prepared`] action itself, or [`Host::install`]s it.
    pub async fn prepare(
        &self,
        name: &str,
        bytes: &[u8],
        settings: ActionSettings,
        cache: Option<Arc<dyn ArtifactCache>>,
    ) -> Result<Prepared, LoadError> {
        // Before the name is kept anywhere, even as a metrics label.
        check_name(name)?;
        let shared = self.outbound_of(name);
        let plugin = self
            .inner
            .loader
            .prepare(name, bytes, settings, cache, shared)
            .await?;
        Ok(Prepared(Arc::new(plugin)))
    }

    /// Serves a prepared action under its name, replacing the version that was
    /// serving; calls already running finish on the version they started with.
    pub fn install(&self, prepared: Prepared) {
        let name = prepared.name().to_owned();
        self.write_actions().insert(name, prepared);
    }

    /// Outbound requests so far, by action and result (`ok`, `denied`, ...).
    pub fn outbound_counts(&self) -> Vec<(String, &'static str, u64)> {
        let mut outbound = self
            .inner
            .outbound
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        forget_unused(&mut outbound);
        let mut counts: Vec<_> = outbound
            .iter()
            .flat_map(|(name, c)| {
                c.snapshot()
                    .into_iter()
                    .map(move |(result, n)| (name.clone(), result, n))
            })
            .collect();
        counts.sort();
        counts
    }

    /// What the versions of the action `name` share of their outbound
    /// requests.
    fn outbound_of(&self, name: &str) -> Arc<ActionOutbound> {
        let mut outbound = self
            .inner
            .outbound
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        forget_unused(&mut outbound);
        Arc::clone(outbound.entry(name.to_owned()).or_default())
    }

    /// Reads a component's manifest, imports and exports without loading it.
    pub async fn inspect(&self, bytes: impl AsRef<[u8]>) -> Result<Inspection, LoadError> {
        let (manifest, interface) = self.inner.loader.inspect(bytes.as_ref()).await?;
        Ok(Inspection {
            manifest,
            interface,
        })
    }

    /// Runs the action `name` once, in a fresh instance, with the caller's
    /// context and the input attributes (a JSON object keyed by name).
    pub async fn invoke(
        &self,
        name: &str,
        context: CallContext,
        input: &Map<String, Json>,
    ) -> Result<Invocation, InvokeError> {
        let prepared = self.read_actions().get(name).cloned().ok_or_else(|| {
            InvokeError::new(
                ErrorKind::UnknownAction,
                format!("no action is loaded as `{name}`"),
            )
        })?;
        prepared.invoke(context, input).await
    }

    /// The manifest of the action `name`, if it is loaded.
    pub fn manifest(&self, name: &str) -> Option<Arc<Manifest>> {
        self.read_actions()
            .get(name)
            .map(|prepared| Arc::clone(prepared.manifest()))
    }

    /// Whether finished instances are reset by rewriting just the pages they
    /// dirtied, found with the kernel's page scan. False on kernels older than
    /// Linux 6.7, and while swap is on, when the scan could miss a swapped-out
    /// page and leak one call's data into the next. Calls are slower without
    /// it (BENCHMARKS.md); with swap, turning it off and restarting the host
    /// restores the fast reset.
    pub fn resets_by_page_scan(&self) -> bool {
        self.inner.page_scan
    }

    /// The names of the loaded actions, sorted.
    pub fn actions(&self) -> Vec<String> {
        let mut names: Vec<_> = self.read_actions().keys().cloned().collect();
        names.sort();
        names
    }

    /// Unloads the action `name`; calls already running finish. Returns whether
    /// it was loaded.
    pub fn unload(&self, name: &str) -> bool {
        self.write_actions().remove(name).is_some()
    }

    fn read_actions(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Prepared>> {
        // The map holds only Arcs, so it is whole even if a writer panicked.
        self.inner
            .actions
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write_actions(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Prepared>> {
        self.inner
            .actions
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Forgets the outbound entries of names that nothing uses any longer, so
/// that failed loads under many names do not grow the map or the metrics.
fn forget_unused(outbound: &mut HashMap<String, Arc<ActionOutbound>>) {
    outbound.retain(|_, shared| !shared.unused());
}
