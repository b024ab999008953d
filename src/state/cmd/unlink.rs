//! unlink(2): a name of a file or symbolic link removed.

use serde::{Deserialize, Serialize};

use crate::proto;

use super::super::tree::StateMachine;
use super::super::{Outcome, StateError, Target};
use super::{Apply, Applying, Wire};

/// Removes the name `at`; the file goes with its last name, or at its last close if it is
/// open (`orphan.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unlink {
    pub at: Target,
}

impl TryFrom<Wire<'_, proto::Unlink>> for Unlink {
    type Error = StateError;

    fn try_from(w: Wire<'_, proto::Unlink>) -> Result<Self, StateError> {
        Ok(Unlink {
            at: super::target(w.op.at.as_ref())?,
        })
    }
}

impl Apply for Unlink {
    fn apply(&self, sm: &mut StateMachine, at: &Applying) -> Result<Outcome, StateError> {
        sm.unlink(&self.at, at.now)
    }
}
