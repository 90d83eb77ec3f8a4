//! The service's API as the tests call it: one function per route they use,
//! each returning the status and the JSON body (`null` when there is none).

use super::server::{INVOKE, OPERATOR, Server};
use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::Value;

pub fn client() -> Client {
    // The tests speak plain HTTP to loopback; reqwest still wants a TLS provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::builder().no_proxy().build().unwrap()
}

/// Sends `request` and reads the status and the JSON body (`null` when none).
async fn answer(request: RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub async fn upload(server: &Server, name: &str, bytes: Vec<u8>) -> (StatusCode, Value) {
    let url = server.url(&format!("/v1/actions/{name}"));
    answer(client().put(url).bearer_auth(OPERATOR).body(bytes)).await
}

pub async fn invoke(server: &Server, name: &str, body: Value) -> (StatusCode, Value) {
    let url = server.url(&format!("/v1/actions/{name}/invoke"));
    answer(client().post(url).bearer_auth(INVOKE).json(&body)).await
}

pub async fn operator_get(server: &Server, path: &str) -> (StatusCode, String) {
    let response = client()
        .get(server.url(path))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

pub async fn set_grants(server: &Server, name: &str, body: Value) -> (StatusCode, Value) {
    let url = server.url(&format!("/v1/actions/{name}/grants"));
    answer(client().put(url).bearer_auth(OPERATOR).json(&body)).await
}

pub async fn webhook(server: &Server, name: &str, body: Value) -> (StatusCode, Value) {
    let url = server.url(&format!("/webhooks/opendialog/{name}"));
    answer(client().post(url).bearer_auth(INVOKE).json(&body)).await
}
