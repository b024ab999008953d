//! The FUSE request handlers: each kernel request becomes backend calls, answered from a task.
//!
//! fuser reads requests on its own thread and calls these handlers one at a time. A handler
//! whose answer needs no round trip (the cache holds it, or there is nothing to do: the close
//! of a file read without a lock) answers at once. Every other handler copies what it needs
//! out of the request and spawns a task on the mount's tokio runtime that does the round trips
//! and replies, so a slow commit or a lock wait of minutes never holds up the next request.
//! The kernel itself orders what must be ordered (it waits for our answer before it sends the
//! next write on an inode, for example).
//!
//! Capabilities asked of the kernel in `init`:
//! - FUSE_POSIX_LOCKS and FUSE_FLOCK_LOCKS: fcntl and flock locks come to us instead of being
//!   kept in this kernel only. Without them there is no cluster-wide lock, so a kernel lacking
//!   them fails the mount.
//! - FUSE_ATOMIC_O_TRUNC: O_TRUNC arrives as a flag of OPEN instead of a separate SETATTR of size
//!   0, so the truncation can be folded into the first write (see `open_files.rs`). Every Linux
//!   since 2.6.24 has it; without it the mount is refused rather than show empty files.
//!
//! Every open file is opened with FOPEN_DIRECT_IO: reads and writes reach the mount instead of
//! the page cache, so `cat` never shows another host's old data, and a read pass serves one
//! version of the file (see `open_files::Pass`), which the page cache could not promise: it
//! fills page by page, and a replace by another host between two pages would mix two
//! versions. Only shared mappings use the page cache, where the kernel allows it
//! (FUSE_DIRECT_IO_ALLOW_MMAP, asked for by a caching mount: see `kernel.rs`).
//!
//! What costs a Raft commit: every change to the tree, and a backend handle's open and close.
//! A read-only open of an ordinary file takes no handle until a lock is taken through it (see
//! `open_files.rs`), so `cat`, `stat` and `ls` cost linearizable reads only, no commit.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    FileHandle, FopenFlags, Generation, INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyIoctl, ReplyLock, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request,
    TimeOrNow, WriteFlags,
};

use super::attr::{self, TTL};
use super::backend::{
    Backend, Errno, FileAttr, LockStyle, NewFile, NodeKind, OnLoss, RenameHow, SetAttrs,
};
use super::echo::{self, Echoes, Replay};
use super::errors::to_kernel;
use super::kernel;
use super::lock_loss::{self, Policy as LockLossPolicy};
use super::lock_style;
use super::locks::{self, KernelLock};
use super::metrics::{MountMetrics, Timing};
use super::open_files::{self, Ephemeral, OpenFile, OpenFiles};
use super::owners::LockOwners;
use super::xattr;
use crate::client::on_behalf_of;
use crate::proto::UserIds;

/// What the request tasks share.
pub struct Inner {
    pub backend: Arc<dyn Backend>,
    pub files: OpenFiles,
    pub owners: LockOwners,
    /// Set when the session ends: lock waits give up.
    pub shutdown: tokio::sync::watch::Sender<bool>,
    /// Bumped for a file by every write or truncation of it made through this mount, so a
    /// read never serves a version of a file older than this host's own last write to it
    /// (see `Inner::read`).
    pub writes: WriteEpochs,
    /// Which files are ephemeral, from the attributes the cluster sent: an open needs to know.
    pub ephemeral: Ephemeral,
    /// Creations replayed to the kernel (`echo.rs`).
    pub echoes: Arc<Echoes>,
    pub metrics: Arc<MountMetrics>,
    /// `on_lock_loss` (`lock_loss.rs`): the policy, and the locks held here and by whom.
    pub lock_loss: std::sync::OnceLock<LockLossPolicy>,
    pub holders: lock_loss::Holders,
    /// Tells flock(2) requests from fcntl(2) ones (`lock_style.rs`).
    pub callers: lock_style::CallerFiles,
}

/// How many writes this mount made to each file (a number that only grows), for
/// `Inner::read`. Bounded: past [`WriteEpochs::MAX`] files it forgets them all, and every
/// file then counts as written just now, which sends reads to the cluster, never to an old
/// version.
#[derive(Default)]
pub struct WriteEpochs {
    /// (writes so far, the count of each file written, the count of every other file)
    state: std::sync::Mutex<(u64, std::collections::HashMap<u64, u64>, u64)>,
}

impl WriteEpochs {
    const MAX: usize = 65536;

    pub fn bump(&self, ino: u64) {
        let mut s = self.state.lock().expect("poisoned");
        s.0 += 1;
        if s.1.len() >= Self::MAX && !s.1.contains_key(&ino) {
            s.2 = s.0;
            s.1.clear();
        }
        let now = s.0;
        s.1.insert(ino, now);
    }

    pub fn of(&self, ino: u64) -> u64 {
        let s = self.state.lock().expect("poisoned");
        s.1.get(&ino).copied().unwrap_or(s.2)
    }
}

/// How often the session is looked at for `on_lock_loss`.
const LOCK_LOSS_POLL: Duration = Duration::from_millis(100);

/// Watches the mount's session until the mount goes; the holders of the locks of a session
/// that is lost, or in jeopardy for longer than the policy allows, are signalled
/// (`lock_loss.rs`): by the lock guardian, told the leases and the sessions that ended, or,
/// if it could not be started, from here.
async fn watch_for_lock_loss(inner: std::sync::Weak<Inner>) {
    let mut jeopardy_since: Option<std::time::Instant> = None;
    loop {
        tokio::time::sleep(LOCK_LOSS_POLL).await;
        let Some(inner) = inner.upgrade() else { return };
        let Some(policy) = inner.lock_loss.get() else {
            return;
        };
        revoke(&inner, policy);
        if inner.holders.is_empty() {
            jeopardy_since = None;
            continue;
        }
        if inner.holders.guarded() {
            tell_lease(&inner);
            match inner.backend.session_state() {
                // The deadline told last stands: the guardian acts at it (plus `after`).
                "jeopardy" => {}
                "expired" => inner.holders.hand_over(None),
                _ => {
                    if let Some(live) = inner.backend.live_session() {
                        inner.holders.hand_over(Some(live));
                    }
                }
            }
            continue;
        }
        let (lost, why) = match inner.backend.session_state() {
            "jeopardy" => {
                let since = *jeopardy_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() < policy.after {
                    continue;
                }
                (inner.holders.take_lost(None), "the session is in jeopardy")
            }
            "expired" => (inner.holders.take_lost(None), "the session ended"),
            _ => {
                jeopardy_since = None;
                // Locks of an earlier session went with it.
                match inner.backend.live_session() {
                    Some(live) => (inner.holders.take_lost(Some(live)), "the session ended"),
                    None => continue,
                }
            }
        };
        if !lost.is_empty() {
            let policy = policy.clone();
            tokio::spawn(async move { lock_loss::enforce(lost, &policy, why).await });
        }
    }
}

