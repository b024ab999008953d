//! creat(2) without a handle: a file at a name, or the file already there.

use serde::{Deserialize, Serialize};

use crate::proto;

use super::super::tree::StateMachine;
use super::super::{Outcome, StateError, Target};
use super::{Apply, Applying, Wire};

/// A new empty file at `at`. When something is there: with `exclusive` (O_EXCL) refused,
/// otherwise the existing file's attributes are answered unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Create {
    pub at: Target,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub exclusive: bool,
}

impl TryFrom<Wire<'_, proto::Create>> for Create {
    type Error = StateError;

    fn try_from(w: Wire<'_, proto::Create>) -> Result<Self, StateError> {
        Ok(Create {
            at: super::target(w.op.at.as_ref())?,
            mode: w.op.mode,
            uid: w.op.uid,
            gid: w.op.gid,
            exclusive: w.op.exclusive,
        })
    }
}

impl Apply for Create {
    fn apply(&self, sm: &mut StateMachine, at: &Applying) -> Result<Outcome, StateError> {
        sm.create(self, at.now)
    }
}
