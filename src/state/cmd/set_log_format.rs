//! The cluster's switch to a newer log format (see `crate::encoding`). Only a leader proposes
//! it, once every member has said it reads that format; no client request becomes one.

use serde::{Deserialize, Serialize};

use crate::encoding::LogFormat;

use super::super::tree::StateMachine;
use super::super::{Outcome, StateError};
use super::{Apply, Applying};

/// From this entry on, the cluster writes its log and snapshots in `format`. A format the
/// cluster already writes (or a newer one) is a no-op: a format is never lowered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetLogFormat {
    pub format: u32,
}

impl Apply for SetLogFormat {
    fn apply(&self, sm: &mut StateMachine, _at: &Applying) -> Result<Outcome, StateError> {
        if LogFormat::from_number(self.format).is_none() {
            return Err(StateError::InvalidArgument(format!(
                "log format {} is newer than this lockfs knows",
                self.format
            )));
        }
        if self.format > sm.log_format {
            sm.log_format = self.format;
            sm.log_format_dirty = true;
        }
        Ok(Outcome::Done)
    }
}
