//! The webhook adapters end to end: requests shaped as Rasa and Dialogflow CX
//! send them (fields this host ignores included, from `payloads/`), sent to
//! the real service, and the answers checked field by field against what
//! each platform reads; Rasa's against the action server's schema.

use crate::common::api::{client, set_grants, upload};
use crate::common::server::{DESIGNER, INVOKE, METRICS, OPERATOR, Server};
use crate::common::{self, root};

use reqwest::{RequestBuilder, StatusCode};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::process::Command;

/// Platform names mapped to the fixture, the time zone in a slot named `tz`,
/// and CX waiting 1.5 s (so calls get 1.25 s).
const HOST_FILE: &str = r#"
[webhooks.rasa]
actions = { action_check_order = "fixture" }
timezone_attribute = "tz"

[webhooks.dialogflow-cx]
actions = { check-order = "fixture" }
timeout_ms = 1500
"#;

/// A service with the fixture deployed as `fixture` and as `slow` (whose
/// deadline is 300 ms), under [`HOST_FILE`], with `env` besides the tokens.
async fn start(env: &[(&str, &str)]) -> (tempfile::TempDir, Server) {
    start_under(HOST_FILE, env).await
}

/// Like [`start`], under the host file `host_file`.
async fn start_under(host_file: &str, env: &[(&str, &str)]) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("host.toml");
    std::fs::write(&path, host_file).unwrap();
    let data = dir.path().join("data");
    let mut vars = vec![
        ("ACTION_HOST_OPERATOR_TOKEN", OPERATOR),
        ("ACTION_HOST_DESIGNER_TOKEN", DESIGNER),
        ("ACTION_HOST_INVOKE_TOKEN", INVOKE),
        ("ACTION_HOST_METRICS_TOKEN", METRICS),
    ];
    vars.extend_from_slice(env);
    let server = Server::start_with_env(&data, &["--config", path.to_str().unwrap()], &vars);
    for name in ["fixture", "slow"] {
        let (status, body) = upload(&server, name, common::plugin_bytes("fixture")).await;
        assert!(status.is_success(), "{body}");
    }
    let (status, body) = set_grants(&server, "slow", json!({"limits": {"deadline_ms": 300}})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (dir, server)
}

fn payload(name: &str) -> Value {
    let path = root().join("tests/all/payloads").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The Rasa request of `payloads/` with its slots changed by `slots`.
fn rasa_request(slots: Value) -> Value {
    let mut request = payload("rasa-request.json");
    let all = request["tracker"]["slots"].as_object_mut().unwrap();
    for (name, value) in slots.as_object().unwrap() {
        all.insert(name.clone(), value.clone());
    }
    request
}

/// The CX request of `payloads/` with its session parameters changed by `parameters`.
fn cx_request(parameters: Value) -> Value {
    let mut request = payload("dialogflow-cx-request.json");
    let all = request["sessionInfo"]["parameters"]
        .as_object_mut()
        .unwrap();
    for (name, value) in parameters.as_object().unwrap() {
        all.insert(name.clone(), value.clone());
    }
    request
}

async fn send(request: RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, body)
}

async fn rasa(server: &Server, body: &Value) -> (StatusCode, Value) {
    send(
        client()
            .post(server.url("/webhooks/rasa/webhook"))
            .bearer_auth(INVOKE)
            .json(body),
    )
    .await
}

async fn cx(server: &Server, path: &str, body: &Value) -> (StatusCode, Value) {
    send(
        client()
            .post(server.url(path))
            .bearer_auth(INVOKE)
            .json(body),
    )
    .await
}

/// A validator of the Rasa action server's answer `def` (`success` or `error`).
fn rasa_schema(def: &str) -> jsonschema::Validator {
    let path = root().join("tests/all/schemas/rasa-action-server.json");
    let mut schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    schema["$ref"] = json!(format!("#/$defs/{def}"));
    jsonschema::validator_for(&schema).unwrap()
}

fn assert_valid(validator: &jsonschema::Validator, body: &Value) {
    let errors: Vec<String> = validator.iter_errors(body).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "not what Rasa reads: {errors:?} in {body}"
    );
}

