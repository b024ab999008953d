//! Translation between wire messages and the state machine's types: requests become commands or
//! queries, outcomes and errors become responses. No policy lives here.

use crate::proto::{self, Request_oneof_op as Op, Response_oneof_result as Res};
use crate::state::{Attr, Command, DirEntry, Kind, Outcome, Query, StateError, Target};

use super::node::NodeStatus;
use super::ServerError;

/// What a request asks the node to do.
pub enum Action {
    Write(Command),
    Read(Query),
    Status,
}

fn target(t: Option<&proto::Target>) -> Result<Target, ServerError> {
    use proto::Target_oneof_kind as K;
    match t.and_then(|t| t.kind.as_ref()) {
        Some(K::path(p)) => Ok(Target::Path(p.clone())),
        Some(K::ino(i)) => Ok(Target::Ino(*i)),
        Some(K::child(c)) => Ok(Target::Child {
            parent: c.parent,
            name: c.name.clone(),
        }),
        None => Err(invalid("request names no target")),
    }
}

fn invalid(what: &str) -> ServerError {
    ServerError::State(StateError::InvalidArgument(what.to_string()))
}

pub fn action(req: &proto::Request) -> Result<Action, ServerError> {
    let op = req.op.as_ref().ok_or_else(|| invalid("empty request"))?;
    let write = Action::Write;
    Ok(match op {
        Op::mkdir(m) => write(Command::Mkdir {
            at: target(m.at.as_ref())?,
            mode: m.mode,
            uid: m.uid,
            gid: m.gid,
        }),
        Op::create(m) => write(Command::Create {
            at: target(m.at.as_ref())?,
            mode: m.mode,
            uid: m.uid,
            gid: m.gid,
            exclusive: m.exclusive,
        }),
        Op::write(m) => write(Command::Write {
            target: target(m.target.as_ref())?,
            offset: m.offset,
            data: m.data.clone(),
            truncate: m.truncate,
        }),
        Op::put(m) => write(Command::Put {
            at: target(m.at.as_ref())?,
            data: m.data.clone(),
            mode: m.mode,
            uid: m.uid,
            gid: m.gid,
        }),
        Op::truncate(m) => write(Command::Truncate {
            target: target(m.target.as_ref())?,
            size: m.size,
        }),
        Op::unlink(m) => write(Command::Unlink {
            at: target(m.at.as_ref())?,
        }),
        Op::rmdir(m) => write(Command::Rmdir {
            at: target(m.at.as_ref())?,
        }),
        Op::rename(m) => write(Command::Rename {
            from: target(m.from.as_ref())?,
            to: target(m.to.as_ref())?,
        }),
        Op::set_attr(m) => write(Command::SetAttr {
            target: target(m.target.as_ref())?,
            mode: m.has_mode.then_some(m.mode),
            uid: m.has_uid.then_some(m.uid),
            gid: m.has_gid.then_some(m.gid),
            atime_ns: m.has_atime.then_some(m.atime_ns),
            mtime_ns: m.has_mtime.then_some(m.mtime_ns),
        }),
        Op::set_ephemeral(m) => write(Command::SetEphemeral {
            target: target(m.target.as_ref())?,
            ephemeral: m.ephemeral,
        }),
        Op::stat(m) => Action::Read(Query::Stat(target(m.target.as_ref())?)),
        Op::read(m) => Action::Read(Query::Read {
            target: target(m.target.as_ref())?,
            offset: m.offset,
            len: m.has_len.then_some(m.len),
        }),
        Op::readdir(m) => Action::Read(Query::Readdir(target(m.target.as_ref())?)),
        Op::cluster_status(_) => Action::Status,
    })
}

fn kind(k: Kind) -> proto::Kind {
    match k {
        Kind::Dir => proto::Kind::DIR,
        Kind::File => proto::Kind::FILE,
    }
}

pub fn attr(a: &Attr) -> proto::Attr {
    let mut p = proto::Attr::new();
    p.instance = a.instance;
    p.parent = a.parent;
    p.kind = kind(a.kind.clone());
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
    p
}

fn entry(e: &DirEntry) -> proto::DirEntry {
    let mut p = proto::DirEntry::new();
    p.name = e.name.clone();
    p.instance = e.instance;
    p.kind = kind(e.kind.clone());
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
