//! Wire values that several commands (and queries) carry, read into the state's types.

use crate::proto;

use super::super::{LockKind, LockStyle, OnLoss, StateError, Target};

/// A request's target; refused when the request names none.
pub fn target(t: Option<&proto::Target>) -> Result<Target, StateError> {
    use proto::Target_oneof_kind as K;
    match t.and_then(|t| t.kind.as_ref()) {
        Some(K::path(p)) => Ok(Target::Path(p.clone())),
        Some(K::ino(i)) => Ok(Target::Ino(*i)),
        Some(K::child(c)) => Ok(Target::Child {
            parent: c.parent,
            name: c.name.clone(),
        }),
        None => Err(StateError::InvalidArgument(
            "request names no target".into(),
        )),
    }
}

pub fn lock_kind(k: proto::LockKind) -> LockKind {
    match k {
        proto::LockKind::SHARED => LockKind::Shared,
        proto::LockKind::EXCLUSIVE => LockKind::Exclusive,
    }
}

pub fn lock_style(s: proto::LockStyle) -> LockStyle {
    match s {
        proto::LockStyle::FLOCK => LockStyle::Flock,
        proto::LockStyle::POSIX => LockStyle::Posix,
    }
}

/// A node's `on_loss` setting; `NONE` is no setting.
pub fn on_loss(v: proto::OnLoss) -> Option<OnLoss> {
    match v {
        proto::OnLoss::NONE => None,
        proto::OnLoss::TERM => Some(OnLoss::Term),
        proto::OnLoss::KILL => Some(OnLoss::Kill),
    }
}
