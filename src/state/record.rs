//! How the state is laid out as key/value records. The caller stores them (RocksDB) in the same
//! batch as the applied index; this module only names the keys and encodes the values.
//!
//! - `n/<instance as u64 big-endian>`: a node (`node.rs`) without its children map. Big-endian keeps
//!   the byte order of keys equal to the numeric order of instances.
//! - `m/meta`: the `Meta` record (next instance number, clock).
//!
//! Other prefixes are left to future record kinds and ignored when loading.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::StateError;

pub(super) const NODE_PREFIX: &[u8] = b"n/";
pub(super) const META_KEY: &[u8] = b"m/meta";

/// Counters that outlive any one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Meta {
    /// The instance number the next created node gets; instances are never reused.
    pub next_instance: u64,
    /// The latest leader time applied; time never goes backwards inside the state.
    pub clock_ns: u64,
}

pub(super) fn node_key(instance: u64) -> Vec<u8> {
    let mut key = NODE_PREFIX.to_vec();
    key.extend_from_slice(&instance.to_be_bytes());
    key
}

/// The instance number in a node key, or `None` when `key` is not a node key.
pub(super) fn parse_node_key(key: &[u8]) -> Option<Result<u64, StateError>> {
    let rest = key.strip_prefix(NODE_PREFIX)?;
    Some(
        <[u8; 8]>::try_from(rest)
            .map(u64::from_be_bytes)
            .map_err(|_| StateError::Corrupt(format!("bad node key {key:?}"))),
    )
}

fn codec() -> impl bincode::Options {
    use bincode::Options;
    bincode::DefaultOptions::new().reject_trailing_bytes()
}

pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    use bincode::Options;
    codec()
        .serialize(value)
        .expect("encoding plain structs into memory cannot fail")
}

pub(super) fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StateError> {
    use bincode::Options;
    codec()
        .deserialize(bytes)
        .map_err(|e| StateError::Corrupt(format!("undecodable {what}: {e}")))
}
