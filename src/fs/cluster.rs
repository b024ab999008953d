//! The mount's backend: every FUSE operation becomes a request in the mount's session.
//!
//! One session per mount. Handles belong to the session that opened them, and so do open files
//! without a handle (the fs layer passes the session it opened them in): when a session
//! expires, its handles and files fail with EIO (the cluster has already released their locks
//! and ephemeral files), and the next open starts a new session, as DESIGN.md asks. Requests
//! other than opens also travel in the current session, so a retry after a failover is applied
//! at most once.
//!
//! Lookups, attributes, listings and whole-file reads are served from the mount's cache
//! (`cache.rs`) when it holds them. A task of its own ([`ClusterBackend::keep_cache`])
//! registers the cache with the leader in each session, drops what the cluster's events name
//! and acknowledges them; the leader holds every write until it has (see
//! `crate::server::cache`). Lock state is never served from the cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Mutex as AsyncMutex;

use super::cache::{kind_of, Cache, Validity};
use super::echo::{Kernel, Replayer};
use super::kernel::KernelCache;
use super::pins::Pins;
use crate::client::watches::{WatchItem, Watcher};

use super::backend::{
    Backend, BoxFut, DirEntry, Errno, FileAttr, Grant, Holder, LockKind, LockReply, LockSettings,
    LockSpec, LockStyle, NewFile, OnLoss, RenameHow, RevokedLock, SetAttrs,
};
use crate::client::files::{At, AttrChanges, Owner, Replace, WriteAt};
use crate::client::session::{LockOutcome, LockRequest, Requested, Session, SessionState};
use crate::client::{Client, ClientError};
use crate::proto;
use crate::proto::WatchEvent_Change as Change;

/// How long an unmount waits for the cluster to close the session.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(5);

/// Errno of a handle whose session is gone; the fs layer reports it as EIO.
const EKEYEXPIRED: i32 = libc::EKEYEXPIRED;

/// The cache's registration: its session, the connection epoch it was made on, and the
/// lease-gap count the cache serves under (`None`: flush before serving).
type Registered = (Arc<Session>, u64, Option<u64>);

pub struct ClusterBackend {
    client: Arc<Client>,
    ttl: Duration,
    host: String,
    name: String,
    session: AsyncMutex<Option<Arc<Session>>>,
    /// Mount handle -> (session id, cluster handle). Mount handles stay unique across sessions.
    handles: Mutex<HashMap<u64, (u64, u64)>>,
    /// Queued lock requests -> the session they were queued in. A wait belongs to its session:
    /// if that session ends meanwhile, the wait fails (EIO, as every handle of the session),
    /// rather than being looked for in the next session, where no grant would ever come.
    waits: Mutex<HashMap<u64, Arc<Session>>>,
    next_handle: std::sync::atomic::AtomicU64,
    /// The cache; `None` when the mount does not cache.
    cache: Option<Cache>,
    /// What the kernel is let cache, from the cache (nothing when `cache` is `None`).
    kernel: KernelCache,
    /// The cache's registration (see [`Registered`]).
    registered: Mutex<Option<Registered>>,
    /// The client's connection epochs.
    epochs: tokio::sync::watch::Receiver<u64>,
    /// Replays other hosts' creations and deletions to the kernel, for inotify (`echo.rs`).
    replayer: std::sync::OnceLock<Replayer>,
    /// Files open here without a handle, and the handles keeping those that lost their name
    /// (`pins.rs`).
    pins: Mutex<Pins<Keeper>>,
    /// Where keepers are closed from, when the fs layer releases a file on fuser's thread.
    runtime: tokio::runtime::Handle,
    /// Set by [`ClusterBackend::shutdown`], under the session's lock: no session is opened
    /// after it (a task that found its session ended would otherwise open one that outlives
    /// the mount until its TTL).
    shut: std::sync::atomic::AtomicBool,
}

/// A keeper (`pins.rs`): the session it was opened in and its cluster handle.
type Keeper = (Arc<Session>, u64);

fn errno(e: ClientError) -> Errno {
    match e {
        ClientError::Remote { code, message } => {
            if code == libc::EIO as u32 {
                log::warn!("EIO from the cluster: {message}");
            }
            Errno(code as i32)
        }
        // The mount retries through failovers, so an EIO for these is news: say why.
        e => {
            log::warn!("EIO: {e}");
            Errno(libc::EIO)
        }
    }
}

fn child(parent: u64, name: &str) -> At<'_> {
    At::Child { parent, name }
}

fn dir_entry(d: proto::DirEntry) -> DirEntry {
    DirEntry {
        kind: kind_of(d.kind),
        name: d.name,
        ino: d.instance,
    }
}

fn attr(a: &proto::Attr) -> FileAttr {
    FileAttr {
        ino: a.instance,
        kind: kind_of(a.kind),
        mode: a.mode,
        uid: a.uid,
        gid: a.gid,
        size: a.size,
        atime_ns: a.atime_ns,
        mtime_ns: a.mtime_ns,
        ctime_ns: a.ctime_ns,
        content_generation: a.content_generation,
        lock_generation: a.lock_generation,
        acl_generation: a.acl_generation,
        ephemeral: a.ephemeral,
        children: a.children,
        links: a.links,
    }
}

