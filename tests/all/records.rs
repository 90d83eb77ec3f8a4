//! Invocation records: which calls leave one, what it holds (the outbound
//! exchanges with secrets redacted), the API that lists and shows them, the
//! bound on the queue, and both stores' retention.

use crate::common;
use crate::common::mock::Mock;
use crate::common::server::{DESIGNER, INVOKE, METRICS, OPERATOR};

use action_host::{CallContext, HostConfig};
use action_host_server::records::{
    InvocationRecord, RecordQuery, RecordedError, Recorder, Retention,
};
use action_host_server::{Auth, DataDir, Postgres, Progress, ServeOptions, Service, Store, Tokens};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt as _;

const SECRET: &str = "sk-records-test-7f3a9c";

async fn service(dir: &std::path::Path) -> Arc<Service> {
    let service = Service::start(
        HostConfig {
            pool_size: 16,
            ..HostConfig::default()
        },
        ServeOptions {
            data: dir.to_owned(),
            auth: Auth::Tokens(
                Tokens::new(
                    OPERATOR.into(),
                    DESIGNER.into(),
                    INVOKE.into(),
                    METRICS.into(),
                )
                .unwrap(),
            ),
            ..ServeOptions::default()
        },
    )
    .await
    .unwrap();
    service.load_in_background(Progress::quiet()).await;
    service
}

async fn call(
    service: &Service,
    method: Method,
    path: &str,
    token: &str,
    body: Body,
) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .body(body)
        .unwrap();
    let response = service.router().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn send(
    service: &Service,
    method: Method,
    path: &str,
    token: &str,
    body: Value,
) -> (StatusCode, Value) {
    call(service, method, path, token, Body::from(body.to_string())).await
}

async fn invoke(service: &Service, input: Value) -> (StatusCode, Value) {
    let body = json!({"input": input, "context": {"user_id": "u-7", "timezone": "Europe/Paris"}});
    send(
        service,
        Method::POST,
        "/v1/actions/fixture/invoke",
        INVOKE,
        body,
    )
    .await
}

