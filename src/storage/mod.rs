//! Durable storage of one node, in one RocksDB database whose writes go first into lockfs's own
//! write-ahead log ([`wal`]), or, for the node harness, in memory ([`disk`]).
//!
//! Two column families:
//! - `raft`: the Raft log (`e` + index), hard state, conf state, the latest state-machine
//!   snapshot, and the node's identity (cluster id, node id). [`RaftLog`] serves it to raft-rs
//!   through the `raft::Storage` trait.
//! - `state`: the state machine's records and its applied index. [`StateStore`] writes each batch
//!   of applied changes together with the new applied index in one RocksDB write batch, so a crash
//!   can neither apply a command twice nor skip one.
//!
//! Every stored value carries a CRC-32 of its key and itself, checked whenever it is read: a
//! value changed on the disk, or read back under another key, is reported as
//! [`StorageError::Corrupt`] and never used. RocksDB checks its own blocks; the write-ahead log
//! checks each record, drops the writes a crash cut short (never synced), and refuses to open
//! on damage to anything it had synced, instead of silently losing what followed. A directory
//! written by a lockfs that used RocksDB's own write-ahead log (format 2) is still replayed from
//! it, with `TolerateCorruptedTailRecords`, once, when it is converted.
//!
//! The format: every value is bincode in the configuration of [`crate::encoding`] (log entries
//! say their own format in their context), and stays readable by later versions under the rule
//! written there; a change that breaks the rule bumps [`FORMAT`]. Each data directory records
//! the format it was written in; a node refuses a directory in a format newer than it knows,
//! and converts an older one once, when it opens it.
//!
//! Every change goes through a [`WriteBatch`] that the caller commits with [`Store::write`]; the
//! node commits log appends with `sync` (acknowledged data must be on disk) and applied state
//! without it (it can always be replayed from the synced log, and the single write-ahead log
//! keeps the order of writes, so a synced log write also makes every earlier write durable).

mod disk;
mod error;
mod raft_log;
mod state_store;
mod wal;

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use disk::{Cf, MemDisk, WriteBatch};
pub use error::StorageError;
pub use raft_log::{MemberInfo, Members, RaftLog, SnapshotOpener};
pub use state_store::{RecordSink, Records, StateStore};

use disk::{Disk, RocksDisk};

pub type Result<T> = std::result::Result<T, StorageError>;

pub(crate) const CF_RAFT: Cf = Cf::Raft;
pub(crate) const CF_STATE: Cf = Cf::State;
const KEY_IDENTITY: &[u8] = b"identity";
const KEY_FORMAT: &[u8] = b"format";
/// The format this lockfs writes (see the module's comment). A directory without the mark was
/// written before there was one, in format 1. Format 1 kept the storage layer's own values
/// (identity, divergence mark, member book, applied index) in the legacy configuration of
/// [`crate::encoding`]; format 2 keeps them in the one configuration. Format 3 keeps the same
/// values, with writes logged in `wal/` ([`wal`]) instead of RocksDB's own log: a lockfs that
/// knows only format 2 would not replay them. The mark itself is always a u32 in 4
/// little-endian bytes, in every format.
pub const FORMAT: u32 = 3;
const KEY_DIVERGED: &[u8] = b"diverged";
/// Bytes of checksum after every stored value.
const SEAL: usize = 4;

/// Which cluster and which member a data directory belongs to. Written once, when the directory
/// is first initialized; a node refuses to start as anyone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub cluster_id: u64,
    pub node_id: u64,
}

/// An open data directory.
#[derive(Clone)]
pub struct Store {
    disk: Arc<dyn Disk>,
}

impl Store {
    /// Opens (creating if needed) the database under `dir`.
    pub fn open(dir: &Path) -> Result<Store> {
        Store::on(Arc::new(RocksDisk::open(dir)?))
    }

    /// A store in memory (see [`MemDisk`]): the same disk opens again after a crash.
    pub fn in_memory(disk: &MemDisk) -> Result<Store> {
        Store::on(Arc::new(disk.clone()))
    }