/// Locks an administrator released (`lockfs locks release`) are lost like those of an ended
/// session: the files they were held through fail from now on (EIO), and their holders are
/// signalled as the file's `on_loss` or the mount's `on_lock_loss` says.
fn revoke(inner: &Inner, policy: &LockLossPolicy) {
    let mut lost = Vec::new();
    for r in inner.backend.take_revoked() {
        if let Some(handle) = r.handle {
            for fh in inner.files.revoke(handle) {
                log::warn!(
                    "an administrator released a lock on inode {} held through file {fh}: it fails from now on",
                    r.ino
                );
            }
        }
        lost.extend(inner.holders.take_lock(r.ino, r.owner, r.style));
    }
    if !lost.is_empty() {
        let policy = policy.clone();
        tokio::spawn(async move {
            lock_loss::enforce(lost, &policy, "an administrator released the lock").await
        });
    }
}

/// Tells the lock guardian how long the live session's lease certainly holds, while it does:
/// once it ran out, the deadline told last stands.
pub(super) fn tell_lease(inner: &Inner) {
    if let Some((session, left)) = inner.backend.lease_left().filter(|(_, l)| !l.is_zero()) {
        let deadline = super::guardian::monotonic_ns() + left.as_nanos() as u64;
        inner.holders.lease(session, deadline);
    }
}

/// The fuser filesystem of a lockfs mount.
pub struct LockFs {
    inner: Arc<Inner>,
    runtime: tokio::runtime::Handle,
    root_squash: bool,
    /// The value of `user.lockfs.cluster` on the root.
    cluster: Vec<u8>,
}

impl LockFs {
    /// With `root_squash`, requests of uid or gid 0 go to the cluster as `nobody`'s.
    pub fn new(
        backend: Arc<dyn Backend>,
        runtime: tokio::runtime::Handle,
        root_squash: bool,
        metrics: Arc<MountMetrics>,
    ) -> Self {
        LockFs {
            root_squash,
            inner: Arc::new(Inner {
                backend,
                files: OpenFiles::default(),
                owners: LockOwners::default(),
                writes: WriteEpochs::default(),
                echoes: Arc::default(),
                ephemeral: Ephemeral::default(),
                shutdown: tokio::sync::watch::channel(false).0,
                metrics,
                lock_loss: std::sync::OnceLock::new(),
                holders: lock_loss::Holders::default(),
                callers: lock_style::CallerFiles::default(),
            }),
            runtime,
            cluster: Vec::new(),
        }
    }

    /// The names being replayed as created to this mount's kernel (`echo.rs`).
    pub fn echoes(&self) -> Arc<Echoes> {
        self.inner.echoes.clone()
    }

    /// Says on the root's `user.lockfs.cluster` how to reach the cluster (see `xattr.rs`).
    pub fn with_cluster(mut self, cluster: &str) -> Self {
        self.cluster = cluster.as_bytes().to_vec();
        self
    }

    /// The processes holding locks here are signalled when the session is lost, as the
    /// policy and each file's `on_loss` say (`lock_loss.rs`): a task watches the session for as
    /// long as the mount lives.
    pub fn with_lock_loss(self, policy: LockLossPolicy) -> Self {
        if let Some(signal) = policy.signal {
            log::info!(
                "on_lock_loss: signal {signal} after {:?} in jeopardy, SIGKILL {:?} later",
                policy.after,
                policy.grace
            );
        }
        // The guardian acts when this process cannot (`guardian.rs`).
        match std::env::current_exe() {
            Ok(program) => self
                .inner
                .holders
                .set_guardian(super::guardian::Guardian::new(program, &policy)),
            Err(e) => log::error!("on_lock_loss: no lock guardian: {e}"),
        }
        let _ = self.inner.lock_loss.set(policy);
        self.runtime
            .spawn(watch_for_lock_loss(Arc::downgrade(&self.inner)));
        self
    }

    /// Runs `work` on the runtime with the shared state, on behalf of the process that made
    /// `req`: the cluster checks permissions for that process's user and groups.
    /// `timing` ends when the task does (see `metrics.rs`).
    fn spawn<F, Fut>(&self, timing: Timing, req: &Request, work: F)
    where
        F: FnOnce(Arc<Inner>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let user = user_of(req, self.root_squash);
        let work = work(self.inner.clone());
        self.runtime.spawn(on_behalf_of(user, async move {
            work.await;
            drop(timing);
        }));
    }
}

/// The ids of the process behind `req`: its uid and gid as the kernel gave them, and its
/// supplementary groups from /proc (none if it is gone); with `squash`, 0 becomes `nobody`.
/// Root's groups decide nothing, so for root (unsquashed) /proc is not read at all.
fn user_of(req: &Request, squash: bool) -> UserIds {
    const NOBODY: u32 = 65534;
    let squashed = |id: u32| if squash && id == 0 { NOBODY } else { id };
    let root = req.uid() == 0 && !squash;
    let groups = (!root)
        .then(|| std::fs::read_to_string(format!("/proc/{}/status", req.pid())).ok())
        .flatten()
        .and_then(|status| {
            status.lines().find_map(|l| {
                l.strip_prefix("Groups:").map(|g| {
                    g.split_whitespace()
                        .filter_map(|n| n.parse().ok())
                        .map(squashed)
                        .collect()
                })
            })
        })
        .unwrap_or_default();
    let mut user = UserIds::new();
    user.uid = squashed(req.uid());
    user.gid = squashed(req.gid());
    user.groups = groups;
    user
}

