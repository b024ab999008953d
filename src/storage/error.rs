//! The storage layer's one error type.

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("rocksdb: {0}")]
    Rocks(rocksdb::Error),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

impl From<rocksdb::Error> for StorageError {
    /// RocksDB's own checksum failures are corruption like ours.
    fn from(e: rocksdb::Error) -> Self {
        match e.kind() {
            rocksdb::ErrorKind::Corruption => StorageError::Corrupt(format!("rocksdb: {e}")),
            _ => StorageError::Rocks(e),
        }
    }
}
