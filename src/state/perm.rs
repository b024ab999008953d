//! Unix permissions, checked by the state machine for the caller a request names.
//!
//! A host's mount tells the cluster which local user makes each request (uid, gid and
//! supplementary groups, as the kernel gave them); the cluster trusts the host's certificate
//! for that, as NFS trusts a host with Kerberos host keys. The leader stamps the caller into the
//! log entry, so every replica decides the same. A command or query without a caller (an
//! administrator's, or on an insecure cluster) is not checked.
//!
//! The rules are Linux's for a process without capabilities, except that uid 0 may read and
//! write anything and search any directory, as root may on a local filesystem (a mount with
//! `root_squash` sends uid 0 as `nobody` instead):
//! - reaching a node by path needs search (x) on every directory on the way;
//! - reading a file or listing a directory needs r; writing or truncating a file needs w
//!   (checked at each write, since the cluster does not see how a file was opened);
//! - creating, removing or renaming an entry needs w and x on its directory, and in a sticky
//!   directory, removing or replacing an entry needs ownership of it or of the directory;
//! - chmod and the ephemeral flag need ownership; chown of the owner needs root; chgrp needs
//!   ownership and membership of the new group; setting times needs ownership or w.

use serde::{Deserialize, Serialize};

use super::node::Node;
use super::path::split_path;
use super::tree::{StateMachine, ROOT};
use super::{cmd, Command, Query, StateError, Target};

const R: u32 = 4;
const W: u32 = 2;
const X: u32 = 1;
const STICKY: u32 = 0o1000;
/// Most supplementary groups a request may name: every log entry carries them, so they are
/// bounded well below Linux's 65536.
pub const MAX_GROUPS: usize = 1024;

/// Who makes a request: the ids of the process on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserIds {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

impl UserIds {
    pub(super) fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }

    /// Whether the caller may `want` (a mix of r, w and x) on `node`.
    fn may(&self, node: &Node, want: u32) -> bool {
        if self.uid == 0 {
            // Root executes only what someone may execute; directories it may always search.
            return want & X == 0 || node.is_dir() || node.mode & 0o111 != 0;
        }
        let bits = if node.uid == self.uid {
            node.mode >> 6
        } else if self.in_group(node.gid) {
            node.mode >> 3
        } else {
            node.mode
        } & 7;
        bits & want == want
    }

    fn owns(&self, node: &Node) -> bool {
        self.uid == 0 || self.uid == node.uid
    }
}

impl StateMachine {
    fn require(&self, caller: &UserIds, ino: u64, want: u32) -> Result<(), StateError> {
        if caller.may(self.node(ino)?, want) {
            Ok(())
        } else {
            Err(StateError::AccessDenied)
        }
    }

    /// Search permission on every directory a target is reached through.
    fn search(&self, caller: &UserIds, target: &Target) -> Result<(), StateError> {
        match target {
            Target::Path(path) => {
                let components = split_path(path)?;
                let mut at = ROOT;
                for (i, name) in components.iter().enumerate() {
                    self.require(caller, at, X)?;
                    if i + 1 < components.len() {
                        at = *self
                            .dir(at)?
                            .children
                            .get(*name)
                            .ok_or(StateError::NotFound)?;
                    }
                }
                Ok(())
            }
            Target::Child { parent, .. } => self.require(caller, *parent, X),
            Target::Ino(_) => Ok(()),
        }
    }

    /// Removing (or replacing) the entry `entry` of directory `dir`.
    fn may_remove(&self, caller: &UserIds, dir: u64, entry: Option<u64>) -> Result<(), StateError> {
        self.require(caller, dir, W | X)?;
        let d = self.node(dir)?;
        match entry {
            Some(e) if d.mode & STICKY != 0 && !caller.owns(d) && !caller.owns(self.node(e)?) => {
                Err(StateError::NotPermitted)
            }
            _ => Ok(()),
        }
    }

    /// Whether `caller` may move what is at `from` to `to` (with `exchange`, also what is at
    /// `to` to `from`): remove from one directory, add to the other, as Linux checks it; a
    /// directory that changes parent also needs w on itself, since its ".." changes.
    fn may_rename(
        &self,
        caller: &UserIds,
        from: &Target,
        to: &Target,
        exchange: bool,
    ) -> Result<(), StateError> {
        self.search(caller, from)?;
        self.search(caller, to)?;
        let (from, to) = (self.resolve_slot(from)?, self.resolve_slot(to)?);
        self.may_remove(caller, from.parent, from.existing)?;
        match to.existing {
            Some(_) => self.may_remove(caller, to.parent, to.existing)?,
            None => self.require(caller, to.parent, W | X)?,
        }
        if from.parent != to.parent {
            let second = to.existing.filter(|_| exchange);
            for moved in from.existing.into_iter().chain(second) {
                if self.node(moved)?.is_dir() {
                    self.require(caller, moved, W)?;
                }
            }
        }
        Ok(())
    }

