//! Where a store keeps its bytes: [`RocksDisk`] (RocksDB in a data directory, what a server
//! runs on) or [`MemDisk`] (maps in memory, for the deterministic node harness, where a node
//! must start, crash and restart in microseconds).
//!
//! Both give the same guarantees to the layers above:
//! - a [`WriteBatch`] lands whole or not at all, and a later read sees it;
//! - a batch written with `sync` is durable, and so is every batch written before it (every
//!   batch goes first into one write-ahead log, [`super::wal`], kept in write order);
//! - [`Disk::read_frozen`] reads a copy that no later write changes.
//!
//! What a crash loses differs by kind: a killed process loses nothing it wrote (the operating
//! system still has it), a machine that loses power loses what was not synced.
//! [`MemDisk::lose_power`] plays the second.
//!
//! Keys sort as bytes, in two column families ([`Cf`]); values are opaque here (sealing them
//! with a checksum is the store's business).

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rocksdb::{DBRecoveryMode, Direction, FlushOptions, IteratorMode, Options, WriteOptions, DB};

use super::wal::{self, Wal, SEGMENT_BYTES};

use super::{Result, StorageError};

/// A column family: a key space of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cf {
    /// The Raft log, its hard and conf state, the snapshot, the node's identity.
    Raft,
    /// The state machine's records and applied index.
    State,
}

impl Cf {
    pub const ALL: [Cf; 2] = [Cf::Raft, Cf::State];

    fn name(self) -> &'static str {
        match self {
            Cf::Raft => "raft",
            Cf::State => "state",
        }
    }

    fn slot(self) -> usize {
        match self {
            Cf::Raft => 0,
            Cf::State => 1,
        }
    }
}

impl fmt::Display for Cf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone)]
enum Op {
    Put(Cf, Vec<u8>, Vec<u8>),
    Delete(Cf, Vec<u8>),
    /// Every key in `from..to`.
    DeleteRange(Cf, Vec<u8>, Vec<u8>),
}

/// Changes that land together ([`Disk::write`]), in the order they were staged.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    ops: Vec<Op>,
}

impl WriteBatch {
    /// Stages `value` under `key` as given (the store seals values before they get here).
    pub(crate) fn put(&mut self, cf: Cf, key: &[u8], value: Vec<u8>) {
        self.ops.push(Op::Put(cf, key.to_vec(), value));
    }

    pub(crate) fn delete(&mut self, cf: Cf, key: &[u8]) {
        self.ops.push(Op::Delete(cf, key.to_vec()));
    }