/// A node's attributes as the cluster answered them, or the errno of its refusal.
fn file_attr(answer: Result<proto::Attr, ClientError>) -> Result<FileAttr, Errno> {
    answer.map(|a| attr(&a)).map_err(errno)
}

/// Closes a keeper (`pins.rs`) no open file needs anymore.
async fn close_keeper((session, handle): Keeper) {
    if let Err(e) = session.close_handle(handle).await {
        log::debug!("closing keeper handle {handle}: {e}");
    }
}

/// Takes back from the kernel what an event changed: the node's attributes, and for a name
/// that came or went, its directory's. Lock changes change no attribute the kernel keeps.
/// The name of a directory that another host moved or removed goes too (`elsewhere`: not
/// this mount's own change, which its kernel made itself), and so do the mapped pages of
/// contents changed elsewhere.
///
/// An owner or mode changed elsewhere ends every name the kernel keeps: the kernel checks
/// some rules against the owner of a file it reached by a kept name without asking for its
/// attributes again (the sticky rule, against the file removed or replaced), so only a new
/// lookup, which the ended name forces, brings it the new owner.
fn take_back(kernel: &KernelCache, e: &proto::WatchEvent, elsewhere: bool) {
    if matches!(e.change, Change::LOCKED | Change::UNLOCKED) {
        return;
    }
    match e.change {
        Change::MODIFIED if elsewhere => kernel.changed_elsewhere(e.instance),
        Change::RESYNC => kernel.missed_changes(),
        _ => {}
    }
    kernel.take_back(e.instance);
    if matches!(e.change, Change::CREATED | Change::DELETED | Change::RESYNC) {
        kernel.take_back(e.parent);
    }
    if matches!(e.change, Change::DELETED | Change::RESYNC)
        || (e.change == Change::ATTRIB && elsewhere)
    {
        kernel.take_back_names();
    }
    if e.change == Change::DELETED && e.kind == proto::Kind::DIR && elsewhere {
        kernel.unalias(e.parent, &e.name);
    }
}

fn style(s: LockStyle) -> proto::LockStyle {
    match s {
        LockStyle::Flock => proto::LockStyle::FLOCK,
        LockStyle::Posix => proto::LockStyle::POSIX,
    }
}

fn kind(k: LockKind) -> proto::LockKind {
    match k {
        LockKind::Shared => proto::LockKind::SHARED,
        LockKind::Exclusive => proto::LockKind::EXCLUSIVE,
    }
}

fn holder(h: &proto::LockHolder) -> Holder {
    Holder {
        session: h.session,
        owner: h.owner,
        style: match h.style {
            proto::LockStyle::FLOCK => LockStyle::Flock,
            proto::LockStyle::POSIX => LockStyle::Posix,
        },
        kind: match h.kind {
            proto::LockKind::SHARED => LockKind::Shared,
            proto::LockKind::EXCLUSIVE => LockKind::Exclusive,
        },
        start: h.start,
        end: h.end,
        pid: h.pid,
        host: h.host.clone(),
        since_ns: h.since_ns,
    }
}

impl ClusterBackend {
    /// Opens the mount's first session at once, so a mount against an unreachable cluster
    /// fails before it detaches.
    pub async fn connect(
        client: Arc<Client>,
        ttl: Duration,
        host: String,
        name: String,
        cache: bool,
    ) -> Result<ClusterBackend, ClientError> {
        let backend = ClusterBackend {
            epochs: client.epoch(),
            cache: cache.then(Cache::default),
            kernel: KernelCache::default(),
            registered: Mutex::new(None),
            replayer: std::sync::OnceLock::new(),
            client,
            ttl,
            host,
            name,
            session: AsyncMutex::new(None),
            handles: Mutex::new(HashMap::new()),
            waits: Mutex::new(HashMap::new()),
            next_handle: std::sync::atomic::AtomicU64::new(1),
            pins: Mutex::new(Pins::default()),
            runtime: tokio::runtime::Handle::current(),
            shut: std::sync::atomic::AtomicBool::new(false),
        };
        backend.current().await?;
        Ok(backend)
    }

