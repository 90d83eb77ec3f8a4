//! Where compiled components are kept between loads, and under which key.
//!
//! A compiled component is valid only for the engine configuration that
//! compiled it, so its key names the component's SHA-256 and a digest of
//! the engine's compatibility hash. The digest is SHA-256, not Rust's
//! `DefaultHasher`, whose output may change between Rust releases: the key
//! must name the same artifact for every build of the host with the same
//! wasmtime and settings, including replicas sharing one store.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use wasmtime::Engine;

/// Keeps compiled components between runs, so a restart loads without
/// recompiling. What the host stores is sealed with its
/// [`HostConfig::artifact_key`](crate::HostConfig::artifact_key) and loaded
/// only when the seal holds, so a cache that others can write to cannot make
/// the host run their code.
pub trait ArtifactCache: Send + Sync {
    /// The entry `entry` stored under `key`, if any.
    fn get(&self, key: &EngineKey, entry: CacheEntry) -> Option<Vec<u8>>;
    /// Stores an entry; a failure only costs a later recompilation.
    fn put(&self, key: &EngineKey, entry: CacheEntry, bytes: &[u8]);
}

/// The kinds of entry kept for one compiled component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheEntry {
    /// The native code, as `Component::serialize` wrote it.
    Artifact,
    /// Why the component was compiled as built rather than from a snapshot
    /// after `describe()` (UTF-8 text); absent when it was snapshotted.
    SnapshotNote,
}

impl CacheEntry {
    /// A short name for file names and seals: `artifact` or `snapshot-note`.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheEntry::Artifact => "artifact",
            CacheEntry::SnapshotNote => "snapshot-note",
        }
    }
}

/// Names one compiled form of one component for one engine configuration:
/// `<sha256>-<engine digest>-<start>`. Only letters, digits, `-` and `.`, so
/// it can be a file name or a database key as it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EngineKey(String);

impl EngineKey {
    /// The key of `bytes` compiled by `engine`, snapshotted after
    /// `describe()` or not.
    pub(crate) fn new(engine: &Engine, bytes: &[u8], snapshot: bool) -> EngineKey {
        let mut engine_digest = Sha256Hasher(Sha256::new());
        engine
            .precompile_compatibility_hash()
            .hash(&mut engine_digest);
        let engine_digest = hex(&engine_digest.0.finalize()[..8]);
        // A new name whenever what preinit.rs or compact.rs produce changes,
        // so that artifacts of the old form are not served.
        let start = if snapshot { "described.2" } else { "built" };
        EngineKey(format!(
            "{}-{engine_digest}-{start}",
            hex(&Sha256::digest(bytes))
        ))
    }

    /// A key read back from a store, if it has a key's form.
    pub fn parse(text: &str) -> Option<EngineKey> {
        let valid = (3..=200).contains(&text.len())
            && text
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.')
            && !text.starts_with('.');
        valid.then(|| EngineKey(text.to_owned()))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What a seal binds an entry to: its key and its kind, so that neither
    /// can be swapped for another's.
    pub(crate) fn seal_label(&self, entry: CacheEntry) -> String {
        format!("{}/{}", self.0, entry.as_str())
    }
}

impl std::fmt::Display for EngineKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Feeds what `Hash` writes into SHA-256: a digest that depends only on the
/// hashed values, not on the Rust release.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(
            digest[..8]
                .try_into()
                .expect("a SHA-256 digest has 8 bytes"),
        )
    }
}

/// The SHA-256 of `bytes`, in lower-case hex: how stores name versions.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_key_is_the_same_for_equal_engines_and_safe_as_a_file_name() {
        let engine = Engine::default();
        let a = EngineKey::new(&engine, b"component", true);
        let b = EngineKey::new(&Engine::default(), b"component", true);
        assert_eq!(a, b);
        assert_ne!(a, EngineKey::new(&engine, b"component", false));
        assert_ne!(a, EngineKey::new(&engine, b"other", true));
        assert!(
            a.as_str()
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.'),
            "{a}"
        );
        assert!(a.as_str().starts_with(&sha256_hex(b"component")));
    }

    #[test]
    fn an_engine_of_another_configuration_has_another_key() {
        let mut config = wasmtime::Config::new();
        config.wasm_simd(false).wasm_relaxed_simd(false);
        let other = Engine::new(&config).unwrap();
        assert_ne!(
            EngineKey::new(&Engine::default(), b"component", false),
            EngineKey::new(&other, b"component", false)
        );
    }
}
