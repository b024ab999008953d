//! flock(LOCK_UN) and fcntl(F_UNLCK).

use serde::{Deserialize, Serialize};

use crate::proto;

use super::super::tree::StateMachine;
use super::super::{LockStyle, Outcome, StateError};
use super::{Apply, Applying, Wire};

/// Removes the owner's coverage of the range; unlocking what is not held succeeds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unlock {
    pub session: u64,
    pub handle: u64,
    pub owner: u64,
    pub style: LockStyle,
    pub start: u64,
    pub end: u64,
}

impl TryFrom<Wire<'_, proto::Unlock>> for Unlock {
    type Error = StateError;

    fn try_from(w: Wire<'_, proto::Unlock>) -> Result<Self, StateError> {
        let m = w.op;
        Ok(Unlock {
            session: w.session()?,
            handle: m.handle,
            owner: m.owner,
            style: super::lock_style(m.style),
            start: m.start,
            end: m.end,
        })
    }
}

impl Apply for Unlock {
    fn apply(&self, sm: &mut StateMachine, at: &Applying) -> Result<Outcome, StateError> {
        sm.unlock(self, at.now)
    }
}
