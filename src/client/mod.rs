//! The client library that the CLI and the mount use to talk to a cluster.
//!
//! A [`Client`] keeps one connection, to the leader once it has found it, and pipelines requests
//! over it: each request carries an id and the response with that id completes it, in whatever
//! order responses arrive. It follows the cluster on its own:
//! - a follower answers a write with "not the leader" and the leader's address: the client
//!   reconnects there and resends;
//! - "unavailable" (no leader yet, a proposal lost to a leader change) and "busy" (the server has
//!   as many requests in hand as it takes) are retried with backoff;
//! - a broken connection before the request was sent, or under a request that is safe to retry
//!   (a read, or anything in a session), is retried elsewhere; so is such a request that got no
//!   answer within a few seconds (a paused server keeps its connections open and says nothing);
//! - members it learns of: on each new connection it asks for the member list, so a client
//!   given one address keeps finding the cluster after members were added, removed or replaced.
//! - a server that refuses the client's credentials, or whose certificate the client refuses,
//!   will not change its mind: once every server has refused, the request fails at once with
//!   [`ClientError::Refused`] instead of retrying until its deadline.
//!
//! A write outside a session whose connection broke after it was sent may or may not have been
//! applied: the client reports that outcome as [`ClientError::Ambiguous`] instead of guessing.
//! In a session (see [`session`]) the state machine deduplicates requests by (session,
//! sequence number), so such a write is simply sent again.

pub mod answer;
mod conn;
mod error;
pub mod files;
pub mod session;
pub mod watches;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Mutex};

use crate::auth::Tls;
// EAGAIN: no leader here, retry; ENOBUFS: the server took too many requests, retry later.
use crate::errno::{EAGAIN, ENOBUFS};
use crate::proto::{self, Request_oneof_op as Op, Response_oneof_result as Res};
use conn::{CallError, Conn, OpenError};
pub use error::ClientError;

/// Between tries while no leader answers: a try is cheap (a refused connection, or a server's
/// "no leader yet"), and the longest pause bounds how late a client finds a new leader.
const BACKOFF_MIN: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_millis(50);
/// How long a server that failed is tried only when every other one failed too.
const AVOID_FAILED: Duration = Duration::from_secs(3);
/// How long one try of a request that is safe to retry waits for its answer before trying
/// another server. A paused server (SIGSTOP, a stalled VM) keeps its connections open and says
/// nothing: a request stuck on it moves to another server after this, so a paused leader
/// costs a request at most this much beyond the election of the next one, never its whole
/// deadline.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(4);
/// How often a client refreshes the member list over a connection that lasts.
const RELEARN_AFTER: Duration = Duration::from_secs(5);
/// How long a new connection waits for the member list before going on without it.
const MEMBERS_TIMEOUT: Duration = Duration::from_secs(1);

pub struct Client {
    servers: Vec<String>,
    /// Talk to `servers` only: no learned members (to ask one particular node).
    pinned: bool,
    /// Member addresses the cluster told us of, tried after `servers`. Updated in the
    /// background, so no request ever waits for the member list.
    learned: Arc<std::sync::Mutex<Vec<String>>>,
    timeout: Duration,
    name: String,
    tls: Tls,
    next_id: AtomicU64,
    state: Mutex<State>,
    /// The sessions open through this client, which each connection's reader hands their
    /// pushed events to.
    pub(crate) sessions: session::SessionRoutes,
    /// Bumped on every new connection: subscriptions (and pushed events) do not survive a
    /// reconnection, so sessions renew them when this changes.
    epoch: watch::Sender<u64>,
    /// Where pushed watch events go (see [`watches`]).
    watch_routes: Arc<self::watches::WatchRoutes>,
    /// Notified when the current connection closes (see [`Client::connection_closed`]).
    closed: Arc<tokio::sync::Notify>,
}

tokio::task_local! {
    /// The local user requests are made for while it is set (see [`on_behalf_of`]).
    static ON_BEHALF: proto::UserIds;
}

/// Runs `work` with every request it makes sent as made for `user`: the mount makes requests
/// for the processes that use it. Elsewhere requests go as this process's own user.
pub async fn on_behalf_of<F: std::future::Future>(user: proto::UserIds, work: F) -> F::Output {
    ON_BEHALF.scope(user, work).await
}

