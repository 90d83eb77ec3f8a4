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
        let text = read_capped(response)
            .await
            .with_context(|| format!("the service's answer to {method} {path}"))?;
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
        let message = printable(&message);
        match code {
            Some(code) => bail!("{method} {path}: {status} {}: {message}", printable(code)),
            None => bail!("{method} {path}: {status}: {message}"),
        }
    }
}

/// The most bytes of an answer the client reads: far more than any list of
/// actions or versions, and a stop for whatever else answers at the URL.
pub const MAX_ANSWER_BYTES: usize = 16 << 20;

/// The answer's body as text, refused past [`MAX_ANSWER_BYTES`].
async fn read_capped(mut response: reqwest::Response) -> Result<String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.context("it broke off")? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            bail!(
                "it is over {} MiB, more than the service sends; is the URL the service's?",
                MAX_ANSWER_BYTES >> 20
            );
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// `text` with each control character (but the newline) written as an
/// escape such as `\u{1b}`, so that what a service, or whatever answers at
/// its URL, sends cannot move the cursor or retitle the terminal it is
/// printed to. JSON from `serde_json` stays JSON: it escapes the C0 controls
/// itself, and `\u{7f}` and the C1 controls are only ever inside its strings,
/// where the escape below is the JSON one.
pub fn printable(text: &str) -> String {
    use std::fmt::Write as _;
    let mut shown = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\n' {
            let _ = write!(shown, "\\u{:04x}", u32::from(c));
        } else {
            shown.push(c);
        }
    }
    shown
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_printed_escaped() {
        assert_eq!(
            printable("red \u{1b}[31m, title \u{1b}]0;x\u{7}, csi \u{9b}2J\nnext"),
            "red \\u001b[31m, title \\u001b]0;x\\u0007, csi \\u009b2J\nnext"
        );
        let json =
            serde_json::to_string_pretty(&serde_json::json!({"a": "\u{7f}\u{85}\u{1b}"})).unwrap();
        let shown = printable(&json);
        assert!(
            !shown.chars().any(|c| c.is_control() && c != '\n'),
            "{shown}"
        );
        let back: Value = serde_json::from_str(&shown).unwrap();
        assert_eq!(back["a"], "\u{7f}\u{85}\u{1b}");
    }
}