fn name_of(name: &OsStr) -> Result<String, Errno> {
    name.to_str().map(str::to_owned).ok_or(Errno::EINVAL)
}

fn time_ns(time: TimeOrNow) -> u64 {
    let time = match time {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    };
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// What a replayed creation (`echo.rs`) answers: the node's attributes as the cluster has
/// them, or a stand-in made from the event when the node is gone again already (created and
/// deleted elsewhere before the replay), so the kernel still reports the creation.
fn replayed(found: Result<FileAttr, Errno>, instance: u64, dir: bool) -> Result<FileAttr, Errno> {
    match found {
        Err(Errno::ENOENT) => Ok(echo::stand_in(instance, dir)),
        other => other,
    }
}

fn reply_entry(reply: ReplyEntry, result: Result<FileAttr, Errno>) {
    match result {
        Ok(attr) => reply.entry(&TTL, &attr::to_kernel(&attr), Generation(0)),
        Err(e) => reply.error(to_kernel(e)),
    }
}

fn reply_attr(reply: ReplyAttr, result: Result<FileAttr, Errno>) {
    match result {
        Ok(attr) => reply.attr(&TTL, &attr::to_kernel(&attr)),
        Err(e) => reply.error(to_kernel(e)),
    }
}

fn reply_empty(reply: ReplyEmpty, result: Result<(), Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(to_kernel(e)),
    }
}

impl Inner {
    /// Commits an O_TRUNC that no write has carried yet.
    async fn apply_pending_truncate(&self, file: &OpenFile) -> Result<(), Errno> {
        let mut pending = file.pending_truncate.lock().await;
        if *pending {
            self.backend.setattr(file.ino, SetAttrs::size(0)).await?;
            *pending = false;
        }
        Ok(())
    }

    /// A close(2): the closing process's POSIX locks on the file go, as on a local filesystem.
    /// A pending O_TRUNC stays pending (see `open_files.rs`). The unlock goes through the
    /// handles of this file and of the open files the owner locked through (one and the same,
    /// usually); a handle is opened for it only if none of them has one (this file was opened
    /// lazily and the ones locked through are closed).
    ///
    /// `through` is what [`LockOwners::take_owner`] gave for the owner (the request handler
    /// answers at once when it gave nothing).
    async fn flush(&self, fh: u64, owner: u64, through: HashSet<u64>) -> Result<(), Errno> {
        let file = self.files.get(fh)?;
        let mut handles = Vec::new();
        for other in through.into_iter().chain([fh]) {
            if let Ok(other) = self.files.get(other) {
                handles.extend(other.opened_handle().await);
            }
        }
        handles.sort_unstable();
        handles.dedup();
        if handles.is_empty() {
            handles.push(file.handle(&*self.backend).await?);
        }
        let mut result = Ok(());
        for handle in handles {
            let unlocked = self
                .backend
                .unlock(handle, owner, LockStyle::Posix, 0, u64::MAX)
                .await;
            result = result.and(unlocked);
        }
        if result.is_ok() {
            self.holders.released(lock_loss::LockKey {
                fh,
                ino: file.ino,
                owner,
                style: LockStyle::Posix,
            });
        }
        result
    }

    /// The last close of an open file description: a truncation no write carried, the
    /// descriptor-owned POSIX locks, then the backend handle if one was opened (which takes
    /// the flock locks with it). Without a handle nothing held in the cluster belongs to the
    /// file, and the release costs no round trip.
    ///
    /// The request handler has taken `file` out of the table already.
    async fn release(&self, fh: u64, file: Arc<OpenFile>) -> Result<(), Errno> {
        let truncated = self.apply_pending_truncate(&file).await;
        let released = self.owners.take_released(file.ino, fh);
        let Some(handle) = file.take_handle().await else {
            return truncated;
        };
        for owner in released {
            let unlocked = self
                .backend
                .unlock(handle, owner, LockStyle::Posix, 0, u64::MAX)
                .await;
            if let Err(e) = unlocked {
                log::warn!(
                    "unlocking owner {owner} of inode {} at release: {e:?}",
                    file.ino
                );
            }
        }
        let closed = self.backend.close(handle).await;
        truncated.and(closed)
    }

    /// Reads from one version of the file per pass. A read at offset 0 fetches the whole file
    /// (files are small) and keeps it with the open file; the reads that follow at higher
    /// offsets are served from it. `cat` reads until a read returns nothing, so without this a
    /// replace by another host between two of its reads would show the first part of one
    /// version and the end of another: DESIGN.md promises whole versions only. A read at a
    /// higher offset with no version kept, or after this mount wrote to this file, goes to the
    /// cluster. Writes to other files leave the kept version in use, so a host that keeps
    /// replacing one file never makes a `cat` of another mix two versions.
    ///
    /// [`Inner::read_at_once`] serves what needs no round trip; this serves the rest.
    /// `pages`: the kernel fills its page cache (a shared mapping's fault), which takes no
    /// part in read passes: it is answered with the contents as they are.
    async fn read(&self, fh: u64, offset: u64, size: u32, pages: bool) -> Result<Vec<u8>, Errno> {
        let file = self.files.get(fh)?;
        let session = file.session(&*self.backend).await?;
        let version = self.writes.of(file.ino);
        if let Some(read) = file.continue_pass(version, offset, size).filter(|_| !pages) {
            return Ok(read);
        }
        let data = Arc::new(self.backend.read(session, file.ino, 0, u64::MAX).await?);
        Ok(Self::answer(&file, version, data, offset, size, pages))
    }

    /// A read answered from `data`, the whole file as read at `version`: a page-cache fill as
    /// it is, any other read as the start of a new pass.
    fn answer(
        file: &OpenFile,
        version: open_files::Version,
        data: Arc<Vec<u8>>,
        offset: u64,
        size: u32,
        pages: bool,
    ) -> Vec<u8> {
        if pages {
            open_files::slice(&data, offset, size)
        } else {
            file.start_pass(version, data, offset, size)
        }
    }

