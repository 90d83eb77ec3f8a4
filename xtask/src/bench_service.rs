//! `cargo xtask bench-service`: requests per second and latency of
//! `POST /v1/actions/greeting/invoke` on `action-host serve`, beside a native
//! hyper webhook server doing the same work, both loaded by wrk over
//! keep-alive connections on loopback, in the same run. Given a binary
//! (`cargo xtask bench-service BINARY`, say an older commit's production
//! build), it measures that build instead of this tree's.

use anyhow::{Context as _, Result, bail};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub(crate) const TOKEN: &str = "bench-invoke-token";
/// The designer's token of the servers benchmarks start.
const DESIGNER_TOKEN: &str = "bench-designer-token";
pub(crate) const CONNECTIONS: &str = "32";
pub(crate) const SECONDS: &str = "10s";
pub(crate) const ROUNDS: usize = 3;

pub(crate) fn run(root: &Path, args: &[String]) -> Result<()> {
    let binary = match args {
        [] => root.join("target/production/action-host"),
        [binary] if Path::new(binary).is_file() => std::path::PathBuf::from(binary),
        [binary] => bail!("{binary} is not a file: give the action-host binary to measure"),
        _ => bail!("usage: cargo xtask bench-service [BINARY]"),
    };
    crate::plugins()?;
    crate::cargo(&[
        "build",
        "--profile",
        "production",
        "--package",
        "action-host-server",
        "--bin",
        "action-host",
        "--example",
        "native_webhook",
    ])?;
    ensure_wrk()?;
    println!("measuring {}", binary.display());

    let data = root.join("target/bench-data");
    let _ = std::fs::remove_dir_all(&data);
    let greeting = root.join("plugins/target/wasm32-wasip2/release/greeting.wasm");
    let service = Server::start(
        Command::new(&binary)
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--data"])
            .arg(&data)
            .arg("--deploy")
            .arg(format!("greeting={}", greeting.display()))
            .args([
                "--max-concurrency",
                "256",
                "--max-concurrency-per-action",
                "256",
            ]),
    )?;
    // It listens at once and loads in the background: measure once it serves.
    service.wait_until_ready()?;
    let native = Server::start(
        Command::new(root.join("target/production/examples/native_webhook")).arg("127.0.0.1:0"),
    )?;

    let script = invoke_script(root)?;
    let url = |server: &Server| format!("{}/v1/actions/greeting/invoke", server.base);
    // Warm both up, then alternate measured rounds so drift hurts both alike.
    wrk(&script, &url(&service), "2s")?;
    wrk(&script, &url(&native), "2s")?;
    let (mut sandboxed, mut baseline) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        sandboxed.push(wrk(&script, &url(&service), SECONDS)?);
        baseline.push(wrk(&script, &url(&native), SECONDS)?);
    }
    let (s, n) = (median(sandboxed), median(baseline));
    println!(
        "wrk: 1 thread (one of the 2 cores), {CONNECTIONS} keep-alive connections, {SECONDS} per round, median of {ROUNDS} rounds"
    );
    println!("| server | requests/s | p50 (ms) | p99 (ms) |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| action-host serve, greeting.wasm | {:.0} | {:.3} | {:.3} |",
        s.per_second, s.p50_ms, s.p99_ms
    );
    println!(
        "| native hyper webhook server | {:.0} | {:.3} | {:.3} |",
        n.per_second, n.p50_ms, n.p99_ms
    );
    println!(
        "ratio of requests/s: {:.2}x the native server",
        s.per_second / n.per_second
    );
    Ok(())
}

/// The wrk script that calls the greeting as the benchmarks do.
pub(crate) fn invoke_script(root: &Path) -> Result<std::path::PathBuf> {
    let script = root.join("target/bench-invoke.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\n\
             wrk.body = '{{\"input\":{{\"first_name\":\"Ada Lovelace\",\"is_member\":true,\"membership_tier\":\"gold\"}},\"context\":{{\"timezone\":\"Europe/London\"}}}}'\n\
             wrk.headers[\"Content-Type\"] = \"application/json\"\n\
             wrk.headers[\"Authorization\"] = \"Bearer {TOKEN}\"\n"
        ),
    )?;
    Ok(script)
}

#[derive(Clone, Copy)]
pub(crate) struct Figures {
    pub(crate) per_second: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
}

pub(crate) fn median(mut rounds: Vec<Figures>) -> Figures {
    rounds.sort_by(|a, b| a.per_second.total_cmp(&b.per_second));
    rounds[rounds.len() / 2]
}

