//! The embedding API: one engine and linker, and the loaded actions by name.

use anyhow::{Context as _, Result};
use serde_json::{Map, Value as Json};
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Engine, PoolingAllocationConfig};

use crate::bindings::Plugin as PluginWorld;
use crate::context::CallContext;
use crate::engine::{self, EpochTicker};
use crate::error::{ErrorKind, InvokeError, LoadError};
use crate::invoke::{self, Invocation};
use crate::manifest::Manifest;
use crate::outbound::{Network, Outbound, OutboundCounters};
use crate::plugin::{self, Interface, Plugin};
use crate::preinit;
use crate::settings::{ActionSettings, HostConfig, HttpLimits, Limits, Secret};
use crate::state::State;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// A host for actions. Cheap to clone: clones share the engine and the actions.
#[derive(Clone)]
pub struct Host {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<State>,
    /// The linker of the run that is snapshotted after `describe()`: the
    /// same, but counting what the guest draws from `wasi:random`.
    snapshot_linker: Linker<State>,
    config: HostConfig,
    actions: RwLock<HashMap<String, Arc<Plugin>>>,
    /// How many components this host has compiled (not loaded from a cache).
    compilations: AtomicU64,
    /// How many cached entries this host refused because their seal did not hold.
    rejected_artifacts: AtomicU64,
    counters: std::sync::Mutex<HashMap<String, Arc<OutboundCounters>>>,
    /// TLS and name resolution for every action's outbound requests.
    network: Arc<Network>,
    /// Whether finished instances are reset with the kernel's page scan.
    page_scan: bool,
    _ticker: EpochTicker,
}

/// A loaded action not yet serving; see [`Host::prepare`].
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
}

/// Where an action's calls start (see [`HostConfig::snapshot_after_describe`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "from", rename_all = "kebab-case")]
pub enum StartsFrom {
    /// The state its `describe()` left, snapshotted at load.
    Describe,
    /// The component as built, and why: snapshots are off, or one could not
    /// be taken safely.
    Build {
        /// Why not from a snapshot.
        why: String,
    },
}

