//! Where the time of one `POST /v1/actions/greeting/invoke` goes: the same
//! call measured at each layer of the service, one layer added at a time, on
//! one thread and in one run:
//!
//! 1. the sandbox: `Prepared::invoke` (JSON input in, the fresh instance, the
//!    outcome out);
//! 2. the catalog: admission bounds, metrics, the call's span;
//! 3. the axum router, in process (`oneshot`): request id and span,
//!    routing, the token check, reading and parsing the JSON body, the
//!    context, and writing the JSON answer;
//! 4. the same router with the service's log subscriber (`info`, text, to a
//!    sink), as `action-host serve` runs it;
//! 5. HTTP/1.1 over loopback on one keep-alive connection: hyper's parsing
//!    and writing, the listener, the socket round trip (the client's share
//!    included).
//!
//! `cargo xtask bench-request` builds the plugins and runs this (production
//! profile). Layers alternate within each round so drift hurts all alike;
//! each figure is the median over rounds of the round's median.

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use action_host::{CallContext, HostConfig};
use action_host_server::{Auth, ServeOptions, Service, Tokens};
use axum::body::Body;
use http_body_util::BodyExt as _;
use serde_json::{Map, Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use tower::ServiceExt as _;

const ROUNDS: usize = 5;
const CALLS: usize = 5_000;
const WARMUP: usize = 1_000;
const TOKEN: &str = "bench-request-invoke-token";

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(measure(&root))
}

fn body() -> Value {
    json!({
        "input": {"first_name": "Ada Lovelace", "is_member": true, "membership_tier": "gold"},
        "context": {"timezone": "Europe/London"}
    })
}

async fn measure(root: &Path) -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let service = Service::start(
        HostConfig {
            pool_size: 64,
            ..HostConfig::default()
        },
        ServeOptions {
            data: data.path().to_owned(),
            auth: Auth::Tokens(
                Tokens::new(
                    "bench-request-operator-token".into(),
                    "bench-request-designer-token".into(),
                    TOKEN.into(),
                    "bench-request-metrics-token".into(),
                )
                .map_err(anyhow::Error::msg)?,
            ),
            deploy: vec![(
                "greeting".into(),
                root.join("plugins/target/wasm32-wasip2/release/greeting.wasm"),
            )],
            ..ServeOptions::default()
        },
    )
    .await?;
    service
        .load_in_background(action_host_server::Progress::quiet())
        .await;
    let catalog = std::sync::Arc::clone(service.catalog());
    let bytes = std::fs::read(root.join("plugins/target/wasm32-wasip2/release/greeting.wasm"))?;
    let sandbox = catalog
        .host()
        .prepare("greeting", &bytes, Default::default(), None)
        .await?;
    let request = body();
    let input: Map<String, Value> = request["input"].as_object().unwrap().clone();
    let context = || CallContext::from_json(&request["context"]).unwrap();
    let encoded = request.to_string();
    let router = service.router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(action_host_server::serve(
        std::sync::Arc::clone(&service),
        listener,
    ));
    let stream = tokio::net::TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let log = {
        use tracing_subscriber::layer::SubscriberExt as _;
        tracing_subscriber::registry()
            .with(action_host_server::logging::filter(None).0)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::sink)
                    .with_ansi(false)
                    .with_target(false)
                    .fmt_fields(action_host_server::logging::PlainFields),
            )
    };
    let log = tracing::Dispatch::new(log);

    let layers = [
        "sandbox: Prepared::invoke",
        "+ catalog: admission, metrics, span",
        "+ axum router in process: auth, body, JSON",
        "+ the service's log subscriber (info)",
        "+ HTTP/1.1 over loopback, keep-alive",
    ];
    let mut medians: Vec<Vec<Duration>> = vec![Vec::new(); layers.len()];
    for round in 0..=ROUNDS {
        for (layer, medians) in medians.iter_mut().enumerate() {
            let calls = if round == 0 { WARMUP } else { CALLS };
            let mut times = Vec::with_capacity(calls);
            let _logging = (layer >= 3).then(|| tracing::dispatcher::set_default(&log));
            for _ in 0..calls {
                let started = Instant::now();
                match layer {
                    0 => {
                        let done = sandbox.invoke(context(), &input).await?;
                        assert!(done.success);
                    }
                    1 => {
                        let done = catalog
                            .invoke("greeting", context(), &input)
                            .await
                            .map_err(|e| anyhow::anyhow!("{e}"))?;
                        assert!(done.success);
                    }
                    2 | 3 => call_router(&router, &encoded).await?,
                    _ => {
                        let request = hyper::Request::post("/v1/actions/greeting/invoke")
                            .header("host", "bench")
                            .header("authorization", format!("Bearer {TOKEN}"))
                            .header("content-type", "application/json")
                            .body(http_body_util::Full::new(bytes::Bytes::from(
                                encoded.clone(),
                            )))?;
                        let response = sender.send_request(request).await?;
                        anyhow::ensure!(response.status() == 200, "{}", response.status());
                        response.into_body().collect().await?;
                    }
                }
                times.push(started.elapsed());
            }
            if round > 0 {
                times.sort();
                medians.push(times[times.len() / 2]);
            }
        }
    }
    println!(
        "one call of greeting.wasm, one thread, {CALLS} calls per layer per round, median of {ROUNDS} rounds (spread over rounds):"
    );
    println!("| layer | p50 (us) | added (us) |");
    println!("| --- | ---: | ---: |");
    let mut previous = Duration::ZERO;
    for (layer, mut rounds) in layers.iter().zip(medians) {
        rounds.sort();
        let median = rounds[rounds.len() / 2];
        let (low, high) = (rounds[0], rounds[rounds.len() - 1]);
        println!(
            "| {layer} | {:.1} ({:.1}-{:.1}) | {:+.1} |",
            us(median),
            us(low),
            us(high),
            us(median) - us(previous)
        );
        previous = median;
    }
    Ok(())
}

async fn call_router(router: &action_host_server::Api, body: &str) -> anyhow::Result<()> {
    let request = axum::http::Request::post("/v1/actions/greeting/invoke")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))?;
    let response = router.clone().oneshot(request).await?;
    anyhow::ensure!(response.status() == 200, "{}", response.status());
    response.into_body().collect().await?;
    Ok(())
}

fn us(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}
