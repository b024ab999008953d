//! Authorization: what the authenticated party on a connection may ask of this node.
//!
//! Checked by the node that receives a request, before anything reaches the Raft log:
//! - only a `peer` whose certificate names node N may speak Raft as node N;
//! - membership changes need `admin`, except that a `peer` may ask to add itself (`serve
//!   --join` with the certificate the CA issued for that node id);
//! - `host` and `admin` may open sessions, read and write the tree and take locks;
//! - `reader` may open sessions (to keep a read-only mount alive), open files without creating
//!   them and read, but never change the tree or take a lock;
//! - a `peer` certificate is for cluster work only: it may ask for the cluster's status and
//!   nothing else of the tree.
//!
//! A connection on an `--insecure` node is trusted with everything: that mode is for loopback.
//!
//! Sessions belong to their opener: `OpenSession` is stamped here with the caller's identity
//! (and the session's host with the caller's certified name, whatever the client said), the
//! leader adds a random secret, and the leader admits a request that uses a session into the
//! log only from that identity and with that secret ([`Access::admits`]). Only an `admin`
//! may end someone else's session, and needs no secret to do so.

use crate::auth::{Identity, Role};
use crate::state::{cmd, Command, Query, SessionAccess, Target, UserIds};

/// The user of requests that name none.
const NOBODY: u32 = 65534;

use super::convert::Action;
use super::membership::MemberOp;
use super::ServerError;

use crate::errno::{EACCES, EPERM};

/// Who sent a request.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A plain-TCP connection to an `--insecure` node.
    Insecure,
    Verified(Identity),
}

/// How far ahead of the last acknowledged request a session's sequence numbers may run: far
/// more than any client has in flight, small enough that a number never nears overflow.
pub const SEQ_WINDOW: u64 = 1 << 20;

/// What a request may touch, checked by the node that holds the state: the sessions it shows
/// it may use, and the subtree its identity is limited to.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// `role:name` of the connection's identity; empty on an `--insecure` node.
    pub owner: String,
    /// The secret the request carries.
    pub secret: u128,
    /// An administrator may end any session without its secret.
    pub admin: bool,
    /// The only subtree the identity may read or change (see [`Access::reaches`]).
    pub subtree: Option<String>,
    /// The local user whose permissions the tree checks (`crate::state::perm`); `None`: none
    /// are checked.
    pub user: Option<UserIds>,
}

impl Access {
    /// Whether a request may use the live session `access` describes (ending it when
    /// `ending`); the message says why not.
    pub fn admits(&self, id: u64, access: &SessionAccess, ending: bool) -> Result<(), ServerError> {
        if ending && self.admin {
            return Ok(());
        }
        if !access.owner.is_empty() && access.owner != self.owner {
            return Err(denied(
                EPERM,
                format!("session {id} belongs to another identity"),
            ));
        }
        // Compared without an early exit on the first differing byte.
        if (access.secret ^ self.secret) != 0 {
            return Err(denied(EPERM, format!("wrong secret for session {id}")));
        }
        Ok(())
    }
}

/// Whether `path` is `subtree` or below it.
pub fn within(path: &str, subtree: &str) -> bool {
    subtree == "/"
        || path == subtree
        || path
            .strip_prefix(subtree)
            .is_some_and(|rest| rest.starts_with('/'))
}

impl Access {
    /// Whether the request may touch `path`: anywhere without a subtree; with one, inside it,
    /// and for a look only (`look`: attributes, a lookup, opening without creating, a
    /// directory listing), also on the way to it (`/` and `/svc` on the way to `/svc/web`), so
    /// that a mount of the whole tree can get there.
    pub fn reaches(&self, path: &str, look: bool) -> Result<(), ServerError> {
        let Some(subtree) = &self.subtree else {
            return Ok(());
        };
        if within(path, subtree) || (look && within(subtree, path)) {
            return Ok(());
        }
        Err(denied(
            EACCES,
            format!("permission denied: {path} is outside {subtree}, where this host is limited"),
        ))
    }
}

