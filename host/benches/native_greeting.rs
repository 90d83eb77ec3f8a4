//! The greeting action's work done natively, as the baseline of the
//! benchmarks: `benches/invoke.rs` calls it in process, and
//! `examples/native_webhook.rs` serves it over HTTP.

use action_host::CallContext;
use serde_json::{Map, Value, json};

/// The greeting action's work done natively, from the same JSON input to the
/// same JSON output: check the required input and its kinds, compute the local
/// hour in the user's time zone, build the greeting.
pub fn native_greeting(context: &CallContext, input: &Map<String, Value>) -> Result<Value, String> {
    let full_name = match input.get("first_name") {
        Some(Value::String(name)) => name,
        Some(_) => return Err("input `first_name`: expected text".into()),
        None => return Err("the required input `first_name` is missing".into()),
    };
    let is_member = match input.get("is_member") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("input `is_member`: expected a boolean".into()),
    };
    let tier = input.get("membership_tier").and_then(Value::as_str);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let zone = context
        .timezone
        .as_deref()
        .and_then(|z| jiff::tz::TimeZone::get(z).ok())
        .unwrap_or(jiff::tz::TimeZone::UTC);
    let hour = jiff::Timestamp::from_millisecond(now_ms)
        .unwrap()
        .to_zoned(zone)
        .hour();
    let part = match hour {
        5..=11 => "morning",
        12..=16 => "afternoon",
        17..=21 => "evening",
        _ => "night",
    };
    let name = full_name
        .split_whitespace()
        .next()
        .ok_or("first_name is empty")?;
    let salutation = if part == "night" {
        "Hello".to_string()
    } else {
        format!("Good {part}")
    };
    let mut greeting = format!("{salutation}, {name}!");
    match (is_member, tier) {
        (true, Some(tier)) => greeting.push_str(&format!(" Thanks for being a {tier} member.")),
        (true, None) => greeting.push_str(" Thanks for being a member."),
        (false, _) => {}
    }
    Ok(json!({
        "success": true,
        "attributes": {"greeting": greeting, "part_of_day": part},
        "messages": [greeting],
        "logs": [],
    }))
}
