//! The `user.lockfs.*` extended attributes: Chubby's numbers and the lock holders, readable
//! with `getfattr`, and the ephemeral flag of a directory and the semaphore size of a file,
//! settable with `setfattr`.
//!
//! | name | value |
//! | --- | --- |
//! | `user.lockfs.lock_generation` | decimal; bumped by each exclusive grant: the fencing token |
//! | `user.lockfs.holders` | one line per granted lock: `host pid mode style since_ns` |
//! | `user.lockfs.ephemeral` | `1` or `0`; settable on directories |
//! | `user.lockfs.max_holders` | decimal, 1 to 1000: how many exclusive flock holders the file admits at once (a semaphore); settable by its owner, removing it sets 1 |
//! | `user.lockfs.on_loss` | `term` or `kill`, set by the file's owner: what a mount does to the processes holding a lock on the file when it loses the lock, whatever its own `on_lock_loss` says (see `lock_loss.rs`); absent (ENODATA) unless set, and not listed |
//! | `user.lockfs.instance` | decimal; the inode number, never reused |
//! | `user.lockfs.content_generation` | decimal; bumped by each write |
//! | `user.lockfs.cluster` | on the mount's root only: `servers=A,B` and `tls_dir=DIR` or `insecure=1`, one per line: how tools on this host (`lockfs wait PATH`) reach the cluster behind the mount |
//!
//! `user.lockfs.cluster` and `user.lockfs.on_loss` are not listed by listxattr(2), which names
//! what every node has. Other names do not exist (ENODATA) and cannot be set (ENOTSUP, which `cp -a` and `rsync -X`
//! take as "this filesystem has no xattrs" rather than as a failure); the read-only lockfs
//! names refuse with EPERM.

use std::ffi::OsStr;

use super::backend::{Errno, FileAttr, Holder, LockKind, LockStyle, OnLoss};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Name {
    LockGeneration,
    Holders,
    Ephemeral,
    Instance,
    ContentGeneration,
    Cluster,
    MaxHolders,
    OnLoss,
}

const ALL: [(Name, &str); 8] = [
    (Name::LockGeneration, "user.lockfs.lock_generation"),
    (Name::Holders, "user.lockfs.holders"),
    (Name::Ephemeral, "user.lockfs.ephemeral"),
    (Name::Instance, "user.lockfs.instance"),
    (Name::ContentGeneration, "user.lockfs.content_generation"),
    (Name::Cluster, "user.lockfs.cluster"),
    (Name::MaxHolders, "user.lockfs.max_holders"),
    (Name::OnLoss, "user.lockfs.on_loss"),
];

impl Name {
    pub fn parse(name: &OsStr) -> Option<Name> {
        ALL.iter()
            .find(|(_, n)| OsStr::new(n) == name)
            .map(|(v, _)| *v)
    }
}

/// The value of an attribute other than `Holders`.
pub fn value(name: Name, attr: &FileAttr) -> Vec<u8> {
    let text = match name {
        Name::LockGeneration => attr.lock_generation.to_string(),
        Name::Ephemeral => u8::from(attr.ephemeral).to_string(),
        Name::Instance => attr.ino.to_string(),
        Name::ContentGeneration => attr.content_generation.to_string(),
        Name::Holders | Name::MaxHolders | Name::OnLoss => {
            unreachable!("asked of the lock listing")
        }
        Name::Cluster => unreachable!("the mount answers the cluster attribute itself"),
    };
    text.into_bytes()
}

pub fn holders_value(holders: &[Holder]) -> Vec<u8> {
    let mut out = String::new();
    for h in holders {
        let mode = match h.kind {
            LockKind::Shared => "shared",
            LockKind::Exclusive => "exclusive",
        };
        let style = match h.style {
            LockStyle::Flock => "flock",
            LockStyle::Posix => "posix",
        };
        out.push_str(&format!(
            "{} {} {mode} {style} {}\n",
            h.host, h.pid, h.since_ns
        ));
    }
    out.into_bytes()
}

/// The NUL-terminated names every node has, as listxattr(2) returns them.
pub fn list() -> Vec<u8> {
    let mut out = Vec::new();
    for (_, name) in ALL
        .iter()
        .filter(|(n, _)| !matches!(n, Name::Cluster | Name::OnLoss))
    {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
    }
    out
}

/// `1` or `0`, as `setfattr -v 1` sends it (a trailing newline is forgiven).
pub fn parse_flag(value: &[u8]) -> Result<bool, Errno> {
    match value.strip_suffix(b"\n").unwrap_or(value) {
        b"1" => Ok(true),
        b"0" => Ok(false),
        _ => Err(Errno::EINVAL),
    }
}

/// A decimal count, as `setfattr -v 3` sends it (a trailing newline is forgiven).
pub fn parse_count(value: &[u8]) -> Result<u32, Errno> {
    std::str::from_utf8(value.strip_suffix(b"\n").unwrap_or(value))
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(Errno::EINVAL)
}

/// `term` or `kill` (a trailing newline is forgiven).
pub fn parse_on_loss(value: &[u8]) -> Result<OnLoss, Errno> {
    match value.strip_suffix(b"\n").unwrap_or(value) {
        b"term" => Ok(OnLoss::Term),
        b"kill" => Ok(OnLoss::Kill),
        _ => Err(Errno::EINVAL),
    }
}

pub fn on_loss_value(v: OnLoss) -> Vec<u8> {
    match v {
        OnLoss::Term => b"term".to_vec(),
        OnLoss::Kill => b"kill".to_vec(),
    }
}

/// Answers the two-step protocol of getxattr/listxattr: size 0 asks for the length; a buffer
/// too small is ERANGE.
pub fn reply(reply: fuser::ReplyXattr, size: u32, data: &[u8]) {
    if size == 0 {
        reply.size(data.len() as u32);
    } else if (size as usize) < data.len() {
        reply.error(fuser::Errno::ERANGE);
    } else {
        reply.data(data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_list_is_nul_separated() {
        for (name, text) in ALL {
            assert_eq!(Name::parse(OsStr::new(text)), Some(name));
        }
        assert_eq!(Name::parse(OsStr::new("user.other")), None);
        let list = list();
        assert_eq!(list.iter().filter(|&&b| b == 0).count(), 6);
        assert!(list.starts_with(b"user.lockfs.lock_generation\0"));
    }

    #[test]
    fn holders_are_one_line_each() {
        let h = Holder {
            session: 1,
            owner: 7,
            style: LockStyle::Flock,
            kind: LockKind::Exclusive,
            start: 0,
            end: u64::MAX,
            pid: 42,
            host: "h1".into(),
            since_ns: 99,
        };
        assert_eq!(holders_value(&[h]), b"h1 42 exclusive flock 99\n");
    }

    #[test]
    fn flags_parse() {
        assert_eq!(parse_flag(b"1"), Ok(true));
        assert_eq!(parse_flag(b"0\n"), Ok(false));
        assert_eq!(parse_flag(b"yes"), Err(Errno::EINVAL));
        assert_eq!(parse_on_loss(b"term\n"), Ok(OnLoss::Term));
        assert_eq!(on_loss_value(parse_on_loss(b"kill").unwrap()), b"kill");
        assert_eq!(parse_on_loss(b"TERM"), Err(Errno::EINVAL));
    }
}
