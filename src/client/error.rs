//! The client layer's one error type.

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The cluster answered with an errno-like failure (ENOENT, EEXIST, ...).
    #[error("{message}")]
    Remote { code: u32, message: String },
    /// No leader could be reached before the deadline.
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
    /// A write was sent but its connection broke before the answer came: it may or may not have
    /// been applied.
    #[error("outcome unknown, the write may or may not have been applied: {0}")]
    Ambiguous(String),
    /// The server sent something this client does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Every server refused this client's credentials (or it refused theirs).
    #[error("not authenticated: {0}")]
    Refused(String),
}

impl ClientError {
    /// The errno this error stands for, as a local filesystem would report it.
    pub fn errno(&self) -> i32 {
        match self {
            ClientError::Remote { code, .. } => *code as i32,
            ClientError::Refused(_) => libc::EACCES,
            ClientError::Unavailable(_) | ClientError::Ambiguous(_) | ClientError::Protocol(_) => {
                libc::EIO
            }
        }
    }
}