/// The targets a command names, each with whether it only looks (see [`Access::reaches`]).
/// Commands that name only a handle act where the handle was opened, which was checked then.
pub fn targets(command: &Command) -> Vec<(&Target, bool)> {
    match command {
        Command::Mkdir(cmd::Mkdir { at, .. })
        | Command::Create(cmd::Create { at, .. })
        | Command::Put(cmd::Put { at, .. })
        | Command::Unlink(cmd::Unlink { at })
        | Command::Rmdir(cmd::Rmdir { at }) => vec![(at, false)],
        Command::Write(cmd::Write { target, .. })
        | Command::Truncate(cmd::Truncate { target, .. })
        | Command::SetAttr(cmd::SetAttr { target, .. })
        | Command::SetEphemeral(cmd::SetEphemeral { target, .. })
        | Command::SetMaxHolders(cmd::SetMaxHolders { target, .. })
        | Command::SetOnLoss(cmd::SetOnLoss { target, .. }) => vec![(target, false)],
        Command::Rename(cmd::Rename { from, to })
        | Command::RenameNoReplace(cmd::RenameNoReplace { from, to })
        | Command::Exchange(cmd::Exchange { a: from, b: to }) => vec![(from, false), (to, false)],
        Command::Open(cmd::Open { at, create, .. }) => vec![(at, create.is_none())],
        // A new name makes the file reachable there: both places must be within reach.
        Command::Link(cmd::Link { target, at }) => vec![(target, false), (at, false)],
        Command::Symlink(cmd::Symlink { at, .. }) => vec![(at, false)],
        Command::ReleaseLocks(cmd::ReleaseLocks { at, .. }) => vec![(at, false)],
        // Listed one by one, so that a new command must say what it names.
        Command::OpenSession(_)
        | Command::CloseSession(_)
        | Command::ExpireSession(_)
        | Command::Close(_)
        | Command::Lock(_)
        | Command::Unlock(_)
        | Command::CancelWait(_)
        | Command::Wake
        | Command::SetLogFormat(_) => vec![],
    }
}

/// The target a query names, with whether it only looks; `None` for queries that name none
/// (their answers are filtered instead, see `Node::answer`).
pub fn query_target(query: &Query) -> Option<(&Target, bool)> {
    match query {
        Query::Stat(t) | Query::Readdir(t) => Some((t, true)),
        Query::Read { target, .. } => Some((target, false)),
        _ => None,
    }
}

/// The session-owner string of an identity.
pub fn owner_of(identity: &Identity) -> String {
    format!("{}:{}", identity.role.kind(), identity.name)
}

fn denied(code: u32, message: String) -> ServerError {
    ServerError::Denied { code, message }
}

impl Caller {
    /// What this caller's requests may touch, with `secret` for the session they use and
    /// `user` for the local user they are made for. A host's or a reader's requests are
    /// checked against the tree's permissions as that user (as `nobody` if they name none);
    /// an administrator's, and any on an insecure node, are not.
    pub fn access(&self, secret: u128, user: Option<UserIds>) -> Access {
        match self {
            Caller::Insecure => Access {
                owner: String::new(),
                secret,
                admin: true,
                subtree: None,
                user: None,
            },
            Caller::Verified(id) => Access {
                owner: owner_of(id),
                secret,
                admin: id.role == Role::Admin,
                subtree: id.subtree.clone(),
                user: match id.role {
                    Role::Host | Role::Reader => Some(user.unwrap_or(UserIds {
                        uid: NOBODY,
                        gid: NOBODY,
                        groups: Vec::new(),
                    })),
                    Role::Admin | Role::Peer(_) => None,
                },
            },
        }
    }

    /// Fills in what only the node may say about a request: who opens a session, and under
    /// which host name it is listed (the certified name, not the one the client sent).
    pub fn stamp(&self, action: &mut Action) {
        let Action::Write {
            command:
                Command::OpenSession(cmd::OpenSession {
                    host, owner, cache, ..
                }),
            ..
        } = action
        else {
            return;
        };
        match self {
            Caller::Verified(id) => {
                *owner = owner_of(id);
                *host = id.name.clone();
                // A cache watches the whole tree, which such a host may not: it does not
                // cache (writes would otherwise wait for a cache that can never register).
                if id.subtree.is_some() {
                    *cache = false;
                }
            }
            // Unauthenticated: the client's word, escaped and cut to a name's length, so a
            // listing never carries control characters or megabytes from a client.
            Caller::Insecure => {
                *host = host
                    .escape_default()
                    .take(crate::auth::identity::NAME_MAX)
                    .collect();
            }
        }
    }

    /// May this caller speak Raft as node `from`?
    pub fn check_peer(&self, from: u64) -> Result<(), String> {
        match self {
            Caller::Insecure => Ok(()),
            Caller::Verified(Identity {
                role: Role::Peer(id),
                ..
            }) if *id == from => Ok(()),
            Caller::Verified(id) => Err(format!("{id} may not speak Raft as node {from}")),
        }
    }

