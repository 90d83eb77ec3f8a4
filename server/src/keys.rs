//! The operator key, and the keys derived from it.
//!
//! One secret of 32 bytes, given by the operator (`ACTION_HOST_SECRET_KEY` or
//! `--secret-key-file`) or kept in the data directory, is all a service
//! needs: the key that encrypts secret values in the store and the key that
//! seals compiled artifacts are derived from it with HKDF-SHA256, each under
//! its own label, so replicas given the same value agree on both and neither
//! derived key tells anything about the other. Neither is ever stored.

use action_host::ArtifactKey;
use anyhow::{Context as _, Result, bail};
use hkdf::Hkdf;
use sha2::Sha256;
use std::path::Path;

/// The operator's key: 32 secret bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct OperatorKey([u8; 32]);

/// The HKDF labels; changing one changes the key it derives.
const SECRETS_LABEL: &[u8] = b"action-host secret values v1";
const ARTIFACTS_LABEL: &[u8] = b"action-host artifact seals v1";

impl OperatorKey {
    /// A new random key.
    pub fn generate() -> OperatorKey {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the system's random source is available");
        OperatorKey(bytes)
    }

    /// The key written as 64 hex digits (surrounding space ignored).
    pub fn from_hex(text: &str) -> Result<OperatorKey, String> {
        let text = text.trim();
        let digit = |at: usize| u8::from_str_radix(text.get(at..at + 2)?, 16).ok();
        match (0..32).map(|i| digit(2 * i)).collect::<Option<Vec<u8>>>() {
            Some(bytes) if text.len() == 64 => Ok(OperatorKey(bytes.try_into().expect("32 bytes"))),
            _ => Err(format!(
                "a key is 64 hex digits (32 bytes), such as the output of `openssl rand -hex 32`; \
                 this one has {} characters",
                text.len()
            )),
        }
    }

    /// The key in `file`, written as 64 hex digits.
    pub fn read_file(file: &Path) -> Result<OperatorKey> {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        match OperatorKey::from_hex(&text) {
            Ok(key) => Ok(key),
            Err(why) => bail!("{}: {why}", file.display()),
        }
    }

    /// The key as 64 hex digits, for writing it to a file.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The key that encrypts secret values at rest.
    pub(crate) fn secrets_key(&self) -> [u8; 32] {
        self.derive(SECRETS_LABEL)
    }

    /// The key that seals compiled artifacts, for
    /// [`HostConfig::artifact_key`](action_host::HostConfig::artifact_key).
    pub fn artifact_key(&self) -> ArtifactKey {
        ArtifactKey::from_bytes(self.derive(ARTIFACTS_LABEL))
    }

    fn derive(&self, label: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        Hkdf::<Sha256>::new(None, &self.0)
            .expand(label, &mut out)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        out
    }
}

impl std::fmt::Debug for OperatorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OperatorKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_reads_back_from_its_hex_and_refuses_what_is_not_one() {
        let key = OperatorKey::generate();
        assert_eq!(
            OperatorKey::from_hex(&format!(" {}\n", key.to_hex())).unwrap(),
            key
        );
        for bad in [
            "",
            "abc",
            &"g".repeat(64),
            &"a".repeat(66),
            "é".repeat(32).as_str(),
        ] {
            let why = OperatorKey::from_hex(bad).unwrap_err();
            assert!(why.contains("64 hex digits"), "{bad}: {why}");
        }
        assert!(!format!("{key:?}").contains(&key.to_hex()));
    }

    #[test]
    fn the_derived_keys_differ_from_each_other_and_from_the_key() {
        let key = OperatorKey::from_hex(&"11".repeat(32)).unwrap();
        let secrets = key.secrets_key();
        let artifacts = *key.artifact_key().as_bytes();
        assert_ne!(secrets, artifacts);
        assert_ne!(secrets, key.0);
        // Stable: replicas and restarts derive the same keys.
        assert_eq!(
            OperatorKey::from_hex(&"11".repeat(32))
                .unwrap()
                .secrets_key(),
            secrets
        );
        assert_ne!(
            OperatorKey::from_hex(&"12".repeat(32))
                .unwrap()
                .secrets_key(),
            secrets
        );
    }
}