    fn on(disk: Arc<dyn Disk>) -> Result<Store> {
        let store = Store { disk };
        store.check_format()?;
        Ok(store)
    }

    /// Refuses a directory in a newer format; converts one in an older format (or without a
    /// mark: a new directory, or one from before the mark) to [`FORMAT`].
    fn check_format(&self) -> Result<()> {
        let found = self.format()?;
        if found > FORMAT {
            return Err(StorageError::NewerFormat {
                found,
                known: FORMAT,
            });
        }
        if found == FORMAT {
            return Ok(());
        }
        if found == 1 {
            return self.convert_from_1();
        }
        // Format 2 differs only in the log, which opening the directory has taken over.
        let mut batch = WriteBatch::default();
        self.put(&mut batch, CF_RAFT, KEY_FORMAT, &FORMAT.to_le_bytes());
        self.write(batch, true)
    }

    /// The format mark, 1 when there is none.
    fn format(&self) -> Result<u32> {
        match self.get(CF_RAFT, KEY_FORMAT, "format")? {
            None => Ok(1),
            Some(v) => match <[u8; 4]>::try_from(v.as_slice()) {
                Ok(bytes) => Ok(u32::from_le_bytes(bytes)),
                Err(_) => Err(StorageError::Corrupt(format!(
                    "format mark: {} bytes, not 4",
                    v.len()
                ))),
            },
        }
    }

    /// Rewrites the values format 1 kept in the legacy configuration in the one
    /// configuration, and marks the directory as in [`FORMAT`], in one synced write: a crash
    /// leaves every value in the format the mark says.
    fn convert_from_1(&self) -> Result<()> {
        let mut batch = WriteBatch::default();
        self.reencode::<Identity>(&mut batch, CF_RAFT, KEY_IDENTITY, "identity")?;
        self.reencode::<u64>(&mut batch, CF_RAFT, KEY_DIVERGED, "divergence mark")?;
        self.reencode::<Members>(&mut batch, CF_RAFT, raft_log::KEY_MEMBERS, "member book")?;
        self.reencode::<u64>(
            &mut batch,
            CF_STATE,
            state_store::KEY_APPLIED,
            "applied index",
        )?;
        self.put(&mut batch, CF_RAFT, KEY_FORMAT, &FORMAT.to_le_bytes());
        self.write(batch, true)
    }

    /// Stages the value under `key`, read in the legacy configuration, in the one
    /// configuration.
    fn reencode<T: Serialize + serde::de::DeserializeOwned>(
        &self,
        batch: &mut WriteBatch,
        cf: Cf,
        key: &[u8],
        what: &str,
    ) -> Result<()> {
        if let Some(v) = self.get(cf, key, what)? {
            let value: T = crate::encoding::legacy::decode(&v)
                .map_err(|e| StorageError::Corrupt(format!("{what} (format 1): {e}")))?;
            self.put(batch, cf, key, &encode(&value));
        }
        Ok(())
    }

    pub fn identity(&self) -> Result<Option<Identity>> {
        self.get_value(KEY_IDENTITY, "identity")
    }

    pub fn set_identity(&self, id: Identity) -> Result<()> {
        self.set_value(KEY_IDENTITY, &id)
    }

    /// The index at which this node found its state diverged from the leader's, once it has
    /// (see `server::integrity`); kept until the data directory is rebuilt.
    pub fn diverged(&self) -> Result<Option<u64>> {
        self.get_value(KEY_DIVERGED, "divergence mark")
    }

    pub fn set_diverged(&self, index: u64) -> Result<()> {
        self.set_value(KEY_DIVERGED, &index)
    }

