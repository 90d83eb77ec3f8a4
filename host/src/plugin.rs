//! One loaded version of an action: what the load pipeline (`load.rs`)
//! produces and what an invocation (`invoke.rs`) runs.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use wasmtime::component::ComponentExportIndex;

use crate::bindings::PluginPre;
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
    pub(crate) starts_from: StartsFrom,
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

/// Where an action's calls start (see [`HostConfig::snapshot_after_describe`](crate::HostConfig::snapshot_after_describe)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
