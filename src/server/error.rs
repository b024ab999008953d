//! The server layer's one error type: failures to start or run a node, and the outcome of a
//! client request that did not reach the state machine.

use crate::state::StateError;
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Config(String),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("{0}")]
    State(#[from] StateError),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// Only the leader accepts writes; the client should go to `leader_addr`.
    #[error("not the leader")]
    NotLeader { leader_id: u64, leader_addr: String },
    /// The request was not applied and may be retried: no leader right now, a proposal lost to a
    /// leader change, a read that found no quorum in time, or a node shutting down.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The Raft loop stopped (halted, or shut down) with the request in hand: a write may
    /// have reached other members and be applied by them, so its outcome is unknown. Never
    /// answered: the client sees its connection close, which it takes as exactly that.
    #[error("the node stopped with the request in hand")]
    Dropped,
    /// The node has as many requests in hand as it takes; nothing was done, retry after a
    /// pause (ENOBUFS on the wire, which clients retry with backoff on the same connection).
    #[error("busy: {0}")]
    Busy(String),
    /// A membership change the cluster will not make (it would lose its majority, the id is
    /// taken, ...); `code` is the errno the client gets.
    #[error("{message}")]
    Refused { code: u32, message: String },
    /// The caller's identity may not make this request (EPERM or EACCES in `code`).
    #[error("{message}")]
    Denied { code: u32, message: String },
}

/// Linux errno numbers the wire carries (see `proto/lockfs.proto`, message `Error`).
pub use crate::errno;

/// Exit status of a node that found its data directory corrupt (EX_DATAERR). Restarting it
/// cannot help, so the systemd unit does not (`RestartPreventExitStatus`).
pub const EXIT_CORRUPT: i32 = 65;

impl ServerError {
    /// Whether this is damage to the data directory (a checksum, or a record that cannot be
    /// read back), as opposed to a failure that a restart may cure.
    pub fn is_corrupt(&self) -> bool {
        matches!(self, ServerError::Storage(StorageError::Corrupt(_)))
    }

    /// What an operator should do about a corrupt data directory `data`.
    pub fn corrupt_advice(data: &std::path::Path) -> String {
        format!(
            "the data directory {} is corrupt: this node will not serve from it. Rebuild it: \
             remove the node from the cluster (lockfs cluster remove ID), empty the directory \
             and add the node again with --join (README: Rebuilding a node)",
            data.display()
        )
    }

    /// The errno-like code sent to clients.
    pub fn code(&self) -> u32 {
        match self {
            ServerError::State(e) => e.errno() as u32,
            ServerError::NotLeader { .. } | ServerError::Unavailable(_) => errno::EAGAIN,
            ServerError::Busy(_) => errno::ENOBUFS,
            ServerError::Config(_) => errno::EINVAL,
            ServerError::Storage(_)
            | ServerError::Raft(_)
            | ServerError::Io(..)
            | ServerError::Dropped => errno::EIO,
            ServerError::Refused { code, .. } | ServerError::Denied { code, .. } => *code,
        }
    }
}