/// The user a request now being made is for.
fn current_user() -> proto::UserIds {
    ON_BEHALF.try_with(Clone::clone).unwrap_or_else(|_| {
        static OWN: std::sync::OnceLock<proto::UserIds> = std::sync::OnceLock::new();
        OWN.get_or_init(own_user).clone()
    })
}

/// This process's effective uid and gid, and its supplementary groups.
fn own_user() -> proto::UserIds {
    let mut user = proto::UserIds::new();
    // SAFETY: geteuid(2), getegid(2) and getgroups(2) only read the process's credentials; the
    // buffer is valid for the length passed, and a first call with 0 asks for the count.
    unsafe {
        user.uid = libc::geteuid();
        user.gid = libc::getegid();
        let n = libc::getgroups(0, std::ptr::null_mut());
        if n > 0 {
            let mut groups = vec![0 as libc::gid_t; n as usize];
            let got = libc::getgroups(n, groups.as_mut_ptr());
            groups.truncate(got.max(0) as usize);
            user.groups = groups;
        }
    }
    user
}

/// Identifies a request in a session, for at-most-once application.
#[derive(Debug, Clone, Copy)]
pub struct InSession {
    pub session: u64,
    pub seq: u64,
    pub first_unacked: u64,
    /// The session's secret, which the cluster checks on every request that uses it.
    pub secret: u128,
}

struct State {
    conn: Option<Arc<Conn>>,
    /// Where to connect next: a leader some server pointed us to.
    preferred: Option<String>,
    /// Round-robin position in the candidates when nothing is preferred.
    next_server: usize,
    /// When the member list was last asked for.
    learned_at: Option<Instant>,
    /// Servers that recently failed to connect or to answer in time: when, and how. A paused
    /// or cut-off server accepts connections and then says nothing: each try costs a timeout,
    /// and a session whose keep-alives keep trying it expires. So they are tried last for a
    /// while, and even a redirect does not lead back to one that failed [`Failure::Slow`]ly.
    failed: HashMap<String, (Instant, Failure)>,
}

/// How a server failed the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// At once: the connection was refused or broke. Trying again costs next to nothing, and
    /// a server that another one names as leader has come back (a restarted member may be
    /// elected within a second).
    Quick,
    /// After a timeout: trying again costs another one.
    Slow,
}

/// A connection attempt that failed in less than this failed [`Failure::Quick`]ly.
const QUICK_FAILURE: Duration = Duration::from_millis(500);

impl Client {
    /// A client of the cluster at `servers` (any subset of its members); requests give up after
    /// `timeout` of not finding a leader.
    /// `tls` is how to connect: mutual TLS with this process's credentials, or plain TCP.
    pub fn new(servers: Vec<String>, timeout: Duration, name: String, tls: Tls) -> Client {
        Client {
            servers,
            pinned: false,
            timeout,
            name,
            tls,
            next_id: AtomicU64::new(1),
            state: Mutex::new(State {
                conn: None,
                preferred: None,
                next_server: 0,
                learned_at: None,
                failed: HashMap::new(),
            }),
            learned: Arc::default(),
            sessions: Arc::default(),
            epoch: watch::channel(0).0,
            watch_routes: Arc::default(),
            closed: Arc::default(),
        }
    }

    /// A client of exactly the one server at `addr`, for questions to that node (its own
    /// status); it never goes elsewhere.
    pub fn pinned(addr: String, timeout: Duration, name: String, tls: Tls) -> Client {
        Client {
            pinned: true,
            ..Client::new(vec![addr], timeout, name, tls)
        }
    }

    /// Every node with locks or waiters in the cluster, by instance number, fetched one page
    /// after another.
    pub async fn all_locks(&self) -> Result<Vec<proto::LockInfo>, ClientError> {
        self.all_pages("a lock listing", ops::list_locks, |what, res| {
            answer::locks(what, res).map(|page| (page.locks.into(), page.next))
        })
        .await
    }

    /// Every live session, by id, fetched one page after another.
    pub async fn all_sessions(&self) -> Result<Vec<proto::SessionInfo>, ClientError> {
        self.all_pages("a session listing", ops::list_sessions, |what, res| {
            answer::sessions(what, res).map(|page| (page.sessions.into(), page.next))
        })
        .await
    }