pub(crate) fn wrk(script: &Path, url: &str, duration: &str) -> Result<Figures> {
    let out = Command::new("wrk")
        .args(["-t1", "-c", CONNECTIONS, "-d", duration, "--latency", "-s"])
        .arg(script)
        .arg(url)
        .output()
        .context("failed to run wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("Non-2xx") || text.contains("Socket errors") {
        bail!("wrk reported errors against {url}:\n{text}");
    }
    let field = |prefix: &str| -> Result<f64> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|line| line.starts_with(prefix))
            .with_context(|| format!("no `{prefix}` in wrk's output:\n{text}"))?;
        let value = line.split_whitespace().nth(1).unwrap_or_default();
        parse_value(value).with_context(|| format!("cannot read `{line}`"))
    };
    Ok(Figures {
        per_second: field("Requests/sec:")?,
        p50_ms: field("50%")?,
        p99_ms: field("99%")?,
    })
}

/// Reads wrk's numbers: `1234.5` or a latency such as `812.00us`, `1.20ms`, `2.00s` (in ms).
fn parse_value(value: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = value.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = value.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = value.strip_suffix('s') {
        (n, 1e3)
    } else {
        (value, 1.0)
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}

pub(crate) fn ensure_wrk() -> Result<()> {
    if Command::new("wrk").arg("--version").output().is_ok() {
        return Ok(());
    }
    eprintln!("wrk is missing; installing it from the Debian packages");
    crate::run(Command::new("apt-get").args(["install", "-y", "-qq", "wrk"]))
        .context("cannot install wrk (apt-get install wrk); install it and run again")
}

/// A server process, stopped when dropped.
pub(crate) struct Server {
    child: Child,
    pub(crate) base: String,
}

impl Server {
    pub(crate) fn start(command: &mut Command) -> Result<Server> {
        let mut child = command
            .env("ACTION_HOST_OPERATOR_TOKEN", "bench-operator-token")
            .env("ACTION_HOST_DESIGNER_TOKEN", DESIGNER_TOKEN)
            .env("ACTION_HOST_METRICS_TOKEN", "bench-metrics-token")
            .env("ACTION_HOST_INVOKE_TOKEN", TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("failed to start a server")?;
        let stderr = BufReader::new(child.stderr.take().context("no stderr")?);
        // Read on a thread of its own, so a server that never says where it
        // listens (a RUST_LOG that hides its info lines) fails the
        // benchmark instead of hanging it; the thread keeps draining
        // stderr afterwards so the server never blocks on a full pipe.
        let (tell, listening) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tell = Some(tell);
            for line in stderr.lines() {
                let Ok(line) = line else { break };
                // The service's log line has a timestamp and level first.
                if let Some((_, rest)) = line.split_once("listening on ") {
                    let base = rest.split_whitespace().next().unwrap_or_default();
                    if let Some(tell) = tell.take() {
                        let _ = tell.send(base.to_owned());
                    }
                }
            }
        });
        let base = match listening.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(base) => base,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "a server exited or did not log `listening on` within 60 s (its RUST_LOG \
                     must keep info lines of action_host::cli)"
                )
            }
        };
        Ok(Server { child, base })
    }
}

impl Server {
    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (up to two minutes) until the service's `/healthz` says `ok`:
    /// everything it deploys at start is loaded.
    pub(crate) fn wait_until_ready(&self) -> Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let answer = self.exchange("GET /healthz", "", "").unwrap_or_default();
            if answer.contains("\"status\":\"ok\"") {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                bail!("the service did not finish loading: {answer}");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Sets the recording mode of `action` (as a designer would), so that
    /// a benchmark can measure a call without its record.
    pub(crate) fn set_recording(&self, action: &str, mode: &str) -> Result<()> {
        let answer = self.exchange(
            &format!("PUT /v1/actions/{action}/recording"),
            &format!("Authorization: Bearer {DESIGNER_TOKEN}\r\n"),
            &format!("{{\"mode\": \"{mode}\"}}"),
        )?;
        if !answer.starts_with("HTTP/1.1 200") {
            bail!("setting {action}'s recording to `{mode}` failed: {answer}");
        }
        Ok(())
    }

    /// One request on a connection of its own (`request`: method and path;
    /// `headers`: lines ending in CRLF; `body`: JSON or empty), and the
    /// whole answer as text.
    fn exchange(&self, request: &str, headers: &str, body: &str) -> std::io::Result<String> {
        use std::io::{Read as _, Write as _};
        let address = self.base.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(address)?;
        write!(
            stream,
            "{request} HTTP/1.1\r\nHost: bench\r\n{headers}Content-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
