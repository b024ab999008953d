//! A [`Backend`] on the real deterministic state machine, in process: one mount, one session,
//! commands applied in order under one mutex, grants pushed to the waiting futures the way the
//! cluster pushes them to a mount.

use std::collections::HashMap;
use std::future::ready;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

use crate::fs::backend::{
    Backend, BoxFut, DirEntry, Errno, FileAttr, Grant, Holder, LockKind, LockReply, LockSettings,
    LockSpec, LockStyle, NewFile, NodeKind, OnLoss, RenameHow, SetAttrs,
};
use crate::fs::pins::Pins;
use crate::state::{
    self, cmd, ApplyCtx, Attr, Command, CreateSpec, Event, LockResult, Outcome, Query, StateError,
    StateMachine, Target,
};

/// The file size limit of the test cluster (DESIGN.md's default).
pub const MAX_FILE_SIZE: u64 = 256 * 1024;

type Granted = Result<Grant, Errno>;

struct Inner {
    sm: StateMachine,
    index: u64,
    session: u64,
    /// Queued waits of our session: where their grant goes, and who awaits it.
    senders: HashMap<u64, oneshot::Sender<Granted>>,
    receivers: HashMap<u64, oneshot::Receiver<Granted>>,
    /// Files open without a handle, and their keepers, as a caching mount keeps them.
    pins: Pins<u64>,
}

pub struct MemBackend {
    inner: Mutex<Inner>,
}

fn errno(e: StateError) -> Errno {
    Errno(e.errno())
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn done<'a, T: Send + 'a>(result: Result<T, Errno>) -> BoxFut<'a, T> {
    Box::pin(ready(result))
}

