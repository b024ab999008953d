//! An administrator frees a node's locks (`lockfs locks release`).

use serde::{Deserialize, Serialize};

use crate::proto;

use super::super::tree::StateMachine;
use super::super::{Outcome, StateError, Target};
use super::{Apply, Applying, Wire};

/// An administrator frees the locks held on `at`: every holder's, or only those of session
/// `holder`. As after the holders' expiry, nothing new is granted there before the
/// lock-delay ends (the holders may still be running); their sessions and handles stay.
/// InvalidArgument if no such lock is held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseLocks {
    pub at: Target,
    pub holder: Option<u64>,
}

/// Sent outside any session (only an administrator may send it, see the server's `authz`);
/// `holder` 0 is every holder.
impl TryFrom<Wire<'_, proto::ReleaseLocks>> for ReleaseLocks {
    type Error = StateError;

    fn try_from(w: Wire<'_, proto::ReleaseLocks>) -> Result<Self, StateError> {
        Ok(ReleaseLocks {
            at: super::target(w.op.at.as_ref())?,
            holder: (w.op.holder != 0).then_some(w.op.holder),
        })
    }
}

impl Apply for ReleaseLocks {
    fn apply(&self, sm: &mut StateMachine, at: &Applying) -> Result<Outcome, StateError> {
        sm.release_locks(&self.at, self.holder, at.lock_delay_ns, at.now)
    }
}
