//! What the mount lets its kernel cache, and taking it back before the cluster's writes are
//! acknowledged.
//!
//! The mount's own cache (`cache.rs`) answers every request that reaches the mount process;
//! this lets the kernel answer some requests without asking at all. Everything is granted only
//! from the mount's cache while its registration and lease hold, for at most the time the lease
//! has left, and is taken back by the cache task (`ClusterBackend::keep_cache`) before it
//! acknowledges the event that changed it. Nothing taken back here takes a kernel lock: the
//! kernel's `inval_entry` locks the parent directory, and a create in that directory, waiting
//! for this very acknowledgement, holds that lock; so names are never taken back one by one.
//! - **Attributes** (what `stat` shows, and what the kernel checks permissions against), in
//!   GETATTR answers only. The kernel has the inode then, so taking them back (`inval_inode`
//!   with a negative offset: attributes only) reaches them, and the kernel's attribute version
//!   drops an answer that crosses a taking back. A LOOKUP answer may make a new inode, which a
//!   taking back sent meanwhile would miss: its attributes are not kept.
//! - **Names** of files and directories, in LOOKUP answers, when the kernel takes
//!   FUSE_NOTIFY_INC_EPOCH (Linux 6.16 and later; fuser 0.18 cannot send it, so it is written
//!   to the FUSE device here). Whenever a name goes away (a deletion or rename anywhere), or
//!   attributes change elsewhere (the kernel checks the sticky rule against the owner of an
//!   inode it reached by name, without asking again), a new epoch ends every name the kernel
//!   keeps, at once and without a lock; a lookup that was under way when the epoch changed
//!   keeps its name in the old epoch, already ended. Names found missing are never kept, so a
//!   creation elsewhere needs nothing. A kernel without epochs keeps no names: directories
//!   move too, and a name could only be taken back one by one. A directory's attributes,
//!   asked for through a name kept for a directory since deleted, answer ESTALE
//!   ([`KernelCache::stale`]): the kernel walks the path again.
//!
//! Contents are kept only for shared mappings. Files keep FOPEN_DIRECT_IO (see
//! `filesystem.rs`), so `read` and `write` never use the page cache; a caching mount asks for
//! FUSE_DIRECT_IO_ALLOW_MMAP, and a `mmap` then fills pages the kernel keeps. Processes of this
//! host that map a file share those pages, and the kernel itself keeps them coherent with this
//! host's `read` and `write`. A change made elsewhere drops the pages of every file open here
//! ([`KernelCache::changed_elsewhere`], from the event that reports it): unlike every other taking
//! back this needs page locks, and dirty pages are written back first (a WRITE to this very
//! mount), so it runs on a thread of its own and is not waited for. A mapping here sees a
//! change made elsewhere shortly after its event, not before the writer is acknowledged.
//!
//! A grant ends by itself when the lease could have lapsed, so a mount frozen past its lease
//! lets its kernel serve nothing from before: the kernel asks, and the frozen mount does not
//! answer. A grant whose answer reached the kernel late (the mount paused between deciding it
//! and sending it) is taken back at once ([`KernelCache::sent`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Most inodes with live grants of each kind; past it, nothing more is granted until some
/// expire.
pub const MAX_GRANTS: usize = 100_000;

/// An answer sent later than this after its grant was decided is taken back.
const SLACK: Duration = Duration::from_millis(50);

#[derive(Default)]
struct Grants {
    /// Inode -> until when the kernel may hold its attributes.
    attrs: HashMap<u64, Instant>,
    /// Directory inode -> until when the kernel may hold a name for it.
    dirs: HashMap<u64, Instant>,
}

/// Grants to the kernel and their taking back; grants nothing until [`KernelCache::attach`].
#[derive(Default)]
pub struct KernelCache {
    notifier: OnceLock<fuser::Notifier>,
    /// The FUSE device, for the one notification fuser 0.18 cannot send (`new_epoch`).
    device: OnceLock<std::fs::File>,
    /// Whether the kernel takes FUSE_NOTIFY_INC_EPOCH (Linux 6.16 and later).
    epochs: std::sync::atomic::AtomicBool,
    grants: Mutex<Grants>,
    /// Inode -> how many files are open on it here: only those can have mapped pages that
    /// matter (a new mapping drops what the kernel kept from before).
    open: Mutex<HashMap<u64, u32>>,
    /// Inodes whose pages are to be dropped, for the thread that drops them.
    drops: Arc<PageDrops>,
}

#[derive(Default)]
struct PageDrops {
    /// The inodes, and whether the cache is gone (the thread ends).
    queue: Mutex<(HashSet<u64>, bool)>,
    wake: Condvar,
}

impl PageDrops {
    /// Queues `inodes` for the thread that drops their pages.
    fn push(&self, inodes: impl IntoIterator<Item = u64>) {
        self.queue.lock().expect("poisoned").0.extend(inodes);
        self.wake.notify_one();
    }
}

