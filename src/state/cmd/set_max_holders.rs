//! A node made a semaphore (`user.lockfs.max_holders`), or an ordinary lock again.

use serde::{Deserialize, Serialize};

use crate::proto;

use super::super::tree::StateMachine;
use super::super::{Outcome, StateError, Target};
use super::{Apply, Applying, Wire};

/// How many exclusive flock holders the node admits at once (a semaphore; 1 is an
/// ordinary lock); see `semaphore.rs`. Only the node's owner may set it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetMaxHolders {
    pub target: Target,
    pub max_holders: u32,
}

impl TryFrom<Wire<'_, proto::SetMaxHolders>> for SetMaxHolders {
    type Error = StateError;

    fn try_from(w: Wire<'_, proto::SetMaxHolders>) -> Result<Self, StateError> {
        Ok(SetMaxHolders {
            target: super::target(w.op.target.as_ref())?,
            max_holders: w.op.max_holders,
        })
    }
}

impl Apply for SetMaxHolders {
    fn apply(&self, sm: &mut StateMachine, at: &Applying) -> Result<Outcome, StateError> {
        sm.set_max_holders(&self.target, self.max_holders, at.now)
    }
}
