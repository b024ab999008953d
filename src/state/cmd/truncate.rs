//! truncate(2): a file cut or zero-extended to a size.

use serde::{Deserialize, Serialize};

use crate::proto;

use super::super::tree::StateMachine;
use super::super::{Outcome, StateError, Target};
use super::{Apply, Applying, Wire};

/// Sets the size of the file `target`: cut, or extended with zeros.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truncate {
    pub target: Target,
    pub size: u64,
}

impl TryFrom<Wire<'_, proto::Truncate>> for Truncate {
    type Error = StateError;

    fn try_from(w: Wire<'_, proto::Truncate>) -> Result<Self, StateError> {
        Ok(Truncate {
            target: super::target(w.op.target.as_ref())?,
            size: w.op.size,
        })
    }
}

impl Apply for Truncate {
    fn apply(&self, sm: &mut StateMachine, at: &Applying) -> Result<Outcome, StateError> {
        sm.truncate(self, at.max_file_size, at.now)
    }
}
