//! Shared by the end-to-end tests: the plugins, built from source once per
//! test process.

#![allow(dead_code)]

pub mod api;
pub mod mock;
pub mod padded;
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
