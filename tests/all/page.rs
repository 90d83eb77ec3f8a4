//! The designer's page: served without a token under a policy that runs
//! only its own script, `GET /v1/me` for the roles it shows, and the page
//! itself driven in headless Chromium by `tests/browser/page.mjs`.

use crate::common;
use crate::common::server::{DESIGNER, INVOKE, METRICS, OPERATOR, Server};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test]
async fn the_page_is_served_to_anyone_and_may_run_only_its_own_files() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let client = common::api::client();
    for (path, kind, holds) in [
        ("/", "text/html", "/page/app.js"),
        ("/page/app.js", "text/javascript", "sessionStorage"),
        ("/page/app.css", "text/css", "font-family"),
    ] {
        let response = client.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        let header = |name: &str| headers[name].to_str().unwrap().to_owned();
        assert!(header("content-type").starts_with(kind), "{path}");
        let policy = header("content-security-policy");
        for rule in [
            "default-src 'none'",
            "script-src 'self'",
            "connect-src 'self'",
        ] {
            assert!(policy.contains(rule), "{path}: {policy}");
        }
        assert!(!policy.contains("unsafe-inline"), "{policy}");
        assert_eq!(header("x-content-type-options"), "nosniff");
        assert_eq!(header("x-frame-options"), "DENY");
        let body = response.text().await.unwrap();
        assert!(body.contains(holds), "{path}");
        // Nothing from elsewhere: the page works with no internet (the
        // browser test also checks every request it makes).
        for outside in [
            "src=\"http",
            "href=\"http",
            "url(",
            "@import",
            "from \"http",
            "//cdn",
        ] {
            assert!(
                !body.contains(outside),
                "{path} loads from elsewhere: {outside}"
            );
        }
    }
    // The page holds no data: what it shows comes from the API, with a token.
    let actions = client.get(server.url("/v1/actions")).send().await.unwrap();
    assert_eq!(actions.status(), 401);
}

#[tokio::test]
async fn me_names_the_role_of_a_designer_or_operator_token_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let client = common::api::client();
    let me = |token: &'static str| {
        let request = client.get(server.url("/v1/me")).bearer_auth(token);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (status, body) = me(OPERATOR).await;
    assert_eq!((status, body["role"].as_str()), (200, Some("operator")));
    assert_eq!(body["auth"], true);
    let (status, body) = me(DESIGNER).await;
    assert_eq!((status, body["role"].as_str()), (200, Some("designer")));
    for token in [INVOKE, METRICS] {
        let (status, body) = me(token).await;
        assert_eq!(status, 403, "{body}");
    }
    let (status, body) = me("test-unknown-token-000").await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["message"], "unknown token");
}

/// Where `npm ci` put the browser tests' tools (`cargo xtask test` runs it).
fn browser_tools() -> PathBuf {
    let tools = common::root().join("tests/browser/node_modules/playwright-core");
    assert!(
        tools.exists(),
        "{} is missing: `cargo xtask test` installs it (or run `npm ci` in tests/browser)",
        tools.display()
    );
    tools
}

/// The Chromium to drive: `$CHROMIUM`, else Debian's.
fn chromium() -> PathBuf {
    let path =
        std::env::var_os("CHROMIUM").map_or_else(|| "/usr/bin/chromium".into(), PathBuf::from);
    assert!(
        path.exists(),
        "no Chromium at {}: `cargo xtask test` installs Debian's `chromium` (or set CHROMIUM)",
        path.display()
    );
    path
}

#[test]
fn a_designer_uses_the_page_in_a_real_browser() {
    browser_tools();
    let chromium = chromium();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let file = |name: &str, bytes: &[u8]| -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let greeting = common::plugin_bytes("greeting");
    let greeting_v1 = file("greeting.wasm", &greeting);
    let greeting_v2 = file(
        "greeting-v2.wasm",
        &common::with_custom_section(&greeting, "v2"),
    );
    let broken = file("broken.wasm", b"\0asm this is not a component");
    let screenshot = common::root().join("docs/try-it.png");

    let mut child = Command::new("node")
        .arg(common::root().join("tests/browser/page.mjs"))
        .current_dir(common::root().join("tests/browser"))
        .env("ACTION_HOST_URL", server.url("/"))
        .env("DESIGNER_TOKEN", DESIGNER)
        .env("OPERATOR_TOKEN", OPERATOR)
        .env("INVOKE_TOKEN", INVOKE)
        .env("GREETING", &greeting_v1)
        .env("GREETING_V2", &greeting_v2)
        .env("BROKEN", &broken)
        .env("FIXTURE", common::plugin("fixture"))
        .env(
            "CX_REQUEST",
            common::root().join("tests/all/payloads/dialogflow-cx-request.json"),
        )
        .env("SCREENSHOT", &screenshot)
        .env(
            "FAILURE_SCREENSHOT",
            common::root().join("target/page-test-failure.png"),
        )
        .env("CHROMIUM", &chromium)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node: the browser tests need Node.js 18 or newer");
    // The script stops by itself; a browser that hangs is stopped here.
    let deadline = Instant::now() + Duration::from_secs(180);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the browser test failed ({}):\n{stdout}\n{stderr}\nservice log:\n{}",
        output.status,
        server.stderr()
    );
    assert!(stdout.contains("every step passed"), "{stdout}");
    assert_png(&screenshot);
}

