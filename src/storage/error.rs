//! The storage layer's one error type.

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("corrupt record: {0}")]
    Corrupt(String),
}
