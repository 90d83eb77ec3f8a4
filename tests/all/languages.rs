//! Actions written in JavaScript (componentize-js), Python (componentize-py) and
//! Rust, built from source, uploaded to the real service and invoked through its
//! API against a loopback mock of the APIs they call.
//!
//! These components are 12-19 MB and take seconds each to compile, so they are
//! uploaded once into a seed data directory; every test serves a copy of it,
//! which also proves that the artifact cache serves them without recompiling.

use crate::common;

use crate::common::api::{invoke, operator_get, set_grants, upload, webhook};
use crate::common::mock::Mock;
use crate::common::server::Server;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use tokio::sync::OnceCell;

/// Every JavaScript and Python example action, the randomness probes, and a
/// Rust one beside them.
const ACTIONS: [&str; 9] = [
    "order_lookup",
    "greeting-js",
    "weather-js",
    "membership-js",
    "greeting-py",
    "news-py",
    "random-js",
    "random-py",
    "post-js",
];

/// A data directory holding every action of [`ACTIONS`], compiled.
async fn seed() -> &'static Path {
    static SEED: OnceCell<PathBuf> = OnceCell::const_new();
    SEED.get_or_init(|| async {
        // Made afresh by every run, so no test depends on an earlier run's
        // artifacts.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("languages-seed");
        if dir.exists() {
            std::fs::remove_dir_all(&dir).unwrap();
        }
        std::fs::create_dir_all(&dir).unwrap();
        let server = Server::start(&dir, &[]);
        for name in ACTIONS {
            let (status, body) = upload(&server, name, common::plugin_bytes(name)).await;
            assert!(status.is_success(), "uploading {name}: {status} {body}");
        }
        assert!(server.stop(), "the seeding server did not stop cleanly");
        dir
    })
    .await
}

/// A server on a copy of the seed data directory (kept alive by the returned
/// directory), and a mock upstream. The copy is made of hard links: the store
/// never changes a file in place, it replaces it by rename.
async fn serve_seeded() -> (tempfile::TempDir, Server, Mock) {
    let dir = tempfile::tempdir().unwrap();
    link_tree(seed().await, dir.path());
    let server = Server::start(dir.path(), &[]);
    (dir, server, Mock::start().await)
}

