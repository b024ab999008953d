//! What the mount needs from the cluster, and nothing more.
//!
//! The FUSE layer translates kernel requests into calls of [`Backend`] and answers the kernel
//! with what comes back. Everything that decides (permissions of a lock, who conflicts with
//! whom, when an ephemeral file goes) lives behind this trait, in the cluster's state machine;
//! the mount holds no policy. The production backend talks to the cluster through the mount's
//! client session; tests put an in-process state machine behind it.
//!
//! Every call is asynchronous because every call may be a round trip to the cluster (a Raft
//! commit for mutations, a linearizable read for queries). Errors are Linux errno values as a
//! local filesystem gives them; [`Errno::EKEYEXPIRED`] says the mount's session expired, which
//! the FUSE edge reports as EIO (see `errors.rs`).
//!
//! Ranges are half-open: `end` is exclusive and `u64::MAX` means "to the end of the file", so a
//! lock that grows with the file is distinguishable from a lock on a fixed range.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::kernel::KernelCache;
use prometheus_client::metrics::counter::Counter;

/// The future every backend call returns.
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = Result<T, Errno>> + Send + 'a>>;

/// A Linux errno value, as a local filesystem would report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    pub const EPERM: Errno = Errno(libc::EPERM);
    pub const ENOENT: Errno = Errno(libc::ENOENT);
    pub const EINTR: Errno = Errno(libc::EINTR);
    pub const EIO: Errno = Errno(libc::EIO);
    pub const EBADF: Errno = Errno(libc::EBADF);
    pub const EAGAIN: Errno = Errno(libc::EAGAIN);
    pub const EEXIST: Errno = Errno(libc::EEXIST);
    pub const EXDEV: Errno = Errno(libc::EXDEV);
    pub const ENOTDIR: Errno = Errno(libc::ENOTDIR);
    pub const EISDIR: Errno = Errno(libc::EISDIR);
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    pub const EFBIG: Errno = Errno(libc::EFBIG);
    pub const ENAMETOOLONG: Errno = Errno(libc::ENAMETOOLONG);
    pub const ENOLCK: Errno = Errno(libc::ENOLCK);
    pub const ENOTEMPTY: Errno = Errno(libc::ENOTEMPTY);
    pub const ENODATA: Errno = Errno(libc::ENODATA);
    pub const ENOTSUP: Errno = Errno(libc::ENOTSUP);
    pub const ERANGE: Errno = Errno(libc::ERANGE);
    /// A cluster-wide quota (sessions, handles, nodes, bytes, waiters) is reached.
    pub const EDQUOT: Errno = Errno(libc::EDQUOT);
    /// The mount's session expired: its handles and locks are gone.
    pub const EKEYEXPIRED: Errno = Errno(libc::EKEYEXPIRED);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Dir,
    File,
    Symlink,
}

/// What `stat` shows, plus Chubby's monotonic numbers for the xattrs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileAttr {
    /// The instance number: never reused, so it is the inode number. The root is 1.
    pub ino: u64,
    pub kind: NodeKind,
    /// Permission bits only (`& 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub atime_ns: u64,
    pub mtime_ns: u64,
    pub ctime_ns: u64,
    pub content_generation: u64,
    pub lock_generation: u64,
    pub acl_generation: u64,
    /// A file: it is ephemeral. A directory: files created in it will be.
    pub ephemeral: bool,
    /// Entries of a directory; 0 for files.
    pub children: u64,
    /// st_nlink: a file's names (0 once it lost the last while open); a directory's 2 and one
    /// per subdirectory.
    pub links: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub ino: u64,
    pub kind: NodeKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    Shared,
    Exclusive,
}

/// flock(2) locks belong to an open file description and cover the whole file; POSIX (fcntl)
/// locks belong to a process (or, for OFD locks, an open file description) and cover byte
/// ranges. The two never conflict with each other, as on Linux.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockStyle {
    Flock,
    Posix,
}

