//! The load pipeline: bytes -> a validated, snapshotted, compacted, compiled
//! and pre-instantiated action with its manifest, in that order, with the
//! compiled artifact kept in a cache when the caller gives one.
//!
//! [`Loader::prepare`] is the whole path; each step below is a function of
//! its own. Settings are checked first (a mistake costs no compilation), then
//! the header; the snapshot after `describe()` (`preinit.rs`, `compact.rs`)
//! comes before compiling, so the compiled artifact is the snapshot's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime::Engine;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, ComponentExportIndex, Linker};

use crate::bindings::PluginPre;
use crate::cache::{ArtifactCache, CacheEntry, EngineKey};
use crate::error::LoadError;
use crate::log::LogSink;
use crate::manifest::Manifest;
use crate::outbound::{ActionOutbound, Network, Outbound};
use crate::plugin::{ACTION_EXPORT, Interface, Plugin, StartsFrom};
use crate::preinit;
use crate::sandbox;
use crate::settings::{ActionSettings, HostConfig, HttpLimits, Limits, Secret};
use crate::state::State;

/// What the pipeline needs of the host: the engine, the linkers, the
/// configuration and the network of outbound requests.
pub(crate) struct Loader {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<State>,
    /// The linker of the run that is snapshotted after `describe()`: the
    /// same, but counting what the guest draws from `wasi:random`.
    pub(crate) snapshot_linker: Linker<State>,
    pub(crate) config: HostConfig,
    /// TLS and name resolution for every action's outbound requests.
    pub(crate) network: Arc<Network>,
    /// How many components this loader has compiled (not read from a cache).
    pub(crate) compilations: AtomicU64,
    /// How many cached entries it refused because their seal did not hold.
    pub(crate) rejected_artifacts: AtomicU64,
}

/// Where a compiled component's calls are to start.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// From the component as built.
    AsBuilt,
    /// From the state `describe()` leaves, when the host is configured so.
    AfterDescribe,
}

impl Loader {
    /// The whole pipeline: settings checked, the component compiled (or read
    /// from `cache`), linked against the contract and described. `name` is
    /// checked by the caller ([`Host::prepare`](crate::Host::prepare)), before it
    /// keeps anything under it.
    pub(crate) async fn prepare(
        self: &Arc<Self>,
        name: &str,
        bytes: &[u8],
        mut settings: ActionSettings,
        cache: Option<Arc<dyn ArtifactCache>>,
        shared: Arc<ActionOutbound>,
    ) -> Result<Plugin, LoadError> {
        // Settings first: a mistake in them costs no compilation.
        let limits = self.check_limits(settings.limits)?;
        check_secrets(&mut settings.secrets)?;
        let (component, starts_from) = self.compile(bytes, cache, Start::AfterDescribe).await?;
        let pre = link(&self.engine, &self.linker, &component)?;
        let run = run_index(&component)?;
        let outbound = Arc::new(
            Outbound::new(
                settings.grants,
                settings.secrets,
                settings.http,
                shared,
                Arc::clone(&self.network),
            )
            .map_err(LoadError::Host)?,
        );
        let config = Arc::new(settings.config);
        // `describe` runs at every load: uploads, settings changes, restores,
        // each replica following a change and each replay's candidate. With
        // the action's grants it could spend its secrets unrecorded there, so
        // every request it makes is denied, as in the snapshot's run.
        let denied = Arc::new(self.bare_outbound().map_err(LoadError::Host)?);
        let manifest = Arc::new(describe(&self.engine, &pre, &limits, &config, &denied).await?);
        Ok(Plugin {
            name: name.to_owned(),
            manifest,
            starts_from,
            pre,
            run,
            limits,
            config,
            outbound,
        })
    }

    /// A component's manifest, imports and exports, without keeping it.
    pub(crate) async fn inspect(
        self: &Arc<Self>,
        bytes: &[u8],
    ) -> Result<(Manifest, Interface), LoadError> {
        let (component, _) = self.compile(bytes, None, Start::AsBuilt).await?;
        let interface = interface(&self.engine, &component);
        let pre = link(&self.engine, &self.linker, &component)?;
        let limits = self.config.default_limits;
        let outbound = Arc::new(self.bare_outbound().map_err(LoadError::Host)?);
        let manifest = describe(
            &self.engine,
            &pre,
            &limits,
            &Arc::new(BTreeMap::new()),
            &outbound,
        )
        .await?;
        Ok((manifest, interface))
    }

