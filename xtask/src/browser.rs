//! What the browser tests of the designer's page need: a Chromium (Debian's
//! `chromium` package) and `playwright-core`, pinned by the lock file in
//! `tests/browser`, to drive it.

use anyhow::{Context as _, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::plugins::{run, sha256_file};

/// The browser tests' folder, relative to the repository's root.
const TESTS: &str = "tests/browser";

/// The Chromium the tests drive: `$CHROMIUM`, else Debian's, installed with
/// apt-get when missing.
pub fn ensure_chromium() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return Ok(path.into());
    }
    let debian = PathBuf::from("/usr/bin/chromium");
    if debian.exists() {
        return Ok(debian);
    }
    eprintln!("Chromium is missing; installing Debian's chromium package for the browser tests");
    let install = || {
        run(Command::new("apt-get")
            .args([
                "install",
                "-y",
                "-qq",
                "--no-install-recommends",
                "chromium",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive"))
    };
    // A fresh machine may not have read the package lists yet.
    if install().is_err() {
        run(Command::new("apt-get")
            .args(["update", "-qq"])
            .env("DEBIAN_FRONTEND", "noninteractive"))
        .context("cannot read the package lists (apt-get update)")?;
        install().context(
            "cannot install Chromium (apt-get install chromium); install it, or set CHROMIUM \
             to a Chromium or Chrome binary, and run again",
        )?;
    }
    anyhow::ensure!(
        debian.exists(),
        "the chromium package is installed, but not {}",
        debian.display()
    );
    Ok(debian)
}

/// Installs `playwright-core` into `tests/browser/node_modules` unless it
/// was installed from the current lock file.
pub fn install_tools(root: &Path) -> Result<()> {
    let dir = root.join(TESTS);
    let lock = sha256_file(&dir.join("package-lock.json"))?;
    let stamp = dir.join("node_modules/.installed-from");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == lock) {
        return Ok(());
    }
    println!("installing playwright-core into {TESTS}/node_modules");
    run(Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&dir))
    .context("the browser tests need Node.js 18 or newer with npm on the PATH")?;
    // Written last: an interrupted install is redone next time.
    std::fs::write(&stamp, &lock).with_context(|| format!("writing {}", stamp.display()))
}
