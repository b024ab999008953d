//! Durable storage of one node, in one RocksDB database.
//!
//! Two column families:
//! - `raft`: the Raft log (`e` + index), hard state, conf state, the latest state-machine
//!   snapshot, and the node's identity (cluster id, node id). [`RaftLog`] serves it to raft-rs
//!   through the `raft::Storage` trait.
//! - `state`: the state machine's records and its applied index. [`StateStore`] writes each batch
//!   of applied changes together with the new applied index in one RocksDB write batch, so a crash
//!   can neither apply a command twice nor skip one.
//!
//! Every change goes through a [`WriteBatch`] that the caller commits with [`Store::write`]; the
//! node commits log appends with `sync` (acknowledged data must be on disk) and applied state
//! without it (it can always be replayed from the synced log, and RocksDB's single write-ahead log
//! keeps the order of writes, so a synced log write also makes every earlier write durable).

mod error;
mod raft_log;
mod state_store;

use std::path::Path;
use std::sync::Arc;

use rocksdb::{Options, WriteOptions, DB};
use serde::{Deserialize, Serialize};

pub use error::StorageError;
pub use raft_log::{MemberInfo, Members, RaftLog};
pub use rocksdb::WriteBatch;
pub use state_store::StateStore;

pub type Result<T> = std::result::Result<T, StorageError>;

const CF_RAFT: &str = "raft";
const CF_STATE: &str = "state";
const KEY_IDENTITY: &[u8] = b"identity";

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
    db: Arc<DB>,
}

impl Store {
    /// Opens (creating if needed) the database under `dir`.
    pub fn open(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::Io(dir.display().to_string(), e))?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // The log is trimmed by snapshots; keep the write-ahead log from growing without bound
        // when the memtables are not full yet.
        opts.set_max_total_wal_size(64 * 1024 * 1024);
        let db = DB::open_cf(&opts, dir.join("db"), [CF_RAFT, CF_STATE])?;
        Ok(Store { db: Arc::new(db) })
    }

    pub fn identity(&self) -> Result<Option<Identity>> {
        match self.db.get_cf(self.cf(CF_RAFT), KEY_IDENTITY)? {
            None => Ok(None),
            Some(v) => Ok(Some(decode(&v, "identity")?)),
        }
    }

    pub fn set_identity(&self, id: Identity) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_RAFT), KEY_IDENTITY, encode(&id));
        self.write(batch, true)
    }

    /// The Raft log, with its in-memory indexes loaded.
    pub fn raft_log(&self) -> Result<RaftLog> {
        RaftLog::load(self.clone())
    }

    pub fn state_store(&self) -> StateStore {
        StateStore::new(self.clone())
    }

    /// Commits a batch; with `sync` it is on disk when this returns.
    pub fn write(&self, batch: WriteBatch, sync: bool) -> Result<()> {
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        self.db.write_opt(batch, &opts)?;
        Ok(())
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column families are created when the database is opened")
    }
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    bincode::serialize(v).expect("serializing plain data cannot fail")
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    bincode::deserialize(bytes).map_err(|e| StorageError::Corrupt(format!("{what}: {e}")))
}
