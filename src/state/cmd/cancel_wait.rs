//! A queued lock request withdrawn (its process gave up or got a signal).

use serde::{Deserialize, Serialize};

use crate::proto;

use super::super::tree::StateMachine;
use super::super::{Outcome, StateError};
use super::{Apply, Applying, Wire};

/// Withdraws a queued wait, or releases the lock it obtained if the grant won the race.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelWait {
    pub session: u64,
    pub wait: u64,
}

impl TryFrom<Wire<'_, proto::CancelWait>> for CancelWait {
    type Error = StateError;

    fn try_from(w: Wire<'_, proto::CancelWait>) -> Result<Self, StateError> {
        Ok(CancelWait {
            session: w.session()?,
            wait: w.op.wait,
        })
    }
}

impl Apply for CancelWait {
    fn apply(&self, sm: &mut StateMachine, at: &Applying) -> Result<Outcome, StateError> {
        sm.cancel_wait(self.session, self.wait, at.now)
    }
}
