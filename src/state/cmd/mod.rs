//! The commands that mutate the replicated tree, one struct per command, each in its own file
//! with what it carries, how it is read from the wire ([`Wire`]) and how it applies.
//!
//! [`Command`] is what travels through the Raft log: a thin enum with one variant per struct.
//! Its bincode encoding is an on-disk format (the log and the deduplication cache hold it): a
//! variant's place in the enum and a struct's fields, in order, are that format. New commands
//! go at the end of the enum; existing variants and fields are never reordered or removed.
//!
//! Adding a command: a file here with the struct, its `TryFrom<Wire<..>>` and its
//! [`Apply`]; one variant in [`Command`] and one line in [`Command::apply`]; one line in the
//! server's `convert::action` for its wire operation.

mod cancel_wait;
mod close;
mod close_session;
mod create;
mod link;
mod lock;
mod mkdir;
mod open;
mod open_session;
mod put;
mod release_locks;
mod rename;
mod rmdir;
mod set_attr;
mod set_ephemeral;
mod set_log_format;
mod set_max_holders;
mod set_on_loss;
mod symlink;
mod truncate;
mod unlink;
mod unlock;
mod wire;
mod write;

use serde::{Deserialize, Serialize};

pub use cancel_wait::CancelWait;
pub use close::Close;
pub use close_session::{CloseSession, ExpireSession};
pub use create::Create;
pub use link::Link;
pub use lock::Lock;
pub use mkdir::Mkdir;
pub use open::{CreateSpec, Open};
pub use open_session::OpenSession;
pub use put::Put;
pub use release_locks::ReleaseLocks;
pub use rename::{Exchange, Rename, RenameNoReplace};
pub use rmdir::Rmdir;
pub use set_attr::SetAttr;
pub use set_ephemeral::SetEphemeral;
pub use set_log_format::SetLogFormat;
pub use set_max_holders::SetMaxHolders;
pub use set_on_loss::SetOnLoss;
pub use symlink::Symlink;
pub use truncate::Truncate;
pub use unlink::Unlink;
pub use unlock::Unlock;
pub use wire::{lock_kind, lock_style, on_loss, target};
pub use write::Write;

use super::tree::StateMachine;
use super::{Outcome, StateError};

/// A mutation of the tree. Modes keep only the permission bits (`& 0o7777`); the kind is
/// implied by the command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Mkdir(Mkdir),
    Create(Create),
    Write(Write),
    Put(Put),
    Truncate(Truncate),
    Unlink(Unlink),
    Rmdir(Rmdir),
    Rename(Rename),
    SetAttr(SetAttr),
    SetEphemeral(SetEphemeral),
    OpenSession(OpenSession),
    CloseSession(CloseSession),
    ExpireSession(ExpireSession),
    Open(Open),
    Close(Close),
    Lock(Lock),
    Unlock(Unlock),
    CancelWait(CancelWait),
    /// Only advances time, so that waits behind an ended lock-delay are granted.
    Wake,
    RenameNoReplace(RenameNoReplace),
    Exchange(Exchange),
    Link(Link),
    Symlink(Symlink),
    ReleaseLocks(ReleaseLocks),
    SetMaxHolders(SetMaxHolders),
    SetOnLoss(SetOnLoss),
    /// Proposed by a leader alone (see `set_log_format.rs`).
    SetLogFormat(SetLogFormat),
}

/// What applying a command uses besides the command itself; the leader stamps all of it (see
/// [`super::ApplyCtx`]), so every replica applies the same values.
pub(super) struct Applying {
    /// The state's clock for this command, in nanoseconds since the Unix epoch.
    pub now: u64,
    /// The cluster's file size limit in bytes.
    pub max_file_size: u64,
    /// How long a lock freed by an expiry or an administrator stays ungrantable.
    pub lock_delay_ns: u64,
}

/// A command's effect on the state. It checks everything that can fail before its first
/// mutation, so a refusal changes nothing.
pub(super) trait Apply {
    fn apply(&self, sm: &mut StateMachine, at: &Applying) -> Result<Outcome, StateError>;
}

/// A wire operation with the session its request is sent in (0: none), as a command's
/// `TryFrom` reads it. A conversion refuses what is malformed whatever the state; what depends
/// on the state is checked when the command applies.
#[derive(Debug, Clone, Copy)]
pub struct Wire<'a, M> {
    pub op: &'a M,
    pub session: u64,
}

