//! How the state is laid out as key/value records. The caller stores them (RocksDB) in the same
//! batch as the applied index; this module only names the keys and encodes the values.
//!
//! Numbers in keys are u64 big-endian, so the byte order of keys is the numeric order.
//!
//! - `n/<instance>`: a node (`node.rs`) without its children map.
//! - `m/meta`: the `Meta` record (counters, clock).
//! - `s/<session>`: a session (`session.rs`) without its handles and cached results.
//! - `h/<handle>`: an open handle: its session and node.
//! - `r/<session><seq>`: the cached result of request `seq` of a session (`dedup.rs`).
//! - `l/<instance>`: the lock table of a node (`lock.rs`): holders, waiters, lock-delay.
//! - `o/<instance>`: a file that lost its last name but may still be open (`orphan.rs`); its
//!   node record has parent 0 and no name.
//! - `k/<instance>`: the names of a file beyond the first in its node record (`links.rs`).
//! - `c/<instance>`: a node that admits more than one exclusive flock holder
//!   (`semaphore.rs`).
//! - `p/<instance>`: what a mount does to the holders of a lock on the node when it loses it
//!   (`on_loss.rs`).
//! - `f/log`: the log format the cluster writes (`crate::encoding::LogFormat`), once past 1
//!   (`cmd::SetLogFormat`); without it, 1.
//!
//! Other prefixes are left to future record kinds and ignored when loading.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::StateError;

pub(super) const NODE_PREFIX: &[u8] = b"n/";
pub(super) const SESSION_PREFIX: &[u8] = b"s/";
pub(super) const HANDLE_PREFIX: &[u8] = b"h/";
pub(super) const RESPONSE_PREFIX: &[u8] = b"r/";
pub(super) const LOCK_PREFIX: &[u8] = b"l/";
pub(super) const ORPHAN_PREFIX: &[u8] = b"o/";
pub(super) const NAMES_PREFIX: &[u8] = b"k/";
pub(super) const SEMAPHORE_PREFIX: &[u8] = b"c/";
pub(super) const ON_LOSS_PREFIX: &[u8] = b"p/";
pub(super) const META_KEY: &[u8] = b"m/meta";
pub(super) const LOG_FORMAT_KEY: &[u8] = b"f/log";

/// Counters that outlive any one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Meta {
    /// The instance number the next created node gets; instances are never reused.
    pub next_instance: u64,
    /// The latest leader time applied; time never goes backwards inside the state.
    pub clock_ns: u64,
    /// The ids the next session, handle and lock wait get; never reused.
    pub next_session: u64,
    pub next_handle: u64,
    pub next_wait: u64,
}

/// `prefix` followed by the numbers.
pub(super) fn key(prefix: &[u8], ids: &[u64]) -> Vec<u8> {
    let mut key = prefix.to_vec();
    for id in ids {
        key.extend_from_slice(&id.to_be_bytes());
    }
    key
}

pub(super) fn node_key(instance: u64) -> Vec<u8> {
    key(NODE_PREFIX, &[instance])
}

/// The `N` numbers in a key of `prefix`, or `None` when `key` does not start with `prefix`.
pub(super) fn parse_key<const N: usize>(
    prefix: &[u8],
    key: &[u8],
) -> Option<Result<[u64; N], StateError>> {
    let rest = key.strip_prefix(prefix)?;
    if rest.len() != 8 * N {
        return Some(Err(StateError::Corrupt(format!("bad key {key:?}"))));
    }
    let mut ids = [0; N];
    for (id, bytes) in ids.iter_mut().zip(rest.chunks_exact(8)) {
        *id = u64::from_be_bytes(bytes.try_into().expect("chunks of 8"));
    }
    Some(Ok(ids))
}

pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    crate::encoding::encode(value)
}

pub(super) fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StateError> {
    crate::encoding::decode(bytes)
        .map_err(|e| StateError::Corrupt(format!("undecodable {what}: {e}")))
}

/// File contents as one byte string in every encoding (`#[serde(with = "record::file_bytes")]`):
/// bincode writes a byte string exactly as it writes a `Vec<u8>` (a u64 length, then the
/// bytes), so the format is unchanged, but as one copy instead of one call per byte (which
/// made a 256 KiB file cost about 15 ms to encode or decode in a debug build).
pub mod file_bytes {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(data)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Vec<u8>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("file contents")
            }

            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }

            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_byte_buf(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct AsBytes(#[serde(with = "super::file_bytes")] Vec<u8>);

    /// The same bytes as a plain `Vec<u8>`, both ways, so stored records and log entries read
    /// the same.
    #[test]
    fn file_bytes_encode_as_a_vec_does() {
        for data in [vec![], vec![0u8, 1, 255], vec![7u8; 70_000]] {
            let plain = bincode::serialize(&data).unwrap();
            assert_eq!(bincode::serialize(&AsBytes(data.clone())).unwrap(), plain);
            assert_eq!(
                bincode::deserialize::<AsBytes>(&plain).unwrap(),
                AsBytes(data.clone())
            );
            let json = serde_json::to_string(&data).unwrap();
            assert_eq!(
                serde_json::from_str::<AsBytes>(&json).unwrap(),
                AsBytes(data)
            );
        }
    }
}
