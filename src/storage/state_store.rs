//! The state machine's records and applied index, in the `state` column family.
//!
//! The state machine decides what its records are (keys and values are opaque bytes here); this
//! file only guarantees that each batch of changes lands together with the applied index it
//! belongs to, and (as everywhere in the store) that a record reads back as it was written.

use super::disk::Reader;
use super::{Result, StorageError, Store, WriteBatch, CF_STATE};

/// Records as (key, value) pairs.
pub type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// Where [`StateStore::stream`] hands its batches of records, and `None` after the last; it
/// returns false to stop the stream.
pub type RecordSink = Box<dyn FnMut(Option<Records>) -> bool + Send>;

/// Kept apart from the state machine's own key prefixes (`n/`, `m/`, ...).
pub(super) const KEY_APPLIED: &[u8] = b"a/applied";

pub struct StateStore {
    store: Store,
}

impl StateStore {
    pub(super) fn new(store: Store) -> StateStore {
        StateStore { store }
    }

    /// The applied index and every state-machine record.
    pub fn load(&self) -> Result<(u64, Records)> {
        let mut applied = 0;
        let mut records = Vec::new();
        self.store.disk.scan(CF_STATE, b"", &mut |k, v| {
            let value = super::unseal(k, v, "state record")?;
            if k == KEY_APPLIED {
                applied = super::decode(value, "applied index")?;
            } else {
                records.push((k.to_vec(), value.to_vec()));
            }
            Ok(true)
        })?;
        Ok((applied, records))
    }

    /// Streams a consistent copy of the state as it is now, without holding up the caller: a
    /// thread of its own takes a RocksDB snapshot (before this returns, so no later write is in
    /// it) and reads the records through it, each checksum verified, handing them to `sink` in
    /// batches of about `batch_bytes` and then `None`. Memory stays bounded by what the sink
    /// holds. A damaged record ends the stream without the `None`, and is logged. Returns the
    /// applied index of the copy.
    pub fn stream(&self, batch_bytes: usize, mut sink: RecordSink) -> Result<u64> {
        let (taken, applied) = std::sync::mpsc::sync_channel::<Result<u64>>(1);
        let work = move |frozen: &dyn Reader| {
            let applied = frozen.get(CF_STATE, KEY_APPLIED).and_then(|v| match v {
                Some(v) => super::unseal(KEY_APPLIED, &v, "applied index")
                    .and_then(|v| super::decode::<u64>(v, "applied index")),
                None => Ok(0),
            });
            let ok = applied.is_ok();
            let _ = taken.send(applied);
            if !ok {
                return;
            }
            let mut batch = Vec::new();
            let mut size = 0;
            let mut stopped = false;
            let read = frozen.scan(CF_STATE, b"", &mut |key, value| {
                if key == KEY_APPLIED {
                    return Ok(true);
                }
                let value = super::unseal(key, value, "state record")?.to_vec();
                size += key.len() + value.len();
                batch.push((key.to_vec(), value));
                if size >= batch_bytes {
                    size = 0;
                    if !sink(Some(std::mem::take(&mut batch))) {
                        stopped = true;
                        return Ok(false);
                    }
                }
                Ok(true)
            });
            if let Err(e) = read {
                log::error!("streaming the state: {e}");
                return;
            }
            if stopped {
                return;
            }
            if (batch.is_empty() || sink(Some(batch))) && !sink(None) {
                log::debug!("the receiver of a state stream left before its end");
            }
        };
        self.store
            .disk
            .read_frozen("lockfs-snapshot", Box::new(work))?;
        applied.recv().map_err(|_| {
            StorageError::Corrupt("the snapshot thread ended before reading the state".into())
        })?
    }

    /// Adds the changes of some applied commands and their applied index to `batch`.
    pub fn stage_changes(
        &self,
        batch: &mut WriteBatch,
        changes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
        applied: u64,
    ) {
        for (k, v) in changes {
            match v {
                Some(v) => self.store.put(batch, CF_STATE, &k, &v),
                None => batch.delete(CF_STATE, &k),
            }
        }
        self.store
            .put(batch, CF_STATE, KEY_APPLIED, &super::encode(&applied));
    }

    /// Adds to `batch` the replacement of every record by `records` (a snapshot being installed).
    pub fn stage_replace_all(&self, batch: &mut WriteBatch, records: &Records, applied: u64) {
        // Every key of the state machine (and the applied index) starts with an ASCII letter.
        batch.delete_range(CF_STATE, &[], &[0xff]);
        for (k, v) in records {
            self.store.put(batch, CF_STATE, k, v);
        }
        self.store
            .put(batch, CF_STATE, KEY_APPLIED, &super::encode(&applied));
    }
}
