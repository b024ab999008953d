//! link(2): one more name for a file.

use serde::{Deserialize, Serialize};

use crate::proto;

use super::super::tree::StateMachine;
use super::super::{Outcome, StateError, Target};
use super::{Apply, Applying, Wire};

/// Gives the file `target` one more name, `at` (link(2)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub target: Target,
    pub at: Target,
}

impl TryFrom<Wire<'_, proto::Link>> for Link {
    type Error = StateError;

    fn try_from(w: Wire<'_, proto::Link>) -> Result<Self, StateError> {
        Ok(Link {
            target: super::target(w.op.target.as_ref())?,
            at: super::target(w.op.at.as_ref())?,
        })
    }
}

impl Apply for Link {
    fn apply(&self, sm: &mut StateMachine, at: &Applying) -> Result<Outcome, StateError> {
        sm.link(&self.target, &self.at, at.now)
    }
}
