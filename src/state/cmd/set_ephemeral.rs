//! A directory marked (or unmarked) as the home of ephemeral files.

use serde::{Deserialize, Serialize};

use crate::proto;

use super::super::tree::StateMachine;
use super::super::{Outcome, StateError, Target};
use super::{Apply, Applying, Wire};

/// Directories only: files created in it from now on are ephemeral.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetEphemeral {
    pub target: Target,
    pub ephemeral: bool,
}

impl TryFrom<Wire<'_, proto::SetEphemeral>> for SetEphemeral {
    type Error = StateError;

    fn try_from(w: Wire<'_, proto::SetEphemeral>) -> Result<Self, StateError> {
        Ok(SetEphemeral {
            target: super::target(w.op.target.as_ref())?,
            ephemeral: w.op.ephemeral,
        })
    }
}

impl Apply for SetEphemeral {
    fn apply(&self, sm: &mut StateMachine, at: &Applying) -> Result<Outcome, StateError> {
        sm.set_ephemeral(&self.target, self.ephemeral, at.now)
    }
}
