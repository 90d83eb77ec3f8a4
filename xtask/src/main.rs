//! The project's tasks, so that a fresh machine with rustup needs one command
//! for each: every set-up step (the wasm target, the plugin builds) is done here.

use anyhow::{Context as _, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

const USAGE: &str = "usage: cargo xtask <demo | test | plugins | bench>

  demo     build the example actions from source and serve them on 127.0.0.1:8080
  test     build the plugins, then run every test, the example and the lints
  plugins  build every plugin from source (adds the wasm32-wasip2 target if missing)
  bench    build the plugins, then run the invocation benchmark
  bench-service
           the service over HTTP with wrk, beside a native hyper webhook server";

fn main() -> Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    match task.as_str() {
        "plugins" => plugins(),
        "demo" => demo(),
        "test" => test(),
        "bench-service" => bench_service::run(&root()),
        "bench" => {
            plugins()?;
            cargo(&["bench", "--package", "action-host", "--bench", "invoke"])
        }
        _ => bail!("{USAGE}"),
    }
}

mod bench_service;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ has a parent")
        .to_path_buf()
}

/// Builds every plugin in `plugins/` for wasm32-wasip2; cargo rebuilds only what changed.
pub(crate) fn plugins() -> Result<()> {
    ensure_wasm_target()?;
    let manifest = root().join("plugins/Cargo.toml");
    let manifest = manifest
        .to_str()
        .context("the repository path is not UTF-8")?;
    cargo(&[
        "build",
        "--release",
        "--target",
        "wasm32-wasip2",
        "--manifest-path",
        manifest,
    ])
}

/// Serves the example actions, built from source, with the demo host
/// configuration; the service prints its tokens and curl lines to try.
fn demo() -> Result<()> {
    plugins()?;
    let built = root().join("plugins/target/wasm32-wasip2/release");
    let mut args: Vec<String> = [
        "run",
        "--release",
        "--quiet",
        "--package",
        "action-host",
        "--bin",
        "action-host",
        "--",
    ]
    .map(String::from)
    .to_vec();
    args.extend(
        [
            "serve",
            "--data",
            "target/demo-data",
            "--config",
            "examples/demo-host.toml",
        ]
        .map(String::from),
    );
    for (name, file) in [
        ("greeting", "greeting"),
        ("order-lookup", "order_lookup"),
        ("lead-capture", "lead_capture"),
    ] {
        let path = built.join(format!("{file}.wasm"));
        args.push("--deploy".into());
        args.push(format!(
            "{name}={}",
            path.to_str().context("the repository path is not UTF-8")?
        ));
    }
    println!("Serving the example actions; order-lookup and lead-capture call the mock API");
    println!("(`cargo run --release --example mock_api` in another terminal). Ctrl-C stops.");
    cargo(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn test() -> Result<()> {
    plugins()?;
    cargo(&["test", "--release", "--workspace"])?;
    cargo(&[
        "run",
        "--release",
        "--quiet",
        "--package",
        "action-host",
        "--example",
        "embed",
    ])
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

pub(crate) fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(cargo).args(args).current_dir(root()))
}

pub(crate) fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("failed to start {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}
