//! Posts the details the user gave to a CRM as a new lead.
//!
//! Config: `crm_url` (for example `https://crm.example/api/leads`). Inputs:
//! `email` (required), `first_name`, `last_name`, `phone`, `interest`, and any
//! other attributes, all sent as JSON with the conversation id. The request
//! carries `Authorization: Bearer {{secret:crm_token}}`: the host fills in the
//! token, only for the destination the operator bound it to, and the action
//! never sees it. Outputs: `lead_id` from the CRM's answer.

wit_bindgen::generate!({ path: "../../wit", world: "plugin" });

use exports::webhook::action::action::Guest;
use serde_json::{Map, Value as Json, json};
use webhook::action::config;
use webhook::action::http::{self, HttpError, Request};
use webhook::action::types::{
    ActionError, Attribute, AttributeSpec, Context, Manifest, Outcome, Value, ValueKind,
};

struct LeadCapture;

impl Guest for LeadCapture {
    fn describe() -> Manifest {
        let text = |name: &str, required: bool| AttributeSpec {
            name: name.into(),
            kind: ValueKind::Text,
            required,
            description: String::new(),
        };
        Manifest {
            name: "lead-capture".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Posts the user's details to the CRM as a lead".into(),
            inputs: vec![
                text("email", true),
                text("first_name", false),
                text("last_name", false),
                text("phone", false),
                text("interest", false),
            ],
            outputs: vec![text("lead_id", false)],
            hosts: vec!["https://crm.example".into()],
            config: vec!["crm_url".into()],
        }
    }

    fn run(ctx: Context, input: Vec<Attribute>) -> Result<Outcome, ActionError> {
        let mut lead = Map::new();
        for attribute in input {
            lead.insert(attribute.name, to_json(attribute.value));
        }
        if !lead
            .get("email")
            .and_then(Json::as_str)
            .is_some_and(|e| e.contains('@'))
        {
            return Err(ActionError::InvalidInput(
                "email must be an address like ada@example.com".into(),
            ));
        }
        lead.insert("conversation_id".into(), json!(ctx.conversation_id));
        let url = config::get("crm_url")
            .ok_or_else(|| ActionError::Internal("the operator has not set `crm_url`".into()))?;
        let request = Request {
            method: "POST".into(),
            url,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("authorization".into(), "Bearer {{secret:crm_token}}".into()),
            ],
            body: Some(Json::Object(lead).to_string().into_bytes()),
            timeout_ms: Some(3_000),
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
        if !(200..300).contains(&response.status) {
            return Err(ActionError::Upstream(format!(
                "the CRM answered {}",
                response.status
            )));
        }
        let answer: Json = serde_json::from_slice(&response.body).unwrap_or(Json::Null);
        let lead_id = answer.get("id").map(|id| match id {
            Json::String(s) => s.clone(),
            other => other.to_string(),
        });
        Ok(Outcome {
            success: true,
            attributes: vec![Attribute {
                name: "lead_id".into(),
                value: lead_id.map_or(Value::Null, Value::Text),
            }],
            messages: vec!["Thanks! Someone from our team will be in touch.".into()],
        })
    }
}

fn to_json(value: Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Boolean(b) => json!(b),
        Value::Integer(i) => json!(i),
        Value::Decimal(d) => json!(d),
        Value::Text(s) => json!(s),
        Value::Timestamp(ms) => json!(ms),
        Value::Json(text) => serde_json::from_str(&text).unwrap_or(Json::String(text)),
    }
}

export!(LeadCapture);