    /// Stages the deletion of every key from `from` (included) to `to` (excluded).
    pub(crate) fn delete_range(&mut self, cf: Cf, from: &[u8], to: &[u8]) {
        self.ops
            .push(Op::DeleteRange(cf, from.to_vec(), to.to_vec()));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Called with each (key, value) of a scan in key order; false stops the scan.
pub type Visit<'a> = &'a mut dyn FnMut(&[u8], &[u8]) -> Result<bool>;

/// Reading: a disk as it is now, or a frozen copy of one.
pub trait Reader {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Visits the keys from `from` on, in order, until `visit` says stop; `visit` must not use
    /// the same disk (a disk in memory stays locked while it runs).
    fn scan(&self, cf: Cf, from: &[u8], visit: Visit<'_>) -> Result<()>;
}

/// Work on a frozen copy of a disk, on a thread of its own.
pub type FrozenWork = Box<dyn FnOnce(&dyn Reader) + Send>;

pub trait Disk: Reader + Send + Sync {
    /// Applies `batch` whole; with `sync`, it and every earlier batch are durable on return.
    fn write(&self, batch: WriteBatch, sync: bool) -> Result<()>;
    /// Runs `work` on a thread named `name` over a copy of the disk taken before this returns:
    /// no write made after that is in it, and the caller is not held up while `work` reads.
    fn read_frozen(&self, name: &str, work: FrozenWork) -> Result<()>;
}

/// RocksDB in a data directory, with its own write-ahead log off and [`Wal`] in its place.
pub struct RocksDisk {
    db: Arc<DB>,
    wal: Mutex<Wal>,
}

/// RocksDB's memtables, as the log sees them.
struct RocksTables<'a>(&'a DB);

impl wal::Tables for RocksTables<'_> {
    fn flush(&self, wait: bool) -> Result<()> {
        let mut opts = FlushOptions::default();
        opts.set_wait(wait);
        let cfs: Vec<_> = Cf::ALL.iter().map(|cf| handle(self.0, *cf)).collect();
        self.0.flush_cfs_opt(&cfs, &opts)?;
        Ok(())
    }

    fn flushed(&self) -> Result<bool> {
        for cf in Cf::ALL {
            let immutable = self
                .0
                .property_int_value_cf(handle(self.0, cf), "rocksdb.num-immutable-mem-table")?;
            if immutable.unwrap_or(0) > 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

fn no_wal() -> WriteOptions {
    let mut opts = WriteOptions::default();
    opts.disable_wal(true);
    opts
}

impl RocksDisk {
    /// Opens (creating if needed) the database under `dir`.
    pub fn open(dir: &Path) -> Result<RocksDisk> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::Io(dir.display().to_string(), e))?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Writes skip RocksDB's own write-ahead log. Only a directory written before lockfs
        // had its own log (storage format 2) has anything there: RocksDB replays it when it
        // opens, and `Wal::open` flushes it to the tables before anything else is written.
        opts.set_max_total_wal_size(64 * 1024 * 1024);
        opts.set_wal_recovery_mode(DBRecoveryMode::TolerateCorruptedTailRecords);
        opts.set_paranoid_checks(true);
        // A flush of both column families is one: the log reuses a segment only once both
        // hold what it had.
        opts.set_atomic_flush(true);
        let names = Cf::ALL.map(Cf::name);
        let db = DB::open_cf(&opts, dir.join("db"), names)?;
        let mut replay = |record: &[u8]| -> Result<()> {
            db.write_opt(rocksdb::WriteBatch::from_data(record), &no_wal())?;
            Ok(())
        };
        let wal = Wal::open(
            &dir.join("wal"),
            SEGMENT_BYTES,
            &mut replay,
            &RocksTables(&db),
        )?;
        Ok(RocksDisk {
            db: Arc::new(db),
            wal: Mutex::new(wal),
        })
    }
}

fn handle(db: &DB, cf: Cf) -> &rocksdb::ColumnFamily {
    db.cf_handle(cf.name())
        .expect("column families are created when the database is opened")
}

fn rocks_scan<D: rocksdb::DBAccess>(
    iter: rocksdb::DBIteratorWithThreadMode<'_, D>,
    visit: Visit<'_>,
) -> Result<()> {
    for item in iter {
        let (k, v) = item?;
        if !visit(&k, &v)? {
            break;
        }
    }
    Ok(())
}

impl Reader for RocksDisk {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(handle(&self.db, cf), key)?)
    }

    fn scan(&self, cf: Cf, from: &[u8], visit: Visit<'_>) -> Result<()> {
        let mode = IteratorMode::From(from, Direction::Forward);
        rocks_scan(self.db.iterator_cf(handle(&self.db, cf), mode), visit)
    }
}

/// A RocksDB snapshot, read through.
struct RocksFrozen<'a> {
    db: &'a DB,
    snapshot: rocksdb::Snapshot<'a>,
}

impl Reader for RocksFrozen<'_> {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.snapshot.get_cf(handle(self.db, cf), key)?)
    }

    fn scan(&self, cf: Cf, from: &[u8], visit: Visit<'_>) -> Result<()> {
        let mode = IteratorMode::From(from, Direction::Forward);
        rocks_scan(self.snapshot.iterator_cf(handle(self.db, cf), mode), visit)
    }
}

impl Disk for RocksDisk {
    fn write(&self, batch: WriteBatch, sync: bool) -> Result<()> {
        let mut rocks = rocksdb::WriteBatch::default();
        for op in batch.ops {
            match op {
                Op::Put(cf, k, v) => rocks.put_cf(handle(&self.db, cf), k, v),
                Op::Delete(cf, k) => rocks.delete_cf(handle(&self.db, cf), k),
                Op::DeleteRange(cf, from, to) => {
                    rocks.delete_range_cf(handle(&self.db, cf), from, to)
                }
            }
        }
        let mut wal = self.wal.lock().expect("poisoned");
        if !rocks.is_empty() {
            wal.append(rocks.data(), &RocksTables(&self.db))?;
        }
        if sync {
            wal.sync()?;
        }
        self.db.write_opt(rocks, &no_wal())?;
        Ok(())
    }

    fn read_frozen(&self, name: &str, work: FrozenWork) -> Result<()> {
        let db = self.db.clone();
        let (taken, wait) = std::sync::mpsc::sync_channel::<()>(1);
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let snapshot = db.snapshot();
                let _ = taken.send(());
                work(&RocksFrozen { db: &db, snapshot });
            })
            .map_err(|e| StorageError::Io(format!("starting the thread {name}"), e))?;
        wait.recv().map_err(|_| {
            StorageError::Corrupt(format!("the thread {name} ended before taking its copy"))
        })
    }
}

