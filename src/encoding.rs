//! How lockfs encodes what it keeps on disk and sends through the Raft log: bincode, in two
//! configurations. Each is a format that data directories and logs already hold, so neither
//! ever changes:
//!
//! - [`log`]: the Raft log's entries (commands in their envelope, membership changes with their
//!   context, integrity checks and reports), the member book of a snapshot, and the storage
//!   layer's own values (identity, Raft state). bincode's original configuration: integers at
//!   their full width, little-endian; bytes after the value are ignored.
//! - [`record`]: the state machine's records (nodes, sessions, handles, locks and the rest,
//!   see `state/record.rs`) and the results kept for deduplication: integers as varints, and
//!   bytes after the value refused.
//!
//! The stability rule, for both: enums only ever gain variants at their end, and a struct's
//! fields never change (a new field is a new record kind under a key prefix that older code
//! ignores, or a new enum variant). A change that breaks the rule, such as moving the log to
//! the records' configuration, bumps `storage::FORMAT`: a node refuses a data directory in a
//! format newer than it knows, and a new format must come with the reading of the old one, and
//! with a cluster-wide switch, since members of mixed versions replicate each other's entries.
//! `state::cmd::tests::every_command_keeps_its_log_encoding` pins the bytes of every command.

/// The log's configuration (see the module's comment).
pub mod log {
    use serde::de::DeserializeOwned;
    use serde::Serialize;

    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
        bincode::serialize(value).expect("encoding plain data into memory cannot fail")
    }

    pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::Error> {
        bincode::deserialize(bytes)
    }
}

/// The records' configuration (see the module's comment).
pub mod record {
    use bincode::Options;
    use serde::de::DeserializeOwned;
    use serde::Serialize;

    fn options() -> impl Options {
        bincode::DefaultOptions::new().reject_trailing_bytes()
    }

    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
        options()
            .serialize(value)
            .expect("encoding plain data into memory cannot fail")
    }

    pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::Error> {
        options().deserialize(bytes)
    }
}

#[cfg(test)]
mod tests {
    /// The two configurations, as their formats have them.
    #[test]
    fn each_configuration_keeps_its_layout() {
        let value = (300u32, vec![1u8, 2], "é".to_string());
        assert_eq!(
            super::log::encode(&value),
            [
                0x2c, 0x01, 0, 0, // 300, 4 bytes
                2, 0, 0, 0, 0, 0, 0, 0, 1, 2, // a length of 8 bytes, then the bytes
                2, 0, 0, 0, 0, 0, 0, 0, 0xc3, 0xa9,
            ]
        );
        assert_eq!(
            super::record::encode(&value),
            [251, 0x2c, 0x01, 2, 1, 2, 2, 0xc3, 0xa9] // varints: 251 then 2 bytes for 300
        );
        let mut trailing = super::log::encode(&value);
        trailing.push(0);
        let back: (u32, Vec<u8>, String) = super::log::decode(&trailing).unwrap();
        assert_eq!(back, value);
        let mut trailing = super::record::encode(&value);
        trailing.push(0);
        assert!(super::record::decode::<(u32, Vec<u8>, String)>(&trailing).is_err());
    }
}
