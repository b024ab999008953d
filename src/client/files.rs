//! A session's file operations as typed calls, the way the mount makes them: nodes are named
//! by instance number or by a name in a directory ([`At`]), and each call returns what its
//! request answers (attributes, a handle, contents, a listing) or a [`ClientError`] carrying
//! the errno. Nothing outside the client builds a request or takes an answer apart.

use super::session::{LockRequest, Session};
use super::{answer, ClientError};
use crate::proto::{self, Request_oneof_op as Op};

/// The node a request is about.
#[derive(Debug, Clone, Copy)]
pub enum At<'a> {
    /// The node with this instance number (the mount's inode number).
    Ino(u64),
    /// The entry `name` of the directory with instance number `parent`.
    Child { parent: u64, name: &'a str },
}

impl At<'_> {
    fn target(self) -> proto::Target {
        let mut t = proto::Target::new();
        match self {
            At::Ino(ino) => t.set_ino(ino),
            At::Child { parent, name } => {
                let mut c = proto::Child::new();
                c.parent = parent;
                c.name = name.to_string();
                t.set_child(c);
            }
        }
        t
    }
}

/// An open that may have created its file.
#[derive(Debug, Clone)]
pub struct Created {
    pub handle: u64,
    pub attr: proto::Attr,
    /// Only if this very request created the file: the creation's log index, and the
    /// directory's attributes right after it.
    pub dir: Option<(u64, proto::Attr)>,
}

/// A file created without a handle.
#[derive(Debug, Clone)]
pub struct Made {
    pub attr: proto::Attr,
    /// As for [`Created`]: only if this very request made the file.
    pub dir: Option<(u64, proto::Attr)>,
}

/// Who owns a new node, and its permission bits.
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The attributes a `set_attr` changes; `None` leaves one as it is. Setting none moves only
/// the change time (as `chown(f, -1, -1)` does).
#[derive(Debug, Clone, Copy, Default)]
pub struct AttrChanges {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub atime_ns: Option<u64>,
    pub mtime_ns: Option<u64>,
}

/// How a rename treats an existing destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// Replaces it (rename(2)).
    Yes,
    /// Fails with EEXIST (RENAME_NOREPLACE).
    No,
    /// Swaps the two (RENAME_EXCHANGE).
    Exchange,
}

/// A write into a file.
#[derive(Debug, Clone)]
pub struct WriteAt {
    pub offset: u64,
    pub data: Vec<u8>,
    /// The file is emptied first (O_TRUNC), in the same command.
    pub truncate: bool,
    /// The data goes at the end, whatever `offset` says (O_APPEND).
    pub append: bool,
}

impl Session {
    async fn attr_of(&self, what: &str, op: Op) -> Result<proto::Attr, ClientError> {
        answer::attr(what, self.call(op).await?)
    }

    /// A request whose success is all its caller needs: what it answers beyond that is not
    /// looked at.
    async fn done(&self, op: Op) -> Result<(), ClientError> {
        self.call(op).await.map(drop)
    }

    pub async fn stat(&self, at: At<'_>) -> Result<proto::Attr, ClientError> {
        let mut m = proto::Stat::new();
        m.set_target(at.target());
        self.attr_of("stat", Op::stat(m)).await
    }

    /// Cuts or extends (with zeros) file `ino` to `size` bytes.
    pub async fn truncate(&self, ino: u64, size: u64) -> Result<proto::Attr, ClientError> {
        let mut m = proto::Truncate::new();
        m.set_target(At::Ino(ino).target());
        m.size = size;
        self.attr_of("truncate", Op::truncate(m)).await
    }

    pub async fn set_attr(
        &self,
        ino: u64,
        changes: AttrChanges,
    ) -> Result<proto::Attr, ClientError> {
        let AttrChanges {
            mode,
            uid,
            gid,
            atime_ns,
            mtime_ns,
        } = changes;
        let mut m = proto::SetAttr::new();
        m.set_target(At::Ino(ino).target());
        (m.has_mode, m.mode) = (mode.is_some(), mode.unwrap_or(0));
        (m.has_uid, m.uid) = (uid.is_some(), uid.unwrap_or(0));
        (m.has_gid, m.gid) = (gid.is_some(), gid.unwrap_or(0));
        (m.has_atime, m.atime_ns) = (atime_ns.is_some(), atime_ns.unwrap_or(0));
        (m.has_mtime, m.mtime_ns) = (mtime_ns.is_some(), mtime_ns.unwrap_or(0));
        self.attr_of("setattr", Op::set_attr(m)).await
    }

