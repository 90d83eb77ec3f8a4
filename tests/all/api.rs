//! The API in process: the service's router called with
//! `tower::ServiceExt::oneshot`, no socket, so each test can look at what a
//! process test cannot time (an action still loading) or reach (the store
//! behind the catalog).

use crate::common;
use crate::common::server::{DESIGNER, INVOKE, METRICS, OPERATOR};

use action_host::{HostConfig, sha256_hex};
use action_host_server::records::RecordQuery;
use action_host_server::{Auth, DataDir, Progress, ServeOptions, Service, Store, Tokens};
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tower::ServiceExt as _;

fn tokens() -> Tokens {
    Tokens::new(
        OPERATOR.into(),
        DESIGNER.into(),
        INVOKE.into(),
        METRICS.into(),
    )
    .unwrap()
}

/// A service on the data directory `dir`, not yet loading what it found.
async fn service(dir: &Path, options: ServeOptions) -> Arc<Service> {
    let config = HostConfig {
        pool_size: 16,
        ..HostConfig::default()
    };
    Service::start(
        config,
        ServeOptions {
            data: dir.to_owned(),
            auth: Auth::Tokens(tokens()),
            ..options
        },
    )
    .await
    .unwrap()
}

/// A started service that has loaded everything it found.
async fn loaded(dir: &Path, options: ServeOptions) -> Arc<Service> {
    let service = service(dir, options).await;
    service.load_in_background(Progress::quiet()).await;
    service
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn call(service: &Service, method: Method, path: &str, token: &str, body: Body) -> Answer {
    call_with(service, method, path, token, &[], body).await
}

async fn call_with(
    service: &Service,
    method: Method,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
    body: Body,
) -> Answer {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(body).unwrap();
    let response = service.router().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

async fn put(service: &Service, name: &str, plugin: &str) -> Answer {
    let path = format!("/v1/actions/{name}");
    let bytes = common::plugin_bytes(plugin);
    call(service, Method::PUT, &path, DESIGNER, Body::from(bytes)).await
}

async fn post(service: &Service, path: &str, token: &str, body: Value) -> Answer {
    call(
        service,
        Method::POST,
        path,
        token,
        Body::from(body.to_string()),
    )
    .await
}

async fn get(service: &Service, path: &str) -> Answer {
    call(service, Method::GET, path, DESIGNER, Body::empty()).await
}

fn greet() -> Value {
    json!({"input": {"first_name": "Ada"}, "context": {"timezone": "Europe/London"}})
}

#[tokio::test]
async fn an_action_still_loading_answers_503_with_retry_after_and_health_says_starting() {
    let dir = tempfile::tempdir().unwrap();
    let file: PathBuf = common::plugin("greeting");
    let service = service(
        dir.path(),
        ServeOptions {
            deploy: vec![("greeting".into(), file)],
            ..ServeOptions::default()
        },
    )
    .await;

    let health = get(&service, "/healthz").await;
    assert_eq!(health.body["status"], "starting");
    assert_eq!(health.body["loading"], json!(["greeting"]));
    let early = post(&service, "/v1/actions/greeting/invoke", INVOKE, greet()).await;
    assert_eq!(early.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(early.body["error"]["code"], "loading");
    assert!(
        early.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    // A name that is not loading is still unknown, not "loading".
    let other = post(&service, "/v1/actions/other/invoke", INVOKE, greet()).await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);

    service.load_in_background(Progress::quiet()).await;
    let health = get(&service, "/healthz").await;
    assert_eq!(health.body, json!({"status": "ok"}));
    let ready = post(&service, "/v1/actions/greeting/invoke", INVOKE, greet()).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
    assert!(ready.body["invocation_id"].as_str().unwrap().len() >= 32);
}

#[tokio::test]
async fn a_component_that_fails_at_start_is_reported_by_health_and_the_rest_serve() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.wasm");
    std::fs::write(&broken, b"\0asm\x01\0\0\0").unwrap();
    let service = loaded(
        dir.path(),
        ServeOptions {
            deploy: vec![
                ("broken".into(), broken),
                ("greeting".into(), common::plugin("greeting")),
            ],
            ..ServeOptions::default()
        },
    )
    .await;
    let health = get(&service, "/healthz").await;
    assert_eq!(health.body["status"], "ok");
    let why = health.body["not_served"]["broken"].as_str().unwrap();
    assert!(why.contains("core WebAssembly module"), "{why}");
    // A load balancer (no token) or the platform's token: the status only,
    // not which actions there are, what failed or why.
    let anonymous = Request::get("/healthz").body(Body::empty()).unwrap();
    let answer = service.router().oneshot(anonymous).await.unwrap();
    let bytes = answer.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        serde_json::from_slice::<Value>(&bytes).unwrap(),
        json!({"status": "ok"})
    );
    let platform = call(&service, Method::GET, "/healthz", INVOKE, Body::empty()).await;
    assert_eq!(platform.body, json!({"status": "ok"}));
    let done = post(&service, "/v1/actions/greeting/invoke", INVOKE, greet()).await;
    assert_eq!(done.status, StatusCode::OK);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_json_with_a_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let service = loaded(dir.path(), ServeOptions::default()).await;
    let missing = get(&service, "/v2/nothing").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.body["error"]["code"], "not-found");
    let wrong = call(
        &service,
        Method::DELETE,
        "/healthz",
        DESIGNER,
        Body::empty(),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong.body["error"]["code"], "method-not-allowed");
    assert_eq!(wrong.body["error"]["message"], "DELETE is not allowed here");
    for answer in [missing, wrong] {
        let id = answer.headers["x-request-id"].to_str().unwrap();
        assert_eq!(id.len(), 36, "{id}");
    }
}

