//! A test action that sends its request through `wasi:http/outgoing-handler`
//! instead of the contract's `http` import: the path JavaScript's `fetch()` and
//! standard wasi:http clients take. The host must apply the same grants,
//! secrets and limits to it.
//!
//! Inputs: `url` (http://host[:port]/path), `method` (GET), `authorization`
//! (a header value, may hold `{{secret:NAME}}`), `body`, `wait` (`no` sends the
//! request and returns without waiting for the answer, as a fire-and-forget
//! `fetch()` does). Outputs: `status` and `body`, or `error` with wasi:http's
//! error code.

wit_bindgen::generate!({ path: "../../wit", world: "plugin" });

use exports::webhook::action::action::Guest;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
use webhook::action::types::{
    ActionError, Attribute, AttributeSpec, Context, Manifest, Outcome, Value, ValueKind,
};

struct Probe;

impl Guest for Probe {
    fn describe() -> Manifest {
        let spec = |name: &str| AttributeSpec {
            name: name.into(),
            kind: ValueKind::Text,
            required: name == "url",
            description: String::new(),
        };
        Manifest {
            name: "wasi-http-probe".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Calls out through wasi:http".into(),
            inputs: vec![
                spec("url"),
                spec("method"),
                spec("authorization"),
                spec("body"),
                spec("wait"),
            ],
            outputs: Vec::new(),
            hosts: Vec::new(),
            config: Vec::new(),
        }
    }

    fn run(_ctx: Context, input: Vec<Attribute>) -> Result<Outcome, ActionError> {
        let text = |name: &str| {
            input
                .iter()
                .find(|a| a.name == name)
                .and_then(|a| match &a.value {
                    Value::Text(t) => Some(t.clone()),
                    _ => None,
                })
        };
        let url = text("url").unwrap_or_default();
        let method = text("method").unwrap_or_else(|| "GET".into());
        let wait = text("wait").is_none_or(|w| w != "no");
        let attributes = match send(&url, &method, text("authorization"), text("body"), wait) {
            Ok((status, body)) => vec![
                attr("status", Value::Integer(status.into())),
                attr("body", Value::Text(body)),
            ],
            Err(error) => vec![attr("error", Value::Text(error))],
        };
        Ok(Outcome {
            success: true,
            attributes,
            messages: Vec::new(),
        })
    }
}

fn send(
    url: &str,
    method: &str,
    authorization: Option<String>,
    body: Option<String>,
    wait: bool,
) -> Result<(u16, String), String> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else {
        return Err(format!("not an http(s) URL: {url}"));
    };
    let (authority, path) = rest.find('/').map_or((rest, "/"), |i| rest.split_at(i));
    let mut headers = Vec::new();
    if let Some(value) = authorization {
        headers.push(("authorization".to_string(), value.into_bytes()));
    }
    let fields = Fields::from_list(&headers).map_err(|e| format!("header error: {e:?}"))?;
    let request = OutgoingRequest::new(fields);
    let method = match method {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        other => Method::Other(other.to_string()),
    };
    request
        .set_method(&method)
        .map_err(|()| "bad method".to_string())?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| "bad scheme".to_string())?;
    request
        .set_authority(Some(authority))
        .map_err(|()| "bad authority".to_string())?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| "bad path".to_string())?;
    let outgoing = request.body().map_err(|()| "no body".to_string())?;
    if let Some(body) = body {
        let stream = outgoing
            .write()
            .map_err(|()| "no body stream".to_string())?;
        stream
            .blocking_write_and_flush(body.as_bytes())
            .map_err(|e| format!("write failed: {e:?}"))?;
    }
    OutgoingBody::finish(outgoing, None).map_err(code)?;
    let future = outgoing_handler::handle(request, None).map_err(code)?;
    if !wait {
        return Ok((0, String::new()));
    }
    future.subscribe().block();
    let response = future
        .get()
        .ok_or("the response never came")?
        .map_err(|()| "the response was taken twice".to_string())?
        .map_err(code)?;
    let status = response.status();
    let incoming = response
        .consume()
        .map_err(|()| "no response body".to_string())?;
    let stream = incoming
        .stream()
        .map_err(|()| "no response stream".to_string())?;
    let mut bytes = Vec::new();
    while let Ok(chunk) = stream.blocking_read(64 * 1024) {
        bytes.extend_from_slice(&chunk);
    }
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

fn code(error: ErrorCode) -> String {
    format!("{error:?}")
}

fn attr(name: &str, value: Value) -> Attribute {
    Attribute {
        name: name.into(),
        value,
    }
}

export!(Probe);