/// The slots a Rasa answer sets, by name, each set once.
fn slots_set(answer: &Value) -> BTreeMap<String, Value> {
    let mut slots = BTreeMap::new();
    for event in answer["events"].as_array().unwrap() {
        assert_eq!(event["event"], "slot", "{event}");
        let name = event["name"].as_str().unwrap().to_owned();
        assert!(
            slots.insert(name, event["value"].clone()).is_none(),
            "a slot set twice in {answer}"
        );
    }
    slots
}

#[tokio::test]
async fn rasa_calls_are_answered_as_an_action_server_answers() {
    let (_dir, server) = start(&[]).await;
    let success = rasa_schema("success");

    // Slots (the null ones left out), the latest message and its entities
    // come in as input; the fixture echoes them back as slots.
    let (status, answer) = rasa(&server, &rasa_request(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_valid(&success, &answer);
    let slots = slots_set(&answer);
    assert_eq!(slots["behave"], "echo");
    assert_eq!(slots["city"], "Lisbon");
    assert_eq!(slots["tz"], "Asia/Tokyo");
    assert_eq!(slots["message_text"], "where is my order A-1042");
    assert_eq!(slots["message_intent"], "check_order");
    // The slot is null, so the entity of the message stands in for it.
    assert_eq!(slots["order_number"], "A-1042");
    assert_eq!(slots["message_entities"][0]["entity"], "order_number");
    assert_eq!(slots["action_success"], true);
    for ignored in ["requested_slot", "session_started_metadata"] {
        assert!(!slots.contains_key(ignored), "{answer}");
    }
    assert_eq!(answer["responses"], json!([]));

    // The context: the sender, the intent, the language of the metadata,
    // the time zone of the slot the settings name. A context field with no
    // value comes back as a null slot, which resets it.
    let (status, answer) = rasa(&server, &rasa_request(json!({"behave": "context"}))).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_valid(&success, &answer);
    let slots = slots_set(&answer);
    assert_eq!(slots["conversation_id"], "c2f5e6a0-conversation-7");
    assert_eq!(slots["user_id"], "c2f5e6a0-conversation-7");
    assert_eq!(slots["intent"], "check_order");
    assert_eq!(slots["locale"], "pt-PT");
    assert_eq!(slots["timezone"], "Asia/Tokyo");
    assert_eq!(slots["action"], "fixture");
    assert_eq!(slots["scenario"], Value::Null);
    // Rasa waits minutes: the action keeps its own deadline.
    assert_eq!(slots["deadline_ms"], 5000);

    // A business failure: the success slot is false, the message a response.
    let (status, answer) = rasa(&server, &rasa_request(json!({"behave": "fail"}))).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_valid(&success, &answer);
    assert_eq!(slots_set(&answer)["action_success"], false);
    assert_eq!(answer["responses"], json!([{"text": "no previous order"}]));

    // Rasa Pro sends a domain digest without the domain; the host needs no
    // domain, so it answers at once instead of asking for it (449).
    let mut digest_only = rasa_request(json!({}));
    let request = digest_only.as_object_mut().unwrap();
    request.remove("domain");
    request.insert("domain_digest".into(), json!("8d3f0a1c9e7b"));
    let (status, answer) = rasa(&server, &digest_only).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_valid(&success, &answer);

    // `/webhooks/rasa` is the same endpoint.
    let (status, answer) = send(
        client()
            .post(server.url("/webhooks/rasa"))
            .bearer_auth(INVOKE)
            .json(&rasa_request(json!({}))),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(slots_set(&answer)["behave"], "echo");
}

#[tokio::test]
async fn rasa_errors_are_in_the_shape_rasa_reads() {
    let (_dir, server) = start(&[]).await;
    let error = rasa_schema("error");
    let named = |mut request: Value, action: &str| {
        request["next_action"] = json!(action);
        request
    };
    let check = |status: StatusCode, answer: &Value, expected: StatusCode, words: &str| {
        assert_eq!(status, expected, "{answer}");
        assert_valid(&error, answer);
        let message = answer["error"].as_str().unwrap();
        assert!(message.contains(words), "`{words}` not in {answer}");
    };

    // No such action: 404 with the name Rasa asked for.
    let (status, answer) = rasa(&server, &named(rasa_request(json!({})), "action_nope")).await;
    check(status, &answer, StatusCode::NOT_FOUND, "action_nope");
    assert_eq!(answer["action_name"], "action_nope");
    // A name of any length the body allows is named by its length, not echoed
    // into the message.
    let long = "a".repeat(100_000);
    let (status, answer) = rasa(&server, &named(rasa_request(json!({})), &long)).await;
    check(
        status,
        &answer,
        StatusCode::NOT_FOUND,
        "(100000 characters)",
    );
    let message = answer["error"].as_str().unwrap();
    assert!(
        message.len() < 200,
        "{}",
        &message[..message.len().min(300)]
    );

    // The action refuses its input: 400, which Rasa reads as a rejection.
    let (status, answer) = rasa(&server, &rasa_request(json!({"behave": "reject"}))).await;
    check(
        status,
        &answer,
        StatusCode::BAD_REQUEST,
        "label must not be empty",
    );
    assert_eq!(answer["action_name"], "action_check_order");
    // A required input that no slot holds: 400 too.
    let (status, answer) = rasa(&server, &rasa_request(json!({"behave": null}))).await;
    check(
        status,
        &answer,
        StatusCode::BAD_REQUEST,
        "`behave` is missing",
    );

    // The action fails while running (its deadline): 500, a failed action.
    let slow = named(rasa_request(json!({"behave": "loop"})), "slow");
    let (status, answer) = rasa(&server, &slow).await;
    check(
        status,
        &answer,
        StatusCode::INTERNAL_SERVER_ERROR,
        "deadline of 300 ms",
    );
    assert_eq!(answer["action_name"], "slow");

    // Not Rasa's shape: 400 naming the field.
    let mut no_tracker = rasa_request(json!({}));
    no_tracker.as_object_mut().unwrap().remove("tracker");
    let (status, answer) = rasa(&server, &no_tracker).await;
    check(
        status,
        &answer,
        StatusCode::BAD_REQUEST,
        "`tracker` is missing",
    );
    let mut no_action = rasa_request(json!({}));
    no_action.as_object_mut().unwrap().remove("next_action");
    let (status, answer) = rasa(&server, &no_action).await;
    check(
        status,
        &answer,
        StatusCode::BAD_REQUEST,
        "`next_action` is missing",
    );
    let mut bad_slots = rasa_request(json!({}));
    bad_slots["tracker"]["slots"] = json!(["behave"]);
    let (status, answer) = rasa(&server, &bad_slots).await;
    check(
        status,
        &answer,
        StatusCode::BAD_REQUEST,
        "`tracker.slots` must be an object",
    );
    let (status, answer) = send(
        client()
            .post(server.url("/webhooks/rasa/webhook"))
            .bearer_auth(INVOKE)
            .body("{\"next_action\": "),
    )
    .await;
    check(status, &answer, StatusCode::BAD_REQUEST, "not valid JSON");

    // Too large: refused from its declared length, before it is read.
    let (status, answer) = too_large(&server, "/webhooks/rasa/webhook").await;
    check(
        status,
        &answer,
        StatusCode::PAYLOAD_TOO_LARGE,
        "larger than",
    );

    assert!(server.stop(), "the service did not exit cleanly");
}

#[tokio::test]
async fn each_platform_sends_the_invoke_token_its_own_way_and_the_query_is_never_logged() {
    // Debug logs: every request is logged, and the token in its query must not be.
    let (_dir, server) = start(&[("RUST_LOG", "debug")]).await;
    let body = rasa_request(json!({}));
    let url = |path: &str| server.url(path);

    // Rasa's `token` in endpoints.yml goes in the query string.
    let (status, answer) = send(
        client()
            .post(url(&format!("/webhooks/rasa/webhook?token={INVOKE}")))
            .json(&body),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // Rasa's basic_auth, and CX's user name and password: the password is the token.
    let (status, answer) = send(
        client()
            .post(url("/webhooks/rasa/webhook"))
            .basic_auth("rasa", Some(INVOKE))
            .json(&body),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // CX's service agent fills `Authorization` with its own ID token; the
    // invoke token then travels in a custom header.
    let (status, answer) = send(
        client()
            .post(url("/webhooks/dialogflow-cx"))
            .bearer_auth("eyJhbGciOiJSUzI1NiJ9.google-id-token.signature")
            .header("X-Action-Host-Token", INVOKE)
            .json(&cx_request(json!({}))),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, answer) = send(
        client()
            .post(url("/webhooks/dialogflow-cx"))
            .basic_auth("dialogflow", Some(INVOKE))
            .json(&cx_request(json!({}))),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // OpenDialog's custom headers.
    let (status, answer) = send(
        client()
            .post(url("/webhooks/opendialog/fixture"))
            .header("X-Action-Host-Token", INVOKE)
            .json(&json!({"input_data": {"attributes": {"behave": "echo"}}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["successful"], true);

    // Refusals, each in the platform's shape.
    let (status, answer) = send(client().post(url("/webhooks/rasa/webhook")).json(&body)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    assert_eq!(answer["action_name"], "");
    let how = answer["error"].as_str().unwrap();
    assert!(how.contains("query parameter `token`"), "{answer}");
    let (status, answer) = send(
        client()
            .post(url("/webhooks/rasa/webhook?token=not-the-invoke-token"))
            .json(&body),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    assert_eq!(answer["error"], "unknown token");
    let (status, answer) = send(
        client()
            .post(url("/webhooks/rasa/webhook"))
            .bearer_auth(METRICS)
            .json(&body),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    // Only Rasa can send no more than a query: elsewhere it is not a token.
    let (status, answer) = send(
        client()
            .post(url(&format!("/webhooks/dialogflow-cx?token={INVOKE}")))
            .json(&cx_request(json!({}))),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    assert_eq!(answer["payload"]["error"]["code"], "unauthorized");
    let (status, answer) = send(
        client()
            .post(url(&format!("/webhooks/opendialog/fixture?token={INVOKE}")))
            .json(&json!({"input_data": {"attributes": {"behave": "echo"}}})),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");

    let log = server.stderr();
    assert!(log.contains("/webhooks/rasa/webhook"), "{log}");
    assert!(!log.contains(INVOKE), "the token was logged: {log}");
    assert!(
        !log.contains("not-the-invoke-token"),
        "a token was logged: {log}"
    );
}

#[tokio::test]
async fn rasa_sends_the_token_under_the_name_its_token_name_gives() {
    // endpoints.yml: `token: ...` with `token_name: auth`.
    let host_file = format!("{HOST_FILE}\n").replace(
        "[webhooks.rasa]\n",
        "[webhooks.rasa]\ntoken_name = \"auth\"\n",
    );
    let (_dir, server) = start_under(&host_file, &[("RUST_LOG", "debug")]).await;
    let body = rasa_request(json!({}));
    let (status, answer) = send(
        client()
            .post(server.url(&format!("/webhooks/rasa/webhook?auth={INVOKE}")))
            .json(&body),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["events"][0]["event"], "slot", "{answer}");

    // The default name is then just another query parameter.
    let (status, answer) = send(
        client()
            .post(server.url(&format!("/webhooks/rasa/webhook?token={INVOKE}")))
            .json(&body),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    let how = answer["error"].as_str().unwrap();
    assert!(how.contains("query parameter `auth`"), "{answer}");
    assert!(!server.stderr().contains(INVOKE), "the token was logged");
    assert!(server.stop(), "the service did not exit cleanly");
}

#[test]
fn a_token_name_outside_rasa_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let host_file = dir.path().join("host.toml");
    std::fs::write(
        &host_file,
        "[webhooks.dialogflow-cx]\ntoken_name = \"auth\"\n",
    )
    .unwrap();
    let stderr = common::server::refused(
        Command::new(env!("CARGO_BIN_EXE_action-host"))
            .args([
                "serve",
                "--config",
                host_file.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ])
            .arg("--data")
            .arg(dir.path().join("data")),
    );
    assert!(
        stderr.contains("webhooks.dialogflow-cx: token_name is Rasa's"),
        "{stderr}"
    );
}

#[tokio::test]
async fn dialogflow_cx_calls_are_answered_as_a_webhook_response() {
    let (_dir, server) = start(&[]).await;

    // By the fulfillment's tag: session parameters (nulls left out) and the
    // intent's resolved parameters (newer, so they win) come in as input.
    let (status, answer) = cx(&server, "/webhooks/dialogflow-cx", &cx_request(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let parameters = answer["sessionInfo"]["parameters"].as_object().unwrap();
    assert_eq!(parameters["behave"], "echo");
    assert_eq!(parameters["city"], "Lisbon");
    assert_eq!(parameters["order_number"], "A-1042");
    assert_eq!(parameters["timezone"], "America/Sao_Paulo");
    assert_eq!(parameters["message_text"], "where is my order A-1042");
    assert_eq!(parameters["message_intent"], "order.status");
    assert_eq!(parameters["action_success"], true);
    assert!(!parameters.contains_key("previous_result"), "{answer}");
    assert_eq!(answer["fulfillmentResponse"]["messages"], json!([]));
    assert_only_webhook_response_fields(&answer);

    // By the action's name in the URL, whatever the tag. Context: the
    // session id, the language, the intent, the page, the time zone; a
    // null parameter (no user id in CX) is sent as null, which deletes it.
    let (status, answer) = cx(
        &server,
        "/webhooks/dialogflow-cx/fixture",
        &cx_request(json!({"behave": "context"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let parameters = &answer["sessionInfo"]["parameters"];
    assert_eq!(parameters["conversation_id"], "d8e1f0a2-session-42");
    assert_eq!(parameters["locale"], "pt-br");
    assert_eq!(parameters["intent"], "order.status");
    assert_eq!(parameters["scenario"], "Order Status");
    assert_eq!(parameters["timezone"], "America/Sao_Paulo");
    assert_eq!(parameters.get("user_id"), Some(&Value::Null), "{answer}");
    // CX waits 1.5 s here: the call gets 1.25 s of it, not its own 5 s.
    assert_eq!(parameters["deadline_ms"], 1250);

    // A business failure: the parameter is false, the message a text response.
    let (status, answer) = cx(
        &server,
        "/webhooks/dialogflow-cx",
        &cx_request(json!({"behave": "fail"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["sessionInfo"]["parameters"]["action_success"], false);
    assert_eq!(
        answer["fulfillmentResponse"]["messages"],
        json!([{"text": {"text": ["no previous order"]}}])
    );
    assert_only_webhook_response_fields(&answer);
}

/// The fields of a `WebhookResponse` only, as CX reads them.
fn assert_only_webhook_response_fields(answer: &Value) {
    let known = [
        "fulfillmentResponse",
        "pageInfo",
        "sessionInfo",
        "payload",
        "targetPage",
        "targetFlow",
    ];
    for field in answer.as_object().unwrap().keys() {
        assert!(known.contains(&field.as_str()), "`{field}` in {answer}");
    }
    if let Some(messages) = answer.pointer("/fulfillmentResponse/messages") {
        for message in messages.as_array().unwrap() {
            let texts = message["text"]["text"].as_array().unwrap();
            assert!(texts.iter().all(Value::is_string), "{message}");
        }
    }
    if let Some(parameters) = answer.pointer("/sessionInfo/parameters") {
        assert!(parameters.is_object(), "{answer}");
    }
}

#[tokio::test]
async fn dialogflow_cx_errors_have_a_status_the_flow_can_read() {
    let (_dir, server) = start(&[]).await;
    let check =
        |status: StatusCode, answer: &Value, expected: StatusCode, code: &str, words: &str| {
            assert_eq!(status, expected, "{answer}");
            assert_only_webhook_response_fields(answer);
            assert_eq!(answer["payload"]["error"]["code"], code, "{answer}");
            let message = answer["payload"]["error"]["message"].as_str().unwrap();
            assert!(message.contains(words), "`{words}` not in {answer}");
            assert_eq!(answer["sessionInfo"]["parameters"]["action_success"], false);
        };

    let mut unknown = cx_request(json!({}));
    unknown["fulfillmentInfo"]["tag"] = json!("no-such-tag");
    let (status, answer) = cx(&server, "/webhooks/dialogflow-cx", &unknown).await;
    check(
        status,
        &answer,
        StatusCode::NOT_FOUND,
        "unknown-action",
        "no-such-tag",
    );

    let mut untagged = cx_request(json!({}));
    untagged.as_object_mut().unwrap().remove("fulfillmentInfo");
    let (status, answer) = cx(&server, "/webhooks/dialogflow-cx", &untagged).await;
    check(
        status,
        &answer,
        StatusCode::BAD_REQUEST,
        "bad-request",
        "`fulfillmentInfo.tag` is missing",
    );
    let mut sessionless = cx_request(json!({}));
    sessionless.as_object_mut().unwrap().remove("sessionInfo");
    let (status, answer) = cx(&server, "/webhooks/dialogflow-cx/fixture", &sessionless).await;
    check(
        status,
        &answer,
        StatusCode::BAD_REQUEST,
        "bad-request",
        "`sessionInfo` is missing",
    );
    let mut odd = cx_request(json!({}));
    odd["intentInfo"]["parameters"] = json!("order_number");
    let (status, answer) = cx(&server, "/webhooks/dialogflow-cx/fixture", &odd).await;
    check(
        status,
        &answer,
        StatusCode::BAD_REQUEST,
        "bad-request",
        "`intentInfo.parameters` must be an object",
    );

    let (status, answer) = cx(
        &server,
        "/webhooks/dialogflow-cx",
        &cx_request(json!({"behave": "reject"})),
    )
    .await;
    check(
        status,
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-input",
        "label must not be empty",
    );

    // An action that runs past what CX waits is stopped before CX gives up,
    // so the flow hears a 504 (`$request.webhook_status_code`), not a timeout.
    let (status, answer) = cx(
        &server,
        "/webhooks/dialogflow-cx/fixture",
        &cx_request(json!({"behave": "loop"})),
    )
    .await;
    check(
        status,
        &answer,
        StatusCode::GATEWAY_TIMEOUT,
        "timeout",
        "deadline of 1250 ms",
    );

    // An answer larger than CX accepts (64 KiB) is an error the flow sees.
    let big = cx_request(json!({"behave": "echo", "label": "x".repeat(70 << 10)}));
    let (status, answer) = cx(&server, "/webhooks/dialogflow-cx", &big).await;
    check(
        status,
        &answer,
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "Dialogflow CX accepts",
    );

    let (status, answer) = too_large(&server, "/webhooks/dialogflow-cx").await;
    check(
        status,
        &answer,
        StatusCode::PAYLOAD_TOO_LARGE,
        "too-large",
        "larger than",
    );
}

/// The answer to a request whose head declares a 2 MiB body, sent without
/// the body (a client that goes on writing may see the connection close).
async fn too_large(server: &Server, path: &str) -> (StatusCode, Value) {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {INVOKE}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        2 << 20
    );
    let answer = server.raw_exchange(head.as_bytes()).await;
    let status: u16 = answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer}"));
    let (_, body) = answer.split_once("\r\n\r\n").unwrap();
    let body = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {answer}"));
    (StatusCode::from_u16(status).unwrap(), body)
}

fn run_with(platform_flag: &str, request: &Value, extra: &[&str]) -> (bool, Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("request.json");
    std::fs::write(&file, serde_json::to_vec(request).unwrap()).unwrap();
    let fixture = common::plugin("fixture");
    let output = Command::new(env!("CARGO_BIN_EXE_action-host"))
        .arg("run")
        .arg(&fixture)
        .arg(platform_flag)
        .arg(&file)
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let body = serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("not JSON: {stdout}"));
    (
        output.status.success(),
        body,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn run_takes_a_platform_request_and_prints_what_the_platform_receives() {
    let (ok, answer, _) = run_with("--rasa", &rasa_request(json!({"behave": "fail"})), &[]);
    assert!(ok);
    assert_valid(&rasa_schema("success"), &answer);
    assert_eq!(slots_set(&answer)["action_success"], false);
    assert_eq!(answer["responses"], json!([{"text": "no previous order"}]));

    let (ok, answer, stderr) = run_with(
        "--dialogflow-cx",
        &cx_request(json!({"behave": "context"})),
        &[],
    );
    assert!(ok, "{stderr}");
    let parameters: &Map<String, Value> = answer["sessionInfo"]["parameters"].as_object().unwrap();
    assert_eq!(parameters["conversation_id"], "d8e1f0a2-session-42");
    // CX's default: it waits 5 s, so the call gets 4.75 s.
    assert_eq!(parameters["deadline_ms"], 4750);

    // A request that is not the platform's shape: its error, and a failure.
    let (ok, answer, stderr) = run_with("--rasa", &json!({"next_action": "x"}), &[]);
    assert!(!ok);
    assert_eq!(answer["action_name"], "x");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("`tracker` is missing")
    );
    assert!(stderr.contains("HTTP 400"), "{stderr}");
}
