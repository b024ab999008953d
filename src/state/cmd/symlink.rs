//! symlink(2): a symbolic link at a free name.

use serde::{Deserialize, Serialize};

use crate::proto;

use super::super::tree::StateMachine;
use super::super::{Outcome, StateError, Target};
use super::{Apply, Applying, Wire};

/// A symbolic link at `at` to `target` (symlink(2)); its mode is 0o777.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Symlink {
    pub at: Target,
    pub target: String,
    pub uid: u32,
    pub gid: u32,
}

impl TryFrom<Wire<'_, proto::Symlink>> for Symlink {
    type Error = StateError;

    fn try_from(w: Wire<'_, proto::Symlink>) -> Result<Self, StateError> {
        Ok(Symlink {
            at: super::target(w.op.at.as_ref())?,
            target: w.op.target.clone(),
            uid: w.op.uid,
            gid: w.op.gid,
        })
    }
}

impl Apply for Symlink {
    fn apply(&self, sm: &mut StateMachine, at: &Applying) -> Result<Outcome, StateError> {
        sm.symlink(self, at.now)
    }
}
