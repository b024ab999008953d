//! mkdir(2): a directory at a free name.

use serde::{Deserialize, Serialize};

use crate::proto;

use super::super::tree::StateMachine;
use super::super::{Outcome, StateError, Target};
use super::{Apply, Applying, Wire};

/// A new directory at `at`; refused if anything is there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mkdir {
    pub at: Target,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl TryFrom<Wire<'_, proto::Mkdir>> for Mkdir {
    type Error = StateError;

    fn try_from(w: Wire<'_, proto::Mkdir>) -> Result<Self, StateError> {
        Ok(Mkdir {
            at: super::target(w.op.at.as_ref())?,
            mode: w.op.mode,
            uid: w.op.uid,
            gid: w.op.gid,
        })
    }
}

impl Apply for Mkdir {
    fn apply(&self, sm: &mut StateMachine, at: &Applying) -> Result<Outcome, StateError> {
        sm.mkdir(self, at.now)
    }
}
