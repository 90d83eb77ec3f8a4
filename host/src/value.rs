//! The mapping between JSON attribute values and the contract's `value`, with
//! conversion to the kind a manifest declares.
//!
//! JSON to WIT: null -> null, true/false -> boolean, an integral number ->
//! integer, any other number -> decimal, a string -> text, an array or object
//! -> json (its text). Where the manifest declares a kind, the value is
//! converted to it or refused with a message naming the attribute.
//! WIT to JSON: timestamps become RFC 3339 strings and json text becomes the
//! JSON value it holds.

use jiff::Timestamp;
use serde_json::{Map, Number, Value as Json};

use crate::bindings::types::{Attribute, Value};
use crate::manifest::{Manifest, ValueKind};

/// Converts a call's input object into the attributes passed to `run`, checking
/// it against the manifest: every required input must be present and not null,
/// and every declared input must convert to its kind.
pub(crate) fn input_attributes(
    manifest: &Manifest,
    input: &Map<String, Json>,
) -> Result<Vec<Attribute>, String> {
    if let Some(missing) = manifest
        .inputs
        .iter()
        .find(|spec| spec.required && input.get(&spec.name).is_none_or(Json::is_null))
    {
        return Err(format!("the required input `{}` is missing", missing.name));
    }
    input
        .iter()
        .map(|(name, json)| {
            let kind = manifest
                .input(name)
                .map_or(ValueKind::Any, |spec| spec.kind);
            let value = to_wit(kind, json).map_err(|why| format!("input `{name}`: {why}"))?;
            Ok(Attribute {
                name: name.clone(),
                value,
            })
        })
        .collect()
}

/// Converts one JSON value to a WIT value of `kind`.
pub(crate) fn to_wit(kind: ValueKind, json: &Json) -> Result<Value, String> {
    if json.is_null() {
        return Ok(Value::Null);
    }
    match kind {
        ValueKind::Any => Ok(natural(json)),
        ValueKind::Boolean => match json {
            Json::Bool(b) => Ok(Value::Boolean(*b)),
            Json::String(s) => match s.trim() {
                "true" => Ok(Value::Boolean(true)),
                "false" => Ok(Value::Boolean(false)),
                _ => Err(format!("expected a boolean, got the string {json}")),
            },
            _ => Err(format!("expected a boolean, got {}", describe(json))),
        },
        ValueKind::Integer => integer(json).map(Value::Integer),
        ValueKind::Decimal => match json {
            Json::Number(n) => n
                .as_f64()
                .map(Value::Decimal)
                .ok_or_else(|| format!("{n} is not a decimal")),
            Json::String(s) => match s.trim().parse::<f64>() {
                Ok(d) if d.is_finite() => Ok(Value::Decimal(d)),
                _ => Err(format!("expected a decimal number, got the string {json}")),
            },
            _ => Err(format!("expected a decimal number, got {}", describe(json))),
        },
        ValueKind::Text => match json {
            Json::String(s) => Ok(Value::Text(s.clone())),
            Json::Bool(_) | Json::Number(_) => Ok(Value::Text(json.to_string())),
            _ => Err(format!("expected text, got {}", describe(json))),
        },
        ValueKind::Timestamp => match json {
            Json::String(s) => s
                .trim()
                .parse::<Timestamp>()
                .map(|t| Value::Timestamp(t.as_millisecond()))
                .map_err(|_| {
                    format!(
                        "expected an RFC 3339 timestamp such as 2026-11-26T09:30:00Z, got {json}"
                    )
                }),
            Json::Number(_) => integer(json)
                .map(Value::Timestamp)
                .map_err(|_| format!("expected Unix time in whole milliseconds, got {json}")),
            _ => Err(format!("expected a timestamp, got {}", describe(json))),
        },
        ValueKind::Json => Ok(Value::Json(json.to_string())),
    }
}

/// The kind-free mapping of a JSON value.
fn natural(json: &Json) -> Value {
    match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            // u64 beyond i64 and fractions: keep them as numbers.
            None => Value::Decimal(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::Text(s.clone()),
        Json::Array(_) | Json::Object(_) => Value::Json(json.to_string()),
    }
}

fn integer(json: &Json) -> Result<i64, String> {
    match json {
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                return Ok(i);
            }
            // 42.0 or 1e3 are whole numbers written as floats.
            match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64 => {
                    Ok(f as i64)
                }
                _ => Err(format!("expected a whole number, got {n}")),
            }
        }
        Json::String(s) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| format!("expected a whole number, got the string {json}")),
        _ => Err(format!("expected a whole number, got {}", describe(json))),
    }
}

