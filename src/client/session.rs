//! A client session: the lease that keeps a client's handles, locks and ephemeral files alive.
//!
//! The session sends a keep-alive every TTL/3 to the leader. It tracks its lease conservatively:
//! the lease runs for TTL from the moment the last acknowledged keep-alive was *sent* (the leader
//! renewed it no earlier than that). When the lease runs out without renewal the session is in
//! *jeopardy*: it keeps trying every server for a grace period. If a keep-alive gets through and
//! the session is still alive, everything goes on untouched; if the cluster says it expired, or
//! the grace period ends, the session is over and its holder must stop acting under its locks.
//!
//! Requests in a session carry (session, sequence number), so the session can retry a write after
//! a broken connection or a failover without ever having it applied twice.
//!
//! Lock waits are queued on the servers; the grant is pushed as an event on the connection that
//! keeps the session alive. Pushes do not survive a reconnection, so after each reconnection the
//! session renews its subscription and checks its pending waits against the lock table.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use super::{answer, Client, ClientError, InSession};
use crate::proto::{self, Request_oneof_op as Op, Response_oneof_result as Res};

/// errno-like code of an expired session on the wire (EKEYEXPIRED).
pub const SESSION_EXPIRED: u32 = crate::errno::EKEYEXPIRED;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    Live,
    /// The lease ran out; still trying to reach the cluster within the grace period.
    Jeopardy,
    /// Closed by us, or expired (then its locks may already belong to someone else).
    Ended {
        expired: bool,
    },
}

/// A session's request numbers: the next one, and those sent and not yet answered.
#[derive(Debug)]
struct InFlight {
    next: u64,
    unanswered: BTreeSet<u64>,
}

impl Default for InFlight {
    fn default() -> Self {
        InFlight {
            next: 1,
            unanswered: BTreeSet::new(),
        }
    }
}

impl InFlight {
    /// A new request's number, and the lowest number still unanswered (every one below it was
    /// answered: the cluster may forget their results). The number is drawn and entered in
    /// one step, so no request ever claims as answered a lower number another call drew but
    /// had not entered yet (the cluster would then refuse that one as acknowledged already).
    fn begin(&mut self) -> (u64, u64) {
        let seq = self.next;
        self.next += 1;
        self.unanswered.insert(seq);
        (seq, *self.unanswered.first().expect("just inserted"))
    }

    /// Request `seq` was answered.
    fn end(&mut self, seq: u64) {
        self.unanswered.remove(&seq);
    }
}

/// How long [`Session::lock`] waits for a lock that is not free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Not at all: `WouldBlock` at once.
    No,
    /// In the queue, for at most this long.
    For(Duration),
    /// In the queue, until granted (or cancelled).
    Forever,
}

/// A lock to take through an open handle.
#[derive(Debug, Clone)]
pub struct LockRequest {
    pub handle: u64,
    pub owner: u64,
    pub style: proto::LockStyle,
    pub kind: proto::LockKind,
    pub start: u64,
    pub end: u64,
    pub pid: u32,
}

/// A lock granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The file's lock generation after the grant (the fencing token).
    pub generation: u64,
    /// The file's `on_loss` setting: what the holder's mount does to the processes holding
    /// the lock if it loses it.
    pub on_loss: proto::OnLoss,
}

#[derive(Debug, Clone)]
pub enum LockOutcome {
    /// Held.
    Granted(Grant),
    /// Not available now (try-lock); the first conflicting holder when there is one.
    WouldBlock { conflict: Option<proto::LockHolder> },
    /// The wait was given up (timeout or cancellation) and withdrawn from the queue.
    GaveUp,
}

/// The immediate answer to a lock request.
#[derive(Debug, Clone)]
pub enum Requested {
    Done(LockOutcome),
    /// Queued on the servers with this wait id; see `Session::wait_granted`.
    Queued(u64),
}

enum WaitResult {
    Granted(Grant),
    Failed(ClientError),
}

struct PendingWait {
    owner: u64,
    result: Option<oneshot::Sender<WaitResult>>,
}

pub struct Session {
    client: Arc<Client>,
    pub id: u64,
    /// Chosen by the cluster at open; no one else learns it.
    secret: u128,
    pub ttl: Duration,
    grace: Duration,
    /// Request numbers: the next, and those sent and not yet answered.
    in_flight: Mutex<InFlight>,
    state: watch::Sender<SessionState>,
    waits: Mutex<HashMap<u64, PendingWait>>,
    /// Results of waits that arrived before we knew their wait id.
    early: Mutex<HashMap<u64, WaitResult>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// When the lease ends as this client knows it (a TTL after the last acknowledged
    /// keep-alive was sent: the leader renewed it no earlier), and how many times it was
    /// renewed only after it had run out.
    lease: Mutex<(Instant, u64)>,
    /// Locks an administrator released, not yet taken (`take_revoked`).
    revoked: Mutex<Vec<Revoked>>,
}

