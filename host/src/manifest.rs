//! What an action says about itself, checked once at load.

use serde::Serialize;

use crate::bindings::types;

/// The kind an attribute is declared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueKind {
    /// true or false.
    Boolean,
    /// A whole number.
    Integer,
    /// A floating-point number.
    Decimal,
    /// Text.
    Text,
    /// A point in time (RFC 3339 in JSON).
    Timestamp,
    /// Any JSON value, passed to the action as text.
    Json,
    /// Any value, as it comes.
    Any,
}

/// One declared input or output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttributeSpec {
    /// The attribute's name.
    pub name: String,
    /// The kind of its value.
    pub kind: ValueKind,
    /// For inputs: calls without it are refused before the action runs.
    pub required: bool,
    /// What it means.
    pub description: String,
}

/// An action's manifest, as returned by its `describe` export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Manifest {
    /// The action's own name for itself.
    pub name: String,
    /// The action's own version.
    pub version: String,
    /// What it does.
    pub description: String,
    /// The inputs it reads.
    pub inputs: Vec<AttributeSpec>,
    /// The outputs it sets.
    pub outputs: Vec<AttributeSpec>,
    /// The destinations it asks for (informational: only grants allow requests).
    pub hosts: Vec<String>,
    /// The configuration keys it reads.
    pub config: Vec<String>,
}

impl Manifest {
    /// Checks a manifest returned by `describe`: a non-empty name and unique
    /// attribute names on each side.
    pub(crate) fn from_wit(raw: types::Manifest) -> Result<Manifest, String> {
        if raw.name.trim().is_empty() {
            return Err("the manifest's name is empty".into());
        }
        let inputs = specs("input", raw.inputs)?;
        let outputs = specs("output", raw.outputs)?;
        Ok(Manifest {
            name: raw.name,
            version: raw.version,
            description: raw.description,
            inputs,
            outputs,
            hosts: raw.hosts,
            config: raw.config,
        })
    }

    /// The declared input called `name`, if any.
    pub fn input(&self, name: &str) -> Option<&AttributeSpec> {
        self.inputs.iter().find(|spec| spec.name == name)
    }
}

fn specs(side: &str, raw: Vec<types::AttributeSpec>) -> Result<Vec<AttributeSpec>, String> {
    let mut seen = std::collections::HashSet::new();
    raw.into_iter()
        .map(|spec| {
            if spec.name.is_empty() {
                return Err(format!("an {side} in the manifest has an empty name"));
            }
            if !seen.insert(spec.name.clone()) {
                return Err(format!(
                    "the manifest declares the {side} `{}` twice",
                    spec.name
                ));
            }
            Ok(AttributeSpec {
                name: spec.name,
                kind: spec.kind.into(),
                required: spec.required,
                description: spec.description,
            })
        })
        .collect()
}

impl From<types::ValueKind> for ValueKind {
    fn from(kind: types::ValueKind) -> ValueKind {
        match kind {
            types::ValueKind::Boolean => ValueKind::Boolean,
            types::ValueKind::Integer => ValueKind::Integer,
            types::ValueKind::Decimal => ValueKind::Decimal,
            types::ValueKind::Text => ValueKind::Text,
            types::ValueKind::Timestamp => ValueKind::Timestamp,
            types::ValueKind::Json => ValueKind::Json,
            types::ValueKind::Any => ValueKind::Any,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(name: &str, inputs: &[&str]) -> types::Manifest {
        types::Manifest {
            name: name.into(),
            version: "1.0.0".into(),
            description: String::new(),
            inputs: inputs
                .iter()
                .map(|n| types::AttributeSpec {
                    name: (*n).into(),
                    kind: types::ValueKind::Text,
                    required: false,
                    description: String::new(),
                })
                .collect(),
            outputs: Vec::new(),
            hosts: Vec::new(),
            config: Vec::new(),
        }
    }

    #[test]
    fn a_valid_manifest_is_accepted() {
        let manifest = Manifest::from_wit(raw("greeting", &["first_name", "is_member"])).unwrap();
        assert_eq!(manifest.input("is_member").unwrap().kind, ValueKind::Text);
    }

    #[test]
    fn an_empty_name_is_refused() {
        assert_eq!(
            Manifest::from_wit(raw("  ", &[])).unwrap_err(),
            "the manifest's name is empty"
        );
    }

    #[test]
    fn a_duplicate_input_is_refused_by_name() {
        let err = Manifest::from_wit(raw("x", &["a", "b", "a"])).unwrap_err();
        assert_eq!(err, "the manifest declares the input `a` twice");
    }
}