    /// What [`Inner::read`] would answer, when it needs no round trip: a read that continues
    /// the pass under way, or one of a file the mount's cache holds (which starts a pass).
    fn read_at_once(&self, fh: u64, offset: u64, size: u32, pages: bool) -> Option<Vec<u8>> {
        let file = self.files.get(fh).ok().filter(|f| !f.revoked())?;
        let version = self.writes.of(file.ino);
        if let Some(read) = file.continue_pass(version, offset, size).filter(|_| !pages) {
            return Some(read);
        }
        let data = self.backend.cached_read(file.opened_in()?, file.ino)?;
        Some(Self::answer(&file, version, data, offset, size, pages))
    }

    /// A new empty regular file, opened for nothing (mknod): created with a handle, which is
    /// closed at once (or without one, pinned, and unpinned at once). A file in an ephemeral directory lives only while it is open, so it
    /// cannot be made this way (EPERM).
    async fn make_file(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<FileAttr, Errno> {
        let session = self.backend.session().await?;
        let (handle, attr) = self
            .backend
            .create(
                session,
                parent,
                name,
                NewFile {
                    mode,
                    uid,
                    gid,
                    exclusive: true,
                },
            )
            .await?;
        match handle {
            Some(handle) => self.backend.close(handle).await?,
            None => self.backend.unpin(session, attr.ino),
        }
        if attr.ephemeral {
            return Err(Errno::EPERM);
        }
        Ok(attr)
    }

    /// fallocate(2) on an open file, as tmpfs has it: `mode` 0 makes the file at least
    /// `offset + len` long (the new bytes read as zeros), FALLOC_FL_KEEP_SIZE alone changes
    /// nothing (there is no space to reserve), and FALLOC_FL_PUNCH_HOLE (which the kernel lets
    /// through only with FALLOC_FL_KEEP_SIZE) writes zeros over the part of the range within
    /// the file. Anything else is EOPNOTSUPP. No request is larger than a client frame, so
    /// neither is a range of zeros (EFBIG beyond, before anything is allocated).
    async fn fallocate(&self, fh: u64, offset: u64, len: u64, mode: i32) -> Result<(), Errno> {
        let end = offset.checked_add(len).ok_or(Errno::EFBIG)?;
        let file = self.files.get(fh)?;
        let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        if mode == libc::FALLOC_FL_KEEP_SIZE {
            return Ok(());
        }
        if mode != 0 && mode != punch {
            return Err(Errno::ENOTSUP);
        }
        let size = self.backend.getattr_fresh(file.ino).await?.size;
        if mode == 0 {
            if end > size {
                self.setattr(file.ino, Some(fh), SetAttrs::size(end))
                    .await?;
            }
            return Ok(());
        }
        let stop = end.min(size);
        if stop <= offset {
            return Ok(());
        }
        if stop - offset > crate::proto::CLIENT_MAX_FRAME as u64 {
            return Err(Errno::EFBIG);
        }
        let zeros = vec![0; (stop - offset) as usize];
        self.write(fh, offset, zeros, false).await.map(|_| ())
    }

    /// Keeps `file` (not a directory) open under a new file handle, and tells the kernel
    /// cache, whose mapped pages of it matter while it is open (see `kernel.rs`).
    fn insert_file(&self, file: OpenFile) -> u64 {
        if let Some(k) = self.backend.kernel() {
            k.file_opened(file.ino);
        }
        self.files.insert(file)
    }

    /// The OPEN [`Inner::open`] would make without a round trip: an open of a file known not
    /// to be ephemeral, while the live session is known. `None`: ask `open`.
    fn open_at_once(&self, ino: u64, flags: i32) -> Option<u64> {
        let lazy = flags & libc::O_CREAT == 0 && self.ephemeral.get(ino) == Some(false);
        let session = self.backend.live_session().filter(|_| lazy)?;
        if !self.backend.pin(session, ino) {
            return None;
        }
        let truncate = flags & libc::O_TRUNC != 0;
        Some(self.insert_file(OpenFile::lazy(ino, session, truncate)))
    }

    /// A write needs no handle, only the file's session: one commit, whether or not the file
    /// was opened with one.
    async fn write(&self, fh: u64, offset: u64, data: Vec<u8>, append: bool) -> Result<u32, Errno> {
        let file = self.files.get(fh)?;
        self.writes.bump(file.ino);
        let session = file.session(&*self.backend).await?;
        let len = u32::try_from(data.len()).map_err(|_| Errno::EINVAL)?;
        let mut pending = file.pending_truncate.lock().await;
        self.backend
            .write(session, file.ino, offset, data, *pending, append)
            .await?;
        *pending = false;
        Ok(len)
    }

    async fn setattr(&self, ino: u64, fh: Option<u64>, set: SetAttrs) -> Result<FileAttr, Errno> {
        let size = set.size;
        if size.is_some() {
            self.writes.bump(ino);
        }
        // ftruncate after an O_TRUNC that no write carried yet: truncate to zero first, so
        // the old bytes below the new size are gone as they would be locally.
        let file = match (size, fh) {
            (Some(_), Some(fh)) => Some(self.files.get(fh)?),
            _ => None,
        };
        let mut pending = match &file {
            Some(file) => Some(file.pending_truncate.lock().await),
            None => None,
        };
        if let (Some(pending), Some(size)) = (pending.as_deref_mut(), size) {
            if *pending && size > 0 {
                self.backend.setattr(ino, SetAttrs::size(0)).await?;
            }
            *pending = false;
        }
        self.backend.setattr(ino, set).await
    }

    async fn readdir(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        mut reply: ReplyDirectory,
    ) -> Result<(), (Errno, ReplyDirectory)> {
        let file = match self.files.get(fh) {
            Ok(file) => file,
            Err(e) => return Err((e, reply)),
        };
        let cached = file.listing.lock().unwrap().clone();
        let listing = match cached {
            Some(listing) if offset > 0 => listing,
            _ => match self.backend.readdir(ino).await {
                Ok(entries) => {
                    let listing = Arc::new(entries);
                    *file.listing.lock().unwrap() = Some(listing.clone());
                    listing
                }
                Err(e) => return Err((e, reply)),
            },
        };
        // "." and ".." first; the kernel ignores the inode of "..".
        let dots = [(ino, "."), (ino, "..")]
            .into_iter()
            .map(|(i, n)| (i, fuser::FileType::Directory, n));
        let entries = listing
            .iter()
            .map(|e| (e.ino, attr::file_type(e.kind), e.name.as_str()));
        for (index, (ino, kind, name)) in dots.chain(entries).enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), index as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
        Ok(())
    }

