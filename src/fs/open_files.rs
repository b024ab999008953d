//! The mount's table of open files and directories: the `fh` the kernel passes back with
//! every request on an open file description.
//!
//! An open file carries the session it was opened in, its backend handle if it has one, and
//! an O_TRUNC that has not happened yet.
//!
//! A backend handle is a commit to open and another to close, so an open file gets one only
//! when the cluster must know of it:
//! - a file opened for writing (O_WRONLY, O_RDWR), with O_TRUNC or with O_CREAT: at open;
//! - an ephemeral file, whatever the flags: at open, because the file lives only while some
//!   handle holds it (see [`Ephemeral`] for how the mount knows without a commit);
//! - any other file (a read-only open of an ordinary file): at the first lock taken through
//!   it (flock, fcntl SETLK/SETLKW/GETLK), by inode, in the session the file was opened in; if
//!   the session ended meanwhile, that lock fails with EIO, as everything through a file of that
//!   session. Such a file is pinned in the backend, which keeps it alive should it lose its
//!   name on any host (`pins.rs`); a backend that cannot (a mount without a cache) opens it
//!   with a handle instead;
//! - a directory: at the first lock taken through it, in the live session.
//!
//! So on a caching mount `cat`, `head` or `grep` of an ordinary file commit nothing: reads go
//! by inode and need no handle, and the release of a file without a handle is local (but for
//! its pin). A file without a handle
//! still belongs to its session: once that session has ended, reads through it fail with EIO
//! as they would through a handle (the backend checks the session on every read).
//!
//! DESIGN.md says `open(O_TRUNC)` is never visible alone: the truncation commits together with
//! the first write, or at close if nothing was written, so `echo x > f` replaces the contents
//! atomically and no reader on any host ever sees the file empty. The pending flag sits behind
//! an async mutex that each write holds for its whole round trip, so the truncating write is
//! committed before any later write on the handle is sent.
//!
//! "At close" means at RELEASE, the last close of the open file description, not at FLUSH:
//! FLUSH comes with every close(2) of any descriptor, and the shell's `echo x > f` opens the
//! file, `dup2`s it onto stdout and closes the original descriptor *before* echo writes. A
//! truncation at that FLUSH would show the empty file. The kernel sends RELEASE in the
//! background, so after `: > f` a reader may for a moment still see the old contents (never a
//! mixture), and a failure of that truncation can only be logged.
//!
//! A file's reads are served from one version per read pass: see [`Pass`].
//!
//! A directory listing is read once per opendir and served from that snapshot, so the offsets
//! the kernel hands back stay meaningful while others change the directory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::backend::{Backend, DirEntry, Errno, FileAttr, NodeKind};

pub struct OpenFile {
    pub ino: u64,
    /// The session a file was opened in; `None` for a directory, which takes the live session
    /// when a lock needs a handle.
    session: Option<u64>,
    /// The backend handle; `None` until a lock needs one, for a file opened lazily and for a
    /// directory.
    handle: tokio::sync::Mutex<Option<u64>>,
    /// An O_TRUNC waiting for the first write or the close.
    pub pending_truncate: tokio::sync::Mutex<bool>,
    /// A directory's entries, read at the first readdir.
    pub listing: Mutex<Option<Arc<Vec<DirEntry>>>>,
    /// The read pass under way on this file, if any.
    pass: Mutex<Option<Pass>>,
    /// Opened without a handle and pinned in the backend (`Backend::pin`): unpin at release.
    pinned: bool,
    /// An administrator released a lock held through this file: from then on it fails (EIO)
    /// as a file of an ended session does.
    revoked: std::sync::atomic::AtomicBool,
}

/// A read pass: reads of one open file, each starting where the last ended within
/// [`PASS_GAP`] (the reads of one `cat`, or the requests the kernel splits one `read` into),
/// are served from one version of the whole file, the one the first of them found, as a
/// replace wrote it: so a file read from offset 0 to its end reads as one version, never the
/// start of one and the end of the next. A write through this mount ends the pass
/// ([`Version`]), and so does a read at offset 0, anywhere else, or later: it reads the file
/// again and starts a new pass, so a read that starts after a write was acknowledged sees it.
struct Pass {
    version: Version,
    data: Arc<Vec<u8>>,
    /// Where the last read of the pass ended, and when.
    end: u64,
    at: Instant,
}

/// How many writes this mount made to a file (see `filesystem::WriteEpochs`). Taken before
/// the contents are read, so a write while they are read makes it stale.
pub type Version = u64;

/// The longest pause between two reads of one pass.
pub const PASS_GAP: Duration = Duration::from_secs(1);

/// `size` bytes of `data` from `offset` (fewer at its end).
pub fn slice(data: &[u8], offset: u64, size: u32) -> Vec<u8> {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(data.len());
    let end = start.saturating_add(size as usize).min(data.len());
    data[start..end].to_vec()
}

impl OpenFile {
    /// The read of `size` bytes at `offset`, if it continues the pass under way on this file
    /// and the file is still at `version`.
    pub fn continue_pass(&self, version: Version, offset: u64, size: u32) -> Option<Vec<u8>> {
        let mut pass = self.pass.lock().unwrap();
        let p = pass.as_mut()?;
        if offset == 0 || p.version != version || p.end != offset || p.at.elapsed() > PASS_GAP {
            *pass = None;
            return None;
        }
        let read = slice(&p.data, offset, size);
        p.end = offset + read.len() as u64;
        p.at = Instant::now();
        Some(read)
    }