/// A lock of the session an administrator released (`lockfs locks release`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    pub instance: u64,
    /// The handle it was taken through.
    pub handle: u64,
    pub owner: u64,
    pub style: proto::LockStyle,
}

/// Revocations kept for the taker at most; beyond that the oldest go (the taker looks
/// every fraction of a second).
const MAX_REVOKED: usize = 4096;

fn expired() -> ClientError {
    ClientError::Remote {
        code: SESSION_EXPIRED,
        message: "session expired".into(),
    }
}

impl Session {
    /// Opens a session with the given TTL; `grace` is how long it keeps trying once its lease ran
    /// out. Must be called inside a tokio runtime (it spawns the keep-alive).
    pub async fn open(
        client: Arc<Client>,
        ttl: Duration,
        grace: Duration,
        host: &str,
        name: &str,
    ) -> Result<Arc<Session>, ClientError> {
        Self::open_with(client, ttl, grace, host, name, false).await
    }

    /// As [`Session::open`]; with `cache`, the session's client caches the tree, and the
    /// leader waits for its cache (see `crate::server::cache`).
    pub async fn open_with(
        client: Arc<Client>,
        ttl: Duration,
        grace: Duration,
        host: &str,
        name: &str,
        cache: bool,
    ) -> Result<Arc<Session>, ClientError> {
        let mut m = proto::OpenSession::new();
        m.cache = cache;
        m.ttl_ms = ttl.as_millis() as u64;
        m.host = host.to_string();
        m.pid = std::process::id();
        m.name = name.to_string();
        let sent = Instant::now();
        let s = answer::session("open", client.call(Op::open_session(m)).await?)?;
        let (id, secret) = match <[u8; 16]>::try_from(s.secret.as_slice()) {
            Ok(secret) => (s.session, u128::from_be_bytes(secret)),
            Err(_) => {
                return Err(ClientError::Protocol(
                    "the cluster sent no session secret".into(),
                ))
            }
        };
        let session = Arc::new(Session {
            client: client.clone(),
            id,
            secret,
            ttl,
            grace,
            in_flight: Mutex::new(InFlight::default()),
            state: watch::channel(SessionState::Live).0,
            waits: Mutex::new(HashMap::new()),
            early: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
            lease: Mutex::new((sent + ttl, 0)),
            revoked: Mutex::new(Vec::new()),
        });
        let mut tasks = Vec::new();
        client
            .sessions
            .lock()
            .expect("poisoned")
            .insert(session.id, Arc::downgrade(&session));
        tasks.push(tokio::spawn(keep_alive(
            Arc::downgrade(&session),
            sent + ttl,
            client.epoch(),
        )));
        *session.tasks.lock().expect("poisoned") = tasks;
        Ok(session)
    }

    /// The locks an administrator released since the last call.
    pub fn take_revoked(&self) -> Vec<Revoked> {
        std::mem::take(&mut *self.revoked.lock().expect("poisoned"))
    }

