//! A whole file's contents replaced at once, optionally as a compare-and-set.

use serde::{Deserialize, Serialize};

use crate::proto;

use super::super::tree::StateMachine;
use super::super::{Outcome, StateError, Target};
use super::{Apply, Applying, Wire};

/// Creates the file if missing (mode, uid, gid used only then) and replaces its contents.
/// With `if_generation`, a compare-and-set as Chubby's SetContents offers it: applied only
/// if the file's content generation is that number; a file that is missing or was never
/// written is at 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Put {
    pub at: Target,
    #[serde(with = "super::super::record::file_bytes")]
    pub data: Vec<u8>,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub if_generation: Option<u64>,
}

impl TryFrom<Wire<'_, proto::Put>> for Put {
    type Error = StateError;

    fn try_from(w: Wire<'_, proto::Put>) -> Result<Self, StateError> {
        let m = w.op;
        Ok(Put {
            at: super::target(m.at.as_ref())?,
            data: m.data.clone(),
            mode: m.mode,
            uid: m.uid,
            gid: m.gid,
            if_generation: m.has_if_generation.then_some(m.if_generation),
        })
    }
}

impl Apply for Put {
    fn apply(&self, sm: &mut StateMachine, at: &Applying) -> Result<Outcome, StateError> {
        sm.put(self, at.max_file_size, at.now)
    }
}
