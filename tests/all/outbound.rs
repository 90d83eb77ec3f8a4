//! Outbound HTTP end to end: real components calling a real server on loopback,
//! granted by explicit IP grants. Nothing here talks to any other address:
//! every request to one is refused before a connection is made.

use crate::common;

use crate::common::mock::Mock;
use action_host::{
    ActionSettings, CallContext, CallOptions, ExchangeOutcome, Grant, Host, HostConfig, HttpLimits,
    Invocation, Secret, Tape,
};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn grants(texts: &[&str]) -> Vec<Grant> {
    texts.iter().map(|t| Grant::parse(t).unwrap()).collect()
}

async fn host_with(plugin: &str, settings: ActionSettings) -> Host {
    let host = Host::new(HostConfig {
        pool_size: 16,
        ..HostConfig::default()
    })
    .unwrap();
    host.load_with("fixture", common::plugin_bytes(plugin), settings)
        .await
        .unwrap();
    host
}

async fn call(host: &Host, input: Value) -> Invocation {
    let input: Map<String, Value> = input.as_object().unwrap().clone();
    host.invoke("fixture", CallContext::default(), &input)
        .await
        .unwrap()
}

fn allow(texts: &[&str]) -> ActionSettings {
    ActionSettings {
        grants: grants(texts),
        ..ActionSettings::default()
    }
}

#[tokio::test]
async fn an_allowed_request_arrives_with_method_path_headers_and_body_intact() {
    let mock = Mock::start().await;
    let host = host_with(
        "fixture",
        allow(&[&format!("POST http://127.0.0.1:{}/orders", mock.port)]),
    )
    .await;
    let done = call(
        &host,
        json!({
            "behave": "http", "method": "POST", "url": mock.url("/orders/42?expand=items"),
            "headers": {"x-trace": "abc-123", "content-type": "application/json"},
            "body": "{\"qty\":2}"
        }),
    )
    .await;
    assert_eq!(done.attributes["status"], 200, "{:?}", done.attributes);
    assert_eq!(done.attributes["body"], "ok");
    let received = mock.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/orders/42?expand=items");
    assert_eq!(request.header("x-trace"), Some("abc-123"));
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.body, b"{\"qty\":2}");
}

#[tokio::test]
async fn each_rule_of_a_grant_denies_what_it_should() {
    let mock = Mock::start().await;
    let p = mock.port;
    let host = host_with(
        "fixture",
        allow(&[&format!("GET,POST http://127.0.0.1:{p}/orders")]),
    )
    .await;
    let cases = [
        ("scheme", "GET", format!("https://127.0.0.1:{p}/orders")),
        ("host", "GET", format!("http://127.0.0.2:{p}/orders")),
        (
            "port",
            "GET",
            format!("http://127.0.0.1:{}/orders", p.wrapping_add(1).max(1)),
        ),
        (
            "path prefix",
            "GET",
            format!("http://127.0.0.1:{p}/orders-admin"),
        ),
        (
            "path prefix, dot segments",
            "GET",
            format!("http://127.0.0.1:{p}/orders/../admin"),
        ),
        ("method", "DELETE", format!("http://127.0.0.1:{p}/orders/1")),
    ];
    for (rule, method, url) in cases {
        let done = call(
            &host,
            json!({"behave": "http", "method": method, "url": url}),
        )
        .await;
        assert_eq!(
            done.attributes["error"], "denied",
            "{rule}: {:?}",
            done.attributes
        );
        assert!(
            done.attributes["detail"]
                .as_str()
                .unwrap()
                .starts_with("no grant allows"),
            "{rule}"
        );
    }
    assert!(
        mock.received().is_empty(),
        "a denied request reached the server"
    );
    let allowed = call(
        &host,
        json!({"behave": "http", "url": mock.url("/orders/7")}),
    )
    .await;
    assert_eq!(allowed.attributes["status"], 200);
}

#[tokio::test]
async fn internal_addresses_are_denied_in_every_form_without_an_explicit_grant() {
    let mock = Mock::start().await;
    let p = mock.port;
    // Names are granted, so only the address check stands between them and loopback.
    let settings = allow(&[
        &format!("http://localhost:{p}"),
        "http://localhost",
        "http://*.example.com",
    ]);
    let host = host_with("fixture", settings).await;
    let forms = [
        format!("http://127.0.0.1:{p}/"),
        format!("http://localhost:{p}/"),
        "http://localhost/".to_string(),
        format!("http://127.1:{p}/"),
        format!("http://2130706433:{p}/"),
        format!("http://0x7f000001:{p}/"),
        format!("http://0177.0.0.1:{p}/"),
        format!("http://127.000.000.001:{p}/"),
        format!("http://[::1]:{p}/"),
        format!("http://[::ffff:127.0.0.1]:{p}/"),
        format!("http://[0:0:0:0:0:ffff:7f00:1]:{p}/"),
        format!("http://0.0.0.0:{p}/"),
        format!("http://0:{p}/"),
        format!("http://[::]:{p}/"),
        "http://10.0.0.1/".to_string(),
        "http://172.16.0.1/".to_string(),
        "http://192.168.1.1/".to_string(),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://100.64.0.1/".to_string(),
        "http://[fd00::1]/".to_string(),
        "http://[fe80::1]/".to_string(),
        "http://[fd00:ec2::254]/".to_string(),
        "http://[64:ff9b::7f00:1]/".to_string(),
    ];
    for url in &forms {
        let done = call(&host, json!({"behave": "http", "url": url})).await;
        assert_eq!(
            done.attributes["error"], "denied",
            "{url}: {:?}",
            done.attributes
        );
    }
    // A name that resolves to loopback is refused by the address check itself.
    let by_name = call(
        &host,
        json!({"behave": "http", "url": format!("http://localhost:{p}/")}),
    )
    .await;
    let detail = by_name.attributes["detail"].as_str().unwrap();
    assert!(
        detail.contains("`localhost` resolves to") && detail.contains("loopback"),
        "{detail}"
    );
    assert!(
        mock.received().is_empty(),
        "an internal address was reached"
    );
}

