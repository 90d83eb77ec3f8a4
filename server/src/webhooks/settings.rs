//! How each platform's names and fields map onto the host's: the
//! `[webhooks.rasa]` and `[webhooks.dialogflow-cx]` tables of the host file.
//! See `docs/platforms.md`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// The webhook settings of every platform.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Rasa's action server protocol.
    #[serde(default)]
    pub rasa: PlatformSettings,
    /// Dialogflow CX's webhook.
    #[serde(default, rename = "dialogflow-cx")]
    pub dialogflow_cx: PlatformSettings,
}

/// One platform's mapping.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformSettings {
    /// The platform's name for an action (Rasa's `next_action`, a CX
    /// fulfillment's tag) -> the action deployed here. A name not in the
    /// map is the action's own.
    #[serde(default)]
    pub actions: BTreeMap<String, String>,
    /// The slot (Rasa) or session parameter (CX) set to `true` when the
    /// action succeeds and `false` on a business failure
    /// \[`action_success`\]; `""` sets none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_attribute: Option<String>,
    /// The slot (or metadata key) or session parameter that holds the user's
    /// IANA time zone \[`timezone`\].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone_attribute: Option<String>,
    /// How long the platform waits for an answer, in milliseconds: the
    /// action's deadline is cut to end before it [CX: 5000, its default
    /// webhook timeout; Rasa: none].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Rasa only: the query parameter its `token:` setting sends the token
    /// in, as Rasa's `token_name:` says \[`token`\].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_name: Option<String>,
}

/// What answering takes besides the action's run: reading the body,
/// encoding the answer, the network. The deadline ends this much before the
/// platform stops waiting, so the platform hears the timeout.
const ANSWER_MARGIN: Duration = Duration::from_millis(250);

impl PlatformSettings {
    /// The action the platform's `name` stands for.
    pub fn action<'a>(&'a self, name: &'a str) -> &'a str {
        self.actions.get(name).map_or(name, String::as_str)
    }

    /// The success attribute, unless turned off.
    pub fn success_attribute(&self) -> Option<&str> {
        match self.success_attribute.as_deref() {
            None => Some("action_success"),
            Some("") => None,
            Some(name) => Some(name),
        }
    }

    /// The attribute that holds the time zone.
    pub fn timezone_attribute(&self) -> &str {
        self.timezone_attribute.as_deref().unwrap_or("timezone")
    }

    /// The query parameter that carries the token \[`token`\].
    pub fn token_name(&self) -> &str {
        self.token_name.as_deref().unwrap_or("token")
    }

    /// The longest deadline a call may have, given the platform's timeout
    /// (`default_ms` when the settings give none).
    pub fn deadline_cap(&self, default_ms: Option<u64>) -> Option<Duration> {
        let waits = Duration::from_millis(self.timeout_ms.or(default_ms)?);
        Some(
            waits
                .saturating_sub(ANSWER_MARGIN)
                .max(Duration::from_millis(1)),
        )
    }

    /// What is wrong with the settings, if anything.
    pub(crate) fn check(&self, table: &str) -> Result<(), String> {
        if self.timeout_ms == Some(0) {
            return Err(format!("webhooks.{table}: timeout_ms must be at least 1"));
        }
        match self.token_name.as_deref() {
            Some(_) if table != "rasa" => {
                return Err(format!(
                    "webhooks.{table}: token_name is Rasa's (its `token:` sends the token in \
                     the query string); send the token to {table} in a header"
                ));
            }
            Some(name) if !(1..=64).contains(&name.len()) || !name.bytes().all(is_query_safe) => {
                return Err(format!(
                    "webhooks.{table}: token_name `{name}` must be 1 to 64 of a-z, A-Z, 0-9, \
                     -, _ and ."
                ));
            }
            _ => {}
        }
        for (from, to) in &self.actions {
            let valid = (1..=64).contains(&to.len())
                && to.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
            if from.is_empty() || !valid {
                return Err(format!(
                    "webhooks.{table}.actions: `{from}` = `{to}` must map a name to a valid \
                     action name (1 to 64 of a-z, 0-9, - and _)"
                ));
            }
        }
        Ok(())
    }
}

/// A byte that a query parameter's name can hold as it is, unencoded.
fn is_query_safe(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let settings = PlatformSettings::default();
        assert_eq!(settings.action("action_check_order"), "action_check_order");
        assert_eq!(settings.success_attribute(), Some("action_success"));
        assert_eq!(settings.timezone_attribute(), "timezone");
        assert_eq!(settings.token_name(), "token");
        assert_eq!(settings.deadline_cap(None), None);
        assert_eq!(
            settings.deadline_cap(Some(5000)),
            Some(Duration::from_millis(4750))
        );
        let settings = PlatformSettings {
            actions: [("action_check_order".into(), "order-lookup".into())].into(),
            success_attribute: Some(String::new()),
            timezone_attribute: Some("tz".into()),
            timeout_ms: Some(100),
            token_name: Some("auth".into()),
        };
        assert_eq!(settings.action("action_check_order"), "order-lookup");
        assert_eq!(settings.token_name(), "auth");
        assert_eq!(settings.check("rasa"), Ok(()));
        assert_eq!(settings.success_attribute(), None);
        assert_eq!(settings.timezone_attribute(), "tz");
        assert_eq!(
            settings.deadline_cap(Some(5000)),
            Some(Duration::from_millis(1))
        );
    }

    #[test]
    fn a_mapping_to_an_invalid_name_is_refused() {
        let settings = PlatformSettings {
            actions: [("check".into(), "Order Lookup".into())].into(),
            ..Default::default()
        };
        let err = settings.check("rasa").unwrap_err();
        assert!(err.contains("`check` = `Order Lookup`"), "{err}");
    }

    #[test]
    fn a_token_name_is_rasas_and_a_plain_query_name() {
        let named = |name: &str| PlatformSettings {
            token_name: Some(name.into()),
            ..Default::default()
        };
        let err = named("auth").check("dialogflow-cx").unwrap_err();
        assert!(err.contains("token_name is Rasa's"), "{err}");
        for bad in ["", "a b", "to&ken", "x=1", &"t".repeat(65)] {
            let err = named(bad).check("rasa").unwrap_err();
            assert!(err.contains("token_name"), "{bad:?}: {err}");
        }
    }
}
