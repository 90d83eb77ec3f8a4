//! What the host stores in an [`ArtifactCache`](crate::ArtifactCache) is
//! sealed with a keyed MAC, and read back only when the seal holds.
//!
//! A compiled artifact is native code that wasmtime loads without checking
//! it (`unsafe` deserialize): whoever can write to the cache could otherwise
//! run code in the host. Each entry is stored as an HMAC-SHA256 tag over its
//! cache key and its bytes, then the bytes; the key is the host's
//! ([`ArtifactKey`]), kept where the cache is not (a file of its own, or the
//! operator's). An entry whose tag does not match, or that was moved to
//! another key, is treated as missing: the host compiles again.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The key that seals a host's cached artifacts: 32 secret bytes.
#[derive(Clone)]
pub struct ArtifactKey([u8; 32]);

impl ArtifactKey {
    /// The key made of `bytes`.
    pub fn from_bytes(bytes: [u8; 32]) -> ArtifactKey {
        ArtifactKey(bytes)
    }

    /// A new random key. Artifacts sealed with it are readable only by a host
    /// given the same key: with a fresh key per process, a restart compiles
    /// again.
    pub fn random() -> ArtifactKey {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the system's random source is available");
        ArtifactKey(bytes)
    }

    /// The key's bytes, for storing it.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn mac(&self, key: &str, bytes: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        // The cache key's length first, so that no split of key and bytes
        // can be read as another.
        mac.update(&(key.len() as u64).to_le_bytes());
        mac.update(key.as_bytes());
        mac.update(bytes);
        mac
    }

    /// `bytes`, stored under `key`, with their seal in front.
    pub(crate) fn seal(&self, key: &str, bytes: &[u8]) -> Vec<u8> {
        let tag = self.mac(key, bytes).finalize().into_bytes();
        [tag.as_slice(), bytes].concat()
    }

    /// The bytes of `sealed`, read from under `key`, if its seal holds.
    pub(crate) fn open<'a>(&self, key: &str, sealed: &'a [u8]) -> Option<&'a [u8]> {
        if sealed.len() < TAG_LEN {
            return None;
        }
        let (tag, bytes) = sealed.split_at(TAG_LEN);
        // verify_slice compares in constant time.
        self.mac(key, bytes).verify_slice(tag).ok()?;
        Some(bytes)
    }
}

const TAG_LEN: usize = 32;

impl Default for ArtifactKey {
    fn default() -> ArtifactKey {
        ArtifactKey::random()
    }
}

impl std::fmt::Debug for ArtifactKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ArtifactKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_entry_opens_only_intact_under_its_key_with_the_same_host_key() {
        let host = ArtifactKey::random();
        let sealed = host.seal("abc-described", b"native code");
        assert_eq!(
            host.open("abc-described", &sealed),
            Some(&b"native code"[..])
        );
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(host.open("abc-described", &tampered), None);
        assert_eq!(
            host.open("other-key", &sealed),
            None,
            "moved to another key"
        );
        assert_eq!(ArtifactKey::random().open("abc-described", &sealed), None);
        assert_eq!(host.open("abc-described", b"short"), None);
    }
}