#[tokio::test]
async fn redirects_are_not_followed_and_a_followed_location_is_checked_again() {
    let mock = Mock::start().await;
    let p = mock.port;
    let host = host_with(
        "fixture",
        allow(&[&format!("http://127.0.0.1:{p}/redirect")]),
    )
    .await;
    for target in [
        format!("http://localhost:{p}/secret"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
    ] {
        let url = mock.url(&format!("/redirect?to={target}"));
        let seen = call(&host, json!({"behave": "http", "url": url})).await;
        assert_eq!(
            seen.attributes["status"], 302,
            "the action sees the redirect itself"
        );
        let followed = call(&host, json!({"behave": "http", "url": url, "follow": true})).await;
        assert_eq!(followed.attributes["redirected_to"], target.as_str());
        assert_eq!(
            followed.attributes["error"], "denied",
            "{:?}",
            followed.attributes
        );
    }
    assert!(
        mock.received()
            .iter()
            .all(|r| r.path.starts_with("/redirect"))
    );
}

#[tokio::test]
async fn an_explicit_ip_grant_allows_that_address() {
    let mock = Mock::start().await;
    let host = host_with(
        "fixture",
        allow(&[&format!("http://[127.0.0.0/8]:{}", mock.port)]),
    )
    .await;
    let done = call(&host, json!({"behave": "http", "url": mock.url("/")})).await;
    assert_eq!(done.attributes["status"], 200);
}

/// `describe()` runs at every load (an upload, a settings change, a restore,
/// a replay's candidate) with every request denied, even to a destination the
/// action is granted: only `run` reaches upstreams.
#[tokio::test]
async fn describe_reaches_no_upstream_even_a_granted_one() {
    let mock = Mock::start().await;
    let url = mock.url("/described");
    let settings = |greeting: &str| ActionSettings {
        config: [
            ("describe_url".to_owned(), url.clone()),
            ("greeting_prefix".to_owned(), greeting.to_owned()),
        ]
        .into(),
        ..allow(&[&format!("GET http://127.0.0.1:{}/described", mock.port)])
    };
    let host = host_with("fixture", settings("Hi")).await;
    host.load_with(
        "fixture",
        common::plugin_bytes("fixture"),
        settings("Hello"),
    )
    .await
    .unwrap();
    let prepared = host
        .prepare(
            "fixture",
            &common::plugin_bytes("fixture"),
            settings("Hey"),
            None,
        )
        .await
        .unwrap();
    drop(prepared);
    assert!(mock.received().is_empty(), "{:?}", mock.received());
    // The grant and URL are right: a call reaches them.
    let done = call(&host, json!({"behave": "http", "url": url})).await;
    assert_eq!(done.attributes["status"], 200, "{:?}", done.attributes);
    assert_eq!(mock.received().len(), 1);
}

#[tokio::test]
async fn a_secret_reaches_its_bound_destination_only_and_the_action_never_sees_it() {
    let mock = Mock::start().await;
    let p = mock.port;
    let value = "s3cr3t-t0k3n-value";
    let settings = ActionSettings {
        grants: grants(&[&format!("http://127.0.0.1:{p}")]),
        secrets: vec![Secret::new(
            "crm_token",
            value,
            grants(&[&format!("POST http://127.0.0.1:{p}/leads")]),
        )],
        ..ActionSettings::default()
    };
    let host = host_with("fixture", settings).await;
    let auth = json!({"authorization": "Bearer {{secret:crm_token}}"});
    let bound = call(
        &host,
        json!({"behave": "http", "method": "POST", "url": mock.url("/leads"), "headers": auth}),
    )
    .await;
    assert_eq!(bound.attributes["status"], 200);
    let elsewhere = call(
        &host,
        json!({"behave": "http", "method": "POST", "url": mock.url("/other"), "headers": auth}),
    )
    .await;
    assert_eq!(elsewhere.attributes["error"], "denied");
    let detail = elsewhere.attributes["detail"].as_str().unwrap();
    assert!(detail.contains("`crm_token`"), "{detail}");

    let received = mock.received();
    assert_eq!(received.len(), 1, "only the bound request was sent");
    assert_eq!(
        received[0].header("authorization"),
        Some(format!("Bearer {value}").as_str())
    );
    for done in [&bound, &elsewhere] {
        let everything = serde_json::to_string(done).unwrap();
        assert!(
            !everything.contains(value),
            "the secret leaked into the result: {everything}"
        );
    }
    let settings_debug = format!("{:?}", Secret::new("x", value, Vec::new()));
    assert!(!settings_debug.contains(value));
}

fn limited(mock: &Mock, http: HttpLimits) -> ActionSettings {
    ActionSettings {
        grants: grants(&[&format!("http://127.0.0.1:{}", mock.port)]),
        http,
        ..ActionSettings::default()
    }
}

#[tokio::test]
async fn the_request_budget_is_enforced() {
    let mock = Mock::start().await;
    let host = host_with(
        "fixture",
        limited(
            &mock,
            HttpLimits {
                max_requests: 3,
                ..HttpLimits::default()
            },
        ),
    )
    .await;
    let done = call(
        &host,
        json!({"behave": "http", "url": mock.url("/"), "count": 5}),
    )
    .await;
    assert_eq!(done.attributes["error"], "budget-exhausted");
    assert_eq!(done.attributes["sent"], 3);
    assert_eq!(mock.received().len(), 3);
}

#[tokio::test]
async fn a_response_over_the_size_cap_is_too_large_with_or_without_a_length() {
    let mock = Mock::start().await;
    let host = host_with("fixture", limited(&mock, HttpLimits::default())).await;
    for path in ["/big", "/big-chunked"] {
        let done = call(&host, json!({"behave": "http", "url": mock.url(path)})).await;
        assert_eq!(
            done.attributes["error"], "too-large",
            "{path}: {:?}",
            done.attributes
        );
    }
}

#[tokio::test]
async fn a_slow_response_times_out() {
    let mock = Mock::start().await;
    let host = host_with("fixture", limited(&mock, HttpLimits::default())).await;
    let started = Instant::now();
    let done = call(
        &host,
        json!({"behave": "http", "url": mock.url("/slow"), "timeout_ms": 200}),
    )
    .await;
    assert_eq!(done.attributes["error"], "timeout", "{:?}", done.attributes);
    assert!(started.elapsed() < Duration::from_secs(2));
    let capped = limited(
        &mock,
        HttpLimits {
            request_timeout: Duration::from_millis(200),
            ..HttpLimits::default()
        },
    );
    let host = host_with("fixture", capped).await;
    let done = call(&host, json!({"behave": "http", "url": mock.url("/slow")})).await;
    assert_eq!(done.attributes["error"], "timeout");
}

#[tokio::test]
async fn a_request_body_over_the_cap_is_invalid() {
    let mock = Mock::start().await;
    let host = host_with(
        "fixture",
        limited(
            &mock,
            HttpLimits {
                max_request_body_bytes: 4,
                ..HttpLimits::default()
            },
        ),
    )
    .await;
    let done = call(
        &host,
        json!({"behave": "http", "method": "POST", "url": mock.url("/"), "body": "too long"}),
    )
    .await;
    assert_eq!(done.attributes["error"], "invalid-request");
    assert!(mock.received().is_empty());
}

#[tokio::test]
async fn the_wasi_http_path_obeys_the_same_grants_secrets_and_address_checks() {
    let mock = Mock::start().await;
    let p = mock.port;
    let value = "wasi-s3cr3t-value";
    let settings = ActionSettings {
        grants: grants(&[&format!("POST http://127.0.0.1:{p}/leads")]),
        secrets: vec![Secret::new(
            "crm_token",
            value,
            grants(&[&format!("POST http://127.0.0.1:{p}/leads")]),
        )],
        ..ActionSettings::default()
    };
    let host = host_with("wasi_http_probe", settings).await;
    let auth = "Bearer {{secret:crm_token}}";

    let sent = call(
        &host,
        json!({"url": mock.url("/leads"), "method": "POST", "authorization": auth, "body": "lead"}),
    )
    .await;
    assert_eq!(sent.attributes["status"], 200, "{:?}", sent.attributes);
    assert_eq!(sent.attributes["body"], "ok");

    // The second host grants loopback only by name, so the address check decides.
    let by_name = host_with(
        "wasi_http_probe",
        allow(&[&format!("http://localhost:{p}")]),
    )
    .await;
    let refusals = [
        (&host, json!({"url": mock.url("/admin"), "method": "POST"})),
        (&host, json!({"url": mock.url("/leads"), "method": "GET"})),
        (
            &host,
            json!({"url": "http://169.254.169.254/latest/meta-data/", "method": "GET"}),
        ),
        (
            &host,
            json!({"url": mock.url("/admin"), "method": "POST", "authorization": auth}),
        ),
        (
            &by_name,
            json!({"url": format!("http://localhost:{p}/"), "method": "GET"}),
        ),
        (
            &by_name,
            json!({"url": format!("http://localhost:{p}/"), "method": "GET", "authorization": auth}),
        ),
    ];
    for (host, input) in refusals {
        let done = call(host, input.clone()).await;
        assert_eq!(
            done.attributes.get("error"),
            Some(&json!("ErrorCode::HttpRequestDenied")),
            "{input}: {:?}",
            done.attributes
        );
        assert!(
            done.logs
                .iter()
                .any(|l| l.message.starts_with("outbound request denied")),
            "{input}"
        );
        assert!(!serde_json::to_string(&done).unwrap().contains(value));
    }
    let received = mock.received();
    assert_eq!(
        received.len(),
        1,
        "only the granted request was sent: {received:?}"
    );
    assert_eq!(received[0].method, "POST");
    assert_eq!(received[0].path, "/leads");
    assert_eq!(
        received[0].header("authorization"),
        Some(format!("Bearer {value}").as_str())
    );
    assert_eq!(received[0].body, b"lead");
}

#[tokio::test]
async fn the_wasi_http_path_shares_the_request_budget_and_size_cap() {
    let mock = Mock::start().await;
    let settings = limited(
        &mock,
        HttpLimits {
            max_requests: 1,
            max_response_bytes: 1024,
            ..HttpLimits::default()
        },
    );
    let host = host_with("wasi_http_probe", settings).await;
    let big = call(&host, json!({"url": mock.url("/big")})).await;
    assert_eq!(
        big.attributes["error"], "ErrorCode::HttpResponseBodySize(None)",
        "{:?}",
        big.attributes
    );
    let host = host_with(
        "wasi_http_probe",
        limited(
            &mock,
            HttpLimits {
                max_requests: 0,
                ..HttpLimits::default()
            },
        ),
    )
    .await;
    let none_left = call(&host, json!({"url": mock.url("/")})).await;
    assert_eq!(
        none_left.attributes["error"], "ErrorCode::ConnectionLimitReached",
        "{:?}",
        none_left.attributes
    );
}

#[tokio::test]
async fn order_lookup_fetches_the_users_last_order() {
    let mock = Mock::start().await;
    let settings = ActionSettings {
        grants: grants(&[&format!("GET http://127.0.0.1:{}/api/users/", mock.port)]),
        config: [("api_base".to_string(), mock.url("/api"))].into(),
        ..ActionSettings::default()
    };
    let host = host_with("order_lookup", settings).await;
    let context = CallContext {
        user_id: Some("u-42".into()),
        ..CallContext::default()
    };
    let done = host.invoke("fixture", context, &Map::new()).await.unwrap();
    assert!(done.success);
    assert_eq!(done.attributes["last_order_status"], "shipped");
    assert_eq!(done.attributes["last_order"]["items"][0]["sku"], "teapot");
    assert_eq!(mock.received()[0].path, "/api/users/u-42/orders/last");

    let nobody = call(&host, json!({"user_id": "nobody"})).await;
    assert!(!nobody.success);
    assert_eq!(nobody.messages, ["No previous order found."]);
}

#[tokio::test]
async fn lead_capture_posts_the_lead_with_a_token_it_never_sees() {
    let mock = Mock::start().await;
    let p = mock.port;
    let token = "crm-t0k3n-for-tests";
    let settings = ActionSettings {
        grants: grants(&[&format!("POST http://127.0.0.1:{p}/crm/leads")]),
        secrets: vec![Secret::new(
            "crm_token",
            token,
            grants(&[&format!("POST http://127.0.0.1:{p}/crm/leads")]),
        )],
        config: [("crm_url".to_string(), mock.url("/crm/leads"))].into(),
        ..ActionSettings::default()
    };
    let host = host_with("lead_capture", settings).await;
    let done = call(
        &host,
        json!({"email": "ada@example.com", "first_name": "Ada", "interest": "teapots"}),
    )
    .await;
    assert!(done.success);
    assert_eq!(done.attributes["lead_id"], "lead-77");
    let received = mock.received();
    assert_eq!(
        received[0].header("authorization"),
        Some(format!("Bearer {token}").as_str())
    );
    let lead: Value = serde_json::from_slice(&received[0].body).unwrap();
    assert_eq!(lead["email"], "ada@example.com");
    assert_eq!(lead["interest"], "teapots");
    assert!(!serde_json::to_string(&done).unwrap().contains(token));
}

/// An upstream that echoes the request's headers, in its response headers, in
/// a chunked body that splits them, or as JSON: the action sees the secret's
/// value redacted everywhere, through the `http` import and through wasi:http.
#[tokio::test]
async fn a_secret_an_upstream_echoes_back_is_redacted_before_the_action_sees_it() {
    let mock = Mock::start().await;
    let p = mock.port;
    // Characters JSON escapes, so that the JSON echo differs from the raw one.
    let value = r#"tok/en"with\specials-123"#;
    let upstream = format!("http://127.0.0.1:{p}");
    let settings = ActionSettings {
        grants: grants(&[&upstream]),
        secrets: vec![Secret::new("token", value, grants(&[&upstream]))],
        ..ActionSettings::default()
    };
    let host = host_with("fixture", settings.clone()).await;
    for path in ["/echo", "/echo-json"] {
        let done = call(
            &host,
            json!({"behave": "http", "url": mock.url(path),
                   "headers": {"authorization": "Bearer {{secret:token}}"}}),
        )
        .await;
        assert_eq!(done.attributes["status"], 200, "{:?}", done.attributes);
        let everything = serde_json::to_string(&done).unwrap();
        assert!(
            !everything.contains("specials"),
            "{path} leaked: {everything}"
        );
        let body = done.attributes["body"].as_str().unwrap();
        assert!(body.contains("Bearer [redacted]"), "{path}: {body}");
        if path == "/echo" {
            let headers = done.attributes["headers"].as_array().unwrap();
            assert!(
                headers.contains(&json!(["x-echo-authorization", "Bearer [redacted]"])),
                "{headers:?}"
            );
        }
    }
    assert_eq!(
        mock.received()[0].header("authorization"),
        Some(format!("Bearer {value}").as_str()),
        "the upstream got the value itself"
    );

    // The same through wasi:http.
    let probe = Host::new(HostConfig {
        pool_size: 4,
        ..HostConfig::default()
    })
    .unwrap();
    probe
        .load_with("probe", common::plugin_bytes("wasi_http_probe"), settings)
        .await
        .unwrap();
    let input = json!({"url": mock.url("/echo"), "authorization": "Bearer {{secret:token}}"});
    let done = probe
        .invoke("probe", CallContext::default(), input.as_object().unwrap())
        .await
        .unwrap();
    assert_eq!(done.attributes["status"], 200, "{:?}", done.attributes);
    let body = done.attributes["body"].as_str().unwrap();
    assert!(
        body.contains("Bearer [redacted]") && !body.contains("specials"),
        "{body}"
    );
}

/// An action cannot get an echoed secret past redaction by asking for a
/// compressed or a partial response, and the gate bounds what a request's
/// URL and headers, secrets filled in, make the host hold.
#[tokio::test]
async fn no_compressed_or_partial_response_carries_a_secret_and_requests_are_bounded() {
    let mock = Mock::start().await;
    let upstream = format!("http://127.0.0.1:{}", mock.port);
    let value = "s".repeat(200);
    let settings = ActionSettings {
        grants: grants(&[&upstream]),
        secrets: vec![Secret::new("token", &value, grants(&[&upstream]))],
        ..ActionSettings::default()
    };
    let host = host_with("fixture", settings.clone()).await;
    let send = |path: &str, headers: Value| json!({"behave": "http", "url": mock.url(path), "headers": headers});
    let refused = |done: &Invocation, kind: &str, words: &str| {
        assert_eq!(done.attributes["error"], kind, "{:?}", done.attributes);
        let detail = done.attributes["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(words), "{detail}");
    };

    // The action's own accept-encoding is dropped: the upstream is asked for
    // an uncompressed answer, which redaction can read.
    let asked = send(
        "/echo",
        json!({"authorization": "Bearer {{secret:token}}", "accept-encoding": "gzip"}),
    );
    let done = call(&host, asked).await;
    assert_eq!(done.attributes["status"], 200, "{:?}", done.attributes);
    assert!(!serde_json::to_string(&done).unwrap().contains(&value));
    assert_eq!(
        mock.received()[0].header("accept-encoding"),
        Some("identity")
    );
    // An upstream that compresses anyway is not read into the action.
    let done = call(&host, send("/compressed", json!({}))).await;
    refused(&done, "transport", "the response is compressed (`gzip`)");
    // Nor through the words of the refusal, where it names the coding.
    let asked = send(
        "/compressed-echo",
        json!({"authorization": "Bearer {{secret:token}}"}),
    );
    let done = call(&host, asked).await;
    refused(&done, "transport", "(`x-Bearer [redacted]`)");
    let everything = serde_json::to_string(&done).unwrap();
    assert!(!everything.contains(&"s".repeat(40)), "{everything}");
    // A range of an echo could hold part of the secret.
    let done = call(&host, send("/echo", json!({"range": "bytes=0-20"}))).await;
    refused(&done, "invalid-request", "the header `range` is refused");
    // A header some servers read as the real method or path.
    let done = call(
        &host,
        send("/echo", json!({"X-HTTP-Method-Override": "DELETE"})),
    )
    .await;
    refused(
        &done,
        "invalid-request",
        "the header `x-http-method-override` is refused",
    );
    let done = call(&host, send("/echo", json!({"x-original-url": "/admin"}))).await;
    refused(
        &done,
        "invalid-request",
        "the header `x-original-url` is refused",
    );

    // Without secrets there is nothing to redact: a compressed answer passes.
    let plain = host_with(
        "fixture",
        ActionSettings {
            grants: grants(&[&upstream]),
            ..ActionSettings::default()
        },
    )
    .await;
    let done = call(&plain, send("/compressed", json!({}))).await;
    assert_eq!(done.attributes["status"], 200, "{:?}", done.attributes);

    // The bounds: a URL, the headers as written, and as filled in.
    let long_url = mock.url(&format!("/{}", "u".repeat(8 << 10)));
    let done = call(&host, json!({"behave": "http", "url": long_url})).await;
    refused(&done, "invalid-request", "over the cap of 8192 bytes");
    let done = call(&host, send("/echo", json!({"x-big": "h".repeat(17 << 10)}))).await;
    refused(
        &done,
        "invalid-request",
        "the headers are over the cap of 16384 bytes: 17445, counting",
    );
    // Many empty headers are not free either.
    let empty: serde_json::Map<String, Value> =
        (0..600).map(|i| (format!("h{i}"), json!(""))).collect();
    let done = call(&host, send("/echo", Value::Object(empty))).await;
    refused(&done, "invalid-request", "counting 32 for each header");
    let many = "{{secret:token}}".repeat(1000);
    let done = call(&host, send("/echo", json!({"authorization": many}))).await;
    refused(
        &done,
        "invalid-request",
        "over 64 KiB once their secrets are filled in",
    );
    let sent: Vec<_> = mock.received().into_iter().map(|r| r.path).collect();
    assert_eq!(
        sent,
        ["/echo", "/compressed", "/compressed-echo", "/compressed"],
        "a refused one was sent"
    );
}

/// A recorded call that loops on refused requests with a long URL keeps the
/// attempts its budget allows and the first refusal past it, each URL
/// clipped, and says how many more it made; a replay of it answers as the
/// recorded call was answered.
#[tokio::test]
async fn a_recorded_flood_of_requests_keeps_a_bounded_tape() {
    let (_host, prepared) = common::prepared_fixture(4).await;
    let flood = json!({"behave": "http-flood", "count": 10_000, "size": 64 << 10});
    let record = CallOptions {
        tape: Tape::Record,
        ..CallOptions::default()
    };
    let input = flood.as_object().unwrap();
    let (done, trace) = prepared
        .call("i-1".into(), CallContext::default(), input, record)
        .await;
    let done = done.unwrap();
    assert_eq!(done.attributes["budget_exhausted"], 10_000 - 8);
    assert_eq!(trace.exchanges.len(), 8 + 1);
    let kinds: Vec<_> = (trace.exchanges.iter())
        .map(|e| match &e.outcome {
            ExchangeOutcome::Error { kind, .. } => kind.as_str(),
            ExchangeOutcome::Response { .. } => "response",
        })
        .collect();
    assert_eq!(kinds[7..], ["invalid-request", "budget-exhausted"]);
    assert!(
        trace.exchanges.iter().all(|e| e.url.len() < 1024),
        "URLs kept whole"
    );
    let said = "the record keeps the first 9 outbound requests (the budget and the first refusal \
                past it); 9991 more were made";
    assert!(
        done.logs.iter().any(|l| l.message == said),
        "{:?}",
        done.logs
    );
    let replay = CallOptions {
        tape: Tape::Replay(trace.exchanges),
        ..CallOptions::default()
    };
    let (again, _) = prepared
        .call("i-2".into(), CallContext::default(), input, replay)
        .await;
    assert_eq!(again.unwrap().attributes, done.attributes);
}

#[tokio::test]
async fn a_secret_fills_only_the_headers_it_is_bound_to() {
    let mock = Mock::start().await;
    let echo = mock.url("/echo");
    let mut secret = Secret::new("token", "a-long-enough-secret", grants(&[&echo]));
    secret.headers = vec!["X-Api-Key".into()];
    let host = host_with(
        "fixture",
        ActionSettings {
            grants: grants(&[&echo]),
            secrets: vec![secret],
            ..ActionSettings::default()
        },
    )
    .await;
    let denied = call(
        &host,
        json!({"behave": "http", "url": echo, "headers": {"x-echo-me": "{{secret:token}}"}}),
    )
    .await;
    assert_eq!(denied.attributes["error"], "denied");
    assert_eq!(
        denied.attributes["detail"],
        "the secret `token` may fill only the header(s) x-api-key, not `x-echo-me`"
    );
    let allowed = call(
        &host,
        json!({"behave": "http", "url": echo, "headers": {"x-api-key": "{{secret:token}}"}}),
    )
    .await;
    assert_eq!(allowed.attributes["status"], 200);
    assert_eq!(mock.received().len(), 1);
    assert_eq!(
        mock.received()[0].header("x-api-key"),
        Some("a-long-enough-secret")
    );
}

#[tokio::test]
async fn trace_and_connect_are_denied_unless_a_grant_names_them() {
    let mock = Mock::start().await;
    let p = mock.port;
    let host = host_with("fixture", allow(&[&format!("http://127.0.0.1:{p}")])).await;
    for method in ["TRACE", "CONNECT"] {
        let done = call(
            &host,
            json!({"behave": "http", "method": method, "url": mock.url("/echo")}),
        )
        .await;
        assert_eq!(done.attributes["error"], "denied", "{method}");
        assert!(
            done.attributes["detail"]
                .as_str()
                .unwrap()
                .ends_with(&format!(
                    "({method} is allowed only by a grant that names it)"
                )),
            "{:?}",
            done.attributes
        );
    }
    assert!(mock.received().is_empty());
    let named = host_with("fixture", allow(&[&format!("TRACE http://127.0.0.1:{p}")])).await;
    let done = call(
        &named,
        json!({"behave": "http", "method": "TRACE", "url": mock.url("/echo")}),
    )
    .await;
    assert_eq!(done.attributes["status"], 200, "{:?}", done.attributes);
    assert_eq!(mock.received()[0].method, "TRACE");
}

#[tokio::test]
async fn secrets_too_short_to_redact_or_bound_to_host_set_headers_are_refused_at_load() {
    let host = Host::new(HostConfig {
        pool_size: 4,
        ..HostConfig::default()
    })
    .unwrap();
    let grant = grants(&["https://api.example.com"]);
    let mut host_header = Secret::new("t", "long-enough-value", grant.clone());
    host_header.headers = vec!["Host".into()];
    for (secret, why) in [
        (
            Secret::new("t", "short", grant.clone()),
            "the secret `t` is shorter than 8 bytes",
        ),
        (
            host_header,
            "the secret `t` names `Host`, which is not a header an action may set",
        ),
    ] {
        let settings = ActionSettings {
            secrets: vec![secret],
            ..ActionSettings::default()
        };
        let err = host
            .load_with("fixture", common::plugin_bytes("fixture"), settings)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(why), "{err}");
    }
}

/// Answers each name from a fixed table, as a DNS server the attacker runs
/// might: the host must check every answer.
struct Table(std::collections::HashMap<String, Vec<std::net::IpAddr>>);

impl action_host::Resolve for Table {
    fn resolve<'a>(
        &'a self,
        name: &'a str,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<Vec<std::net::IpAddr>>> + Send + 'a>,
    > {
        let found = self.0.get(name).cloned();
        Box::pin(async move {
            found.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such name"))
        })
    }
}

/// A host whose fixture resolves names from `table` and has `grants`.
async fn host_resolving(table: &[(&str, &[&str])], grant_texts: &[&str]) -> Host {
    let table = table
        .iter()
        .map(|(name, ips)| {
            (
                name.to_string(),
                ips.iter().map(|ip| ip.parse().unwrap()).collect(),
            )
        })
        .collect();
    let host = Host::new(HostConfig {
        pool_size: 8,
        resolver: action_host::Resolver::new(Table(table)),
        ..HostConfig::default()
    })
    .unwrap();
    host.load_with(
        "fixture",
        common::plugin_bytes("fixture"),
        allow(grant_texts),
    )
    .await
    .unwrap();
    host
}

/// Names that resolve to an internal address in each of its disguises are
/// refused before any connection, whatever name grant allows them.
#[tokio::test]
async fn a_name_resolving_to_an_internal_address_in_any_form_is_refused() {
    let forms: &[(&str, &str)] = &[
        ("nat64.attacker.test", "64:ff9b::7f00:1"),
        ("nat64-local.attacker.test", "64:ff9b:1:7f00:1::"),
        ("6to4.attacker.test", "2002:7f00:1::1"),
        (
            "teredo.attacker.test",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        ),
        ("compatible.attacker.test", "::7f00:1"),
        ("siit.attacker.test", "::ffff:0:7f00:1"),
        ("mapped.attacker.test", "::ffff:127.0.0.1"),
        ("metadata.attacker.test", "169.254.169.254"),
        ("metadata6.attacker.test", "fd00:ec2::254"),
        ("reserved.attacker.test", "240.0.0.1"),
        ("documentation.attacker.test", "192.0.2.10"),
        ("documentation6.attacker.test", "2001:db8::1"),
        ("documentation6-new.attacker.test", "3fff::1"),
        ("discard.attacker.test", "100::1"),
        ("private.attacker.test", "10.1.2.3"),
        ("cgnat.attacker.test", "100.64.0.1"),
    ];
    let table: Vec<(&str, &[&str])> = forms
        .iter()
        .map(|(name, ip)| (*name, std::slice::from_ref(ip)))
        .collect();
    let host = host_resolving(&table, &["http://*.attacker.test"]).await;
    for (name, ip) in forms {
        let done = call(
            &host,
            json!({"behave": "http", "url": format!("http://{name}/")}),
        )
        .await;
        assert_eq!(
            done.attributes["error"], "denied",
            "{name}: {:?}",
            done.attributes
        );
        let detail = done.attributes["detail"].as_str().unwrap();
        let shown: std::net::IpAddr = ip.parse().unwrap();
        assert!(
            detail.starts_with(&format!("`{name}` resolves to {shown} (")),
            "{name}: {detail}"
        );
    }
}

/// An IP or CIDR grant lets a request through a name reach that address only
/// for the requests it allows itself: its port, methods and path.
#[tokio::test]
async fn an_ip_grant_exempts_an_address_only_for_the_requests_it_allows() {
    let mock = Mock::start().await;
    let p = mock.port;
    let host = host_resolving(
        &[
            ("internal.test", &["127.0.0.1"]),
            ("mixed.test", &["10.9.9.9", "127.0.0.1"]),
        ],
        &[
            // Names may be called on any port and path...
            "http://internal.test",
            &format!("http://internal.test:{p}"),
            &format!("http://mixed.test:{p}"),
            // ...but loopback only for GET under /public on the mock's port.
            &format!("GET http://127.0.0.1:{p}/public"),
        ],
    )
    .await;
    let get = |url: String, method: &str| json!({"behave": "http", "method": method, "url": url});
    let allowed = call(
        &host,
        get(format!("http://internal.test:{p}/public/1"), "GET"),
    )
    .await;
    assert_eq!(
        allowed.attributes["status"], 200,
        "{:?}",
        allowed.attributes
    );
    // The answers a grant does not name are dropped; the one it names is used.
    let mixed = call(&host, get(format!("http://mixed.test:{p}/public/2"), "GET")).await;
    assert_eq!(mixed.attributes["status"], 200, "{:?}", mixed.attributes);
    for (url, method) in [
        // Another port: the IP grant is for the mock's only.
        ("http://internal.test/public/1".to_string(), "GET"),
        // Another method or path on the same connection's port.
        (format!("http://internal.test:{p}/public/1"), "POST"),
        (format!("http://internal.test:{p}/private"), "GET"),
        (format!("http://mixed.test:{p}/private"), "GET"),
    ] {
        let done = call(&host, get(url.clone(), method)).await;
        assert_eq!(
            done.attributes["error"], "denied",
            "{method} {url}: {:?}",
            done.attributes
        );
        let detail = done.attributes["detail"].as_str().unwrap();
        assert!(
            detail.contains("resolves to") && detail.contains("127.0.0.1"),
            "{detail}"
        );
    }
    let received = mock.received();
    let paths: Vec<&str> = received.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/public/1", "/public/2"]);
    assert_eq!(
        received[0].header("host"),
        Some(format!("internal.test:{p}").as_str())
    );
}

/// Paths a server could read as another path (`..;`, encoded separators,
/// double encoding, `//`) never pass a path-prefix grant, and the denial says why.
#[tokio::test]
async fn paths_a_server_could_read_differently_never_pass_a_path_prefix() {
    let mock = Mock::start().await;
    let p = mock.port;
    let host = host_with("fixture", allow(&[&format!("http://127.0.0.1:{p}/public")])).await;
    for path in [
        "/public/..;/admin",
        "/public/..%2Fadmin",
        "/public/x%5C..%5Cadmin",
        "/public/%252e%252e/admin",
        "/public//admin",
    ] {
        let done = call(&host, json!({"behave": "http", "url": mock.url(path)})).await;
        assert_eq!(
            done.attributes["error"], "denied",
            "{path}: {:?}",
            done.attributes
        );
        let detail = done.attributes["detail"].as_str().unwrap();
        assert!(
            detail.contains("which a server may read as another path"),
            "{path}: {detail}"
        );
    }
    assert!(mock.received().is_empty(), "a path reached the server");
    let plain = call(
        &host,
        json!({"behave": "http", "url": mock.url("/public/a%20b")}),
    )
    .await;
    assert_eq!(plain.attributes["status"], 200, "{:?}", plain.attributes);
}

/// An upstream that keeps connections open (HTTP/1 keep-alive), answers
/// each request after `delay`, and counts the connections open to it.
async fn keep_alive_upstream(delay: Duration) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&open);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let open = Arc::clone(&counted);
            open.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut received = Vec::new();
                let mut chunk = [0; 4096];
                loop {
                    match stream.read(&mut chunk).await {
                        Ok(n) if n > 0 => received.extend_from_slice(&chunk[..n]),
                        _ => break,
                    }
                    while let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                        received.drain(..end + 4);
                        tokio::time::sleep(delay).await;
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(answer).await.is_err() {
                            break;
                        }
                    }
                }
                open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (port, open)
}

