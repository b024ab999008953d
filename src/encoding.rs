//! How lockfs encodes what it keeps on disk and sends through the Raft log: bincode in one
//! configuration ([`encode`], [`decode`]): integers as varints, little-endian, and bytes after
//! the value refused.
//!
//! Log format 1, which lockfs wrote before this configuration was the only one, encoded the
//! Raft log's entries (commands in their envelope, membership changes with their context,
//! integrity checks and reports), the member book of a snapshot and the storage layer's own
//! values in bincode's original configuration: integers at their full width, and bytes after
//! the value ignored. [`legacy`] keeps it, for reading what format 1 wrote and for a cluster
//! that has not switched yet. The state machine's records always used the one configuration.
//!
//! What says which format a piece of data is in:
//! - a log entry: its context (`server::entry`), so a log holds entries of both formats and
//!   every replica reads each the same way;
//! - a snapshot's envelope: a magic prefix in format 2 (`server::membership::SnapshotData`);
//! - a data directory's own values: the format recorded in the directory (`storage::FORMAT`),
//!   converted once when a newer lockfs opens it.
//!
//! A cluster writes format 2 into its log only once every member runs a lockfs that reads it:
//! members advertise the newest [`LogFormat`] they read in their hello, and the leader then
//! commits a switch (`state::cmd::SetLogFormat`) that every replica applies at the same index.
//! Until then, a new lockfs writes format 1, so members can be upgraded one at a time.
//!
//! The stability rule: enums only ever gain variants at their end, and a struct's fields never
//! change (a new field is a new record kind under a key prefix that older code ignores, or a
//! new enum variant). A change that breaks the rule is a new log format (with the reading of
//! the old one, and the switch above) and a new `storage::FORMAT`.
//! `state::cmd::tests::every_command_keeps_its_encoding` pins the bytes of every command in
//! both formats.

use serde::de::DeserializeOwned;
use serde::Serialize;

use bincode::Options;

fn options() -> impl Options {
    bincode::DefaultOptions::new().reject_trailing_bytes()
}

/// `value` in the one configuration.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    options()
        .serialize(value)
        .expect("encoding plain data into memory cannot fail")
}

/// A value in the one configuration; bytes after it are refused.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::Error> {
    options().deserialize(bytes)
}

/// Format 1's configuration (see the module's comment): read what format 1 wrote; written only
/// into the log of a cluster that has not switched to format 2.
pub mod legacy {
    use serde::de::DeserializeOwned;
    use serde::Serialize;

    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
        bincode::serialize(value).expect("encoding plain data into memory cannot fail")
    }

    pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::Error> {
        bincode::deserialize(bytes)
    }
}

/// The format of what the Raft log and snapshots carry (see the module's comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogFormat {
    /// The legacy configuration.
    One,
    /// The one configuration.
    Two,
}

impl LogFormat {
    /// The newest format this lockfs reads and writes.
    pub const NEWEST: LogFormat = LogFormat::Two;

    /// The format numbered `n`; 0 is what a member that names none sends (a lockfs older than
    /// log formats), which is format 1. `None`: a format newer than this lockfs knows.
    pub fn from_number(n: u32) -> Option<LogFormat> {
        match n {
            0 | 1 => Some(LogFormat::One),
            2 => Some(LogFormat::Two),
            _ => None,
        }
    }

    pub fn number(self) -> u32 {
        match self {
            LogFormat::One => 1,
            LogFormat::Two => 2,
        }
    }

    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Vec<u8> {
        match self {
            LogFormat::One => legacy::encode(value),
            LogFormat::Two => encode(value),
        }
    }

    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, bincode::Error> {
        match self {
            LogFormat::One => legacy::decode(bytes),
            LogFormat::Two => decode(bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LogFormat;

    /// Both formats, as data written in them has them.
    #[test]
    fn each_format_keeps_its_layout() {
        let value = (300u32, vec![1u8, 2], "é".to_string());
        assert_eq!(
            LogFormat::One.encode(&value),
            [
                0x2c, 0x01, 0, 0, // 300, 4 bytes
                2, 0, 0, 0, 0, 0, 0, 0, 1, 2, // a length of 8 bytes, then the bytes
                2, 0, 0, 0, 0, 0, 0, 0, 0xc3, 0xa9,
            ]
        );
        assert_eq!(
            LogFormat::Two.encode(&value),
            [251, 0x2c, 0x01, 2, 1, 2, 2, 0xc3, 0xa9] // varints: 251 then 2 bytes for 300
        );
        assert_eq!(super::encode(&value), LogFormat::Two.encode(&value));
        let mut trailing = LogFormat::One.encode(&value);
        trailing.push(0);
        let back: (u32, Vec<u8>, String) = LogFormat::One.decode(&trailing).unwrap();
        assert_eq!(back, value);
        let mut trailing = super::encode(&value);
        trailing.push(0);
        assert!(super::decode::<(u32, Vec<u8>, String)>(&trailing).is_err());
    }

    #[test]
    fn format_numbers() {
        for f in [LogFormat::One, LogFormat::Two] {
            assert_eq!(LogFormat::from_number(f.number()), Some(f));
        }
        assert_eq!(LogFormat::from_number(0), Some(LogFormat::One));
        assert_eq!(LogFormat::from_number(3), None);
        assert_eq!(LogFormat::NEWEST, LogFormat::Two);
    }
}