    /// May this caller make the request that `action` stands for?
    pub fn authorize(&self, action: &Action) -> Result<(), ServerError> {
        let Caller::Verified(who) = self else {
            return Ok(());
        };
        let refuse = |what: &str| denied(EPERM, format!("permission denied: {who} may not {what}"));
        match (&who.role, action) {
            (_, Action::Status) => Ok(()),
            (Role::Admin, _) => Ok(()),
            (Role::Peer(me), Action::Members(MemberOp::Add { id, .. })) if id == me => Ok(()),
            (_, Action::Members(_)) => Err(refuse("change the cluster's membership (needs admin)")),
            (Role::Peer(_), _) => Err(refuse("use the tree (a peer certificate is for nodes)")),
            (
                _,
                Action::Write {
                    command: Command::ReleaseLocks(_),
                    ..
                },
            ) => Err(refuse("release the locks of others (needs admin)")),
            (Role::Host, _) => Ok(()),
            (
                Role::Reader,
                Action::Read(_)
                | Action::KeepAlive { .. }
                | Action::Watch { .. }
                | Action::Unwatch { .. }
                | Action::CacheAck { .. },
            ) => Ok(()),
            (Role::Reader, Action::Write { command, .. }) => match command {
                Command::OpenSession(_)
                | Command::CloseSession(_)
                | Command::Open(cmd::Open { create: None, .. })
                | Command::Close(_) => Ok(()),
                _ => Err(denied(
                    EACCES,
                    format!("permission denied: {who} may only read"),
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{CreateSpec, Query, Target};

    fn caller(role: Role) -> Caller {
        Caller::Verified(Identity {
            role,
            name: "x".into(),
            subtree: None,
        })
    }

    fn write(command: Command) -> Action {
        Action::Write {
            command,
            request: None,
        }
    }

    fn mkdir() -> Action {
        write(Command::Mkdir(cmd::Mkdir {
            at: Target::Path("/d".into()),
            mode: 0o755,
            uid: 0,
            gid: 0,
        }))
    }

    fn open(create: bool) -> Action {
        write(Command::Open(cmd::Open {
            session: 1,
            at: Target::Path("/f".into()),
            create: create.then_some(CreateSpec {
                mode: 0o644,
                uid: 0,
                gid: 0,
                exclusive: false,
            }),
        }))
    }

    fn add(id: u64) -> Action {
        Action::Members(MemberOp::Add {
            id,
            addr: "h:1".into(),
            promote: true,
        })
    }

    #[test]
    fn each_role_may_do_what_it_is_for() {
        let read = || Action::Read(Query::Stat(Target::Path("/".into())));
        let (admin, host, reader, peer) = (
            caller(Role::Admin),
            caller(Role::Host),
            caller(Role::Reader),
            caller(Role::Peer(4)),
        );
        for c in [&admin, &host, &reader, &peer, &Caller::Insecure] {
            assert!(c.authorize(&Action::Status).is_ok());
        }
        for c in [&admin, &Caller::Insecure] {
            assert!(c.authorize(&add(9)).is_ok());
            assert!(c
                .authorize(&Action::Members(MemberOp::Remove { id: 2 }))
                .is_ok());
        }
        assert!(peer.authorize(&add(4)).is_ok(), "a node may add itself");
        assert!(peer.authorize(&add(5)).is_err());
        assert!(peer
            .authorize(&Action::Members(MemberOp::Remove { id: 4 }))
            .is_err());
        assert!(peer.authorize(&read()).is_err());
        assert!(peer.authorize(&mkdir()).is_err());
        for c in [&host, &reader] {
            assert!(c.authorize(&add(9)).is_err());
            assert!(c.authorize(&read()).is_ok());
            assert!(c.authorize(&open(false)).is_ok());
            assert!(c.authorize(&Action::KeepAlive { session: 1 }).is_ok());
        }
        assert!(host.authorize(&mkdir()).is_ok());
        assert!(host.authorize(&open(true)).is_ok());
        // Only an administrator frees the locks of others.
        let release = write(Command::ReleaseLocks(cmd::ReleaseLocks {
            at: Target::Path("/l".into()),
            holder: None,
        }));
        for c in [&admin, &Caller::Insecure] {
            assert!(c.authorize(&release).is_ok());
        }
        for c in [&host, &reader, &peer] {
            assert_eq!(c.authorize(&release).unwrap_err().code(), EPERM);
        }
        let refused = reader.authorize(&mkdir()).unwrap_err();
        assert_eq!(refused.code(), EACCES);
        assert!(reader.authorize(&open(true)).is_err());
        let limited = Caller::Verified(Identity {
            role: Role::Host,
            name: "x".into(),
            subtree: Some("/svc".into()),
        });
        assert!(limited.authorize(&read()).is_ok());
        assert_eq!(
            limited.access(0, None).subtree.as_deref(),
            Some("/svc"),
            "limits travel with the request"
        );
    }

    #[test]
    fn only_raft_peers_speak_raft_as_themselves() {
        assert!(caller(Role::Peer(2)).check_peer(2).is_ok());
        assert!(caller(Role::Peer(2)).check_peer(3).is_err());
        assert!(caller(Role::Admin).check_peer(2).is_err());
        assert!(Caller::Insecure.check_peer(2).is_ok());
    }

    #[test]
    fn a_session_admits_its_owner_with_its_secret() {
        let access = SessionAccess {
            owner: "host:a",
            secret: 42,
            acked_below: 0,
        };
        let auth = |owner: &str, secret, admin| Access {
            owner: owner.into(),
            secret,
            admin,
            subtree: None,
            user: None,
        };
        assert!(auth("host:a", 42, false).admits(1, &access, false).is_ok());
        assert!(auth("host:a", 41, false).admits(1, &access, false).is_err());
        assert!(auth("host:b", 42, false).admits(1, &access, false).is_err());
        assert!(auth("admin:o", 0, true).admits(1, &access, false).is_err());
        assert!(auth("admin:o", 0, true).admits(1, &access, true).is_ok());
        let open = SessionAccess {
            owner: "",
            ..access
        };
        assert!(auth("host:b", 42, false).admits(1, &open, false).is_ok());
    }

    #[test]
    fn a_session_is_listed_under_its_certified_name() {
        let mut action = write(Command::OpenSession(cmd::OpenSession {
            ttl_ms: 1,
            host: "forged\nhost".into(),
            pid: 1,
            name: "m".into(),
            owner: "admin:root".into(),
            secret: 0,
            cache: false,
        }));
        caller(Role::Host).stamp(&mut action);
        let Action::Write {
            command: Command::OpenSession(cmd::OpenSession { host, owner, .. }),
            ..
        } = &action
        else {
            unreachable!()
        };
        assert_eq!((host.as_str(), owner.as_str()), ("x", "host:x"));
        let mut action = write(Command::OpenSession(cmd::OpenSession {
            ttl_ms: 1,
            host: "a\nb".into(),
            pid: 1,
            name: "m".into(),
            owner: String::new(),
            secret: 0,
            cache: false,
        }));
        Caller::Insecure.stamp(&mut action);
        let Action::Write {
            command: Command::OpenSession(cmd::OpenSession { host, .. }),
            ..
        } = &action
        else {
            unreachable!()
        };
        assert_eq!(host, "a\\nb");
    }

    #[test]
    fn a_host_limited_to_a_subtree_opens_no_caching_session() {
        let open = || {
            write(Command::OpenSession(cmd::OpenSession {
                ttl_ms: 1,
                host: "h".into(),
                pid: 1,
                name: "m".into(),
                owner: String::new(),
                secret: 0,
                cache: true,
            }))
        };
        let caches = |action: &Action| {
            matches!(
                action,
                Action::Write {
                    command: Command::OpenSession(cmd::OpenSession { cache: true, .. }),
                    ..
                }
            )
        };
        let mut action = open();
        caller(Role::Host).stamp(&mut action);
        assert!(caches(&action));
        let limited = Caller::Verified(Identity {
            role: Role::Host,
            name: "x".into(),
            subtree: Some("/svc".into()),
        });
        let mut action = open();
        limited.stamp(&mut action);
        assert!(!caches(&action));
    }

    #[test]
    fn a_limited_host_reaches_its_subtree_and_looks_on_the_way() {
        let limited = Access {
            subtree: Some("/svc/web".into()),
            ..Access::default()
        };
        for path in ["/svc/web", "/svc/web/a", "/svc/web/a/b"] {
            assert!(limited.reaches(path, false).is_ok(), "{path}");
        }
        for path in ["/", "/svc"] {
            assert!(limited.reaches(path, true).is_ok(), "{path}");
            assert!(limited.reaches(path, false).is_err(), "{path}");
        }
        for path in ["/svc/webx", "/svc/other", "/etc", "/svc/we"] {
            assert!(limited.reaches(path, true).is_err(), "{path}");
        }
        assert_eq!(limited.reaches("/x", false).unwrap_err().code(), EACCES);
        assert!(Access::default().reaches("/anything", false).is_ok());
        assert!(within("/a", "/"));
    }
}