    /// The live session, opening a new one if the last one ended.
    async fn current(&self) -> Result<Arc<Session>, ClientError> {
        let mut slot = self.session.lock().await;
        if let Some(s) = slot.as_ref() {
            if !matches!(*s.state().borrow(), SessionState::Ended { .. }) {
                return Ok(s.clone());
            }
            log::warn!("session {} ended; opening a new one", s.id);
        }
        if self.shut.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ClientError::Unavailable(
                "the mount is shutting down".into(),
            ));
        }
        let s = Session::open_with(
            self.client.clone(),
            self.ttl,
            self.ttl,
            &self.host,
            &self.name,
            self.cache.is_some(),
        )
        .await?;
        log::info!("mount session {} opened (ttl {:?})", s.id, self.ttl);
        *slot = Some(s.clone());
        Ok(s)
    }

    /// The live session for a request that is not tied to one (see the module's comment).
    async fn now(&self) -> Result<Arc<Session>, Errno> {
        self.current().await.map_err(errno)
    }

    /// The lock listing of node `ino`; `None` if it has no holders, no waiters and no
    /// semaphore setting.
    async fn lock_info(&self, ino: u64) -> Result<Option<proto::LockInfo>, Errno> {
        self.now().await?.lock_info(ino).await.map_err(errno)
    }

    /// Session `sid` if it is the live one; EIO-bound error if it has ended. Never opens a
    /// session: one that is gone stays gone for what was opened in it.
    async fn live(&self, sid: u64) -> Result<Arc<Session>, Errno> {
        match self.session.lock().await.as_ref() {
            Some(s) if s.id == sid && !s.has_ended() => Ok(s.clone()),
            _ => Err(Errno(EKEYEXPIRED)),
        }
    }

    /// The session and cluster handle behind a mount handle; EIO-bound error if its session
    /// is gone.
    async fn handle(&self, fh: u64) -> Result<(Arc<Session>, u64), Errno> {
        let (sid, handle) = *self
            .handles
            .lock()
            .expect("poisoned")
            .get(&fh)
            .ok_or(Errno(libc::EBADF))?;
        Ok((self.live(sid).await?, handle))
    }

    /// The session a queued lock request was queued in.
    fn wait_session(&self, wait: u64) -> Result<Arc<Session>, Errno> {
        self.waits
            .lock()
            .expect("poisoned")
            .get(&wait)
            .cloned()
            .ok_or(Errno(EKEYEXPIRED))
    }

    fn remember(&self, session: u64, handle: u64) -> u64 {
        let fh = self
            .next_handle
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.handles
            .lock()
            .expect("poisoned")
            .insert(fh, (session, handle));
        fh
    }

    /// Closes the session (on unmount): its locks and ephemeral files go at once. Bounded:
    /// if the cluster cannot be reached, the session expires after its TTL anyway, and an
    /// unmount should not hang on a dead cluster.
    pub async fn shutdown(&self) {
        let mut slot = self.session.lock().await;
        self.shut.store(true, std::sync::atomic::Ordering::SeqCst);
        let taken = slot.take();
        drop(slot);
        if let Some(s) = taken {
            match tokio::time::timeout(SHUTDOWN_LIMIT, s.close()).await {
                Ok(Ok(())) => log::info!("session {} closed", s.id),
                Ok(Err(e)) => log::warn!("closing session {}: {e}", s.id),
                Err(_) => log::warn!(
                    "closing session {}: no answer within {SHUTDOWN_LIMIT:?}; it expires after its TTL ({:?})",
                    s.id,
                    self.ttl
                ),
            }
        }
    }

    /// Makes `name` in `parent` without a handle, exclusively, where the file needs none: the
    /// mount caches (it hears if the file loses its name, and takes a keeper then, see
    /// `pins.rs`) and keeps the directory's attributes, which say its files are not
    /// ephemeral. Saves the commit of the handle's close. `None`: the creation is to be made
    /// with a handle instead (not such a directory, the name is taken and the open need not
    /// be exclusive, or the cluster refused for another reason).
    async fn make_plain(
        &self,
        s: &Arc<Session>,
        parent: u64,
        name: &str,
        owner: Owner,
        new: NewFile,
    ) -> Result<Option<(Option<u64>, FileAttr)>, Errno> {
        let valid = self.validity();
        let Some(cache) = self
            .cache
            .as_ref()
            .filter(|c| c.makes_plain_files(valid, parent))
        else {
            return Ok(None);
        };
        let Some(ticket) = cache.create_ticket(valid) else {
            return Ok(None);
        };
        let made = match s
            .make(child(parent, name), owner, true)
            .await
            .map_err(errno)
        {
            Ok(made) => made,
            Err(e) if e.0 == libc::EEXIST && new.exclusive => {
                return self.refused(Err(e), &[(parent, name)]);
            }
            Err(e) => {
                if e.0 == libc::EEXIST {
                    cache.forget_name(parent, name);
                }
                return Ok(None);
            }
        };
        let a = attr(&made.attr);
        // Pinned before the creation is checked to be the only change heard of the file: a
        // removal heard after the check finds the pin and takes a keeper.
        self.pin(s.id, a.ino);
        let alone = ticket.keep(parent, name, &a);
        if let Some((index, dir)) = &made.dir {
            ticket.keep_dir(*index, &attr(dir));
        }
        if alone {
            return Ok(Some((None, a)));
        }
        // Something else was heard of the file already (it may have lost its name): the file,
        // nameless or not, is held by a handle instead.
        self.unpin(s.id, a.ino);
        let handle = s.open_handle(At::Ino(a.ino)).await.map_err(errno)?;
        Ok(Some((Some(self.remember(s.id, handle)), a)))
    }

    /// Passes on the answer to a change of the names `at` (directory, name); a refusal first
    /// drops what the cache keeps of them (see `Cache::forget_name`).
    fn refused<T>(&self, answer: Result<T, Errno>, at: &[(u64, &str)]) -> Result<T, Errno> {
        if let (Err(_), Some(cache)) = (&answer, &self.cache) {
            for (dir, name) in at {
                cache.forget_name(*dir, name);
            }
        }
        answer
    }

    /// Under what the cache may serve now, if it may: its registration is on the client's
    /// current connection and the session's lease holds. A lease renewed after it had run out
    /// starts the cache over first.
    fn validity(&self) -> Option<Validity> {
        let cache = self.cache.as_ref()?;
        let mut registered = self.registered.lock().expect("poisoned");
        let (session, epoch, serving) = registered.as_mut()?;
        if *self.epochs.borrow() != *epoch {
            return None;
        }
        let gaps = session.lease_holds()?;
        if *serving != Some(gaps) {
            cache.flush();
            cache.serve_under((session.id, *epoch, gaps));
            *serving = Some(gaps);
        }
        Some((session.id, *epoch, gaps))
    }

    /// How long the cache's lease has left (zero if the cache is not registered).
    fn lease_left(&self) -> Duration {
        let registered = self.registered.lock().expect("poisoned");
        registered
            .as_ref()
            .map_or(Duration::ZERO, |(session, _, _)| session.lease_left())
    }

    /// Replays the changes other hosts make to this mount's kernel from now on, for inotify
    /// (`echo.rs`); needs the cache, whose registration brings the changes.
    pub fn replay_to(&self, kernel: Kernel) {
        let _ = self.replayer.set(Replayer::start(kernel));
    }

    /// Keeps the cache for as long as the backend lives: in each session, registers it with
    /// the leader, drops what the cluster's events name, and acknowledges them. Spawn it once
    /// the backend is shared.
    pub async fn keep_cache(backend: Weak<ClusterBackend>) {
        const PAUSE: Duration = Duration::from_millis(500);
        loop {
            let Some(me) = backend.upgrade() else { return };
            let Some(cache) = me.cache.as_ref() else {
                return;
            };
            cache.flush();
            me.kernel.take_back_all();
            *me.registered.lock().expect("poisoned") = None;
            let session = match me.current().await {
                Ok(s) => s,
                Err(e) => {
                    log::debug!("cache: no session: {e}");
                    drop(me);
                    tokio::time::sleep(PAUSE).await;
                    continue;
                }
            };
            drop(me);
            let mut watcher = match Watcher::start_with(session.clone(), "/", true, true).await {
                Ok((w, _)) => w,
                // This host may not cache (a certificate limited to a subtree: the cluster
                // opened its session without a cache); it will not be allowed to later.
                Err(ClientError::Remote { code, message })
                    if [libc::EACCES, libc::EPERM, libc::EINVAL].contains(&(code as i32)) =>
                {
                    log::warn!("not caching: the cluster refuses this host's cache: {message}");
                    return;
                }
                Err(e) => {
                    log::warn!("cache: registering with the cluster: {e}; serving nothing");
                    tokio::time::sleep(PAUSE).await;
                    continue;
                }
            };
            log::info!("cache registered in session {}", session.id);
            if let Some(me) = backend.upgrade() {
                // Deletions before this registration went unheard.
                me.keep_all(&session).await;
            }
            loop {
                let Some(me) = backend.upgrade() else { return };
                if let Some(epoch) = watcher.registered_on() {
                    let mut registered = me.registered.lock().expect("poisoned");
                    if registered.as_ref().is_none_or(|(_, e, _)| *e != epoch) {
                        *registered = Some((session.clone(), epoch, None));
                    }
                }
                drop(me);
                let item = watcher.next().await;
                let Some(me) = backend.upgrade() else { return };
                let Some(cache) = me.cache.as_ref() else {
                    return;
                };
                match item {
                    Err(e) => {
                        log::info!("cache: session {} is over ({e})", session.id);
                        break;
                    }
                    Ok(WatchItem::Interrupted) => {
                        // Flushed before registering again: see `WatchItem::Interrupted`.
                        cache.flush();
                        me.kernel.take_back_all();
                        *me.registered.lock().expect("poisoned") = None;
                        // Deletions until the watch is back go unheard.
                        me.keep_all(&session).await;
                    }
                    Ok(WatchItem::Resync(_)) => {}
                    Ok(WatchItem::Event(e)) => {
                        // The highest index of the events, and of the notices, handled; and
                        // whether an event needs acknowledging (one marked `told` does not:
                        // the acknowledgement of its notice stands for it).
                        let (mut last, mut early, mut owed) = (0, 0, false);
                        let mut mark = |e: &proto::WatchEvent| match e.change {
                            Change::PENDING => early = e.index,
                            _ => {
                                last = e.index;
                                owed |= !e.told;
                            }
                        };
                        let replay = |e: &proto::WatchEvent| {
                            let theirs = e.by != session.id && e.change != Change::PENDING;
                            if let Some(r) = me.replayer.get().filter(|_| theirs) {
                                r.send(e);
                            }
                        };
                        // A notice: the kernel's attributes of the file go with the cache's,
                        // before the notice is acknowledged.
                        let apply = |e: &proto::WatchEvent| {
                            if e.change == Change::PENDING {
                                cache.notice(e);
                                me.kernel.take_back(e.instance);
                            } else {
                                cache.apply(e);
                                take_back(&me.kernel, e, e.by != session.id);
                            }
                        };
                        // Files open here without a handle that lost their name: keepers
                        // are taken before the events are acknowledged (`pins.rs`).
                        let mut losing = Vec::new();
                        let mut note = |e: &proto::WatchEvent| {
                            let pins = me.pins.lock().expect("poisoned");
                            match e.change {
                                Change::DELETED if pins.needs_keeper(session.id, e.instance) => {
                                    losing.push(e.instance)
                                }
                                Change::RESYNC => {
                                    losing.extend(pins.all_needing_keepers(session.id))
                                }
                                _ => {}
                            }
                        };
                        apply(&e);
                        replay(&e);
                        note(&e);
                        mark(&e);
                        while let Some(e) = watcher.try_next() {
                            apply(&e);
                            replay(&e);
                            note(&e);
                            mark(&e);
                        }
                        if !losing.is_empty() {
                            losing.sort_unstable();
                            losing.dedup();
                            me.keep(&session, losing).await;
                        }
                        if !owed && early == 0 {
                            continue;
                        }
                        let session = session.clone();
                        tokio::spawn(async move {
                            if let Err(e) = session.cache_ack(last, early).await {
                                log::debug!("cache: acknowledging index {last}/{early}: {e}");
                            }
                        });
                    }
                }
            }
        }
    }

    /// Takes a keeper on each of `inos` in `session`, for the files open here without a handle
    /// that lost (or may have lost) their name (`pins.rs`). A file already gone is logged:
    /// its open files here then fail as before.
    async fn keep(&self, session: &Arc<Session>, inos: Vec<u64>) {
        for ino in inos {
            let handle = match session.open_handle(At::Ino(ino)).await {
                Ok(handle) => handle,
                Err(e) => {
                    log::warn!("inode {ino} is open here and lost its name; keeping it: {e}");
                    continue;
                }
            };
            let spare = self.pins.lock().expect("poisoned").kept(
                session.id,
                ino,
                (session.clone(), handle),
            );
            if let Some(keeper) = spare {
                close_keeper(keeper).await;
            }
        }
    }

    /// Takes keepers on every file pinned in `session` that has none, after events may have
    /// gone unheard.
    async fn keep_all(&self, session: &Arc<Session>) {
        let all = self
            .pins
            .lock()
            .expect("poisoned")
            .all_needing_keepers(session.id);
        self.keep(session, all).await;
    }
}

