//! Builds every plugin from source, whatever its language: the Rust crates of
//! `plugins/` with cargo, the JavaScript ones (`plugins/*/action.js`) with
//! componentize-js and the Python ones (`plugins/*/app.py`) with componentize-py.
//!
//! The JavaScript and Python tools are pinned in `plugins/toolchain/` (npm's lock
//! file, pip's hashed requirements) and installed there, never globally, when
//! missing or when the pin changed. A JavaScript or Python component is rebuilt
//! only when its sources, the WIT contract or its tool's pin changed: next to each
//! output, `<name>.wasm.inputs` holds the SHA-256 of what built it.

use anyhow::{Context as _, Result, bail};
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Where cargo puts the Rust plugins' components (crate names with `_`).
pub const RUST_OUT: &str = "plugins/target/wasm32-wasip2/release";
/// Where the JavaScript and Python components go (directory names).
pub const COMPONENTS_OUT: &str = "plugins/target/components";

const TOOLCHAIN: &str = "plugins/toolchain";

/// The language of a plugin directory, told by its entry file.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Language {
    JavaScript,
    Python,
}

impl Language {
    fn entry(self) -> &'static str {
        match self {
            Language::JavaScript => "action.js",
            Language::Python => "app.py",
        }
    }

    /// The file that pins this language's tool; part of every build's inputs.
    fn pin(self) -> &'static str {
        match self {
            Language::JavaScript => "package-lock.json",
            Language::Python => "requirements.txt",
        }
    }
}

struct Plugin {
    name: String,
    dir: PathBuf,
    language: Language,
}

/// Builds every plugin under `root/plugins`, installing the pinned tools first
/// when they are missing.
pub fn build_all(root: &Path) -> Result<()> {
    build_rust(root)?;
    let plugins = discover(root)?;
    for language in [Language::JavaScript, Language::Python] {
        if plugins.iter().any(|p| p.language == language) {
            install_tool(root, language)?;
        }
    }
    let out = root.join(COMPONENTS_OUT);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut stale = Vec::new();
    for plugin in &plugins {
        let digest = inputs_digest(root, plugin)?;
        let wasm = out.join(format!("{}.wasm", plugin.name));
        let recorded = std::fs::read_to_string(stamp_of(&wasm)).unwrap_or_default();
        if !wasm.exists() || recorded.trim() != digest {
            stale.push((plugin, wasm, digest));
        }
    }
    // Each build is one single-threaded tool process for most of its time, so
    // running them side by side uses every core.
    let failures: Vec<String> = std::thread::scope(|scope| {
        let builds: Vec<_> = stale
            .iter()
            .map(|(plugin, wasm, digest)| {
                scope.spawn(move || {
                    build_component(root, plugin, wasm, digest)
                        .map_err(|e| format!("{}: {e:#}", plugin.name))
                })
            })
            .collect();
        builds
            .into_iter()
            .filter_map(|build| build.join().expect("a build thread panicked").err())
            .collect()
    });
    if !failures.is_empty() {
        bail!("building plugins failed:\n{}", failures.join("\n"));
    }
    Ok(())
}

/// The built component of the plugin `name`: a Rust crate name such as
/// `order_lookup`, or a JavaScript/Python directory name such as `weather-js`.
pub fn component(root: &Path, name: &str) -> PathBuf {
    let rust = root.join(RUST_OUT).join(format!("{name}.wasm"));
    if rust.exists() {
        return rust;
    }
    root.join(COMPONENTS_OUT).join(format!("{name}.wasm"))
}

fn build_rust(root: &Path) -> Result<()> {
    ensure_wasm_target()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(cargo)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .arg("--manifest-path")
        .arg(root.join("plugins/Cargo.toml")))
}

fn ensure_wasm_target() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match installed {
        Ok(out)
            if String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|t| t == "wasm32-wasip2") =>
        {
            Ok(())
        }
        Ok(_) => run(Command::new("rustup").args(["target", "add", "wasm32-wasip2"])),
        // Without rustup the toolchain must already carry the target.
        Err(_) => Ok(()),
    }
}