impl<'a, M> Wire<'a, M> {
    pub fn new(op: &'a M, session: u64) -> Self {
        Wire { op, session }
    }

    /// The session a command acts for: refused when the request is sent in none.
    fn session(&self) -> Result<u64, StateError> {
        if self.session == 0 {
            Err(StateError::InvalidArgument(
                "this request needs a session".into(),
            ))
        } else {
            Ok(self.session)
        }
    }
}

impl Command {
    /// Applies the command to `sm` (see [`Apply`]).
    pub(super) fn apply(
        &self,
        sm: &mut StateMachine,
        at: &Applying,
    ) -> Result<Outcome, StateError> {
        match self {
            Command::Mkdir(c) => c.apply(sm, at),
            Command::Create(c) => c.apply(sm, at),
            Command::Write(c) => c.apply(sm, at),
            Command::Put(c) => c.apply(sm, at),
            Command::Truncate(c) => c.apply(sm, at),
            Command::Unlink(c) => c.apply(sm, at),
            Command::Rmdir(c) => c.apply(sm, at),
            Command::Rename(c) => c.apply(sm, at),
            Command::SetAttr(c) => c.apply(sm, at),
            Command::SetEphemeral(c) => c.apply(sm, at),
            Command::OpenSession(c) => c.apply(sm, at),
            Command::CloseSession(c) => c.apply(sm, at),
            Command::ExpireSession(c) => c.apply(sm, at),
            Command::Open(c) => c.apply(sm, at),
            Command::Close(c) => c.apply(sm, at),
            Command::Lock(c) => c.apply(sm, at),
            Command::Unlock(c) => c.apply(sm, at),
            Command::CancelWait(c) => c.apply(sm, at),
            Command::Wake => Ok(Outcome::Done),
            Command::RenameNoReplace(c) => c.apply(sm, at),
            Command::Exchange(c) => c.apply(sm, at),
            Command::Link(c) => c.apply(sm, at),
            Command::Symlink(c) => c.apply(sm, at),
            Command::ReleaseLocks(c) => c.apply(sm, at),
            Command::SetMaxHolders(c) => c.apply(sm, at),
            Command::SetOnLoss(c) => c.apply(sm, at),
            Command::SetLogFormat(c) => c.apply(sm, at),
        }
    }

    /// Whether applying the command can grow something a quota bounds (see `quota.rs`).
    pub fn can_grow(&self) -> bool {
        matches!(
            self,
            Command::OpenSession(_)
                | Command::Open(_)
                | Command::Create(_)
                | Command::Mkdir(_)
                | Command::Put(_)
                | Command::Write(_)
                | Command::Truncate(_)
                | Command::Lock(_)
                | Command::Symlink(_)
        )
    }

    /// The session a command acts for, if it names one.
    pub fn session(&self) -> Option<u64> {
        match self {
            Command::CloseSession(c) => Some(c.session),
            Command::ExpireSession(c) => Some(c.session),
            Command::Open(c) => Some(c.session),
            Command::Close(c) => Some(c.session),
            Command::Lock(c) => Some(c.session),
            Command::Unlock(c) => Some(c.session),
            Command::CancelWait(c) => Some(c.session),
            _ => None,
        }
    }
}

/// Every command struct is a variant of [`Command`].
macro_rules! into_command {
    ($($name:ident),* $(,)?) => {
        $(impl From<$name> for Command {
            fn from(c: $name) -> Command {
                Command::$name(c)
            }
        })*
    };
}