impl Drop for KernelCache {
    fn drop(&mut self) {
        self.drops.queue.lock().expect("poisoned").1 = true;
        self.drops.wake.notify_all();
    }
}

/// A grant decided for an answer: send it, then call [`KernelCache::sent`].
#[derive(Debug, Clone, Copy)]
pub struct Grant {
    pub ttl: Duration,
    ino: u64,
    decided: Instant,
    /// A name, not attributes.
    name: bool,
}

/// The TTL of a grant, zero for none.
pub fn ttl(grant: Option<Grant>) -> Duration {
    grant.map_or(Duration::ZERO, |g| g.ttl)
}

/// Records `ino` in `map` until `until`, making room by forgetting expired grants; `false`
/// if there is no room.
fn record(map: &mut HashMap<u64, Instant>, ino: u64, until: Instant, now: Instant) -> bool {
    if map.len() >= MAX_GRANTS && !map.contains_key(&ino) {
        map.retain(|_, end| *end > now);
        if map.len() >= MAX_GRANTS {
            return false;
        }
    }
    let end = map.entry(ino).or_insert(until);
    *end = (*end).max(until);
    true
}

impl KernelCache {
    /// Lets grants be taken back through `notifier`, and so lets them be made.
    pub fn attach(&self, notifier: fuser::Notifier, device: std::os::fd::OwnedFd) {
        let drops = self.drops.clone();
        let n = notifier.clone();
        if let Err(e) = std::thread::Builder::new()
            .name("lockfs-pages".into())
            .spawn(move || drop_pages_until_gone(&drops, &n))
        {
            log::warn!("no thread to drop mapped pages ({e}): mappings miss other hosts' writes");
        }
        let _ = self.notifier.set(notifier);
        let _ = self.device.set(device.into());
        match self.new_epoch() {
            Ok(()) => {
                self.epochs
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                log::info!("the kernel takes name epochs");
            }
            Err(e) => log::info!("the kernel takes no name epochs ({e})"),
        }
    }