    /// The entries of directory `ino`.
    pub async fn readdir(&self, ino: u64) -> Result<Vec<proto::DirEntry>, ClientError> {
        let mut m = proto::Readdir::new();
        m.set_target(At::Ino(ino).target());
        let mut listed = answer::entries("readdir", self.call(Op::readdir(m)).await?)?;
        Ok(listed.take_entries().into_vec())
    }

    /// Reads `len` bytes of node `ino` from `offset` (a symlink: its target), with the
    /// node's attributes as of that read.
    pub async fn read_at(
        &self,
        ino: u64,
        offset: u64,
        len: u64,
    ) -> Result<(Vec<u8>, proto::Attr), ClientError> {
        let mut m = proto::Read::new();
        m.set_target(At::Ino(ino).target());
        m.offset = offset;
        m.has_len = true;
        m.len = len;
        let mut d = answer::data("read", self.call(Op::read(m)).await?)?;
        Ok((std::mem::take(&mut d.data), d.take_attr()))
    }

    /// The target of symlink `ino`.
    pub async fn readlink(&self, ino: u64) -> Result<Vec<u8>, ClientError> {
        let mut m = proto::Read::new();
        m.set_target(At::Ino(ino).target());
        let d = answer::data("readlink", self.call(Op::read(m)).await?)?;
        Ok(d.data)
    }

    pub async fn symlink(
        &self,
        at: At<'_>,
        target: &str,
        uid: u32,
        gid: u32,
    ) -> Result<proto::Attr, ClientError> {
        let mut m = proto::Symlink::new();
        m.set_at(at.target());
        m.target = target.to_string();
        m.uid = uid;
        m.gid = gid;
        self.attr_of("symlink", Op::symlink(m)).await
    }

    /// A new name `at` for node `ino` (a hard link).
    pub async fn link(&self, ino: u64, at: At<'_>) -> Result<proto::Attr, ClientError> {
        let mut m = proto::Link::new();
        m.set_target(At::Ino(ino).target());
        m.set_at(at.target());
        self.attr_of("link", Op::link(m)).await
    }

    pub async fn mkdir(&self, at: At<'_>, owner: Owner) -> Result<proto::Attr, ClientError> {
        let mut m = proto::Mkdir::new();
        m.set_at(at.target());
        (m.mode, m.uid, m.gid) = (owner.mode, owner.uid, owner.gid);
        self.attr_of("mkdir", Op::mkdir(m)).await
    }

    pub async fn unlink(&self, at: At<'_>) -> Result<(), ClientError> {
        let mut m = proto::Unlink::new();
        m.set_at(at.target());
        self.done(Op::unlink(m)).await
    }

    pub async fn rmdir(&self, at: At<'_>) -> Result<(), ClientError> {
        let mut m = proto::Rmdir::new();
        m.set_at(at.target());
        self.done(Op::rmdir(m)).await
    }

    pub async fn rename(
        &self,
        from: At<'_>,
        to: At<'_>,
        replace: Replace,
    ) -> Result<(), ClientError> {
        let mut m = proto::Rename::new();
        m.set_from(from.target());
        m.set_to(to.target());
        m.noreplace = replace == Replace::No;
        m.exchange = replace == Replace::Exchange;
        self.done(Op::rename(m)).await
    }

    /// Opens the file `at`: its handle in this session.
    pub async fn open_handle(&self, at: At<'_>) -> Result<u64, ClientError> {
        let mut m = proto::Open::new();
        m.set_at(at.target());
        Ok(answer::opened("open", self.call(Op::open(m)).await?)?.handle)
    }

    /// Opens the file `at`, creating it if it is missing (with `exclusive`, failing with
    /// EEXIST if it is not).
    pub async fn create(
        &self,
        at: At<'_>,
        owner: Owner,
        exclusive: bool,
    ) -> Result<Created, ClientError> {
        let mut m = proto::Open::new();
        m.set_at(at.target());
        m.create = true;
        (m.mode, m.uid, m.gid) = (owner.mode, owner.uid, owner.gid);
        m.exclusive = exclusive;
        let mut o = answer::opened("create", self.call(Op::open(m)).await?)?;
        let dir = o.has_dir().then(|| (o.created_at, o.take_dir()));
        Ok(Created {
            handle: o.handle,
            attr: o.take_attr(),
            dir,
        })
    }