into_command!(
    Mkdir,
    Create,
    Write,
    Put,
    Truncate,
    Unlink,
    Rmdir,
    Rename,
    SetAttr,
    SetEphemeral,
    OpenSession,
    CloseSession,
    ExpireSession,
    Open,
    Close,
    Lock,
    Unlock,
    CancelWait,
    RenameNoReplace,
    Exchange,
    Link,
    Symlink,
    ReleaseLocks,
    SetMaxHolders,
    SetOnLoss,
    SetLogFormat,
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{LockKind, LockStyle, OnLoss, Target};

    /// One command of every variant, with every field set off its default.
    fn samples() -> Vec<Command> {
        let path = |p: &str| Target::Path(p.to_string());
        vec![
            Command::Mkdir(Mkdir {
                at: path("/d"),
                mode: 0o755,
                uid: 1,
                gid: 2,
            }),
            Command::Create(Create {
                at: Target::Ino(9),
                mode: 0o644,
                uid: 3,
                gid: 4,
                exclusive: true,
            }),
            Command::Write(Write {
                target: Target::Ino(7),
                offset: 3,
                data: b"xy".to_vec(),
                truncate: true,
                append: false,
            }),
            Command::Put(Put {
                at: Target::Child {
                    parent: 1,
                    name: "f".into(),
                },
                data: b"z".to_vec(),
                mode: 0o600,
                uid: 5,
                gid: 6,
                if_generation: Some(4),
            }),
            Command::Truncate(Truncate {
                target: path("/t"),
                size: 12,
            }),
            Command::Unlink(Unlink { at: path("/u") }),
            Command::Rmdir(Rmdir { at: path("/r") }),
            Command::Rename(Rename {
                from: path("/a"),
                to: path("/b"),
            }),
            Command::SetAttr(SetAttr {
                target: path("/s"),
                mode: Some(0o700),
                uid: None,
                gid: Some(8),
                atime_ns: Some(9),
                mtime_ns: None,
            }),
            Command::SetEphemeral(SetEphemeral {
                target: path("/e"),
                ephemeral: true,
            }),
            Command::OpenSession(OpenSession {
                ttl_ms: 10_000,
                host: "h".into(),
                pid: 5,
                name: "n".into(),
                owner: "peer:o".into(),
                secret: 6 << 64 | 7,
                cache: true,
            }),
            Command::CloseSession(CloseSession { session: 11 }),
            Command::ExpireSession(ExpireSession { session: 12 }),
            Command::Open(Open {
                session: 13,
                at: path("/o"),
                create: Some(CreateSpec {
                    mode: 0o640,
                    uid: 14,
                    gid: 15,
                    exclusive: false,
                }),
            }),
            Command::Close(Close {
                session: 16,
                handle: 17,
            }),
            Command::Lock(Lock {
                session: 18,
                handle: 19,
                owner: 20,
                style: LockStyle::Posix,
                kind: LockKind::Shared,
                start: 21,
                end: u64::MAX,
                wait: true,
                pid: 22,
            }),
            Command::Unlock(Unlock {
                session: 23,
                handle: 24,
                owner: 25,
                style: LockStyle::Flock,
                start: 0,
                end: 26,
            }),
            Command::CancelWait(CancelWait {
                session: 27,
                wait: 28,
            }),
            Command::Wake,
            Command::RenameNoReplace(RenameNoReplace {
                from: path("/c"),
                to: path("/d"),
            }),
            Command::Exchange(Exchange {
                a: path("/x"),
                b: path("/y"),
            }),
            Command::Link(Link {
                target: Target::Ino(29),
                at: path("/l"),
            }),
            Command::Symlink(Symlink {
                at: path("/sl"),
                target: "to".into(),
                uid: 30,
                gid: 31,
            }),
            Command::ReleaseLocks(ReleaseLocks {
                at: path("/rl"),
                holder: Some(32),
            }),
            Command::SetMaxHolders(SetMaxHolders {
                target: path("/m"),
                max_holders: 3,
            }),
            Command::SetOnLoss(SetOnLoss {
                target: path("/ol"),
                on_loss: Some(OnLoss::Kill),
            }),
            Command::SetLogFormat(SetLogFormat { format: 2 }),
        ]
    }

    /// The bincode of [`samples`] in log format 1, as the log has held it since each variant
    /// was added.
    const FORMAT_1: &[&str] = &[
        "000000000000000002000000000000002f64ed0100000100000002000000",
        "01000000010000000900000000000000a4010000030000000400000001",
        "020000000100000007000000000000000300000000000000020000000000000078790100",
        "0300000002000000010000000000000001000000000000006601000000000000007a800100000500000006000000010400000000000000",
        "040000000000000002000000000000002f740c00000000000000",
        "050000000000000002000000000000002f75",
        "060000000000000002000000000000002f72",
        "070000000000000002000000000000002f610000000002000000000000002f62",
        "080000000000000002000000000000002f7301c001000000010800000001090000000000000000",
        "090000000000000002000000000000002f6501",
        "0a00000010270000000000000100000000000000680500000001000000000000006e0600000000000000706565723a6f0700000000000000060000000000000001",
        "0b0000000b00000000000000",
        "0c0000000c00000000000000",
        "0d0000000d000000000000000000000002000000000000002f6f01a00100000e0000000f00000000",
        "0e00000010000000000000001100000000000000",
        "0f00000012000000000000001300000000000000140000000000000001000000000000001500000000000000ffffffffffffffff0116000000",
        "100000001700000000000000180000000000000019000000000000000000000000000000000000001a00000000000000",
        "110000001b000000000000001c00000000000000",
        "12000000",
        "130000000000000002000000000000002f630000000002000000000000002f64",
        "140000000000000002000000000000002f780000000002000000000000002f79",
        "15000000010000001d000000000000000000000002000000000000002f6c",
        "160000000000000003000000000000002f736c0200000000000000746f1e0000001f000000",
        "170000000000000003000000000000002f726c012000000000000000",
        "180000000000000002000000000000002f6d03000000",
        "190000000000000003000000000000002f6f6c0101000000",
        "1a00000002000000",
    ];

    /// The same in log format 2.
    const FORMAT_2: &[&str] = &[
        "0000022f64fbed010102",
        "010109fba401030401",
        "020107030278790100",
        "0302010166017afb800105060104",
        "0400022f740c",
        "0500022f75",
        "0600022f72",
        "0700022f6100022f62",
        "0800022f7301fbc001000108010900",
        "0900022f6501",
        "0afb1027016805016e06706565723a6ffe0700000000000000060000000000000001",
        "0b0b",
        "0c0c",
        "0d0d00022f6f01fba0010e0f00",
        "0e1011",
        "0f121314010015fdffffffffffffffff0116",
        "1017181900001a",
        "111b1c",
        "12",
        "1300022f6300022f64",
        "1400022f7800022f79",
        "15011d00022f6c",
        "1600032f736c02746f1e1f",
        "1700032f726c0120",
        "1800022f6d03",
        "1900032f6f6c0101",
        "1a02",
    ];

    /// The encoding of commands is a format: a change here makes logs written before it
    /// unreadable.
    #[test]
    fn every_command_keeps_its_encoding() {
        use crate::encoding::LogFormat;
        let samples = samples();
        for (format, encoded) in [(LogFormat::One, FORMAT_1), (LogFormat::Two, FORMAT_2)] {
            assert_eq!(samples.len(), encoded.len(), "{format:?}");
            for (c, want) in samples.iter().zip(encoded) {
                let bytes = format.encode(c);
                let got: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                assert_eq!(&got, want, "{format:?} {c:?}");
                let back: Command = format.decode(&bytes).expect("reads back");
                assert_eq!(&back, c);
            }
        }
    }

    /// What is malformed whatever the state is refused as it is read from the wire.
    #[test]
    fn the_wire_refuses_what_no_state_could_accept() {
        use crate::proto;
        let invalid = |r: Result<Command, StateError>| match r {
            Err(StateError::InvalidArgument(why)) => why,
            other => panic!("expected a refusal, got {other:?}"),
        };
        // No target.
        let m = proto::Mkdir::new();
        let why = invalid(Mkdir::try_from(Wire::new(&m, 0)).map(Command::from));
        assert!(why.contains("no target"), "{why}");
        // A session command outside a session.
        let mut m = proto::Open::new();
        m.mut_at().set_path("/f".into());
        let why = invalid(Open::try_from(Wire::new(&m, 0)).map(Command::from));
        assert!(why.contains("session"), "{why}");
        let opened = Command::from(Open::try_from(Wire::new(&m, 7)).expect("in a session"));
        assert_eq!(opened.session(), Some(7));
        // A rename that both exchanges and refuses to replace.
        let mut m = proto::Rename::new();
        m.mut_from().set_path("/a".into());
        m.mut_to().set_path("/b".into());
        (m.noreplace, m.exchange) = (true, true);
        invalid(Command::try_from(Wire::new(&m, 0)));
        m.noreplace = false;
        let exchange = Command::try_from(Wire::new(&m, 0)).expect("an exchange");
        assert!(matches!(exchange, Command::Exchange(_)), "{exchange:?}");
        // Closing another session is its expiry; closing one's own needs a session.
        let mut m = proto::CloseSession::new();
        invalid(Command::try_from(Wire::new(&m, 0)));
        assert!(matches!(
            Command::try_from(Wire::new(&m, 3)),
            Ok(Command::CloseSession(CloseSession { session: 3 }))
        ));
        m.session = 4;
        assert!(matches!(
            Command::try_from(Wire::new(&m, 3)),
            Ok(Command::ExpireSession(ExpireSession { session: 4 }))
        ));
    }
}
