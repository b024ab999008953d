//! A client's session begins.

use serde::{Deserialize, Serialize};

use crate::proto;

use super::super::tree::StateMachine;
use super::super::{Outcome, StateError};
use super::{Apply, Applying, Wire};

/// Starts a session; its id comes from a counter and is never reused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenSession {
    pub ttl_ms: u64,
    pub host: String,
    pub pid: u32,
    pub name: String,
    /// Who opened it (`role:name` of the authenticated identity; empty on an insecure
    /// cluster): only that identity may use the session.
    pub owner: String,
    /// Chosen at random by the leader; every request that uses the session must carry it.
    pub secret: u128,
    /// The client caches the tree (see `crate::server::cache`).
    pub cache: bool,
}

/// `owner` and `secret` are left empty: the node that admits the request stamps the owner,
/// and the leader the secret.
impl TryFrom<Wire<'_, proto::OpenSession>> for OpenSession {
    type Error = StateError;

    fn try_from(w: Wire<'_, proto::OpenSession>) -> Result<Self, StateError> {
        let m = w.op;
        Ok(OpenSession {
            ttl_ms: m.ttl_ms,
            host: m.host.clone(),
            pid: m.pid,
            name: m.name.clone(),
            owner: String::new(),
            secret: 0,
            cache: m.cache,
        })
    }
}

impl Apply for OpenSession {
    fn apply(&self, sm: &mut StateMachine, at: &Applying) -> Result<Outcome, StateError> {
        sm.open_session(self, at.now)
    }
}
