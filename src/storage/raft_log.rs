//! The Raft log in RocksDB, served to raft-rs through `raft::Storage`.
//!
//! Entries live under `e` + big-endian index, so they sort in log order. The hard state, conf
//! state and the latest snapshot's metadata have one key each. The log before the snapshot's
//! index is deleted ("compacted"); a follower that needs it receives a snapshot instead. That
//! snapshot is made when it is needed, of the state as applied then: its metadata comes from
//! here, its records are streamed from a RocksDB snapshot by a thread of their own
//! ([`StateStore::stream`](super::StateStore::stream)) to the sink that
//! [`RaftLog::set_snapshot_opener`] named (the transport, which sends them in chunks).
//!
//! raft-rs asks for terms very often (every append it sends or receives), so the terms of the
//! entries in the log are kept in memory. It reads every entry back once it is committed, to
//! apply it, and a leader reads entries again for a follower that fell behind: the newest
//! entries (up to [`RECENT_BYTES`]) are kept in memory too, and older ones are read from
//! RocksDB.
//!
//! Next to the conf state (which raft-rs knows: the ids of voters and learners) lies the member
//! book (which it does not: each member's address and whether a learner should be promoted).
//! Both change only when a conf change is applied or a snapshot installed, and are staged in
//! the same batch, so they never disagree on disk.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState};
use serde::{Deserialize, Serialize};

use super::state_store::RecordSink;
use super::{Result, StorageError, Store, WriteBatch, CF_RAFT};

/// Records of a snapshot stream are handed over in batches of about this many bytes.
const SNAPSHOT_BATCH: usize = 1024 * 1024;

/// The newest entries kept in memory, counted as their encoded size plus their size in memory
/// (see [`in_memory`]). Applying follows the log closely, so this only needs to cover what is
/// appended but not yet applied, and what a follower a little behind still needs.
pub const RECENT_BYTES: u64 = 4 * 1024 * 1024;

/// What an entry of `encoded` bytes costs in memory, about: its data and its struct.
fn in_memory(encoded: u64) -> u64 {
    encoded + std::mem::size_of::<Entry>() as u64
}

/// Called when raft-rs wants a snapshot for `to` of the state at `index` with `members`: gives
/// the sink for its records and the data its message carries.
pub type SnapshotOpener =
    std::sync::Arc<dyn Fn(u64, u64, &Members) -> (RecordSink, Vec<u8>) + Send + Sync>;

/// What the cluster knows of one member beyond its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Where peers and clients reach it.
    pub addr: String,
    /// A learner that the leader promotes to voter once it has caught up (a learner added
    /// without it stays a learner: a read replica).
    pub promote: bool,
}

/// Every member by id.
pub type Members = BTreeMap<u64, MemberInfo>;

const KEY_HARD_STATE: &[u8] = b"hs";
const KEY_CONF_STATE: &[u8] = b"cs";
const KEY_SNAPSHOT: &[u8] = b"snap";
pub(super) const KEY_MEMBERS: &[u8] = b"members";
const ENTRY_PREFIX: u8 = b'e';

