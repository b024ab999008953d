//! The state machine's records and applied index, in the `state` column family.
//!
//! The state machine decides what its records are (keys and values are opaque bytes here); this
//! file only guarantees that each batch of changes lands together with the applied index it
//! belongs to, and (as everywhere in the store) that a record reads back as it was written.

use rocksdb::{IteratorMode, WriteBatch};

use super::{Result, Store, CF_STATE};

/// Records as (key, value) pairs.
pub type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// Kept apart from the state machine's own key prefixes (`n/`, `m/`, ...).
const KEY_APPLIED: &[u8] = b"a/applied";

pub struct StateStore {
    store: Store,
}

impl StateStore {
    pub(super) fn new(store: Store) -> StateStore {
        StateStore { store }
    }

    /// The applied index and every state-machine record.
    pub fn load(&self) -> Result<(u64, Records)> {
        let cf = self.store.cf(CF_STATE);
        let mut applied = 0;
        let mut records = Vec::new();
        for item in self.store.db.iterator_cf(cf, IteratorMode::Start) {
            let (k, v) = item?;
            let value = super::unseal(&k, &v, "state record")?;
            if &*k == KEY_APPLIED {
                applied = super::decode(value, "applied index")?;
            } else {
                records.push((k.to_vec(), value.to_vec()));
            }
        }
        Ok((applied, records))
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
                None => batch.delete_cf(self.store.cf(CF_STATE), k),
            }
        }
        self.store
            .put(batch, CF_STATE, KEY_APPLIED, &super::encode(&applied));
    }

    /// Adds to `batch` the replacement of every record by `records` (a snapshot being installed).
    pub fn stage_replace_all(&self, batch: &mut WriteBatch, records: Records, applied: u64) {
        let cf = self.store.cf(CF_STATE);
        // Every key of the state machine (and the applied index) starts with an ASCII letter.
        batch.delete_range_cf(cf, &[][..], &[0xffu8][..]);
        for (k, v) in records {
            self.store.put(batch, CF_STATE, &k, &v);
        }
        self.store
            .put(batch, CF_STATE, KEY_APPLIED, &super::encode(&applied));
    }
}
