//! Shared by the end-to-end tests: the plugins, built from source once per
//! test process.

#![allow(dead_code)]

pub mod mock;
pub mod server;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository's root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
}

/// The path of the built component of the plugin crate `name`.
pub fn plugin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(build_plugins);
    let path = root()
        .join("plugins/target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// The bytes of the built plugin `name`.
pub fn plugin_bytes(name: &str) -> Vec<u8> {
    std::fs::read(plugin(name)).expect("read the plugin")
}

/// Builds every Rust plugin the way `cargo xtask plugins` does; cargo rebuilds
/// only what changed.
fn build_plugins() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = Command::new("rustup")
        .args(["target", "add", "wasm32-wasip2"])
        .output();
    if let Ok(out) = target {
        assert!(
            out.status.success(),
            "rustup target add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(root().join("plugins/Cargo.toml"))
        .status()
        .expect("run cargo to build the plugins");
    assert!(status.success(), "building the plugins failed");
}