    /// Whether `caller` may make `cmd` now; a refusal is the error the command fails with.
    pub(super) fn check_command(&self, cmd: &Command, caller: &UserIds) -> Result<(), StateError> {
        // Creating at `at` (when nothing is there) needs w and x on the directory.
        let create_at = |at: &Target| -> Result<Option<u64>, StateError> {
            self.search(caller, at)?;
            let slot = self.resolve_slot(at)?;
            if slot.existing.is_none() {
                self.require(caller, slot.parent, W | X)?;
            }
            Ok(slot.existing)
        };
        match cmd {
            Command::Mkdir(cmd::Mkdir { at, .. }) | Command::Create(cmd::Create { at, .. }) => {
                create_at(at).map(|_| ())
            }
            Command::Open(cmd::Open {
                at,
                create: Some(_),
                ..
            }) => create_at(at).map(|_| ()),
            Command::Open(cmd::Open {
                at, create: None, ..
            }) => self.search(caller, at),
            Command::Put(cmd::Put { at, .. }) => match create_at(at)? {
                Some(ino) => self.require(caller, ino, W),
                None => Ok(()),
            },
            Command::Write(cmd::Write { target, .. })
            | Command::Truncate(cmd::Truncate { target, .. }) => {
                self.search(caller, target)?;
                self.require(caller, self.lookup(target)?, W)
            }
            Command::Unlink(cmd::Unlink { at }) | Command::Rmdir(cmd::Rmdir { at }) => {
                self.search(caller, at)?;
                let slot = self.resolve_slot(at)?;
                self.may_remove(caller, slot.parent, slot.existing)
            }
            Command::Rename(cmd::Rename { from, to })
            | Command::RenameNoReplace(cmd::RenameNoReplace { from, to }) => {
                self.may_rename(caller, from, to, false)
            }
            Command::Exchange(cmd::Exchange { a, b }) => self.may_rename(caller, a, b, true),
            Command::Symlink(cmd::Symlink { at, .. }) => create_at(at).map(|_| ()),
            Command::Link(cmd::Link { target, at }) => {
                self.search(caller, target)?;
                create_at(at).map(|_| ())
            }
            Command::SetAttr(cmd::SetAttr {
                target,
                mode,
                uid,
                gid,
                atime_ns,
                mtime_ns,
            }) => {
                self.search(caller, target)?;
                let node = self.node(self.lookup(target)?)?;
                if caller.uid == 0 {
                    return Ok(());
                }
                let owner = caller.owns(node);
                if uid.is_some_and(|u| u != node.uid)
                    || (mode.is_some() && !owner)
                    || gid.is_some_and(|g| g != node.gid && !(owner && caller.in_group(g)))
                {
                    return Err(StateError::NotPermitted);
                }
                if (atime_ns.is_some() || mtime_ns.is_some()) && !owner && !caller.may(node, W) {
                    return Err(StateError::AccessDenied);
                }
                Ok(())
            }
            Command::SetEphemeral(cmd::SetEphemeral { target, .. })
            | Command::SetMaxHolders(cmd::SetMaxHolders { target, .. })
            | Command::SetOnLoss(cmd::SetOnLoss { target, .. }) => {
                self.search(caller, target)?;
                if caller.owns(self.node(self.lookup(target)?)?) {
                    Ok(())
                } else {
                    Err(StateError::NotPermitted)
                }
            }
            // Sessions, handles and locks: no node's modes apply (an open checked them).
            Command::OpenSession(_)
            | Command::CloseSession(_)
            | Command::ExpireSession(_)
            | Command::Close(_)
            | Command::Lock(_)
            | Command::Unlock(_)
            | Command::CancelWait(_)
            | Command::Wake
            | Command::SetLogFormat(_) => Ok(()),
            // Only an administrator may send it (`crate::server::authz`); it changes no node.
            Command::ReleaseLocks(cmd::ReleaseLocks { at, .. }) => self.search(caller, at),
        }
    }

    /// Whether `caller` may make `query` now.
    pub(super) fn check_query(&self, query: &Query, caller: &UserIds) -> Result<(), StateError> {
        match query {
            Query::Stat(target) => self.search(caller, target),
            Query::Read { target, .. } | Query::Readdir(target) => {
                self.search(caller, target)?;
                self.require(caller, self.lookup(target)?, R)
            }
            _ => Ok(()),
        }
    }
}
