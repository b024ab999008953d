//! rename(2) and renameat2(2): a node moved to another name, replacing what is there, refusing
//! to, or swapping with it.

use serde::{Deserialize, Serialize};

use crate::proto;

use super::super::command::RenameHow;
use super::super::tree::StateMachine;
use super::super::{Command, Outcome, StateError, Target};
use super::{Apply, Applying, Wire};

/// Moves a file or directory to `to`, replacing atomically what is there: a file by a
/// file, an empty directory by a directory (rename(2)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rename {
    pub from: Target,
    pub to: Target,
}

/// As [`Rename`], but refused with AlreadyExists if anything is at `to`
/// (renameat2 RENAME_NOREPLACE).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenameNoReplace {
    pub from: Target,
    pub to: Target,
}

/// Swaps the nodes at `a` and `b`, which both exist, atomically (renameat2
/// RENAME_EXCHANGE).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchange {
    pub a: Target,
    pub b: Target,
}

/// The wire's flags choose the command; both at once are refused.
impl TryFrom<Wire<'_, proto::Rename>> for Command {
    type Error = StateError;

    fn try_from(w: Wire<'_, proto::Rename>) -> Result<Self, StateError> {
        let m = w.op;
        let (from, to) = (
            super::target(m.from.as_ref())?,
            super::target(m.to.as_ref())?,
        );
        match (m.noreplace, m.exchange) {
            (false, false) => Ok(Command::Rename(Rename { from, to })),
            (true, false) => Ok(Command::RenameNoReplace(RenameNoReplace { from, to })),
            (false, true) => Ok(Command::Exchange(Exchange { a: from, b: to })),
            (true, true) => Err(StateError::InvalidArgument(
                "a rename cannot both exchange and refuse to replace".into(),
            )),
        }
    }
}

impl Apply for Rename {
    fn apply(&self, sm: &mut StateMachine, at: &Applying) -> Result<Outcome, StateError> {
        sm.rename(&self.from, &self.to, RenameHow::Replace, at.now)
    }
}

impl Apply for RenameNoReplace {
    fn apply(&self, sm: &mut StateMachine, at: &Applying) -> Result<Outcome, StateError> {
        sm.rename(&self.from, &self.to, RenameHow::NoReplace, at.now)
    }
}

impl Apply for Exchange {
    fn apply(&self, sm: &mut StateMachine, at: &Applying) -> Result<Outcome, StateError> {
        sm.rename(&self.a, &self.b, RenameHow::Exchange, at.now)
    }
}
