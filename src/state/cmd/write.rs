//! pwrite(2) to an existing file, with an O_TRUNC or O_APPEND folded in.

use serde::{Deserialize, Serialize};

use crate::proto;

use super::super::tree::StateMachine;
use super::super::{Outcome, StateError, Target};
use super::{Apply, Applying, Wire};

/// Writes `data` at `offset` of the file `target`. `truncate` folds in an `O_TRUNC` pending
/// since open: clear, then write at `offset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Write {
    pub target: Target,
    pub offset: u64,
    #[serde(with = "super::super::record::file_bytes")]
    pub data: Vec<u8>,
    pub truncate: bool,
    /// O_APPEND: write at the end of the file as it is when the command applies, ignoring
    /// `offset`, so appends from many hosts never overwrite each other.
    pub append: bool,
}

impl TryFrom<Wire<'_, proto::Write>> for Write {
    type Error = StateError;

    fn try_from(w: Wire<'_, proto::Write>) -> Result<Self, StateError> {
        Ok(Write {
            target: super::target(w.op.target.as_ref())?,
            offset: w.op.offset,
            data: w.op.data.clone(),
            truncate: w.op.truncate,
            append: w.op.append,
        })
    }
}

impl Apply for Write {
    fn apply(&self, sm: &mut StateMachine, at: &Applying) -> Result<Outcome, StateError> {
        sm.write(self, at.max_file_size, at.now)
    }
}