    /// Passes on attributes the cluster sent, noting whether the file is ephemeral.
    fn seen(&self, result: Result<FileAttr, Errno>) -> Result<FileAttr, Errno> {
        if let Ok(attr) = &result {
            self.ephemeral.note(attr);
        }
        result
    }

    /// OPEN of an existing file. A backend handle (a commit now and one at release) only if
    /// the cluster must know of the open: for writing, with O_TRUNC or O_CREAT, or of an
    /// ephemeral file, which lives while a handle holds it. Otherwise the file is opened
    /// lazily: no handle until a lock needs one (see `open_files.rs`). Not knowing whether the
    /// file is ephemeral, it asks (a read).
    /// Only an ephemeral file needs a handle from the start (the handle keeps it alive). Any
    /// other file opens without one, for reading or writing alike: writes and reads go in the
    /// file's session, a lock takes a handle when it needs one, and the release of a file
    /// without a handle costs no round trip. Permission to write is checked by the kernel
    /// at the open (`default_permissions`) and by the cluster at every write.
    async fn open(&self, ino: u64, flags: i32) -> Result<u64, Errno> {
        let eager = flags & libc::O_CREAT != 0
            || match self.ephemeral.get(ino) {
                Some(known) => known,
                None => self.seen(self.backend.getattr(ino).await)?.ephemeral,
            };
        let session = self.backend.session().await?;
        let truncate = flags & libc::O_TRUNC != 0;
        if !eager && self.backend.pin(session, ino) {
            return Ok(self.insert_file(OpenFile::lazy(ino, session, truncate)));
        }
        let handle = self.backend.open(session, ino).await?;
        Ok(self.insert_file(OpenFile::file(ino, session, Some(handle), truncate)))
    }

    async fn getxattr(&self, ino: u64, name: xattr::Name) -> Result<Vec<u8>, Errno> {
        if name == xattr::Name::Holders {
            return Ok(xattr::holders_value(&self.backend.holders(ino).await?));
        }
        if name == xattr::Name::MaxHolders {
            let settings = self.backend.lock_settings(ino).await?;
            return Ok(settings.max_holders.to_string().into_bytes());
        }
        if name == xattr::Name::OnLoss {
            let settings = self.backend.lock_settings(ino).await?;
            return settings
                .on_loss
                .map(xattr::on_loss_value)
                .ok_or(Errno::ENODATA);
        }
        Ok(xattr::value(name, &self.backend.getattr_fresh(ino).await?))
    }
}

