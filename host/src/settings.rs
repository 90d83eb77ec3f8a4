//! The host's configuration and each action's settings, with the defaults of
//! the design.

use std::collections::BTreeMap;
use std::time::Duration;

/// Bounds on one invocation of an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time before the invocation ends as `timeout` [5 s].
    pub deadline: Duration,
    /// Linear memory the action may grow to [64 MiB].
    pub memory_bytes: usize,
    /// Bytes of log (the `log` import, stdout and stderr) kept per invocation [16 KiB].
    pub log_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            deadline: Duration::from_secs(5),
            memory_bytes: 64 << 20,
            log_bytes: 16 << 10,
        }
    }
}

/// How the host is set up.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// The limits of actions loaded without their own.
    pub default_limits: Limits,
    /// The most linear memory any action may be given; the pooling allocator
    /// reserves slots of this size [256 MiB].
    pub max_memory_bytes: usize,
    /// How many action instances may exist at once across all actions [256].
    pub pool_size: u32,
}

impl Default for HostConfig {
    fn default() -> HostConfig {
        HostConfig {
            default_limits: Limits::default(),
            max_memory_bytes: 256 << 20,
            pool_size: 256,
        }
    }
}

/// What the operator sets for one action.
#[derive(Debug, Clone, Default)]
pub struct ActionSettings {
    /// Limits for this action; the host's defaults when `None`.
    pub limits: Option<Limits>,
    /// Values the action reads through the `config` import.
    pub config: BTreeMap<String, String>,
}
