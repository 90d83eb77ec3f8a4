//! The service end to end: the real `action-host serve` process on a loopback
//! port, driven over HTTP.

use crate::common;

use crate::common::api::{client, invoke, operator_get, set_grants, upload, webhook};
use crate::common::server::{DESIGNER, INVOKE, METRICS, OPERATOR, Server};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Starts a call of the fixture's endless loop; it ends at the action's deadline.
fn start_loop(server: &Server) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
    let url = server.url("/v1/actions/fixture/invoke");
    tokio::spawn(async move {
        client()
            .post(url)
            .bearer_auth(INVOKE)
            .json(&json!({"input": {"behave": "loop"}}))
            .send()
            .await
    })
}

fn greet(name: &str) -> Value {
    json!({"input": {"first_name": name}, "context": {"timezone": "Europe/London"}})
}

#[tokio::test]
async fn every_route_works_with_the_right_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);

    let (status, health) = {
        let r = client().get(server.url("/healthz")).send().await.unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    assert_eq!((status, health), (StatusCode::OK, json!({"status": "ok"})));

    let (status, created) = upload(&server, "greeting", common::plugin_bytes("greeting")).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["version"], 1);
    assert_eq!(created["manifest"]["name"], "greeting");
    assert_eq!(
        created["sha256"],
        action_host::sha256_hex(&common::plugin_bytes("greeting"))
    );

    let (status, done) = invoke(&server, "greeting", greet("Ada Lovelace")).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["success"], true);
    assert!(
        done["attributes"]["greeting"]
            .as_str()
            .unwrap()
            .contains("Ada!")
    );
    assert!(done["duration_ms"].as_f64().unwrap() > 0.0);
    assert!(done["logs"].is_array() && done["messages"].is_array());

    let webhook = client()
        .post(server.url("/webhooks/opendialog/greeting"))
        .bearer_auth(INVOKE)
        .json(&json!({"input_data": {"attributes": {"first_name": "Grace"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(webhook.status(), StatusCode::OK);
    let webhook: Value = webhook.json().await.unwrap();
    assert_eq!(webhook["successful"], true);
    assert!(
        webhook["output_data"]["attributes"]["greeting"]
            .as_str()
            .unwrap()
            .contains("Grace!")
    );

    let (status, list) = operator_get(&server, "/v1/actions").await;
    assert_eq!(status, StatusCode::OK);
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["actions"][0]["name"], "greeting");

    let (status, grants) = set_grants(
        &server,
        "greeting",
        json!({
            "grants": ["GET https://api.example.com/"],
            "config": {"tone": "warm"},
            "secrets": [{"name": "token", "value": "very-secret-value", "allow": ["GET https://api.example.com/"]}],
            "limits": {"deadline_ms": 2000, "max_requests": 2}
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{grants}");
    let (status, shown) = operator_get(&server, "/v1/actions/greeting").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !shown.contains("very-secret-value"),
        "a secret leaked: {shown}"
    );
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["settings"]["secrets"][0]["value"], "<redacted>");
    assert_eq!(
        shown["settings"]["grants"][0],
        "GET https://api.example.com/"
    );
    assert_eq!(shown["invocations"]["success"], 2);
    assert_eq!(shown["version"], 1);

    let (status, metrics) = operator_get(&server, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        metrics.contains("action_host_invocations_total{action=\"greeting\",result=\"success\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("action_host_invocation_duration_seconds_count{action=\"greeting\"} 2")
    );
    assert!(metrics.contains("action_host_outbound_requests_total"));
    assert!(!metrics.contains("very-secret-value"));

    let deleted = client()
        .delete(server.url("/v1/actions/greeting"))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let (status, gone) = invoke(&server, "greeting", greet("Ada")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(gone["error"]["code"], "unknown-action");
    assert!(server.stop(), "the server did not stop cleanly");
}

/// Sends `method path` with `token` (and a small body where the route takes
/// one) and returns the status.
async fn status_with(server: &Server, method: &str, path: &str, token: Option<&str>) -> StatusCode {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = client().request(method.clone(), server.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request = match (method.as_str(), path) {
        ("PUT", p) if p.ends_with("/grants") => request.json(&json!({})),
        ("PUT", p) if p.ends_with("/config") => request.json(&json!({})),
        ("PUT", _) => request.body(common::plugin_bytes("greeting")),
        ("POST", p) if p.starts_with("/webhooks") => {
            request.json(&json!({"input_data": {"attributes": {"first_name": "Ada"}}}))
        }
        ("POST", _) => request.json(&json!({"input": {"first_name": "Ada"}})),
        _ => request,
    };
    request.send().await.unwrap().status()
}

#[tokio::test]
async fn each_role_reaches_exactly_its_routes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    upload(&server, "greeting", common::plugin_bytes("greeting")).await;
    // Route, then who may use it: operator, designer, invoke, metrics.
    let routes: [(&str, &str, [bool; 4]); 9] = [
        ("GET", "/metrics", [true, false, false, true]),
        ("GET", "/v1/actions", [true, true, false, false]),
        ("GET", "/v1/actions/greeting", [true, true, false, false]),
        ("PUT", "/v1/actions/greeting", [true, true, false, false]),
        (
            "PUT",
            "/v1/actions/greeting/config",
            [true, true, false, false],
        ),
        (
            "PUT",
            "/v1/actions/greeting/grants",
            [true, false, false, false],
        ),
        (
            "POST",
            "/v1/actions/greeting/invoke",
            [true, true, true, false],
        ),
        (
            "POST",
            "/webhooks/opendialog/greeting",
            [true, true, true, false],
        ),
        ("DELETE", "/v1/actions/greeting", [true, true, false, false]),
    ];
    for (method, path, allowed) in routes {
        for (token, may) in [OPERATOR, DESIGNER, INVOKE, METRICS]
            .into_iter()
            .zip(allowed)
        {
            let status = status_with(&server, method, path, Some(token)).await;
            if may {
                assert!(
                    status.is_success(),
                    "{method} {path} with {token}: {status}"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{method} {path} with {token}"
                );
            }
            if method == "DELETE" && may {
                upload(&server, "greeting", common::plugin_bytes("greeting")).await;
            }
        }
        for token in [None, Some("not-a-token-of-this-service")] {
            let status = status_with(&server, method, path, token).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {token:?}"
            );
        }
    }
    let refused = client()
        .put(server.url("/v1/actions/greeting/grants"))
        .bearer_auth(DESIGNER)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden");
    assert_eq!(
        body["error"]["message"],
        "this route needs the operator token; this is the designer token"
    );
    let health = client().get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_designer_configures_an_action_but_cannot_widen_what_it_reaches() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let designer = |request: reqwest::RequestBuilder| request.bearer_auth(DESIGNER);
    let put = |path: &str| designer(client().put(server.url(path)));
    let created = put("/v1/actions/fixture")
        .body(common::plugin_bytes("fixture"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let (status, _) = set_grants(
        &server,
        "fixture",
        json!({"grants": ["GET https://api.example.com/"], "config": {"greeting_prefix": "Hi"}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // The designer changes config; the operator's grants stay.
    let configured = put("/v1/actions/fixture/config")
        .json(&json!({"greeting_prefix": "Hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(configured.status(), StatusCode::OK);
    let shown: Value = configured.json().await.unwrap();
    assert_eq!(
        shown["settings"]["grants"],
        json!(["GET https://api.example.com/"])
    );
    assert_eq!(
        shown["settings"]["config"],
        json!({"greeting_prefix": "Hello"})
    );
    let (_, read) = invoke(
        &server,
        "fixture",
        json!({"input": {"behave": "config", "key": "greeting_prefix"}}),
    )
    .await;
    assert_eq!(read["attributes"]["value"], "Hello");
    // Config is strings only, and says so.
    let bad = put("/v1/actions/fixture/config")
        .json(&json!({"greeting_prefix": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let bad: Value = bad.json().await.unwrap();
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid config"),
        "{bad}"
    );
    // Grants, secrets and limits are the operator's, whatever the body says.
    for body in [
        json!({"grants": ["GET https://evil.example/"]}),
        json!({"limits": {"max_requests": 1000}}),
    ] {
        let refused = put("/v1/actions/fixture/grants")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    }
    // A new version from the designer keeps the operator's grants.
    let new_version = put("/v1/actions/fixture")
        .body(common::plugin_bytes("greeting"))
        .send()
        .await
        .unwrap();
    assert_eq!(new_version.status(), StatusCode::OK);
    let (_, shown) = operator_get(&server, "/v1/actions/fixture").await;
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(
        shown["settings"]["grants"],
        json!(["GET https://api.example.com/"])
    );
    assert_eq!(shown["version"], 2);
}

#[tokio::test]
async fn settings_from_the_api_cannot_read_the_hosts_environment() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    upload(&server, "fixture", common::plugin_bytes("fixture")).await;
    let (status, body) = set_grants(
        &server,
        "fixture",
        json!({"secrets": [{"name": "stolen", "value_env": "ACTION_HOST_OPERATOR_TOKEN",
                            "allow": ["GET https://api.example.com/"]}]}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "invalid-settings");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`value_env` reads the host's environment"),
        "{body}"
    );
    let (_, shown) = operator_get(&server, "/v1/actions/fixture").await;
    assert!(!shown.contains("stolen"), "{shown}");

    // A record an older version stored with `value_env` is not served from the
    // data directory alone.
    let record = dir.path().join("actions/fixture.json");
    let mut stored: Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    stored["settings"]["secrets"] = json!([{"name": "stolen", "value_env": "HOME",
                                            "allow": ["GET https://api.example.com/"]}]);
    std::fs::write(&record, serde_json::to_vec(&stored).unwrap()).unwrap();
    assert!(server.stop());
    let server = Server::start(dir.path(), &[]);
    let (status, _) = invoke(&server, "fixture", json!({"input": {"behave": "echo"}})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        server
            .stderr()
            .contains("action `fixture` is not served: its stored settings read a secret"),
        "{}",
        server.stderr()
    );
}

#[tokio::test]
async fn actions_named_in_the_host_file_are_read_only_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let host_file = dir.path().join("host.toml");
    std::fs::write(
        &host_file,
        "[actions.fixture]\nconfig = { greeting_prefix = \"from the file\" }\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--config", host_file.to_str().unwrap()]);
    let (status, _) = upload(&server, "fixture", common::plugin_bytes("fixture")).await;
    assert_eq!(status, StatusCode::CREATED);
    for (path, body) in [
        (
            "/v1/actions/fixture/grants",
            json!({"grants": ["GET https://evil.example/"]}),
        ),
        (
            "/v1/actions/fixture/config",
            json!({"greeting_prefix": "from the API"}),
        ),
    ] {
        let refused = client()
            .put(server.url(path))
            .bearer_auth(OPERATOR)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::CONFLICT, "{path}");
        let refused: Value = refused.json().await.unwrap();
        assert_eq!(refused["error"]["code"], "managed-by-host-file");
    }
    let (_, read) = invoke(
        &server,
        "fixture",
        json!({"input": {"behave": "config", "key": "greeting_prefix"}}),
    )
    .await;
    assert_eq!(read["attributes"]["value"], "from the file");
}

#[tokio::test]
async fn tokens_from_the_environment_are_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    upload(&server, "greeting", common::plugin_bytes("greeting")).await;
    assert!(server.stop());
    let server = Server::start(dir.path(), &[]);
    // The lines to try come just after the one the start waits for.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.stderr().contains("/webhooks/opendialog/") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stderr = server.stderr();
    assert!(stderr.contains("$ACTION_HOST_INVOKE_TOKEN"), "{stderr}");
    for token in [OPERATOR, DESIGNER, INVOKE, METRICS] {
        assert!(!stderr.contains(token), "{token} was printed:\n{stderr}");
    }
}

#[tokio::test]
async fn the_admin_token_still_works_as_the_operator_token_and_warns() {
    let dir = tempfile::tempdir().unwrap();
    let admin = "an-admin-token-of-old";
    let server = Server::start_with_env(dir.path(), &[], &[("ACTION_HOST_ADMIN_TOKEN", admin)]);
    assert!(
        server.stderr().contains(
            "ACTION_HOST_ADMIN_TOKEN is deprecated: it is read as ACTION_HOST_OPERATOR_TOKEN"
        ),
        "{}",
        server.stderr()
    );
    assert!(!server.stderr().contains(admin));
    let status = status_with(&server, "PUT", "/v1/actions/greeting", Some(admin)).await;
    assert_eq!(status, StatusCode::CREATED);
    let status = status_with(&server, "PUT", "/v1/actions/greeting/grants", Some(admin)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn tokens_that_are_short_or_shared_by_two_roles_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for (env, why) in [
        (
            vec![("ACTION_HOST_OPERATOR_TOKEN", "short")],
            "the operator token must be at least 16 characters",
        ),
        (
            vec![
                ("ACTION_HOST_OPERATOR_TOKEN", "the-same-long-token"),
                ("ACTION_HOST_INVOKE_TOKEN", "the-same-long-token"),
            ],
            "the operator and invoke tokens are the same: each role needs its own",
        ),
    ] {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_action-host"));
        for variable in common::server::TOKEN_VARIABLES {
            command.env_remove(variable);
        }
        let stderr = common::server::refused(
            command
                .envs(env)
                .args(["serve", "--listen", "127.0.0.1:0", "--data"])
                .arg(dir.path()),
        );
        assert!(stderr.contains(why), "{stderr}");
    }
}

/// Under a virtual memory limit too small for the instance pool's
/// reservation, start-up names the limit rather than only the failed mapping.
#[test]
fn an_address_space_too_small_for_the_pool_is_named_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new("sh");
    command
        .args([
            "-c",
            "ulimit -v 4000000 && exec \"$0\" serve --listen 127.0.0.1:0 --data \"$1\"",
        ])
        .arg(env!("CARGO_BIN_EXE_action-host"))
        .arg(dir.path());
    let stderr = common::server::refused(&mut command);
    assert!(
        stderr.contains("its instance pool reserves address space")
            && stderr.contains("may map only 3906 MiB (its virtual memory limit, `ulimit -v`)"),
        "{stderr}"
    );
}

#[tokio::test]
async fn each_error_has_its_status_and_names_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--max-upload-mib", "1", "--max-concurrency-per-action", "1"],
    );
    upload(&server, "greeting", common::plugin_bytes("greeting")).await;
    upload(&server, "fixture", common::plugin_bytes("fixture")).await;

    let malformed = client()
        .post(server.url("/v1/actions/greeting/invoke"))
        .bearer_auth(INVOKE)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        malformed.json::<Value>().await.unwrap()["error"]["code"],
        "malformed-json"
    );

    let (status, missing) = invoke(&server, "greeting", json!({"input": {}})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(missing["error"]["code"], "invalid-input");
    assert!(
        missing["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`first_name`")
    );
    let (status, wrong) = invoke(
        &server,
        "greeting",
        json!({"input": {"first_name": "Ada", "is_member": "maybe"}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        wrong["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`is_member`")
    );
    let (status, _) = invoke(&server, "greeting", json!({"input": [1]})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let (status, unknown) = invoke(&server, "nope", greet("Ada")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        unknown["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`nope`")
    );

    let (status, panicked) =
        invoke(&server, "fixture", json!({"input": {"behave": "panic"}})).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(panicked["error"]["code"], "internal");
    assert!(
        panicked["error"]["message"]
            .as_str()
            .unwrap()
            .contains("panicked on purpose")
    );
    assert!(
        panicked["error"]["logs"]
            .as_array()
            .is_some_and(|logs| !logs.is_empty())
    );

    // Refused from its declared length, before a byte of the body is sent
    // (a client that goes on writing after the answer may see the
    // connection close instead).
    let head = format!(
        "PUT /v1/actions/big HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {OPERATOR}\r\n\
         Content-Length: {}\r\n\r\n",
        2 << 20
    );
    let answer = server.raw_exchange(head.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("too-large"), "{answer}");

    let (status, _) = set_grants(&server, "fixture", json!({"limits": {"deadline_ms": 300}})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, timeout) = invoke(&server, "fixture", json!({"input": {"behave": "loop"}})).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(timeout["error"]["code"], "timeout");

    let (status, bad) = set_grants(&server, "fixture", json!({"grants": ["ftp://nope"]})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid grant `ftp://nope`")
    );
    let (status, _) = set_grants(&server, "fixture", json!({"grant": []})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // One call at a time per action here: a second concurrent call gets 429.
    let (status, _) =
        set_grants(&server, "fixture", json!({"limits": {"deadline_ms": 4000}})).await;
    assert_eq!(status, StatusCode::OK);
    let busy = start_loop(&server);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (status, overloaded) =
        invoke(&server, "fixture", json!({"input": {"behave": "echo"}})).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{overloaded}");
    assert_eq!(overloaded["error"]["code"], "overloaded");
    assert_eq!(
        busy.await.unwrap().unwrap().status(),
        StatusCode::GATEWAY_TIMEOUT
    );
}

#[tokio::test]
async fn bad_uploads_are_422_and_the_old_version_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    upload(&server, "greeting", common::plugin_bytes("greeting")).await;
    let wrong_world = wat::parse_str(
        r#"(component (import "acme:vault/keys@1.0.0" (instance (export "get" (func)))))"#,
    )
    .unwrap();
    let no_export = wat::parse_str("(component)").unwrap();
    let core = wat::parse_str("(module)").unwrap();
    for (what, bytes, expect) in [
        (
            "garbage",
            b"definitely not wasm".to_vec(),
            "not a WebAssembly component",
        ),
        ("core module", core, "core WebAssembly module"),
        (
            "wrong world",
            no_export,
            "does not export `webhook:action/action@0.1.0`",
        ),
        ("unknown import", wrong_world, "acme:vault/keys@1.0.0"),
    ] {
        let (status, body) = upload(&server, "greeting", bytes).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(expect),
            "{what}: {body}"
        );
        let (status, done) = invoke(&server, "greeting", greet("Ada")).await;
        assert_eq!(
            (status, &done["success"]),
            (StatusCode::OK, &json!(true)),
            "{what}"
        );
    }
    let (_, shown) = operator_get(&server, "/v1/actions/greeting").await;
    assert_eq!(serde_json::from_str::<Value>(&shown).unwrap()["version"], 1);
    // Uploading the same bytes again is not a new version.
    let (status, same) = upload(&server, "greeting", common::plugin_bytes("greeting")).await;
    assert_eq!((status, &same["version"]), (StatusCode::OK, &json!(1)));
}

#[tokio::test]
async fn a_restart_serves_the_same_actions_without_recompiling() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    upload(&server, "greeting", common::plugin_bytes("greeting")).await;
    upload(&server, "fixture", common::plugin_bytes("fixture")).await;
    set_grants(&server, "fixture", json!({"config": {"region": "eu-west"}})).await;
    let (_, before) = invoke(&server, "greeting", greet("Ada")).await;
    let (_, config_before) = invoke(
        &server,
        "fixture",
        json!({"input": {"behave": "config", "key": "region"}}),
    )
    .await;
    assert!(server.stop());
    // A damaged record must not keep the others from serving.
    std::fs::write(dir.path().join("actions/broken.json"), b"{half a record").unwrap();

    let server = Server::start(dir.path(), &[]);
    server.stderr_once("that `broken` is not served", |s| {
        s.contains("action `broken` is not served")
    });
    let (status, after) = invoke(&server, "greeting", greet("Ada")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(after["attributes"], before["attributes"]);
    let (_, config_after) = invoke(
        &server,
        "fixture",
        json!({"input": {"behave": "config", "key": "region"}}),
    )
    .await;
    assert_eq!(config_after["attributes"], config_before["attributes"]);
    assert_eq!(config_after["attributes"]["value"], "eu-west");
    let (_, metrics) = operator_get(&server, "/metrics").await;
    assert!(
        metrics.contains("action_host_compilations_total 0"),
        "the restart recompiled:\n{metrics}"
    );
    let (_, list) = operator_get(&server, "/v1/actions").await;
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["actions"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_under_load_fails_no_invocation() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    upload(&server, "swap", common::plugin_bytes("greeting")).await;
    // Both components accept this input: greeting reads first_name, fixture behave.
    let body = json!({"input": {"first_name": "Ada", "behave": "echo"}});
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (url, body, stop) = (
                server.url("/v1/actions/swap/invoke"),
                body.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let client = client();
                let (mut ok, mut failed) = (0, Vec::new());
                let started = Instant::now();
                while !stop.load(std::sync::atomic::Ordering::Relaxed)
                    && started.elapsed() < Duration::from_secs(30)
                {
                    let response = client
                        .post(&url)
                        .bearer_auth(INVOKE)
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    let status = response.status();
                    if status == StatusCode::OK {
                        ok += 1;
                    } else {
                        failed.push(format!("{status}: {}", response.text().await.unwrap()));
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    for round in 0..6 {
        let plugin = if round % 2 == 0 {
            "fixture"
        } else {
            "greeting"
        };
        let (status, body) = upload(&server, "swap", common::plugin_bytes(plugin)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for client in clients {
        let (ok, failed) = client.await.unwrap();
        assert!(
            failed.is_empty(),
            "failed invocations during hot swap: {failed:?}"
        );
        total += ok;
    }
    assert!(total > 50, "only {total} invocations ran during the swaps");
    let (_, shown) = operator_get(&server, "/v1/actions/swap").await;
    assert_eq!(serde_json::from_str::<Value>(&shown).unwrap()["version"], 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_actions_answer_promptly_while_an_endless_loop_runs() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    upload(&server, "greeting", common::plugin_bytes("greeting")).await;
    upload(&server, "fixture", common::plugin_bytes("fixture")).await;
    set_grants(&server, "fixture", json!({"limits": {"deadline_ms": 8000}})).await;
    let looping = start_loop(&server);
    // Time for the loop's call to be taken, well inside its deadline.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // A call held up behind the loop would wait out its 8 s deadline.
    for _ in 0..20 {
        let started = Instant::now();
        let (status, _) = invoke(&server, "greeting", greet("Ada")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "a call took {:?} beside the loop",
            started.elapsed()
        );
    }
    assert!(!looping.is_finished(), "the loop should still be running");
    assert_eq!(
        looping.await.unwrap().unwrap().status(),
        StatusCode::GATEWAY_TIMEOUT
    );
}

#[tokio::test]
async fn shutdown_lets_a_call_in_flight_finish() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    upload(&server, "fixture", common::plugin_bytes("fixture")).await;
    set_grants(&server, "fixture", json!({"limits": {"deadline_ms": 3000}})).await;
    let in_flight = start_loop(&server);
    // Time for the call to be taken, well inside its deadline.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let stopped = tokio::task::spawn_blocking(move || server.stop());
    // The call ends on its own terms (its deadline), not with a dropped connection.
    let response = in_flight
        .await
        .unwrap()
        .expect("the call in flight got an answer");
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(stopped.await.unwrap(), "the server did not exit cleanly");
}

#[tokio::test]
async fn the_opendialog_webhook_answers_failures_in_its_own_format() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    upload(&server, "fixture", common::plugin_bytes("fixture")).await;
    let attributes = |behave: &str| json!({"input_data": {"attributes": {"behave": behave}}});

    let (status, failure) = webhook(&server, "fixture", attributes("fail")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        failure,
        json!({"successful": false, "errors": [{"message": "no previous order"}]})
    );

    let (status, rejected) = webhook(&server, "fixture", attributes("reject")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        rejected,
        json!({"successful": false, "errors": [{"message": "label must not be empty"}]})
    );

    let (status, unknown) = webhook(&server, "nope", attributes("echo")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(unknown["successful"], false);

    // Not OpenDialog's shape: 400 naming the field.
    let (status, shapeless) = webhook(&server, "fixture", json!({"attributes": {}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        shapeless["errors"][0]["message"],
        "the request's `input_data.attributes` is missing"
    );
}

#[tokio::test]
async fn insecure_no_auth_serves_without_tokens_and_warns() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--insecure-no-auth"]);
    assert!(
        server.stderr().contains("WARNING: --insecure-no-auth"),
        "{}",
        server.stderr()
    );
    let listed = client()
        .get(server.url("/v1/actions"))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), StatusCode::OK);

    // What a web page the developer visits could send: a cross-site POST
    // as `text/plain` (no preflight), or one through a name rebound to
    // loopback. Both are refused; the service's own page is served.
    let own = server.base.trim_start_matches("http://").to_owned();
    upload(&server, "greeting", common::plugin_bytes("greeting")).await;
    let port = own.rsplit(':').next().unwrap().to_owned();
    let post = |headers: Vec<(&'static str, String)>| {
        let mut request = client()
            .post(server.url("/v1/actions/greeting/invoke"))
            .header("content-type", "text/plain")
            .body(greet("Ada").to_string());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = post(vec![("origin", "https://evil.example".into())]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("only from its own page"),
        "{body}"
    );
    let rebound = vec![
        ("host", "evil.example:8080".to_owned()),
        ("origin", "http://evil.example:8080".into()),
    ];
    let (status, body) = post(rebound).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("by its address or localhost"),
        "{body}"
    );
    let (status, body) = post(vec![("origin", format!("http://{own}"))]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = post(vec![("host", format!("localhost:{port}"))]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn missing_tokens_are_generated_and_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_without_tokens(dir.path());
    let stderr = server.stderr();
    let generated = |variable: &str| {
        let line = stderr
            .lines()
            .find(|l| l.contains(&format!("{variable} was not set")))
            .unwrap_or_else(|| panic!("{stderr}"));
        line.rsplit(' ').next().unwrap().to_owned()
    };
    let admin = generated("ACTION_HOST_OPERATOR_TOKEN");
    assert!(admin.len() >= 32);
    let tokens: Vec<String> = [
        "ACTION_HOST_DESIGNER_TOKEN",
        "ACTION_HOST_INVOKE_TOKEN",
        "ACTION_HOST_METRICS_TOKEN",
    ]
    .map(generated)
    .into();
    assert!(tokens.iter().all(|t| t.len() >= 32 && *t != admin));
    let refused = client()
        .get(server.url("/v1/actions"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let allowed = client()
        .get(server.url("/v1/actions"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), StatusCode::OK);
    assert_ne!(admin, generated("ACTION_HOST_INVOKE_TOKEN"));
}

/// An action that needs more of the instance pool per call than its share is
/// refused at upload, naming the limit; one that needs its whole share, run
/// at its concurrency cap, leaves what other actions' calls need.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_action_at_its_concurrency_cap_leaves_the_pool_to_the_others() {
    use crate::common::padded::{Extra, padded};
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            "--max-concurrency",
            "8",
            "--max-concurrency-per-action",
            "4",
        ],
    );
    let fixture = common::plugin_bytes("fixture");
    let extra = |extra: Extra| padded(&fixture, extra);
    for (over, limit) in [
        (
            extra(Extra {
                instances: 60,
                ..Extra::default()
            }),
            "63 core module instances",
        ),
        (
            extra(Extra {
                instances: 2,
                memory_pages: 1,
                table: false,
            }),
            "3 Wasm linear memories",
        ),
        (
            extra(Extra {
                instances: 3,
                memory_pages: 0,
                table: true,
            }),
            "5 tables",
        ),
    ] {
        let (status, body) = upload(&server, "hog", over).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("the action needs more than its share of the host")
                && message.contains(limit)
                && message.contains("at most 20 core instances, 2 memories and 4 tables"),
            "{message}"
        );
    }
    // 3 core instances of its own and 17 more: the whole share of one call.
    let hog = extra(Extra {
        instances: 17,
        ..Extra::default()
    });
    let (status, body) = upload(&server, "hog", hog).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    set_grants(&server, "hog", json!({"limits": {"deadline_ms": 5000}})).await;
    upload(&server, "greeting", common::plugin_bytes("greeting")).await;
    let url = server.url("/v1/actions/hog/invoke");
    let hogs: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                client()
                    .post(url)
                    .bearer_auth(INVOKE)
                    .json(&json!({"input": {"behave": "loop"}}))
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    // Time for the four to be admitted, well inside their deadline.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (status, overloaded) = invoke(&server, "hog", json!({"input": {"behave": "loop"}})).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{overloaded}");
    for _ in 0..10 {
        let (status, done) = invoke(&server, "greeting", greet("Ada")).await;
        assert_eq!(status, StatusCode::OK, "{done}");
    }
    for hog in hogs {
        assert_eq!(hog.await.unwrap(), StatusCode::GATEWAY_TIMEOUT);
    }
}

/// A client on loopback that answers `GET /healthz` promptly, or says how it failed.
async fn healthz_within(server: &Server, limit: Duration) -> Result<(), String> {
    let started = Instant::now();
    let answer = tokio::time::timeout(limit, client().get(server.url("/healthz")).send()).await;
    match answer {
        Ok(Ok(response)) if response.status() == StatusCode::OK => Ok(()),
        Ok(Ok(response)) => Err(format!("status {}", response.status())),
        Ok(Err(error)) => Err(format!("{error}")),
        Err(_) => Err(format!("no answer within {:?}", started.elapsed())),
    }
}

fn loopback_address(server: &Server) -> std::net::SocketAddr {
    server.base.trim_start_matches("http://").parse().unwrap()
}

/// Slow clients that never finish their headers are cut off at the header
/// timeout, and a normal client is served all the while.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_time_out_and_a_normal_client_is_served_throughout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--header-timeout-ms", "4000"]);
    let address = loopback_address(&server);
    // Forty clients, each sending a request head a byte every 100 ms (16 s
    // for the whole head, were they not cut off).
    let slow: Vec<_> = (0..40)
        .map(|_| {
            tokio::spawn(async move {
                let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
                let started = Instant::now();
                let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ".repeat(4);
                for byte in head {
                    if stream.write_all(&[byte]).await.is_err() {
                        return started.elapsed();
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                // Never cut off: the test fails on the elapsed time below.
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest).await;
                started.elapsed()
            })
        })
        .collect();
    // Well inside the header timeout: a client held until the slow ones are
    // cut off would wait for it.
    for _ in 0..15 {
        healthz_within(&server, Duration::from_secs(2))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for client in slow {
        let lasted = client.await.unwrap();
        assert!(
            lasted < Duration::from_secs(7),
            "a slow client lasted {lasted:?}"
        );
    }
}

/// Reads what `stream` sends until it closes; how long after `since` that
/// was, or `None` if it was still open after `limit` more.
async fn closed_within(
    stream: &mut tokio::net::TcpStream,
    since: Instant,
    limit: Duration,
) -> Option<Duration> {
    use tokio::io::AsyncReadExt;
    let mut sink = [0; 4096];
    tokio::time::timeout(limit, async {
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await
    .ok()
    .map(|()| since.elapsed())
}

/// Sends `GET /healthz` on `stream` and reads the answer's head and body.
async fn healthz_on(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0; 4096];
    while !answer.ends_with(b"}") {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8(answer).unwrap()
}

/// A connection that asks nothing is closed at the header timeout, in either
/// protocol; one that has asked stays open between requests for the idle
/// timeout, longer than the header timeout, unless it starts a request head
/// it does not finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_close_at_the_idle_timeout_and_silent_ones_sooner() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--header-timeout-ms", "1000", "--idle-timeout-s", "6"],
    );
    let address = loopback_address(&server);
    let connect = || tokio::net::TcpStream::connect(address);

    let opened = Instant::now();
    let mut silent = connect().await.unwrap();
    let mut http2 = connect().await.unwrap();
    http2
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    for (what, stream) in [("silent", &mut silent), ("HTTP/2 preface only", &mut http2)] {
        let lasted = closed_within(stream, opened, Duration::from_secs(3)).await;
        assert!(
            lasted.is_some_and(|d| d >= Duration::from_millis(700)),
            "{what}: {lasted:?}"
        );
    }

    let mut kept = connect().await.unwrap();
    let mut unfinished = connect().await.unwrap();
    assert!(healthz_on(&mut kept).await.starts_with("HTTP/1.1 200"));
    assert!(
        healthz_on(&mut unfinished)
            .await
            .starts_with("HTTP/1.1 200")
    );
    // Idle past the header timeout, and still served.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(healthz_on(&mut kept).await.starts_with("HTTP/1.1 200"));
    // A head begun after as long has the header timeout, not the idle one.
    unfinished
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    let lasted = closed_within(&mut unfinished, Instant::now(), Duration::from_secs(3)).await;
    assert!(
        lasted.is_some_and(|d| d < Duration::from_millis(2500)),
        "an unfinished head outlived the header timeout: {lasted:?}"
    );
    let lasted = closed_within(&mut kept, Instant::now(), Duration::from_secs(10))
        .await
        .expect("an idle connection outlived the idle timeout");
    assert!(lasted >= Duration::from_secs(3), "closed after {lasted:?}");
}

/// An HTTP/2 connection spoken frame by frame, to see what the service
/// sends on it and when.
struct RawHttp2 {
    stream: tokio::net::TcpStream,
    received: Vec<u8>,
}

/// An HTTP/2 frame: its type, flags, stream and payload.
type Frame = (u8, u8, u32, Vec<u8>);

const GOAWAY: u8 = 7;

impl RawHttp2 {
    async fn open(address: std::net::SocketAddr) -> RawHttp2 {
        RawHttp2::open_with(address, &[]).await
    }

    /// Opens a connection with these settings: (identifier, value).
    async fn open_with(address: std::net::SocketAddr, settings: &[(u16, u32)]) -> RawHttp2 {
        use tokio::io::AsyncWriteExt;
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        preface.extend_from_slice(&((settings.len() * 6) as u32).to_be_bytes()[1..]);
        preface.extend_from_slice(&[0x04, 0, 0, 0, 0, 0]); // SETTINGS on stream 0
        for (id, value) in settings {
            preface.extend_from_slice(&id.to_be_bytes());
            preface.extend_from_slice(&value.to_be_bytes());
        }
        stream.write_all(&preface).await.unwrap();
        RawHttp2 {
            stream,
            received: Vec::new(),
        }
    }

    /// Sends `GET path` on stream `id` and reads until its answer has ended.
    async fn get(&mut self, path: &str, id: u32) {
        self.send_get(path, id).await;
        loop {
            let (kind, flags, stream, _) = self.frame().await.expect("closed before answering");
            if stream == id && matches!(kind, 0 | 1) && flags & 0x01 != 0 {
                return;
            }
        }
    }

    /// Sends `GET path` on stream `id`.
    async fn send_get(&mut self, path: &str, id: u32) {
        use tokio::io::AsyncWriteExt;
        // HPACK: :method GET and :scheme http from the static table, :path
        // and :authority as literals with indexed names.
        let mut block = vec![0x82, 0x86, 0x04, path.len() as u8];
        block.extend_from_slice(path.as_bytes());
        block.extend_from_slice(&[0x01, 9]);
        block.extend_from_slice(b"127.0.0.1");
        let mut frame = (block.len() as u32).to_be_bytes()[1..].to_vec();
        frame.extend_from_slice(&[0x01, 0x05]); // HEADERS, END_STREAM | END_HEADERS
        frame.extend_from_slice(&id.to_be_bytes());
        frame.extend_from_slice(&block);
        self.stream.write_all(&frame).await.unwrap();
    }

    /// The next frame, or `None` when the connection closes. Acknowledges
    /// the service's settings, as a client must.
    async fn frame(&mut self) -> Option<Frame> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            if self.received.len() >= 9 {
                let length =
                    u32::from_be_bytes([0, self.received[0], self.received[1], self.received[2]])
                        as usize;
                if self.received.len() >= 9 + length {
                    let frame: Vec<u8> = self.received.drain(..9 + length).collect();
                    let (kind, flags) = (frame[3], frame[4]);
                    let stream = u32::from_be_bytes(frame[5..9].try_into().unwrap()) & 0x7fff_ffff;
                    if kind == 4 && flags & 0x01 == 0 {
                        let _ = self.stream.write_all(b"\0\0\0\x04\x01\0\0\0\0").await;
                    }
                    return Some((kind, flags, stream, frame[9..].to_vec()));
                }
            }
            let mut chunk = [0; 4096];
            match self.stream.read(&mut chunk).await {
                Ok(n) if n > 0 => self.received.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }

    /// The frames received until the connection closes, and when it closed;
    /// panics if it is still open after `limit`.
    async fn until_closed(&mut self, limit: Duration) -> (Vec<Frame>, Instant) {
        tokio::time::timeout(limit, async {
            let mut frames = Vec::new();
            while let Some(frame) = self.frame().await {
                frames.push(frame);
            }
            (frames, Instant::now())
        })
        .await
        .expect("the connection stayed open")
    }
}

/// Whether `frames` hold a GOAWAY without error that lets stream `id` stand
/// as answered.
fn goaway_after(frames: &[Frame], id: u32) -> bool {
    frames.iter().any(|(kind, _, _, payload)| {
        *kind == GOAWAY
            && u32::from_be_bytes(payload[..4].try_into().unwrap()) & 0x7fff_ffff >= id
            && payload[4..8] == [0, 0, 0, 0]
    })
}

/// An HTTP/2 connection that goes idle, or is open when the service stops,
/// is told GOAWAY before it closes, so a client (a load balancer) knows
/// which requests were taken and that others may be retried; one that does
/// not answer the GOAWAY's ping does not hold the service open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connections_are_told_goaway_when_idle_and_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--idle-timeout-s", "2"]);
    let address = loopback_address(&server);

    let mut idle = RawHttp2::open(address).await;
    idle.get("/healthz", 1).await;
    let answered = Instant::now();
    let (frames, closed) = idle.until_closed(Duration::from_secs(8)).await;
    assert!(goaway_after(&frames, 1), "no GOAWAY: {frames:?}");
    let lasted = closed - answered;
    assert!(
        lasted >= Duration::from_millis(1500) && lasted < Duration::from_secs(5),
        "closed {lasted:?} after its answer"
    );

    let mut open = RawHttp2::open(address).await;
    open.get("/healthz", 1).await;
    open.get("/healthz", 3).await;
    let stopping = Instant::now();
    let stopped = tokio::task::spawn_blocking(move || server.stop());
    let (frames, _) = open.until_closed(Duration::from_secs(5)).await;
    assert!(
        goaway_after(&frames, 3),
        "no GOAWAY at shutdown: {frames:?}"
    );
    assert!(stopped.await.unwrap(), "the server did not exit cleanly");
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "an idle connection held the shutdown for {:?}",
        stopping.elapsed()
    );
}

/// Clients that take no response (an HTTP/2 window of zero: not one byte of
/// a body may be sent to them) cannot hold the connection slots: their
/// connections are idle, evicted at the cap and closed at the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_take_no_response_cannot_hold_the_connections() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            "--max-connections",
            "4",
            "--header-timeout-ms",
            "1000",
            "--idle-timeout-s",
            "6",
        ],
    );
    let address = loopback_address(&server);
    const INITIAL_WINDOW_SIZE: u16 = 4;
    let started = Instant::now();
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let mut client = RawHttp2::open_with(address, &[(INITIAL_WINDOW_SIZE, 0)]).await;
        client.send_get("/healthz", 1).await;
        // The answer's head comes; its body never can.
        loop {
            match client.frame().await {
                Some((1, _, 1, _)) => break,
                Some(_) => {}
                None => panic!("closed before the answer's head"),
            }
        }
        stalled.push(client);
    }
    // Well before the idle timeout: only eviction at the cap makes room.
    healthz_within(&server, Duration::from_secs(4))
        .await
        .expect("stalled clients held every connection");

    // Idle at 6 s, then a second's grace after the GOAWAY: about 7 s.
    let mut last = stalled.pop().unwrap();
    let mut closed = Vec::new();
    for mut client in stalled {
        closed.push(client.until_closed(Duration::from_secs(11)).await.1);
    }
    let _ = last.until_closed(Duration::from_secs(11)).await;
    assert!(
        closed
            .iter()
            .all(|at| *at - started < Duration::from_secs(11))
    );
}

/// More idle connections than the cap: the ones idle longest are closed to
/// make room, the service's descriptors stay bounded, and a normal client is
/// served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_is_bounded_and_a_normal_client_is_served_throughout() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--max-connections", "32"]);
    let address = loopback_address(&server);
    let baseline = server.open_files();
    let mut flood = Vec::new();
    for round in 0..10 {
        for _ in 0..30 {
            if let Ok(stream) = tokio::net::TcpStream::connect(address).await {
                flood.push(stream);
            }
        }
        healthz_within(&server, Duration::from_secs(2))
            .await
            .unwrap_or_else(|why| panic!("round {round}: {why}"));
    }
    assert_eq!(flood.len(), 300, "the kernel refused connections");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let open = server.open_files();
    assert!(
        open <= baseline + 32 + 4,
        "{open} descriptors open with 300 connections (at start {baseline})"
    );
}

/// Out of file descriptors, `accept` fails: the service backs off instead of
/// spinning, closes idle connections to make room, and serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_descriptors_neither_spins_nor_stops_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let address = loopback_address(&server);
    // Leave the service a few descriptors more than it holds now.
    let limit = (server.open_files() + 8) as u64;
    let rlimit = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: prlimit on our own child, with a valid struct and no old value asked.
    let set = unsafe {
        libc::prlimit(
            server.pid() as i32,
            libc::RLIMIT_NOFILE,
            &rlimit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(set, 0, "prlimit failed");
    let before = server.cpu_time();
    let started = Instant::now();
    let mut flood = Vec::new();
    for _ in 0..100 {
        if let Ok(stream) = tokio::net::TcpStream::connect(address).await {
            flood.push(stream);
        }
    }
    // Give a spinning accept loop time to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = server.cpu_time() - before;
    let wall = started.elapsed();
    assert!(
        used < wall / 4,
        "the service used {used:?} of CPU in {wall:?} while out of descriptors"
    );
    healthz_within(&server, Duration::from_secs(5))
        .await
        .unwrap();
    let warnings = server
        .stderr()
        .matches("accepting a connection failed")
        .count();
    assert!(
        (1..=10).contains(&warnings),
        "{warnings} warnings:\n{}",
        server.stderr()
    );
}

/// A body that arrives too slowly is cut off with 408, and the upload changes
/// nothing.
#[tokio::test]
async fn a_body_sent_too_slowly_gets_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--body-timeout-ms", "500"]);
    let mut stream = tokio::net::TcpStream::connect(loopback_address(&server))
        .await
        .unwrap();
    let head = format!(
        "PUT /v1/actions/slow HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {DESIGNER}\r\n\
         Content-Length: 100000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let sender = async {
        for _ in 0..100 {
            if stream.write_all(&[0u8; 10]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), sender).await;
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("the body did not arrive within 0.5 s"),
        "{answer}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    let (status, _) = operator_get(&server, "/v1/actions/slow").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// The data directory is private, and an artifact changed on disk is not
/// loaded: the service compiles the action again and counts the refusal.
#[tokio::test]
async fn the_data_directory_is_private_and_a_changed_artifact_is_compiled_again() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    upload(&server, "greeting", common::plugin_bytes("greeting")).await;
    assert!(server.stop());
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let mut files = 0;
    for sub in ["", "versions", "artifacts", "actions"] {
        let folder = data.join(sub);
        assert_eq!(mode(&folder), 0o700, "{}", folder.display());
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                assert_eq!(mode(&path), 0o600, "{}", path.display());
                files += 1;
            }
        }
    }
    assert!(files >= 4, "{files} files");
    for entry in std::fs::read_dir(data.join("artifacts")).unwrap() {
        let path = entry.unwrap().path();
        let mut artifact = std::fs::read(&path).unwrap();
        let middle = artifact.len() / 2;
        artifact[middle] ^= 0x40;
        std::fs::write(&path, artifact).unwrap();
    }
    let server = Server::start(&data, &[]);
    let (status, done) = invoke(&server, "greeting", greet("Ada")).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    let (_, metrics) = operator_get(&server, "/metrics").await;
    assert!(
        metrics.contains("action_host_compilations_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("action_host_artifacts_rejected_total 1"),
        "{metrics}"
    );
}

/// Compiling a large upload holds up no other change: settings of another
/// action change at once, and past the compile timeout the upload is answered
/// 503 with nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_compilation_holds_up_no_other_change() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--compile-timeout-s", "4"]);
    upload(&server, "fixture", common::plugin_bytes("fixture")).await;
    // The JavaScript greeting takes about 11 s to compile on two cores.
    let url = server.url("/v1/actions/slow-js");
    let big = common::plugin_bytes("greeting-js");
    let uploading = tokio::spawn(async move {
        let started = Instant::now();
        let response = client()
            .put(url)
            .bearer_auth(DESIGNER)
            .body(big)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        (status, body, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let configured = client()
        .put(server.url("/v1/actions/fixture/config"))
        .bearer_auth(DESIGNER)
        .json(&json!({"greeting_prefix": "Hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(configured.status(), StatusCode::OK);
    // Waiting for the compilation would take seconds more; the slack is for
    // a busy machine's disk (the change is written and synced).
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a config change waited {:?} for a compilation",
        started.elapsed()
    );
    assert!(
        !uploading.is_finished(),
        "the upload ended before its timeout"
    );
    let (status, body, took) = uploading.await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "compile-timeout");
    assert!(took < Duration::from_secs(8), "the upload took {took:?}");
    let (status, _) = operator_get(&server, "/v1/actions/slow-js").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
