//! What a normal Raft log entry carries: one state-machine command plus what the leader stamped
//! on it when it proposed it (time, file size limit, lock-delay, quotas). Replicas apply the
//! stamp, never their own clock or settings, so they stay identical.

use serde::{Deserialize, Serialize};

use crate::encoding;
use crate::state::{ApplyCtx, Command, Quotas, RequestId, UserIds};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// The leader's wall clock when it proposed the command (nanoseconds since the epoch).
    pub time_ns: u64,
    /// The leader's configured file-size limit.
    pub max_file_size: u64,
    /// The leader's configured lock-delay after a session expiry.
    pub lock_delay_ns: u64,
    /// The session and sequence number of the client request, for at-most-once application.
    pub request: Option<RequestId>,
    /// Whose permissions the command is checked against (a host's user), if anyone's.
    pub caller: Option<UserIds>,
    /// The leader's configured quotas, for a command that can grow something.
    pub quotas: Option<Quotas>,
    pub command: Command,
}

impl Envelope {
    pub fn encode(&self) -> Vec<u8> {
        encoding::log::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Envelope, String> {
        encoding::log::decode(bytes).map_err(|e| e.to_string())
    }

    pub fn ctx(&self, index: u64) -> ApplyCtx {
        ApplyCtx {
            index,
            time_ns: self.time_ns,
            max_file_size: self.max_file_size,
            lock_delay_ns: self.lock_delay_ns,
            caller: self.caller.clone(),
            quotas: self.quotas,
        }
    }
}
