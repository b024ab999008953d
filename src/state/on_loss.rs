//! What a mount does to the processes holding a lock on a node when it loses the lock (its
//! session ends, or is in jeopardy): the node's `user.lockfs.on_loss`. A leader's lock file
//! can so demand that a cut-off holder dies, whatever the mount's own `on_lock_loss` says.
//!
//! - Set by the node's owner; removing it leaves the mount's option in charge.
//! - Kept in a record of its own (`p/<instance>`, see `record.rs`) only for nodes where it is
//!   set, and dropped with the node's lock table when the node goes for good.
//! - Every grant on the node carries the setting (`LockResult::GrantedOnLoss`,
//!   `Event::Granted`), so a mount learns it without another request; the lock listing shows
//!   it too.

use serde::{Deserialize, Serialize};

use super::tree::StateMachine;
use super::{LockResult, NodeChange, Outcome, StateError, Target};

/// The signal a mount sends the holders of a lock it lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OnLoss {
    /// SIGTERM, then SIGKILL after the mount's grace period.
    Term,
    /// SIGKILL at once.
    Kill,
}

impl StateMachine {
    /// Node `ino`'s setting, if it has one.
    pub(super) fn on_loss_of(&self, ino: u64) -> Option<OnLoss> {
        self.on_loss.get(&ino).copied()
    }

    /// The answer to a request granted on node `ino` at `generation`.
    pub(super) fn granted(&self, ino: u64, generation: u64) -> LockResult {
        match self.on_loss_of(ino) {
            None => LockResult::Granted { generation },
            Some(on_loss) => LockResult::GrantedOnLoss {
                generation,
                on_loss,
            },
        }
    }

    pub(super) fn set_on_loss(
        &mut self,
        target: &Target,
        on_loss: Option<OnLoss>,
    ) -> Result<Outcome, StateError> {
        let ino = self.lookup(target)?;
        if self.on_loss_of(ino) == on_loss {
            return Ok(Outcome::Done);
        }
        match on_loss {
            Some(v) => self.on_loss.insert(ino, v),
            None => self.on_loss.remove(&ino),
        };
        self.dirty_on_loss.insert(ino);
        self.node_event(ino, NodeChange::Attrib);
        Ok(Outcome::Done)
    }

    /// Node `ino` goes for good: its setting goes with it.
    pub(super) fn drop_on_loss(&mut self, ino: u64) {
        if self.on_loss.remove(&ino).is_some() {
            self.dirty_on_loss.insert(ino);
        }
    }
}