/// `path` is a PNG of some size: the try-it panel, as the README shows it.
fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        path.display()
    );
    assert!(bytes.len() > 10_000, "the screenshot is nearly empty");
}

#[tokio::test]
async fn an_action_shows_the_hosts_it_asks_for_beside_the_grants_that_reach_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let (status, view) =
        common::api::upload(&server, "fixture", common::plugin_bytes("fixture")).await;
    assert_eq!(status, 201, "{view}");
    // The fixture's manifest asks for https://api.example.com; nothing grants it.
    assert_eq!(
        view["hosts"],
        serde_json::json!([{"host": "https://api.example.com", "granted_by": []}])
    );
    let grants = ["GET https://api.example.com/v1", "http://127.0.0.1:9"];
    let (status, view) =
        common::api::set_grants(&server, "fixture", serde_json::json!({"grants": grants})).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(
        view["hosts"],
        serde_json::json!([{
            "host": "https://api.example.com",
            "granted_by": ["GET https://api.example.com/v1"],
        }])
    );
    // A grant nobody asked for is still in the settings, for the page to show.
    assert_eq!(view["settings"]["grants"], serde_json::json!(grants));
    // The health the list shows: calls by result and their median.
    let (status, _) = common::api::invoke(
        &server,
        "fixture",
        serde_json::json!({"input": {"behave": "echo"}}),
    )
    .await;
    assert_eq!(status, 200);
    let (_, list) = common::api::operator_get(&server, "/v1/actions").await;
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let fixture = &list["actions"][0];
    assert_eq!(fixture["invocations"]["success"], 1, "{fixture}");
    assert!(fixture["p50_ms"].as_f64().unwrap() > 0.0, "{fixture}");
}

#[tokio::test]
async fn grants_change_without_resending_a_secret_whose_value_is_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let mock = crate::common::mock::Mock::start().await;
    let (status, _) =
        common::api::upload(&server, "fixture", common::plugin_bytes("fixture")).await;
    assert_eq!(status, 201);
    let echo = format!("GET http://127.0.0.1:{}/echo-json", mock.port);
    let secret = "sk-page-grants-5e1d";
    let (status, view) = common::api::set_grants(
        &server,
        "fixture",
        serde_json::json!({
            "grants": [echo],
            "secrets": [{"name": "api", "value": secret, "allow": [echo]}],
        }),
    )
    .await;
    assert_eq!(status, 200, "{view}");
    // What a client read, with the value redacted, sent back as it is: refused.
    let mut settings = view["settings"].clone();
    settings["grants"] = serde_json::json!([echo, "https://api.example.com"]);
    let (status, error) = common::api::set_grants(&server, "fixture", settings.clone()).await;
    assert_eq!(status, 422, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("leave `value` out"),
        "{error}"
    );
    // With the value left out, the secret keeps its value.
    settings["secrets"][0]
        .as_object_mut()
        .unwrap()
        .remove("value");
    let (status, view) = common::api::set_grants(&server, "fixture", settings).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(
        view["hosts"][0]["granted_by"],
        serde_json::json!(["https://api.example.com"])
    );
    let (status, done) = common::api::invoke(
        &server,
        "fixture",
        serde_json::json!({"input": {
            "behave": "http",
            "url": mock.url("/echo-json"),
            "headers": {"authorization": "Bearer {{secret:api}}"},
        }}),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    let received = mock.received();
    assert_eq!(
        received[0].header("authorization"),
        Some(format!("Bearer {secret}").as_str())
    );
    // A new secret has no value to keep.
    let (status, error) = common::api::set_grants(
        &server,
        "fixture",
        serde_json::json!({"secrets": [{"name": "other", "allow": [echo]}], "grants": [echo]}),
    )
    .await;
    assert_eq!(status, 422, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("secret `other` has no value")
    );
}
