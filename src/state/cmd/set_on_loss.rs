//! A node's `user.lockfs.on_loss`: what a mount does to its holders when it loses the lock.

use serde::{Deserialize, Serialize};

use crate::proto;

use super::super::tree::StateMachine;
use super::super::{OnLoss, Outcome, StateError, Target};
use super::{Apply, Applying, Wire};

/// What a mount does to the holders of a lock on the node when it loses the lock (`None`
/// removes the setting); see `on_loss.rs`. Only the node's owner may set it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetOnLoss {
    pub target: Target,
    pub on_loss: Option<OnLoss>,
}

impl TryFrom<Wire<'_, proto::SetOnLoss>> for SetOnLoss {
    type Error = StateError;

    fn try_from(w: Wire<'_, proto::SetOnLoss>) -> Result<Self, StateError> {
        Ok(SetOnLoss {
            target: super::target(w.op.target.as_ref())?,
            on_loss: super::on_loss(w.op.on_loss),
        })
    }
}

impl Apply for SetOnLoss {
    fn apply(&self, sm: &mut StateMachine, _at: &Applying) -> Result<Outcome, StateError> {
        sm.set_on_loss(&self.target, self.on_loss)
    }
}
