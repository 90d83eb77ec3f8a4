//! One fresh-instance invocation of the greeting action, measured against a
//! native Rust function doing the same work in the same run.
//!
//! `cargo xtask bench` builds the plugins and runs this. It prints p50 and p99
//! latency and invocations per second on 1 and 2 threads, for the sandboxed
//! action and for the native baseline.

// The same allocator as the `action-host` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "native_greeting.rs"]
mod native_greeting;

use action_host::{CallContext, Host, HostConfig};
use native_greeting::native_greeting;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const WARMUP: usize = 2_000;
const CALLS_PER_THREAD: usize = 10_000;
/// Each figure is the median of this many rounds: a shared 2-core machine is noisy.
const ROUNDS: usize = 5;

fn main() -> anyhow::Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/target/wasm32-wasip2/release/greeting.wasm");
    let bytes = std::fs::read(&path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read {} ({e}): run `cargo xtask plugins` first",
            path.display()
        )
    })?;
    let host = Host::new(HostConfig::default())?;
    current_thread().block_on(host.load("greeting", &bytes))?;

    let input = json!({"first_name": "Ada Lovelace", "is_member": true, "membership_tier": "gold"});
    let input = Arc::new(input.as_object().unwrap().clone());
    let context = CallContext {
        timezone: Some("Europe/London".into()),
        ..CallContext::default()
    };

    let wasm = {
        let (host, input, context) = (host.clone(), Arc::clone(&input), context.clone());
        move || {
            let (host, input, context) = (host.clone(), Arc::clone(&input), context.clone());
            async move {
                let done = host
                    .invoke("greeting", context, &input)
                    .await
                    .expect("the greeting action runs");
                assert!(done.success);
            }
        }
    };
    let native = {
        let (input, context) = (Arc::clone(&input), context.clone());
        move || {
            let (input, context) = (Arc::clone(&input), context.clone());
            async move {
                let done = native_greeting(&context, &input).expect("the native greeting runs");
                assert!(std::hint::black_box(done)["success"] == true);
            }
        }
    };

    println!("| what | threads | p50 (us) | p99 (us) | invocations/s |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for threads in [1, 2] {
        let mut wasm_rounds = Vec::new();
        let mut native_rounds = Vec::new();
        // Interleaved, so a noisy moment hurts both sides alike.
        for _ in 0..ROUNDS {
            wasm_rounds.push(summarize(&measure(threads, wasm.clone())));
            native_rounds.push(summarize(&measure(threads, native.clone())));
        }
        report("greeting.wasm, fresh instance", threads, &wasm_rounds);
        report("native Rust function", threads, &native_rounds);
    }
    Ok(())
}

struct Run {
    latencies: Vec<Duration>,
    wall: Duration,
}

/// Runs `call` CALLS_PER_THREAD times on each of `threads` threads, each with its own
/// single-threaded runtime, and records every call's latency.
fn measure<F, Fut>(threads: usize, call: F) -> Run
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let start = Arc::new(std::sync::Barrier::new(threads + 1));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (call, start) = (call.clone(), Arc::clone(&start));
            std::thread::spawn(move || {
                current_thread().block_on(async move {
                    for _ in 0..WARMUP {
                        call().await;
                    }
                    start.wait();
                    let mut latencies = Vec::with_capacity(CALLS_PER_THREAD);
                    for _ in 0..CALLS_PER_THREAD {
                        let began = Instant::now();
                        call().await;
                        latencies.push(began.elapsed());
                    }
                    latencies
                })
            })
        })
        .collect();
    start.wait();
    let began = Instant::now();
    let mut latencies: Vec<Duration> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("a bench thread"))
        .collect();
    let wall = began.elapsed();
    latencies.sort_unstable();
    Run { latencies, wall }
}

/// One round's p50 and p99 in microseconds, and calls per second.
struct Summary {
    p50: f64,
    p99: f64,
    per_second: f64,
}

fn summarize(run: &Run) -> Summary {
    let at = |q: f64| {
        let index = ((run.latencies.len() as f64 * q) as usize).min(run.latencies.len() - 1);
        run.latencies[index].as_secs_f64() * 1e6
    };
    Summary {
        p50: at(0.50),
        p99: at(0.99),
        per_second: run.latencies.len() as f64 / run.wall.as_secs_f64(),
    }
}

/// Prints the median of each figure over the rounds.
fn report(what: &str, threads: usize, rounds: &[Summary]) {
    let median = |figure: fn(&Summary) -> f64| {
        let mut values: Vec<f64> = rounds.iter().map(figure).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    println!(
        "| {what} | {threads} | {:.1} | {:.1} | {:.0} |",
        median(|s| s.p50),
        median(|s| s.p99),
        median(|s| s.per_second)
    );
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}
