//! Translation between wire messages and the state machine's types: requests become commands or
//! queries, outcomes and errors become responses. No policy lives here.

use crate::proto::{self, Request_oneof_op as Op, Response_oneof_result as Res};
use crate::state::cmd::{self, lock_kind, lock_style, target, Wire};
use crate::state::{
    Attr, Command, DirEntry, Event, Kind, LockHolder, LockInfo, LockKind, LockResult, LockStyle,
    LockWaiter, NodeChange, NodeEvent, OnLoss, Outcome, Query, RequestId, SessionInfo, StateError,
    UserIds, MAX_GROUPS,
};

use super::membership::MemberOp;
use super::node::{NodeStatus, Watching};
use super::ServerError;

/// What a request asks the node to do.
pub enum Action {
    Write {
        command: Command,
        request: Option<RequestId>,
    },
    Read(Query),
    Status,
    /// A membership change, answered with the status once applied.
    Members(MemberOp),
    KeepAlive {
        session: u64,
    },
    /// Registers a watch of `path` (normalized) on this connection, in `session`; with
    /// `cache`, the session's cache registration (see `cache.rs`).
    Watch {
        session: u64,
        id: u64,
        path: String,
        recursive: bool,
        cache: bool,
        /// A cache registration that takes PENDING notices.
        early: bool,
    },
    /// The session's cache dropped what the events up to `index` changed, and what the
    /// PENDING notices up to `early` named.
    CacheAck {
        session: u64,
        index: u64,
        early: u64,
    },
    /// Ends this connection's watch `id` (named in a session, like every watch request).
    Unwatch {
        id: u64,
    },
}

fn invalid(what: &str) -> ServerError {
    ServerError::State(StateError::InvalidArgument(what.to_string()))
}

/// The local user a request is made for, if it names one; a request may name at most
/// `MAX_GROUPS` supplementary groups.
pub fn user_ids(req: &proto::Request) -> Result<Option<UserIds>, ServerError> {
    let Some(u) = req.caller.as_ref() else {
        return Ok(None);
    };
    if u.groups.len() > MAX_GROUPS {
        return Err(invalid(&format!(
            "a request may name at most {MAX_GROUPS} supplementary groups"
        )));
    }
    Ok(Some(UserIds {
        uid: u.uid,
        gid: u.gid,
        groups: u.groups.clone(),
    }))
}

/// The session secret a request carries (0 if it carries none or a malformed one, which no
/// session has).
pub fn session_secret(req: &proto::Request) -> u128 {
    <[u8; 16]>::try_from(req.session_secret.as_slice()).map_or(0, u128::from_be_bytes)
}