/// A designer cannot delete what the operator set: deleting an action with
/// operator settings would let its next upload run with the host's default
/// limits. The operator can, and so can a designer once they are cleared.
#[tokio::test]
async fn deleting_an_action_with_operator_settings_needs_the_operator() {
    let dir = tempfile::tempdir().unwrap();
    let service = loaded(dir.path(), ServeOptions::default()).await;
    for name in ["limited", "plain"] {
        assert_eq!(
            put(&service, name, "greeting").await.status,
            StatusCode::CREATED
        );
    }
    let settings = json!({"limits": {"deadline_ms": 100}});
    let granted = json!({"grants": ["GET https://api.example.com/"]});
    let set = call(
        &service,
        Method::PUT,
        "/v1/actions/limited/grants",
        OPERATOR,
        Body::from(settings.to_string()),
    )
    .await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.body);
    let delete = |name: &'static str, token: &'static str| {
        let path = format!("/v1/actions/{name}");
        let service = &service;
        async move { call(service, Method::DELETE, &path, token, Body::empty()).await }
    };
    let refused = delete("limited", DESIGNER).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(
        refused.body["error"]["message"],
        "`limited` has grants, secrets or limits the operator set, which deleting it would \
         drop: that needs the operator token"
    );
    let kept = get(&service, "/v1/actions/limited").await;
    assert_eq!(kept.body["settings"]["limits"]["deadline_ms"], 100);
    assert_eq!(
        delete("plain", DESIGNER).await.status,
        StatusCode::NO_CONTENT
    );

    // Cleared by the operator, the designer may delete it.
    let cleared = call(
        &service,
        Method::PUT,
        "/v1/actions/limited/grants",
        OPERATOR,
        Body::from(json!({}).to_string()),
    )
    .await;
    assert_eq!(cleared.status, StatusCode::OK, "{}", cleared.body);
    assert_eq!(
        delete("limited", DESIGNER).await.status,
        StatusCode::NO_CONTENT
    );

    // Grants alike.
    assert_eq!(
        put(&service, "granted", "greeting").await.status,
        StatusCode::CREATED
    );
    let set = call(
        &service,
        Method::PUT,
        "/v1/actions/granted/grants",
        OPERATOR,
        Body::from(granted.to_string()),
    )
    .await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.body);
    assert_eq!(
        delete("granted", DESIGNER).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        delete("granted", OPERATOR).await.status,
        StatusCode::NO_CONTENT
    );

    assert_eq!(
        put(&service, "again", "greeting").await.status,
        StatusCode::CREATED
    );
    let set = call(
        &service,
        Method::PUT,
        "/v1/actions/again/grants",
        OPERATOR,
        Body::from(settings.to_string()),
    )
    .await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.body);
    assert_eq!(
        delete("again", OPERATOR).await.status,
        StatusCode::NO_CONTENT
    );
}

/// Answers carry records and what users said: no cache may keep one and no
/// browser may read one as another type; the page's own files keep theirs.
#[tokio::test]
async fn answers_are_neither_cached_nor_sniffed() {
    let dir = tempfile::tempdir().unwrap();
    let service = loaded(dir.path(), ServeOptions::default()).await;
    put(&service, "greeting", "greeting").await;
    let invoked = post(&service, "/v1/actions/greeting/invoke", INVOKE, greet()).await;
    assert_eq!(invoked.status, StatusCode::OK, "{}", invoked.body);
    for answer in [
        invoked,
        get(&service, "/v1/actions/greeting").await,
        get(&service, "/v1/actions/nope").await,
        get(&service, "/healthz").await,
    ] {
        assert_eq!(
            answer.headers["cache-control"], "no-store",
            "{}",
            answer.body
        );
        assert_eq!(answer.headers["x-content-type-options"], "nosniff");
    }
    let page = get(&service, "/").await;
    assert_eq!(page.headers["cache-control"], "no-cache");
}

