//! How a record is written at rest: as JSON in which every secret value is
//! encrypted, so that a copy of the data directory or a dump of the database
//! holds no secret in the clear.
//!
//! A secret's `value` becomes `sealed_value`: XChaCha20-Poly1305 under the key
//! derived from the operator key (`keys.rs`), with a random 24-byte nonce and,
//! as associated data, the action's and the secret's names and where the
//! secret may be sent (`allow`, `headers`): a sealed value copied to another
//! action or secret does not open, and neither does one whose destinations
//! were changed by whoever can write the store but lacks the key. Records written
//! before values were sealed still read; [`RecordCodec::decode`] says so, and
//! the store writes them again sealed.

use anyhow::{Context as _, Result, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde_json::Value as Json;

use super::ActionRecord;
use crate::keys::OperatorKey;

/// Encrypts and decrypts the secret values of records.
#[derive(Clone)]
pub struct RecordCodec {
    cipher: XChaCha20Poly1305,
}

/// The prefix of a sealed value: the algorithm, so that another can follow.
const SEALED_PREFIX: &str = "xchacha20poly1305:";
const NONCE_LEN: usize = 24;

impl RecordCodec {
    /// The codec for records sealed under `key`.
    pub fn new(key: &OperatorKey) -> RecordCodec {
        RecordCodec {
            cipher: XChaCha20Poly1305::new(&key.secrets_key().into()),
        }
    }

    /// The record of `name` as it is stored: JSON, secret values sealed.
    pub fn encode(&self, name: &str, record: &ActionRecord) -> Result<Vec<u8>> {
        let mut json = serde_json::to_value(record)?;
        for secret in secrets_mut(&mut json) {
            let Some(Json::String(value)) = secret.remove("value") else {
                continue;
            };
            let aad = associated_data(name, secret);
            let sealed = self.seal(&aad, &value)?;
            secret.insert("sealed_value".into(), sealed.into());
        }
        Ok(serde_json::to_vec_pretty(&json)?)
    }

    /// The record of `name` from its stored form, and whether any secret
    /// value in it was stored in the clear (by an earlier version).
    pub fn decode(&self, name: &str, stored: &[u8]) -> Result<(ActionRecord, bool)> {
        let mut json: Json = serde_json::from_slice(stored)?;
        let mut in_clear = false;
        for secret in secrets_mut(&mut json) {
            if secret.get("value").is_some_and(Json::is_string) {
                in_clear = true;
            }
            let Some(Json::String(sealed)) = secret.remove("sealed_value") else {
                continue;
            };
            let aad = associated_data(name, secret);
            let value = self.open(&aad, &sealed).with_context(|| {
                format!(
                    "cannot decrypt the secret `{}`: it was sealed with another operator key \
                     (ACTION_HOST_SECRET_KEY), or changed",
                    secret.get("name").and_then(Json::as_str).unwrap_or("?")
                )
            })?;
            secret.insert("value".into(), value.into());
        }
        Ok((serde_json::from_value(json)?, in_clear))
    }

    fn seal(&self, aad: &[u8], value: &str) -> Result<String> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| anyhow!("no random nonce: {e}"))?;
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad,
                },
            )
            .map_err(|_| anyhow!("cannot encrypt a secret value"))?;
        Ok(format!(
            "{SEALED_PREFIX}{}",
            BASE64.encode([nonce.as_slice(), &sealed].concat())
        ))
    }

    fn open(&self, aad: &[u8], sealed: &str) -> Result<String> {
        let Some(encoded) = sealed.strip_prefix(SEALED_PREFIX) else {
            bail!("the sealed value does not start with `{SEALED_PREFIX}`");
        };
        let bytes = BASE64
            .decode(encoded)
            .context("the sealed value is not base64")?;
        if bytes.len() < NONCE_LEN {
            bail!("the sealed value is too short");
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let value = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad })
            .map_err(|_| anyhow!("the sealed value does not open with this key"))?;
        String::from_utf8(value).context("the secret value is not UTF-8")
    }
}

impl std::fmt::Debug for RecordCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordCodec(<key redacted>)")
    }
}

/// The secrets of a record's settings and of every kept version's settings.
fn secrets_mut(record: &mut Json) -> impl Iterator<Item = &mut serde_json::Map<String, Json>> {
    let mut docs: Vec<&mut Json> = Vec::new();
    if let Some(record) = record.as_object_mut() {
        for (field, value) in record.iter_mut() {
            match (field.as_str(), value) {
                ("settings", doc) => docs.push(doc),
                ("versions", Json::Array(versions)) => {
                    docs.extend(versions.iter_mut().filter_map(|v| v.get_mut("settings")))
                }
                _ => {}
            }
        }
    }
    docs.into_iter()
        .filter_map(|doc| doc.get_mut("secrets").and_then(Json::as_array_mut))
        .flatten()
        .filter_map(Json::as_object_mut)
}