impl Backend for ClusterBackend {
    fn lookup(&self, parent: u64, name: &str) -> BoxFut<'_, FileAttr> {
        let name = name.to_string();
        Box::pin(async move {
            let valid = self.validity();
            let cache = self.cache.as_ref();
            if let Some(found) = cache.and_then(|c| c.name(valid, parent, &name)) {
                return found.ok_or(Errno(libc::ENOENT));
            }
            let ticket = cache.and_then(|c| c.ticket(valid));
            let s = self.now().await?;
            let result = file_attr(s.stat(child(parent, &name)).await);
            if let (Some(c), Some(t)) = (cache, ticket) {
                match &result {
                    Ok(a) => c.keep_name(t, parent, &name, Some(a)),
                    Err(e) if e.0 == libc::ENOENT => {
                        c.keep_name(t, parent, &name, None);
                        // A name looked up missing is often about to be made (`echo >` of
                        // a new file): with the small directory's listing kept, the next
                        // missing names in it are answered here (`Cache::name`).
                        if c.wants_listing(valid, parent) {
                            let t = c.ticket(valid);
                            if let (Ok(listed), Some(t)) = (s.readdir(parent).await, t) {
                                let entries = listed.into_iter().map(dir_entry).collect();
                                c.keep_listing(t, parent, Arc::new(entries));
                            }
                        }
                    }
                    Err(_) => {}
                }
            }
            result
        })
    }

    fn getattr(&self, ino: u64) -> BoxFut<'_, FileAttr> {
        Box::pin(async move {
            let valid = self.validity();
            let cache = self.cache.as_ref();
            if let Some(a) = cache.and_then(|c| c.attr(valid, ino)) {
                return Ok(a);
            }
            let ticket = cache.and_then(|c| c.ticket(valid));
            let a = match self.getattr_fresh(ino).await {
                // The kernel may be walking a path through a name of this directory it was
                // let keep: ESTALE has it look the path up again (see `kernel.rs`).
                Err(e) if e.0 == libc::ENOENT && self.kernel.stale(ino) => {
                    return Err(Errno(libc::ESTALE))
                }
                result => result?,
            };
            if let (Some(c), Some(t)) = (cache, ticket) {
                c.keep_attr(t, &a);
            }
            Ok(a)
        })
    }

    fn cached_lookup(
        &self,
        parent: u64,
        name: &str,
    ) -> Option<(Result<FileAttr, Errno>, Duration)> {
        let found = self.cache.as_ref()?.name(self.validity(), parent, name)?;
        Some((found.ok_or(Errno(libc::ENOENT)), self.lease_left()))
    }

    fn cached_getattr(&self, ino: u64) -> Option<(FileAttr, Duration)> {
        let attr = self.cache.as_ref()?.attr(self.validity(), ino)?;
        Some((attr, self.lease_left()))
    }

    fn session_state(&self) -> &'static str {
        let Ok(slot) = self.session.try_lock() else {
            return "live";
        };
        match slot.as_ref().map(|s| *s.state().borrow()) {
            Some(SessionState::Live) => "live",
            Some(SessionState::Jeopardy) => "jeopardy",
            _ => "expired",
        }
    }

    fn cache_counters(
        &self,
    ) -> Option<(
        prometheus_client::metrics::counter::Counter,
        prometheus_client::metrics::counter::Counter,
    )> {
        let c = self.cache.as_ref()?;
        Some((c.hits.clone(), c.misses.clone()))
    }

    fn kernel(&self) -> Option<&KernelCache> {
        self.cache.as_ref().map(|_| &self.kernel)
    }

    fn cached_read(&self, session: u64, ino: u64) -> Option<Arc<Vec<u8>>> {
        let cache = self.cache.as_ref()?;
        (self.live_session()? == session).then_some(())?;
        cache.contents(self.validity(), ino)
    }

    fn live_session(&self) -> Option<u64> {
        let slot = self.session.try_lock().ok()?;
        slot.as_ref().filter(|s| !s.has_ended()).map(|s| s.id)
    }

    fn take_revoked(&self) -> Vec<RevokedLock> {
        let Ok(slot) = self.session.try_lock() else {
            return Vec::new();
        };
        let Some(s) = slot.as_ref() else {
            return Vec::new();
        };
        let revoked = s.take_revoked();
        let handles = self.handles.lock().expect("poisoned");
        revoked
            .into_iter()
            .map(|r| RevokedLock {
                ino: r.instance,
                handle: handles
                    .iter()
                    .find(|(_, &(sid, h))| sid == s.id && h == r.handle)
                    .map(|(&mount, _)| mount),
                owner: r.owner,
                style: match r.style {
                    proto::LockStyle::FLOCK => LockStyle::Flock,
                    proto::LockStyle::POSIX => LockStyle::Posix,
                },
            })
            .collect()
    }

    fn lease_holds(&self, session: Option<u64>) -> BoxFut<'_, bool> {
        Box::pin(async move {
            let slot = self.session.lock().await;
            Ok(slot.as_ref().is_some_and(|s| {
                session.is_none_or(|id| id == s.id) && !s.has_ended() && !s.lease_left().is_zero()
            }))
        })
    }

    fn lease_left(&self) -> Option<(u64, Duration)> {
        let slot = self.session.try_lock().ok()?;
        slot.as_ref()
            .filter(|s| !s.has_ended())
            .map(|s| (s.id, s.lease_left()))
    }

    fn pin(&self, session: u64, ino: u64) -> bool {
        if self.cache.is_none() {
            // No events would say the file lost its name.
            return false;
        }
        self.pins.lock().expect("poisoned").pin(session, ino);
        true
    }

    fn unpin(&self, session: u64, ino: u64) {
        let keeper = self.pins.lock().expect("poisoned").unpin(session, ino);
        if let Some(keeper) = keeper {
            self.runtime.spawn(close_keeper(keeper));
        }
    }

    fn getattr_fresh(&self, ino: u64) -> BoxFut<'_, FileAttr> {
        Box::pin(async move {
            let a = self.now().await?.stat(At::Ino(ino)).await;
            file_attr(a)
        })
    }

    fn setattr(&self, ino: u64, set: SetAttrs) -> BoxFut<'_, FileAttr> {
        Box::pin(async move {
            let mut last = None;
            if let Some(size) = set.size {
                let a = self.now().await?.truncate(ino, size).await;
                last = Some(a.map_err(errno)?);
            }
            // Nothing at all given: only the change time moves (chown(f, -1, -1)).
            if set.others() || set.size.is_none() {
                let SetAttrs {
                    mode,
                    uid,
                    gid,
                    atime_ns,
                    mtime_ns,
                    ..
                } = set;
                let changes = AttrChanges {
                    mode,
                    uid,
                    gid,
                    atime_ns,
                    mtime_ns,
                };
                let a = self.now().await?.set_attr(ino, changes).await;
                last = Some(a.map_err(errno)?);
            }
            match last {
                Some(a) => Ok(attr(&a)),
                None => self.getattr(ino).await,
            }
        })
    }

    fn readdir(&self, ino: u64) -> BoxFut<'_, Vec<DirEntry>> {
        Box::pin(async move {
            let valid = self.validity();
            let cache = self.cache.as_ref();
            if let Some(entries) = cache.and_then(|c| c.listing(valid, ino)) {
                return Ok(entries.as_ref().clone());
            }
            let ticket = cache.and_then(|c| c.ticket(valid));
            let listed = self.now().await?.readdir(ino).await.map_err(errno)?;
            let entries: Vec<DirEntry> = listed.into_iter().map(dir_entry).collect();
            if let (Some(c), Some(t)) = (cache, ticket) {
                c.keep_listing(t, ino, Arc::new(entries.clone()));
            }
            Ok(entries)
        })
    }

    fn symlink(
        &self,
        parent: u64,
        name: &str,
        target: &str,
        uid: u32,
        gid: u32,
    ) -> BoxFut<'_, FileAttr> {
        let (name, target) = (name.to_string(), target.to_string());
        Box::pin(async move {
            let s = self.now().await?;
            let a = s.symlink(child(parent, &name), &target, uid, gid).await;
            self.refused(file_attr(a), &[(parent, &name)])
        })
    }

    fn readlink(&self, ino: u64) -> BoxFut<'_, Vec<u8>> {
        Box::pin(async move { self.now().await?.readlink(ino).await.map_err(errno) })
    }

    fn link(&self, ino: u64, parent: u64, name: &str) -> BoxFut<'_, FileAttr> {
        let name = name.to_string();
        Box::pin(async move {
            let a = self.now().await?.link(ino, child(parent, &name)).await;
            self.refused(file_attr(a), &[(parent, &name)])
        })
    }

    fn mkdir(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> BoxFut<'_, FileAttr> {
        let name = name.to_string();
        Box::pin(async move {
            let owner = Owner { mode, uid, gid };
            let a = self.now().await?.mkdir(child(parent, &name), owner).await;
            self.refused(file_attr(a), &[(parent, &name)])
        })
    }

    fn unlink(&self, parent: u64, name: &str) -> BoxFut<'_, ()> {
        let name = name.to_string();
        Box::pin(async move {
            let s = self.now().await?;
            let done = s.unlink(child(parent, &name)).await.map_err(errno);
            self.refused(done, &[(parent, &name)])
        })
    }

    fn rmdir(&self, parent: u64, name: &str) -> BoxFut<'_, ()> {
        let name = name.to_string();
        Box::pin(async move {
            let s = self.now().await?;
            let done = s.rmdir(child(parent, &name)).await.map_err(errno);
            self.refused(done, &[(parent, &name)])
        })
    }

    fn rename(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        how: RenameHow,
    ) -> BoxFut<'_, ()> {
        let (name, new_name) = (name.to_string(), new_name.to_string());
        Box::pin(async move {
            let replace = match how {
                RenameHow::Replace => Replace::Yes,
                RenameHow::NoReplace => Replace::No,
                RenameHow::Exchange => Replace::Exchange,
            };
            let (from, to) = (child(parent, &name), child(new_parent, &new_name));
            let done = self.now().await?.rename(from, to, replace).await;
            self.refused(
                done.map_err(errno),
                &[(parent, &name), (new_parent, &new_name)],
            )
        })
    }

    fn session(&self) -> BoxFut<'_, u64> {
        Box::pin(async move { self.current().await.map(|s| s.id).map_err(errno) })
    }

    fn open(&self, session: u64, ino: u64) -> BoxFut<'_, u64> {
        Box::pin(async move {
            let s = self.live(session).await?;
            let handle = s.open_handle(At::Ino(ino)).await.map_err(errno)?;
            Ok(self.remember(s.id, handle))
        })
    }

    fn create(
        &self,
        session: u64,
        parent: u64,
        name: &str,
        new: NewFile,
    ) -> BoxFut<'_, (Option<u64>, FileAttr)> {
        let name = name.to_string();
        Box::pin(async move {
            let s = self.live(session).await?;
            let owner = Owner {
                mode: new.mode,
                uid: new.uid,
                gid: new.gid,
            };
            if let Some(made) = self.make_plain(&s, parent, &name, owner, new).await? {
                return Ok(made);
            }
            // With a cache, the creation goes exclusive first: a file this mount made is new,
            // so the answer can be kept and the kernel's next questions about it cost nothing
            // (`CreateTicket::keep`). The kernel asks only after finding the name missing; if
            // another host took it meanwhile (EEXIST), the open that may create goes as asked.
            let ticket = self
                .cache
                .as_ref()
                .and_then(|c| c.create_ticket(self.validity()));
            let exclusive = new.exclusive || ticket.is_some();
            let mut created = s
                .create(child(parent, &name), owner, exclusive)
                .await
                .map_err(errno);
            let mut kept = ticket;
            if !new.exclusive && matches!(created, Err(Errno(libc::EEXIST))) && kept.is_some() {
                kept = None;
                if let Some(cache) = &self.cache {
                    cache.forget_name(parent, &name);
                }
                created = s
                    .create(child(parent, &name), owner, false)
                    .await
                    .map_err(errno);
            }
            let created = self.refused(created, &[(parent, &name)])?;
            let a = attr(&created.attr);
            if let Some(t) = &kept {
                t.keep(parent, &name, &a);
                if let Some((index, dir)) = &created.dir {
                    t.keep_dir(*index, &attr(dir));
                }
            }
            Ok((Some(self.remember(s.id, created.handle)), a))
        })
    }

    fn read(&self, session: u64, ino: u64, offset: u64, len: u64) -> BoxFut<'_, Vec<u8>> {
        Box::pin(async move {
            // A file of an expired session fails like every other use of it, handle or not.
            let s = self.live(session).await?;
            // Whole files only are cached: what the fs layer reads at offset 0.
            let whole = offset == 0 && len == u64::MAX;
            let valid = self.validity();
            let cache = self.cache.as_ref().filter(|_| whole);
            if let Some(data) = cache.and_then(|c| c.contents(valid, ino)) {
                return Ok(data.as_ref().clone());
            }
            let ticket = cache.and_then(|c| c.ticket(valid));
            let (data, a) = s.read_at(ino, offset, len).await.map_err(errno)?;
            if let (Some(c), Some(t)) = (cache, ticket) {
                c.keep_contents(t, &attr(&a), Arc::new(data.clone()));
            }
            Ok(data)
        })
    }

    fn write(
        &self,
        session: u64,
        ino: u64,
        offset: u64,
        data: Vec<u8>,
        truncate: bool,
        append: bool,
    ) -> BoxFut<'_, FileAttr> {
        Box::pin(async move {
            // The attributes the write answers with are kept if nothing changed the file after
            // it: the kernel asks for them right after a write (`cache.rs`).
            let ticket = self
                .cache
                .as_ref()
                .and_then(|c| c.write_ticket(self.validity(), ino));
            let s = self.live(session).await?;
            let write = WriteAt {
                offset,
                data,
                truncate,
                append,
            };
            let attr = file_attr(s.write(ino, write).await)?;
            if let Some(t) = &ticket {
                t.keep(&attr);
            }
            Ok(attr)
        })
    }

    fn close(&self, fh: u64) -> BoxFut<'_, ()> {
        Box::pin(async move {
            let entry = self.handles.lock().expect("poisoned").remove(&fh);
            let Some((sid, handle)) = entry else {
                return Ok(());
            };
            let Ok(s) = self.live(sid).await else {
                // The old session took its handles with it.
                return Ok(());
            };
            s.close_handle(handle).await.map_err(errno)
        })
    }

    fn lock(&self, spec: LockSpec, wait: bool) -> BoxFut<'_, LockReply> {
        Box::pin(async move {
            let (s, handle) = self.handle(spec.handle).await?;
            match s
                .request_lock(&request(handle, &spec), wait)
                .await
                .map_err(errno)?
            {
                Requested::Done(LockOutcome::Granted(g)) => Ok(LockReply::Granted(grant(g))),
                Requested::Done(LockOutcome::WouldBlock { conflict }) => {
                    Ok(LockReply::WouldBlock {
                        conflict: conflict.as_ref().map(holder),
                    })
                }
                Requested::Done(LockOutcome::GaveUp) => {
                    Ok(LockReply::WouldBlock { conflict: None })
                }
                Requested::Queued(wait) => {
                    self.waits.lock().expect("poisoned").insert(wait, s);
                    Ok(LockReply::Queued { wait })
                }
            }
        })
    }

    fn wait_granted(&self, wait: u64) -> BoxFut<'_, Grant> {
        Box::pin(async move {
            let s = self.wait_session(wait)?;
            let result = s.wait_granted(wait).await.map(grant).map_err(errno);
            self.waits.lock().expect("poisoned").remove(&wait);
            result
        })
    }

    fn cancel_wait(&self, wait: u64) -> BoxFut<'_, bool> {
        Box::pin(async move {
            let s = self.wait_session(wait)?;
            self.waits.lock().expect("poisoned").remove(&wait);
            if s.has_ended() {
                // The wait went with its session, and nothing granted to it outlives it.
                return Ok(false);
            }
            s.cancel_wait(wait).await.map_err(errno)
        })
    }

    fn unlock(
        &self,
        fh: u64,
        owner: u64,
        lock_style: LockStyle,
        start: u64,
        end: u64,
    ) -> BoxFut<'_, ()> {
        Box::pin(async move {
            let (s, handle) = match self.handle(fh).await {
                Ok(h) => h,
                // Nothing is held through a handle of a dead session.
                Err(Errno(EKEYEXPIRED)) => return Ok(()),
                Err(e) => return Err(e),
            };
            let style = style(lock_style);
            s.unlock(handle, owner, style, start, end)
                .await
                .map_err(errno)
        })
    }

    fn getlk(&self, spec: LockSpec) -> BoxFut<'_, Option<Holder>> {
        Box::pin(async move {
            let (s, handle) = self.handle(spec.handle).await?;
            let conflict = s.get_lock(&request(handle, &spec)).await.map_err(errno)?;
            Ok(conflict.as_ref().map(holder))
        })
    }

    fn set_ephemeral(&self, ino: u64, ephemeral: bool) -> BoxFut<'_, FileAttr> {
        Box::pin(async move {
            let a = self.now().await?.set_ephemeral(ino, ephemeral).await;
            file_attr(a)
        })
    }

    fn holders(&self, ino: u64) -> BoxFut<'_, Vec<Holder>> {
        Box::pin(async move {
            Ok(self
                .lock_info(ino)
                .await?
                .map(|i| i.holders.iter().map(holder).collect())
                .unwrap_or_default())
        })
    }

    fn lock_settings(&self, ino: u64) -> BoxFut<'_, LockSettings> {
        Box::pin(async move {
            let info = self.lock_info(ino).await?;
            Ok(LockSettings {
                max_holders: info.as_ref().map_or(1, |i| i.max_holders.max(1)),
                on_loss: info.and_then(|i| on_loss(i.on_loss)),
            })
        })
    }

    fn set_max_holders(&self, ino: u64, max_holders: u32) -> BoxFut<'_, ()> {
        Box::pin(async move {
            let s = self.now().await?;
            s.set_max_holders(ino, max_holders).await.map_err(errno)
        })
    }

    fn set_on_loss(&self, ino: u64, on_loss: Option<OnLoss>) -> BoxFut<'_, ()> {
        Box::pin(async move {
            let on_loss = match on_loss {
                None => proto::OnLoss::NONE,
                Some(OnLoss::Term) => proto::OnLoss::TERM,
                Some(OnLoss::Kill) => proto::OnLoss::KILL,
            };
            let s = self.now().await?;
            s.set_on_loss(ino, on_loss).await.map_err(errno)
        })
    }
}

fn on_loss(v: proto::OnLoss) -> Option<OnLoss> {
    match v {
        proto::OnLoss::NONE => None,
        proto::OnLoss::TERM => Some(OnLoss::Term),
        proto::OnLoss::KILL => Some(OnLoss::Kill),
    }
}

fn grant(g: crate::client::session::Grant) -> Grant {
    Grant {
        generation: g.generation,
        on_loss: on_loss(g.on_loss),
    }
}

/// The client's lock request for `spec`, through cluster handle `handle`.
fn request(handle: u64, spec: &LockSpec) -> LockRequest {
    LockRequest {
        handle,
        owner: spec.owner,
        style: style(spec.style),
        kind: kind(spec.kind),
        start: spec.start,
        end: spec.end,
        pid: spec.pid,
    }
}