fn entry_key(index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = ENTRY_PREFIX;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

fn decode_pb<M: protobuf::Message>(bytes: Bytes, what: &str) -> Result<M> {
    crate::proto::parse::<M>(&bytes).map_err(|e| StorageError::Corrupt(format!("{what}: {e}")))
}

fn encode_pb<M: protobuf::Message>(m: &M) -> Vec<u8> {
    m.write_to_bytes()
        .expect("encoding a raft message into a vector cannot fail")
}

pub struct RaftLog {
    store: Store,
    hard_state: HardState,
    conf_state: ConfState,
    members: Members,
    /// The latest snapshot: the log before `snapshot.index + 1` is gone.
    snapshot: Snapshot,
    /// Whether `hard_state` has a commit index newer than the one last staged.
    commit_unstaged: bool,
    /// Terms of the entries `first_index ..= last_index`.
    terms: VecDeque<u64>,
    /// The newest entries with their encoded sizes: always a suffix of the log (it ends at
    /// `last_index`), holding at least the newest entry appended since the log was opened, and
    /// no more than [`RECENT_BYTES`] unless that one entry alone is bigger.
    recent: VecDeque<(Entry, u64)>,
    /// What `recent` holds, counted as [`RECENT_BYTES`] says.
    recent_bytes: u64,
    /// [`RECENT_BYTES`], smaller in tests.
    recent_limit: u64,
    /// The state machine's applied index as stored: what a snapshot made now contains.
    applied: u64,
    opener: Option<SnapshotOpener>,
}

impl RaftLog {
    pub(super) fn load(store: Store) -> Result<RaftLog> {
        let get = |key: &[u8]| store.get(CF_RAFT, key, "raft record");
        let hard_state = match get(KEY_HARD_STATE)? {
            Some(v) => decode_pb(v.into(), "hard state")?,
            None => HardState::default(),
        };
        let conf_state = match get(KEY_CONF_STATE)? {
            Some(v) => decode_pb(v.into(), "conf state")?,
            None => ConfState::default(),
        };
        let members: Members = match get(KEY_MEMBERS)? {
            Some(v) => super::decode(&v, "member book")?,
            None => Members::new(),
        };
        let snapshot: Snapshot = match get(KEY_SNAPSHOT)? {
            Some(v) => decode_pb(v.into(), "snapshot")?,
            None => Snapshot::default(),
        };
        let mut terms = VecDeque::new();
        let first = snapshot.get_metadata().index + 1;
        let mut expected = first;
        store.disk.scan(CF_RAFT, &entry_key(first), &mut |k, v| {
            if k.first() != Some(&ENTRY_PREFIX) {
                return Ok(false);
            }
            let value = Bytes::copy_from_slice(super::unseal(k, v, "log entry")?);
            let entry: Entry = decode_pb(value, "log entry")?;
            if entry.index != expected {
                return Err(StorageError::Corrupt(format!(
                    "log entry {} found where {} was expected",
                    entry.index, expected
                )));
            }
            terms.push_back(entry.term);
            expected += 1;
            Ok(true)
        })?;
        let last = first - 1 + terms.len() as u64;
        if hard_state.commit > last {
            // raft-rs would panic on it; the entries it says were committed are not here.
            return Err(StorageError::Corrupt(format!(
                "hard state: commit index {} is past the last log entry {last}",
                hard_state.commit
            )));
        }
        Ok(RaftLog {
            store,
            hard_state,
            conf_state,
            members,
            snapshot,
            commit_unstaged: false,
            terms,
            recent: VecDeque::new(),
            recent_bytes: 0,
            recent_limit: RECENT_BYTES,
            applied: 0,
            opener: None,
        })
    }

    /// Says how snapshots for peers are sent (see the module docs).
    pub fn set_snapshot_opener(&mut self, opener: SnapshotOpener) {
        self.opener = Some(opener);
    }

    /// Tells the log the applied index now stored with the state, once it is written.
    pub fn set_applied(&mut self, applied: u64) {
        self.applied = applied;
    }

    /// Has this log ever been initialized (a conf state, an entry, or a snapshot)?
    pub fn is_initialized(&self) -> bool {
        !self.conf_state.voters.is_empty()
            || !self.conf_state.learners.is_empty()
            || self.last_index() > 0
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    pub fn members(&self) -> &Members {
        &self.members
    }

    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    pub fn first_index(&self) -> u64 {
        self.snapshot_index() + 1
    }

    pub fn last_index(&self) -> u64 {
        self.snapshot_index() + self.terms.len() as u64
    }

    /// Adds `entries` to `batch`, replacing any conflicting suffix of the log.
    pub fn stage_append(&mut self, batch: &mut WriteBatch, entries: &[Entry]) -> Result<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index < self.first_index() || first.index > self.last_index() + 1 {
            return Err(StorageError::Corrupt(format!(
                "append at {} to a log holding {}..={}",
                first.index,
                self.first_index(),
                self.last_index()
            )));
        }
        if first.index <= self.last_index() {
            let end = entry_key(self.last_index() + 1);
            batch.delete_range(CF_RAFT, &entry_key(first.index), &end);
            self.terms
                .truncate((first.index - self.first_index()) as usize);
            self.forget_recent_from(first.index);
        }
        for e in entries {
            let encoded = encode_pb(e);
            let size = encoded.len() as u64;
            self.store
                .put(batch, CF_RAFT, &entry_key(e.index), &encoded);
            self.terms.push_back(e.term);
            self.recent.push_back((e.clone(), size));
            self.recent_bytes += in_memory(size);
        }
        while self.recent_bytes > self.recent_limit && self.recent.len() > 1 {
            self.forget_oldest_recent();
        }
        if self.commit_unstaged {
            self.stage_hard_state(batch, self.hard_state.clone());
        }
        Ok(())
    }

    /// Drops the entries at `index` and after from memory (a new leader replaced them).
    fn forget_recent_from(&mut self, index: u64) {
        while self.recent.back().is_some_and(|(e, _)| e.index >= index) {
            let (_, size) = self.recent.pop_back().expect("checked above");
            self.recent_bytes -= in_memory(size);
        }
    }

    fn forget_oldest_recent(&mut self) {
        if let Some((_, size)) = self.recent.pop_front() {
            self.recent_bytes -= in_memory(size);
        }
    }

    /// The entries `low..high` from memory, if memory has `low` (and so all after it).
    fn recent_entries(&self, low: u64, high: u64, max_size: Option<u64>) -> Option<Vec<Entry>> {
        let start = self.recent.front()?.0.index;
        let skip = usize::try_from(low.checked_sub(start)?).ok()?;
        if skip >= self.recent.len() {
            return None;
        }
        let mut out = Vec::with_capacity((high - low).min(1024) as usize);
        let mut size = 0u64;
        for (e, bytes) in self.recent.range(skip..) {
            if e.index >= high {
                break;
            }
            size += bytes;
            // raft-rs wants at least one entry even when it alone exceeds the limit.
            if !out.is_empty() && max_size.is_some_and(|m| size > m) {
                break;
            }
            out.push(e.clone());
        }
        Some(out)
    }

    pub fn stage_hard_state(&mut self, batch: &mut WriteBatch, hs: HardState) {
        self.store
            .put(batch, CF_RAFT, KEY_HARD_STATE, &encode_pb(&hs));
        self.hard_state = hs;
        self.commit_unstaged = false;
    }

    /// Takes raft-rs's new hard state. A new term or vote is staged in `batch` at once (it must
    /// be on disk before any message that depends on it leaves), and true is returned. A new
    /// commit index alone is only remembered, and staged with the next entries
    /// ([`RaftLog::stage_append`]): that saves a write per commit. The stored commit index
    /// may so lag behind; recovery catches it up to the applied index, and Raft needs no
    /// more (raft-rs does not ask for it to be synced either: a restarted member learns later
    /// commits from the leader).
    pub fn take_hard_state(&mut self, batch: &mut WriteBatch, hs: HardState) -> bool {
        if hs.term == self.hard_state.term && hs.vote == self.hard_state.vote {
            self.note_commit(hs.commit);
            return false;
        }
        self.stage_hard_state(batch, hs);
        true
    }

    /// Remembers a new commit index, to be staged with the next entries (see
    /// [`RaftLog::take_hard_state`]).
    pub fn note_commit(&mut self, commit: u64) {
        self.commit_unstaged |= commit != self.hard_state.commit;
        self.hard_state.commit = commit;
    }

    pub fn stage_commit(&mut self, batch: &mut WriteBatch, commit: u64) {
        let mut hs = self.hard_state.clone();
        hs.commit = commit;
        self.stage_hard_state(batch, hs);
    }

    pub fn stage_conf_state(&mut self, batch: &mut WriteBatch, cs: ConfState) {
        self.store
            .put(batch, CF_RAFT, KEY_CONF_STATE, &encode_pb(&cs));
        self.conf_state = cs;
    }

    pub fn stage_members(&mut self, batch: &mut WriteBatch, members: Members) {
        self.store
            .put(batch, CF_RAFT, KEY_MEMBERS, &super::encode(&members));
        self.members = members;
    }

    /// Installs a snapshot received from the leader: the whole log is replaced by it.
    pub fn stage_install_snapshot(&mut self, batch: &mut WriteBatch, snapshot: Snapshot) {
        let meta = snapshot.get_metadata();
        let mut hs = self.hard_state.clone();
        hs.term = hs.term.max(meta.term);
        hs.commit = meta.index;
        self.stage_hard_state(batch, hs);
        self.stage_conf_state(batch, meta.get_conf_state().clone());
        self.terms.clear();
        self.recent.clear();
        self.recent_bytes = 0;
        batch.delete_range(CF_RAFT, &entry_key(0), &entry_key(u64::MAX));
        self.store
            .put(batch, CF_RAFT, KEY_SNAPSHOT, &encode_pb(&snapshot));
        self.snapshot = snapshot;
    }

    /// Records a snapshot of our own state machine and drops the log it covers.
    pub fn stage_compact(&mut self, batch: &mut WriteBatch, snapshot: Snapshot) -> Result<()> {
        let index = snapshot.get_metadata().index;
        if index < self.snapshot_index() || index > self.last_index() {
            return Err(StorageError::Corrupt(format!(
                "snapshot at {} outside the log {}..={}",
                index,
                self.first_index(),
                self.last_index()
            )));
        }
        batch.delete_range(CF_RAFT, &entry_key(0), &entry_key(index + 1));
        self.terms.drain(..(index - self.snapshot_index()) as usize);
        while self.recent.front().is_some_and(|(e, _)| e.index <= index) {
            self.forget_oldest_recent();
        }
        self.store
            .put(batch, CF_RAFT, KEY_SNAPSHOT, &encode_pb(&snapshot));
        self.snapshot = snapshot;
        Ok(())
    }

    fn read_entries(&self, low: u64, high: u64, max_size: Option<u64>) -> Result<Vec<Entry>> {
        if let Some(entries) = self.recent_entries(low, high, max_size) {
            return Ok(entries);
        }
        let mut out = Vec::with_capacity((high - low).min(1024) as usize);
        let mut size = 0u64;
        self.store
            .disk
            .scan(CF_RAFT, &entry_key(low), &mut |k, v| {
                if k.first() != Some(&ENTRY_PREFIX) {
                    return Ok(false);
                }
                let value = Bytes::copy_from_slice(super::unseal(k, v, "log entry")?);
                let len = value.len() as u64;
                let entry: Entry = decode_pb(value, "log entry")?;
                if entry.index >= high {
                    return Ok(false);
                }
                // The entry as encoded, as it is counted in memory and in raft's messages.
                size += len;
                // raft-rs wants at least one entry even when it alone exceeds the limit.
                if !out.is_empty() && max_size.is_some_and(|m| size > m) {
                    return Ok(false);
                }
                out.push(entry);
                Ok(true)
            })?;
        if out.first().map(|e| e.index) != Some(low) {
            return Err(StorageError::Corrupt(format!(
                "log entry {low} missing from the store"
            )));
        }
        Ok(out)
    }
}

fn store_error(e: StorageError) -> raft::Error {
    raft::Error::Store(raft::StorageError::Other(Box::new(e)))
}

impl raft::Storage for RaftLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first_index() {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        if high > self.last_index() + 1 {
            return Err(raft::Error::Store(raft::StorageError::Unavailable));
        }
        if low >= high {
            return Ok(Vec::new());
        }
        self.read_entries(low, high, max_size.into())
            .map_err(store_error)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let snap = self.snapshot.get_metadata();
        if idx == snap.index {
            return Ok(snap.term);
        }
        if idx < self.first_index() {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        if idx > self.last_index() {
            return Err(raft::Error::Store(raft::StorageError::Unavailable));
        }
        Ok(self.terms[(idx - self.first_index()) as usize])
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(RaftLog::first_index(self))
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(RaftLog::last_index(self))
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        // Made of the state as applied now, which covers everything the log no longer has;
        // before the first compaction a follower needs no snapshot, and raft-rs retries later.
        let unavailable = || raft::Error::Store(raft::StorageError::SnapshotTemporarilyUnavailable);
        let Some(open) = &self.opener else {
            return Err(unavailable());
        };
        if self.snapshot_index() == 0
            || self.applied < request_index
            || self.applied < self.snapshot_index()
        {
            return Err(unavailable());
        }
        let (sink, data) = open(to, self.applied, &self.members);
        let index = self
            .store
            .state_store()
            .stream(SNAPSHOT_BATCH, sink)
            .map_err(store_error)?;
        if index != self.applied {
            return Err(store_error(StorageError::Corrupt(format!(
                "the stored state is at index {index}, the log says {}",
                self.applied
            ))));
        }
        let mut snapshot = Snapshot::default();
        let meta = snapshot.mut_metadata();
        meta.index = index;
        meta.term = self.term(index)?;
        meta.set_conf_state(self.conf_state.clone());
        snapshot.data = data.into();
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: vec![index as u8; 10].into(),
            ..Default::default()
        }
    }

    fn append(log: &mut RaftLog, entries: &[Entry]) {
        let mut batch = WriteBatch::default();
        log.stage_append(&mut batch, entries).unwrap();
        log.store.write(batch, true).unwrap();
    }

    #[test]
    fn append_overwrite_compact_and_reload() {
        let dir = crate::testdir::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut log = store.raft_log().unwrap();
        assert!(!log.is_initialized());
        append(&mut log, &[entry(1, 1), entry(2, 1), entry(3, 1)]);
        // A new leader overwrites the tail from index 2.
        append(&mut log, &[entry(2, 2), entry(3, 2), entry(4, 2)]);
        assert_eq!(Storage::last_index(&log).unwrap(), 4);
        assert_eq!(log.term(2).unwrap(), 2);
        let got = log
            .entries(1, 5, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(
            got.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(),
            vec![(1, 1), (2, 2), (3, 2), (4, 2)]
        );
        // A size limit still yields at least one entry.
        let got = log
            .entries(2, 5, 1, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(got.len(), 1);
        // A gap is refused.
        let mut batch = WriteBatch::default();
        assert!(log.stage_append(&mut batch, &[entry(9, 2)]).is_err());

        let mut snap = Snapshot::default();
        snap.mut_metadata().index = 3;
        snap.mut_metadata().term = 2;
        snap.data = b"state".to_vec().into();
        let mut batch = WriteBatch::default();
        log.stage_compact(&mut batch, snap).unwrap();
        store.write(batch, true).unwrap();
        assert_eq!(Storage::first_index(&log).unwrap(), 4);
        assert_eq!(log.term(3).unwrap(), 2);
        assert!(log.term(2).is_err());
        assert!(log
            .entries(2, 4, None, GetEntriesContext::empty(false))
            .is_err());
        // A snapshot for a peer is made of the state as applied, and streamed.
        assert!(log.snapshot(0, 2).is_err(), "no opener yet");
        let mut batch = WriteBatch::default();
        let records = vec![
            (b"n/1".to_vec(), b"one".to_vec()),
            (b"n/2".to_vec(), b"two".to_vec()),
        ];
        store.state_store().stage_changes(
            &mut batch,
            records.iter().cloned().map(|(k, v)| (k, Some(v))).collect(),
            4,
        );
        store.write(batch, true).unwrap();
        log.set_applied(4);
        let (tx, rx) = std::sync::mpsc::channel();
        log.set_snapshot_opener(std::sync::Arc::new(move |to, index, _: &Members| {
            assert_eq!((to, index), (2, 4));
            let tx = tx.clone();
            let sink: RecordSink = Box::new(move |batch| tx.send(batch).is_ok());
            (sink, b"meta".to_vec())
        }));
        let snap = log.snapshot(0, 2).unwrap();
        assert_eq!(snap.data.as_ref(), b"meta");
        assert_eq!(
            (snap.get_metadata().index, snap.get_metadata().term),
            (4, 2)
        );
        let mut streamed = Vec::new();
        while let Some(batch) = rx.recv().unwrap() {
            streamed.extend(batch);
        }
        assert_eq!(streamed, records);
        assert!(log.snapshot(5, 2).is_err(), "not applied that far");

        drop(log);
        let log = store.raft_log().unwrap();
        assert_eq!(Storage::first_index(&log).unwrap(), 4);
        assert_eq!(Storage::last_index(&log).unwrap(), 4);
        assert_eq!(log.term(4).unwrap(), 2);
    }

    /// The entries kept in memory read exactly as the ones RocksDB holds, through overwrites,
    /// compaction, size limits and entries that memory no longer holds.
    #[test]
    fn entries_in_memory_read_as_the_stored_log() {
        let dir = crate::testdir::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut log = store.raft_log().unwrap();
        log.recent_limit = 8 * in_memory(encode_pb(&entry(1, 1)).len() as u64);
        append(&mut log, &(1..=10).map(|i| entry(i, 1)).collect::<Vec<_>>());
        append(
            &mut log,
            &(11..=20).map(|i| entry(i, 1)).collect::<Vec<_>>(),
        );
        // A new leader replaces the tail.
        append(&mut log, &[entry(17, 2), entry(18, 2)]);
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = 3;
        snap.mut_metadata().term = 1;
        let mut batch = WriteBatch::default();
        log.stage_compact(&mut batch, snap).unwrap();
        store.write(batch, true).unwrap();
        // It held 13..=20, the newest 8; the new leader's entries replaced 17..=20.
        assert_eq!(log.recent.front().map(|(e, _)| e.index), Some(13));
        assert_eq!(
            log.recent.back().map(|(e, _)| (e.index, e.term)),
            Some((18, 2))
        );

        // A log opened now reads every entry from RocksDB.
        let stored = store.raft_log().unwrap();
        assert!(stored.recent.is_empty());
        let ctx = || GetEntriesContext::empty(false);
        let one = encode_pb(&entry(1, 1)).len() as u64;
        for low in 4..=18 {
            for high in low + 1..=19 {
                for max in [None, Some(1), Some(3 * one + one / 2)] {
                    let got = log.entries(low, high, max, ctx()).unwrap();
                    let want = stored.entries(low, high, max, ctx()).unwrap();
                    assert_eq!(got, want, "entries {low}..{high} at most {max:?} bytes");
                    assert_eq!(got.first().map(|e| e.index), Some(low));
                }
            }
        }
        // Memory is emptied when a snapshot replaces the log.
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = 30;
        snap.mut_metadata().term = 3;
        let mut batch = WriteBatch::default();
        log.stage_install_snapshot(&mut batch, snap);
        store.write(batch, true).unwrap();
        assert!(log.recent.is_empty());
        append(&mut log, &[entry(31, 3)]);
        let got = log.entries(31, 32, None, ctx()).unwrap();
        assert_eq!(got, vec![entry(31, 3)]);
    }

    /// A new commit index alone is written with the next entries; a new term or vote at once.
    #[test]
    fn a_commit_index_alone_waits_for_the_next_entries() {
        let dir = crate::testdir::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut log = store.raft_log().unwrap();
        append(&mut log, &[entry(1, 1), entry(2, 1)]);
        let stored = |store: &Store| store.raft_log().unwrap().hard_state().clone();
        let hs = |term, vote, commit| HardState {
            term,
            vote,
            commit,
            ..Default::default()
        };
        let mut batch = WriteBatch::default();
        assert!(log.take_hard_state(&mut batch, hs(1, 1, 0)), "a vote");
        store.write(batch, true).unwrap();
        assert_eq!(stored(&store), hs(1, 1, 0));

        let mut batch = WriteBatch::default();
        assert!(!log.take_hard_state(&mut batch, hs(1, 1, 1)));
        assert!(!log.take_hard_state(&mut batch, hs(1, 1, 2)));
        store.write(batch, true).unwrap();
        assert_eq!(log.hard_state(), &hs(1, 1, 2), "known here");
        assert_eq!(stored(&store), hs(1, 1, 0), "not written yet");
        append(&mut log, &[entry(3, 1)]);
        assert_eq!(stored(&store), hs(1, 1, 2), "written with the entries");
        append(&mut log, &[entry(4, 1)]);
        assert_eq!(stored(&store), hs(1, 1, 2));

        let mut batch = WriteBatch::default();
        assert!(!log.take_hard_state(&mut batch, hs(1, 1, 3)));
        assert!(log.take_hard_state(&mut batch, hs(2, 0, 3)), "a new term");
        store.write(batch, true).unwrap();
        assert_eq!(stored(&store), hs(2, 0, 3));
    }

    #[test]
    fn a_commit_index_past_the_log_is_corrupt() {
        let dir = crate::testdir::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut log = store.raft_log().unwrap();
        append(&mut log, &[entry(1, 1), entry(2, 1)]);
        let mut batch = WriteBatch::default();
        log.stage_commit(&mut batch, 2);
        store.write(batch, true).unwrap();
        drop(log);
        let mut log = store.raft_log().unwrap();
        let mut batch = WriteBatch::default();
        log.stage_commit(&mut batch, 3);
        store.write(batch, true).unwrap();
        assert!(matches!(store.raft_log(), Err(StorageError::Corrupt(_))));
    }

    #[test]
    fn installing_a_snapshot_replaces_the_log() {
        let dir = crate::testdir::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut log = store.raft_log().unwrap();
        append(&mut log, &[entry(1, 1), entry(2, 1)]);
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = 10;
        snap.mut_metadata().term = 3;
        snap.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        let mut batch = WriteBatch::default();
        log.stage_install_snapshot(&mut batch, snap);
        store.write(batch, true).unwrap();
        let log = store.raft_log().unwrap();
        assert_eq!(Storage::first_index(&log).unwrap(), 11);
        assert_eq!(Storage::last_index(&log).unwrap(), 10);
        assert_eq!(log.hard_state().commit, 10);
        assert_eq!(log.conf_state().voters, vec![1, 2, 3]);
        assert!(log.is_initialized());
    }
}
