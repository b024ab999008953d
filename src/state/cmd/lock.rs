//! flock(2) and fcntl(F_SETLK/F_SETLKW): a lock granted, refused or queued.

use serde::{Deserialize, Serialize};

use crate::proto;

use super::super::locking::LockRequest;
use super::super::tree::StateMachine;
use super::super::{LockKind, LockStyle, Outcome, StateError};
use super::{Apply, Applying, Wire};

/// `handle` names the node; the owner is (session, owner). `end` is exclusive,
/// `u64::MAX` is "to the end of the file"; flock locks always cover the whole file. With
/// `wait`, a request that cannot be granted now is queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub session: u64,
    pub handle: u64,
    pub owner: u64,
    pub style: LockStyle,
    pub kind: LockKind,
    pub start: u64,
    pub end: u64,
    pub wait: bool,
    pub pid: u32,
}

impl TryFrom<Wire<'_, proto::Lock>> for Lock {
    type Error = StateError;

    fn try_from(w: Wire<'_, proto::Lock>) -> Result<Self, StateError> {
        let m = w.op;
        Ok(Lock {
            session: w.session()?,
            handle: m.handle,
            owner: m.owner,
            style: super::lock_style(m.style),
            kind: super::lock_kind(m.kind),
            start: m.start,
            end: m.end,
            wait: m.wait,
            pid: m.pid,
        })
    }
}

impl Apply for Lock {
    fn apply(&self, sm: &mut StateMachine, at: &Applying) -> Result<Outcome, StateError> {
        sm.lock(&LockRequest::of(self), self.wait, at.now)
    }
}
