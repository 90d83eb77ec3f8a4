//! `cargo xtask bench-replicas`: two replicas of `action-host serve` on one
//! PostgreSQL database (named, local, or a throwaway cluster:
//! `xtask::postgres`), measured in one run for
//!
//! - propagation: 100 uploads of a new version of a Rust action to replica A,
//!   each timed from A's answer until replica B shows the new version, while
//!   calls to B run all along (every one must succeed);
//! - invoke throughput of replica B against a service on a data directory,
//!   with wrk, alternating rounds;
//! - the time for replica B to serve a large JavaScript action that A
//!   compiled, against the time A took to compile it.

use anyhow::{Context as _, Result, bail};
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::bench_service::{self, Server};

const KEY: &str = "62656e63682d7265706c69636173206f70657261746f72206b6579203332622e";
const OPERATOR: &str = "bench-operator-token";
const UPDATES: usize = 100;

pub(crate) fn run(root: &Path) -> Result<()> {
    crate::plugins()?;
    crate::cargo(&[
        "build",
        "--profile",
        "production",
        "--package",
        "action-host-server",
        "--bin",
        "action-host",
    ])?;
    bench_service::ensure_wrk()?;
    let own;
    let admin = match xtask::postgres::existing_server() {
        Some(url) => url,
        None => {
            own = xtask::postgres::Cluster::start()?;
            own.url()
        }
    };
    let database = format!("action_host_bench_{}", std::process::id());
    psql(&admin, &format!("CREATE DATABASE {database}"))?;
    let store = {
        let mut url = admin.clone();
        let cut = url.rfind('/').context("a server URL has a path")?;
        url.truncate(cut + 1);
        url + &database
    };
    let measured = measure(root, &store);
    let _ = psql(
        &admin,
        &format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"),
    );
    measured
}