    /// An outbound gate with no grants: every request is denied.
    fn bare_outbound(&self) -> anyhow::Result<Outbound> {
        Outbound::new(
            Vec::new(),
            Vec::new(),
            HttpLimits::default(),
            Arc::default(),
            Arc::clone(&self.network),
        )
    }

    /// The compiled component for `bytes`, starting as `start` says (subject
    /// to [`HostConfig::snapshot_after_describe`]), and where its calls start:
    /// from `cache` when it holds it, else compiled and stored there.
    pub(crate) async fn compile(
        self: &Arc<Self>,
        bytes: &[u8],
        cache: Option<Arc<dyn ArtifactCache>>,
        start: Start,
    ) -> Result<(Component, StartsFrom), LoadError> {
        check_header(bytes)?;
        let snapshot = start == Start::AfterDescribe && self.config.snapshot_after_describe;
        let key = cache
            .as_ref()
            .map(|_| EngineKey::new(&self.engine, bytes, snapshot));
        let off = || StartsFrom::Build {
            why: "snapshots after describe are off".into(),
        };
        if let (Some(cache), Some(key)) = (&cache, &key) {
            let (loader, cache, key) = (Arc::clone(self), Arc::clone(cache), key.clone());
            // Reading a cached artifact is I/O: off the async workers.
            let cached = tokio::task::spawn_blocking(move || loader.read_cached(&*cache, &key))
                .await
                .ok()
                .flatten();
            if let Some((component, note)) = cached {
                let starts_from = match note {
                    _ if !snapshot => off(),
                    Some(why) => StartsFrom::Build { why },
                    None => StartsFrom::Describe,
                };
                return Ok((component, starts_from));
            }
        }
        let mut cache = cache;
        let mut note = None;
        let (source, starts_from) = if snapshot {
            tracing::info!("snapshotting after describe()");
            match self.snapshot_after_describe(bytes).await {
                Ok(snapshot) => (snapshot, StartsFrom::Describe),
                Err(not) => {
                    if not.transient {
                        // Kept, it would stand for good; the next load tries again.
                        cache = None;
                    }
                    note = Some(not.why.clone());
                    (bytes.to_vec(), StartsFrom::Build { why: not.why })
                }
            }
        } else {
            (bytes.to_vec(), off())
        };
        let loader = Arc::clone(self);
        tracing::info!("compiling {} KiB", source.len().div_ceil(1024));
        // Compiling a large component takes seconds: off the async workers.
        tokio::task::spawn_blocking(move || {
            let component = compile(&loader.engine, &source)?;
            loader.compilations.fetch_add(1, Ordering::Relaxed);
            if let (Some(cache), Some(key)) = (&cache, &key)
                && let Ok(artifact) = component.serialize()
            {
                // The note first: an artifact without one reads as a snapshot.
                let seal = &loader.config.artifact_key;
                if let Some(why) = &note {
                    let label = key.seal_label(CacheEntry::SnapshotNote);
                    cache.put(
                        key,
                        CacheEntry::SnapshotNote,
                        &seal.seal(&label, why.as_bytes()),
                    );
                }
                let label = key.seal_label(CacheEntry::Artifact);
                cache.put(key, CacheEntry::Artifact, &seal.seal(&label, &artifact));
            }
            Ok((component, starts_from))
        })
        .await
        .map_err(|e| LoadError::Host(anyhow::anyhow!("the compiler thread failed: {e}")))?
    }