impl fuser::Filesystem for LockFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let needed = InitFlags::FUSE_POSIX_LOCKS
            | InitFlags::FUSE_FLOCK_LOCKS
            | InitFlags::FUSE_ATOMIC_O_TRUNC;
        config.add_capabilities(needed).map_err(|missing| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                format!("the kernel's FUSE lacks {missing:?}, which lockfs needs"),
            )
        })?;
        // Shared mappings only where other hosts' writes reach the mapped pages: a caching
        // mount hears of them (see `kernel.rs`). Elsewhere `mmap(MAP_SHARED)` stays ENODEV.
        if self.inner.backend.kernel().is_some() {
            match config.add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP) {
                Ok(()) => log::info!("shared mappings allowed"),
                Err(_) => log::info!("the kernel cannot map direct I/O files: no shared mmap"),
            }
        }
        Ok(())
    }

    fn destroy(&mut self) {
        self.inner.shutdown.send_replace(true);
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let timing = self.inner.metrics.timing("lookup");
        let name = name_of(name);
        match name
            .as_ref()
            .map(|n| self.inner.echoes.replay(parent.0, n, req.pid()))
        {
            Ok(Some(Replay::Create { .. })) => return reply.error(fuser::Errno::ENOENT),
            Ok(Some(Replay::Delete { instance, dir })) => {
                let attr = echo::stand_in(instance, dir);
                return reply.entry(&TTL, &attr::to_kernel(&attr), Generation(0));
            }
            _ => {}
        }
        // Answered by the cache at once: no task, no round trip. The kernel may keep a
        // directory's name for the lease left, never its attributes (see `kernel.rs`).
        if let Some((found, left)) = name
            .as_ref()
            .ok()
            .and_then(|n| self.inner.backend.cached_lookup(parent.0, n))
        {
            let kernel = self.inner.backend.kernel();
            return match self.inner.seen(found) {
                Ok(attr) => {
                    let dir = attr.kind == NodeKind::Dir;
                    let grant = kernel.and_then(|k| k.entry(attr.ino, dir, left));
                    let kattr = attr::to_kernel(&attr);
                    reply.entry_with_ttls(&TTL, &kernel::ttl(grant), &kattr, Generation(0));
                    if let Some(k) = kernel {
                        k.sent(grant);
                    }
                }
                Err(e) => reply.error(to_kernel(e)),
            };
        }
        self.spawn(timing, req, |inner| async move {
            let result = match name {
                Ok(name) => inner.seen(inner.backend.lookup(parent.0, &name).await),
                Err(e) => Err(e),
            };
            reply_entry(reply, result);
        });
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let timing = self.inner.metrics.timing("getattr");
        // The kernel may keep attributes served from the cache for the lease left.
        if let Some((attr, left)) = self.inner.backend.cached_getattr(ino.0) {
            let kernel = self.inner.backend.kernel();
            let grant = kernel.and_then(|k| k.attrs(ino.0, left));
            reply.attr(&kernel::ttl(grant), &attr::to_kernel(&attr));
            if let Some(k) = kernel {
                k.sent(grant);
            }
            return;
        }
        self.spawn(timing, req, |inner| async move {
            reply_attr(reply, inner.seen(inner.backend.getattr(ino.0).await))
        });
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let timing = self.inner.metrics.timing("setattr");
        // A truncation by a user without CAP_FSETID comes with the mode the kernel computed
        // to clear the set-id bits, which only the owner could set. The cluster clears them
        // itself for such a writer (the same rule), so the truncation goes alone.
        let mode = match (mode, size, uid, gid) {
            (Some(_), Some(_), None, None) => None,
            _ => mode.map(|m| m & 0o7777),
        };
        let (atime, mtime) = (atime.map(time_ns), mtime.map(time_ns));
        // A request that changes nothing the cluster keeps (the kernel's chown(f, -1, -1),
        // which the kernel sends without FATTR_CTIME unless it caches writes) moves the change
        // time: the backend does that when given nothing.
        self.spawn(timing, req, |inner| async move {
            let fh = fh.map(|f| f.0);
            let set = SetAttrs {
                mode,
                uid,
                gid,
                size,
                atime_ns: atime,
                mtime_ns: mtime,
            };
            let result = inner.setattr(ino.0, fh, set).await;
            reply_attr(reply, inner.seen(result));
        });
    }

    /// mknod(2) makes regular files only: a device, FIFO or socket is a thing of one host's
    /// kernel (EPERM, as on a filesystem mounted nodev, and as README says).
    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let timing = self.inner.metrics.timing("mknod");
        if !matches!(mode & libc::S_IFMT, 0 | libc::S_IFREG) {
            return reply.error(fuser::Errno::EPERM);
        }
        let name = name_of(name);
        let (uid, gid) = (req.uid(), req.gid());
        let mode = mode & !umask & 0o7777;
        self.spawn(timing, req, |inner| async move {
            let result = match name {
                Ok(name) => inner.make_file(parent.0, &name, mode, uid, gid).await,
                Err(e) => Err(e),
            };
            reply_entry(reply, result);
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let timing = self.inner.metrics.timing("mkdir");
        let name = name_of(name);
        let (uid, gid) = (req.uid(), req.gid());
        let replay = match &name {
            Ok(n) => self.inner.echoes.replay(parent.0, n, req.pid()),
            Err(_) => None,
        };
        self.spawn(timing, req, |inner| async move {
            let result = match (name, replay) {
                // Another host made it: the kernel is told, the cluster is not asked to make it.
                (Ok(name), Some(Replay::Create { instance, dir })) => {
                    replayed(inner.backend.lookup(parent.0, &name).await, instance, dir)
                }
                (Ok(name), _) => {
                    let mode = mode & !umask & 0o7777;
                    inner.backend.mkdir(parent.0, &name, mode, uid, gid).await
                }
                (Err(e), _) => Err(e),
            };
            reply_entry(reply, result);
        });
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let timing = self.inner.metrics.timing("unlink");
        let name = name_of(name);
        if let Ok(n) = &name {
            if let Some(Replay::Delete { .. }) = self.inner.echoes.replay(parent.0, n, req.pid()) {
                // Deleted elsewhere: the kernel is told, the cluster is not asked.
                return reply.ok();
            }
        }
        self.spawn(timing, req, |inner| async move {
            let result = match name {
                Ok(name) => inner.backend.unlink(parent.0, &name).await,
                Err(e) => Err(e),
            };
            reply_empty(reply, result);
        });
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let timing = self.inner.metrics.timing("rmdir");
        let name = name_of(name);
        if let Ok(n) = &name {
            if let Some(Replay::Delete { .. }) = self.inner.echoes.replay(parent.0, n, req.pid()) {
                return reply.ok();
            }
        }
        self.spawn(timing, req, |inner| async move {
            let result = match name {
                Ok(name) => inner.backend.rmdir(parent.0, &name).await,
                Err(e) => Err(e),
            };
            reply_empty(reply, result);
        });
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        let timing = self.inner.metrics.timing("symlink");
        let name = name_of(link_name);
        // Targets are kept as text, as names are.
        let target = target.to_str().map(str::to_owned).ok_or(Errno::EINVAL);
        let (uid, gid) = (req.uid(), req.gid());
        self.spawn(timing, req, |inner| async move {
            let result = match (name, target) {
                (Ok(name), Ok(target)) => {
                    inner
                        .backend
                        .symlink(parent.0, &name, &target, uid, gid)
                        .await
                }
                (Err(e), _) | (_, Err(e)) => Err(e),
            };
            reply_entry(reply, result);
        });
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        let timing = self.inner.metrics.timing("readlink");
        self.spawn(timing, req, |inner| async move {
            match inner.backend.readlink(ino.0).await {
                Ok(target) => reply.data(&target),
                Err(e) => reply.error(to_kernel(e)),
            }
        });
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let timing = self.inner.metrics.timing("rename");
        let how = if flags.is_empty() {
            RenameHow::Replace
        } else if flags == RenameFlags::RENAME_NOREPLACE {
            RenameHow::NoReplace
        } else if flags == RenameFlags::RENAME_EXCHANGE {
            RenameHow::Exchange
        } else {
            // Both at once, RENAME_WHITEOUT (overlayfs), or unknown: as Linux answers.
            reply.error(fuser::Errno::EINVAL);
            return;
        };
        let names = name_of(name).and_then(|a| Ok((a, name_of(newname)?)));
        self.spawn(timing, req, |inner| async move {
            let result = match names {
                Ok((from, to)) => {
                    inner
                        .backend
                        .rename(parent.0, &from, newparent.0, &to, how)
                        .await
                }
                Err(e) => Err(e),
            };
            reply_empty(reply, result);
        });
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let timing = self.inner.metrics.timing("link");
        let name = name_of(newname);
        self.spawn(timing, req, |inner| async move {
            let result = match name {
                Ok(name) => inner.backend.link(ino.0, newparent.0, &name).await,
                Err(e) => Err(e),
            };
            reply_entry(reply, result);
        });
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let timing = self.inner.metrics.timing("open");
        if let Some(fh) = self.inner.open_at_once(ino.0, flags.0) {
            return reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO);
        }
        self.spawn(timing, req, |inner| async move {
            match inner.open(ino.0, flags.0).await {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
                Err(e) => reply.error(to_kernel(e)),
            }
        });
    }

    fn read(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let timing = self.inner.metrics.timing("read");
        // The kernel names the reading process's lock owner in a read(2) of a direct I/O file,
        // never when it fills its page cache.
        let pages = lock_owner.is_none();
        if let Some(data) = self.inner.read_at_once(fh.0, offset, size, pages) {
            return reply.data(&data);
        }
        self.spawn(timing, req, |inner| async move {
            match inner.read(fh.0, offset, size, pages).await {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(to_kernel(e)),
            }
        });
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let timing = self.inner.metrics.timing("write");
        // The kernel computes an O_APPEND offset from its cached size, which another host may
        // have outdated: let the cluster append at its own end of file instead. A write of
        // mapped pages (FUSE_WRITE_CACHE) goes where the pages are, whatever the file's flags.
        let append =
            flags.0 & libc::O_APPEND != 0 && !write_flags.contains(WriteFlags::FUSE_WRITE_CACHE);
        let data = data.to_vec();
        self.spawn(timing, req, |inner| async move {
            match inner.write(fh.0, offset, data, append).await {
                Ok(written) => reply.written(written),
                Err(e) => reply.error(to_kernel(e)),
            }
        });
    }

    fn flush(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let timing = self.inner.metrics.timing("flush");
        // Most closes (any by a process that took no POSIX lock here) have nothing to do.
        let through = match self.inner.files.get(fh.0) {
            Ok(file) => self.inner.owners.take_owner(file.ino, lock_owner.0),
            Err(e) => return reply.error(to_kernel(e)),
        };
        let Some(through) = through else {
            return reply.ok();
        };
        self.spawn(timing, req, |inner| async move {
            reply_empty(reply, inner.flush(fh.0, lock_owner.0, through).await)
        });
    }

    fn release(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let timing = self.inner.metrics.timing("release");
        let file = match self.inner.files.remove(fh.0) {
            Ok(file) => file,
            Err(e) => return reply.error(to_kernel(e)),
        };
        if let Some(k) = self.inner.backend.kernel() {
            k.file_closed(file.ino);
        }
        if let Some(session) = file.pinned_in() {
            self.inner.backend.unpin(session, file.ino);
        }
        // Locks taken through the file go with it (`lock_loss.rs`).
        self.inner.holders.closed(fh.0);
        // A file read without a lock leaves nothing behind in the cluster.
        if file.nothing_to_release() && !self.inner.owners.holds_through(file.ino, fh.0) {
            return reply.ok();
        }
        self.spawn(timing, req, |inner| async move {
            let result = inner.release(fh.0, file).await;
            if let Err(e) = result {
                log::warn!("release of file handle {}: {e:?}", fh.0);
            }
            reply_empty(reply, result);
        });
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _timing = self.inner.metrics.timing("fsync");
        // Every write was committed on a majority before it returned.
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _timing = self.inner.metrics.timing("opendir");
        let fh = self.inner.files.insert(OpenFile::dir(ino.0));
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        let timing = self.inner.metrics.timing("readdir");
        self.spawn(timing, req, |inner| async move {
            if let Err((e, reply)) = inner.readdir(ino.0, fh.0, offset, reply).await {
                reply.error(to_kernel(e));
            }
        });
    }

    fn releasedir(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let timing = self.inner.metrics.timing("releasedir");
        match self.inner.files.remove(fh.0) {
            Ok(dir) if dir.nothing_to_release() => reply.ok(),
            Ok(dir) => self.spawn(timing, req, |inner| async move {
                reply_empty(reply, inner.release(fh.0, dir).await)
            }),
            Err(e) => reply.error(to_kernel(e)),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _timing = self.inner.metrics.timing("fsyncdir");
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let _timing = self.inner.metrics.timing("statfs");
        // The cluster has no meaningful block count; report a roomy constant so that tools
        // checking free space before writing go ahead.
        const BLOCKS: u64 = 1 << 20;
        const FILES: u64 = 1 << 20;
        let bsize = attr::BLOCK_SIZE;
        reply.statfs(BLOCKS, BLOCKS, BLOCKS, FILES, FILES, bsize, 255, bsize);
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let timing = self.inner.metrics.timing("setxattr");
        let name = xattr::Name::parse(name);
        enum Set {
            Ephemeral(bool),
            MaxHolders(u32),
            OnLoss(OnLoss),
        }
        let set = match name {
            Some(xattr::Name::Ephemeral) => xattr::parse_flag(value).map(Set::Ephemeral),
            Some(xattr::Name::MaxHolders) => xattr::parse_count(value).map(Set::MaxHolders),
            Some(xattr::Name::OnLoss) => xattr::parse_on_loss(value).map(Set::OnLoss),
            Some(_) => Err(Errno::EPERM),
            None => Err(Errno::ENOTSUP),
        };
        self.spawn(timing, req, |inner| async move {
            let b = &inner.backend;
            let result = match set {
                Err(e) => Err(e),
                Ok(Set::Ephemeral(flag)) => b.set_ephemeral(ino.0, flag).await.map(drop),
                Ok(Set::MaxHolders(n)) => b.set_max_holders(ino.0, n).await,
                Ok(Set::OnLoss(v)) => b.set_on_loss(ino.0, Some(v)).await,
            };
            reply_empty(reply, result);
        });
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let timing = self.inner.metrics.timing("getxattr");
        let Some(name) = xattr::Name::parse(name) else {
            reply.error(fuser::Errno::ENODATA);
            return;
        };
        if name == xattr::Name::Cluster {
            if ino.0 == fuser::INodeNo::ROOT.0 && !self.cluster.is_empty() {
                xattr::reply(reply, size, &self.cluster);
            } else {
                reply.error(fuser::Errno::ENODATA);
            }
            return;
        }
        self.spawn(timing, req, |inner| async move {
            match inner.getxattr(ino.0, name).await {
                Ok(value) => xattr::reply(reply, size, &value),
                Err(e) => reply.error(to_kernel(e)),
            }
        });
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        let _timing = self.inner.metrics.timing("listxattr");
        xattr::reply(reply, size, &xattr::list());
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let timing = self.inner.metrics.timing("removexattr");
        let name = xattr::Name::parse(name);
        self.spawn(timing, req, |inner| async move {
            let result = match name {
                Some(xattr::Name::Ephemeral) => {
                    inner.backend.set_ephemeral(ino.0, false).await.map(drop)
                }
                Some(xattr::Name::MaxHolders) => inner.backend.set_max_holders(ino.0, 1).await,
                Some(xattr::Name::OnLoss) => inner.backend.set_on_loss(ino.0, None).await,
                Some(_) => Err(Errno::EPERM),
                None => Err(Errno::ENODATA),
            };
            reply_empty(reply, result);
        });
    }

    fn access(&self, req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        let timing = self.inner.metrics.timing("access");
        // Only asked without `default_permissions`; then permissions are not enforced here.
        self.spawn(timing, req, |inner| async move {
            reply_empty(reply, inner.backend.getattr(ino.0).await.map(drop));
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let timing = self.inner.metrics.timing("create");
        let name = name_of(name);
        let (uid, gid) = (req.uid(), req.gid());
        let exclusive = flags & libc::O_EXCL != 0;
        let truncate = flags & libc::O_TRUNC != 0;
        let mode = mode & !umask & 0o7777;
        let new = NewFile {
            mode,
            uid,
            gid,
            exclusive,
        };
        if let Ok(n) = &name {
            if let Some(Replay::Create { instance, dir }) =
                self.inner.echoes.replay(parent.0, n, req.pid())
            {
                // Another host made it: the kernel is told, the cluster is not asked, and no
                // handle is taken (`echo.rs`).
                let n = n.clone();
                self.spawn(timing, req, |inner| async move {
                    let found = inner.backend.lookup(parent.0, &n).await;
                    let found = match replayed(found, instance, dir) {
                        Ok(attr) => inner.backend.session().await.map(|s| (s, attr)),
                        Err(e) => Err(e),
                    };
                    match found {
                        Ok((session, attr)) => {
                            let file = OpenFile::file(attr.ino, session, None, false);
                            let fh = inner.insert_file(file);
                            let kattr = attr::to_kernel(&attr);
                            let flags = FopenFlags::FOPEN_DIRECT_IO;
                            reply.created(&TTL, &kattr, Generation(0), FileHandle(fh), flags);
                        }
                        Err(e) => reply.error(to_kernel(e)),
                    }
                });
                return;
            }
        }
        self.spawn(timing, req, |inner| async move {
            let created = match name {
                Ok(name) => match inner.backend.session().await {
                    Ok(session) => inner
                        .backend
                        .create(session, parent.0, &name, new)
                        .await
                        .map(|(handle, attr)| (session, handle, attr)),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            match created {
                Ok((session, handle, attr)) => {
                    inner.ephemeral.note(&attr);
                    // An empty file has nothing to truncate; a file someone else created
                    // first may have contents, which O_TRUNC replaces at the first write.
                    let pending = truncate && attr.size > 0;
                    let file = match handle {
                        Some(handle) => OpenFile::file(attr.ino, session, Some(handle), pending),
                        // Made without a handle, and pinned by the backend.
                        None => OpenFile::lazy(attr.ino, session, pending),
                    };
                    let fh = inner.insert_file(file);
                    let kattr = attr::to_kernel(&attr);
                    let flags = FopenFlags::FOPEN_DIRECT_IO;
                    reply.created(&TTL, &kattr, Generation(0), FileHandle(fh), flags);
                }
                Err(e) => reply.error(to_kernel(e)),
            }
        });
    }

    /// No ioctl is implemented; every one gets ENOTTY at once, as on a local filesystem's
    /// file. The commonest is isatty(3)'s TCGETS, which every Python open() and stdio stream
    /// makes.
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(fuser::Errno::ENOTTY);
    }

    fn fallocate(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let timing = self.inner.metrics.timing("fallocate");
        self.spawn(timing, req, |inner| async move {
            reply_empty(reply, inner.fallocate(fh.0, offset, length, mode).await);
        });
    }

    fn getlk(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        reply: ReplyLock,
    ) {
        let timing = self.inner.metrics.timing("getlk");
        let lock = KernelLock {
            ino: ino.0,
            fh: fh.0,
            owner: lock_owner.0,
            start,
            end,
            typ,
            pid,
            tid: req.pid(),
        };
        self.spawn(timing, req, |inner| async move {
            match locks::getlk(&inner, lock).await {
                Ok((start, end, typ, pid)) => reply.locked(start, end, typ, pid),
                Err(e) => reply.error(to_kernel(e)),
            }
        });
    }

    fn setlk(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        let timing = self.inner.metrics.timing("setlk");
        let lock = KernelLock {
            ino: ino.0,
            fh: fh.0,
            owner: lock_owner.0,
            start,
            end,
            typ,
            pid,
            tid: req.pid(),
        };
        self.spawn(timing, req, |inner| async move {
            reply_empty(reply, locks::setlk(&inner, lock, sleep).await);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::WriteEpochs;

    #[test]
    fn a_write_moves_only_its_own_files_count_and_forgetting_moves_every_count() {
        let w = WriteEpochs::default();
        let (a, b) = (w.of(1), w.of(2));
        w.bump(2);
        assert_eq!(
            w.of(1),
            a,
            "another file's write keeps a read pass of this one"
        );
        assert_ne!(w.of(2), b);
        for ino in 10..10 + WriteEpochs::MAX as u64 {
            w.bump(ino);
        }
        assert_ne!(w.of(1), a, "once forgotten, every file counts as written");
        assert_ne!(w.of(2), b);
    }
}
