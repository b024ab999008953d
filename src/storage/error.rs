//! The storage layer's one error type.

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("rocksdb: {0}")]
    Rocks(rocksdb::Error),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The data directory was written by a newer lockfs, in a format this one cannot read.
    #[error(
        "the data directory is in format {found}, newer than this lockfs reads ({known}): run \
         the lockfs that wrote it, or a newer one"
    )]
    NewerFormat { found: u32, known: u32 },
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