    /// The component cached under `key` with its snapshot note, if both are
    /// there and sealed by this host.
    fn read_cached(
        &self,
        cache: &dyn ArtifactCache,
        key: &EngineKey,
    ) -> Option<(Component, Option<String>)> {
        let seal = &self.config.artifact_key;
        let sealed = cache.get(key, CacheEntry::Artifact)?;
        let Some(artifact) = seal.open(&key.seal_label(CacheEntry::Artifact), &sealed) else {
            // Native code that is not as this host stored it is never
            // loaded: the component is compiled again.
            self.rejected_artifacts.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let component = deserialize(&self.engine, artifact)?;
        let note = match cache.get(key, CacheEntry::SnapshotNote) {
            None => None,
            Some(sealed) => {
                let why = seal.open(&key.seal_label(CacheEntry::SnapshotNote), &sealed)?;
                Some(String::from_utf8_lossy(why).into_owned())
            }
        };
        Some((component, note))
    }

    /// `bytes` rewritten to start after `describe()`, or why that cannot be
    /// done safely (see the `preinit` module).
    async fn snapshot_after_describe(&self, bytes: &[u8]) -> Result<Vec<u8>, preinit::Skipped> {
        let outbound = self.bare_outbound().map_err(|e| preinit::Skipped {
            why: format!("the host could not set up the run: {e:#}"),
            transient: true,
        })?;
        preinit::snapshot_after_describe(
            &self.engine,
            &self.snapshot_linker,
            bytes,
            &self.config.default_limits,
            Arc::new(outbound),
        )
        .await
    }

    fn check_limits(&self, limits: Option<Limits>) -> Result<Limits, LoadError> {
        let limits = limits.unwrap_or(self.config.default_limits);
        let max = self.config.max_memory_bytes;
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
}

/// Refuses bytes that are not a component, naming what they are instead.
pub(crate) fn check_header(bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::NotAComponent(
            "the file does not start with the WebAssembly magic bytes `\\0asm`".into(),
        ));
    }
    // Bytes 4..8 are the version and layer: layer 0 is a core module, 1 a component.
    if bytes[6..8] == [0, 0] {
        return Err(LoadError::NotAComponent(
            "this is a core WebAssembly module; build the action for the wasm32-wasip2 target \
             (or wrap the module with `wasm-tools component new`)"
                .into(),
        ));
    }
    Ok(())
}

/// Compiles a component. Slow for large components: call it off the async workers.
pub(crate) fn compile(engine: &Engine, bytes: &[u8]) -> Result<Component, LoadError> {
    check_header(bytes)?;
    Component::new(engine, bytes).map_err(|e| {
        let why = format!("{e:#}");
        // The pooling allocator checks a component against its per-instance
        // maxima (the share of `engine::SHARE`) when the component is made.
        if why.contains("exceeds the configured maximum")
            || why.contains("does not fit in pooling allocator requirements")
        {
            let share = crate::engine::SHARE;
            LoadError::Share(format!(
                "{why}; each call of an action may take at most {} core instances, {} memories \
                 and {} tables, so that no action can use up what the others' calls need",
                share.core_instances, share.memories, share.tables
            ))
        } else {
            LoadError::NotAComponent(why)
        }
    })
}

/// Reads a component compiled earlier by an engine of the same configuration,
/// or `None` when the artifact is unusable (the caller then compiles).
pub(crate) fn deserialize(engine: &Engine, artifact: &[u8]) -> Option<Component> {
    // SAFETY: wasmtime requires that the bytes come from `Component::serialize`
    // and were not tampered with. The host only reads artifacts from its own
    // cache, written by `serialize` under a key that includes this engine's
    // compatibility hash; wasmtime also checks the header and the engine
    // settings and refuses a mismatch with an error.
    unsafe { Component::deserialize(engine, artifact) }.ok()
}

/// Checks the component against the contract and pre-instantiates it: it must
/// export `action` with the contract's types and import nothing the host lacks.
pub(crate) fn link(
    engine: &Engine,
    linker: &Linker<State>,
    component: &Component,
) -> Result<PluginPre<State>, LoadError> {
    let pre = linker.instantiate_pre(component).map_err(|e| {
        LoadError::Contract(format!(
            "it imports something the host does not provide: {e:#}"
        ))
    })?;
    let ty = component.component_type();
    if ty.get_export(engine, ACTION_EXPORT).is_none() {
        let exports: Vec<_> = ty
            .exports(engine)
            .map(|(name, _)| format!("`{name}`"))
            .collect();
        let found = if exports.is_empty() {
            "nothing".to_string()
        } else {
            exports.join(", ")
        };
        return Err(LoadError::Contract(format!(
            "it does not export `{ACTION_EXPORT}` (it exports {found}); build it against wit/action.wit, world `plugin`"
        )));
    }
    PluginPre::new(pre).map_err(|e| {
        LoadError::Contract(format!(
            "its `{ACTION_EXPORT}` export does not match the contract: {e:#}"
        ))
    })
}

