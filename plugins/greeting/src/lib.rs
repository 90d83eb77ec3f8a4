//! The personalization example: greets the user by first name and part of day,
//! and mentions their membership when the input says they have one.
//!
//! Inputs: `first_name` (required text), `is_member` (boolean), `membership_tier`
//! (text, for example `gold`). Outputs: `greeting` (the sentence) and
//! `part_of_day` (what the host computed from the user's time zone).

wit_bindgen::generate!({ path: "../../wit", world: "plugin" });

use exports::webhook::action::action::Guest;
use webhook::action::types::{
    ActionError, Attribute, AttributeSpec, Context, Manifest, Outcome, PartOfDay, Value, ValueKind,
};

struct Greeting;

impl Guest for Greeting {
    fn describe() -> Manifest {
        Manifest {
            name: "greeting".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description:
                "Greets the user by first name and part of day, and mentions their membership"
                    .into(),
            inputs: vec![
                spec(
                    "first_name",
                    ValueKind::Text,
                    true,
                    "The user's first name (or full name)",
                ),
                spec(
                    "is_member",
                    ValueKind::Boolean,
                    false,
                    "Whether the user is a member",
                ),
                spec(
                    "membership_tier",
                    ValueKind::Text,
                    false,
                    "The member's tier, for example gold",
                ),
            ],
            outputs: vec![
                spec("greeting", ValueKind::Text, false, "The greeting to say"),
                spec(
                    "part_of_day",
                    ValueKind::Text,
                    false,
                    "morning, afternoon, evening or night",
                ),
            ],
            hosts: Vec::new(),
            config: Vec::new(),
        }
    }

    fn run(ctx: Context, input: Vec<Attribute>) -> Result<Outcome, ActionError> {
        let mut first_name = None;
        let mut is_member = false;
        let mut tier = None;
        for attribute in input {
            match (attribute.name.as_str(), attribute.value) {
                ("first_name", Value::Text(name)) => first_name = Some(name),
                ("is_member", Value::Boolean(member)) => is_member = member,
                ("membership_tier", Value::Text(t)) if !t.trim().is_empty() => tier = Some(t),
                _ => {}
            }
        }
        let full_name = first_name.unwrap_or_default();
        // "Ada Lovelace" greets as "Ada": people are greeted by their first name.
        let Some(name) = full_name.split_whitespace().next() else {
            return Err(ActionError::InvalidInput("first_name is empty".into()));
        };
        let part = match ctx.part_of_day {
            PartOfDay::Morning => "morning",
            PartOfDay::Afternoon => "afternoon",
            PartOfDay::Evening => "evening",
            PartOfDay::Night => "night",
        };
        let salutation = match ctx.part_of_day {
            PartOfDay::Night => "Hello".to_string(),
            _ => format!("Good {part}"),
        };
        let mut greeting = format!("{salutation}, {name}!");
        match (is_member, tier) {
            (true, Some(tier)) => {
                greeting.push_str(&format!(" Thanks for being a {} member.", tier.trim()))
            }
            (true, None) => greeting.push_str(" Thanks for being a member."),
            (false, _) => {}
        }
        Ok(Outcome {
            success: true,
            attributes: vec![
                Attribute {
                    name: "greeting".into(),
                    value: Value::Text(greeting.clone()),
                },
                Attribute {
                    name: "part_of_day".into(),
                    value: Value::Text(part.into()),
                },
            ],
            messages: vec![greeting],
        })
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

export!(Greeting);