type Table = BTreeMap<Vec<u8>, Vec<u8>>;
type Tables = [Table; 2];

fn apply(tables: &mut Tables, batch: &WriteBatch) {
    for op in &batch.ops {
        match op {
            Op::Put(cf, k, v) => {
                tables[cf.slot()].insert(k.clone(), v.clone());
            }
            Op::Delete(cf, k) => {
                tables[cf.slot()].remove(k);
            }
            Op::DeleteRange(cf, from, to) => {
                let table = &mut tables[cf.slot()];
                let doomed: Vec<Vec<u8>> = table
                    .range::<[u8], _>((Bound::Included(&from[..]), Bound::Excluded(&to[..])))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in doomed {
                    table.remove(&k);
                }
            }
        }
    }
}

fn table_get(tables: &Tables, cf: Cf, key: &[u8]) -> Option<Vec<u8>> {
    tables[cf.slot()].get(key).cloned()
}

fn table_scan(tables: &Tables, cf: Cf, from: &[u8], visit: Visit<'_>) -> Result<()> {
    for (k, v) in tables[cf.slot()].range::<[u8], _>((Bound::Included(from), Bound::Unbounded)) {
        if !visit(k, v)? {
            break;
        }
    }
    Ok(())
}

#[derive(Default)]
struct MemState {
    /// Everything written: what reads see (the operating system's view).
    current: Tables,
    /// What survives a power loss: everything up to the last synced write.
    durable: Tables,
    /// Written since the last synced write, in order.
    unsynced: Vec<WriteBatch>,
}

/// A disk in memory. Clones share it: the harness keeps one per node, and a node that crashes
/// and restarts opens the same one again.
#[derive(Clone, Default)]
pub struct MemDisk {
    state: Arc<Mutex<MemState>>,
}

impl MemDisk {
    fn lock(&self) -> MutexGuard<'_, MemState> {
        // A panic while the lock was held left no half-applied batch (batches apply in one
        // call that does not panic on data), so the state is still whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The machine loses power: what was written since the last synced write is gone.
    pub fn lose_power(&self) {
        let mut s = self.lock();
        s.current = s.durable.clone();
        s.unsynced.clear();
    }
}

impl Reader for MemDisk {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(table_get(&self.lock().current, cf, key))
    }

    /// `visit` runs with the disk locked (it must not use this disk), so a scan that stops
    /// early reads no further than it visited.
    fn scan(&self, cf: Cf, from: &[u8], visit: Visit<'_>) -> Result<()> {
        table_scan(&self.lock().current, cf, from, visit)
    }
}

struct MemFrozen(Tables);

impl Reader for MemFrozen {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(table_get(&self.0, cf, key))
    }

    fn scan(&self, cf: Cf, from: &[u8], visit: Visit<'_>) -> Result<()> {
        table_scan(&self.0, cf, from, visit)
    }
}

impl Disk for MemDisk {
    fn write(&self, batch: WriteBatch, sync: bool) -> Result<()> {
        let mut s = self.lock();
        apply(&mut s.current, &batch);
        s.unsynced.push(batch);
        if sync {
            let s = &mut *s;
            for batch in s.unsynced.drain(..) {
                apply(&mut s.durable, &batch);
            }
        }
        Ok(())
    }