    /// The read of `size` bytes at `offset` from `data`, the whole file as read at `version`,
    /// which starts a new pass.
    pub fn start_pass(
        &self,
        version: Version,
        data: Arc<Vec<u8>>,
        offset: u64,
        size: u32,
    ) -> Vec<u8> {
        let read = slice(&data, offset, size);
        *self.pass.lock().unwrap() = Some(Pass {
            version,
            end: offset + read.len() as u64,
            data,
            at: Instant::now(),
        });
        read
    }

    /// A file opened in `session`, with a backend handle or (lazily) without one for now.
    pub fn file(ino: u64, session: u64, handle: Option<u64>, truncate: bool) -> Self {
        OpenFile {
            ino,
            session: Some(session),
            handle: tokio::sync::Mutex::new(handle),
            pending_truncate: tokio::sync::Mutex::new(truncate),
            listing: Mutex::new(None),
            pass: Mutex::new(None),
            pinned: false,
            revoked: Default::default(),
        }
    }

    /// A file opened in `session` without a handle, pinned in the backend (`Backend::pin`);
    /// `truncate` is an O_TRUNC pending until the first write or the release.
    pub fn lazy(ino: u64, session: u64, truncate: bool) -> Self {
        OpenFile {
            pinned: true,
            ..Self::file(ino, session, None, truncate)
        }
    }

    /// The session the file is pinned in, if it was opened without a handle and pinned.
    pub fn pinned_in(&self) -> Option<u64> {
        self.session.filter(|_| self.pinned)
    }

    pub fn dir(ino: u64) -> Self {
        OpenFile {
            ino,
            session: None,
            handle: tokio::sync::Mutex::new(None),
            pending_truncate: tokio::sync::Mutex::new(false),
            listing: Mutex::new(None),
            pass: Mutex::new(None),
            pinned: false,
            revoked: Default::default(),
        }
    }

    /// The session the file belongs to: the one it was opened in (a directory: the live one).
    /// EIO once a lock held through it was revoked.
    pub async fn session(&self, backend: &dyn Backend) -> Result<u64, Errno> {
        if self.revoked() {
            return Err(Errno::EIO);
        }
        match self.session {
            Some(s) => Ok(s),
            None => backend.session().await,
        }
    }

    /// The backend handle, opened by inode on first use if the file has none yet. The open
    /// happens in the file's own session: EIO-bound EKEYEXPIRED if that session has ended,
    /// ENOENT if the file was deleted since it was opened.
    pub async fn handle(&self, backend: &dyn Backend) -> Result<u64, Errno> {
        if self.revoked() {
            return Err(Errno::EIO);
        }
        let mut handle = self.handle.lock().await;
        if let Some(h) = *handle {
            return Ok(h);
        }
        let session = self.session(backend).await?;
        let h = backend.open(session, self.ino).await?;
        *handle = Some(h);
        Ok(h)
    }

    /// Whether a lock held through the file was revoked (see [`OpenFiles::revoke`]).
    pub fn revoked(&self) -> bool {
        self.revoked.load(Ordering::SeqCst)
    }

    /// The session the file was opened in (`None` for a directory).
    pub fn opened_in(&self) -> Option<u64> {
        self.session
    }

    /// Whether nothing of the file is left for the cluster to hear at release (no handle, no
    /// pending O_TRUNC), if that can be known without waiting for a request in flight.
    pub fn nothing_to_release(&self) -> bool {
        let no_handle = self.handle.try_lock().is_ok_and(|h| h.is_none());
        let no_truncate = self.pending_truncate.try_lock().is_ok_and(|t| !*t);
        no_handle && no_truncate
    }

    /// The backend handle if one was opened, without opening one.
    pub async fn opened_handle(&self) -> Option<u64> {
        *self.handle.lock().await
    }

    /// The backend handle if one was opened; the open file keeps no handle after this.
    pub async fn take_handle(&self) -> Option<u64> {
        self.handle.lock().await.take()
    }
}

/// Which files are ephemeral, as far as the mount has seen their attributes (lookup, getattr,
/// create and setattr answers). A file's ephemeral flag is fixed when it is created (only a
/// directory's can be set) and inode numbers are never reused, so what is noted never goes
/// stale. The kernel looks a name up before it opens it, so an open almost always finds the
/// file here; when it does not, the open asks the cluster (a read, not a commit). Bounded: when
/// full, it starts over.
#[derive(Default)]
pub struct Ephemeral {
    files: Mutex<HashMap<u64, bool>>,
}

impl Ephemeral {
    /// Most files remembered.
    pub const LIMIT: usize = 4096;

    /// Notes the attributes of a node the cluster just sent (directories are skipped).
    pub fn note(&self, attr: &FileAttr) {
        if attr.kind != NodeKind::File {
            return;
        }
        let mut files = self.files.lock().unwrap();
        if files.len() >= Self::LIMIT && !files.contains_key(&attr.ino) {
            files.clear();
        }
        files.insert(attr.ino, attr.ephemeral);
    }

    /// Whether file `ino` is ephemeral, if known.
    pub fn get(&self, ino: u64) -> Option<bool> {
        self.files.lock().unwrap().get(&ino).copied()
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

    /// A lock held through backend handle `handle` was revoked: the files that hold it fail
    /// from now on. Returns their `fh`s.
    pub fn revoke(&self, handle: u64) -> Vec<u64> {
        let files = self.files.lock().unwrap();
        let mut revoked = Vec::new();
        for (fh, f) in files.iter() {
            if f.handle.try_lock().is_ok_and(|h| *h == Some(handle)) {
                f.revoked.store(true, Ordering::SeqCst);
                revoked.push(*fh);
            }
        }
        revoked
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