    /// One value of the `raft` column family, decoded.
    fn get_value<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
        what: &str,
    ) -> Result<Option<T>> {
        self.get(CF_RAFT, key, what)?
            .map(|v| decode(&v, what))
            .transpose()
    }

    /// Writes one value of the `raft` column family, synced.
    fn set_value<T: Serialize>(&self, key: &[u8], value: &T) -> Result<()> {
        let mut batch = WriteBatch::default();
        self.put(&mut batch, CF_RAFT, key, &encode(value));
        self.write(batch, true)
    }

    /// Stages `value` under `key`, sealed with its checksum.
    fn put(&self, batch: &mut WriteBatch, cf: Cf, key: &[u8], value: &[u8]) {
        batch.put(cf, key, seal(key, value));
    }

    /// The value under `key`, its checksum verified.
    fn get(&self, cf: Cf, key: &[u8], what: &str) -> Result<Option<Vec<u8>>> {
        match self.disk.get(cf, key)? {
            None => Ok(None),
            Some(mut v) => {
                let len = unseal(key, &v, what)?.len();
                v.truncate(len);
                Ok(Some(v))
            }
        }
    }

    /// The Raft log, with its in-memory indexes loaded.
    pub fn raft_log(&self) -> Result<RaftLog> {
        RaftLog::load(self.clone())
    }

    pub fn state_store(&self) -> StateStore {
        StateStore::new(self.clone())
    }

    /// Commits a batch; with `sync` it (and every batch before it) is on disk when this
    /// returns.
    pub fn write(&self, batch: WriteBatch, sync: bool) -> Result<()> {
        self.disk.write(batch, sync)
    }
}

/// Raw access for tests that damage what is on the disk.
#[cfg(test)]
impl Store {
    /// Every record of the column family `cf` as stored: keys, and values with their seals.
    pub(crate) fn raw_records(&self, cf: Cf) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        self.disk
            .scan(cf, b"", &mut |k, v| {
                out.push((k.to_vec(), v.to_vec()));
                Ok(true)
            })
            .expect("reading the test store");
        out
    }

    /// Stores `value` under `key` as is, without sealing it.
    pub(crate) fn put_raw(&self, cf: Cf, key: &[u8], value: &[u8]) {
        let mut batch = WriteBatch::default();
        batch.put(cf, key, value.to_vec());
        self.write(batch, false).expect("writing the test store");
    }

    pub(crate) fn delete_raw(&self, cf: Cf, key: &[u8]) {
        let mut batch = WriteBatch::default();
        batch.delete(cf, key);
        self.write(batch, false).expect("writing the test store");
    }
}

fn checksum(key: &[u8], value: &[u8]) -> [u8; SEAL] {
    let mut h = crc32fast::Hasher::new();
    h.update(&(key.len() as u64).to_le_bytes());
    h.update(key);
    h.update(value);
    h.finalize().to_le_bytes()
}

/// `value` followed by the checksum of `key` and `value`.
pub(crate) fn seal(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + SEAL);
    out.extend_from_slice(value);
    out.extend_from_slice(&checksum(key, value));
    out
}

