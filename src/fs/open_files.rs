//! The mount's table of open files and directories: the `fh` the kernel passes back with
//! every request on an open file description.
//!
//! An open file carries its backend handle and an O_TRUNC that has not happened yet. DESIGN.md
//! says `open(O_TRUNC)` is never visible alone: the truncation commits together with the first
//! write, or at close if nothing was written, so `echo x > f` replaces the contents atomically
//! and no reader on any host ever sees the file empty. The pending flag sits behind an async
//! mutex that each write holds for its whole round trip, so the truncating write is committed
//! before any later write on the handle is sent.
//!
//! "At close" means at RELEASE, the last close of the open file description, not at FLUSH:
//! FLUSH comes with every close(2) of any descriptor, and the shell's `echo x > f` opens the
//! file, `dup2`s it onto stdout and closes the original descriptor *before* echo writes. A
//! truncation at that FLUSH would show the empty file. The kernel sends RELEASE in the
//! background, so after `: > f` a reader may for a moment still see the old contents (never a
//! mixture), and a failure of that truncation can only be logged.
//!
//! A file's reads are served from one version per pass (from a read at offset 0 to the end):
//! see `Inner::read`.
//!
//! Directories get a backend handle only when one is needed (a lock on the directory): `ls`
//! should not cost a commit. A directory listing is read once per opendir and served from that
//! snapshot, so the offsets the kernel hands back stay meaningful while others change the
//! directory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::backend::{Backend, DirEntry, Errno};

pub struct OpenFile {
    pub ino: u64,
    /// The backend handle; `None` for a directory until a lock needs one.
    handle: tokio::sync::Mutex<Option<u64>>,
    /// An O_TRUNC waiting for the first write or the close.
    pub pending_truncate: tokio::sync::Mutex<bool>,
    /// A directory's entries, read at the first readdir.
    pub listing: Mutex<Option<Arc<Vec<DirEntry>>>>,
    /// A file's whole contents as read at the last read from offset 0, with the mount's write
    /// count then: the version the reads that follow are served from.
    pub contents: Mutex<Option<(u64, Arc<Vec<u8>>)>>,
}

impl OpenFile {
    pub fn file(ino: u64, handle: u64, truncate: bool) -> Self {
        OpenFile {
            ino,
            handle: tokio::sync::Mutex::new(Some(handle)),
            pending_truncate: tokio::sync::Mutex::new(truncate),
            listing: Mutex::new(None),
            contents: Mutex::new(None),
        }
    }

    pub fn dir(ino: u64) -> Self {
        OpenFile {
            ino,
            handle: tokio::sync::Mutex::new(None),
            pending_truncate: tokio::sync::Mutex::new(false),
            listing: Mutex::new(None),
            contents: Mutex::new(None),
        }
    }

    /// The backend handle, opening one for a directory on first use.
    pub async fn handle(&self, backend: &dyn Backend) -> Result<u64, Errno> {
        let mut handle = self.handle.lock().await;
        if let Some(h) = *handle {
            return Ok(h);
        }
        let h = backend.open(self.ino).await?;
        *handle = Some(h);
        Ok(h)
    }

    /// The backend handle if one was opened; the open file keeps no handle after this.
    pub async fn take_handle(&self) -> Option<u64> {
        self.handle.lock().await.take()
    }
}

/// Open files by `fh`. Ids are never reused while the mount lives.
#[derive(Default)]
pub struct OpenFiles {
    next: AtomicU64,
    files: Mutex<HashMap<u64, Arc<OpenFile>>>,
}

impl OpenFiles {
    pub fn insert(&self, file: OpenFile) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.files.lock().unwrap().insert(fh, Arc::new(file));
        fh
    }

    pub fn get(&self, fh: u64) -> Result<Arc<OpenFile>, Errno> {
        self.files
            .lock()
            .unwrap()
            .get(&fh)
            .cloned()
            .ok_or(Errno::EBADF)
    }

    pub fn remove(&self, fh: u64) -> Result<Arc<OpenFile>, Errno> {
        self.files.lock().unwrap().remove(&fh).ok_or(Errno::EBADF)
    }
}
