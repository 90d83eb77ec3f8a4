//! The project's tasks, so that a fresh machine with rustup needs one command
//! for each: every set-up step (the wasm target, the plugin builds) is done here.

use anyhow::{Context as _, Result, bail};
use std::process::Command;
const USAGE: &str =
    "usage: cargo xtask <demo | test | plugins | bench | bench-languages | bench-service |
                    bench-request | bench-replicas | bench-ab>

  demo     build the example actions from source and serve them on 127.0.0.1:8080
  test     build the plugins, then run every test (the browser tests in headless
           Chromium, installed if missing), the example and the lints
  plugins  build every plugin from source: Rust, JavaScript and Python (installs
           the wasm32-wasip2 target and the pinned tools of plugins/toolchain if missing)
  bench    build the plugins, then run the invocation benchmark (production profile)
  bench-languages
           the greeting written in Rust, JavaScript and Python, fresh instance per call
  bench-service [BINARY]
           the service over HTTP with wrk, beside a native hyper webhook server
           (BINARY: measure that build of action-host instead of this tree's)
  bench-request
           where the time of one HTTP call goes: each layer of the service alone
  bench-replicas
           two replicas on one PostgreSQL: how fast a change reaches the other,
           and their throughput against a service on a data directory
  bench-ab BINARY_A BINARY_B [--rounds N] [--seconds S] [--recording-b MODE]
           the CPU per request of two builds of action-host, loaded at once";

fn main() -> Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    match task.as_str() {
        "plugins" => plugins(),
        "demo" => demo(),
        "test" => test(),
        "bench-service" => {
            bench_service::run(&root(), &std::env::args().skip(2).collect::<Vec<_>>())
        }
        "bench-replicas" => bench_replicas::run(&root()),
        "bench-languages" => bench("action-host-server", "languages"),
        "bench-request" => bench("action-host-server", "request"),
        "bench" => bench("action-host", "invoke"),
        "bench-ab" => bench_ab::run(&root(), &std::env::args().skip(2).collect::<Vec<_>>()),
        _ => bail!("{USAGE}"),
    }
}

mod bench_ab;
mod bench_replicas;
mod bench_service;

use xtask::root;

/// Builds every plugin of every language from source; only what changed is rebuilt.
pub(crate) fn plugins() -> Result<()> {
    xtask::plugins::build_all(&root())
}

/// Builds the plugins, then runs one of the host's benchmarks with the `production`
/// profile: the build that is deployed (see the workspace's Cargo.toml).
fn bench(package: &str, name: &str) -> Result<()> {
    plugins()?;
    cargo(&[
        "bench",
        "--profile",
        "production",
        "--package",
        package,
        "--bench",
        name,
    ])
}

/// Serves the example actions, built from source, with the demo host
/// configuration; the service prints its tokens and curl lines to try.
fn demo() -> Result<()> {
    plugins()?;
    let mut args: Vec<String> = [
        "run",
        "--release",
        "--quiet",
        "--package",
        "action-host-server",
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
    for (name, plugin) in [
        ("greeting", "greeting"),
        ("order-lookup", "order_lookup"),
        ("lead-capture", "lead_capture"),
        ("greeting-js", "greeting-js"),
        ("weather-js", "weather-js"),
        ("membership-js", "membership-js"),
        ("greeting-py", "greeting-py"),
        ("news-py", "news-py"),
    ] {
        let path = xtask::plugins::component(&root(), plugin);
        args.push("--deploy".into());
        args.push(format!(
            "{name}={}",
            path.to_str().context("the repository path is not UTF-8")?
        ));
    }
    println!("Serving the example actions. order-lookup, lead-capture, weather-js, membership-js");
    println!("and news-py call the mock API (`cargo run --release --example mock_api` in another");
    println!("terminal). The first start compiles the JavaScript and Python ones (seconds each);");
    println!("later starts read them from target/demo-data. Ctrl-C stops.");
    cargo(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn test() -> Result<()> {
    plugins()?;
    // The PostgreSQL store's tests need a server: a named or local one, or a
    // throwaway cluster they start with the server package's programs.
    if xtask::postgres::existing_server().is_none() {
        xtask::postgres::ensure_installed()?;
    }
    // The designer's page is tested in a real browser.
    let chromium = xtask::browser::ensure_chromium()?;
    xtask::browser::install_tools(&root())?;
    let cargo_bin = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(cargo_bin)
        .args(["test", "--release", "--workspace"])
        .env("CHROMIUM", chromium)
        .current_dir(root()))?;
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

pub(crate) fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(cargo).args(args).current_dir(root()))
}

pub(crate) use xtask::plugins::run;