pub fn action(req: &proto::Request) -> Result<Action, ServerError> {
    let op = req.op.as_ref().ok_or_else(|| invalid("empty request"))?;
    if req.first_unacked > req.seq {
        return Err(invalid(
            "first_unacked beyond the request's own sequence number",
        ));
    }
    let request = (req.session != 0).then_some(RequestId {
        session: req.session,
        seq: req.seq,
        first_unacked: req.first_unacked,
    });
    let session = || {
        if req.session == 0 {
            Err(invalid("this request needs a session"))
        } else {
            Ok(req.session)
        }
    };
    let write = |command| Action::Write {
        command,
        request: request.clone(),
    };
    // Each operation with the session it is sent in, as its command reads it.
    let s = req.session;
    Ok(match op {
        Op::mkdir(m) => write(cmd::Mkdir::try_from(Wire::new(m, s))?.into()),
        Op::create(m) => write(cmd::Create::try_from(Wire::new(m, s))?.into()),
        Op::write(m) => write(cmd::Write::try_from(Wire::new(m, s))?.into()),
        Op::put(m) => write(cmd::Put::try_from(Wire::new(m, s))?.into()),
        Op::truncate(m) => write(cmd::Truncate::try_from(Wire::new(m, s))?.into()),
        Op::unlink(m) => write(cmd::Unlink::try_from(Wire::new(m, s))?.into()),
        Op::rmdir(m) => write(cmd::Rmdir::try_from(Wire::new(m, s))?.into()),
        Op::rename(m) => write(Command::try_from(Wire::new(m, s))?),
        Op::set_attr(m) => write(cmd::SetAttr::try_from(Wire::new(m, s))?.into()),
        Op::symlink(m) => write(cmd::Symlink::try_from(Wire::new(m, s))?.into()),
        Op::link(m) => write(cmd::Link::try_from(Wire::new(m, s))?.into()),
        Op::set_ephemeral(m) => write(cmd::SetEphemeral::try_from(Wire::new(m, s))?.into()),
        Op::set_max_holders(m) => write(cmd::SetMaxHolders::try_from(Wire::new(m, s))?.into()),
        Op::set_on_loss(m) => write(cmd::SetOnLoss::try_from(Wire::new(m, s))?.into()),
        Op::stat(m) => Action::Read(Query::Stat(target(m.target.as_ref())?)),
        Op::read(m) => Action::Read(Query::Read {
            target: target(m.target.as_ref())?,
            offset: m.offset,
            len: m.has_len.then_some(m.len),
        }),
        Op::readdir(m) => Action::Read(Query::Readdir(target(m.target.as_ref())?)),
        Op::cluster_status(_) => Action::Status,
        Op::member_change(m) => {
            use proto::MemberChange_Kind as K;
            Action::Members(match m.kind {
                K::ADD => MemberOp::Add {
                    id: m.id,
                    addr: m.addr.clone(),
                    promote: !m.learner,
                },
                K::REMOVE => MemberOp::Remove { id: m.id },
                K::PROMOTE => MemberOp::Promote { id: m.id },
            })
        }
        // Outside any session: the session does not exist yet.
        Op::open_session(m) => Action::Write {
            command: cmd::OpenSession::try_from(Wire::new(m, s))?.into(),
            request: None,
        },
        Op::keep_alive(_) => Action::KeepAlive {
            session: session()?,
        },
        // An administrator's end of another session is outside that session.
        Op::close_session(m) => match Command::try_from(Wire::new(m, s))? {
            command @ Command::ExpireSession(_) => Action::Write {
                command,
                request: None,
            },
            command => write(command),
        },
        Op::open(m) => write(cmd::Open::try_from(Wire::new(m, s))?.into()),
        Op::close(m) => write(cmd::Close::try_from(Wire::new(m, s))?.into()),
        Op::lock(m) => write(cmd::Lock::try_from(Wire::new(m, s))?.into()),
        Op::unlock(m) => write(cmd::Unlock::try_from(Wire::new(m, s))?.into()),
        Op::cancel_wait(m) => write(cmd::CancelWait::try_from(Wire::new(m, s))?.into()),
        Op::get_lock(m) => Action::Read(Query::GetLock {
            session: session()?,
            handle: m.handle,
            owner: m.owner,
            style: lock_style(m.style),
            kind: lock_kind(m.kind),
            start: m.start,
            end: m.end,
        }),
        Op::list_locks(m) => Action::Read(Query::Locks {
            after: m.after,
            limit: m.limit,
        }),
        Op::list_sessions(m) => Action::Read(Query::Sessions {
            after: m.after,
            limit: m.limit,
        }),
        Op::watch(m) => Action::Watch {
            session: session()?,
            id: m.id,
            path: watch_path(&m.path)?,
            // A cache sees everything below its root.
            recursive: m.recursive || m.cache,
            cache: m.cache,
            early: m.cache && m.early,
        },
        Op::cache_ack(m) => Action::CacheAck {
            session: session()?,
            index: m.index,
            early: m.early,
        },
        Op::unwatch(m) => {
            session()?;
            Action::Unwatch { id: m.id }
        }
        // Outside any session, as `close_session` of another: only an administrator may send
        // it (authz).
        Op::release_locks(m) => Action::Write {
            command: cmd::ReleaseLocks::try_from(Wire::new(m, s))?.into(),
            request: None,
        },
    })
}

/// A watch's path, normalized ("/a//b/" is "/a/b"), refused when invalid or longer than
/// [`super::events::MAX_WATCH_PATH`].
fn watch_path(path: &str) -> Result<String, ServerError> {
    if path.len() > super::events::MAX_WATCH_PATH {
        return Err(invalid(&format!(
            "a watched path may be at most {} bytes",
            super::events::MAX_WATCH_PATH
        )));
    }
    Ok(crate::state::normalize(path)?)
}

