//! The greeting action written in Rust, JavaScript and Python, each invoked
//! with a fresh instance per call: component size, load time, first call, and
//! p50/p99 latency and invocations per second on one thread. Each language is
//! measured twice in the same run: with calls starting from the state
//! `describe()` left (the host's default) and from the component as built.
//!
//! `cargo xtask bench-languages` builds the plugins and runs this. Compiled
//! components are kept in `target/bench-artifacts`, so only the first run
//! compiles (the load time printed is then a cache read).

// The same allocator as the `action-host` binary.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use action_host::{ActionSettings, CallContext, Host, HostConfig};
use action_host_server::DataDir;
use serde_json::{Map, Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Each figure is the median of this many rounds: a shared 2-core machine is noisy.
const ROUNDS: usize = 5;

struct Subject {
    what: &'static str,
    action: &'static str,
    file: &'static str,
    /// Calls per round; the interpreted languages get fewer.
    calls: usize,
}

const SUBJECTS: [Subject; 3] = [
    Subject {
        what: "Rust",
        action: "greeting",
        file: "wasm32-wasip2/release/greeting.wasm",
        calls: 10_000,
    },
    Subject {
        what: "JavaScript (componentize-js)",
        action: "greeting-js",
        file: "components/greeting-js.wasm",
        calls: 2_000,
    },
    Subject {
        what: "Python (componentize-py)",
        action: "greeting-py",
        file: "components/greeting-py.wasm",
        calls: 1_000,
    },
];

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let data = root.join("target/bench-artifacts");
    // The directory's key, so that a later run reads what this one compiled.
    let key = DataDir::kept_key(&data)?;
    let cache = Arc::new(DataDir::open(&data, &key)?);
    let artifact_key = key.artifact_key();
    let starts = [
        (
            "after describe",
            Host::new(HostConfig {
                artifact_key: artifact_key.clone(),
                ..HostConfig::default()
            })?,
        ),
        (
            "as built",
            Host::new(HostConfig {
                snapshot_after_describe: false,
                artifact_key,
                ..HostConfig::default()
            })?,
        ),
    ];

    let input = json!({"first_name": "Ada Lovelace", "is_member": true, "membership_tier": "gold"});
    let input: Arc<Map<String, Value>> = Arc::new(input.as_object().unwrap().clone());
    let context = CallContext {
        timezone: Some("Europe/London".into()),
        ..CallContext::default()
    };

    println!(
        "| language | calls start | component (MB) | load (s) | first call (us) | p50 (us) | p99 (us) | invocations/s |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    // `cargo bench --bench languages -- greeting-js` measures only that action.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    for subject in SUBJECTS {
        if !only.is_empty() && !only.iter().any(|a| a == subject.action) {
            continue;
        }
        let path = root.join("plugins/target").join(subject.file);
        let bytes = std::fs::read(&path).map_err(|e| {
            anyhow::anyhow!(
                "cannot read {} ({e}): run `cargo xtask plugins` first",
                path.display()
            )
        })?;
        for (start, host) in &starts {
            let began = Instant::now();
            runtime.block_on(host.load_cached(
                subject.action,
                &bytes,
                ActionSettings::default(),
                cache.clone(),
            ))?;
            let load = began.elapsed();

            let call = || {
                let began = Instant::now();
                let done = runtime
                    .block_on(host.invoke(subject.action, context.clone(), &input))
                    .expect("the greeting runs");
                assert!(done.success);
                began.elapsed()
            };
            let first = call();
            for _ in 0..subject.calls / 5 {
                call();
            }
            let mut rounds = Vec::new();
            for _ in 0..ROUNDS {
                let began = Instant::now();
                let mut latencies: Vec<Duration> = (0..subject.calls).map(|_| call()).collect();
                let wall = began.elapsed();
                latencies.sort_unstable();
                let at =
                    |q: f64| latencies[(latencies.len() as f64 * q) as usize].as_secs_f64() * 1e6;
                rounds.push([at(0.5), at(0.99), subject.calls as f64 / wall.as_secs_f64()]);
            }
            let median = |i: usize| {
                let mut values: Vec<f64> = rounds.iter().map(|r| r[i]).collect();
                values.sort_by(f64::total_cmp);
                values[values.len() / 2]
            };
            println!(
                "| {} | {start} | {:.1} | {:.2} | {:.0} | {:.1} | {:.1} | {:.0} |",
                subject.what,
                bytes.len() as f64 / 1e6,
                load.as_secs_f64(),
                first.as_secs_f64() * 1e6,
                median(0),
                median(1),
                median(2),
            );
        }
    }
    Ok(())
}
