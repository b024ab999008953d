//! Semaphores: how many exclusive flock holders a node admits at once, its
//! `user.lockfs.max_holders` (1, an ordinary exclusive lock, unless set). The lock table
//! applies it (`lock.rs`); this module keeps the setting.
//!
//! - Set by the node's owner, 1 to [`MAX_HOLDERS`]; 1 removes the setting. Raising it grants
//!   the waiters that now fit, at once and in queue order. Lowering it below the exclusive
//!   flock holders there now is refused (EBUSY): a holder never loses its lock to a setting.
//! - Kept in a record of its own (`c/<instance>`, see `record.rs`) only for nodes where it is
//!   more than 1, and dropped with the node's lock table when the node goes for good.
//! - Each exclusive grant still bumps the node's lock generation, so every holder is granted
//!   a generation of its own (what `lockfs run` hands its command).

use serde::{Deserialize, Serialize};

use super::lock::Held;
use super::tree::StateMachine;
use super::{LockKind, LockStyle, NodeChange, Outcome, StateError, Target};

/// The most exclusive holders a semaphore admits at once.
pub const MAX_HOLDERS: u32 = 1000;

/// A node's semaphore setting, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Semaphore {
    /// 2 to [`MAX_HOLDERS`].
    pub max_holders: u32,
}

impl StateMachine {
    /// How many exclusive flock holders node `ino` admits at once.
    pub(super) fn slots(&self, ino: u64) -> u32 {
        self.semaphores.get(&ino).map_or(1, |s| s.max_holders)
    }

    pub(super) fn set_max_holders(
        &mut self,
        target: &Target,
        max_holders: u32,
        now: u64,
    ) -> Result<Outcome, StateError> {
        if !(1..=MAX_HOLDERS).contains(&max_holders) {
            return Err(StateError::InvalidArgument(format!(
                "max_holders is 1 to {MAX_HOLDERS}"
            )));
        }
        let ino = self.lookup(target)?;
        let table = self.locks.get(&ino).cloned().unwrap_or_default();
        let exclusive = |h: &&Held| h.style == LockStyle::Flock && h.kind == LockKind::Exclusive;
        let held = table.holders.iter().filter(exclusive).count();
        if held > max_holders as usize {
            return Err(StateError::Busy);
        }
        if self.slots(ino) == max_holders {
            return Ok(Outcome::Done);
        }
        if max_holders == 1 {
            self.semaphores.remove(&ino);
        } else {
            self.semaphores.insert(ino, Semaphore { max_holders });
        }
        self.dirty_semaphores.insert(ino);
        self.node_event(ino, NodeChange::Attrib);
        // More room: waiters that now fit are granted.
        if !table.waiters.is_empty() {
            self.settle(ino, table, now);
        }
        Ok(Outcome::Done)
    }

    /// Node `ino` goes for good: its setting goes with it.
    pub(super) fn drop_semaphore(&mut self, ino: u64) {
        if self.semaphores.remove(&ino).is_some() {
            self.dirty_semaphores.insert(ino);
        }
    }
}