/// The answer to a Watch.
pub fn watching(w: &Watching) -> Res {
    let mut p = proto::Watching::new();
    p.index = w.index;
    p.exists = w.attr.is_some();
    if let Some(a) = &w.attr {
        p.set_attr(attr(a));
    }
    p.holders = w.holders;
    Res::watching(p)
}

/// A node event as a watch receives it (the watch id is set per watch).
pub fn watch_event(e: &NodeEvent) -> proto::WatchEvent {
    use proto::WatchEvent_Change as C;
    let mut p = proto::WatchEvent::new();
    p.index = e.index;
    p.path = e.path.clone();
    p.instance = e.instance;
    p.parent = e.parent;
    p.name = e.name.clone();
    p.by = e.by;
    p.kind = kind(e.kind);
    match &e.change {
        NodeChange::Created => p.change = C::CREATED,
        NodeChange::Deleted => p.change = C::DELETED,
        NodeChange::Modified { generation, size } => {
            p.change = C::MODIFIED;
            p.generation = *generation;
            p.size = *size;
        }
        NodeChange::Attrib => p.change = C::ATTRIB,
        NodeChange::Locked {
            holder: h,
            generation,
            holders,
        }
        | NodeChange::Unlocked {
            holder: h,
            generation,
            holders,
        } => {
            p.change = if matches!(e.change, NodeChange::Locked { .. }) {
                C::LOCKED
            } else {
                C::UNLOCKED
            };
            p.set_holder(holder(h));
            p.generation = *generation;
            p.holders = *holders;
        }
    }
    p
}

fn proto_kind(k: &LockKind) -> proto::LockKind {
    match k {
        LockKind::Shared => proto::LockKind::SHARED,
        LockKind::Exclusive => proto::LockKind::EXCLUSIVE,
    }
}

fn proto_style(s: &LockStyle) -> proto::LockStyle {
    match s {
        LockStyle::Flock => proto::LockStyle::FLOCK,
        LockStyle::Posix => proto::LockStyle::POSIX,
    }
}

fn holder(h: &LockHolder) -> proto::LockHolder {
    let mut p = proto::LockHolder::new();
    p.session = h.session;
    p.owner = h.owner;
    p.style = proto_style(&h.style);
    p.kind = proto_kind(&h.kind);
    p.start = h.start;
    p.end = h.end;
    p.pid = h.pid;
    p.host = h.host.clone();
    p.since_ns = h.since_ns;
    p
}

fn waiter(w: &LockWaiter) -> proto::LockHolder {
    let mut p = proto::LockHolder::new();
    p.session = w.session;
    p.owner = w.owner;
    p.style = proto_style(&w.style);
    p.kind = proto_kind(&w.kind);
    p.start = w.start;
    p.end = w.end;
    p.pid = w.pid;
    p.host = w.host.clone();
    p.since_ns = w.since_ns;
    p.wait = w.wait;
    p
}

fn lock_info(l: &LockInfo) -> proto::LockInfo {
    let mut p = proto::LockInfo::new();
    p.instance = l.instance;
    p.path = l.path.clone();
    p.lock_generation = l.lock_generation;
    p.holders = l.holders.iter().map(holder).collect();
    p.waiters = l.waiters.iter().map(waiter).collect();
    p.delay_until_ns = l.delay_until_ns;
    p.max_holders = l.max_holders;
    p.on_loss = on_loss(l.on_loss);
    p
}

fn on_loss(v: Option<OnLoss>) -> proto::OnLoss {
    match v {
        None => proto::OnLoss::NONE,
        Some(OnLoss::Term) => proto::OnLoss::TERM,
        Some(OnLoss::Kill) => proto::OnLoss::KILL,
    }
}

fn session_info(s: &SessionInfo) -> proto::SessionInfo {
    let mut p = proto::SessionInfo::new();
    p.id = s.id;
    p.ttl_ms = s.ttl_ms;
    p.host = s.host.clone();
    p.pid = s.pid;
    p.name = s.name.clone();
    p.handles = s.handles;
    p.created_ns = s.created_ns;
    p.owner = s.owner.clone();
    p.locks = s.locks;
    p
}