    /// Creates the file `at` without opening a handle on it (with `exclusive`, failing with
    /// EEXIST if something is there; without, answering what is there). The cluster refuses
    /// it in a directory whose files are ephemeral: those live only while a handle holds them.
    pub async fn make(
        &self,
        at: At<'_>,
        owner: Owner,
        exclusive: bool,
    ) -> Result<Made, ClientError> {
        let mut m = proto::Create::new();
        m.set_at(at.target());
        (m.mode, m.uid, m.gid) = (owner.mode, owner.uid, owner.gid);
        m.exclusive = exclusive;
        let mut o = answer::made("create", self.call(Op::create(m)).await?)?;
        let dir = o.has_dir().then(|| (o.created_at, o.take_dir()));
        Ok(Made {
            attr: o.take_attr(),
            dir,
        })
    }

    /// Writes into file `ino`; no handle is needed, only this session.
    pub async fn write(&self, ino: u64, write: WriteAt) -> Result<proto::Attr, ClientError> {
        let WriteAt {
            offset,
            data,
            truncate,
            append,
        } = write;
        let mut m = proto::Write::new();
        m.set_target(At::Ino(ino).target());
        (m.offset, m.data, m.truncate, m.append) = (offset, data, truncate, append);
        self.attr_of("write", Op::write(m)).await
    }

    /// Closes a handle of this session (its flock locks go with it).
    pub async fn close_handle(&self, handle: u64) -> Result<(), ClientError> {
        let mut m = proto::Close::new();
        m.handle = handle;
        self.done(Op::close(m)).await
    }

    /// Releases what `owner` holds through `handle` from byte `start` to `end`, as the lock
    /// requests of [`LockRequest`] count them (flock locks cover the whole file).
    pub async fn unlock(
        &self,
        handle: u64,
        owner: u64,
        style: proto::LockStyle,
        start: u64,
        end: u64,
    ) -> Result<(), ClientError> {
        let mut m = proto::Unlock::new();
        (m.handle, m.owner, m.style) = (handle, owner, style);
        (m.start, m.end) = (start, end);
        self.done(Op::unlock(m)).await
    }

    /// F_GETLK: a holder whose lock conflicts with `req`, if there is one.
    pub async fn get_lock(
        &self,
        req: &LockRequest,
    ) -> Result<Option<proto::LockHolder>, ClientError> {
        let mut m = proto::GetLock::new();
        (m.handle, m.owner, m.style, m.kind) = (req.handle, req.owner, req.style, req.kind);
        (m.start, m.end) = (req.start, req.end);
        let mut p = answer::probe("F_GETLK", self.call(Op::get_lock(m)).await?)?;
        Ok(p.conflict.take())
    }

    /// The holders, waiters and settings of the locks on node `ino`; `None` if it has none.
    pub async fn lock_info(&self, ino: u64) -> Result<Option<proto::LockInfo>, ClientError> {
        // The page that starts at this node: locks are listed by instance number.
        let listing = super::ops::list_locks(ino.saturating_sub(1));
        let mut page = answer::locks("a lock listing", self.call(listing).await?)?;
        Ok(page.take_locks().into_iter().find(|i| i.instance == ino))
    }

    /// Makes directory `ino` create ephemeral files, or no longer.
    pub async fn set_ephemeral(
        &self,
        ino: u64,
        ephemeral: bool,
    ) -> Result<proto::Attr, ClientError> {
        let mut m = proto::SetEphemeral::new();
        m.set_target(At::Ino(ino).target());
        m.ephemeral = ephemeral;
        self.attr_of("set ephemeral", Op::set_ephemeral(m)).await
    }

    /// How many exclusive flock holders file `ino` admits at once (1: a plain lock).
    pub async fn set_max_holders(&self, ino: u64, max_holders: u32) -> Result<(), ClientError> {
        let mut m = proto::SetMaxHolders::new();
        m.set_target(At::Ino(ino).target());
        m.max_holders = max_holders;
        self.done(Op::set_max_holders(m)).await
    }

    /// What a mount does to the holders of a lock on file `ino` when it loses the lock.
    pub async fn set_on_loss(&self, ino: u64, on_loss: proto::OnLoss) -> Result<(), ClientError> {
        let mut m = proto::SetOnLoss::new();
        m.set_target(At::Ino(ino).target());
        m.on_loss = on_loss;
        self.done(Op::set_on_loss(m)).await
    }
}