/// The value a [`seal`]ed record holds, if its checksum matches `key` and the value.
pub(crate) fn unseal<'a>(key: &[u8], sealed: &'a [u8], what: &str) -> Result<&'a [u8]> {
    let Some(split) = sealed.len().checked_sub(SEAL) else {
        return Err(StorageError::Corrupt(format!(
            "{what}: {} bytes, too short to hold its checksum",
            sealed.len()
        )));
    };
    let (value, sum) = sealed.split_at(split);
    if checksum(key, value) != sum {
        return Err(StorageError::Corrupt(format!(
            "{what}: checksum mismatch (key {})",
            String::from_utf8_lossy(key).escape_debug()
        )));
    }
    Ok(value)
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    crate::encoding::encode(v)
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    crate::encoding::decode(bytes).map_err(|e| StorageError::Corrupt(format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_reads_back_only_unchanged_and_under_its_key() {
        let sealed = seal(b"k", b"value");
        assert_eq!(unseal(b"k", &sealed, "t").unwrap(), b"value");
        assert!(unseal(b"other", &sealed, "t").is_err());
        for i in 0..sealed.len() {
            for bit in 0..8 {
                let mut flipped = sealed.clone();
                flipped[i] ^= 1 << bit;
                assert!(unseal(b"k", &flipped, "t").is_err(), "byte {i} bit {bit}");
            }
        }
        assert!(unseal(b"k", &sealed[..3], "t").is_err());
        assert_eq!(unseal(b"k", &seal(b"k", b""), "t").unwrap(), b"");
    }

    #[test]
    fn a_directory_records_its_format_and_a_newer_one_is_refused() {
        let dir = crate::testdir::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.format().unwrap(), FORMAT);
        let mut batch = WriteBatch::default();
        store.put(&mut batch, CF_RAFT, KEY_FORMAT, &(FORMAT + 1).to_le_bytes());
        store.write(batch, true).unwrap();
        drop(store);
        let refused = Store::open(dir.path()).err().expect("refused");
        assert!(
            matches!(refused, StorageError::NewerFormat { found, known }
                if found == FORMAT + 1 && known == FORMAT),
            "{refused}"
        );
        assert!(refused.to_string().contains("newer than this lockfs reads"));
    }

    /// A directory format 1 wrote (with the mark, or from before it) opens, its values read
    /// as they were, and is in [`FORMAT`] from then on.
    #[test]
    fn a_format_1_directory_is_converted_once_and_reads_the_same() {
        use crate::encoding::legacy;
        let identity = Identity {
            cluster_id: 0x1234_5678_9abc,
            node_id: 3,
        };
        let members: Members = [(
            3,
            MemberInfo {
                addr: "127.0.0.1:7003".into(),
                promote: true,
            },
        )]
        .into();
        for marked in [true, false] {
            let disk = MemDisk::default();
            let mut batch = WriteBatch::default();
            let raw = |batch: &mut WriteBatch, cf: Cf, key: &[u8], value: Vec<u8>| {
                batch.put(cf, key, seal(key, &value));
            };
            if marked {
                raw(&mut batch, CF_RAFT, KEY_FORMAT, legacy::encode(&1u32));
            }
            raw(&mut batch, CF_RAFT, KEY_IDENTITY, legacy::encode(&identity));
            raw(&mut batch, CF_RAFT, KEY_DIVERGED, legacy::encode(&77u64));
            let members_key = raft_log::KEY_MEMBERS;
            raw(&mut batch, CF_RAFT, members_key, legacy::encode(&members));
            let applied_key = state_store::KEY_APPLIED;
            raw(&mut batch, CF_STATE, applied_key, legacy::encode(&300u64));
            disk.write(batch, true).unwrap();
            for _ in 0..2 {
                let store = Store::in_memory(&disk).unwrap();
                assert_eq!(store.format().unwrap(), FORMAT);
                assert_eq!(store.identity().unwrap(), Some(identity));
                assert_eq!(store.diverged().unwrap(), Some(77));
                assert_eq!(store.raft_log().unwrap().members(), &members);
                assert_eq!(store.state_store().load().unwrap().0, 300);
                // Converted: the values are in the one configuration now.
                let applied = store.get(CF_STATE, applied_key, "a").unwrap().unwrap();
                assert_eq!(applied, crate::encoding::encode(&300u64));
            }
        }
    }

    #[test]
    fn a_record_damaged_on_disk_is_reported_corrupt() {
        let dir = crate::testdir::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).unwrap();
        store
            .set_identity(Identity {
                cluster_id: 7,
                node_id: 1,
            })
            .unwrap();
        assert_eq!(store.identity().unwrap().unwrap().cluster_id, 7);
        // Damage the stored bytes behind the store's back: flip one bit of the value.
        let mut raw = store.disk.get(CF_RAFT, KEY_IDENTITY).unwrap().unwrap();
        raw[0] ^= 1;
        store.put_raw(CF_RAFT, KEY_IDENTITY, &raw);
        let err = store.identity().unwrap_err();
        assert!(matches!(err, StorageError::Corrupt(_)), "{err}");
    }
}
