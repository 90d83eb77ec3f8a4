//! `cargo xtask bench-ab A B`: the CPU time two `action-host` binaries spend
//! per `POST /v1/actions/greeting/invoke`, both serving and both loaded by
//! wrk at the same time, round after round.
//!
//! On a shared two-core machine the speed of the same binary drifts by a
//! third within minutes, so runs one after the other (even alternating)
//! compare moments as much as code. Loaded at once, both servers see the
//! same moment; CPU time per request (from `/proc`, every thread of the
//! process) does not depend on how the two share the cores. Each round's
//! B/A ratio is printed, then the median and its interquartile range. A and
//! B may be the same binary with a different environment
//! (`ACTION_HOST_AB_ENV_B="RUST_LOG=warn,action_host::cli=info"`,
//! which keeps the line that says where it listens) or a different
//! recording mode for B's greeting (`--recording-b off`): that measures a
//! setting, and run as A against A it shows the noise floor.

use anyhow::{Context as _, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::bench_service::{CONNECTIONS, Server, ensure_wrk, invoke_script};

/// Rounds, unless `--rounds` says otherwise.
const ROUNDS: usize = 16;
/// Seconds per round, unless `--seconds` says otherwise.
const SECONDS: u32 = 3;

pub(crate) fn run(root: &Path, args: &[String]) -> Result<()> {
    let options = Options::parse(args)?;
    crate::plugins()?;
    ensure_wrk()?;
    let greeting = root.join("plugins/target/wasm32-wasip2/release/greeting.wasm");
    let env_b = std::env::var("ACTION_HOST_AB_ENV_B").unwrap_or_default();
    let serve = |binary: &Path, data: &str, env: &str| -> Result<Server> {
        let data = root.join("target").join(data);
        let _ = std::fs::remove_dir_all(&data);
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--data"])
            .arg(&data)
            .arg("--deploy")
            .arg(format!("greeting={}", greeting.display()))
            .args(["--max-concurrency", "256"])
            .args(["--max-concurrency-per-action", "256"]);
        for pair in env.split_whitespace() {
            let (name, value) = pair
                .split_once('=')
                .with_context(|| format!("`{pair}` in ACTION_HOST_AB_ENV_B is not NAME=VALUE"))?;
            command.env(name, value);
        }
        let server = Server::start(&mut command)?;
        server.wait_until_ready()?;
        Ok(server)
    };
    let a = serve(&options.a, "bench-ab-a", "")?;
    let b = serve(&options.b, "bench-ab-b", &env_b)?;
    if let Some(mode) = &options.recording_b {
        b.set_recording("greeting", mode)?;
    }
    let script = invoke_script(root)?;
    let url = |server: &Server| format!("{}/v1/actions/greeting/invoke", server.base);

    // Warm both up together, then measure.
    both(&script, &url(&a), &url(&b), 2)?;
    println!(
        "A: {}\nB: {}{}{}",
        options.a.display(),
        options.b.display(),
        if env_b.is_empty() {
            String::new()
        } else {
            format!(" with {env_b}")
        },
        match &options.recording_b {
            Some(mode) => format!(", recording `{mode}`"),
            None => String::new(),
        }
    );
    println!(
        "both loaded at once by wrk (1 thread, {CONNECTIONS} connections each), {} s per round:",
        options.seconds
    );
    println!("| round | A us/request | A requests/s | B us/request | B requests/s | B/A |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut ratios = Vec::new();
    let (mut per_a, mut per_b) = (Vec::new(), Vec::new());
    for round in 1..=options.rounds {
        let (cpu_a, cpu_b) = (cpu_seconds(a.pid())?, cpu_seconds(b.pid())?);
        let (requests_a, requests_b) = both(&script, &url(&a), &url(&b), options.seconds)?;
        let us_a = (cpu_seconds(a.pid())? - cpu_a) * 1e6 / requests_a as f64;
        let us_b = (cpu_seconds(b.pid())? - cpu_b) * 1e6 / requests_b as f64;
        let seconds = f64::from(options.seconds);
        println!(
            "| {round} | {us_a:.1} | {:.0} | {us_b:.1} | {:.0} | {:.3} |",
            requests_a as f64 / seconds,
            requests_b as f64 / seconds,
            us_b / us_a
        );
        ratios.push(us_b / us_a);
        per_a.push(us_a);
        per_b.push(us_b);
    }
    let (low, median, high) = quartiles(&mut ratios);
    println!(
        "A: {:.1} us per request, B: {:.1} (medians); B/A: median {median:.3}, \
         interquartile range {low:.3}-{high:.3}",
        quartiles(&mut per_a).1,
        quartiles(&mut per_b).1,
    );
    Ok(())
}

struct Options {
    a: PathBuf,
    b: PathBuf,
    rounds: usize,
    seconds: u32,
    /// B's greeting's recording mode, when not the default.
    recording_b: Option<String>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options> {
        const USAGE: &str = "usage: cargo xtask bench-ab BINARY_A BINARY_B [--rounds N] [--seconds S] \
             [--recording-b off|failures|all]";
        let (mut binaries, mut rounds, mut seconds) = (Vec::new(), ROUNDS, SECONDS);
        let mut recording_b = None;
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--rounds" => rounds = number(args.next(), USAGE)?,
                "--seconds" => seconds = number(args.next(), USAGE)?,
                "--recording-b" => match args.next().map(String::as_str) {
                    Some(mode @ ("off" | "failures" | "all")) => {
                        recording_b = Some(mode.to_owned())
                    }
                    other => bail!(
                        "--recording-b takes off, failures or all, not {:?}; {USAGE}",
                        other.unwrap_or("nothing")
                    ),
                },
                _ => binaries.push(PathBuf::from(arg)),
            }
        }
        let [a, b] = <[PathBuf; 2]>::try_from(binaries).map_err(|_| anyhow::anyhow!(USAGE))?;
        if rounds == 0 || seconds == 0 {
            bail!("{USAGE}: rounds and seconds must be at least 1");
        }
        for binary in [&a, &b] {
            if !binary.is_file() {
                bail!("{} is not a file; {USAGE}", binary.display());
            }
        }
        Ok(Options {
            a,
            b,
            rounds,
            seconds,
            recording_b,
        })
    }
}