    /// Ends every name the kernel keeps (FUSE_NOTIFY_INC_EPOCH): it asks for each again at
    /// its next use. Takes no kernel lock: it only counts up.
    fn new_epoch(&self) -> std::io::Result<()> {
        use std::io::Write;
        const FUSE_NOTIFY_INC_EPOCH: i32 = 8;
        let device = self.device.get().ok_or(std::io::ErrorKind::NotConnected)?;
        // struct fuse_out_header { u32 len; i32 error (the notification code); u64 unique (0) }
        let mut header = [0u8; 16];
        header[..4].copy_from_slice(&16u32.to_ne_bytes());
        header[4..8].copy_from_slice(&FUSE_NOTIFY_INC_EPOCH.to_ne_bytes());
        let written = (&*device).write(&header)?;
        if written != header.len() {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        Ok(())
    }

    fn grant(&self, ino: u64, left: Duration, dir: bool) -> Option<Grant> {
        self.notifier.get()?;
        if left <= SLACK {
            return None;
        }
        let now = Instant::now();
        let until = now + left + SLACK;
        let mut g = self.grants.lock().expect("poisoned");
        let map = if dir { &mut g.dirs } else { &mut g.attrs };
        record(map, ino, until, now).then_some(Grant {
            ttl: left,
            ino,
            decided: now,
            name: dir,
        })
    }

    /// How long the kernel may keep `ino`'s attributes, served from the cache with `left` of
    /// the lease to go (zero: not at all).
    pub fn attrs(&self, ino: u64, left: Duration) -> Option<Grant> {
        self.grant(ino, left, false)
    }

    /// How long the kernel may keep a name of `ino` (its attributes: not at all), if the
    /// kernel takes name epochs.
    pub fn entry(&self, ino: u64, dir: bool, left: Duration) -> Option<Grant> {
        if !self.epochs.load(std::sync::atomic::Ordering::Relaxed) {
            None
        } else if dir {
            self.grant(ino, left, true)
        } else {
            self.notifier.get()?;
            (left > SLACK).then(|| Grant {
                ttl: left,
                ino,
                decided: Instant::now(),
                name: true,
            })
        }
    }

    /// Ends every name the kernel keeps, if it takes name epochs (a name went away: a file's
    /// name may be among those kept).
    pub fn take_back_names(&self) {
        if self.epochs.load(std::sync::atomic::Ordering::Relaxed) {
            if let Err(e) = self.new_epoch() {
                log::warn!("ending the kernel's names: {e}");
            }
        }
    }

    /// Call once the answer carrying `grant` is sent: if it left late, the grant may outlast
    /// the lease, and is taken back.
    pub fn sent(&self, grant: Option<Grant>) {
        match grant {
            Some(g) if g.decided.elapsed() > SLACK && g.name => self.take_back_names(),
            Some(g) if g.decided.elapsed() > SLACK => self.take_back(g.ino),
            _ => {}
        }
    }

    /// Whether a "no such node" for `ino` must be ESTALE: the kernel may still hold a name of
    /// it as a directory, and should look the path up again.
    pub fn stale(&self, ino: u64) -> bool {
        let g = self.grants.lock().expect("poisoned");
        g.dirs.get(&ino).is_some_and(|end| *end > Instant::now())
    }

    /// Takes back what the kernel may hold of `ino`'s attributes. Takes no kernel lock.
    pub fn take_back(&self, ino: u64) {
        let live = {
            let mut g = self.grants.lock().expect("poisoned");
            g.attrs.remove(&ino).is_some_and(|end| end > Instant::now())
        };
        if live {
            self.inval(ino);
        }
    }

    /// A file on `ino` was opened here.
    pub fn file_opened(&self, ino: u64) {
        *self.open.lock().expect("poisoned").entry(ino).or_default() += 1;
    }

    /// A file on `ino` opened here was released.
    pub fn file_closed(&self, ino: u64) {
        let mut open = self.open.lock().expect("poisoned");
        if let Some(n) = open.get_mut(&ino) {
            *n -= 1;
            if *n == 0 {
                open.remove(&ino);
            }
        }
    }

    /// `ino`'s contents changed elsewhere: drops the pages the kernel keeps of them if a file
    /// is open on it here (without waiting: see the module's comment).
    pub fn changed_elsewhere(&self, ino: u64) {
        if self.open.lock().expect("poisoned").contains_key(&ino) {
            self.drops.push([ino]);
        }
    }

    /// Events may have been missed: every file may have changed. Drops the pages of every
    /// file open here.
    pub fn missed_changes(&self) {
        let open: Vec<u64> = self
            .open
            .lock()
            .expect("poisoned")
            .keys()
            .copied()
            .collect();
        if !open.is_empty() {
            self.drops.push(open);
        }
    }

    /// Takes back every grant still running, and every mapped page (after the cache missed
    /// events).
    pub fn take_back_all(&self) {
        self.missed_changes();
        self.take_back_names();
        let now = Instant::now();
        let live: Vec<u64> = {
            let mut g = self.grants.lock().expect("poisoned");
            let live = g
                .attrs
                .iter()
                .filter(|(_, end)| **end > now)
                .map(|(ino, _)| *ino)
                .collect();
            g.attrs.clear();
            live
        };
        for ino in live {
            self.inval(ino);
        }
    }

    /// Drops the kernel's name `name` in `parent` of a directory that moved or went away
    /// elsewhere. Only a kernel that forgets the old name lets a rename here find the
    /// directory at its new one (the kernel keeps one name per directory, and moving it to the
    /// new one needs the lock a rename holds, so the rename fails with ESTALE). Unlike every
    /// other taking back this needs the parent's lock, which a request here may hold while it
    /// waits for the acknowledgement this precedes: it is waited for briefly, then left to
    /// finish on its own thread.
    pub fn unalias(&self, parent: u64, name: &str) {
        const PATIENCE: Duration = Duration::from_millis(5);
        let Some(n) = self.notifier.get().cloned() else {
            return;
        };
        let name = std::ffi::OsString::from(name);
        let (done, finished) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("lockfs-unalias".into())
            .spawn(move || {
                // ENOENT: the kernel holds no such name.
                if let Err(e) = n.inval_entry(fuser::INodeNo(parent), &name) {
                    if e.raw_os_error() != Some(libc::ENOENT) {
                        log::debug!("dropping the kernel's name {name:?} in {parent}: {e}");
                    }
                }
                let _ = done.send(());
            });
        if spawned.is_ok() {
            let _ = finished.recv_timeout(PATIENCE);
        }
    }

    fn inval(&self, ino: u64) {
        let Some(n) = self.notifier.get() else { return };
        // ENOENT: the kernel has forgotten the inode, and with it the attributes.
        if let Err(e) = n.inval_inode(fuser::INodeNo(ino), -1, 0) {
            if e.raw_os_error() != Some(libc::ENOENT) {
                log::warn!("taking back the kernel's attributes of inode {ino}: {e}");
            }
        }
    }
}

/// Drops the pages queued in `drops` (data and attributes: `inval_inode` from offset 0), until
/// the cache is gone.
fn drop_pages_until_gone(drops: &PageDrops, notifier: &fuser::Notifier) {
    loop {
        let inodes = {
            let mut q = drops.queue.lock().expect("poisoned");
            while q.0.is_empty() && !q.1 {
                q = drops.wake.wait(q).expect("poisoned");
            }
            if q.1 {
                return;
            }
            std::mem::take(&mut q.0)
        };
        for ino in inodes {
            // ENOENT: the kernel has forgotten the inode, and its pages with it.
            if let Err(e) = notifier.inval_inode(fuser::INodeNo(ino), 0, 0) {
                if e.raw_os_error() != Some(libc::ENOENT) {
                    log::warn!("dropping the kernel's pages of inode {ino}: {e}");
                }
            }
        }
    }
}
