//! Limits checked where a request enters a node, before anything reaches the Raft log.
//!
//! The state machine checks the same rules again when it applies a command (that check is the
//! deterministic one, and the only one for what depends on the state, such as an append's final
//! size). Checking here as well means that a request the state machine would refuse is refused
//! at once, without costing the log, the disks of a majority and every replica's memory: a
//! 12 MiB put is refused on arrival instead of being replicated to be refused. Quotas, which
//! depend on the state, are checked on arrival too, by the state's own read-only check
//! (`StateMachine::check_quotas`, called from the node's `admit`).

use crate::state::{
    cmd, split_path, validate_name, Command, StateError, Target, MAX_HOLDERS, MAX_SYMLINK,
};

use super::authz::targets;
use super::ServerError;

/// Longest path a request may name (Linux's PATH_MAX).
pub const MAX_PATH: usize = 4096;
/// Longest free-form text a client may give a session (its host and name).
pub const MAX_LABEL: usize = 256;
/// Longest member address (`host:port`) a membership change may carry.
pub const MAX_ADDR: usize = 256;

fn check_target(target: &Target) -> Result<(), StateError> {
    match target {
        Target::Path(path) if path.len() > MAX_PATH => Err(StateError::NameTooLong),
        Target::Path(path) => split_path(path)?.into_iter().try_for_each(validate_name),
        Target::Child { name, .. } => validate_name(name),
        Target::Ino(_) => Ok(()),
    }
}

/// Refuses `command` if it breaks a limit it can be judged by alone: file size (with the
/// node's `max_file_size`), names and paths, and the lengths of client-chosen text.
pub fn check(command: &Command, max_file_size: u64) -> Result<(), ServerError> {
    for (target, _) in targets(command) {
        check_target(target)?;
    }
    let too_large = |end: u64| end > max_file_size;
    let fits = match command {
        Command::Write(cmd::Write {
            offset,
            data,
            append,
            ..
        }) => {
            let len = data.len() as u64;
            !too_large(len) && (*append || !too_large(offset.saturating_add(len)))
        }
        Command::Put(cmd::Put { data, .. }) => !too_large(data.len() as u64),
        Command::Symlink(cmd::Symlink { target, .. }) => {
            if target.is_empty() || target.len() >= MAX_SYMLINK || target.contains('\0') {
                return Err(StateError::InvalidArgument(format!(
                    "a symbolic link's target is 1 to {} bytes without NUL",
                    MAX_SYMLINK - 1
                ))
                .into());
            }
            true
        }
        Command::Truncate(cmd::Truncate { size, .. }) => !too_large(*size),
        Command::SetMaxHolders(cmd::SetMaxHolders { max_holders, .. }) => {
            if !(1..=MAX_HOLDERS).contains(max_holders) {
                return Err(StateError::InvalidArgument(format!(
                    "max_holders is 1 to {MAX_HOLDERS}"
                ))
                .into());
            }
            true
        }
        Command::OpenSession(cmd::OpenSession { host, name, .. }) => {
            if host.len() > MAX_LABEL || name.len() > MAX_LABEL {
                return Err(StateError::InvalidArgument(format!(
                    "a session's host and name are at most {MAX_LABEL} bytes"
                ))
                .into());
            }
            true
        }
        _ => true,
    };
    if fits {
        Ok(())
    } else {
        Err(StateError::FileTooLarge.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(path: &str, len: usize) -> Command {
        Command::Put(cmd::Put {
            at: Target::Path(path.into()),
            data: vec![0; len],
            mode: 0o644,
            uid: 0,
            gid: 0,
            if_generation: None,
        })
    }

    #[test]
    fn requests_past_a_limit_are_refused() {
        assert!(check(&put("/f", 100), 100).is_ok());
        assert!(check(&put("/f", 101), 100).is_err());
        assert!(check(&put(&format!("/{}", "n".repeat(256)), 1), 100).is_err());
        assert!(check(&put(&"/d".repeat(MAX_PATH), 1), 100).is_err());
        let write = |offset, len, append| {
            Command::Write(cmd::Write {
                target: Target::Ino(2),
                offset,
                data: vec![0; len],
                truncate: false,
                append,
            })
        };
        assert!(check(&write(50, 50, false), 100).is_ok());
        assert!(check(&write(51, 50, false), 100).is_err());
        assert!(check(&write(u64::MAX, 1, false), 100).is_err());
        assert!(
            check(&write(99, 50, true), 100).is_ok(),
            "the end is the state's to judge"
        );
        let session = |host: String| {
            Command::OpenSession(cmd::OpenSession {
                ttl_ms: 1,
                host,
                pid: 1,
                name: String::new(),
                owner: String::new(),
                secret: 0,
                cache: false,
            })
        };
        assert!(check(&session("h".into()), 100).is_ok());
        assert!(check(&session("h".repeat(MAX_LABEL + 1)), 100).is_err());
        // A symbolic link's target and both names of a link are bounded before the log.
        let symlink = |target: String| {
            Command::Symlink(cmd::Symlink {
                at: Target::Path("/l".into()),
                target,
                uid: 0,
                gid: 0,
            })
        };
        assert!(check(&symlink("t".repeat(MAX_SYMLINK - 1)), 100).is_ok());
        assert!(check(&symlink("t".repeat(MAX_SYMLINK)), 100).is_err());
        assert!(check(&symlink(String::new()), 100).is_err());
        assert!(check(&symlink("a\0b".into()), 100).is_err());
        let link = |at: String| {
            Command::Link(cmd::Link {
                target: Target::Path("/f".into()),
                at: Target::Path(at),
            })
        };
        assert!(check(&link("/g".into()), 100).is_ok());
        assert!(check(&link(format!("/{}", "n".repeat(256))), 100).is_err());
    }
}
