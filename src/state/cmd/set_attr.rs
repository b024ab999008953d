//! chmod(2), chown(2) and utimensat(2) in one command, as setattr carries them.

use serde::{Deserialize, Serialize};

use crate::proto;

use super::super::tree::StateMachine;
use super::super::{Outcome, StateError, Target};
use super::{Apply, Applying, Wire};

/// Sets the attributes given. Any of mode, uid, gid given bumps the acl generation once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetAttr {
    pub target: Target,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub atime_ns: Option<u64>,
    pub mtime_ns: Option<u64>,
}

impl TryFrom<Wire<'_, proto::SetAttr>> for SetAttr {
    type Error = StateError;

    fn try_from(w: Wire<'_, proto::SetAttr>) -> Result<Self, StateError> {
        let m = w.op;
        Ok(SetAttr {
            target: super::target(m.target.as_ref())?,
            mode: m.has_mode.then_some(m.mode),
            uid: m.has_uid.then_some(m.uid),
            gid: m.has_gid.then_some(m.gid),
            atime_ns: m.has_atime.then_some(m.atime_ns),
            mtime_ns: m.has_mtime.then_some(m.mtime_ns),
        })
    }
}

impl Apply for SetAttr {
    fn apply(&self, sm: &mut StateMachine, at: &Applying) -> Result<Outcome, StateError> {
        sm.set_attr(self, at.now)
    }
}