    fn read_frozen(&self, name: &str, work: FrozenWork) -> Result<()> {
        let copy = MemFrozen(self.lock().current.clone());
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || work(&copy))
            .map_err(|e| StorageError::Io(format!("starting the thread {name}"), e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_left_in_rocksdbs_own_log_by_an_older_lockfs_are_kept() {
        // An older lockfs wrote through RocksDB's write-ahead log; a kill -9 left the last
        // writes there only, not yet in any table.
        let dir = crate::testdir::tempdir().unwrap();
        {
            let mut opts = Options::default();
            opts.create_if_missing(true);
            opts.create_missing_column_families(true);
            let db = DB::open_cf(&opts, dir.path().join("db"), Cf::ALL.map(Cf::name)).unwrap();
            let mut sync = WriteOptions::default();
            sync.set_sync(true);
            let raft = handle(&db, Cf::Raft);
            db.put_cf_opt(raft, b"k", b"old", &sync).unwrap();
            db.put_cf_opt(handle(&db, Cf::State), b"s", b"1", &sync)
                .unwrap();
        }
        // RocksDB flushes at close only what skipped its log, so the writes are in the log.
        assert_eq!(
            filled_logs(dir.path()),
            1,
            "the older lockfs's writes are not in its log"
        );
        for _ in 0..2 {
            let disk = RocksDisk::open(dir.path()).unwrap();
            assert_eq!(all(&disk, Cf::Raft), kv(&[("k", "old")]));
            assert_eq!(all(&disk, Cf::State), kv(&[("s", "1")]));
        }
        // Opening moved them into the tables: they no longer depend on RocksDB's log.
        assert_eq!(
            filled_logs(dir.path()),
            0,
            "RocksDB's own log still holds writes"
        );
    }

    /// How many of RocksDB's own write-ahead log files under `dir` hold anything.
    fn filled_logs(dir: &Path) -> usize {
        std::fs::read_dir(dir.join("db"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .filter(|p| std::fs::metadata(p).unwrap().len() > 0)
            .count()
    }

    fn all(disk: &dyn Reader, cf: Cf) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        disk.scan(cf, b"", &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            Ok(true)
        })
        .unwrap();
        out
    }

    fn kv(pairs: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    /// The same writes and reads give the same answers on both disks.
    fn exercise(disk: &dyn Disk) {
        let mut b = WriteBatch::default();
        for k in ["a", "b", "c", "d"] {
            b.put(Cf::Raft, k.as_bytes(), k.to_uppercase().into_bytes());
        }
        b.put(Cf::State, b"a", b"state".to_vec());
        disk.write(b, true).unwrap();
        let mut b = WriteBatch::default();
        b.delete_range(Cf::Raft, b"b", b"d");
        b.delete(Cf::State, b"a");
        b.put(Cf::Raft, b"e", b"E".to_vec());
        disk.write(b, false).unwrap();
        assert_eq!(
            all(disk, Cf::Raft),
            kv(&[("a", "A"), ("d", "D"), ("e", "E")])
        );
        assert_eq!(all(disk, Cf::State), kv(&[]));
        assert_eq!(disk.get(Cf::Raft, b"d").unwrap(), Some(b"D".to_vec()));
        assert_eq!(disk.get(Cf::Raft, b"b").unwrap(), None);
        let mut seen = Vec::new();
        disk.scan(Cf::Raft, b"b", &mut |k, _| {
            seen.push(k.to_vec());
            Ok(seen.is_empty())
        })
        .unwrap();
        assert_eq!(seen, vec![b"d".to_vec()], "from b on, stopped after one");

        let (tx, rx) = std::sync::mpsc::channel();
        disk.read_frozen(
            "test-frozen",
            Box::new(move |r| {
                let _ = tx.send((all(r, Cf::Raft), r.get(Cf::Raft, b"z").unwrap()));
            }),
        )
        .unwrap();
        let mut b = WriteBatch::default();
        b.put(Cf::Raft, b"z", b"late".to_vec());
        disk.write(b, false).unwrap();
        let (frozen, z) = rx.recv().unwrap();
        assert_eq!(frozen, kv(&[("a", "A"), ("d", "D"), ("e", "E")]));
        assert_eq!(
            z, None,
            "a write after read_frozen returned is not in its copy"
        );
    }

    #[test]
    fn rocks_and_memory_disks_answer_alike() {
        let dir = crate::testdir::tempdir().expect("temp dir");
        exercise(&RocksDisk::open(dir.path()).unwrap());
        exercise(&MemDisk::default());
    }

    #[test]
    fn a_power_loss_keeps_exactly_what_a_synced_write_made_durable() {
        let disk = MemDisk::default();
        let mut b = WriteBatch::default();
        b.put(
            Cf::Raft,
            b"1",
            b"unsynced, then synced by the next".to_vec(),
        );
        disk.write(b, false).unwrap();
        let mut b = WriteBatch::default();
        b.put(Cf::Raft, b"2", b"synced".to_vec());
        disk.write(b, true).unwrap();
        let mut b = WriteBatch::default();
        b.put(Cf::Raft, b"3", b"lost".to_vec());
        b.delete(Cf::Raft, b"1");
        disk.write(b, false).unwrap();
        assert_eq!(all(&disk, Cf::Raft).len(), 2);
        disk.lose_power();
        let keys: Vec<Vec<u8>> = all(&disk, Cf::Raft).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec![b"1".to_vec(), b"2".to_vec()]);
        // A clone is the same disk.
        let mut b = WriteBatch::default();
        b.put(Cf::State, b"x", b"y".to_vec());
        disk.clone().write(b, true).unwrap();
        assert_eq!(disk.get(Cf::State, b"x").unwrap(), Some(b"y".to_vec()));
    }
}