/// A lock request. The owner is (mount session, `owner`); `owner` is the kernel's lock owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockSpec {
    /// The backend handle the request comes through; it names the node.
    pub handle: u64,
    pub owner: u64,
    pub style: LockStyle,
    pub kind: LockKind,
    pub start: u64,
    /// Exclusive; `u64::MAX` is "to the end of the file".
    pub end: u64,
    /// The requesting process as this host sees it (shown by F_GETLK and the holders xattr).
    pub pid: u32,
}

/// A granted lock, as F_GETLK and `user.lockfs.holders` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub session: u64,
    pub owner: u64,
    pub style: LockStyle,
    pub kind: LockKind,
    pub start: u64,
    pub end: u64,
    pub pid: u32,
    /// The host of the holder's session.
    pub host: String,
    pub since_ns: u64,
}

/// What the mount does to the processes holding a lock on a node when it loses the lock, by
/// the node's own setting (`user.lockfs.on_loss`, see `lock_loss.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnLoss {
    /// SIGTERM, then SIGKILL after the mount's grace period.
    Term,
    /// SIGKILL at once.
    Kill,
}

/// A lock of this mount's session that an administrator released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevokedLock {
    pub ino: u64,
    /// The mount's handle it was taken through, if it is still open.
    pub handle: Option<u64>,
    pub owner: u64,
    pub style: LockStyle,
}

/// A lock granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The node's lock generation after the grant (the fencing token).
    pub generation: u64,
    /// The node's `on_loss` setting at the grant.
    pub on_loss: Option<OnLoss>,
}

/// A node's lock settings, as its `user.lockfs.*` attributes show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockSettings {
    /// How many exclusive flock holders it admits at once (a semaphore; 1 unless set).
    pub max_holders: u32,
    pub on_loss: Option<OnLoss>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockReply {
    Granted(Grant),
    /// `conflict` is the first conflicting holder, `None` when only queued waiters or a
    /// lock-delay stand in the way.
    WouldBlock {
        conflict: Option<Holder>,
    },
    /// The request waits in the cluster's FIFO queue: await [`Backend::wait_granted`].
    Queued {
        wait: u64,
    },
}

/// What a setattr(2) changes: each field given changes, `size` truncates or extends with
/// zeros. Times are wall-clock nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetAttrs {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime_ns: Option<u64>,
    pub mtime_ns: Option<u64>,
}

impl SetAttrs {
    /// A truncation (or extension with zeros) to `size`, and nothing else.
    pub fn size(size: u64) -> Self {
        SetAttrs {
            size: Some(size),
            ..SetAttrs::default()
        }
    }

    /// Whether anything but the size is given.
    pub fn others(&self) -> bool {
        self.mode.is_some()
            || self.uid.is_some()
            || self.gid.is_some()
            || self.atime_ns.is_some()
            || self.mtime_ns.is_some()
    }
}

/// The file creat(2) makes when none is there: its mode and owner; `exclusive` is O_EXCL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewFile {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub exclusive: bool,
}

/// What a rename does with its destination (renameat2's flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenameHow {
    /// Replaces what is there (rename(2)).
    Replace,
    /// Fails with EEXIST if anything is there (RENAME_NOREPLACE).
    NoReplace,
    /// Swaps with what is there, which must exist (RENAME_EXCHANGE).
    Exchange,
}

