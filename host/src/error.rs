//! The errors callers branch on: why an action could not be loaded, and why an
//! invocation produced no outcome.

use serde::Serialize;

use crate::log::LogLine;

/// Why bytes could not become a loaded action. Every message names what is
/// wrong and, where it can, how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The action name is not usable.
    #[error("invalid action name `{0}`: use 1-64 characters of a-z, 0-9, '-' and '_'")]
    InvalidName(String),
    /// The bytes are not a WebAssembly component.
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    /// The component does not fit the contract (missing export, unknown import,
    /// wrong types).
    #[error("not a valid action component: {0}")]
    Contract(String),
    /// `describe` failed or returned a manifest the host refuses.
    #[error("invalid manifest: {0}")]
    Manifest(String),
    /// The component needs more of the host's instance pool per call than any
    /// action may take (core instances, memories, tables, or a memory or table
    /// larger than the host allows).
    #[error("the action needs more than its share of the host: {0}")]
    Share(String),
    /// Settings given with the action are wrong.
    #[error("invalid settings: {0}")]
    Settings(String),
    /// The host itself failed (out of resources, internal error).
    #[error("failed to load the action: {0:#}")]
    Host(anyhow::Error),
}

/// What kind of failure an invocation ended in. The first five are the
/// contract's `action-error` cases; the host reports its own refusals and the
/// action's faults with the same kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The input or context is wrong (found by the host or by the action).
    InvalidInput,
    /// A service the action called failed.
    Upstream,
    /// Something the action needed was refused.
    Denied,
    /// The invocation ran out of time.
    Timeout,
    /// The action trapped, panicked, ran out of memory or returned nonsense.
    Internal,
    /// No action is loaded under that name.
    UnknownAction,
}

impl ErrorKind {
    /// The kind's name as written in JSON: `invalid-input`, `timeout`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid-input",
            ErrorKind::Upstream => "upstream",
            ErrorKind::Denied => "denied",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Internal => "internal",
            ErrorKind::UnknownAction => "unknown-action",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An invocation that produced no outcome, with the log it wrote until then.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct InvokeError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// What went wrong, for a person.
    pub message: String,
    /// The invocation's log up to the failure (empty when it never started).
    pub logs: Vec<LogLine>,
}

impl InvokeError {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> InvokeError {
        InvokeError {
            kind,
            message: message.into(),
            logs: Vec::new(),
        }
    }
}
