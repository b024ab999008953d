//! rmdir(2): an empty directory removed.

use serde::{Deserialize, Serialize};

use crate::proto;

use super::super::tree::StateMachine;
use super::super::{Outcome, StateError, Target};
use super::{Apply, Applying, Wire};

/// Removes the empty directory `at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rmdir {
    pub at: Target,
}

impl TryFrom<Wire<'_, proto::Rmdir>> for Rmdir {
    type Error = StateError;

    fn try_from(w: Wire<'_, proto::Rmdir>) -> Result<Self, StateError> {
        Ok(Rmdir {
            at: super::target(w.op.at.as_ref())?,
        })
    }
}

impl Apply for Rmdir {
    fn apply(&self, sm: &mut StateMachine, at: &Applying) -> Result<Outcome, StateError> {
        sm.rmdir(&self.at, at.now)
    }
}
