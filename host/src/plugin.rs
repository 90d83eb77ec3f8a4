//! Bytes -> a validated, compiled, pre-instantiated action with its manifest.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use wasmtime::Engine;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, ComponentExportIndex, Linker};

use crate::bindings::PluginPre;
use crate::error::LoadError;
use crate::invoke;
use crate::log::LogSink;
use crate::manifest::Manifest;
use crate::outbound::Outbound;
use crate::settings::Limits;
use crate::state::State;

/// The export every action must have.
pub(crate) const ACTION_EXPORT: &str = "webhook:action/action@0.1.0";

/// One loaded version of an action: compiled once, instantiated per call.
pub(crate) struct Plugin {
    pub(crate) name: String,
    pub(crate) manifest: Arc<Manifest>,
    pub(crate) starts_from: crate::host::StartsFrom,
    pub(crate) pre: PluginPre<State>,
    /// The `run` function, found once so a call need not look it up by name.
    pub(crate) run: ComponentExportIndex,
    pub(crate) limits: Limits,
    pub(crate) config: Arc<BTreeMap<String, String>>,
    pub(crate) outbound: Arc<Outbound>,
}

/// What a component imports and exports, by name.
#[derive(Debug, Clone, Serialize)]
pub struct Interface {
    /// Imported items, for example `webhook:action/log@0.1.0 (instance: log)`.
    pub imports: Vec<String>,
    /// Exported items, for example `webhook:action/action@0.1.0 (instance: describe, run)`.
    pub exports: Vec<String>,
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
    let mut store = invoke::new_store(
        engine,
        limits,
        Arc::clone(config),
        Arc::clone(outbound),
        log.clone(),
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
            let error = invoke::trap_error(&store, trap, log.finish(), limits, "manifest");
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

/// Checks an action name: it appears in URLs, file names and metrics labels.
pub(crate) fn check_name(name: &str) -> Result<(), LoadError> {
    let valid = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(LoadError::InvalidName(name.to_owned()))
    }
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
