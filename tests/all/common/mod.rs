//! Shared by the end-to-end tests: the plugins, built from source once per
//! test process.

#![allow(dead_code)]

pub mod api;
pub mod mock;
pub mod padded;
pub mod postgres;
pub mod server;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The repository's root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("server/ has a parent")
}

/// The path of the built component of the plugin `name`: a Rust crate name
/// such as `order_lookup`, or a JavaScript/Python directory such as `weather-js`.
pub fn plugin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    // The same entry point as `cargo xtask plugins`: it builds every language's
    // plugins, installing the pinned tools when missing, and skips what is current.
    BUILT.get_or_init(|| {
        if let Err(e) = xtask::plugins::build_all(root()) {
            panic!("building the plugins failed: {e:#}");
        }
    });
    let path = xtask::plugins::component(root(), name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// The bytes of the built plugin `name`.
pub fn plugin_bytes(name: &str) -> Vec<u8> {
    std::fs::read(plugin(name)).expect("read the plugin")
}

/// A host with `pool_size` instance slots, and the fixture prepared on it
/// with no settings, not yet serving.
pub async fn prepared_fixture(pool_size: u32) -> (action_host::Host, action_host::Prepared) {
    let host = action_host::Host::new(action_host::HostConfig {
        pool_size,
        ..action_host::HostConfig::default()
    })
    .unwrap();
    let prepared = host
        .prepare(
            "fixture",
            &plugin_bytes("fixture"),
            action_host::ActionSettings::default(),
            None,
        )
        .await
        .unwrap();
    (host, prepared)
}

/// `component` with an empty custom section named `name` appended: the
/// same behaviour under another SHA-256, a new version for the tests.
pub fn with_custom_section(component: &[u8], name: &str) -> Vec<u8> {
    assert!(
        name.len() < 0x80,
        "a short name: its length is one LEB128 byte"
    );
    let mut out = component.to_vec();
    // Section id 0 (custom), the payload's size, then the name.
    out.extend([0, name.len() as u8 + 1, name.len() as u8]);
    out.extend_from_slice(name.as_bytes());
    out
}

/// How long [`eventually`] waits. Records are written by a thread that runs
/// only on idle CPU, and the tests keep both cores busy: the writer may wait
/// seconds for its turn.
pub const EVENTUALLY: std::time::Duration = std::time::Duration::from_secs(60);

/// Polls `check` every 20 ms until it gives a value, for at most
/// [`EVENTUALLY`]; panics naming `what` when it never does.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + EVENTUALLY;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not within {EVENTUALLY:?}: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
