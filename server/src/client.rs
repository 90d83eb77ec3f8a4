//! A client of a running service, for `action-host deploy` and
//! `action-host actions ...`: designers and CI scripts use the API without
//! writing curl lines. Every answer that is not a success becomes an error
//! that carries the service's code and message.

use anyhow::{Context as _, Result, bail};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::sync::Arc;

/// A client of one service, with one token.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// A client of the service at `base` (such as `http://127.0.0.1:8080`),
    /// sending `token` as a bearer token when given.
    pub fn new(base: &str, token: Option<String>) -> Result<Client> {
        let url = url::Url::parse(base).with_context(|| format!("invalid service URL `{base}`"))?;
        if !matches!(url.scheme(), "http" | "https") {
            bail!("the service URL must start with http:// or https://, got `{base}`");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .context("cannot set up the HTTP client")?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// Uploads a component as `name`; the answer is the action and whether
    /// the name is new.
    pub async fn deploy(&self, name: &str, component: Vec<u8>) -> Result<(Value, bool)> {
        let (status, body) = self
            .send(Method::PUT, &action_path(name, ""), Body::Bytes(component))
            .await?;
        Ok((body, status == StatusCode::CREATED))
    }

    /// Replaces an action's settings (grants, secrets, config, limits): the
    /// operator's token.
    pub async fn set_settings(&self, name: &str, settings: Value) -> Result<Value> {
        Ok(self
            .send(
                Method::PUT,
                &action_path(name, "/grants"),
                Body::Json(settings),
            )
            .await?
            .1)
    }

    /// Replaces an action's config.
    pub async fn set_config(&self, name: &str, config: Value) -> Result<Value> {
        Ok(self
            .send(
                Method::PUT,
                &action_path(name, "/config"),
                Body::Json(config),
            )
            .await?
            .1)
    }

    /// The serving actions.
    pub async fn list(&self) -> Result<Value> {
        Ok(self.send(Method::GET, "/v1/actions", Body::None).await?.1)
    }

    /// One action.
    pub async fn show(&self, name: &str) -> Result<Value> {
        Ok(self
            .send(Method::GET, &action_path(name, ""), Body::None)
            .await?
            .1)
    }

    /// An action's kept versions, newest first.
    pub async fn versions(&self, name: &str) -> Result<Value> {
        Ok(self
            .send(Method::GET, &action_path(name, "/versions"), Body::None)
            .await?
            .1)
    }

    /// Serves an earlier version again (`{"version": N}` or `{"sha256": ...}`).
    pub async fn rollback(&self, name: &str, to: Value) -> Result<Value> {
        Ok(self
            .send(
                Method::POST,
                &action_path(name, "/rollback"),
                Body::Json(to),
            )
            .await?
            .1)
    }

    async fn send(&self, method: Method, path: &str, body: Body) -> Result<(StatusCode, Value)> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method.clone(), &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        request = match body {
            Body::None => request,
            Body::Bytes(bytes) => request
                .header("content-type", "application/wasm")
                .body(bytes),
            Body::Json(json) => request.json(&json),
        };
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the service at {}", self.base))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .with_context(|| format!("the service's answer to {method} {path} broke off"))?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok((status, body));
        }
        let code = body.pointer("/error/code").and_then(Value::as_str);
        let message = body
            .pointer("/error/message")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| body.to_string());
        match code {
            Some(code) => bail!("{method} {path}: {status} {code}: {message}"),
            None => bail!("{method} {path}: {status}: {message}"),
        }
    }
}

enum Body {
    None,
    Bytes(Vec<u8>),
    Json(Value),
}

fn action_path(name: &str, rest: &str) -> String {
    // Names are checked by the service; encoding keeps a bad one from
    // reaching another route.
    let name: String = url::form_urlencoded::byte_serialize(name.as_bytes()).collect();
    format!("/v1/actions/{name}{rest}")
}