/// The cluster as the mount sees it. See the module docs.
pub trait Backend: Send + Sync + 'static {
    fn lookup(&self, parent: u64, name: &str) -> BoxFut<'_, FileAttr>;
    fn getattr(&self, ino: u64) -> BoxFut<'_, FileAttr>;
    /// As `getattr`, but never from a cache: for what a cache does not keep current (the
    /// lock generation).
    fn getattr_fresh(&self, ino: u64) -> BoxFut<'_, FileAttr> {
        self.getattr(ino)
    }
    /// What `lookup` would answer, if a cache answers it at once (no round trip): the request
    /// handler then replies without a task of its own. With it, how long the cache's lease
    /// has left: the longest the kernel may keep the answer (see `kernel.rs`).
    fn cached_lookup(
        &self,
        _parent: u64,
        _name: &str,
    ) -> Option<(Result<FileAttr, Errno>, Duration)> {
        None
    }
    /// What `getattr` would answer, if a cache answers it at once, and the lease left.
    fn cached_getattr(&self, _ino: u64) -> Option<(FileAttr, Duration)> {
        None
    }
    /// The state of the session, for the mount's metrics: "live", "jeopardy" or "expired".
    fn session_state(&self) -> &'static str {
        "live"
    }
    /// The cache's (hits, misses) counters, if the mount caches.
    fn cache_counters(&self) -> Option<(Counter, Counter)> {
        None
    }
    /// What the kernel is let cache, if anything (see `kernel.rs`).
    fn kernel(&self) -> Option<&KernelCache> {
        None
    }
    /// The whole contents `read(session, ino, 0, u64::MAX)` would answer, if a cache answers
    /// at once; `None` also when `session` is not the live one (the caller then asks `read`,
    /// which says why).
    fn cached_read(&self, _session: u64, _ino: u64) -> Option<std::sync::Arc<Vec<u8>>> {
        None
    }
    /// The live session's id, if there is one and it can be known at once (never opens one).
    fn live_session(&self) -> Option<u64> {
        None
    }
    /// The live session and how long its lease certainly still runs (zero once it may have
    /// run out), if known at once.
    fn lease_left(&self) -> Option<(u64, Duration)> {
        None
    }
    /// The locks an administrator released since the last call (`lockfs locks release`).
    fn take_revoked(&self) -> Vec<RevokedLock> {
        Vec::new()
    }
    /// Whether the lease of `session` (the live session if `None`) certainly still holds: a
    /// lock granted in it may be handed to a process (a backend without leases: always).
    fn lease_holds(&self, _session: Option<u64>) -> BoxFut<'_, bool> {
        Box::pin(std::future::ready(Ok(true)))
    }
    /// Notes a file opened in `session` without a cluster handle, so that it stays usable
    /// should it lose its name (`pins.rs`). `false`: this backend cannot keep such a file;
    /// open it with a handle instead.
    fn pin(&self, _session: u64, _ino: u64) -> bool {
        false
    }
    /// The release of a file [`Backend::pin`] accepted.
    fn unpin(&self, _session: u64, _ino: u64) {}
    /// Changes what `set` gives (see [`SetAttrs`]); with nothing given, only the change time
    /// moves.
    fn setattr(&self, ino: u64, set: SetAttrs) -> BoxFut<'_, FileAttr>;
    /// Sorted by name; without "." and "..".
    fn readdir(&self, ino: u64) -> BoxFut<'_, Vec<DirEntry>>;
    fn mkdir(&self, parent: u64, name: &str, mode: u32, uid: u32, gid: u32)
        -> BoxFut<'_, FileAttr>;
    fn unlink(&self, parent: u64, name: &str) -> BoxFut<'_, ()>;
    /// link(2): `name` in `parent` becomes one more name of file `ino`.
    fn link(&self, ino: u64, parent: u64, name: &str) -> BoxFut<'_, FileAttr>;
    /// symlink(2): a symbolic link `name` in `parent` to `target`.
    fn symlink(
        &self,
        parent: u64,
        name: &str,
        target: &str,
        uid: u32,
        gid: u32,
    ) -> BoxFut<'_, FileAttr>;
    /// readlink(2): the target of symbolic link `ino`.
    fn readlink(&self, ino: u64) -> BoxFut<'_, Vec<u8>>;
    fn rmdir(&self, parent: u64, name: &str) -> BoxFut<'_, ()>;
    /// Atomic, as rename(2) and renameat2(2) with `how`.
    fn rename(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        how: RenameHow,
    ) -> BoxFut<'_, ()>;
    /// The id of the mount's live session, opening a new session first if the last one ended
    /// (a commit then, and only then). An open file notes the session it was opened in and
    /// passes it to the calls below, which fail with [`Errno::EKEYEXPIRED`] once that session
    /// has ended, whether or not the file has a handle.
    fn session(&self) -> BoxFut<'_, u64>;
    /// Opens a file or directory in `session` (a commit); EKEYEXPIRED if that session is no
    /// longer the live one. A handle keeps an ephemeral file alive and carries flock and POSIX
    /// locks; [`Backend::close`] ends it. Reading needs no handle.
    fn open(&self, session: u64, ino: u64) -> BoxFut<'_, u64>;
    /// Creates the file if missing and opens it in `session`, in one step (an ephemeral file
    /// is never without a handle). `exclusive` is O_EXCL: EEXIST if the name exists,
    /// cluster-wide. The handle is `None` when the file was made without one and is pinned
    /// in `session` instead (see [`Backend::pin`]): the caller releases it with
    /// [`Backend::unpin`], as for a file opened lazily.
    fn create(
        &self,
        session: u64,
        parent: u64,
        name: &str,
        new: NewFile,
    ) -> BoxFut<'_, (Option<u64>, FileAttr)>;
    /// Reads a file opened in `session`, by inode: a linearizable read, no commit and no
    /// handle needed. EKEYEXPIRED if `session` has ended, as for every other use of a file
    /// opened in it. Fewer bytes than `len` only at the end of the file.
    fn read(&self, session: u64, ino: u64, offset: u64, len: u64) -> BoxFut<'_, Vec<u8>>;
    /// Writes to a file opened in `session` (with or without a handle), visible everywhere
    /// when it returns. `truncate` empties the file first in the same commit (an O_TRUNC
    /// folded into the first write); `append` writes at the end of the file as it is when the
    /// write commits, ignoring `offset`.
    fn write(
        &self,
        session: u64,
        ino: u64,
        offset: u64,
        data: Vec<u8>,
        truncate: bool,
        append: bool,
    ) -> BoxFut<'_, FileAttr>;
    /// Releases the handle's flock locks and withdraws its ephemeral hold. POSIX locks stay:
    /// the mount unlocks them as the kernel tells it (see `owners.rs`).
    fn close(&self, handle: u64) -> BoxFut<'_, ()>;
    fn lock(&self, spec: LockSpec, wait: bool) -> BoxFut<'_, LockReply>;
    /// Completes when the queued wait is granted, or fails when it never can be (node deleted,
    /// handle closed, session expired).
    fn wait_granted(&self, wait: u64) -> BoxFut<'_, Grant>;
    /// Withdraws a queued wait. `true` when the grant won the race: the backend released
    /// what the wait obtained, so nothing stays granted to a process that saw EINTR.
    fn cancel_wait(&self, wait: u64) -> BoxFut<'_, bool>;
    /// Removes the owner's locks of this style in the range; unlocking nothing succeeds.
    fn unlock(
        &self,
        handle: u64,
        owner: u64,
        style: LockStyle,
        start: u64,
        end: u64,
    ) -> BoxFut<'_, ()>;
    /// F_GETLK: the first holder that would conflict with `spec`, if any.
    fn getlk(&self, spec: LockSpec) -> BoxFut<'_, Option<Holder>>;
    /// Directories only: files created in it from now on are ephemeral.
    fn set_ephemeral(&self, ino: u64, ephemeral: bool) -> BoxFut<'_, FileAttr>;
    /// Every granted lock on the node.
    fn holders(&self, ino: u64) -> BoxFut<'_, Vec<Holder>>;
    fn lock_settings(&self, ino: u64) -> BoxFut<'_, LockSettings>;
    /// How many exclusive flock holders the node admits at once (1 to 1000); EBUSY below the
    /// exclusive flock holders it has now.
    fn set_max_holders(&self, ino: u64, max_holders: u32) -> BoxFut<'_, ()>;
    /// What the holders' mounts do when they lose a lock on the node (`None`: their own
    /// `on_lock_loss` option decides).
    fn set_on_loss(&self, ino: u64, on_loss: Option<OnLoss>) -> BoxFut<'_, ()>;
}