/// Idle connections to upstreams are bounded: many calls at once open a
/// connection each, and once they are done the host keeps only a few of
/// them open for the next calls, not one per call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upstream_connections_are_bounded() {
    use std::sync::atomic::Ordering;
    let (port, open) = keep_alive_upstream(Duration::from_millis(300)).await;
    let upstream = format!("http://127.0.0.1:{port}");
    let host = Host::new(HostConfig {
        pool_size: 64,
        ..HostConfig::default()
    })
    .unwrap();
    host.load_with(
        "fixture",
        common::plugin_bytes("fixture"),
        allow(&[&upstream]),
    )
    .await
    .unwrap();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..48 {
        let host = host.clone();
        let input = json!({"behave": "http", "url": format!("{upstream}/thing")});
        calls.spawn(async move {
            let input = input.as_object().unwrap().clone();
            host.invoke("fixture", CallContext::default(), &input).await
        });
    }
    let mut most = 0;
    while let Some(done) = calls.join_next().await {
        let done = done.unwrap().unwrap();
        assert_eq!(done.attributes["status"], 200, "{:?}", done.attributes);
        most = most.max(open.load(Ordering::SeqCst));
    }
    assert!(
        most > 16,
        "the calls did not overlap: {most} connections at most"
    );
    common::eventually("idle connections closed down to the bound", || async {
        (open.load(Ordering::SeqCst) <= 16).then_some(())
    })
    .await;
}