/// The fixture, granted the mock and a secret it may send there.
async fn fixture_with_grants(service: &Service, mock: &Mock) {
    let bytes = common::plugin_bytes("fixture");
    let (status, body) = call(
        service,
        Method::PUT,
        "/v1/actions/fixture",
        DESIGNER,
        Body::from(bytes),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let grant = format!("GET http://127.0.0.1:{}/echo-json", mock.port);
    let settings = json!({
        "grants": [grant],
        "secrets": [{"name": "api", "value": SECRET, "allow": [grant]}],
    });
    let (status, body) = send(
        service,
        Method::PUT,
        "/v1/actions/fixture/grants",
        OPERATOR,
        settings,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A service on a new data directory with the fixture granted the mock,
/// recording as actions do by default.
async fn fixture_service() -> (tempfile::TempDir, Mock, Arc<Service>) {
    let dir = tempfile::tempdir().unwrap();
    let mock = Mock::start().await;
    let service = service(dir.path()).await;
    fixture_with_grants(&service, &mock).await;
    (dir, mock, service)
}

/// The list of the fixture's records once it holds `n` (records are written
/// off the call's path, so they arrive a moment later).
async fn listed(service: &Service, query: &str, n: usize) -> Value {
    let path = format!("/v1/actions/fixture/invocations{query}");
    common::eventually(&format!("{n} records listed at {path}"), || async {
        let (status, body) = call(service, Method::GET, &path, DESIGNER, Body::empty()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        (body["invocations"].as_array().unwrap().len() >= n).then_some(body)
    })
    .await
}

/// The record of the invocation `id` once it is written (off the call's
/// path, a moment later).
async fn record_of(service: &Service, id: &Value) -> Value {
    let path = format!("/v1/invocations/{}", id.as_str().unwrap());
    common::eventually(&format!("the record at {path}"), || async {
        let (status, record) = call(service, Method::GET, &path, DESIGNER, Body::empty()).await;
        (status == StatusCode::OK).then_some(record)
    })
    .await
}

/// Whether the store holds a record of the invocation `id` now.
async fn is_kept(service: &Service, id: &Value) -> bool {
    let path = format!("/v1/invocations/{}", id.as_str().unwrap());
    let (status, body) = call(service, Method::GET, &path, DESIGNER, Body::empty()).await;
    match status {
        StatusCode::OK => true,
        StatusCode::NOT_FOUND => false,
        _ => panic!("{path}: {status} {body}"),
    }
}

#[tokio::test]
async fn failures_are_recorded_by_default_with_their_context_input_and_log() {
    let (_dir, _mock, service) = fixture_service().await;

    let (status, ok) = invoke(&service, json!({"behave": "echo", "n": 1})).await;
    assert_eq!(status, StatusCode::OK, "{ok}");
    let (status, failed) = invoke(&service, json!({"behave": "fail"})).await;
    assert_eq!(status, StatusCode::OK, "{failed}");
    let (status, refused) = invoke(&service, json!({"behave": "reject"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");

    let all = listed(&service, "", 2).await;
    let ids: Vec<&str> = all["invocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "a success was recorded: {all}");
    assert!(!ids.contains(&ok["invocation_id"].as_str().unwrap()));
    assert!(ids.contains(&failed["invocation_id"].as_str().unwrap()));
    // An invocation that errs names itself in the error, to find its record.
    let refused_id = &refused["error"]["invocation_id"];
    assert!(ids.contains(&refused_id.as_str().unwrap()), "{refused}");
    let record = record_of(&service, refused_id).await;
    assert_eq!(record["error"]["message"], "label must not be empty");

    let failures = listed(&service, "?result=failure", 1).await;
    assert_eq!(failures["invocations"].as_array().unwrap().len(), 1);
    assert_eq!(failures["invocations"][0]["result"], "failure");
    let errors = listed(&service, "?result=error", 1).await;
    assert_eq!(errors["invocations"][0]["result"], "invalid-input");
    assert_eq!(errors["invocations"][0]["error"], "label must not be empty");

    let record = record_of(&service, &failed["invocation_id"]).await;
    assert_eq!(record["action"], "fixture");
    assert_eq!(record["version"], 1);
    assert_eq!(record["source"], "api");
    assert_eq!(
        record["context"],
        json!({"user_id": "u-7", "timezone": "Europe/Paris"})
    );
    assert_eq!(record["input"], json!({"behave": "fail"}));
    assert_eq!(record["outcome"]["success"], false);
    assert_eq!(record["outcome"]["messages"], json!(["no previous order"]));
    assert!(record["now_ms"].as_i64().unwrap() > 1_700_000_000_000);
    assert!(record["memory_peak_bytes"].as_u64().unwrap() > 0);
    assert!(record["duration_ms"].as_f64().unwrap() > 0.0);
}

#[tokio::test]
async fn recording_all_keeps_each_exchange_with_secrets_redacted_and_pages() {
    let (_dir, mock, service) = fixture_service().await;
    let (status, body) = send(
        &service,
        Method::PUT,
        "/v1/actions/fixture/recording",
        DESIGNER,
        json!({"mode": "all"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["settings"]["recording"], json!({"mode": "all"}));

    // The upstream echoes the request's headers, the secret's value among them.
    let input = json!({
        "behave": "http",
        "url": mock.url("/echo-json"),
        "headers": {"authorization": "Bearer {{secret:api}}", "x-trace": "t-1"},
    });
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (status, done) = invoke(&service, input.clone()).await;
        assert_eq!(status, StatusCode::OK, "{done}");
        assert_eq!(done["attributes"]["status"], 200, "{done}");
        ids.push(done["invocation_id"].as_str().unwrap().to_owned());
    }
    listed(&service, "", 3).await;
    let first = listed(&service, "?limit=2", 2).await;
    let page: Vec<&str> = first["invocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(page, [ids[2].as_str(), ids[1].as_str()], "newest first");
    let next = first["next"].as_str().unwrap();
    let second = listed(&service, &format!("?limit=2&after={next}"), 1).await;
    assert_eq!(second["invocations"][0]["id"], ids[0].as_str());
    assert_eq!(second["next"], Value::Null);

    let record = record_of(&service, &json!(ids[0])).await;
    let exchange = &record["exchanges"][0];
    assert_eq!(record["exchanges"].as_array().unwrap().len(), 1);
    assert_eq!(exchange["method"], "GET");
    assert_eq!(exchange["url"], mock.url("/echo-json"));
    assert_eq!(exchange["outcome"]["type"], "response");
    assert_eq!(exchange["outcome"]["status"], 200);
    assert!(exchange["duration_ms"].as_f64().unwrap() > 0.0);
    // The request as the action wrote it: the placeholder, never the value.
    assert!(
        exchange["request_headers"]
            .as_array()
            .unwrap()
            .contains(&json!(["authorization", "Bearer {{secret:api}}"])),
        "{exchange}"
    );
    let echoed = exchange["outcome"]["body"]["text"].as_str().unwrap();
    assert!(echoed.contains("[redacted]"), "{echoed}");
    assert!(
        !record.to_string().contains(SECRET),
        "the record holds the secret: {record}"
    );
}

#[tokio::test]
async fn recording_settings_and_reads_are_checked() {
    let (_dir, _mock, service) = fixture_service().await;
    let path = "/v1/actions/fixture/recording";
    let (status, body) = send(
        &service,
        Method::PUT,
        path,
        DESIGNER,
        json!({"mode": "all", "sample": 2}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("between 0 and 1"),
        "{body}"
    );
    let (status, body) = send(
        &service,
        Method::PUT,
        path,
        DESIGNER,
        json!({"mode": "sometimes"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sometimes"),
        "{body}"
    );
    // The invoke token runs actions; it does not read what they were given.
    let (status, _) = send(&service, Method::PUT, path, INVOKE, json!({"mode": "off"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let list = "/v1/actions/fixture/invocations";
    assert_eq!(
        call(&service, Method::GET, list, INVOKE, Body::empty())
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    let (status, body) = call(
        &service,
        Method::GET,
        "/v1/actions/nothing/invocations",
        DESIGNER,
        Body::empty(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = call(
        &service,
        Method::GET,
        &format!("{list}?limit=ten"),
        DESIGNER,
        Body::empty(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    for id in [
        "..%2F..%2Fsecret.key",
        "00000000-0000-4000-8000-000000000000",
    ] {
        let (status, body) = call(
            &service,
            Method::GET,
            &format!("/v1/invocations/{id}"),
            DESIGNER,
            Body::empty(),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(body["error"]["code"], "unknown-invocation");
    }
    // Recording off: a failure leaves nothing.
    let (status, _) = send(
        &service,
        Method::PUT,
        path,
        DESIGNER,
        json!({"mode": "off"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, failed) = invoke(&service, json!({"behave": "fail"})).await;
    // Records are written in the order offered: once a later one is there,
    // the unrecorded one would have been too.
    let (status, _) = send(
        &service,
        Method::PUT,
        path,
        DESIGNER,
        json!({"mode": "failures"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, later) = invoke(&service, json!({"behave": "fail"})).await;
    record_of(&service, &later["invocation_id"]).await;
    assert!(!is_kept(&service, &failed["invocation_id"]).await);
}

fn record(action: &str, at_ms: i64, result: &str) -> InvocationRecord {
    InvocationRecord {
        id: action_host::new_invocation_id(),
        action: action.into(),
        version: 1,
        sha256: "00".repeat(32),
        source: "api".into(),
        at_ms,
        now_ms: at_ms,
        context: CallContext::default(),
        input: Map::new(),
        result: result.into(),
        outcome: None,
        error: None,
        logs: Vec::new(),
        exchanges: Vec::new(),
        duration_ms: 1.0,
        memory_peak_bytes: 65536,
    }
}

/// What a record weighs against the queue's byte bound counts every part a
/// caller or an action can make large: the context and an error's message
/// as well as the input, and each log line and exchange besides its text.
#[test]
fn a_records_weight_counts_its_context_error_and_every_line() {
    let empty = record("greeting", 0, "success").weight();
    let mut large_context = record("greeting", 0, "invalid-input");
    large_context.context.conversation_id = Some("c".repeat(1 << 20));
    assert!(large_context.weight() >= empty + (1 << 20));
    let mut large_error = record("greeting", 0, "internal");
    large_error.error = Some(RecordedError {
        kind: action_host::ErrorKind::Internal,
        message: "m".repeat(1 << 20),
    });
    assert!(large_error.weight() >= empty + (1 << 20));
    let mut empty_lines = record("greeting", 0, "success");
    empty_lines.logs = vec![
        action_host::LogLine {
            level: action_host::Level::Info,
            source: action_host::Source::Log,
            message: String::new(),
        };
        100_000
    ];
    assert!(empty_lines.weight() >= empty + 100_000 * 32);
    let mut wide_input = record("greeting", 0, "success");
    wide_input
        .input
        .insert("wide".into(), Value::Array(vec![json!([]); 100_000]));
    assert!(wide_input.weight() >= empty + 100_000 * 32);
}

/// What every store must do with records: keep them once, list them newest
/// first by result and page, find one by id, and drop what retention does
/// not keep.
async fn a_store_keeps_lists_and_prunes_records(store: Arc<dyn Store>) {
    let now = 1_800_000_000_000;
    let mut records: Vec<InvocationRecord> = (0..6)
        .map(|i| {
            record(
                "greeting",
                now - 1000 * (6 - i),
                if i % 2 == 0 { "success" } else { "failure" },
            )
        })
        .collect();
    records.push(record("other", now, "timeout"));
    store.put_invocations(records.clone()).await.unwrap();
    // Written once: the same again changes nothing.
    store.put_invocations(records[..2].to_vec()).await.unwrap();

    let query = |result: Option<&str>, after: Option<String>, limit| RecordQuery {
        result: result.map(str::to_owned),
        after,
        limit,
    };
    let all = store
        .invocations("greeting", &query(None, None, 100))
        .await
        .unwrap();
    let at: Vec<i64> = all.iter().map(|r| r.at_ms).collect();
    assert_eq!(at, (1..=6).map(|i| now - 1000 * i).collect::<Vec<_>>());
    let failures = store
        .invocations("greeting", &query(Some("failure"), None, 100))
        .await
        .unwrap();
    assert_eq!(failures.len(), 3);
    assert!(failures.iter().all(|r| r.result == "failure"));
    let first = store
        .invocations("greeting", &query(None, None, 4))
        .await
        .unwrap();
    let rest = store
        .invocations("greeting", &query(None, Some(first[3].cursor()), 4))
        .await
        .unwrap();
    assert_eq!(rest.len(), 2);
    assert_eq!(rest[0], all[4]);
    let errors = store
        .invocations("other", &query(Some("error"), None, 10))
        .await
        .unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(
        store.invocation(&records[3].id).await.unwrap().as_ref(),
        Some(&records[3])
    );
    assert_eq!(store.invocation("no-such-id").await.unwrap(), None);
    // Only the whole id finds a record: not its end, nor another spelling.
    let id = &records[3].id;
    for near in [
        &id[id.len() - 12..],
        &id[1..],
        &id.to_uppercase(),
        &id.replace('-', ""),
    ] {
        assert_eq!(store.invocation(near).await.unwrap(), None, "{near}");
    }
    let mut actions = store.recorded_actions().await.unwrap();
    actions.sort();
    assert_eq!(actions, ["greeting", "other"]);

    // At most 4, none older than 3.5 s: the three newest are left.
    let retention = Retention {
        per_action: 4,
        max_age: Duration::from_millis(3500),
        ..Retention::default()
    };
    store
        .prune_invocations("greeting", &retention, now)
        .await
        .unwrap();
    let left = store
        .invocations("greeting", &query(None, None, 100))
        .await
        .unwrap();
    assert_eq!(
        left.iter().map(|r| r.at_ms).collect::<Vec<_>>(),
        [now - 1000, now - 2000, now - 3000]
    );
    // Another action's records are its own.
    assert_eq!(
        store
            .invocations("other", &query(None, None, 10))
            .await
            .unwrap()
            .len(),
        1
    );

    // Five records of about 100 KB that do not compress, in 350 KB: the
    // three newest are left; in 10 KB, the newest alone.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut noise = || {
        (0..50_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                format!("{:x}", state & 0xf)
            })
            .collect::<Vec<_>>()
            .join("")
    };
    let large: Vec<InvocationRecord> = (1..=5)
        .map(|age| {
            let mut large = record("large", now - age * 100, "failure");
            large.input.insert("a".into(), json!(noise()));
            large.input.insert("b".into(), json!(noise()));
            large
        })
        .collect();
    store.put_invocations(large.clone()).await.unwrap();
    let within = |bytes: u64| {
        let retention = Retention {
            bytes_per_action: bytes,
            ..Retention::default()
        };
        let store = Arc::clone(&store);
        async move {
            store
                .prune_invocations("large", &retention, now)
                .await
                .unwrap();
            let left = store
                .invocations("large", &query(None, None, 100))
                .await
                .unwrap();
            left.iter().map(|r| r.at_ms).collect::<Vec<_>>()
        }
    };
    let ages = |ages: &[i64]| ages.iter().map(|age| now - age * 100).collect::<Vec<_>>();
    assert_eq!(within(350_000).await, ages(&[1, 2, 3]));
    assert_eq!(within(10_000).await, ages(&[1]));
}

#[tokio::test]
async fn the_data_directory_keeps_lists_and_prunes_records() {
    let dir = tempfile::tempdir().unwrap();
    let key = DataDir::kept_key(dir.path()).unwrap();
    let store = Arc::new(DataDir::open(dir.path(), &key).unwrap());
    a_store_keeps_lists_and_prunes_records(store).await;
}

#[tokio::test]
async fn postgres_keeps_lists_and_prunes_records() {
    let db = common::postgres::Database::new();
    let key = action_host_server::OperatorKey::generate();
    let store = Postgres::connect(&db.url, &key).await.unwrap();
    a_store_keeps_lists_and_prunes_records(store).await;
}

/// Records age out even for an action that is no longer written (it
/// stopped recording, or was deleted): the writer sweeps every action with
/// records, the first time at start.
#[tokio::test]
async fn records_of_an_action_no_longer_written_still_age_out() {
    let dir = tempfile::tempdir().unwrap();
    let key = DataDir::kept_key(dir.path()).unwrap();
    let store = Arc::new(DataDir::open(dir.path(), &key).unwrap());
    let now = jiff::Timestamp::now().as_millisecond();
    let day = 24 * 3600 * 1000;
    let (old, recent) = (
        record("gone", now - 2 * day, "failure"),
        record("gone", now, "failure"),
    );
    store
        .put_invocations(vec![old.clone(), recent.clone()])
        .await
        .unwrap();
    let retention = Retention {
        per_action: 100,
        max_age: Duration::from_secs(24 * 3600),
        ..Retention::default()
    };
    let _recorder = Recorder::start(store.clone(), retention);
    common::eventually("the record older than a day removed", || async {
        store
            .invocation(&old.id)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert_eq!(store.invocation(&recent.id).await.unwrap(), Some(recent));
}

/// A full queue drops records and counts them; it never makes a call wait,
/// and no record is lost without being counted.
#[tokio::test]
async fn a_full_queue_drops_and_counts_records() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let key = DataDir::kept_key(dir.path()).unwrap();
    let store = Arc::new(DataDir::open(dir.path(), &key).unwrap());
    let recorder = Recorder::start(store, Retention::default());
    // Far faster than the writer can keep files: the queue fills.
    let offered = action_host_server::records::QUEUE * 20;
    for i in 0..offered {
        recorder.offer(record("greeting", i as i64, "failure"));
    }
    // Had an offer waited for room, none would have been dropped.
    let counts = recorder.counts();
    assert!(counts.dropped.load(Ordering::Relaxed) > 0);
    common::eventually("every record written or counted as dropped", || async {
        let settled =
            counts.written.load(Ordering::Relaxed) + counts.dropped.load(Ordering::Relaxed);
        (settled == offered as u64).then_some(())
    })
    .await;
}

/// A service with the fixture granted the mock, recording every call.
async fn recording_all() -> (tempfile::TempDir, Mock, Arc<Service>) {
    let (dir, mock, service) = fixture_service().await;
    let path = "/v1/actions/fixture/recording";
    let (status, body) = send(
        &service,
        Method::PUT,
        path,
        DESIGNER,
        json!({"mode": "all"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (dir, mock, service)
}

/// The record of the first call of the fixture with `input`, with recording on.
async fn recorded_call(service: &Service, input: Value) -> Value {
    let (status, done) = invoke(service, input).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    record_of(service, &done["invocation_id"]).await
}

async fn replay(service: &Service, id: &Value, body: Body) -> (StatusCode, Value) {
    let path = format!("/v1/invocations/{}/replay", id.as_str().unwrap());
    call(service, Method::POST, &path, DESIGNER, body).await
}

#[tokio::test]
async fn a_replay_reruns_with_the_recorded_context_clock_and_answers_without_the_network() {
    let (dir, mock, service) = fixture_service().await;
    let all = json!({"mode": "all"});
    send(
        &service,
        Method::PUT,
        "/v1/actions/fixture/recording",
        DESIGNER,
        all,
    )
    .await;

    // The context, the clock and the invocation id are the record's.
    let seen = recorded_call(&service, json!({"behave": "context"})).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    let (status, replayed) = replay(&service, &seen["id"], Body::empty()).await;
    assert_eq!(status, StatusCode::OK, "{replayed}");
    assert_eq!(replayed["differences"], json!([]), "{replayed}");
    assert_eq!(replayed["replayed"]["source"], "replay");
    let attributes = &replayed["replayed"]["outcome"]["attributes"];
    assert_eq!(
        attributes["now_ms"],
        seen["outcome"]["attributes"]["now_ms"]
    );
    assert_eq!(attributes["invocation_id"], seen["id"]);
    assert_eq!(attributes["user_id"], "u-7");

    // Outbound requests are answered from the record: the upstream sees none.
    let input =
        json!({"behave": "http", "url": mock.url("/echo-json"), "headers": {"x-trace": "t"}});
    let fetched = recorded_call(&service, input).await;
    let before = mock.received().len();
    let (status, replayed) = replay(&service, &fetched["id"], Body::empty()).await;
    assert_eq!(status, StatusCode::OK, "{replayed}");
    assert_eq!(
        mock.received().len(),
        before,
        "the replay reached the network"
    );
    assert_eq!(replayed["differences"], json!([]), "{replayed}");
    assert_eq!(
        replayed["replayed"]["outcome"]["attributes"]["body"],
        fetched["outcome"]["attributes"]["body"]
    );

    // On a kept version, on a version that is not kept, on a candidate.
    let v2 = common::with_custom_section(&common::plugin_bytes("fixture"), "v2");
    let (status, _) = call(
        &service,
        Method::PUT,
        "/v1/actions/fixture",
        DESIGNER,
        Body::from(v2.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, on_v1) = replay(&service, &seen["id"], Body::from(r#"{"version": 1}"#)).await;
    assert_eq!(status, StatusCode::OK, "{on_v1}");
    assert_eq!(on_v1["replayed"]["version"], 1);
    let (status, now) = replay(&service, &seen["id"], Body::empty()).await;
    assert_eq!(status, StatusCode::OK, "{now}");
    assert_eq!(now["replayed"]["version"], 2);
    let (status, missing) = replay(&service, &seen["id"], Body::from(r#"{"version": 9}"#)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
    assert_eq!(missing["error"]["code"], "unknown-version");
    let candidate = common::with_custom_section(&common::plugin_bytes("fixture"), "candidate");
    let (status, tried) = replay(&service, &seen["id"], Body::from(candidate.clone())).await;
    assert_eq!(status, StatusCode::OK, "{tried}");
    assert_eq!(
        tried["replayed"]["sha256"],
        action_host::sha256_hex(&candidate)
    );
    // A candidate is no stored version: nothing of it is left to remove.
    let cached: Vec<_> = std::fs::read_dir(dir.path().join("artifacts"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    let candidate_sha = action_host::sha256_hex(&candidate);
    assert!(
        !cached.iter().any(|name| name.starts_with(&candidate_sha)),
        "{cached:?}"
    );
    let (status, broken) = replay(
        &service,
        &seen["id"],
        Body::from(b"\0asm\x0d\0\x01\0garbage".to_vec()),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{broken}");
    let (status, bad) = replay(&service, &seen["id"], Body::from(r#"{"version": "one"}"#)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    let (status, bad) = replay(&service, &seen["id"], Body::from(r#"{"sha256": "../x"}"#)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap()
            .contains("64 hexadecimal digits"),
        "{bad}"
    );
    // The invoke token cannot replay what it cannot read.
    let path = format!("/v1/invocations/{}/replay", seen["id"].as_str().unwrap());
    assert_eq!(
        call(&service, Method::POST, &path, INVOKE, Body::empty())
            .await
            .0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn a_request_the_record_does_not_have_is_denied_and_shown_as_a_difference() {
    let (_dir, mock, service) = recording_all().await;
    let input = json!({"behave": "http", "url": mock.url("/echo-json")});
    let fetched = recorded_call(&service, input).await;
    // The same call, recorded as having asked somewhere else.
    let mut other: InvocationRecord = serde_json::from_value(fetched.clone()).unwrap();
    other.id = action_host::new_invocation_id();
    other.exchanges[0].url = mock.url("/elsewhere");
    service
        .catalog()
        .store()
        .put_invocations(vec![other.clone()])
        .await
        .unwrap();

    let (status, replayed) = replay(&service, &json!(other.id), Body::empty()).await;
    assert_eq!(status, StatusCode::OK, "{replayed}");
    let attributes = &replayed["replayed"]["outcome"]["attributes"];
    assert_eq!(attributes["error"], "denied", "{replayed}");
    let detail = attributes["detail"].as_str().unwrap();
    assert!(
        detail.contains("replay: the record has no request GET"),
        "{detail}"
    );
    assert!(detail.contains("its next was GET"), "{detail}");
    let fields: Vec<&str> = replayed["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"exchanges[0]"), "{fields:?}");
    assert!(fields.contains(&"outcome.attributes.error"), "{fields:?}");
    assert!(fields.contains(&"outcome.attributes.status"), "{fields:?}");
}

#[tokio::test]
async fn the_cli_replays_a_record_offline_and_exits_1_on_a_difference() {
    let (dir, mock, service) = recording_all().await;
    let input = json!({"behave": "http", "url": mock.url("/echo-json")});
    let fetched = recorded_call(&service, input).await;
    let file = dir.path().join("record.json");
    std::fs::write(&file, fetched.to_string()).unwrap();
    let replay = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_action-host"))
            .arg("replay")
            .args(args)
            .output()
            .unwrap();
        let stdout: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (
            out.status.code(),
            stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let before = mock.received().len();
    let data = dir.path().to_str().unwrap();
    let (code, same, stderr) = replay(&[file.to_str().unwrap(), "--data", data]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("the replay did what the record did"),
        "{stderr}"
    );
    assert_eq!(same["differences"], json!([]));
    assert_eq!(same["replayed"]["version"], 1);
    assert_eq!(
        mock.received().len(),
        before,
        "the replay reached the network"
    );
    let wasm = common::plugin("fixture");
    let (code, other, stderr) = replay(&[file.to_str().unwrap(), "--wasm", wasm.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(other["replayed"]["version"], 0);

    let mut elsewhere = fetched.clone();
    elsewhere["exchanges"][0]["url"] = json!(mock.url("/elsewhere"));
    std::fs::write(&file, elsewhere.to_string()).unwrap();
    let (code, _, stderr) = replay(&[file.to_str().unwrap(), "--data", data]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("differs: exchanges[0]"), "{stderr}");

    std::fs::write(&file, "{\"id\": 1}").unwrap();
    let (code, _, stderr) = replay(&[file.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("is not an invocation record"), "{stderr}");
    let mut unknown = fetched.clone();
    unknown["sha256"] = json!("ab".repeat(32));
    std::fs::write(&file, unknown.to_string()).unwrap();
    let (code, _, stderr) = replay(&[file.to_str().unwrap(), "--data", data]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("pass the component with --wasm"),
        "{stderr}"
    );
    // A record edited to name a path is refused before any file is read.
    let mut edited = fetched.clone();
    edited["sha256"] = json!("../../../etc/passwd");
    std::fs::write(&file, edited.to_string()).unwrap();
    let (code, _, stderr) = replay(&[file.to_str().unwrap(), "--data", data]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("is not an invocation record: `sha256` must be 64 hexadecimal digits"),
        "{stderr}"
    );
}

#[tokio::test]
async fn wasi_wall_clock_reads_the_calls_now_ms_live_and_in_a_replay() {
    let (dir, _mock, service) = recording_all().await;
    let record = recorded_call(&service, json!({"behave": "wall-clock"})).await;
    let now_ms = record["now_ms"].as_i64().unwrap();
    let wall_ms = record["outcome"]["attributes"]["wall_ms"].as_i64().unwrap();
    assert!((0..1000).contains(&(wall_ms - now_ms)), "{record}");

    // Replayed as if recorded in 2020: the action reads 2020 from WASI too.
    let mut old = record.clone();
    let then = 1_577_836_800_000_i64;
    old["now_ms"] = json!(then);
    let file = dir.path().join("old.json");
    std::fs::write(&file, old.to_string()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_action-host"))
        .arg("replay")
        .arg(&file)
        .arg("--wasm")
        .arg(common::plugin("fixture"))
        .output()
        .unwrap();
    let replay: Value = serde_json::from_slice(&out.stdout).unwrap();
    let replayed = replay["replayed"]["outcome"]["attributes"]["wall_ms"]
        .as_i64()
        .unwrap();
    assert!((0..1000).contains(&(replayed - then)), "{replay}");
    assert_eq!(replay["replayed"]["now_ms"], then);
}

/// The queue is bounded in bytes as well as in records: large records are
/// dropped long before a thousand of them could pin a gigabyte.
#[tokio::test]
async fn the_queue_holds_at_most_its_byte_bound() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let key = DataDir::kept_key(dir.path()).unwrap();
    let store = Arc::new(DataDir::open(dir.path(), &key).unwrap());
    let recorder = Recorder::start(store, Retention::default());
    let offered = 200;
    let counts = recorder.counts();
    let bound = action_host_server::records::QUEUE_BYTES as u64;
    let mut most = 0;
    for i in 0..offered {
        let mut large = record("greeting", i, "failure");
        large
            .input
            .insert("blob".into(), json!("x".repeat(2 << 20)));
        recorder.offer(large);
        most = most.max(counts.queued_bytes.load(Ordering::Relaxed));
    }
    assert!(most <= bound, "{most} bytes queued at once");
    // 2 MiB each: at most 32 fit at once, far fewer than the 1024 the count
    // allows; 400 MiB offered at once is more than the writer drains meanwhile.
    assert!(counts.dropped.load(Ordering::Relaxed) > 0, "{counts:?}");
    common::eventually("every record written or counted as dropped", || async {
        let settled =
            counts.written.load(Ordering::Relaxed) + counts.dropped.load(Ordering::Relaxed);
        (settled == offered as u64).then_some(())
    })
    .await;
    assert_eq!(counts.queued_bytes.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn try_it_answers_with_the_whole_record_and_keeps_it_as_the_settings_say() {
    let (_dir, mock, service) = fixture_service().await;
    let body = json!({
        "input": {
            "behave": "http",
            "url": mock.url("/echo-json"),
            "headers": {"authorization": "Bearer {{secret:api}}"},
        },
        "context": {"user_id": "u-7", "timezone": "Asia/Tokyo"},
    });
    let path = "/v1/actions/fixture/try";

    // A success, with recording at its default (failures): the designer
    // sees every exchange, and the store keeps nothing.
    let (status, tried) = send(&service, Method::POST, path, DESIGNER, body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{tried}");
    assert_eq!(tried["recorded"], false, "{tried}");
    let record = &tried["record"];
    assert_eq!(record["result"], "success", "{record}");
    assert_eq!(record["source"], "try-it");
    assert_eq!(record["context"]["timezone"], "Asia/Tokyo");
    assert_eq!(record["outcome"]["attributes"]["status"], 200);
    assert_eq!(record["exchanges"][0]["outcome"]["status"], 200, "{record}");
    assert!(record["memory_peak_bytes"].as_u64().unwrap() > 0);
    assert!(!record.to_string().contains(SECRET), "{record}");
    assert!(
        !is_kept(&service, &record["id"]).await,
        "a success is not kept"
    );

    // A failed call is 200 with its error in the record, and is kept.
    let failing = json!({"input": {"behave": "reject"}});
    let (status, tried) = send(&service, Method::POST, path, OPERATOR, failing).await;
    assert_eq!(status, StatusCode::OK, "{tried}");
    assert_eq!(tried["recorded"], true, "{tried}");
    let record = &tried["record"];
    assert_eq!(record["result"], "invalid-input", "{record}");
    assert_eq!(
        record["error"]["message"], "label must not be empty",
        "{record}"
    );
    // Written before the answer: the page links to it at once.
    assert!(is_kept(&service, &record["id"]).await, "{record}");
    let kept = listed(&service, "?result=not-success", 1).await;
    assert_eq!(kept["invocations"][0]["id"], record["id"]);
    assert_eq!(kept["invocations"][0]["source"], "try-it");

    // Not for the platform's token, nor a bad body, nor an unknown action.
    let (status, _) = send(&service, Method::POST, path, INVOKE, body.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, error) = send(
        &service,
        Method::POST,
        path,
        DESIGNER,
        json!({"inputs": {}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`inputs`")
    );
    let (status, _) = send(
        &service,
        Method::POST,
        "/v1/actions/nope/try",
        DESIGNER,
        body,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn serve_keeps_as_many_records_as_its_flags_say() {
    // Five records, two kept.
    records_kept_by(&["--keep-records", "2"], 2).await;
    // No room: the newest is kept whatever its size.
    records_kept_by(&["--keep-records-mib", "0"], 1).await;
}

/// Makes five calls that fail on a service run with `flags`, and checks that
/// `kept` records are left once pruning is done.
async fn records_kept_by(flags: &[&str], kept: usize) {
    let dir = tempfile::tempdir().unwrap();
    let server = common::server::Server::start(dir.path(), flags);
    let (status, _) =
        common::api::upload(&server, "fixture", common::plugin_bytes("fixture")).await;
    assert_eq!(status, 201);
    let client = common::api::client();
    let failing = json!({"input": {"behave": "reject"}});
    for _ in 0..5 {
        let (status, _) = common::api::invoke(&server, "fixture", failing.clone()).await;
        assert_eq!(status, 422);
    }
    common::eventually("the five records written", || async {
        let metrics = client
            .get(server.url("/metrics"))
            .bearer_auth(METRICS)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metrics
            .contains("action_host_invocation_records_total{outcome=\"written\"} 5")
            .then_some(())
    })
    .await;
    // Written and pruned off the call's path: wait for the pruning.
    let url = server.url("/v1/actions/fixture/invocations");
    common::eventually("the newest kept, the rest pruned", || async {
        let page: Value = client
            .get(&url)
            .bearer_auth(DESIGNER)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (page["invocations"].as_array().unwrap().len() == kept).then_some(())
    })
    .await;
    let files = std::fs::read_dir(dir.path().join("invocations/fixture"))
        .unwrap()
        .count();
    assert_eq!(files, kept, "{flags:?}");
}

#[tokio::test]
async fn a_webhook_call_is_recorded_with_its_platform_as_source() {
    let (_dir, _mock, service) = fixture_service().await;
    let body = json!({"input_data": {"attributes": {"behave": "reject"}}});
    let (status, answer) = send(
        &service,
        Method::POST,
        "/webhooks/opendialog/fixture",
        INVOKE,
        body,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["successful"], false, "{answer}");
    let listed = listed(&service, "?result=invalid-input", 1).await;
    let summary = &listed["invocations"][0];
    assert_eq!(summary["source"], "opendialog", "{summary}");
    let record = record_of(&service, &summary["id"]).await;
    // The input as the adapter decoded it from the platform's request.
    assert_eq!(record["input"], json!({"behave": "reject"}), "{record}");
    assert_eq!(record["error"]["message"], "label must not be empty");
}

#[tokio::test]
async fn a_request_left_without_its_answer_is_kept_unfinished_and_replayed_unanswered() {
    let dir = tempfile::tempdir().unwrap();
    let mock = Mock::start().await;
    let service = service(dir.path()).await;
    let bytes = common::plugin_bytes("wasi_http_probe");
    let path = "/v1/actions/probe";
    let (status, body) = call(&service, Method::PUT, path, DESIGNER, Body::from(bytes)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let settings = json!({
        "grants": [format!("GET http://127.0.0.1:{}", mock.port)],
        "recording": {"mode": "all"},
    });
    let (status, body) = send(
        &service,
        Method::PUT,
        &format!("{path}/grants"),
        OPERATOR,
        settings,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Sent, and the action returns without waiting for the answer (the mock
    // gives /slow after 3 s): the record shows the request it left behind.
    let input = json!({"input": {"url": mock.url("/slow"), "wait": "no"}});
    let (status, done) = send(
        &service,
        Method::POST,
        &format!("{path}/invoke"),
        INVOKE,
        input,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    let id = done["invocation_id"].clone();
    let record = record_of(&service, &id).await;
    let exchange = &record["exchanges"][0];
    assert_eq!(exchange["url"], mock.url("/slow"), "{record}");
    assert_eq!(exchange["outcome"]["type"], "error", "{exchange}");
    assert_eq!(exchange["outcome"]["kind"], "unfinished", "{exchange}");

    // The replay leaves it unanswered too, and does what the call did.
    let (status, replay) = replay(&service, &id, Body::empty()).await;
    assert_eq!(status, StatusCode::OK, "{replay}");
    assert_eq!(replay["differences"], json!([]), "{replay}");
    assert_eq!(
        replay["replayed"]["exchanges"][0]["outcome"]["kind"],
        "unfinished"
    );
}