    /// The client the session talks through.
    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }

    /// Watches `path` (with `recursive`, everything below it): see [`super::watch`].
    pub async fn watch(
        self: &Arc<Self>,
        path: &str,
        recursive: bool,
    ) -> Result<(super::watches::Watcher, super::watches::Snapshot), ClientError> {
        super::watches::Watcher::start(self.clone(), path, recursive).await
    }

    /// Whether the lease certainly still runs (the session is live and a TTL has not passed
    /// since the last acknowledged keep-alive was sent); if so, how many times so far it was
    /// renewed only after it had run out. A cache that served under one count must start
    /// over under another: while the lease had run out, the leader may have stopped waiting
    /// for it.
    pub fn lease_holds(&self) -> Option<u64> {
        let (end, gaps) = *self.lease.lock().expect("poisoned");
        (*self.state.borrow() == SessionState::Live && Instant::now() < end).then_some(gaps)
    }

    /// How long the lease certainly still runs, as [`Session::lease_holds`] counts it (zero
    /// once it may have run out).
    pub fn lease_left(&self) -> Duration {
        let (end, _) = *self.lease.lock().expect("poisoned");
        if *self.state.borrow() == SessionState::Live {
            end.saturating_duration_since(Instant::now())
        } else {
            Duration::ZERO
        }
    }

    /// Tells the leader that this session's cache dropped what the events up to `index`
    /// changed, and what the PENDING notices up to `early` named (see
    /// `crate::server::cache`); either may be 0.
    pub async fn cache_ack(&self, index: u64, early: u64) -> Result<(), ClientError> {
        let mut m = proto::CacheAck::new();
        m.index = index;
        m.early = early;
        self.call(Op::cache_ack(m)).await.map(|_| ())
    }

    pub fn state(&self) -> watch::Receiver<SessionState> {
        self.state.subscribe()
    }

    /// Whether the session is over (closed, or expired as far as this client knows).
    pub fn has_ended(&self) -> bool {
        matches!(*self.state.borrow(), SessionState::Ended { .. })
    }

    /// Sends a request in this session.
    pub async fn call(&self, op: Op) -> Result<Res, ClientError> {
        if self.has_ended() {
            return Err(expired());
        }
        let (seq, first_unacked) = self.in_flight.lock().expect("poisoned").begin();
        let tag = InSession {
            session: self.id,
            seq,
            first_unacked,
            secret: self.secret,
        };
        let result = self
            .client
            .call_with(op, Some(tag), self.ttl + self.grace)
            .await;
        self.in_flight.lock().expect("poisoned").end(seq);
        if let Err(ClientError::Remote {
            code: SESSION_EXPIRED,
            ..
        }) = &result
        {
            if !self.has_ended() {
                log::warn!(
                    "session {} expired (the answer to a request says so)",
                    self.id
                );
            }
            self.end(true);
        }
        result
    }

    /// Opens (and with `create`, creates) a file; returns the handle and its attributes.
    pub async fn open_file(
        &self,
        path: &str,
        create: bool,
        mode: u32,
        exclusive: bool,
    ) -> Result<(u64, proto::Attr), ClientError> {
        let mut m = proto::Open::new();
        m.set_at(super::ops::path(path));
        m.create = create;
        m.mode = mode;
        m.exclusive = exclusive;
        // SAFETY: geteuid and getegid cannot fail and touch no memory.
        (m.uid, m.gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let mut o = answer::opened("open", self.call(Op::open(m)).await?)?;
        Ok((o.handle, o.take_attr()))
    }

    /// Takes a lock. With [`Wait::No`], fails at once with `WouldBlock` when it is not
    /// available. Otherwise queues on the servers until granted, until the wait's deadline or
    /// until `cancel` completes; a wait given up is withdrawn from the queue, and a grant that
    /// raced with giving up is released again, so no lock stays granted to nobody.
    pub async fn lock(
        &self,
        req: &LockRequest,
        wait: Wait,
        cancel: impl Future<Output = ()>,
    ) -> Result<LockOutcome, ClientError> {
        let wait_id = match self.request_lock(req, wait != Wait::No).await? {
            Requested::Done(outcome) => return Ok(outcome),
            Requested::Queued(id) => id,
        };
        let timeout = async {
            match wait {
                Wait::For(d) => tokio::time::sleep(d).await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            r = self.wait_granted(wait_id) => r.map(LockOutcome::Granted),
            _ = timeout => self.cancel_wait(wait_id).await.map(|_| LockOutcome::GaveUp),
            _ = cancel => self.cancel_wait(wait_id).await.map(|_| LockOutcome::GaveUp),
        }
    }

    /// Sends a lock request; a queued one is registered so its grant is not missed.
    pub async fn request_lock(
        &self,
        req: &LockRequest,
        wait: bool,
    ) -> Result<Requested, ClientError> {
        let mut m = proto::Lock::new();
        m.handle = req.handle;
        m.owner = req.owner;
        m.style = req.style;
        m.kind = req.kind;
        m.start = req.start;
        m.end = req.end;
        m.pid = req.pid;
        m.wait = wait;
        let reply = answer::lock("lock", self.call(Op::lock(m)).await?)?;
        if reply.granted {
            return Ok(Requested::Done(LockOutcome::Granted(Grant {
                generation: reply.generation,
                on_loss: reply.on_loss,
            })));
        }
        if reply.would_block || reply.wait == 0 {
            return Ok(Requested::Done(LockOutcome::WouldBlock {
                conflict: reply.conflict.into_option(),
            }));
        }
        let mut waits = self.waits.lock().expect("poisoned");
        waits.entry(reply.wait).or_insert(PendingWait {
            owner: req.owner,
            result: None,
        });
        Ok(Requested::Queued(reply.wait))
    }

    /// Waits for a queued lock to be granted.
    pub async fn wait_granted(&self, wait: u64) -> Result<Grant, ClientError> {
        let (tx, rx) = oneshot::channel();
        let early = self.early.lock().expect("poisoned").remove(&wait);
        match early {
            Some(result) => {
                self.waits.lock().expect("poisoned").remove(&wait);
                let _ = tx.send(result);
            }
            None => {
                let mut waits = self.waits.lock().expect("poisoned");
                let entry = waits.entry(wait).or_insert(PendingWait {
                    owner: 0,
                    result: None,
                });
                entry.result = Some(tx);
            }
        }
        // `end` marks the session ended before it fails the waits it finds, so a wait
        // registered after that is caught here rather than left waiting forever.
        if self.has_ended() {
            self.waits.lock().expect("poisoned").remove(&wait);
            return Err(expired());
        }
        match rx.await {
            Ok(WaitResult::Granted(grant)) => Ok(grant),
            Ok(WaitResult::Failed(e)) => Err(e),
            Err(_) => Err(expired()),
        }
    }

    /// Withdraws a queued lock request; true if it had been granted meanwhile (it is then
    /// released again).
    pub async fn cancel_wait(&self, wait: u64) -> Result<bool, ClientError> {
        self.waits.lock().expect("poisoned").remove(&wait);
        self.early.lock().expect("poisoned").remove(&wait);
        let mut c = proto::CancelWait::new();
        c.wait = wait;
        let c = answer::cancelled("cancel", self.call(Op::cancel_wait(c)).await?)?;
        Ok(c.was_granted)
    }

    /// Ends the session: the cluster releases its locks and closes its handles at once.
    pub async fn close(&self) -> Result<(), ClientError> {
        if self.has_ended() {
            return Ok(());
        }
        let result = self
            .call(Op::close_session(proto::CloseSession::new()))
            .await;
        self.end(false);
        result.map(|_| ())
    }

    fn end(&self, expired_now: bool) {
        self.state.send_if_modified(|s| {
            if matches!(s, SessionState::Ended { .. }) {
                return false;
            }
            *s = SessionState::Ended {
                expired: expired_now,
            };
            true
        });
        for (_, mut w) in self.waits.lock().expect("poisoned").drain() {
            if let Some(tx) = w.result.take() {
                let _ = tx.send(WaitResult::Failed(expired()));
            }
        }
        for t in self.tasks.lock().expect("poisoned").drain(..) {
            t.abort();
        }
    }

    fn finish_wait(&self, wait: u64, result: WaitResult) {
        let sender = {
            let mut waits = self.waits.lock().expect("poisoned");
            match waits.get_mut(&wait).and_then(|w| w.result.take()) {
                Some(tx) => {
                    waits.remove(&wait);
                    Some(tx)
                }
                None => None,
            }
        };
        match sender {
            Some(tx) => {
                let _ = tx.send(result);
            }
            None => {
                self.early.lock().expect("poisoned").insert(wait, result);
            }
        }
    }

    /// After a reconnection pushes may have been lost: find waits that were granted meanwhile.
    async fn resync_waits(&self) {
        let owners: Vec<(u64, u64)> = self
            .waits
            .lock()
            .expect("poisoned")
            .iter()
            .map(|(id, w)| (*id, w.owner))
            .collect();
        if owners.is_empty() {
            return;
        }
        let Ok(locks) = self.client.all_locks().await else {
            return;
        };
        for info in &locks {
            for (wait, owner) in &owners {
                let still_waiting = info.waiters.iter().any(|w| w.wait == *wait);
                let holds = info
                    .holders
                    .iter()
                    .any(|h| h.session == self.id && h.owner == *owner);
                if holds && !still_waiting {
                    log::debug!("wait {wait}: granted while the connection was down");
                    self.finish_wait(
                        *wait,
                        WaitResult::Granted(Grant {
                            generation: info.lock_generation,
                            on_loss: info.on_loss,
                        }),
                    );
                }
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for t in self.tasks.lock().expect("poisoned").drain(..) {
            t.abort();
        }
        self.client
            .sessions
            .lock()
            .expect("poisoned")
            .remove(&self.id);
    }
}

/// The sessions open through one client, by id, for the events pushed to them.
pub type SessionRoutes = Arc<Mutex<HashMap<u64, Weak<Session>>>>;

/// Hands a pushed event to the session it is for, at once: it only settles waits and marks
/// state, so the connection's reader calls it before reading on.
pub(crate) fn dispatch_event(sessions: &SessionRoutes, e: proto::Event) {
    use proto::Event_Kind as K;
    let session = sessions.lock().expect("poisoned").get(&e.session).cloned();
    let Some(s) = session.and_then(|w| w.upgrade()) else {
        return;
    };
    match e.kind {
        K::GRANTED => s.finish_wait(
            e.wait,
            WaitResult::Granted(Grant {
                generation: e.generation,
                on_loss: e.on_loss,
            }),
        ),
        K::WAIT_FAILED => {
            let err = e.get_error();
            s.finish_wait(
                e.wait,
                WaitResult::Failed(ClientError::Remote {
                    code: err.code,
                    message: err.message.clone(),
                }),
            )
        }
        K::SESSION_ENDED => {
            if e.expired {
                log::warn!("session {} expired", s.id);
            } else {
                log::debug!("session {} closed", s.id);
            }
            s.end(e.expired);
        }
        K::LOCK_REVOKED => {
            log::warn!(
                "session {}: an administrator released its lock on inode {}",
                s.id,
                e.instance
            );
            let mut revoked = s.revoked.lock().expect("poisoned");
            if revoked.len() >= MAX_REVOKED {
                revoked.remove(0);
            }
            revoked.push(Revoked {
                instance: e.instance,
                handle: e.handle,
                owner: e.owner,
                style: e.style,
            });
        }
    }
}

async fn keep_alive(
    session: Weak<Session>,
    mut lease_end: Instant,
    mut epoch: watch::Receiver<u64>,
) {
    let mut seen_epoch = *epoch.borrow_and_update();
    loop {
        let Some(s) = session.upgrade() else { return };
        let interval = s.ttl / 3;
        let sent = Instant::now();
        let tag = InSession {
            session: s.id,
            seq: 0,
            first_unacked: 0,
            secret: s.secret,
        };
        let op = Op::keep_alive(proto::KeepAlive::new());
        let attempt = s
            .client
            .call_with(op, Some(tag), interval.max(Duration::from_millis(200)))
            .await;
        let now = Instant::now();
        match attempt {
            Ok(_) => {
                {
                    let mut lease = s.lease.lock().expect("poisoned");
                    if now >= lease.0 {
                        lease.1 += 1;
                    }
                    lease.0 = sent + s.ttl;
                }
                lease_end = sent + s.ttl;
                if *s.state.borrow() == SessionState::Jeopardy {
                    log::info!("session {} is safe again", s.id);
                }
                s.state.send_if_modified(|st| {
                    let changed = *st == SessionState::Jeopardy;
                    if changed {
                        *st = SessionState::Live;
                    }
                    changed
                });
                let current = *epoch.borrow_and_update();
                if current != seen_epoch {
                    seen_epoch = current;
                    // Not awaited here: the lock listing is a read, which a new leader holds
                    // until every cache has registered with it (a cut-off host's cache may
                    // never), and the keep-alives must go on meanwhile or the session expires
                    // while it waits.
                    let s = s.clone();
                    tokio::spawn(async move { s.resync_waits().await });
                }
            }
            Err(ClientError::Remote {
                code: SESSION_EXPIRED,
                ..
            }) => {
                log::warn!("session {} expired", s.id);
                s.end(true);
                return;
            }
            Err(e) => {
                if now >= lease_end + s.grace {
                    log::warn!("session {} lost: no keep-alive got through ({e})", s.id);
                    s.end(true);
                    return;
                }
                if now >= lease_end {
                    s.state.send_if_modified(|st| {
                        let changed = *st == SessionState::Live;
                        if changed {
                            log::warn!("session {} in jeopardy: {e}", s.id);
                            *st = SessionState::Jeopardy;
                        }
                        changed
                    });
                }
            }
        }
        let next = sent + interval;
        let closed = s.client.connection_closed();
        drop(s);
        // A closed connection is a server gone: keeping the session alive elsewhere at once,
        // rather than at the next keep-alive, is what lets a new leader stop waiting for this
        // host's cache to register (see `server::cache`) a TTL/3 sooner.
        let closed = closed.notified();
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = epoch.changed() => {}
            _ = closed => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::InFlight;

    #[test]
    fn a_request_claims_answered_only_numbers_below_every_unanswered_one() {
        let mut f = InFlight::default();
        let (a, first) = f.begin();
        assert_eq!((a, first), (1, 1));
        let (b, first) = f.begin();
        assert_eq!((b, first), (2, 1));
        // The older one is still out: a later request does not claim it answered.
        f.end(b);
        let (c, first) = f.begin();
        assert_eq!((c, first), (3, 1));
        f.end(a);
        let (d, first) = f.begin();
        assert_eq!((d, first), (4, 3));
        f.end(c);
        f.end(d);
        assert_eq!(f.begin(), (5, 5));
    }
}