fn file_attr(a: Attr) -> FileAttr {
    FileAttr {
        ino: a.instance,
        kind: node_kind(a.kind),
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

fn node_kind(k: state::Kind) -> NodeKind {
    match k {
        state::Kind::Dir => NodeKind::Dir,
        state::Kind::File => NodeKind::File,
        state::Kind::Symlink => NodeKind::Symlink,
    }
}

fn to_state_style(s: LockStyle) -> state::LockStyle {
    match s {
        LockStyle::Flock => state::LockStyle::Flock,
        LockStyle::Posix => state::LockStyle::Posix,
    }
}

fn to_state_kind(k: LockKind) -> state::LockKind {
    match k {
        LockKind::Shared => state::LockKind::Shared,
        LockKind::Exclusive => state::LockKind::Exclusive,
    }
}

fn holder(h: state::LockHolder) -> Holder {
    Holder {
        session: h.session,
        owner: h.owner,
        style: match h.style {
            state::LockStyle::Flock => LockStyle::Flock,
            state::LockStyle::Posix => LockStyle::Posix,
        },
        kind: match h.kind {
            state::LockKind::Shared => LockKind::Shared,
            state::LockKind::Exclusive => LockKind::Exclusive,
        },
        start: h.start,
        end: h.end,
        pid: h.pid,
        host: h.host,
        since_ns: h.since_ns,
    }
}

fn child(parent: u64, name: &str) -> Target {
    Target::Child {
        parent,
        name: name.to_owned(),
    }
}

impl Inner {
    fn apply(&mut self, cmd: Command) -> Result<Outcome, Errno> {
        self.index += 1;
        let ctx = ApplyCtx {
            index: self.index,
            time_ns: now_ns(),
            max_file_size: MAX_FILE_SIZE,
            lock_delay_ns: 0,
            caller: None,
            quotas: None,
        };
        let result = self.sm.apply(&ctx, &cmd).map_err(errno);
        for event in self.sm.take_events() {
            let (wait, grant) = match event {
                Event::Granted {
                    wait,
                    generation,
                    on_loss,
                    ..
                } => (
                    wait,
                    Ok(Grant {
                        generation,
                        on_loss: on_loss.map(from_state_on_loss),
                    }),
                ),
                Event::WaitFailed { wait, error, .. } => (wait, Err(errno(error))),
                Event::SessionEnded { .. } | Event::LockRevoked { .. } => continue,
            };
            if let Some(tx) = self.senders.remove(&wait) {
                let _ = tx.send(grant);
            }
        }
        result
    }

    fn query(&self, q: Query) -> Result<Outcome, Errno> {
        self.sm.query(&q).map_err(errno)
    }

    fn stat(&self, ino: u64) -> Result<FileAttr, Errno> {
        match self.query(Query::Stat(Target::Ino(ino)))? {
            Outcome::Attr(a) => Ok(file_attr(a)),
            other => panic!("stat answered {other:?}"),
        }
    }

    fn attr_of(&mut self, cmd: Command) -> Result<FileAttr, Errno> {
        match self.apply(cmd)? {
            Outcome::Attr(a) | Outcome::Data { attr: a, .. } => Ok(file_attr(a)),
            other => panic!("expected attributes, got {other:?}"),
        }
    }

    /// Before `at` loses its name: a keeper on it if it is open without a handle, as a caching
    /// mount takes one when it hears of the loss (`pins.rs`).
    fn keep(&mut self, at: &Target) {
        let Ok(ino) = self.sm.lookup(at) else {
            return;
        };
        if self.pins.needs_keeper(self.session, ino) {
            let (handle, _) = self.opened(Target::Ino(ino), None).expect("a keeper");
            assert_eq!(self.pins.kept(self.session, ino, handle), None);
        }
    }

    fn opened(&mut self, at: Target, create: Option<CreateSpec>) -> Result<(u64, FileAttr), Errno> {
        let session = self.session;
        match self.apply(Command::Open(cmd::Open {
            session,
            at,
            create,
        }))? {
            Outcome::Opened { handle, attr, .. } => Ok((handle, file_attr(attr))),
            other => panic!("open answered {other:?}"),
        }
    }
}

impl MemBackend {
    pub fn new() -> Arc<Self> {
        let mut inner = Inner {
            sm: StateMachine::new(),
            index: 0,
            session: 0,
            senders: HashMap::new(),
            receivers: HashMap::new(),
            pins: Pins::default(),
        };
        let opened = inner.apply(Command::OpenSession(cmd::OpenSession {
            ttl_ms: 10_000,
            host: "testhost".into(),
            pid: std::process::id(),
            name: "fs-tests".into(),
            owner: String::new(),
            secret: 0,
            cache: false,
        }));
        inner.session = match opened {
            Ok(Outcome::Session { id, .. }) => id,
            other => panic!("open session: {other:?}"),
        };
        Arc::new(MemBackend {
            inner: Mutex::new(inner),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> Result<T, Errno>) -> Result<T, Errno> {
        f(&mut self.inner.lock().unwrap())
    }

    /// Nodes in the tree, the root and files without a name included.
    pub fn nodes(&self) -> usize {
        self.inner.lock().unwrap().sm.len()
    }

    /// How many commands were applied: the commits a cluster would have made.
    pub fn applied(&self) -> u64 {
        self.inner.lock().unwrap().index
    }
}

impl Inner {
    /// The one session, if `session` names it (it never ends here).
    fn live(&self, session: u64) -> Result<(), Errno> {
        if session == self.session {
            Ok(())
        } else {
            Err(Errno::EKEYEXPIRED)
        }
    }
}

impl Backend for MemBackend {
    fn lookup(&self, parent: u64, name: &str) -> BoxFut<'_, FileAttr> {
        done(
            self.with(|i| match i.query(Query::Stat(child(parent, name)))? {
                Outcome::Attr(a) => Ok(file_attr(a)),
                other => panic!("stat answered {other:?}"),
            }),
        )
    }

    fn getattr(&self, ino: u64) -> BoxFut<'_, FileAttr> {
        done(self.with(|i| i.stat(ino)))
    }

    fn setattr(&self, ino: u64, set: SetAttrs) -> BoxFut<'_, FileAttr> {
        done(self.with(|i| {
            let target = Target::Ino(ino);
            if let Some(size) = set.size {
                i.apply(Command::Truncate(cmd::Truncate {
                    target: target.clone(),
                    size,
                }))?;
            }
            // Nothing at all given: only the change time moves (chown(f, -1, -1)).
            if set.others() || set.size.is_none() {
                i.apply(Command::SetAttr(cmd::SetAttr {
                    target,
                    mode: set.mode,
                    uid: set.uid,
                    gid: set.gid,
                    atime_ns: set.atime_ns,
                    mtime_ns: set.mtime_ns,
                }))?;
            }
            i.stat(ino)
        }))
    }

    fn readdir(&self, ino: u64) -> BoxFut<'_, Vec<DirEntry>> {
        done(self.with(|i| {
            match i.query(Query::Readdir(Target::Ino(ino)))? {
                Outcome::Entries(entries) => Ok(entries
                    .into_iter()
                    .map(|e| DirEntry {
                        name: e.name,
                        ino: e.instance,
                        kind: node_kind(e.kind),
                    })
                    .collect()),
                other => panic!("readdir answered {other:?}"),
            }
        }))
    }

    fn symlink(
        &self,
        parent: u64,
        name: &str,
        target: &str,
        uid: u32,
        gid: u32,
    ) -> BoxFut<'_, FileAttr> {
        done(self.with(|i| {
            i.attr_of(Command::Symlink(cmd::Symlink {
                at: child(parent, name),
                target: target.to_owned(),
                uid,
                gid,
            }))
        }))
    }

    fn readlink(&self, ino: u64) -> BoxFut<'_, Vec<u8>> {
        done(self.with(|i| {
            match i.query(Query::Read {
                target: Target::Ino(ino),
                offset: 0,
                len: None,
            })? {
                Outcome::Data { data, .. } => Ok(data),
                other => panic!("read answered {other:?}"),
            }
        }))
    }

    fn link(&self, ino: u64, parent: u64, name: &str) -> BoxFut<'_, FileAttr> {
        done(self.with(|i| {
            i.attr_of(Command::Link(cmd::Link {
                target: Target::Ino(ino),
                at: child(parent, name),
            }))
        }))
    }

    fn mkdir(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> BoxFut<'_, FileAttr> {
        done(self.with(|i| {
            i.attr_of(Command::Mkdir(cmd::Mkdir {
                at: child(parent, name),
                mode,
                uid,
                gid,
            }))
        }))
    }

    fn unlink(&self, parent: u64, name: &str) -> BoxFut<'_, ()> {
        let at = child(parent, name);
        done(self.with(|i| {
            i.keep(&at);
            i.apply(Command::Unlink(cmd::Unlink { at })).map(drop)
        }))
    }

    fn rmdir(&self, parent: u64, name: &str) -> BoxFut<'_, ()> {
        let at = child(parent, name);
        done(self.with(|i| i.apply(Command::Rmdir(cmd::Rmdir { at })).map(drop)))
    }

    fn rename(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        how: RenameHow,
    ) -> BoxFut<'_, ()> {
        let (from, to) = (child(parent, name), child(new_parent, new_name));
        done(self.with(|i| {
            let cmd = match how {
                RenameHow::Replace => {
                    i.keep(&to);
                    Command::Rename(cmd::Rename { from, to })
                }
                RenameHow::NoReplace => Command::RenameNoReplace(cmd::RenameNoReplace { from, to }),
                RenameHow::Exchange => Command::Exchange(cmd::Exchange { a: from, b: to }),
            };
            i.apply(cmd).map(drop)
        }))
    }

    fn session(&self) -> BoxFut<'_, u64> {
        done(self.with(|i| Ok(i.session)))
    }

    fn pin(&self, session: u64, ino: u64) -> bool {
        self.inner.lock().unwrap().pins.pin(session, ino);
        true
    }

    fn unpin(&self, session: u64, ino: u64) {
        let mut inner = self.inner.lock().unwrap();
        if let Some(handle) = inner.pins.unpin(session, ino) {
            let session = inner.session;
            let _ = inner.apply(Command::Close(cmd::Close { session, handle }));
        }
    }

    fn open(&self, session: u64, ino: u64) -> BoxFut<'_, u64> {
        done(self.with(|i| {
            i.live(session)?;
            i.opened(Target::Ino(ino), None).map(|(h, _)| h)
        }))
    }

    fn create(
        &self,
        session: u64,
        parent: u64,
        name: &str,
        new: NewFile,
    ) -> BoxFut<'_, (Option<u64>, FileAttr)> {
        let spec = CreateSpec {
            mode: new.mode,
            uid: new.uid,
            gid: new.gid,
            exclusive: new.exclusive,
        };
        let at = child(parent, name);
        done(self.with(|i| {
            i.live(session)?;
            i.opened(at, Some(spec))
                .map(|(handle, attr)| (Some(handle), attr))
        }))
    }

    fn read(&self, session: u64, ino: u64, offset: u64, len: u64) -> BoxFut<'_, Vec<u8>> {
        done(self.with(|i| {
            i.live(session)?;
            match i.query(Query::Read {
                target: Target::Ino(ino),
                offset,
                len: Some(len),
            })? {
                Outcome::Data { data, .. } => Ok(data),
                other => panic!("read answered {other:?}"),
            }
        }))
    }

    fn write(
        &self,
        _session: u64,
        ino: u64,
        offset: u64,
        data: Vec<u8>,
        truncate: bool,
        append: bool,
    ) -> BoxFut<'_, FileAttr> {
        done(self.with(|i| {
            i.attr_of(Command::Write(cmd::Write {
                target: Target::Ino(ino),
                offset,
                data,
                truncate,
                append,
            }))
        }))
    }

    fn close(&self, handle: u64) -> BoxFut<'_, ()> {
        done(self.with(|i| {
            let session = i.session;
            i.apply(Command::Close(cmd::Close { session, handle }))
                .map(drop)
        }))
    }

    fn lock(&self, spec: LockSpec, wait: bool) -> BoxFut<'_, LockReply> {
        done(self.with(|i| {
            let session = i.session;
            let outcome = i.apply(Command::Lock(cmd::Lock {
                session,
                handle: spec.handle,
                owner: spec.owner,
                style: to_state_style(spec.style),
                kind: to_state_kind(spec.kind),
                start: spec.start,
                end: spec.end,
                wait,
                pid: spec.pid,
            }))?;
            Ok(match outcome {
                Outcome::Lock(
                    r @ (LockResult::Granted { .. } | LockResult::GrantedOnLoss { .. }),
                ) => {
                    let (generation, on_loss) = r.granted().expect("a grant");
                    LockReply::Granted(Grant {
                        generation,
                        on_loss: on_loss.map(from_state_on_loss),
                    })
                }
                Outcome::Lock(LockResult::WouldBlock { conflict }) => LockReply::WouldBlock {
                    conflict: conflict.map(holder),
                },
                Outcome::Lock(LockResult::Queued { wait }) => {
                    let (tx, rx) = oneshot::channel();
                    i.senders.insert(wait, tx);
                    i.receivers.insert(wait, rx);
                    LockReply::Queued { wait }
                }
                other => panic!("lock answered {other:?}"),
            })
        }))
    }

    fn wait_granted(&self, wait: u64) -> BoxFut<'_, Grant> {
        let rx = self.inner.lock().unwrap().receivers.remove(&wait);
        Box::pin(async move {
            match rx {
                Some(rx) => rx.await.unwrap_or(Err(Errno::EINTR)),
                None => Err(Errno::EINVAL),
            }
        })
    }

    fn cancel_wait(&self, wait: u64) -> BoxFut<'_, bool> {
        done(self.with(|i| {
            let session = i.session;
            i.senders.remove(&wait);
            i.receivers.remove(&wait);
            match i.apply(Command::CancelWait(cmd::CancelWait { session, wait }))? {
                Outcome::Cancelled { was_granted } => Ok(was_granted),
                other => panic!("cancel answered {other:?}"),
            }
        }))
    }

    fn unlock(
        &self,
        handle: u64,
        owner: u64,
        style: LockStyle,
        start: u64,
        end: u64,
    ) -> BoxFut<'_, ()> {
        done(self.with(|i| {
            let session = i.session;
            i.apply(Command::Unlock(cmd::Unlock {
                session,
                handle,
                owner,
                style: to_state_style(style),
                start,
                end,
            }))
            .map(drop)
        }))
    }

    fn getlk(&self, spec: LockSpec) -> BoxFut<'_, Option<Holder>> {
        done(self.with(|i| {
            match i.query(Query::GetLock {
                session: i.session,
                handle: spec.handle,
                owner: spec.owner,
                style: to_state_style(spec.style),
                kind: to_state_kind(spec.kind),
                start: spec.start,
                end: spec.end,
            })? {
                Outcome::LockProbe(h) => Ok(h.map(holder)),
                other => panic!("getlk answered {other:?}"),
            }
        }))
    }

    fn set_ephemeral(&self, ino: u64, ephemeral: bool) -> BoxFut<'_, FileAttr> {
        done(self.with(|i| {
            i.apply(Command::SetEphemeral(cmd::SetEphemeral {
                target: Target::Ino(ino),
                ephemeral,
            }))?;
            i.stat(ino)
        }))
    }

    fn lock_settings(&self, ino: u64) -> BoxFut<'_, LockSettings> {
        done(
            self.with(|i| match i.query(Query::Locks { after: 0, limit: 0 })? {
                Outcome::Locks { locks: infos, .. } => {
                    let info = infos.into_iter().find(|info| info.instance == ino);
                    Ok(LockSettings {
                        max_holders: info.as_ref().map_or(1, |info| info.max_holders),
                        on_loss: info.and_then(|info| info.on_loss.map(from_state_on_loss)),
                    })
                }
                other => panic!("locks answered {other:?}"),
            }),
        )
    }

    fn set_on_loss(&self, ino: u64, on_loss: Option<OnLoss>) -> BoxFut<'_, ()> {
        done(self.with(|i| {
            i.apply(Command::SetOnLoss(cmd::SetOnLoss {
                target: Target::Ino(ino),
                on_loss: on_loss.map(|v| match v {
                    OnLoss::Term => crate::state::OnLoss::Term,
                    OnLoss::Kill => crate::state::OnLoss::Kill,
                }),
            }))
            .map(drop)
        }))
    }

    fn set_max_holders(&self, ino: u64, max_holders: u32) -> BoxFut<'_, ()> {
        done(self.with(|i| {
            i.apply(Command::SetMaxHolders(cmd::SetMaxHolders {
                target: Target::Ino(ino),
                max_holders,
            }))
            .map(drop)
        }))
    }

    fn holders(&self, ino: u64) -> BoxFut<'_, Vec<Holder>> {
        done(self.with(|i| {
            match i.query(Query::Locks { after: 0, limit: 0 })? {
                Outcome::Locks { locks: infos, .. } => Ok(infos
                    .into_iter()
                    .filter(|info| info.instance == ino)
                    .flat_map(|info| info.holders)
                    .map(holder)
                    .collect()),
                other => panic!("locks answered {other:?}"),
            }
        }))
    }
}

fn from_state_on_loss(v: crate::state::OnLoss) -> OnLoss {
    match v {
        crate::state::OnLoss::Term => OnLoss::Term,
        crate::state::OnLoss::Kill => OnLoss::Kill,
    }
}
