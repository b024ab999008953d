//! open(2): a handle on a node for a session, creating the file if asked.

use serde::{Deserialize, Serialize};

use crate::proto;

use super::super::tree::StateMachine;
use super::super::{Outcome, StateError, Target};
use super::{Apply, Applying, Wire};

/// Opens an existing file or directory, or with `create` creates the file if missing, in
/// one command (so an ephemeral file is never without a handle).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Open {
    pub session: u64,
    pub at: Target,
    pub create: Option<CreateSpec>,
}

/// How [`Open`] creates a missing file; `exclusive` is `O_CREAT|O_EXCL`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateSpec {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub exclusive: bool,
}

impl TryFrom<Wire<'_, proto::Open>> for Open {
    type Error = StateError;

    fn try_from(w: Wire<'_, proto::Open>) -> Result<Self, StateError> {
        let m = w.op;
        Ok(Open {
            session: w.session()?,
            at: super::target(m.at.as_ref())?,
            create: m.create.then_some(CreateSpec {
                mode: m.mode,
                uid: m.uid,
                gid: m.gid,
                exclusive: m.exclusive,
            }),
        })
    }
}

impl Apply for Open {
    fn apply(&self, sm: &mut StateMachine, at: &Applying) -> Result<Outcome, StateError> {
        sm.open(self.session, &self.at, self.create.as_ref(), at.now)
    }
}