/// The plugin directories with a JavaScript or Python entry file, by name.
fn discover(root: &Path) -> Result<Vec<Plugin>> {
    let plugins_dir = root.join("plugins");
    let mut found = Vec::new();
    let entries = std::fs::read_dir(&plugins_dir)
        .with_context(|| format!("reading {}", plugins_dir.display()))?;
    for entry in entries {
        let dir = entry?.path();
        let Some(name) = dir.file_name().and_then(|n| n.to_str()).map(String::from) else {
            continue;
        };
        for language in [Language::JavaScript, Language::Python] {
            if dir.join(language.entry()).is_file() {
                found.push(Plugin {
                    name: name.clone(),
                    dir: dir.clone(),
                    language,
                });
            }
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// Installs the pinned tool of `language` into `plugins/toolchain` unless the
/// installed one was installed from the current pin.
fn install_tool(root: &Path, language: Language) -> Result<()> {
    let toolchain = root.join(TOOLCHAIN);
    let pin = sha256_file(&toolchain.join(language.pin()))?;
    let (installed_dir, stamp) = match language {
        Language::JavaScript => ("node_modules", "node_modules/.installed-from"),
        Language::Python => (".venv", ".venv/.installed-from"),
    };
    let stamp = toolchain.join(stamp);
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == pin) {
        return Ok(());
    }
    let installed_dir = toolchain.join(installed_dir);
    if installed_dir.exists() {
        std::fs::remove_dir_all(&installed_dir)
            .with_context(|| format!("removing the outdated {}", installed_dir.display()))?;
    }
    match language {
        Language::JavaScript => {
            println!("installing componentize-js into {TOOLCHAIN}/node_modules");
            run(Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&toolchain))
            .context("JavaScript plugins need Node.js 18 or newer with npm on the PATH")?;
        }
        Language::Python => {
            println!("installing componentize-py into {TOOLCHAIN}/.venv");
            run(Command::new("python3")
                .args(["-m", "venv", ".venv"])
                .current_dir(&toolchain))
            .context(
                "Python plugins need Python 3.9 or newer with venv \
                 (on Debian and Ubuntu: the python3-venv package)",
            )?;
            run(Command::new(toolchain.join(".venv/bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .args(["--require-hashes", "--requirement", "requirements.txt"])
                .current_dir(&toolchain))?;
        }
    }
    // Written last: an interrupted install is redone next time.
    std::fs::write(&stamp, &pin).with_context(|| format!("writing {}", stamp.display()))
}

/// The SHA-256 over everything a component is built from: the plugin's files,
/// the WIT contract and the pin of the tool that builds it.
fn inputs_digest(root: &Path, plugin: &Plugin) -> Result<String> {
    let mut files = Vec::new();
    collect_files(&plugin.dir, &mut files)?;
    collect_files(&root.join("wit"), &mut files)?;
    files.push(root.join(TOOLCHAIN).join(plugin.language.pin()));
    files.sort();
    let mut hasher = Sha256::new();
    for file in files {
        let relative = file.strip_prefix(root).unwrap_or(&file);
        hasher.update(relative.to_string_lossy().as_bytes());
        hasher.update([0]);
        let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    }
    Ok(hex(&hasher.finalize()))
}

/// The regular files under `dir`, skipping hidden entries and the caches tools
/// write beside the sources.
fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') || name == "__pycache__" || name == "node_modules" {
            continue;
        }
        if path.is_dir() {
            collect_files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

fn build_component(root: &Path, plugin: &Plugin, wasm: &Path, digest: &str) -> Result<()> {
    let started = Instant::now();
    // The tool writes beside the output and the result is renamed into place,
    // so an interrupted build never leaves a half-written component.
    let partial = wasm.with_extension("wasm.partial");
    let toolchain = root.join(TOOLCHAIN);
    let wit = root.join("wit");
    let mut command = match plugin.language {
        Language::JavaScript => {
            let mut command = Command::new(toolchain.join("node_modules/.bin/componentize-js"));
            command
                .arg(Language::JavaScript.entry())
                .arg("--wit")
                .arg(&wit)
                .args(["--world-name", "plugin", "--out"])
                .arg(&partial)
                .current_dir(&plugin.dir);
            command
        }
        Language::Python => {
            let mut command = Command::new(toolchain.join(".venv/bin/componentize-py"));
            command
                .arg("--wit-path")
                .arg(&wit)
                .args(["--world", "plugin", "componentize", "app", "--python-path"])
                .arg(&plugin.dir)
                .arg("--output")
                .arg(&partial)
                .env("PYTHONDONTWRITEBYTECODE", "1");
            command
        }
    };
    let output = command
        .output()
        .with_context(|| format!("failed to start {command:?}"))?;
    if !output.status.success() || !partial.is_file() {
        let _ = std::fs::remove_file(&partial);
        bail!(
            "{command:?} failed with {}:\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    std::fs::rename(&partial, wasm).with_context(|| format!("writing {}", wasm.display()))?;
    std::fs::write(stamp_of(wasm), digest)?;
    println!(
        "built {} ({:?}) in {:.1} s",
        plugin.name,
        plugin.language,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn stamp_of(wasm: &Path) -> PathBuf {
    wasm.with_extension("wasm.inputs")
}

pub(crate) fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex(&Sha256::digest(bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Runs `command`, failing with its name when it cannot start or fails.
pub fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("failed to start {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A repository with the WIT, both tool pins, a JavaScript plugin, a
    /// Python plugin and a Rust crate.
    fn repository() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let write = |path: &str, text: &str| {
            let path = root.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write("wit/action.wit", "package a:b;");
        write("plugins/toolchain/package-lock.json", "{}");
        write("plugins/toolchain/requirements.txt", "tool==1");
        write("plugins/hello-js/action.js", "export const action = {};");
        write("plugins/hello-py/app.py", "class Action: pass");
        write("plugins/hello/src/lib.rs", "");
        root
    }

    fn digest_of(root: &Path, name: &str) -> String {
        let plugin = discover(root)
            .unwrap()
            .into_iter()
            .find(|p| p.name == name)
            .unwrap();
        inputs_digest(root, &plugin).unwrap()
    }

    #[test]
    fn plugins_are_found_by_their_entry_file() {
        let root = repository();
        let found: Vec<_> = discover(root.path())
            .unwrap()
            .into_iter()
            .map(|p| (p.name, p.language))
            .collect();
        assert_eq!(
            found,
            [
                ("hello-js".to_owned(), Language::JavaScript),
                ("hello-py".to_owned(), Language::Python),
            ]
        );
    }

    #[test]
    fn a_component_is_stale_exactly_when_what_builds_it_changed() {
        let root = repository();
        let root = root.path();
        let js = digest_of(root, "hello-js");
        let py = digest_of(root, "hello-py");

        // Caches that tools write beside the sources change nothing.
        std::fs::create_dir_all(root.join("plugins/hello-py/__pycache__")).unwrap();
        std::fs::write(root.join("plugins/hello-py/__pycache__/app.pyc"), "x").unwrap();
        assert_eq!(digest_of(root, "hello-py"), py);

        // A source of one plugin changes that plugin only.
        std::fs::write(root.join("plugins/hello-js/action.js"), "// edited").unwrap();
        let js_edited = digest_of(root, "hello-js");
        assert_ne!(js_edited, js);
        assert_eq!(digest_of(root, "hello-py"), py);

        // A new pin of one language's tool changes that language's plugins only.
        std::fs::write(root.join("plugins/toolchain/requirements.txt"), "tool==2").unwrap();
        let py_repinned = digest_of(root, "hello-py");
        assert_ne!(py_repinned, py);
        assert_eq!(digest_of(root, "hello-js"), js_edited);

        // The contract changes every plugin.
        std::fs::write(root.join("wit/action.wit"), "package a:c;").unwrap();
        assert_ne!(digest_of(root, "hello-js"), js_edited);
        assert_ne!(digest_of(root, "hello-py"), py_repinned);
    }
}
