//! A temporary directory for tests, removed with everything in it when dropped.
//!
//! The tests use this instead of the `tempfile` crate. As a dev-dependency, `tempfile` changed
//! the features of crates that RocksDB's build script shares, so `cargo test` compiled RocksDB
//! from C++ a second time after `cargo build` (about 15 minutes on 2 cores). This file is shared
//! by the unit tests (through `lib.rs`) and the integration tests (through `#[path]` in
//! `tests/common`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A new, empty directory under the system's temporary directory, readable by its owner only.
pub fn tempdir() -> std::io::Result<TempDir> {
    tempdir_in(&std::env::temp_dir())
}

/// A new, empty directory under `parent`, readable by its owner only.
pub fn tempdir_in(parent: &Path) -> std::io::Result<TempDir> {
    use std::os::unix::fs::DirBuilderExt;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut last = None;
    // A name can be taken only by a leftover of an earlier process with the same pid.
    for _ in 0..100 {
        let name = format!(
            "lockfs-test-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = parent.join(name);
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => return Ok(TempDir { path }),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free name")))
}