fn link_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            link_tree(&entry.path(), &target);
        } else if std::fs::hard_link(entry.path(), &target).is_err() {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Grants `action` GET requests under `prefix` of the mock, with `secret`
/// (value `secret-value`) allowed to go there, and sets its `api_base` to
/// `base` on the mock.
async fn grant(
    server: &Server,
    action: &str,
    mock: &Mock,
    (prefix, base): (&str, &str),
    secret: &str,
) {
    let allow = format!("GET {}", mock.url(prefix));
    let settings = json!({
        "grants": [allow],
        "config": {"api_base": mock.url(base)},
        "secrets": [{"name": secret, "value": "secret-value", "allow": [allow],
                     "headers": [if secret == "weather_key" { "x-api-key" } else { "authorization" }]}],
    });
    let (status, body) = set_grants(server, action, settings).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

fn context() -> Value {
    json!({"timezone": "Europe/Lisbon", "user_id": "u-42"})
}

/// The host's note about a refused request in an invocation's logs.
fn denial_note(body: &Value) -> String {
    body["error"]["logs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|line| line["source"] == "host")
        .filter_map(|line| line["message"].as_str())
        .find(|message| message.starts_with("outbound request denied"))
        .unwrap_or_else(|| panic!("no denial in the logs: {body}"))
        .to_owned()
}

#[tokio::test]
async fn javascript_actions_answer_through_the_service() {
    let (_dir, server, mock) = serve_seeded().await;

    let (status, body) = invoke(
        &server,
        "greeting-js",
        json!({"input": {"first_name": "Ada Lovelace", "is_member": true,
                         "membership_tier": "gold"}, "context": context()}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let part = body["attributes"]["part_of_day"]
        .as_str()
        .unwrap()
        .to_owned();
    let salutation = if part == "night" {
        "Hello".to_owned()
    } else {
        format!("Good {part}")
    };
    assert_eq!(
        body["attributes"]["greeting"],
        format!("{salutation}, Ada! Thanks for being a gold member.")
    );
    // The first name is cut at any whitespace, not only a space.
    let (status, body) = invoke(
        &server,
        "greeting-js",
        json!({"input": {"first_name": " \tGrace\u{a0}Brewster Hopper "}, "context": context()}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["attributes"]["greeting"],
        format!("{salutation}, Grace!")
    );

    // An async `run` around fetch(), through wasi:http, with a host-side secret.
    grant(
        &server,
        "weather-js",
        &mock,
        ("/weather/", "/weather"),
        "weather_key",
    )
    .await;
    let (status, body) = invoke(
        &server,
        "weather-js",
        json!({"input": {"city": "Lisbon"}, "context": context()}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["attributes"]["weather_summary"],
        "Light rain and 15 °C in Lisbon."
    );
    assert_eq!(body["attributes"]["weather"]["temperature_c"], 14.6);
    let request = mock.received().pop().expect("the weather API was called");
    assert_eq!(request.path, "/weather/current?city=Lisbon");
    assert_eq!(request.header("x-api-key"), Some("secret-value"));

    // A business failure is an outcome, not an error.
    let (status, body) = invoke(
        &server,
        "weather-js",
        json!({"input": {"city": "Atlantis"}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["success"], false);
    assert_eq!(body["messages"][0], "I don't know the weather in Atlantis.");

    // The `http` import, called directly from JavaScript.
    grant(
        &server,
        "membership-js",
        &mock,
        ("/members/", ""),
        "members_token",
    )
    .await;
    let (status, body) = invoke(
        &server,
        "membership-js",
        json!({"input": {}, "context": context()}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["attributes"]["is_member"], true);
    assert_eq!(body["attributes"]["membership_tier"], "gold");
    assert_eq!(
        body["messages"][0],
        "You're a gold member since 2021-04-01."
    );
    assert_eq!(body["logs"][0]["message"], "u-42 is a gold member");
    let request = mock
        .received()
        .pop()
        .expect("the membership API was called");
    assert_eq!(request.path, "/members/u-42");
    assert_eq!(request.header("authorization"), Some("Bearer secret-value"));

    // OpenDialog's webhook format works for a JavaScript action as for any.
    let (status, body) = webhook(
        &server,
        "greeting-js",
        json!({"input_data": {"attributes": {"first_name": "Grace"}}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["successful"], true);
    assert!(
        body["output_data"]["attributes"]["greeting"]
            .as_str()
            .unwrap()
            .ends_with("Grace!"),
        "{body}"
    );

    let (_, metrics) = operator_get(&server, "/metrics").await;
    assert!(
        metrics.contains("action_host_compilations_total 0"),
        "the seeded actions were recompiled:\n{metrics}"
    );
    // Read from the cache, they still start from the state `describe` left.
    for action in ["greeting-js", "weather-js", "membership-js"] {
        let (_, described) = operator_get(&server, &format!("/v1/actions/{action}")).await;
        let described: Value = serde_json::from_str(&described).unwrap();
        assert_eq!(
            described["starts_from"],
            json!({"from": "describe"}),
            "{action}"
        );
    }
}

#[tokio::test]
async fn python_actions_answer_through_the_service() {
    let (_dir, server, mock) = serve_seeded().await;

    let (status, body) = invoke(
        &server,
        "greeting-py",
        json!({"input": {"first_name": "Ada Lovelace", "is_member": "true"},
               "context": context()}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["attributes"]["greeting"]
            .as_str()
            .unwrap()
            .ends_with(", Ada! Thanks for being a member."),
        "{body}"
    );

    grant(&server, "news-py", &mock, ("/news/", "/news"), "news_token").await;
    let (status, body) = invoke(
        &server,
        "news-py",
        json!({"input": {"first_name": "Ada", "topic": "local news", "limit": 2},
               "context": context()}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["attributes"]["headline_count"], 2);
    assert_eq!(
        body["attributes"]["headlines"],
        json!([
            {"title": "Rain returns to Lisbon", "source": "Daily Example"},
            {"title": "Tea prices steady", "source": "Market Example"},
        ])
    );
    let greeting = body["messages"][0].as_str().unwrap();
    let part = ["morning", "afternoon", "evening"]
        .into_iter()
        .find(|part| greeting == format!("Good {part}, Ada! Here are today's top stories."));
    assert!(
        part.is_some() || greeting == "Hello, Ada! Here are today's top stories.",
        "{greeting}"
    );
    assert_eq!(body["messages"][1], "Rain returns to Lisbon");
    let request = mock.received().pop().expect("the news API was called");
    assert_eq!(request.path, "/news/headlines?topic=local%20news&limit=2");
    assert_eq!(request.header("authorization"), Some("Bearer secret-value"));

    let (status, body) = webhook(
        &server,
        "news-py",
        json!({"input_data": {"attributes": {"first_name": "Grace", "limit": 1}}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["output_data"]["attributes"]["headline_count"], 1);
}

#[tokio::test]
async fn a_rust_action_answers_through_the_same_service() {
    let (_dir, server, mock) = serve_seeded().await;
    let allow = format!("GET {}", mock.url("/api/users/"));
    let settings = json!({"grants": [allow], "config": {"api_base": mock.url("/api")}});
    let (status, body) = set_grants(&server, "order_lookup", settings).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = invoke(
        &server,
        "order_lookup",
        json!({"input": {}, "context": context()}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["attributes"]["last_order_status"], "shipped");
    assert_eq!(mock.received()[0].path, "/api/users/u-42/orders/last");
}

/// `fetch()` with a body: the runtime sets `content-length` itself, and the
/// host streams the body through the gate, hundreds of kilobytes of it.
#[tokio::test]
async fn fetch_posts_a_body() {
    let (_dir, server, mock) = serve_seeded().await;
    let allow = format!("POST {}", mock.url("/crm/"));
    let (status, body) = set_grants(&server, "post-js", json!({"grants": [allow]})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for size in [10, 300_000] {
        let input = json!({"input": {"url": mock.url("/crm/leads"), "size": size}});
        let (status, body) = invoke(&server, "post-js", input).await;
        assert_eq!(status, StatusCode::OK, "{size}: {body}");
        assert_eq!(body["attributes"]["status"], 201, "{body}");
        let received = mock.received().pop().unwrap();
        assert_eq!(received.body.len(), size);
        assert_eq!(
            received.header("content-length"),
            Some(size.to_string().as_str())
        );
    }
}

#[tokio::test]
async fn fetch_obeys_the_request_timeout_of_the_grants() {
    let (_dir, server, mock) = serve_seeded().await;
    let allow = format!("GET {}", mock.url("/slow/"));
    let settings = json!({
        "grants": [allow],
        "config": {"api_base": mock.url("/slow")},
        "secrets": [{"name": "weather_key", "value": "weather-key", "allow": [allow],
                     "headers": ["x-api-key"]}],
        "limits": {"request_timeout_ms": 300},
    });
    let (status, body) = set_grants(&server, "weather-js", settings).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let started = std::time::Instant::now();
    let (status, body) = invoke(&server, "weather-js", json!({"input": {"city": "Oslo"}})).await;
    // The mock answers after 3 s; the host gives up at 300 ms.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{body}"
    );
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    let notes: Vec<&str> = body["error"]["logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|line| line["message"].as_str())
        .collect();
    assert!(notes.contains(&"outbound request timed out"), "{body}");
}

#[tokio::test]
async fn a_refused_fetch_is_refused_as_the_http_import_is() {
    let (_dir, server, mock) = serve_seeded().await;
    // Both actions point at the mock, and neither is granted it.
    for action in ["weather-js", "membership-js"] {
        let settings = json!({"config": {"api_base": mock.url("/api")}});
        let (status, body) = set_grants(&server, action, settings).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    let (status, by_import) = invoke(
        &server,
        "membership-js",
        json!({"input": {"user_id": "u-1"}}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{by_import}");
    assert_eq!(by_import["error"]["code"], "denied");
    let (status, by_fetch) =
        invoke(&server, "weather-js", json!({"input": {"city": "Lisbon"}})).await;
    // fetch() reports every failure as a NetworkError, so the action cannot
    // tell a refusal from an outage; the host refused it all the same.
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{by_fetch}");
    assert_eq!(by_fetch["error"]["code"], "upstream");
    assert!(
        by_fetch["error"]["message"]
            .as_str()
            .unwrap()
            .contains("NetworkError"),
        "{by_fetch}"
    );

    let port = mock.port;
    assert_eq!(
        denial_note(&by_import),
        format!(
            "outbound request denied: no grant allows GET http://127.0.0.1:{port}/api/members/u-1"
        )
    );
    assert_eq!(
        denial_note(&by_fetch),
        format!(
            "outbound request denied: no grant allows GET \
             http://127.0.0.1:{port}/api/current?city=Lisbon"
        )
    );
    assert!(mock.received().is_empty(), "a refused request got out");
    let (_, metrics) = operator_get(&server, "/metrics").await;
    for action in ["weather-js", "membership-js"] {
        let line = format!("action_host_outbound_denials_total{{action=\"{action}\"}} 1");
        assert!(metrics.contains(&line), "no `{line}` in:\n{metrics}");
    }
}

#[tokio::test]
async fn actions_that_throw_become_errors_and_the_service_carries_on() {
    let (_dir, server, mock) = serve_seeded().await;
    grant(
        &server,
        "weather-js",
        &mock,
        ("/weather/", "/weather"),
        "weather_key",
    )
    .await;
    grant(&server, "news-py", &mock, ("/news/", "/news"), "news_token").await;

    // A thrown `action-error` variant is the action's own error.
    for action in ["greeting-js", "greeting-py"] {
        let (status, body) = invoke(&server, action, json!({"input": {"first_name": "  "}})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{action}: {body}");
        assert_eq!(body["error"]["code"], "invalid-input");
        assert_eq!(body["error"]["message"], "first_name is empty");
    }
    let (status, body) = invoke(
        &server,
        "news-py",
        json!({"input": {"first_name": "Ada", "limit": 50}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        body["error"]["message"],
        "limit must be between 1 and 10, not 50"
    );

    // Anything else thrown is `internal`, named by the language's own words.
    let (status, body) = invoke(&server, "weather-js", json!({"input": {"city": "Garbled"}})).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(body["error"]["code"], "internal");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("the action threw SyntaxError: JSON.parse"),
        "{message}"
    );
    let (status, body) = invoke(
        &server,
        "news-py",
        json!({"input": {"first_name": "Ada", "topic": "garbled"}}),
    )
    .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("the action raised json.decoder.JSONDecodeError"),
        "{message}"
    );

    // The same service, and the same actions, keep answering.
    for action in ["greeting-js", "greeting-py"] {
        let (status, body) = invoke(&server, action, json!({"input": {"first_name": "Ada"}})).await;
        assert_eq!(status, StatusCode::OK, "{action}: {body}");
    }
    let (status, body) = invoke(&server, "weather-js", json!({"input": {"city": "Porto"}})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["attributes"]["weather"]["city"], "Porto");
}

/// Each call is a fresh instance, started from a snapshot where the host took
/// one: what the language's sources of randomness return must differ from
/// call to call all the same.
#[tokio::test]
async fn randomness_differs_from_call_to_call_in_javascript_and_python() {
    let (_dir, server, _mock) = serve_seeded().await;
    for (action, outputs) in [
        ("random-js", ["math_random", "crypto", "uuid"]),
        ("random-py", ["random", "uuid4", "token"]),
    ] {
        let (status, first) = invoke(&server, action, json!({})).await;
        assert_eq!(status, StatusCode::OK, "{first}");
        let (_, second) = invoke(&server, action, json!({})).await;
        for output in outputs {
            assert!(!first["attributes"][output].is_null(), "{action}: {first}");
            assert_ne!(
                first["attributes"][output], second["attributes"][output],
                "{action}: `{output}` repeated"
            );
        }
    }
    // SpiderMonkey draws its seeds when a call first asks, so the JavaScript
    // action starts from describe's state; CPython's runtime reseeds at its
    // first call, which describe is, so that state is not used.
    let (_, js) = operator_get(&server, "/v1/actions/random-js").await;
    let js: Value = serde_json::from_str(&js).unwrap();
    assert_eq!(js["starts_from"], json!({"from": "describe"}));
    let (_, py) = operator_get(&server, "/v1/actions/random-py").await;
    let py: Value = serde_json::from_str(&py).unwrap();
    assert_eq!(py["starts_from"]["from"], "build");
    assert!(
        py["starts_from"]["why"]
            .as_str()
            .unwrap()
            .starts_with("`describe` drew random numbers"),
        "{py}"
    );
}

/// The service listens before it has loaded what it serves: a small Rust
/// action answers while a JavaScript one still compiles, and a call to that
/// one is told to come back instead of being told it does not exist.
#[tokio::test]
async fn a_rust_action_serves_while_a_javascript_one_still_compiles_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let rust = format!("greeting={}", common::plugin("greeting").display());
    let javascript = format!("greeting-js={}", common::plugin("greeting-js").display());
    let server = Server::start_loading(dir.path(), &["--deploy", &javascript, "--deploy", &rust]);
    let greet = json!({"input": {"first_name": "Ada"}});

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let (status, _) = loop {
        let (status, body) = invoke(&server, "greeting", greet.clone()).await;
        if status == StatusCode::OK || std::time::Instant::now() > deadline {
            break (status, body);
        }
        assert_eq!(body["error"]["code"], "loading", "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(status, StatusCode::OK);
    let health: Value =
        serde_json::from_str(server.health().split("\r\n\r\n").nth(1).expect("a body")).unwrap();
    assert_eq!(health["status"], "starting", "{health}");
    assert_eq!(health["loading"], json!(["greeting-js"]));
    let early = common::api::client()
        .post(server.url("/v1/actions/greeting-js/invoke"))
        .bearer_auth(common::server::INVOKE)
        .json(&greet)
        .send()
        .await
        .unwrap();
    assert_eq!(early.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(early.headers().contains_key("retry-after"));

    server.wait_until_loaded();
    let (status, body) = invoke(&server, "greeting-js", greet).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.stderr_once("both `ready` lines", |s| {
        s.contains("greeting ready in") && s.contains("greeting-js ready in")
    });
}