/// A state-machine event as pushed to clients.
pub fn event(e: &Event) -> proto::Event {
    use proto::Event_Kind as K;
    let mut p = proto::Event::new();
    match e {
        Event::Granted {
            session,
            wait,
            instance,
            generation,
            on_loss: setting,
        } => {
            p.kind = K::GRANTED;
            p.session = *session;
            p.wait = *wait;
            p.instance = *instance;
            p.generation = *generation;
            p.on_loss = on_loss(*setting);
        }
        Event::WaitFailed {
            session,
            wait,
            error: err,
        } => {
            p.kind = K::WAIT_FAILED;
            p.session = *session;
            p.wait = *wait;
            p.set_error(error(&ServerError::State(err.clone())));
        }
        Event::SessionEnded { session, expired } => {
            p.kind = K::SESSION_ENDED;
            p.session = *session;
            p.expired = *expired;
        }
        Event::LockRevoked {
            session,
            instance,
            handle,
            owner,
            style,
        } => {
            p.kind = K::LOCK_REVOKED;
            p.session = *session;
            p.instance = *instance;
            p.handle = *handle;
            p.owner = *owner;
            p.style = proto_style(style);
        }
    }
    p
}

/// The session an event is for.
pub fn event_session(e: &Event) -> u64 {
    match e {
        Event::Granted { session, .. }
        | Event::WaitFailed { session, .. }
        | Event::SessionEnded { session, .. }
        | Event::LockRevoked { session, .. } => *session,
    }
}

fn kind(k: Kind) -> proto::Kind {
    match k {
        Kind::Dir => proto::Kind::DIR,
        Kind::File => proto::Kind::FILE,
        Kind::Symlink => proto::Kind::SYMLINK,
    }
}

pub fn attr(a: &Attr) -> proto::Attr {
    let mut p = proto::Attr::new();
    p.instance = a.instance;
    p.parent = a.parent;
    p.kind = kind(a.kind);
    p.mode = a.mode;
    p.uid = a.uid;
    p.gid = a.gid;
    p.size = a.size;
    p.atime_ns = a.atime_ns;
    p.mtime_ns = a.mtime_ns;
    p.ctime_ns = a.ctime_ns;
    p.content_generation = a.content_generation;
    p.lock_generation = a.lock_generation;
    p.acl_generation = a.acl_generation;
    p.ephemeral = a.ephemeral;
    p.children = a.children;
    p.links = a.links;
    p
}

fn entry(e: &DirEntry) -> proto::DirEntry {
    let mut p = proto::DirEntry::new();
    p.name = e.name.clone();
    p.instance = e.instance;
    p.kind = kind(e.kind);
    p
}

pub fn outcome(o: Outcome) -> Res {
    match o {
        Outcome::Attr(a) => Res::attr(attr(&a)),
        Outcome::Data { attr: a, data } => {
            let mut d = proto::Data::new();
            d.set_attr(attr(&a));
            d.data = data;
            Res::data(d)
        }
        Outcome::Entries(list) => {
            let mut e = proto::Entries::new();
            e.entries = list.iter().map(entry).collect();
            Res::entries(e)
        }
        Outcome::Done => Res::done(proto::Done::new()),
        Outcome::Session { id, secret } => {
            let mut p = proto::SessionReply::new();
            p.session = id;
            p.secret = secret.to_be_bytes().to_vec();
            Res::session(p)
        }
        Outcome::Opened {
            handle,
            attr: a,
            created_in,
        } => {
            let mut p = proto::Opened::new();
            p.handle = handle;
            p.set_attr(attr(&a));
            if let Some((index, dir)) = created_in {
                p.created_at = index;
                p.set_dir(attr(&dir));
            }
            Res::opened(p)
        }
        Outcome::Made {
            attr: a,
            created_in: (index, dir),
        } => {
            let mut p = proto::Made::new();
            p.set_attr(attr(&a));
            p.set_dir(attr(&dir));
            p.created_at = index;
            Res::made(p)
        }
        Outcome::Lock(r) => {
            let mut p = proto::LockReply::new();
            match r {
                LockResult::Granted { generation } => {
                    p.granted = true;
                    p.generation = generation;
                }
                LockResult::GrantedOnLoss {
                    generation,
                    on_loss: setting,
                } => {
                    p.granted = true;
                    p.generation = generation;
                    p.on_loss = on_loss(Some(setting));
                }
                LockResult::WouldBlock { conflict } => {
                    p.would_block = true;
                    if let Some(h) = conflict {
                        p.set_conflict(holder(&h));
                    }
                }
                LockResult::Queued { wait } => p.wait = wait,
            }
            Res::lock(p)
        }
        Outcome::Cancelled { was_granted } => {
            let mut p = proto::Cancelled::new();
            p.was_granted = was_granted;
            Res::cancelled(p)
        }
        Outcome::LockProbe(conflict) => {
            let mut p = proto::LockProbe::new();
            if let Some(h) = conflict {
                p.set_conflict(holder(&h));
            }
            Res::probe(p)
        }
        Outcome::Locks { locks, next } => {
            let mut p = proto::LocksReply::new();
            p.locks = locks.iter().map(lock_info).collect();
            p.next = next.unwrap_or(0);
            Res::locks(p)
        }
        Outcome::Sessions { sessions, next } => {
            let mut p = proto::SessionsReply::new();
            p.sessions = sessions.iter().map(session_info).collect();
            p.next = next.unwrap_or(0);
            Res::sessions(p)
        }
    }
}

