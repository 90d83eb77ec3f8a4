//! The host's configuration and each action's settings, with the defaults of
//! the design.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::policy::Grant;
use crate::resolve::Resolver;
use crate::sealed::ArtifactKey;

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
    /// How many action instances may exist at once across all actions \[256\].
    pub pool_size: u32,
    /// Root certificates (PEM) that outbound HTTPS trusts besides the usual
    /// public roots: for APIs behind a private certificate authority.
    pub tls_roots_pem: Option<String>,
    /// Whether every call starts from the state the action's `describe()`
    /// leaves, snapshotted at load, rather than from the component as built
    /// [true]. It spares language runtimes their first-call set-up on every
    /// call; see BENCHMARKS.md.
    pub snapshot_after_describe: bool,
    /// How outbound requests look up host names [the system's resolver].
    /// Every address it returns is checked before a connection is made.
    pub resolver: Resolver,
    /// The key that seals what the host stores in an artifact cache [a new
    /// random key]. Give the same key to every run (and every replica) that
    /// shares a cache, or each compiles again.
    pub artifact_key: ArtifactKey,
}

impl Default for HostConfig {
    fn default() -> HostConfig {
        HostConfig {
            default_limits: Limits::default(),
            max_memory_bytes: 256 << 20,
            pool_size: 256,
            tls_roots_pem: None,
            snapshot_after_describe: true,
            resolver: Resolver::default(),
            artifact_key: ArtifactKey::default(),
        }
    }
}

/// Bounds on an action's outbound HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Requests per invocation; more get `budget-exhausted` \[8\].
    pub max_requests: u32,
    /// Response body bytes; a larger body gets `too-large` [1 MiB].
    pub max_response_bytes: usize,
    /// Request body bytes; a larger body gets `invalid-request` [1 MiB].
    pub max_request_body_bytes: usize,
    /// The longest a request may take; never past the invocation's deadline [10 s].
    pub request_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            max_requests: 8,
            max_response_bytes: 1 << 20,
            max_request_body_bytes: 1 << 20,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// A secret the host writes into a request header in place of
/// `{{secret:NAME}}`, only for destinations it is bound to and only into the
/// headers it is bound to. Wherever an upstream echoes the value back, in a
/// response's headers or body, the action sees `[redacted]` instead.
#[derive(Clone)]
pub struct Secret {
    /// The name the action writes.
    pub name: String,
    /// The value, which the action never sees. At least
    /// [`Secret::MIN_VALUE_LEN`] bytes, so that redacting it cannot mangle
    /// ordinary text.
    pub value: String,
    /// Where it may be sent.
    pub allow: Vec<Grant>,
    /// The header names (any case) it may fill; [`Secret::DEFAULT_HEADERS`]
    /// when written without.
    pub headers: Vec<String>,
}

impl Secret {
    /// The headers a secret may fill when its settings name none.
    pub const DEFAULT_HEADERS: &[&str] = &["authorization"];

    /// The shortest value a secret may have.
    pub const MIN_VALUE_LEN: usize = 8;

    /// A secret that may fill the [`Secret::DEFAULT_HEADERS`].
    pub fn new(name: impl Into<String>, value: impl Into<String>, allow: Vec<Grant>) -> Secret {
        Secret {
            name: name.into(),
            value: value.into(),
            allow,
            headers: Secret::DEFAULT_HEADERS
                .iter()
                .map(|h| (*h).to_owned())
                .collect(),
        }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the value, whatever prints the settings.
        f.debug_struct("Secret")
            .field("name", &self.name)
            .field("value", &"<redacted>")
            .field("allow", &self.allow)
            .field("headers", &self.headers)
            .finish()
    }
}

/// What the operator sets for one action.
#[derive(Debug, Clone, Default)]
pub struct ActionSettings {
    /// Limits for this action; the host's defaults when `None`.
    pub limits: Option<Limits>,
    /// Values the action reads through the `config` import.
    pub config: BTreeMap<String, String>,
    /// The destinations the action may call. None by default.
    pub grants: Vec<Grant>,
    /// Secrets for request headers, each bound to destinations.
    pub secrets: Vec<Secret>,
    /// Bounds on outbound HTTP.
    pub http: HttpLimits,
}