/// The `/metrics` text, as a scraper with the metrics token reads it.
async fn metrics_text(service: &Service) -> String {
    let request = Request::get("/metrics")
        .header("authorization", format!("Bearer {METRICS}"))
        .body(Body::empty())
        .unwrap();
    let response = service.router().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Names are written into `/metrics` as labels. An upload under a name no
/// action can have is refused before anything keeps the name, so a designer
/// cannot forge a series with one; and uploads that fail under names an
/// action could have leave nothing behind either.
#[tokio::test]
async fn failed_uploads_leave_no_name_in_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let service = loaded(dir.path(), ServeOptions::default()).await;
    assert_eq!(
        put(&service, "greeting", "greeting").await.status,
        StatusCode::CREATED
    );
    let before = metrics_text(&service).await;
    let forged = "x%22%7D%200%0Aaction_host_invocations_total%7Baction%3D%22pay%22%2C\
                  result%3D%22success%22%7D%201e9%0A%23";
    for name in [forged.to_owned(), "A".repeat(300)] {
        let path = format!("/v1/actions/{name}");
        let answer = call(&service, Method::PUT, &path, DESIGNER, Body::empty()).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            answer.body
        );
    }
    for n in 0..20 {
        let path = format!("/v1/actions/broken-{n}");
        let answer = call(
            &service,
            Method::PUT,
            &path,
            DESIGNER,
            Body::from("not wasm"),
        )
        .await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            answer.body
        );
    }
    let after = metrics_text(&service).await;
    assert!(
        !after.contains("pay") && !after.contains("broken-"),
        "{after}"
    );
    assert_eq!(before.lines().count(), after.lines().count(), "{after}");
    for line in after.lines().filter(|line| !line.starts_with('#')) {
        if let Some((_, rest)) = line.split_once("action=\"") {
            let name = rest.split('"').next().unwrap();
            assert!(action_host::check_name(name).is_ok(), "{line}");
        }
    }
}

/// A name that axum decodes into a path (`..%2F`) is refused on every route
/// that takes a name, before anything reads or removes a file with it: here
/// the record of another data directory beside this one stays untouched, and
/// no answer says which files exist or where the data directory is.
#[tokio::test]
async fn a_name_that_is_a_path_reaches_no_file_outside_the_data_directory() {
    let root = tempfile::tempdir().unwrap();
    let (ours, other) = (root.path().join("data"), root.path().join("other"));
    let neighbour = loaded(&other, ServeOptions::default()).await;
    assert_eq!(
        put(&neighbour, "greeting", "greeting").await.status,
        StatusCode::CREATED
    );
    let victim = other.join("actions").join("greeting.json");
    let before = std::fs::read(&victim).unwrap();
    let service = loaded(&ours, ServeOptions::default()).await;
    assert_eq!(
        put(&service, "greeting", "greeting").await.status,
        StatusCode::CREATED
    );

    let settings = || Body::from(json!({}).to_string());
    for name in [
        "..%2F..%2Fother%2Factions%2Fgreeting",
        "..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "greeting%2F..%2Fgreeting",
        "Greeting",
    ] {
        let base = format!("/v1/actions/{name}");
        for (method, path, token, body) in [
            (Method::GET, base.clone(), DESIGNER, Body::empty()),
            (Method::DELETE, base.clone(), DESIGNER, Body::empty()),
            (
                Method::GET,
                format!("{base}/versions"),
                DESIGNER,
                Body::empty(),
            ),
            (
                Method::POST,
                format!("{base}/rollback"),
                DESIGNER,
                Body::from(json!({"version": 1}).to_string()),
            ),
            (Method::PUT, format!("{base}/grants"), OPERATOR, settings()),
            (Method::PUT, format!("{base}/config"), DESIGNER, settings()),
            (
                Method::PUT,
                format!("{base}/recording"),
                DESIGNER,
                settings(),
            ),
            (
                Method::GET,
                format!("{base}/invocations"),
                DESIGNER,
                Body::empty(),
            ),
            (
                Method::POST,
                format!("{base}/invoke"),
                INVOKE,
                Body::from(greet().to_string()),
            ),
            (
                Method::POST,
                format!("{base}/try"),
                DESIGNER,
                Body::from(greet().to_string()),
            ),
        ] {
            let answer = call(&service, method.clone(), &path, token, body).await;
            let message = answer.body["error"]["message"].as_str().unwrap_or_default();
            assert_eq!(
                answer.status,
                StatusCode::NOT_FOUND,
                "{method} {path}: {}",
                answer.body
            );
            assert_eq!(
                answer.body["error"]["code"], "unknown-action",
                "{method} {path}"
            );
            assert!(
                message.starts_with("no action can be deployed as")
                    && message.ends_with("a name is 1 to 64 characters of a-z, 0-9, '-' and '_'")
                    && !message.contains(root.path().to_str().unwrap()),
                "{method} {path}: {message}"
            );
        }
        // An upload under such a name is refused by the load pipeline, as before.
        let upload = put(&service, name, "greeting").await;
        assert_eq!(
            upload.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            upload.body
        );
        assert_eq!(upload.body["error"]["code"], "invalid-action");
    }
    let long = put(&service, &"a".repeat(5000), "greeting").await;
    assert_eq!(
        long.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        long.body
    );
    let message = long.body["error"]["message"].as_str().unwrap();
    assert!(message.len() < 400, "the name is echoed whole: {message}");
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        before,
        "the neighbour's record changed"
    );
    let served = post(&neighbour, "/v1/actions/greeting/invoke", INVOKE, greet()).await;
    assert_eq!(served.status, StatusCode::OK, "{}", served.body);

    // The store itself refuses such a name or hash, whoever asks it.
    let key = DataDir::kept_key(&ours).unwrap();
    let store = DataDir::open(&ours, &key).unwrap();
    let name = store
        .record("../../other/actions/greeting")
        .await
        .unwrap_err();
    let folder = store.invocations("../other", &RecordQuery::default()).await;
    let hash = store.version("../../other/versions/x").await.unwrap_err();
    for (error, says) in [
        (format!("{name:#}"), "invalid action name"),
        (format!("{:#}", folder.unwrap_err()), "invalid action name"),
        (format!("{hash:#}"), "is not a SHA-256"),
    ] {
        assert!(error.contains(says), "{error}");
    }
}