fn number<T: std::str::FromStr>(arg: Option<&String>, usage: &str) -> Result<T> {
    arg.and_then(|n| n.parse().ok())
        .with_context(|| usage.to_owned())
}

/// Loads both URLs at once for `seconds`; the requests each answered.
fn both(script: &Path, a: &str, b: &str, seconds: u32) -> Result<(u64, u64)> {
    let start = |url: &str| -> Result<Child> {
        Command::new("wrk")
            .args(["-t1", "-c", CONNECTIONS, "-d"])
            .arg(format!("{seconds}s"))
            .arg("-s")
            .arg(script)
            .arg(url)
            .stdout(Stdio::piped())
            .spawn()
            .context("failed to run wrk")
    };
    let (wrk_a, wrk_b) = (start(a)?, start(b)?);
    Ok((answered(wrk_a, a)?, answered(wrk_b, b)?))
}

/// The requests wrk saw answered, refusing a run with errors.
fn answered(wrk: Child, url: &str) -> Result<u64> {
    let out = wrk.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("Non-2xx") || text.contains("Socket errors") {
        bail!("wrk reported errors against {url}:\n{text}");
    }
    text.lines()
        .find_map(|line| line.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.parse().ok())
        .filter(|n| *n > 0)
        .with_context(|| format!("no requests answered in wrk's output:\n{text}"))
}

/// The CPU time (user and system, all threads) process `pid` has used.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read the CPU time of process {pid}"))?;
    // The fields after the command name, which is in parentheses and may
    // hold spaces: utime and stime are the 12th and 13th of them.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| -> Result<f64> {
        fields
            .get(i)
            .and_then(|t| t.parse::<f64>().ok())
            .with_context(|| format!("cannot read /proc/{pid}/stat: {stat}"))
    };
    // SAFETY: sysconf only reads a system setting.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((ticks(11)? + ticks(12)?) / per_second)
}

/// The lower quartile, median and upper quartile of `values`.
fn quartiles(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let i = q * (values.len() - 1) as f64;
        let (lo, hi) = (i.floor() as usize, i.ceil() as usize);
        values[lo] + (values[hi] - values[lo]) * (i - lo as f64)
    };
    (at(0.25), at(0.5), at(0.75))
}

#[cfg(test)]
mod tests {
    use super::quartiles;

    #[test]
    fn quartiles_interpolate_between_values() {
        let mut values = [4.0, 1.0, 3.0, 2.0, 5.0];
        assert_eq!(quartiles(&mut values), (2.0, 3.0, 4.0));
        let mut even = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quartiles(&mut even), (1.75, 2.5, 3.25));
    }
}