    /// Ends session `id` as its expiry would: its locks are released (the next waiter gets a
    /// lock after the lock-delay), its handles closed and its ephemeral files removed, and its
    /// client finds it ended. The cluster lets only an `admin` identity do this. The request
    /// is sent outside any session, so it never mixes with that session's own numbered
    /// requests.
    pub async fn end_session(&self, id: u64) -> Result<(), ClientError> {
        let mut m = proto::CloseSession::new();
        m.session = id;
        self.call(Op::close_session(m)).await.map(|_| ())
    }

    /// Frees the locks held on `path`: every holder's, or only session `holder`'s. The next
    /// waiters get them after the lock-delay, as after the holders' expiry. The cluster lets
    /// only an `admin` identity do this; the request is sent outside any session.
    pub async fn release_locks(&self, path: &str, holder: Option<u64>) -> Result<(), ClientError> {
        let mut m = proto::ReleaseLocks::new();
        m.set_at(ops::path(path));
        m.holder = holder.unwrap_or(0);
        self.call(Op::release_locks(m)).await.map(|_| ())
    }

    /// A file's contents, read outside any session.
    pub async fn read(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        answer::data("read", self.call(ops::read(path)).await?).map(|d| d.data)
    }

    /// A directory's entries.
    pub async fn readdir(&self, path: &str) -> Result<Vec<proto::DirEntry>, ClientError> {
        let entries = answer::entries("readdir", self.call(ops::readdir(path)).await?)?;
        Ok(entries.entries.into_vec())
    }