/// A platform's or load balancer's request id is kept, in the answer and in
/// the log, so one id follows a request through both systems; one too long
/// to put on every log line, or not visible ASCII, is replaced.
#[tokio::test]
async fn a_clients_request_id_is_answered_and_logged_unless_it_is_unfit() {
    let dir = tempfile::tempdir().unwrap();
    let service = loaded(dir.path(), ServeOptions::default()).await;
    let sent = "Root=1-67891233-abcdef012345678912345678";
    let (answer, lines) = log_of(
        "info",
        call_with(
            &service,
            Method::POST,
            "/v1/actions/nothing/invoke",
            INVOKE,
            &[("x-request-id", sent)],
            Body::from("{}"),
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.headers["x-request-id"], sent);
    assert!(
        lines.is_empty(),
        "a 404 is not the service's failure: {lines:?}"
    );

    let (answer, lines) = log_of(
        "info",
        call_with(
            &service,
            Method::GET,
            "/metrics",
            "not-a-token",
            &[("x-request-id", sent)],
            Body::empty(),
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.headers["x-request-id"], sent);
    assert!(lines.is_empty(), "{lines:?}");

    let too_long = "x".repeat(action_host_server::MAX_REQUEST_ID_LEN + 1);
    for unfit in [too_long.as_str(), "two words"] {
        let answer = call_with(
            &service,
            Method::GET,
            "/healthz",
            DESIGNER,
            &[("x-request-id", unfit)],
            Body::empty(),
        )
        .await;
        let id = answer.headers["x-request-id"].to_str().unwrap();
        assert_ne!(id, unfit);
        assert_eq!(id.len(), 36, "a new UUID: {id}");
    }
}

/// The log lines a call writes, as the service writes them (JSON, through
/// the service's filter for `spec`), while `run` runs on this thread.
async fn log_of<F: std::future::Future>(spec: &str, run: F) -> (F::Output, Vec<Value>) {
    use tracing_subscriber::layer::SubscriberExt as _;
    #[derive(Clone, Default)]
    struct Lines(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines::default();
    let (filter, refused) = action_host_server::logging::filter(Some(spec));
    assert_eq!(refused, None);
    let writer = lines.clone();
    let subscriber = tracing_subscriber::registry().with(filter).with(
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(move || writer.clone()),
    );
    let output = {
        let _log = tracing::dispatcher::set_default(&tracing::Dispatch::new(subscriber));
        run.await
    };
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (output, lines)
}

/// A call's log lines are in its request's one span, which names the request
/// id (as the answer's `x-request-id` does), the action and the invocation:
/// an operator goes from an answer to its lines.
#[tokio::test]
async fn a_call_logs_in_its_request_span_with_the_action_and_the_invocation() {
    let dir = tempfile::tempdir().unwrap();
    let service = loaded(dir.path(), ServeOptions::default()).await;
    assert_eq!(
        put(&service, "greeting", "greeting").await.status,
        StatusCode::CREATED
    );
    let (answer, lines) = log_of(
        "debug",
        post(&service, "/v1/actions/greeting/invoke", INVOKE, greet()),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let request_id = answer.headers["x-request-id"].to_str().unwrap();
    let done = lines
        .iter()
        .find(|line| line["fields"]["took_us"].is_u64())
        .unwrap_or_else(|| panic!("no line says how long the call took: {lines:?}"));
    assert_eq!(done["fields"]["result"], "success");
    assert_eq!(
        done["spans"],
        json!([{
            "name": "request",
            "method": "POST",
            "path": "/v1/actions/greeting/invoke",
            "request_id": request_id,
            "action": "greeting",
            "invocation_id": answer.body["invocation_id"],
        }]),
        "{done}"
    );
    // At the default level a successful call writes nothing.
    let (answer, lines) = log_of(
        "info",
        post(&service, "/v1/actions/greeting/invoke", INVOKE, greet()),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(lines, Vec::<Value>::new());

    // A server error is logged, in the request's span, also when the
    // filter lets only warnings and errors through.
    assert_eq!(
        put(&service, "fixture", "fixture").await.status,
        StatusCode::CREATED
    );
    for spec in ["info", "warn"] {
        let panicking = json!({"input": {"behave": "panic"}});
        let (answer, lines) = log_of(
            spec,
            post(&service, "/v1/actions/fixture/invoke", INVOKE, panicking),
        )
        .await;
        assert!(answer.status.is_server_error(), "{}", answer.body);
        let failed = lines
            .iter()
            .find(|line| line["fields"]["message"] == "response failed")
            .unwrap_or_else(|| panic!("{spec}: no line for the server error: {lines:?}"));
        assert_eq!(failed["level"], "ERROR");
        assert_eq!(
            failed["fields"]["status"],
            answer.status.as_u16(),
            "{failed}"
        );
        assert!(failed["fields"]["latency_ms"].is_f64(), "{failed}");
        let span = &failed["spans"][0];
        assert_eq!(span["action"], "fixture", "{spec}: {failed}");
        assert_eq!(
            span["request_id"],
            answer.headers["x-request-id"].to_str().unwrap(),
            "{spec}: {failed}"
        );
        assert_eq!(
            span["invocation_id"], answer.body["error"]["invocation_id"],
            "{spec}: {failed}"
        );
    }
}

#[tokio::test]
async fn versions_are_kept_and_a_rollback_serves_an_earlier_one_without_compiling() {
    let dir = tempfile::tempdir().unwrap();
    let service = loaded(dir.path(), ServeOptions::default()).await;
    assert_eq!(
        put(&service, "thing", "greeting").await.status,
        StatusCode::CREATED
    );
    let second = put(&service, "thing", "fixture").await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.body["version"], 2);
    // The same bytes again are not a new version.
    assert_eq!(put(&service, "thing", "fixture").await.body["version"], 2);

    let versions = get(&service, "/v1/actions/thing/versions").await;
    assert_eq!(versions.status, StatusCode::OK);
    let list = versions.body["versions"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["version"], 2, "newest first");
    assert_eq!(list[0]["serving"], true);
    assert_eq!(list[1]["serving"], false);
    assert_eq!(list[1]["uploaded_by"], "designer");
    let greeting_sha = sha256_hex(&common::plugin_bytes("greeting"));
    assert_eq!(list[1]["sha256"], greeting_sha);
    assert!(list[1]["manifest_version"].as_str().unwrap().contains('.'));
    assert!(list[1]["uploaded_at"].as_str().unwrap().ends_with('Z'));

    let compiled = service.host().compilations();
    let back = post(
        &service,
        "/v1/actions/thing/rollback",
        DESIGNER,
        json!({"version": 1}),
    )
    .await;
    assert_eq!(back.status, StatusCode::OK, "{}", back.body);
    assert_eq!(back.body["version"], 1);
    assert_eq!(back.body["sha256"], greeting_sha);
    assert_eq!(
        service.host().compilations(),
        compiled,
        "read from the cache"
    );
    let done = post(&service, "/v1/actions/thing/invoke", INVOKE, greet()).await;
    assert_eq!(done.status, StatusCode::OK);
    assert!(
        done.body["attributes"]["greeting"]
            .as_str()
            .unwrap()
            .contains("Ada")
    );
    // Rolling back does not make a version; the next upload is number 3.
    let versions = get(&service, "/v1/actions/thing/versions").await;
    assert_eq!(versions.body["versions"][1]["serving"], true);

    // By SHA-256 (in either case), forward again.
    let fixture_sha = sha256_hex(&common::plugin_bytes("fixture"));
    let forward = post(
        &service,
        "/v1/actions/thing/rollback",
        DESIGNER,
        json!({"sha256": fixture_sha.to_uppercase()}),
    )
    .await;
    assert_eq!(forward.body["version"], 2);
    assert_eq!(
        put(&service, "thing", "order_lookup").await.body["version"],
        3
    );

    // A version it does not have, or a body that names none, changes nothing.
    let unknown = post(
        &service,
        "/v1/actions/thing/rollback",
        DESIGNER,
        json!({"version": 9}),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.body["error"]["code"], "unknown-version");
    let message = unknown.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("no version 9") && message.contains("1, 2, 3"),
        "{message}"
    );
    for bad in [
        json!({}),
        json!({"version": 1, "sha256": "x"}),
        json!({"version": "one"}),
    ] {
        let refused = post(&service, "/v1/actions/thing/rollback", DESIGNER, bad).await;
        assert_eq!(
            refused.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            refused.body
        );
    }
    // What is not a SHA-256 is named as such, not looked up as a file or
    // echoed back at length.
    for bad in ["../../versions/x".to_owned(), "f".repeat(100_000)] {
        let refused = post(
            &service,
            "/v1/actions/thing/rollback",
            DESIGNER,
            json!({ "sha256": bad }),
        )
        .await;
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
        let message = refused.body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("64 hexadecimal digits") && message.len() < 200,
            "{message}"
        );
    }
    assert_eq!(get(&service, "/v1/actions/thing").await.body["version"], 3);
    let absent = post(
        &service,
        "/v1/actions/nothing/rollback",
        DESIGNER,
        json!({"version": 1}),
    )
    .await;
    assert_eq!(absent.status, StatusCode::NOT_FOUND);
    // The invoke token may not roll back.
    let invoker = post(
        &service,
        "/v1/actions/thing/rollback",
        INVOKE,
        json!({"version": 1}),
    )
    .await;
    assert_eq!(invoker.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_rollback_keeps_the_current_settings_unless_asked_for_the_uploaded_ones() {
    let dir = tempfile::tempdir().unwrap();
    let service = loaded(dir.path(), ServeOptions::default()).await;
    put(&service, "fixture", "fixture").await;
    let config = |value: &str| Body::from(json!({"region": value}).to_string());
    call(
        &service,
        Method::PUT,
        "/v1/actions/fixture/config",
        DESIGNER,
        config("eu"),
    )
    .await;
    // Version 2 is uploaded with the settings serving then: region eu.
    let padded = common::padded::padded(
        &common::plugin_bytes("fixture"),
        common::padded::Extra {
            instances: 1,
            ..Default::default()
        },
    );
    let path = "/v1/actions/fixture";
    let second = call(&service, Method::PUT, path, DESIGNER, Body::from(padded)).await;
    assert_eq!(second.body["version"], 2, "{}", second.body);
    call(
        &service,
        Method::PUT,
        "/v1/actions/fixture/config",
        DESIGNER,
        config("us"),
    )
    .await;

    let region = |answer: &Answer| answer.body["settings"]["config"]["region"].clone();
    let rollback = "/v1/actions/fixture/rollback";
    let current = post(&service, rollback, DESIGNER, json!({"version": 1})).await;
    assert_eq!(region(&current), "us");
    // A designer may not bring back the grants an old version had.
    let designer = post(
        &service,
        rollback,
        DESIGNER,
        json!({"version": 2, "settings": "as-uploaded"}),
    )
    .await;
    assert_eq!(designer.status, StatusCode::FORBIDDEN, "{}", designer.body);
    let uploaded = post(
        &service,
        rollback,
        OPERATOR,
        json!({"version": 2, "settings": "as-uploaded"}),
    )
    .await;
    assert_eq!(region(&uploaded), "eu", "{}", uploaded.body);
    let first = post(
        &service,
        rollback,
        OPERATOR,
        json!({"version": 1, "settings": "as-uploaded"}),
    )
    .await;
    assert_eq!(first.body["settings"]["config"], json!({}));
}

#[tokio::test]
async fn only_the_last_versions_are_kept_and_the_others_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let service = loaded(
        dir.path(),
        ServeOptions {
            keep_versions: 2,
            ..ServeOptions::default()
        },
    )
    .await;
    for plugin in ["greeting", "fixture", "order_lookup"] {
        put(&service, "thing", plugin).await;
    }
    let versions = get(&service, "/v1/actions/thing/versions").await;
    let numbers: Vec<&Value> = versions.body["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| &v["version"])
        .collect();
    assert_eq!(numbers, [&json!(3), &json!(2)]);
    let greeting_sha = sha256_hex(&common::plugin_bytes("greeting"));
    let stored = dir.path().join(format!("versions/{greeting_sha}.wasm"));
    assert!(!stored.exists(), "version 1 is no longer kept");
    let artifacts = || -> Vec<String> {
        std::fs::read_dir(dir.path().join("artifacts"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect()
    };
    let cached = artifacts();
    assert!(!cached.is_empty());
    assert!(
        !cached.iter().any(|name| name.starts_with(&greeting_sha)),
        "version 1's artifacts are kept: {cached:?}"
    );
    let gone = post(
        &service,
        "/v1/actions/thing/rollback",
        DESIGNER,
        json!({"version": 1}),
    )
    .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);

    // Deleting the action removes its versions too.
    let path = "/v1/actions/thing";
    assert_eq!(
        call(&service, Method::DELETE, path, DESIGNER, Body::empty())
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let left = std::fs::read_dir(dir.path().join("versions"))
        .unwrap()
        .count();
    assert_eq!(left, 0);
    assert_eq!(artifacts(), Vec::<String>::new(), "nor their artifacts");
}

#[tokio::test]
async fn a_change_that_lost_a_race_for_the_record_is_409_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let service = loaded(dir.path(), ServeOptions::default()).await;
    let read = put(&service, "fixture", "fixture").await;
    let revision = read.body["revision"].as_u64().unwrap();
    // Another writer changes the record behind the catalog's back.
    let key = DataDir::kept_key(dir.path()).unwrap();
    let store = DataDir::open(dir.path(), &key).unwrap();
    let mut record = store.record("fixture").await.unwrap().unwrap();
    record.revision += 1;
    record.settings.config.insert("region".into(), "us".into());
    store
        .swap_record("fixture", Some(revision), Some(record))
        .await
        .unwrap();

    // A change made for the revision read before is refused...
    let config = || Body::from(json!({"region": "eu"}).to_string());
    let path = "/v1/actions/fixture/config";
    let lost = call_with(
        &service,
        Method::PUT,
        path,
        DESIGNER,
        &[("if-match", &format!("\"{revision}\""))],
        config(),
    )
    .await;
    assert_eq!(lost.status, StatusCode::CONFLICT, "{}", lost.body);
    assert_eq!(lost.body["error"]["code"], "conflict");
    let message = lost.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("revision {}", revision + 1)),
        "{message}"
    );
    assert_eq!(
        store
            .record("fixture")
            .await
            .unwrap()
            .unwrap()
            .settings
            .config["region"],
        "us",
        "the refused change wrote nothing"
    );
    // ...and one made without a precondition builds on what is stored.
    let bad = call_with(
        &service,
        Method::PUT,
        path,
        DESIGNER,
        &[("if-match", "latest")],
        config(),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    assert!(
        bad.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("If-Match")
    );
    let made = call(&service, Method::PUT, path, DESIGNER, config()).await;
    assert_eq!(made.status, StatusCode::OK, "{}", made.body);
    assert_eq!(made.body["revision"], revision + 2);
    assert_eq!(made.body["settings"]["config"], json!({"region": "eu"}));
}

/// Two services on one store, as replicas are on one database.
async fn replicas(dir: &Path) -> (Arc<Service>, Arc<Service>) {
    let key = DataDir::kept_key(dir).unwrap();
    let store: Arc<dyn Store> = Arc::new(DataDir::open(dir, &key).unwrap());
    let start = || {
        Service::start_on(
            Arc::clone(&store),
            &key,
            HostConfig {
                pool_size: 16,
                ..HostConfig::default()
            },
            ServeOptions {
                data: dir.to_owned(),
                auth: Auth::Tokens(tokens()),
                ..ServeOptions::default()
            },
        )
    };
    let (a, b) = (start().await.unwrap(), start().await.unwrap());
    a.load_in_background(Progress::quiet()).await;
    b.load_in_background(Progress::quiet()).await;
    (a, b)
}

/// Waits (up to 10 s) until `path` on `service` answers what `done` accepts.
async fn eventually(service: &Service, path: &str, done: impl Fn(&Answer) -> bool) -> Answer {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let answer = get(service, path).await;
        if done(&answer) || std::time::Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn services_on_one_store_serve_each_other_s_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = replicas(dir.path()).await;
    let first = put(&a, "greeting", "greeting").await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let seen = eventually(&b, "/v1/actions/greeting", |a| a.status == StatusCode::OK).await;
    assert_eq!(seen.body["sha256"], first.body["sha256"], "{}", seen.body);
    let called = post(&b, "/v1/actions/greeting/invoke", INVOKE, greet()).await;
    assert_eq!(called.status, StatusCode::OK, "{}", called.body);

    let body = Body::from(json!({"tone": "warm"}).to_string());
    let configured = call(
        &b,
        Method::PUT,
        "/v1/actions/greeting/config",
        DESIGNER,
        body,
    )
    .await;
    assert_eq!(configured.status, StatusCode::OK, "{}", configured.body);
    let seen = eventually(&a, "/v1/actions/greeting", |a| {
        a.body["settings"]["config"]["tone"] == "warm"
    })
    .await;
    assert_eq!(
        seen.body["revision"], configured.body["revision"],
        "{}",
        seen.body
    );

    let second = put(&a, "greeting", "fixture").await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    eventually(&b, "/v1/actions/greeting", |a| a.body["version"] == 2).await;
    let back = post(
        &b,
        "/v1/actions/greeting/rollback",
        DESIGNER,
        json!({"version": 1}),
    )
    .await;
    assert_eq!(back.status, StatusCode::OK, "{}", back.body);
    let seen = eventually(&a, "/v1/actions/greeting", |a| a.body["version"] == 1).await;
    assert_eq!(seen.body["sha256"], first.body["sha256"]);

    let gone = call(
        &a,
        Method::DELETE,
        "/v1/actions/greeting",
        DESIGNER,
        Body::empty(),
    )
    .await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);
    let seen = eventually(&b, "/v1/actions/greeting", |a| {
        a.status == StatusCode::NOT_FOUND
    })
    .await;
    assert_eq!(seen.status, StatusCode::NOT_FOUND, "{}", seen.body);
}

#[tokio::test]
async fn of_two_changes_for_one_revision_on_two_services_one_is_409() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = replicas(dir.path()).await;
    let read = put(&a, "fixture", "fixture").await;
    let revision = read.body["revision"].to_string();
    eventually(&b, "/v1/actions/fixture", |a| a.status == StatusCode::OK).await;
    let path = "/v1/actions/fixture/config";
    let change = |service, region: &'static str| {
        let body = Body::from(json!({"region": region}).to_string());
        let revision = revision.clone();
        async move {
            call_with(
                service,
                Method::PUT,
                path,
                DESIGNER,
                &[("if-match", &revision)],
                body,
            )
            .await
        }
    };
    let (one, other) = tokio::join!(change(&a, "eu"), change(&b, "us"));
    let mut statuses = [one.status, other.status];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::CONFLICT],
        "{} {}",
        one.body,
        other.body
    );
    let won = if one.status == StatusCode::OK {
        one
    } else {
        other
    };
    for service in [&a, &b] {
        let seen = eventually(service, "/v1/actions/fixture", |a| {
            a.body["revision"] == won.body["revision"]
        })
        .await;
        assert_eq!(
            seen.body["settings"]["config"],
            won.body["settings"]["config"]
        );
    }
}