/// What a sealed value is bound to: the action's name, the secret's, and
/// the secret's destinations and headers.
fn associated_data(action: &str, secret: &serde_json::Map<String, Json>) -> Vec<u8> {
    let field = |name: &str| match secret.get(name) {
        Some(Json::String(text)) => text.clone(),
        // serde_json writes a value's JSON the same way every time.
        Some(value) => value.to_string(),
        None => String::new(),
    };
    let mut aad = Vec::new();
    for part in [
        action.to_owned(),
        field("name"),
        field("allow"),
        field("headers"),
    ] {
        // Lengths first, so that no split of the parts reads as another.
        aad.extend_from_slice(&(part.len() as u64).to_le_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_file::{ActionDoc, SecretDoc};
    use crate::store::VersionEntry;

    fn secret(name: &str, value: &str) -> SecretDoc {
        SecretDoc {
            name: name.into(),
            value: Some(value.into()),
            value_env: None,
            allow: vec!["https://api.example.com".into()],
            headers: None,
        }
    }

    fn record() -> ActionRecord {
        let settings = ActionDoc {
            secrets: vec![secret("crm_token", "s3cr3t-now")],
            ..ActionDoc::default()
        };
        ActionRecord {
            revision: 2,
            sha256: "abc".into(),
            version: 2,
            settings: settings.clone(),
            changed_at_ms: 0,
            versions: vec![VersionEntry {
                version: 1,
                sha256: "old".into(),
                uploaded_at_ms: 0,
                uploaded_by: "designer".into(),
                manifest_version: "1.0.0".into(),
                settings: ActionDoc {
                    secrets: vec![secret("crm_token", "s3cr3t-then")],
                    ..ActionDoc::default()
                },
            }],
        }
    }

    fn codec() -> RecordCodec {
        RecordCodec::new(&OperatorKey::generate())
    }

    #[test]
    fn stored_records_hold_no_secret_value_in_the_clear_and_read_back_whole() {
        let codec = codec();
        let stored = codec.encode("crm", &record()).unwrap();
        let text = String::from_utf8(stored.clone()).unwrap();
        assert!(!text.contains("s3cr3t"), "{text}");
        assert_eq!(text.matches(SEALED_PREFIX).count(), 2, "{text}");
        assert!(text.contains("crm_token"), "names stay readable: {text}");
        assert_eq!(codec.decode("crm", &stored).unwrap(), (record(), false));
        // Sealing twice gives different bytes: each value has its own nonce.
        assert_ne!(codec.encode("crm", &record()).unwrap(), stored);
    }

    #[test]
    fn a_value_does_not_open_under_another_key_action_or_secret_name() {
        let codec = codec();
        let stored = codec.encode("crm", &record()).unwrap();
        let why = format!("{:#}", self::codec().decode("crm", &stored).unwrap_err());
        assert!(why.contains("another operator key"), "{why}");
        assert!(why.contains("crm_token"), "{why}");
        assert!(
            codec.decode("other", &stored).is_err(),
            "moved to another action"
        );
        let renamed = String::from_utf8(stored.clone())
            .unwrap()
            .replace("crm_token", "crm_tokem");
        assert!(codec.decode("crm", renamed.as_bytes()).is_err());
        // Sent elsewhere by whoever can write the store: it does not open.
        let redirected = String::from_utf8(stored)
            .unwrap()
            .replace("https://api.example.com", "https://evil.example");
        let why = format!(
            "{:#}",
            codec.decode("crm", redirected.as_bytes()).unwrap_err()
        );
        assert!(why.contains("crm_token"), "{why}");
    }

    #[test]
    fn a_tampered_value_is_refused_and_clear_text_from_before_is_reported() {
        let codec = codec();
        let stored = String::from_utf8(codec.encode("crm", &record()).unwrap()).unwrap();
        let at = stored.find(SEALED_PREFIX).unwrap() + SEALED_PREFIX.len() + 40;
        let flipped = if &stored[at..=at] == "A" { "B" } else { "A" };
        let tampered = format!("{}{flipped}{}", &stored[..at], &stored[at + 1..]);
        assert!(codec.decode("crm", tampered.as_bytes()).is_err());
        for bad in [
            "xchacha20poly1305:!!",
            "xchacha20poly1305:AAAA",
            "rot13:abc",
        ] {
            let mut json: Json = serde_json::from_str(&stored).unwrap();
            json["settings"]["secrets"][0]["sealed_value"] = bad.into();
            let why = codec.decode("crm", &serde_json::to_vec(&json).unwrap());
            assert!(why.is_err(), "{bad}");
        }
        let clear = serde_json::to_vec(&record()).unwrap();
        assert_eq!(codec.decode("crm", &clear).unwrap(), (record(), true));
    }
}
