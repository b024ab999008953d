//! close(2) of a session's handle.

use serde::{Deserialize, Serialize};

use crate::proto;

use super::super::tree::StateMachine;
use super::super::{Outcome, StateError};
use super::{Apply, Applying, Wire};

/// Releases the flock locks taken through the handle and deletes an ephemeral file that no
/// handle holds anymore. POSIX locks stay: the mount unlocks them explicitly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Close {
    pub session: u64,
    pub handle: u64,
}

impl TryFrom<Wire<'_, proto::Close>> for Close {
    type Error = StateError;

    fn try_from(w: Wire<'_, proto::Close>) -> Result<Self, StateError> {
        Ok(Close {
            session: w.session()?,
            handle: w.op.handle,
        })
    }
}

impl Apply for Close {
    fn apply(&self, sm: &mut StateMachine, at: &Applying) -> Result<Outcome, StateError> {
        sm.close(self.session, self.handle, at.now)
    }
}
