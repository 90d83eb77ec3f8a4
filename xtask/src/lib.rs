//! The project's build tasks as a library, so that the tests build the plugins
//! exactly the way `cargo xtask plugins` does, and find or start PostgreSQL
//! the way `cargo xtask test` and the benchmarks do, and set up the browser
//! tests of the designer's page.

pub mod browser;
pub mod plugins;
pub mod postgres;

use std::path::{Path, PathBuf};

/// The repository's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ has a parent")
        .to_path_buf()
}
