//! The one error type of the state layer. The FUSE edge turns it into an errno with
//! [`StateError::errno`]; everything else passes it along unchanged.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Why a command or query was refused. A refused command leaves the state untouched.
/// Serializable because cached results and events carry it.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum StateError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    AlreadyExists,
    #[error("directory not empty")]
    NotEmpty,
    #[error("not a directory")]
    NotADirectory,
    #[error("is a directory")]
    IsADirectory,
    #[error("file too large")]
    FileTooLarge,
    #[error("invalid name: {0}")]
    InvalidName(String),
    #[error("file name too long")]
    NameTooLong,
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// No command gives it since directories can be renamed; it stays, in its place, so that
    /// results stored by earlier versions still decode.
    #[error("renaming directories is not supported")]
    CrossDevice,
    #[error("device or resource busy")]
    Busy,
    #[error("operation not permitted")]
    NotPermitted,
    /// The caller's uid and groups lack a permission bit this needs.
    #[error("permission denied")]
    AccessDenied,
    #[error("corrupt state: {0}")]
    Corrupt(String),
    /// The session does not exist: never opened, closed, or expired.
    #[error("session expired")]
    SessionExpired,
    /// The handle is not an open handle of this session.
    #[error("bad file handle")]
    BadHandle,
    /// A node's lock table is full (holders or waiters).
    #[error("no locks available")]
    NoLocks,
    /// A conditional write's precondition failed: the file is at another content generation
    /// (0: it does not exist).
    #[error("content generation is {current}, not {expected}")]
    GenerationMismatch { expected: u64, current: u64 },
    /// The command would grow the state past a cluster-wide quota; the message names it and
    /// its limit (see `quota.rs`).
    #[error("{0}")]
    QuotaExceeded(String),
    /// A file has as many names as it may have (`links.rs`).
    #[error("too many links")]
    TooManyLinks,
}

use crate::errno::{
    EACCES, EBADF, EBUSY, EDQUOT, EEXIST, EFBIG, EINVAL, EIO, EISDIR, EKEYEXPIRED, EMLINK,
    ENAMETOOLONG, ENOENT, ENOLCK, ENOTDIR, ENOTEMPTY, EPERM, ESTALE, EXDEV,
};

impl StateError {
    /// The Linux errno a filesystem call reports for this error.
    pub fn errno(&self) -> i32 {
        let code = match self {
            StateError::NotFound => ENOENT,
            StateError::AlreadyExists => EEXIST,
            StateError::NotEmpty => ENOTEMPTY,
            StateError::NotADirectory => ENOTDIR,
            StateError::IsADirectory => EISDIR,
            StateError::FileTooLarge => EFBIG,
            StateError::InvalidName(_) => EINVAL,
            StateError::NameTooLong => ENAMETOOLONG,
            StateError::InvalidArgument(_) => EINVAL,
            StateError::CrossDevice => EXDEV,
            StateError::Busy => EBUSY,
            StateError::NotPermitted => EPERM,
            StateError::AccessDenied => EACCES,
            StateError::Corrupt(_) => EIO,
            StateError::SessionExpired => EKEYEXPIRED,
            StateError::BadHandle => EBADF,
            StateError::NoLocks => ENOLCK,
            StateError::GenerationMismatch { .. } => ESTALE,
            StateError::QuotaExceeded(_) => EDQUOT,
            StateError::TooManyLinks => EMLINK,
        };
        code as i32
    }
}