fn measure(root: &Path, store: &str) -> Result<()> {
    let binary = root.join("target/production/action-host");
    let replica = || {
        Server::start(
            Command::new(&binary)
                .args(["serve", "--listen", "127.0.0.1:0", "--store", store])
                .args([
                    "--max-concurrency",
                    "256",
                    "--max-concurrency-per-action",
                    "256",
                ])
                .env("ACTION_HOST_SECRET_KEY", KEY),
        )
    };
    let (a, b) = (replica()?, replica()?);
    let greeting_path = xtask::plugins::component(root, "greeting");
    let greeting = std::fs::read(&greeting_path)?;

    // Propagation, with calls to B running all along.
    let (status, _) = http(&a.base, "PUT", "/v1/actions/greeting", &greeting)?;
    if !status.starts_with('2') {
        bail!("the first upload failed: {status}");
    }
    wait_for(
        &b.base,
        "greeting",
        &sha256_hex(&greeting),
        Duration::from_secs(30),
    )?;
    let calling = Arc::new(AtomicBool::new(true));
    let (calls, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let caller = {
        let (base, calling, calls, failures) = (
            b.base.clone(),
            Arc::clone(&calling),
            Arc::clone(&calls),
            Arc::clone(&failures),
        );
        std::thread::spawn(move || {
            let body = br#"{"input":{"first_name":"Ada"},"context":{"timezone":"Europe/London"}}"#;
            while calling.load(Ordering::Relaxed) {
                calls.fetch_add(1, Ordering::Relaxed);
                match http(&base, "POST", "/v1/actions/greeting/invoke", body) {
                    Ok((status, _)) if status == "200" => {}
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    let mut latencies = Vec::with_capacity(UPDATES);
    for update in 0..UPDATES {
        // The same action with a custom section that names the update: a new
        // version (a new SHA-256) that behaves the same.
        let version = with_custom_section(&greeting, &format!("bench-update-{update}"));
        let (status, body) = http(&a.base, "PUT", "/v1/actions/greeting", &version)?;
        if !status.starts_with('2') {
            bail!("upload {update} failed: {status} {body}");
        }
        let answered = Instant::now();
        wait_for(
            &b.base,
            "greeting",
            &sha256_hex(&version),
            Duration::from_secs(30),
        )?;
        latencies.push(answered.elapsed());
    }
    calling.store(false, Ordering::Relaxed);
    caller.join().expect("the caller thread");
    latencies.sort();
    let at = |p: f64| latencies[((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1)];
    println!(
        "propagation over {UPDATES} uploads of a new version of greeting.wasm (A's 200 -> B serves it):"
    );
    println!(
        "  p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(at(0.5)),
        ms(at(0.9)),
        ms(at(0.99)),
        ms(*latencies.last().unwrap())
    );
    println!(
        "  calls to B meanwhile: {} made, {} failed",
        calls.load(Ordering::Relaxed),
        failures.load(Ordering::Relaxed)
    );

    // Throughput of B against a service on a data directory.
    let data = root.join("target/bench-replicas-data");
    let _ = std::fs::remove_dir_all(&data);
    let local = Server::start(
        Command::new(&binary)
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(&data)
            .arg("--deploy")
            .arg(format!("greeting={}", greeting_path.display()))
            .args([
                "--max-concurrency",
                "256",
                "--max-concurrency-per-action",
                "256",
            ]),
    )?;
    wait_for(
        &local.base,
        "greeting",
        &sha256_hex(&greeting),
        Duration::from_secs(60),
    )?;
    let script = bench_service::invoke_script(root)?;
    let url = |server: &Server| format!("{}/v1/actions/greeting/invoke", server.base);
    bench_service::wrk(&script, &url(&b), "2s")?;
    bench_service::wrk(&script, &url(&local), "2s")?;
    let (mut on_postgres, mut on_data_dir) = (Vec::new(), Vec::new());
    for _ in 0..bench_service::ROUNDS {
        on_postgres.push(bench_service::wrk(
            &script,
            &url(&b),
            bench_service::SECONDS,
        )?);
        on_data_dir.push(bench_service::wrk(
            &script,
            &url(&local),
            bench_service::SECONDS,
        )?);
    }
    let spread = |rounds: &[bench_service::Figures]| {
        let per_second: Vec<f64> = rounds.iter().map(|f| f.per_second).collect();
        let (low, high) = per_second
            .iter()
            .fold((f64::MAX, 0f64), |(l, h), &v| (l.min(v), h.max(v)));
        format!("{low:.0}-{high:.0}")
    };
    let (spread_pg, spread_dir) = (spread(&on_postgres), spread(&on_data_dir));
    let (p, d) = (
        bench_service::median(on_postgres),
        bench_service::median(on_data_dir),
    );
    println!(
        "invoke throughput, wrk 1 thread, {} connections, {} per round, median of {} rounds:",
        bench_service::CONNECTIONS,
        bench_service::SECONDS,
        bench_service::ROUNDS
    );
    println!("| store | requests/s (spread) | p50 (ms) | p99 (ms) |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| replica on PostgreSQL | {:.0} ({spread_pg}) | {:.3} | {:.3} |",
        p.per_second, p.p50_ms, p.p99_ms
    );
    println!(
        "| one service on a data directory | {:.0} ({spread_dir}) | {:.3} | {:.3} |",
        d.per_second, d.p50_ms, d.p99_ms
    );
    drop(local);

    // A large JavaScript action: compiled by A, then served by B from the
    // stored artifact.
    let weather = std::fs::read(xtask::plugins::component(root, "weather-js"))
        .context("the JavaScript example is built by `cargo xtask plugins`")?;
    let started = Instant::now();
    let (status, body) = http(&a.base, "PUT", "/v1/actions/weather-js", &weather)?;
    if !status.starts_with('2') {
        bail!("the JavaScript upload failed: {status} {body}");
    }
    let compiled = started.elapsed();
    let answered = Instant::now();
    wait_for(
        &b.base,
        "weather-js",
        &sha256_hex(&weather),
        Duration::from_secs(120),
    )?;
    let served = answered.elapsed();
    println!(
        "weather-js.wasm ({:.1} MB): upload to A answered after {:.2} s (compiling it); B served it {:.2} s after that, from the artifact A stored",
        weather.len() as f64 / 1e6,
        compiled.as_secs_f64(),
        served.as_secs_f64()
    );
    Ok(())
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// Waits until the service at `base` shows `name` serving the SHA-256 `sha256`.
fn wait_for(base: &str, name: &str, sha256: &str, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    let path = format!("/v1/actions/{name}");
    loop {
        if let Ok((status, body)) = http(base, "GET", &path, b"")
            && status == "200"
            && body.contains(sha256)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{base} did not serve {name} at {sha256} within {within:?}");
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// One HTTP/1.1 request with the operator token; the status code and body.
fn http(base: &str, method: &str, path: &str, body: &[u8]) -> Result<(String, String)> {
    let address = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).with_context(|| format!("cannot reach {base}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let token = if path.ends_with("/invoke") {
        bench_service::TOKEN
    } else {
        OPERATOR
    };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let status = answer
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// `component` with a custom section named `name` appended: a valid
/// component with the same behaviour and a new SHA-256.
fn with_custom_section(component: &[u8], name: &str) -> Vec<u8> {
    let mut payload = leb128(name.len() as u64);
    payload.extend_from_slice(name.as_bytes());
    let mut out = component.to_vec();
    out.push(0);
    out.extend(leb128(payload.len() as u64));
    out.extend(payload);
    out
}

fn leb128(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// Runs one SQL command with `psql` from the server package.
fn psql(url: &str, sql: &str) -> Result<()> {
    let bin = xtask::postgres::ensure_installed()?;
    let out = Command::new(bin.join("psql"))
        .args([url, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .output()
        .context("cannot run psql")?;
    if !out.status.success() {
        bail!("psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
