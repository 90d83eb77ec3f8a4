//! Looks up the user's last order so the conversation can mention it: "Your
//! order of 2 teapots shipped on Tuesday."
//!
//! Config: `api_base` (for example `https://api.shop.example`). Input: `user_id`
//! (text; the context's user id when absent). Calls `GET {api_base}/users/{user_id}/orders/last`
//! and expects `{"id": ..., "status": ..., "items": [...], "placed_at": ...}`.
//! Outputs: `last_order` (the order, as JSON), `last_order_status` (text);
//! `success = false` with a message when the user has no orders (404).

wit_bindgen::generate!({ path: "../../wit", world: "plugin" });

use exports::webhook::action::action::Guest;
use webhook::action::http::{self, HttpError, Request};
use webhook::action::types::{
    ActionError, Attribute, AttributeSpec, Context, Manifest, Outcome, Value, ValueKind,
};
use webhook::action::{config, log};

struct OrderLookup;

impl Guest for OrderLookup {
    fn describe() -> Manifest {
        Manifest {
            name: "order-lookup".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Looks up the user's last order".into(),
            inputs: vec![spec(
                "user_id",
                ValueKind::Text,
                false,
                "Whose orders; the context's user by default",
            )],
            outputs: vec![
                spec(
                    "last_order",
                    ValueKind::Json,
                    false,
                    "The last order as the API returned it",
                ),
                spec(
                    "last_order_status",
                    ValueKind::Text,
                    false,
                    "Its status, for example shipped",
                ),
            ],
            hosts: vec!["https://api.shop.example".into()],
            config: vec!["api_base".into()],
        }
    }

    fn run(ctx: Context, input: Vec<Attribute>) -> Result<Outcome, ActionError> {
        let user = input
            .iter()
            .find_map(|a| match (&*a.name, &a.value) {
                ("user_id", Value::Text(id)) => Some(id.clone()),
                _ => None,
            })
            .or(ctx.user_id)
            .ok_or_else(|| {
                ActionError::InvalidInput("no user_id in the input or the context".into())
            })?;
        let base = config::get("api_base")
            .ok_or_else(|| ActionError::Internal("the operator has not set `api_base`".into()))?;
        let url = format!(
            "{}/users/{}/orders/last",
            base.trim_end_matches('/'),
            encode(&user)
        );
        let request = Request {
            method: "GET".into(),
            url,
            headers: vec![
                ("accept".into(), "application/json".into()),
                ("x-request-id".into(), ctx.invocation_id.clone()),
            ],
            body: None,
            timeout_ms: Some(2_000),
        };
        let response = http::send(&request).map_err(|error| match error {
            HttpError::Denied(why) => ActionError::Denied(why),
            HttpError::Timeout => ActionError::Timeout,
            HttpError::TooLarge => ActionError::Upstream("the response was too large".into()),
            HttpError::InvalidRequest(why) | HttpError::Transport(why) => {
                ActionError::Upstream(why)
            }
            HttpError::BudgetExhausted => ActionError::Internal("out of outbound requests".into()),
        })?;
        match response.status {
            404 => Ok(Outcome {
                success: false,
                attributes: vec![attr("last_order", Value::Null)],
                messages: vec!["No previous order found.".into()],
            }),
            200 => {
                let order: serde_json::Value =
                    serde_json::from_slice(&response.body).map_err(|e| {
                        ActionError::Upstream(format!("the order API sent invalid JSON: {e}"))
                    })?;
                let status = order
                    .get("status")
                    .and_then(|s| s.as_str())
                    .unwrap_or("unknown")
                    .to_owned();
                log::log(
                    log::Level::Info,
                    &format!("last order of {user} is {status}"),
                );
                Ok(Outcome {
                    success: true,
                    attributes: vec![
                        attr("last_order", Value::Json(order.to_string())),
                        attr("last_order_status", Value::Text(status.clone())),
                    ],
                    messages: vec![format!("Your last order is {status}.")],
                })
            }
            other => Err(ActionError::Upstream(format!(
                "the order API answered {other}"
            ))),
        }
    }
}

/// Percent-encodes a path segment.
fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn attr(name: &str, value: Value) -> Attribute {
    Attribute {
        name: name.into(),
        value,
    }
}

fn spec(name: &str, kind: ValueKind, required: bool, description: &str) -> AttributeSpec {
    AttributeSpec {
        name: name.into(),
        kind,
        required,
        description: description.into(),
    }
}

export!(OrderLookup);