fn describe(json: &Json) -> &'static str {
    match json {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// Converts the attributes an action returned into a JSON object. A later
/// attribute of the same name wins.
pub(crate) fn output_object(attributes: Vec<Attribute>) -> Result<Map<String, Json>, String> {
    let mut object = Map::with_capacity(attributes.len());
    for Attribute { name, value } in attributes {
        let json = to_json(value).map_err(|why| format!("output `{name}`: {why}"))?;
        object.insert(name, json);
    }
    Ok(object)
}

/// About how many values the JSON `text` holds, counted without parsing it:
/// one, and one more for each `[`, `{` and `,` outside a string. Never fewer
/// than the values it parses into; `[[],[]]` counts 5 for its 3.
pub(crate) fn json_values(text: &str) -> usize {
    let mut values = 1;
    let mut in_string = false;
    let mut escaped = false;
    for byte in text.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match byte {
                b'"' => in_string = true,
                b'[' | b'{' | b',' => values += 1,
                _ => {}
            }
        }
    }
    values
}

/// Converts one WIT value to JSON.
pub(crate) fn to_json(value: Value) -> Result<Json, String> {
    Ok(match value {
        Value::Null => Json::Null,
        Value::Boolean(b) => Json::Bool(b),
        Value::Integer(i) => Json::Number(i.into()),
        Value::Decimal(d) => {
            Json::Number(Number::from_f64(d).ok_or_else(|| format!("{d} is not a finite number"))?)
        }
        Value::Text(s) => Json::String(s),
        Value::Timestamp(ms) => {
            let at = Timestamp::from_millisecond(ms)
                .map_err(|_| format!("timestamp {ms} ms is out of range"))?;
            Json::String(at.to_string())
        }
        Value::Json(text) => {
            serde_json::from_str(&text).map_err(|e| format!("invalid JSON text: {e}"))?
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::AttributeSpec;
    use serde_json::json;

    #[test]
    fn json_values_are_counted_outside_strings_and_never_fewer_than_parsed() {
        assert_eq!(json_values("7"), 1);
        assert_eq!(json_values("[[],[]]"), 5);
        assert_eq!(json_values(r#"{"a,[{": "x\",{", "b": [1, 2]}"#), 5);
        let parsed = |text: &str| {
            fn count(value: &Json) -> usize {
                1 + match value {
                    Json::Array(items) => items.iter().map(count).sum(),
                    Json::Object(map) => map.values().map(count).sum(),
                    _ => 0,
                }
            }
            count(&serde_json::from_str(text).unwrap())
        };
        for text in [
            r#"[{"id": 1, "tags": ["a", "b"]}, {"id": 2, "tags": []}, null]"#,
            r#"{"nested": {"deeper": {"list": [[1], [2, [3]]]}}, "s": "[{,"}"#,
            "[[],[],[],[]]",
        ] {
            assert!(json_values(text) >= parsed(text), "{text}");
        }
    }

    fn manifest(specs: &[(&str, ValueKind, bool)]) -> Manifest {
        Manifest {
            name: "t".into(),
            version: String::new(),
            description: String::new(),
            inputs: specs
                .iter()
                .map(|(name, kind, required)| AttributeSpec {
                    name: (*name).into(),
                    kind: *kind,
                    required: *required,
                    description: String::new(),
                })
                .collect(),
            outputs: Vec::new(),
            hosts: Vec::new(),
            config: Vec::new(),
        }
    }

    fn any(json: Json) -> Value {
        to_wit(ValueKind::Any, &json).unwrap()
    }

    #[test]
    fn undeclared_values_map_by_their_json_type() {
        assert!(matches!(any(json!(null)), Value::Null));
        assert!(matches!(any(json!(true)), Value::Boolean(true)));
        assert!(matches!(any(json!(42)), Value::Integer(42)));
        assert!(matches!(any(json!(-7)), Value::Integer(-7)));
        assert!(matches!(any(json!(2.5)), Value::Decimal(d) if d == 2.5));
        assert!(matches!(any(json!("hi")), Value::Text(ref s) if s == "hi"));
        assert!(matches!(any(json!([1, 2])), Value::Json(ref s) if s == "[1,2]"));
        assert!(matches!(any(json!({"a": 1})), Value::Json(ref s) if s == r#"{"a":1}"#));
    }

    #[test]
    fn declared_integers_accept_numeric_strings_and_whole_floats() {
        assert!(matches!(
            to_wit(ValueKind::Integer, &json!("42")),
            Ok(Value::Integer(42))
        ));
        assert!(matches!(
            to_wit(ValueKind::Integer, &json!(42.0)),
            Ok(Value::Integer(42))
        ));
        assert!(
            to_wit(ValueKind::Integer, &json!(4.5))
                .unwrap_err()
                .contains("whole number")
        );
        assert!(
            to_wit(ValueKind::Integer, &json!("forty"))
                .unwrap_err()
                .contains("\"forty\"")
        );
        assert!(
            to_wit(ValueKind::Integer, &json!([1]))
                .unwrap_err()
                .contains("an array")
        );
    }

    #[test]
    fn declared_decimals_accept_integers_and_strings() {
        assert!(matches!(to_wit(ValueKind::Decimal, &json!(3)), Ok(Value::Decimal(d)) if d == 3.0));
        assert!(
            matches!(to_wit(ValueKind::Decimal, &json!("0.25")), Ok(Value::Decimal(d)) if d == 0.25)
        );
        assert!(to_wit(ValueKind::Decimal, &json!("NaN")).is_err());
    }

    #[test]
    fn declared_booleans_accept_true_and_false_strings_only() {
        assert!(matches!(
            to_wit(ValueKind::Boolean, &json!("true")),
            Ok(Value::Boolean(true))
        ));
        assert!(to_wit(ValueKind::Boolean, &json!("yes")).is_err());
        assert!(
            to_wit(ValueKind::Boolean, &json!(1))
                .unwrap_err()
                .contains("a number")
        );
    }

    #[test]
    fn declared_text_accepts_scalars_but_not_structures() {
        assert!(matches!(to_wit(ValueKind::Text, &json!(42)), Ok(Value::Text(ref s)) if s == "42"));
        assert!(
            to_wit(ValueKind::Text, &json!({"a": 1}))
                .unwrap_err()
                .contains("an object")
        );
    }

    #[test]
    fn declared_timestamps_accept_rfc3339_and_milliseconds() {
        let parsed = to_wit(ValueKind::Timestamp, &json!("2026-11-26T09:30:00+01:00")).unwrap();
        assert!(matches!(parsed, Value::Timestamp(1_795_681_800_000)));
        assert!(matches!(
            to_wit(ValueKind::Timestamp, &json!(1000)),
            Ok(Value::Timestamp(1000))
        ));
        let err = to_wit(ValueKind::Timestamp, &json!("next tuesday")).unwrap_err();
        assert!(err.contains("RFC 3339"), "{err}");
    }

    #[test]
    fn declared_json_takes_any_value_as_text() {
        assert!(
            matches!(to_wit(ValueKind::Json, &json!("abc")), Ok(Value::Json(ref s)) if s == "\"abc\"")
        );
    }

    #[test]
    fn null_passes_for_every_kind() {
        assert!(matches!(
            to_wit(ValueKind::Integer, &json!(null)),
            Ok(Value::Null)
        ));
    }

    #[test]
    fn a_missing_required_input_is_named() {
        let m = manifest(&[("first_name", ValueKind::Text, true)]);
        let err = input_attributes(&m, json!({"other": 1}).as_object().unwrap()).unwrap_err();
        assert_eq!(err, "the required input `first_name` is missing");
        let err =
            input_attributes(&m, json!({"first_name": null}).as_object().unwrap()).unwrap_err();
        assert_eq!(err, "the required input `first_name` is missing");
    }

    #[test]
    fn a_wrong_type_is_refused_naming_the_attribute() {
        let m = manifest(&[("count", ValueKind::Integer, false)]);
        let err = input_attributes(&m, json!({"count": "many"}).as_object().unwrap()).unwrap_err();
        assert_eq!(
            err,
            "input `count`: expected a whole number, got the string \"many\""
        );
    }

    #[test]
    fn undeclared_inputs_pass_through() {
        let m = manifest(&[]);
        let attrs = input_attributes(&m, json!({"extra": "x"}).as_object().unwrap()).unwrap();
        assert_eq!(attrs[0].name, "extra");
    }

    #[test]
    fn outputs_map_back_to_json() {
        let attrs = vec![
            Attribute {
                name: "n".into(),
                value: Value::Integer(1),
            },
            Attribute {
                name: "when".into(),
                value: Value::Timestamp(0),
            },
            Attribute {
                name: "data".into(),
                value: Value::Json(r#"{"a":[1]}"#.into()),
            },
            Attribute {
                name: "gone".into(),
                value: Value::Null,
            },
            Attribute {
                name: "d".into(),
                value: Value::Decimal(0.5),
            },
        ];
        let object = output_object(attrs).unwrap();
        assert_eq!(
            Json::Object(object),
            json!({"n": 1, "when": "1970-01-01T00:00:00Z", "data": {"a": [1]}, "gone": null, "d": 0.5})
        );
    }

    #[test]
    fn invalid_outputs_are_named() {
        let bad_json = vec![Attribute {
            name: "data".into(),
            value: Value::Json("{nope".into()),
        }];
        assert!(
            output_object(bad_json)
                .unwrap_err()
                .starts_with("output `data`: invalid JSON text")
        );
        let nan = vec![Attribute {
            name: "d".into(),
            value: Value::Decimal(f64::NAN),
        }];
        assert_eq!(
            output_object(nan).unwrap_err(),
            "output `d`: NaN is not a finite number"
        );
    }
}
