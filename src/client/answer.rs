//! What each request answers, typed. Every request has one kind of answer; these take a
//! response apart into it, or fail with [`ClientError::Protocol`] naming what arrived instead
//! (cut short), so no caller matches raw protobuf results or invents its own "unexpected
//! answer" arm.

use super::ClientError;
use crate::proto::{self, Response_oneof_result as Res};

/// The most of an unexpected answer an error shows.
const SHOWN: usize = 300;

/// The error for an answer of another kind than `what` asks for.
pub fn unexpected(what: &str, got: &Res) -> ClientError {
    let mut text = format!("{got:?}");
    if text.len() > SHOWN {
        let end = (0..=SHOWN)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(end);
        text.push_str("...");
    }
    ClientError::Protocol(format!("unexpected answer to {what}: {text}"))
}

macro_rules! answers {
    ($($(#[$doc:meta])* $name:ident: $variant:ident -> $ty:ty;)*) => {$(
        $(#[$doc])*
        pub fn $name(what: &str, res: Res) -> Result<$ty, ClientError> {
            match res {
                Res::$variant(v) => Ok(v),
                other => Err(unexpected(what, &other)),
            }
        }
    )*};
}

answers! {
    /// A node's attributes: stat, put, mkdir, setattr and the like.
    attr: attr -> proto::Attr;
    /// A file's contents: read, readlink.
    data: data -> proto::Data;
    /// A directory's entries.
    entries: entries -> proto::Entries;
    /// A request that answers nothing but success.
    done: done -> proto::Done;
    /// The cluster's status and members.
    status: status -> proto::StatusReply;
    /// An opened or renewed session.
    session: session -> proto::SessionReply;
    /// An opened file: its handle and attributes.
    opened: opened -> proto::Opened;
    /// A lock request's outcome.
    lock: lock -> proto::LockReply;
    /// A cancelled lock wait.
    cancelled: cancelled -> proto::Cancelled;
    /// F_GETLK: the holder that would conflict, if any.
    probe: probe -> proto::LockProbe;
    /// A page of the nodes with locks.
    locks: locks -> proto::LocksReply;
    /// A page of the live sessions.
    sessions: sessions -> proto::SessionsReply;
    /// A registered watch: where its events begin, and what the path held then.
    watching: watching -> proto::Watching;
}

/// The answer to a creation without a handle: `made` if this very request made the file,
/// the file's attributes otherwise.
pub fn made(what: &str, res: Res) -> Result<proto::Made, ClientError> {
    match res {
        Res::made(m) => Ok(m),
        Res::attr(a) => {
            let mut m = proto::Made::new();
            m.set_attr(a);
            Ok(m)
        }
        other => Err(unexpected(what, &other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expected_kind_is_taken_apart_and_another_named_in_the_error() {
        let mut d = proto::Data::new();
        d.data = b"x".to_vec();
        assert_eq!(data("read", Res::data(d)).unwrap().data, b"x");
        let mut big = proto::Data::new();
        big.data = vec![b'y'; 10_000];
        let err = attr("stat", Res::data(big)).unwrap_err();
        let ClientError::Protocol(text) = &err else {
            panic!("{err:?}")
        };
        assert!(
            text.starts_with("unexpected answer to stat: data("),
            "{text}"
        );
        assert!(text.len() < SHOWN + 100 && text.ends_with("..."), "{text}");
        assert_eq!(err.errno(), libc::EIO);
    }
}