/// Keeps compiled components between runs, so a restart loads without
/// recompiling. Keys name the component's SHA-256 and the engine's
/// compatibility hash, so an artifact is only ever read by an engine that can
/// run it. What the host stores is sealed with its
/// [`HostConfig::artifact_key`] and loaded only when the seal holds, so a
/// cache that others can write to cannot make the host run their code.
pub trait ArtifactCache: Send + Sync {
    /// The artifact stored under `key`, if any.
    fn get(&self, key: &str) -> Option<Vec<u8>>;
    /// Stores an artifact; a failure only costs a later recompilation.
    fn put(&self, key: &str, artifact: &[u8]);
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
                engine,
                linker,
                snapshot_linker,
                config,
                actions: RwLock::new(HashMap::new()),
                compilations: AtomicU64::new(0),
                rejected_artifacts: AtomicU64::new(0),
                counters: std::sync::Mutex::new(HashMap::new()),
                network,
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
        self.inner.compilations.load(Ordering::Relaxed)
    }

    /// How many cached artifacts this host refused to load because they were
    /// not as it had stored them (see [`HostConfig::artifact_key`]).
    pub fn rejected_artifacts(&self) -> u64 {
        self.inner.rejected_artifacts.load(Ordering::Relaxed)
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
    /// pre-instantiate, describe) without serving the result yet, so a caller
    /// can persist it first and then [`Host::install`] it.
    pub async fn prepare(
        &self,
        name: &str,
        bytes: &[u8],
        mut settings: ActionSettings,
        cache: Option<Arc<dyn ArtifactCache>>,
    ) -> Result<Prepared, LoadError> {
        plugin::check_name(name)?;
        // Settings first: a mistake in them costs no compilation.
        let limits = self.check_limits(settings.limits)?;
        check_secrets(&mut settings.secrets)?;
        let (component, starts_from) = self.compile(bytes, cache, Start::AfterDescribe).await?;
        let pre = plugin::link(&self.inner.engine, &self.inner.linker, &component)?;
        let run = plugin::run_index(&component)?;
        let counters = self.counters(name);
        let outbound = Arc::new(
            Outbound::new(
                settings.grants,
                settings.secrets,
                settings.http,
                counters,
                Arc::clone(&self.inner.network),
            )
            .map_err(LoadError::Host)?,
        );
        let config = Arc::new(settings.config);
        let manifest = Arc::new(
            plugin::describe(&self.inner.engine, &pre, &limits, &config, &outbound).await?,
        );
        let loaded = Plugin {
            name: name.to_owned(),
            manifest: Arc::clone(&manifest),
            starts_from,
            pre,
            run,
            limits,
            config,
            outbound,
        };
        Ok(Prepared(Arc::new(loaded)))
    }

    /// Serves a prepared action under its name, replacing the version that was
    /// serving; calls already running finish on the version they started with.
    pub fn install(&self, prepared: Prepared) {
        let plugin = prepared.0;
        self.write_actions().insert(plugin.name.clone(), plugin);
    }

    /// Outbound requests so far, by action and result (`ok`, `denied`, ...).
    pub fn outbound_counts(&self) -> Vec<(String, &'static str, u64)> {
        let counters = self
            .inner
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut counts: Vec<_> = counters
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

    /// The outbound counters of the action `name`, shared by all its versions.
    fn counters(&self, name: &str) -> Arc<OutboundCounters> {
        let mut counters = self
            .inner
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        Arc::clone(counters.entry(name.to_owned()).or_default())
    }

    /// Reads a component's manifest, imports and exports without loading it.
    pub async fn inspect(&self, bytes: impl AsRef<[u8]>) -> Result<Inspection, LoadError> {
        let (component, _) = self.compile(bytes.as_ref(), None, Start::AsBuilt).await?;
        let interface = plugin::interface(&self.inner.engine, &component);
        let pre = plugin::link(&self.inner.engine, &self.inner.linker, &component)?;
        let limits = self.inner.config.default_limits;
        let outbound = Arc::new(
            Outbound::new(
                Vec::new(),
                Vec::new(),
                HttpLimits::default(),
                Arc::default(),
                Arc::clone(&self.inner.network),
            )
            .map_err(LoadError::Host)?,
        );
        let manifest = plugin::describe(
            &self.inner.engine,
            &pre,
            &limits,
            &Arc::new(BTreeMap::new()),
            &outbound,
        )
        .await?;
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
        let plugin = self.read_actions().get(name).cloned().ok_or_else(|| {
            InvokeError::new(
                ErrorKind::UnknownAction,
                format!("no action is loaded as `{name}`"),
            )
        })?;
        invoke::run(&plugin, context, input).await
    }

    /// The manifest of the action `name`, if it is loaded.
    pub fn manifest(&self, name: &str) -> Option<Arc<Manifest>> {
        self.read_actions()
            .get(name)
            .map(|plugin| Arc::clone(&plugin.manifest))
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

    /// The compiled component for `bytes`, starting as `start` says (subject
    /// to [`HostConfig::snapshot_after_describe`]), and where its calls start:
    /// from `cache` when it holds it, else compiled and stored there.
    async fn compile(
        &self,
        bytes: &[u8],
        cache: Option<Arc<dyn ArtifactCache>>,
        start: Start,
    ) -> Result<(wasmtime::component::Component, StartsFrom), LoadError> {
        plugin::check_header(bytes)?;
        let snapshot = start == Start::AfterDescribe && self.inner.config.snapshot_after_describe;
        let key = cache
            .as_ref()
            .map(|_| artifact_key(&self.inner.engine, bytes, snapshot));
        let off = || StartsFrom::Build {
            why: "snapshots after describe are off".into(),
        };
        if let (Some(cache), Some(key)) = (&cache, &key) {
            let (inner, cache, key) = (Arc::clone(&self.inner), Arc::clone(cache), key.clone());
            // Reading a cached artifact is file I/O: off the async workers.
            let cached = tokio::task::spawn_blocking(move || {
                let sealed = cache.get(&key)?;
                let seal = &inner.config.artifact_key;
                let Some(artifact) = seal.open(&key, &sealed) else {
                    // Native code that is not as this host stored it is never
                    // loaded: the component is compiled again.
                    inner.rejected_artifacts.fetch_add(1, Ordering::Relaxed);
                    return None;
                };
                let component = plugin::deserialize(&inner.engine, artifact)?;
                let skipped_key = skipped_key(&key);
                let skipped = match cache.get(&skipped_key) {
                    None => None,
                    Some(sealed) => Some(seal.open(&skipped_key, &sealed)?.to_vec()),
                };
                Some((component, skipped))
            })
            .await
            .ok()
            .flatten();
            if let Some((component, skipped)) = cached {
                let starts_from = match skipped {
                    _ if !snapshot => off(),
                    Some(why) => StartsFrom::Build {
                        why: String::from_utf8_lossy(&why).into_owned(),
                    },
                    None => StartsFrom::Describe,
                };
                return Ok((component, starts_from));
            }
        }
        let mut cache = cache;
        let mut skipped = None;
        let (source, starts_from) = if snapshot {
            match self.snapshot_after_describe(bytes).await {
                Ok(snapshot) => (snapshot, StartsFrom::Describe),
                Err(not) => {
                    if not.transient {
                        // Kept, it would stand for good; the next load tries again.
                        cache = None;
                    }
                    skipped = Some(not.why.clone());
                    (bytes.to_vec(), StartsFrom::Build { why: not.why })
                }
            }
        } else {
            (bytes.to_vec(), off())
        };
        let inner = Arc::clone(&self.inner);
        // Compiling a large component takes seconds: off the async workers.
        tokio::task::spawn_blocking(move || {
            let component = plugin::compile(&inner.engine, &source)?;
            inner.compilations.fetch_add(1, Ordering::Relaxed);
            if let (Some(cache), Some(key)) = (&cache, &key)
                && let Ok(artifact) = component.serialize()
            {
                // The reason first: an artifact without one reads as a snapshot.
                let seal = &inner.config.artifact_key;
                if let Some(why) = &skipped {
                    let skipped_key = skipped_key(key);
                    cache.put(&skipped_key, &seal.seal(&skipped_key, why.as_bytes()));
                }
                cache.put(key, &seal.seal(key, &artifact));
            }
            Ok((component, starts_from))
        })
        .await
        .map_err(|e| LoadError::Host(anyhow::anyhow!("the compiler thread failed: {e}")))?
    }

    /// `bytes` rewritten to start after `describe()`, or why that cannot be
    /// done safely (see the `preinit` module).
    async fn snapshot_after_describe(&self, bytes: &[u8]) -> Result<Vec<u8>, preinit::Skipped> {
        let outbound = Outbound::new(
            Vec::new(),
            Vec::new(),
            HttpLimits::default(),
            Arc::default(),
            Arc::clone(&self.inner.network),
        )
        .map_err(|e| preinit::Skipped {
            why: format!("the host could not set up the run: {e:#}"),
            transient: true,
        })?;
        preinit::snapshot_after_describe(
            &self.inner.engine,
            &self.inner.snapshot_linker,
            bytes,
            &self.inner.config.default_limits,
            Arc::new(outbound),
        )
        .await
    }

    fn check_limits(&self, limits: Option<Limits>) -> Result<Limits, LoadError> {
        let limits = limits.unwrap_or(self.inner.config.default_limits);
        let max = self.inner.config.max_memory_bytes;
        if limits.memory_bytes > max {
            return Err(LoadError::Settings(format!(
                "a memory limit of {} MiB is above this host's maximum of {} MiB",
                limits.memory_bytes >> 20,
                max >> 20
            )));
        }
        if limits.deadline.is_zero() || limits.deadline.as_millis() > u128::from(u32::MAX) {
            return Err(LoadError::Settings(
                "the deadline must be between 1 ms and 49 days".into(),
            ));
        }
        Ok(limits)
    }

    fn read_actions(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Plugin>>> {
        // The map holds only Arcs, so it is whole even if a writer panicked.
        self.inner
            .actions
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write_actions(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Plugin>>> {
        self.inner
            .actions
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Checks each secret: a plain name (it appears in `{{secret:NAME}}`
/// placeholders), a value long enough to redact safely, at least one grant,
/// and header names it may fill that the action may set; the header names are
/// made lower case.
fn check_secrets(secrets: &mut [Secret]) -> Result<(), LoadError> {
    for secret in secrets {
        let name = &secret.name;
        let plain = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !plain {
            return Err(LoadError::Settings(format!(
                "invalid secret name `{name}`: use letters, digits, '_' and '-'"
            )));
        }
        if secret.value.len() < Secret::MIN_VALUE_LEN {
            return Err(LoadError::Settings(format!(
                "the secret `{name}` is shorter than {} bytes: the host redacts a secret's value \
                 wherever a response repeats it, and a value that short would also match \
                 ordinary text",
                Secret::MIN_VALUE_LEN
            )));
        }
        if secret.allow.is_empty() {
            return Err(LoadError::Settings(format!(
                "the secret `{name}` is bound to no destination: give it at least one grant"
            )));
        }
        if secret.headers.is_empty() {
            return Err(LoadError::Settings(format!(
                "the secret `{name}` may fill no header: name at least one, such as authorization"
            )));
        }
        for header in &mut secret.headers {
            let valid = !header.is_empty()
                && header
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
            if !valid || crate::outbound::is_host_set_header(header) {
                return Err(LoadError::Settings(format!(
                    "the secret `{name}` names `{header}`, which is not a header an action may \
                     set"
                )));
            }
            header.make_ascii_lowercase();
        }
    }
    Ok(())
}

/// The cache key of a component for this engine: its SHA-256, the engine's
/// compatibility hash, and whether it was snapshotted after `describe()`.
fn artifact_key(engine: &Engine, bytes: &[u8], snapshot: bool) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    // A new name whenever what preinit.rs or compact.rs produce changes, so
    // that artifacts of the old form are not served.
    let start = if snapshot { "described.2" } else { "built" };
    format!("{}-{:016x}-{start}", sha256_hex(bytes), hasher.finish())
}

/// Where the reason a snapshot was not taken is cached, beside the artifact.
fn skipped_key(key: &str) -> String {
    format!("{key}.skipped")
}

/// Where a compiled component's calls are to start.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Start {
    /// From the component as built.
    AsBuilt,
    /// From the state `describe()` leaves, when the host is configured so.
    AfterDescribe,
}

/// The SHA-256 of `bytes`, in lower-case hex: how the store names versions.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