pub fn status(s: NodeStatus) -> Res {
    let mut p = proto::StatusReply::new();
    p.cluster_id = s.cluster_id;
    p.node_id = s.node_id;
    p.leader_id = s.leader_id;
    p.term = s.term;
    p.commit = s.commit;
    p.applied = s.applied;
    p.first_index = s.first_index;
    p.last_index = s.last_index;
    p.snapshot_index = s.snapshot_index;
    p.log_format = s.log_format.number();
    if let Some((index, digest)) = s.check {
        p.check_index = index;
        p.check_digest = digest.to_be_bytes().to_vec();
    }
    p.diverged_at = s.diverged_at.unwrap_or(0);
    p.reported = s
        .reported
        .iter()
        .map(|(&node_id, &index)| {
            let mut d = proto::Divergence::new();
            d.node_id = node_id;
            d.index = index;
            d
        })
        .collect();
    p.members = s
        .members
        .into_iter()
        .map(|m| {
            let mut pm = proto::Member::new();
            pm.id = m.id;
            pm.addr = m.addr;
            pm.role = m.role.to_string();
            pm.reachable = m.reachable;
            pm.matched = m.matched;
            pm.promote = m.promote;
            pm.unreachable_ms = m.unreachable.as_millis() as u64;
            pm
        })
        .collect();
    Res::status(p)
}

pub fn error(e: &ServerError) -> proto::Error {
    let mut p = proto::Error::new();
    p.code = e.code();
    p.message = e.to_string();
    if let ServerError::NotLeader {
        leader_id,
        leader_addr,
    } = e
    {
        p.leader_id = *leader_id;
        p.leader_addr = leader_addr.clone();
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(session: u64, named: u64) -> proto::Request {
        let mut m = proto::CloseSession::new();
        m.session = named;
        let mut req = proto::Request::new();
        req.session = session;
        req.seq = 3;
        req.op = Some(Op::close_session(m));
        req
    }

    #[test]
    fn a_session_closes_itself_and_an_administrator_expires_another() {
        let Ok(Action::Write { command, request }) = action(&close(4, 0)) else {
            panic!("a write");
        };
        assert_eq!(
            command,
            Command::CloseSession(cmd::CloseSession { session: 4 })
        );
        assert_eq!(request.map(|r| (r.session, r.seq)), Some((4, 3)));
        // Named from outside any session: as an expiry (its locks keep the lock-delay), and
        // not one of that session's numbered requests.
        let Ok(Action::Write { command, request }) = action(&close(0, 9)) else {
            panic!("a write");
        };
        assert_eq!(
            command,
            Command::ExpireSession(cmd::ExpireSession { session: 9 })
        );
        assert!(request.is_none());
        assert!(action(&close(0, 0)).is_err());
    }
}
