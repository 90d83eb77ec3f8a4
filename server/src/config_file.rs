//! The host configuration file (TOML): each action's grants, secrets, config
//! and limits. See `docs/host-config.md` for the format.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

use action_host::Grant;
use action_host::{ActionSettings, HttpLimits, Limits, Secret};

use crate::webhooks::WebhookSettings;

/// A parsed host configuration: settings by action name.
#[derive(Debug, Clone, Default)]
pub struct HostFile {
    /// Each configured action's settings.
    pub actions: BTreeMap<String, ActionSettings>,
    /// The same, as written (for storing and showing).
    pub docs: BTreeMap<String, ActionDoc>,
    /// How the webhook adapters map each platform's names and fields.
    pub webhooks: WebhookSettings,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    actions: BTreeMap<String, ActionDoc>,
    #[serde(default)]
    webhooks: WebhookSettings,
}

/// One action's operator settings as written: in the host file (TOML), in
/// `PUT /v1/actions/{name}/grants` (JSON) and in the data directory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionDoc {
    /// Grants, as text.
    #[serde(default)]
    pub grants: Vec<String>,
    /// Values for the `config` import.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Secrets and where each may go.
    #[serde(default)]
    pub secrets: Vec<SecretDoc>,
    /// Limits; the host's defaults for what is left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsDoc>,
    /// Which calls leave an invocation record; failures when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<crate::records::Recording>,
}

/// What a view shows in place of a secret's value.
pub(crate) const REDACTED: &str = "<redacted>";

/// A secret as written: its value inline or the environment variable holding it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretDoc {
    /// The name in `{{secret:NAME}}`.
    pub name: String,
    /// The value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The environment variable that holds the value, read at load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_env: Option<String>,
    /// Grants the secret may be sent to.
    pub allow: Vec<String>,
    /// The header names it may fill; `Authorization` when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<String>>,
}

/// Limits as written; each is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct LimitsDoc {
    pub deadline_ms: Option<u64>,
    pub memory_mib: Option<usize>,
    pub log_bytes: Option<usize>,
    pub max_requests: Option<u32>,
    pub max_response_bytes: Option<usize>,
    pub max_request_body_bytes: Option<usize>,
    pub request_timeout_ms: Option<u64>,
}

impl HostFile {
    /// Parses the TOML text of a host configuration. Errors name the action and
    /// the entry that is wrong.
    pub fn parse(text: &str) -> Result<HostFile, String> {
        let raw: RawFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut actions = BTreeMap::new();
        let docs = raw.actions.clone();
        for (name, action) in raw.actions {
            let settings = action
                .settings()
                .map_err(|why| format!("action `{name}`: {why}"))?;
            actions.insert(name, settings);
        }
        raw.webhooks.rasa.check("rasa")?;
        raw.webhooks.dialogflow_cx.check("dialogflow-cx")?;
        Ok(HostFile {
            actions,
            docs,
            webhooks: raw.webhooks,
        })
    }
}

impl ActionDoc {
    /// The settings this document describes, or what is wrong with it.
    pub fn settings(&self) -> Result<ActionSettings, String> {
        let grants = parse_grants(&self.grants)?;
        let secrets = self
            .secrets
            .iter()
            .map(|secret| {
                let value = match (&secret.value, &secret.value_env) {
                    (Some(value), None) => value.clone(),
                    (None, Some(var)) => std::env::var(var).map_err(|_| {
                        format!(
                            "secret `{}`: the environment variable `{var}` is not set",
                            secret.name
                        )
                    })?,
                    _ => {
                        return Err(format!(
                            "secret `{}`: give exactly one of `value` and `value_env`",
                            secret.name
                        ));
                    }
                };
                let allow = parse_grants(&secret.allow)
                    .map_err(|why| format!("secret `{}`: {why}", secret.name))?;
                let mut parsed = Secret::new(secret.name.clone(), value, allow);
                if let Some(headers) = &secret.headers {
                    parsed.headers = headers.clone();
                }
                Ok(parsed)
            })
            .collect::<Result<Vec<_>, String>>()?;
        let (limits, http) = match &self.limits {
            None => (None, HttpLimits::default()),
            Some(raw) => raw.limits(),
        };
        Ok(ActionSettings {
            limits,
            config: self.config.clone(),
            grants,
            secrets,
            http,
        })
    }