/// The index of the `run` function of a component that passed [`link`].
pub(crate) fn run_index(component: &Component) -> Result<ComponentExportIndex, LoadError> {
    let action = component
        .get_export_index(None, ACTION_EXPORT)
        .ok_or_else(|| LoadError::Contract(format!("it does not export `{ACTION_EXPORT}`")))?;
    component
        .get_export_index(Some(&action), "run")
        .ok_or_else(|| LoadError::Contract(format!("`{ACTION_EXPORT}` has no `run` function")))
}

/// Calls `describe` in a fresh instance and checks the manifest it returns.
pub(crate) async fn describe(
    engine: &Engine,
    pre: &PluginPre<State>,
    limits: &Limits,
    config: &Arc<BTreeMap<String, String>>,
    outbound: &Arc<Outbound>,
) -> Result<Manifest, LoadError> {
    let log = LogSink::new(limits.log_bytes);
    let mut store = sandbox::new_store(
        engine,
        limits,
        Arc::clone(config),
        Arc::clone(outbound),
        log.clone(),
        Arc::default(),
    );
    let described = tokio::time::timeout(limits.deadline, async {
        let plugin = pre.instantiate_async(&mut store).await?;
        plugin
            .webhook_action_action()
            .call_describe(&mut store)
            .await
    })
    .await;
    let raw = match described {
        Ok(Ok(raw)) => raw,
        Ok(Err(trap)) => {
            let error = sandbox::trap_error(&store, trap, log.finish(), limits, "manifest");
            return Err(LoadError::Manifest(format!(
                "`describe` failed: {}",
                error.message
            )));
        }
        Err(_) => {
            return Err(LoadError::Manifest(format!(
                "`describe` did not return within {} ms",
                limits.deadline.as_millis()
            )));
        }
    };
    Manifest::from_wit(raw).map_err(LoadError::Manifest)
}

/// Lists a component's imports and exports.
pub(crate) fn interface(engine: &Engine, component: &Component) -> Interface {
    let ty = component.component_type();
    let describe = |(name, item): (&str, ComponentItem)| match item {
        ComponentItem::ComponentInstance(instance) => {
            // Name the functions: they are what an import must provide.
            let functions: Vec<_> = instance
                .exports(engine)
                .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentFunc(_)))
                .map(|(function, _)| function.to_owned())
                .collect();
            format!("{name} (instance: {})", functions.join(", "))
        }
        ComponentItem::ComponentFunc(_) | ComponentItem::CoreFunc(_) => {
            format!("{name} (function)")
        }
        ComponentItem::Module(_) => format!("{name} (module)"),
        ComponentItem::Component(_) => format!("{name} (component)"),
        ComponentItem::Type(_) => format!("{name} (type)"),
        ComponentItem::Resource(_) => format!("{name} (resource)"),
    };
    Interface {
        imports: ty
            .imports(engine)
            .map(|(name, item)| describe((name, item.ty)))
            .collect(),
        exports: ty
            .exports(engine)
            .map(|(name, item)| describe((name, item.ty)))
            .collect(),
    }
}

/// Checks an action name: 1 to 64 characters of `a-z`, `0-9`, `-` and `_`.
/// It appears in URLs, file names and metrics labels, so an embedder that
/// keys anything by name can rely on this being the whole rule.
pub fn check_name(name: &str) -> Result<(), LoadError> {
    let valid = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        // A name may come from a URL of any length: clipped, not echoed.
        Err(LoadError::InvalidName(crate::log::clip(name).into_owned()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_without_the_magic_are_not_webassembly() {
        let err = check_header(b"hello world").unwrap_err().to_string();
        assert!(err.contains("magic bytes"), "{err}");
        assert!(check_header(b"").is_err());
    }

    #[test]
    fn a_core_module_is_named_as_such() {
        let err = check_header(b"\0asm\x01\0\0\0").unwrap_err().to_string();
        assert!(err.contains("core WebAssembly module"), "{err}");
    }

    #[test]
    fn a_component_header_passes() {
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
    }

    #[test]
    fn action_names_are_url_and_file_safe() {
        assert!(check_name("order-lookup_2").is_ok());
        for bad in ["", "Greeting", "a/b", "a b", "..", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
