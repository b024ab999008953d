//! A session ends: closed by its client, or expired (or ended by an administrator, which is
//! treated as an expiry).

use serde::{Deserialize, Serialize};

use crate::proto;

use super::super::tree::StateMachine;
use super::super::{Command, Outcome, StateError};
use super::{Apply, Applying, Wire};

/// A clean end: locks released, waits dropped, handles closed, no lock-delay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseSession {
    pub session: u64,
}

/// The leader decided the session expired: as [`CloseSession`], plus a lock-delay on every
/// node the session held a lock on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpireSession {
    pub session: u64,
}

/// A session closes itself; an administrator ends another session (`session` set in the
/// message, sent outside that session) as its expiry would: its locks pass on only after the
/// lock-delay, because its holders may still be running.
impl TryFrom<Wire<'_, proto::CloseSession>> for Command {
    type Error = StateError;

    fn try_from(w: Wire<'_, proto::CloseSession>) -> Result<Self, StateError> {
        Ok(if w.op.session != 0 {
            Command::ExpireSession(ExpireSession {
                session: w.op.session,
            })
        } else {
            Command::CloseSession(CloseSession {
                session: w.session()?,
            })
        })
    }
}

impl Apply for CloseSession {
    fn apply(&self, sm: &mut StateMachine, at: &Applying) -> Result<Outcome, StateError> {
        sm.end_session(self.session, None, at.now)
    }
}

impl Apply for ExpireSession {
    fn apply(&self, sm: &mut StateMachine, at: &Applying) -> Result<Outcome, StateError> {
        sm.end_session(self.session, Some(at.lock_delay_ns), at.now)
    }
}