    /// The document with every inline secret value replaced, for showing.
    pub fn redacted(&self) -> ActionDoc {
        let mut shown = self.clone();
        for secret in &mut shown.secrets {
            if secret.value.is_some() {
                secret.value = Some(REDACTED.into());
            }
        }
        shown
    }
}

impl LimitsDoc {
    fn limits(&self) -> (Option<Limits>, HttpLimits) {
        let defaults = Limits::default();
        let any_invocation_limit =
            self.deadline_ms.is_some() || self.memory_mib.is_some() || self.log_bytes.is_some();
        let limits = any_invocation_limit.then(|| Limits {
            deadline: self
                .deadline_ms
                .map_or(defaults.deadline, Duration::from_millis),
            memory_bytes: self
                .memory_mib
                .map_or(defaults.memory_bytes, |mib| mib << 20),
            log_bytes: self.log_bytes.unwrap_or(defaults.log_bytes),
        });
        let http_defaults = HttpLimits::default();
        let http = HttpLimits {
            max_requests: self.max_requests.unwrap_or(http_defaults.max_requests),
            max_response_bytes: self
                .max_response_bytes
                .unwrap_or(http_defaults.max_response_bytes),
            max_request_body_bytes: self
                .max_request_body_bytes
                .unwrap_or(http_defaults.max_request_body_bytes),
            request_timeout: self
                .request_timeout_ms
                .map_or(http_defaults.request_timeout, Duration::from_millis),
        };
        (limits, http)
    }
}

fn parse_grants(texts: &[String]) -> Result<Vec<Grant>, String> {
    texts
        .iter()
        .map(|text| Grant::parse(text).map_err(|e| e.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_parses() {
        let file = HostFile::parse(
            r#"
            [actions.lead-capture]
            grants = ["POST https://crm.example/leads"]
            config = { region = "eu" }
            limits = { deadline_ms = 2000, max_requests = 2 }

            [[actions.lead-capture.secrets]]
            name = "crm_token"
            value = "t0k3n"
            allow = ["POST https://crm.example/leads"]
            "#,
        )
        .unwrap();
        let settings = &file.actions["lead-capture"];
        assert_eq!(
            settings.grants[0].as_str(),
            "POST https://crm.example/leads"
        );
        assert_eq!(settings.config["region"], "eu");
        assert_eq!(settings.secrets[0].value, "t0k3n");
        assert_eq!(settings.limits.unwrap().deadline, Duration::from_secs(2));
        assert_eq!(settings.http.max_requests, 2);
        assert_eq!(settings.http.max_response_bytes, 1 << 20);
    }

    #[test]
    fn webhook_settings_parse_and_are_checked() {
        let file = HostFile::parse(
            r#"
            [webhooks.rasa]
            actions = { action_check_order = "order-lookup" }
            timezone_attribute = "user_timezone"

            [webhooks.dialogflow-cx]
            success_attribute = ""
            timeout_ms = 10000
            "#,
        )
        .unwrap();
        assert_eq!(
            file.webhooks.rasa.action("action_check_order"),
            "order-lookup"
        );
        assert_eq!(file.webhooks.rasa.timezone_attribute(), "user_timezone");
        assert_eq!(file.webhooks.dialogflow_cx.success_attribute(), None);
        assert_eq!(file.webhooks.dialogflow_cx.timeout_ms, Some(10000));
        let err = HostFile::parse("[webhooks.rasa]\ntimeout = 1").unwrap_err();
        assert!(err.contains("unknown field `timeout`"), "{err}");
        let err = HostFile::parse("[webhooks.dialogflow-cx]\ntimeout_ms = 0").unwrap_err();
        assert!(err.contains("webhooks.dialogflow-cx: timeout_ms"), "{err}");
    }

    #[test]
    fn a_bad_grant_is_named_with_its_action() {
        let err = HostFile::parse("[actions.x]\ngrants = [\"api.example.com\"]").unwrap_err();
        assert!(
            err.starts_with("action `x`: invalid grant `api.example.com`"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_and_ambiguous_secrets_are_refused() {
        assert!(
            HostFile::parse("[actions.x]\ngrant = []")
                .unwrap_err()
                .contains("unknown field `grant`")
        );
        let err =
            HostFile::parse("[[actions.x.secrets]]\nname = \"t\"\nallow = [\"https://a.example\"]")
                .unwrap_err();
        assert!(
            err.contains("exactly one of `value` and `value_env`"),
            "{err}"
        );
    }
}
