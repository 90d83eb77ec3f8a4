//! The baseline of the service benchmark: a native hyper webhook server doing
//! the greeting action's work, with the same request and answer as
//! `POST /v1/actions/greeting/invoke` (bearer token, JSON in and out) but no
//! sandbox. `cargo xtask bench-service` runs it beside `action-host serve`.
//!
//! `cargo run --release --example native_webhook -- 127.0.0.1:8091`

// The same allocator as the `action-host` binary it is measured beside.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../../host/benches/native_greeting.rs"]
mod native_greeting;

use action_host::CallContext;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use std::time::Instant;
use subtle::ConstantTimeEq;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8091".into());
    let token: &'static str = std::env::var("ACTION_HOST_INVOKE_TOKEN")
        .unwrap_or_default()
        .leak();
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    eprintln!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| handle(request, token));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    request: Request<hyper::body::Incoming>,
    token: &str,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let started = Instant::now();
    let authorized = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|presented| bool::from(presented.as_bytes().ct_eq(token.as_bytes())));
    if !authorized {
        return Ok(answer(
            StatusCode::UNAUTHORIZED,
            json!({"error": {"code": "unauthorized"}}),
        ));
    }
    if request.uri().path() != "/v1/actions/greeting/invoke" {
        return Ok(answer(
            StatusCode::NOT_FOUND,
            json!({"error": {"code": "not-found"}}),
        ));
    }
    let body = request.into_body().collect().await?.to_bytes();
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return Ok(answer(
            StatusCode::BAD_REQUEST,
            json!({"error": {"code": "malformed-json"}}),
        ));
    };
    let context = body
        .get("context")
        .map_or(Ok(CallContext::default()), CallContext::from_json);
    let input = body.get("input").and_then(Value::as_object);
    let (Ok(context), Some(input)) = (context, input) else {
        return Ok(answer(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"error": {"code": "invalid-input"}}),
        ));
    };
    match native_greeting::native_greeting(&context, input) {
        Ok(mut done) => {
            done["duration_ms"] = json!(started.elapsed().as_secs_f64() * 1e3);
            Ok(answer(StatusCode::OK, done))
        }
        Err(message) => Ok(answer(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"error": {"code": "invalid-input", "message": message}}),
        )),
    }
}

fn answer(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid response")
}