    /// Replaces a file's contents (creating it with `mode` if missing), outside any session;
    /// with `if_generation`, only if the file is at that content generation (ESTALE
    /// otherwise). The file's attributes after the write.
    pub async fn put(
        &self,
        path: &str,
        data: Vec<u8>,
        mode: u32,
        if_generation: Option<u64>,
    ) -> Result<proto::Attr, ClientError> {
        // SAFETY: geteuid and getegid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let op = match if_generation {
            Some(g) => ops::put_if(path, data, mode, uid, gid, g),
            None => ops::put(path, data, mode, uid, gid),
        };
        answer::attr("put", self.call(op).await?)
    }

    /// A node's attributes.
    pub async fn stat(&self, path: &str) -> Result<proto::Attr, ClientError> {
        answer::attr("stat", self.call(ops::stat(path)).await?)
    }

    /// The status of the node answering: the cluster, its members and this node's counters.
    pub async fn status(&self) -> Result<proto::StatusReply, ClientError> {
        answer::status("cluster status", self.call(ops::cluster_status()).await?)
    }

    /// Every item of a paged listing: `op(after)` asks for the page after `after`, `page`
    /// takes its items and where the next one starts.
    async fn all_pages<T>(
        &self,
        what: &str,
        op: impl Fn(u64) -> Op,
        page: impl Fn(&str, Res) -> Result<(Vec<T>, u64), ClientError>,
    ) -> Result<Vec<T>, ClientError> {
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let (items, next) = page(what, self.call(op(after)).await?)?;
            all.extend(items);
            // Pages move forward, so this ends even if a server misbehaves.
            if next <= after {
                return Ok(all);
            }
            after = next;
        }
    }

    /// Sends one request, following redirects and retrying what is safe to retry.
    pub async fn call(&self, op: Op) -> Result<Res, ClientError> {
        self.call_with(op, None, self.timeout).await
    }

    /// Sends one request, in a session or not, giving up after `timeout`. In a session, a write
    /// whose connection broke is retried: the cluster applies it at most once.
    pub async fn call_with(
        &self,
        op: Op,
        in_session: Option<InSession>,
        timeout: Duration,
    ) -> Result<Res, ClientError> {
        let deadline = Instant::now() + timeout;
        let user = current_user();
        let mutation = is_mutation(&op) && in_session.is_none();
        let mut backoff = BACKOFF_MIN;
        let mut last_error = String::from("no server tried");
        // Servers that refused us outright: once every one has, waiting will not help.
        let mut refused_by = std::collections::HashSet::new();
        loop {
            if Instant::now() >= deadline {
                return Err(ClientError::Unavailable(last_error));
            }
            let conn = match self.connection().await {
                Ok(c) => c,
                Err((addr, e)) => {
                    last_error = format!("{addr}: {e}");
                    if let OpenError::Refused(_) = e {
                        refused_by.insert(addr);
                        if refused_by.len() >= self.candidates().len() {
                            return Err(ClientError::Refused(last_error));
                        }
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            let mut req = proto::Request::new();
            req.id = self.next_id.fetch_add(1, Ordering::Relaxed);
            req.op = Some(op.clone());
            req.set_caller(user.clone());
            if let Some(s) = in_session {
                req.session = s.session;
                req.seq = s.seq;
                req.first_unacked = s.first_unacked;
                req.session_secret = s.secret.to_be_bytes().to_vec();
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            // A write outside a session must not be sent twice: it waits for its one answer.
            let wait = if mutation {
                remaining
            } else {
                remaining.min(ATTEMPT_TIMEOUT)
            };
            match conn.call(req, wait).await {
                Ok(resp) => match resp.error.into_option() {
                    None => {
                        return resp
                            .result
                            .ok_or_else(|| ClientError::Protocol("empty response".into()))
                    }
                    Some(err) if !err.leader_addr.is_empty() && err.leader_addr != conn.addr => {
                        if self.redirect(&conn, err.leader_addr).await {
                            // Pointed at a leader that just failed us: the others have not
                            // noticed yet. Retrying at once would only spin until they elect.
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(BACKOFF_MAX);
                        }
                    }
                    Some(err)
                        if err.code == EAGAIN
                            || err.code == ENOBUFS
                            || !err.leader_addr.is_empty() =>
                    {
                        last_error = format!("{}: {}", conn.addr, err.message);
                        if err.code == EAGAIN && err.leader_id == 0 && err.leader_addr.is_empty() {
                            // This server knows no leader; another one might.
                            self.drop_connection(&conn, None).await;
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                    Some(err) => {
                        return Err(ClientError::Remote {
                            code: err.code,
                            message: err.message,
                        })
                    }
                },
                Err(CallError::NotSent(e)) => {
                    last_error = e;
                    self.drop_connection(&conn, Some(Failure::Quick)).await;
                }
                Err(CallError::Lost(e)) => {
                    self.drop_connection(&conn, Some(Failure::Quick)).await;
                    if mutation {
                        return Err(ClientError::Ambiguous(e));
                    }
                    last_error = e;
                }
                Err(CallError::TimedOut) => {
                    self.drop_connection(&conn, Some(Failure::Slow)).await;
                    if mutation {
                        return Err(ClientError::Ambiguous("no response in time".into()));
                    }
                    last_error = "no response in time".into();
                }
            }
        }
    }

    /// The servers a new connection may go to: those given, then those learned.
    fn candidates(&self) -> Vec<String> {
        let mut candidates = self.servers.clone();
        let learned = self.learned.lock().expect("poisoned").clone();
        candidates.extend(learned.into_iter().filter(|a| !self.servers.contains(a)));
        candidates
    }

    /// The open connection, or a new one; a failure names the server it was.
    async fn connection(&self) -> Result<Arc<Conn>, (String, OpenError)> {
        let mut st = self.state.lock().await;
        if let Some(c) = st.conn.as_ref().filter(|c| c.is_open()).cloned() {
            // Members come and go while a connection lasts: learn them again now and then, so
            // that when this server goes away the client still knows where the others are.
            if st.learned_at.is_none_or(|t| t.elapsed() > RELEARN_AFTER) {
                st.learned_at = Some(Instant::now());
                self.relearn(c.clone());
            }
            return Ok(c);
        }
        st.failed.retain(|_, (at, _)| at.elapsed() < AVOID_FAILED);
        let preferred = st.preferred.take();
        let slow = |a: &String| st.failed.get(a).is_some_and(|(_, f)| *f == Failure::Slow);
        let addr = match preferred.filter(|a| !slow(a)) {
            Some(a) => a,
            None => {
                let candidates = self.candidates();
                if candidates.is_empty() {
                    return Err((
                        "(none)".into(),
                        OpenError::Failed("no servers given".into()),
                    ));
                }
                // Round robin, skipping servers that failed lately (unless all did).
                let n = candidates.len();
                let pick = (0..n)
                    .map(|k| (st.next_server + k) % n)
                    .find(|&i| !st.failed.contains_key(&candidates[i]))
                    .unwrap_or(st.next_server % n);
                st.next_server = pick + 1;
                candidates[pick].clone()
            }
        };
        // The connection's epoch: what `epoch` becomes once it is the client's connection.
        let pushes = conn::Pushes {
            sessions: self.sessions.clone(),
            watches: self.watch_routes.clone(),
            epoch: *self.epoch.borrow() + 1,
            closed: self.closed.clone(),
        };
        let started = Instant::now();
        let conn = match Conn::open(&addr, &self.name, &self.tls, pushes).await {
            Ok(conn) => conn,
            Err(e) => {
                let how = if started.elapsed() < QUICK_FAILURE {
                    Failure::Quick
                } else {
                    Failure::Slow
                };
                st.failed.insert(addr.clone(), (Instant::now(), how));
                return Err((addr, e));
            }
        };
        st.failed.remove(&addr);
        let conn = Arc::new(conn);
        st.learned_at = Some(Instant::now());
        self.relearn(conn.clone());
        st.conn = Some(conn.clone());
        self.epoch.send_modify(|e| *e += 1);
        Ok(conn)
    }

    /// Asks the server at `conn`, in the background, for the member addresses it knows (it
    /// answers from its own state), and keeps them.
    fn relearn(&self, conn: Arc<Conn>) {
        if self.pinned {
            return;
        }
        let mut req = proto::Request::new();
        req.id = self.next_id.fetch_add(1, Ordering::Relaxed);
        req.op = Some(ops::cluster_status());
        let learned = self.learned.clone();
        tokio::spawn(async move {
            let Ok(resp) = conn.call(req, MEMBERS_TIMEOUT).await else {
                return;
            };
            if let Some(Res::status(s)) = resp.result {
                if !s.members.is_empty() {
                    *learned.lock().expect("poisoned") =
                        s.members.into_iter().map(|m| m.addr).collect();
                }
            }
        });
    }

    /// Changes whenever the client connects anew.
    pub fn epoch(&self) -> watch::Receiver<u64> {
        self.epoch.subscribe()
    }

    /// Where the client's connections hand pushed watch events.
    pub fn watch_routes(&self) -> Arc<self::watches::WatchRoutes> {
        self.watch_routes.clone()
    }

    /// Notified (`notify_waiters`) whenever a connection of this client closes: its server
    /// went away or hung up. Only a future created before the close hears of it.
    pub fn connection_closed(&self) -> Arc<tokio::sync::Notify> {
        self.closed.clone()
    }

    /// Returns whether `leader` is a server that failed lately.
    async fn redirect(&self, from: &Arc<Conn>, leader: String) -> bool {
        let mut st = self.state.lock().await;
        if st.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, from)) {
            st.conn = None;
        }
        let failed = st
            .failed
            .get(&leader)
            .is_some_and(|(at, _)| at.elapsed() < AVOID_FAILED);
        st.preferred = Some(leader);
        failed
    }

    /// Stops using `conn`; `failed` says how if its server did not answer in time or the
    /// connection broke (rather than the server answering that it knows no leader).
    async fn drop_connection(&self, conn: &Arc<Conn>, failed: Option<Failure>) {
        let mut st = self.state.lock().await;
        if st.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            st.conn = None;
        }
        if let Some(how) = failed {
            st.failed.insert(conn.addr.clone(), (Instant::now(), how));
        }
    }
}

fn is_mutation(op: &Op) -> bool {
    !matches!(
        op,
        Op::stat(_)
            | Op::read(_)
            | Op::readdir(_)
            | Op::cluster_status(_)
            | Op::keep_alive(_)
            | Op::get_lock(_)
            | Op::list_locks(_)
            | Op::list_sessions(_)
    )
}

/// Builders for the requests the CLI sends, addressed by path.
pub mod ops {
    use super::Op;
    use crate::proto;

    pub fn path(p: &str) -> proto::Target {
        let mut t = proto::Target::new();
        t.set_path(p.to_string());
        t
    }

    pub fn put(p: &str, data: Vec<u8>, mode: u32, uid: u32, gid: u32) -> Op {
        let mut m = proto::Put::new();
        m.set_at(path(p));
        m.data = data;
        m.mode = mode;
        m.uid = uid;
        m.gid = gid;
        Op::put(m)
    }

    /// A compare-and-set: `put`, applied only if the file is at content generation `generation`
    /// (0: missing or never written); refused with ESTALE otherwise.
    pub fn put_if(p: &str, data: Vec<u8>, mode: u32, uid: u32, gid: u32, generation: u64) -> Op {
        let mut op = put(p, data, mode, uid, gid);
        if let Op::put(m) = &mut op {
            m.has_if_generation = true;
            m.if_generation = generation;
        }
        op
    }

    pub fn read(p: &str) -> Op {
        let mut m = proto::Read::new();
        m.set_target(path(p));
        Op::read(m)
    }

    pub fn readdir(p: &str) -> Op {
        let mut m = proto::Readdir::new();
        m.set_target(path(p));
        Op::readdir(m)
    }

    pub fn stat(p: &str) -> Op {
        let mut m = proto::Stat::new();
        m.set_target(path(p));
        Op::stat(m)
    }

    pub fn mkdir(p: &str, mode: u32, uid: u32, gid: u32) -> Op {
        let mut m = proto::Mkdir::new();
        m.set_at(path(p));
        m.mode = mode;
        m.uid = uid;
        m.gid = gid;
        Op::mkdir(m)
    }

    pub fn unlink(p: &str) -> Op {
        let mut m = proto::Unlink::new();
        m.set_at(path(p));
        Op::unlink(m)
    }

    pub fn rmdir(p: &str) -> Op {
        let mut m = proto::Rmdir::new();
        m.set_at(path(p));
        Op::rmdir(m)
    }

    pub fn cluster_status() -> Op {
        Op::cluster_status(proto::ClusterStatus::new())
    }

    fn member_change(kind: proto::MemberChange_Kind, id: u64) -> proto::MemberChange {
        let mut m = proto::MemberChange::new();
        m.kind = kind;
        m.id = id;
        m
    }

    /// Adds node `id` at `addr` as a learner, promoted once caught up unless `learner`.
    pub fn add_member(id: u64, addr: &str, learner: bool) -> Op {
        let mut m = member_change(proto::MemberChange_Kind::ADD, id);
        m.addr = addr.to_string();
        m.learner = learner;
        Op::member_change(m)
    }

    pub fn remove_member(id: u64) -> Op {
        Op::member_change(member_change(proto::MemberChange_Kind::REMOVE, id))
    }

    pub fn promote_member(id: u64) -> Op {
        Op::member_change(member_change(proto::MemberChange_Kind::PROMOTE, id))
    }

    pub fn set_ephemeral(p: &str, ephemeral: bool) -> Op {
        let mut m = proto::SetEphemeral::new();
        m.set_target(path(p));
        m.ephemeral = ephemeral;
        Op::set_ephemeral(m)
    }

    /// How many exclusive flock holders `p` admits at once (a semaphore; 1 is a plain lock).
    pub fn set_max_holders(p: &str, max_holders: u32) -> Op {
        let mut m = proto::SetMaxHolders::new();
        m.set_target(path(p));
        m.max_holders = max_holders;
        Op::set_max_holders(m)
    }

    /// What a mount does to the holders of a lock on `p` when it loses the lock (NONE removes
    /// the setting).
    pub fn set_on_loss(p: &str, on_loss: proto::OnLoss) -> Op {
        let mut m = proto::SetOnLoss::new();
        m.set_target(path(p));
        m.on_loss = on_loss;
        Op::set_on_loss(m)
    }

    /// One page of the locks: nodes above instance `after`, as many as the server sends.
    pub fn list_locks(after: u64) -> Op {
        let mut m = proto::ListLocks::new();
        m.after = after;
        Op::list_locks(m)
    }

    /// One page of the sessions: ids above `after`, as many as the server sends.
    pub fn list_sessions(after: u64) -> Op {
        let mut m = proto::ListSessions::new();
        m.after = after;
        Op::list_sessions(m)
    }
}