#[tokio::test]
async fn a_record_written_before_versions_were_kept_restores_with_its_one_version() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = common::plugin_bytes("greeting");
    let sha256 = sha256_hex(&bytes);
    std::fs::create_dir_all(dir.path().join("versions")).unwrap();
    std::fs::create_dir_all(dir.path().join("actions")).unwrap();
    std::fs::write(dir.path().join(format!("versions/{sha256}.wasm")), &bytes).unwrap();
    let old = json!({"sha256": sha256, "version": 4, "settings": {}});
    std::fs::write(dir.path().join("actions/greeting.json"), old.to_string()).unwrap();

    let service = loaded(dir.path(), ServeOptions::default()).await;
    let versions = get(&service, "/v1/actions/greeting/versions").await;
    assert_eq!(
        versions.body["versions"][0]["version"], 4,
        "{}",
        versions.body
    );
    assert_eq!(versions.body["versions"][0]["serving"], true);
    let next = put(&service, "greeting", "fixture").await;
    assert_eq!(next.body["version"], 5);
}

#[tokio::test]
async fn uploads_in_progress_hold_at_most_their_room_and_the_next_one_waits() {
    let dir = tempfile::tempdir().unwrap();
    // Room for three uploads of the largest size: one compiling and two more.
    let service = loaded(
        dir.path(),
        ServeOptions {
            max_upload_bytes: 4 << 20,
            max_parallel_compiles: 1,
            body_timeout: std::time::Duration::from_secs(3),
            ..ServeOptions::default()
        },
    )
    .await;
    // An upload whose body never comes, declaring `length` or nothing.
    let stalled = |name: &'static str, length: Option<usize>| {
        let service = Arc::clone(&service);
        tokio::spawn(async move {
            let body =
                Body::from_stream(futures::stream::pending::<Result<Vec<u8>, std::io::Error>>());
            let length = length.map(|n| n.to_string());
            let headers: Vec<(&str, &str)> = length
                .iter()
                .map(|n| ("content-length", n.as_str()))
                .collect();
            let path = format!("/v1/actions/{name}");
            call_with(&service, Method::PUT, &path, DESIGNER, &headers, body).await
        })
    };
    let settle = || tokio::time::sleep(std::time::Duration::from_millis(200));

    let first = stalled("first", Some(4 << 20));
    let second = stalled("second", Some(4 << 20));
    settle().await;
    // A third of the room is left, which a small component fits in.
    let small = put(&service, "small", "greeting").await;
    assert_eq!(small.status, StatusCode::CREATED, "{}", small.body);
    assert!(!first.is_finished() && !second.is_finished());

    // A body of no declared length takes the room of the largest upload.
    let third = stalled("third", None);
    settle().await;
    // A request without a body takes no room: a replay with none is
    // answered at once (here, that there is no such call).
    let replay = call(
        &service,
        Method::POST,
        "/v1/invocations/0000/replay",
        DESIGNER,
        Body::empty(),
    )
    .await;
    assert_eq!(replay.status, StatusCode::NOT_FOUND, "{}", replay.body);
    assert!(!first.is_finished() && !second.is_finished());
    let waited = put(&service, "waited", "greeting").await;
    assert!(
        first.is_finished() && second.is_finished(),
        "the upload was read while the room was full"
    );
    assert_eq!(waited.status, StatusCode::CREATED, "{}", waited.body);
    for stalled in [first, second, third] {
        let answer = stalled.await.unwrap();
        assert_eq!(
            answer.status,
            StatusCode::REQUEST_TIMEOUT,
            "{}",
            answer.body
        );
    }
    let list = get(&service, "/v1/actions").await;
    let names: Vec<&str> = list.body["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["small", "waited"]);
}
