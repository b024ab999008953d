//! The lock commands and queries: Lock, Unlock, CancelWait, Wake, F_GETLK and the listing, and
//! what deleting a node or ending a lock-delay does to waiters. The table arithmetic is in
//! `lock.rs`; the rules are in its module docs.
//!
//! Every change to a node's lock table ends in [`StateMachine::settle`]: it ends a lock-delay
//! whose time has come, runs the waiter scan, bumps the lock generation for each exclusive
//! grant and emits an [`Event::Granted`] per granted wait. A request that is granted at once
//! answers with its generation and emits no event.
//!
//! Lock-delays end by time alone, and time only moves when a command is applied. So after
//! every successful command the state ends the delays whose time has come (and grants their
//! waiters) in that same command; `Wake` is the command that does only that. The leader
//! proposes it at [`StateMachine::next_wake_ns`] so that waiters do not depend on unrelated
//! traffic.
//!
//! A CancelWait may lose the race to the grant (the waiting process got a signal while the
//! grant was on its way). To release what such a wait obtained, the session remembers its
//! granted waits (`Session::granted`), at most [`MAX_GRANTED_MEMORY`] of them, the oldest
//! forgotten first. A memory goes when the owner locks or unlocks on that node again, or
//! another wait of that owner is granted there (the wait's lock is no longer identifiable),
//! and with the session. Releasing it removes the owner's coverage of the wait's range: for a
//! POSIX wait that also drops what the owner held there before the wait (the process saw
//! EINTR; fcntl would have kept the old lock, we do not reconstruct it).

use std::ops::Bound;

use super::cmd::{Lock, Unlock};
use super::lock::{Held, LockTable};
use super::session::GrantedWait;
use super::tree::{page_size, StateMachine};
use super::{
    Event, LockInfo, LockKind, LockResult, LockStyle, NodeChange, Outcome, StateError, Target, ROOT,
};

/// Holders or waiters per node beyond which a lock request is refused with ENOLCK.
pub const MAX_LOCKS_PER_NODE: usize = 10_000;
/// Granted waits a session remembers for a late CancelWait.
pub const MAX_GRANTED_MEMORY: usize = 64;

/// A lock request as the commands and queries carry it.
pub(super) struct LockRequest {
    pub session: u64,
    pub handle: u64,
    pub owner: u64,
    pub style: LockStyle,
    pub kind: LockKind,
    pub start: u64,
    pub end: u64,
    pub pid: u32,
}

impl LockRequest {
    /// The request a [`Lock`] command makes.
    pub fn of(c: &Lock) -> LockRequest {
        LockRequest {
            session: c.session,
            handle: c.handle,
            owner: c.owner,
            style: c.style,
            kind: c.kind,
            start: c.start,
            end: c.end,
            pid: c.pid,
        }
    }
}

/// What [`StateMachine::plan_lock`] decided; `table: None` for a repeat, which changes
/// nothing.
struct LockPlan {
    ino: u64,
    table: Option<LockTable>,
    result: LockResult,
    bump: bool,
    lock: Held,
}

/// flock locks cover the whole node whatever range is given; a POSIX range must not be empty.
fn range(style: LockStyle, start: u64, end: u64) -> Result<(u64, u64), StateError> {
    match style {
        LockStyle::Flock => Ok((0, u64::MAX)),
        LockStyle::Posix if start < end => Ok((start, end)),
        LockStyle::Posix => Err(StateError::InvalidArgument(format!(
            "empty lock range [{start}, {end})"
        ))),
    }
}

impl StateMachine {
    /// The node a request's handle names, and the request as a lock; checks everything a lock
    /// request can fail on except a full table.
    fn resolve_request(&self, r: &LockRequest, now: u64) -> Result<(u64, Held), StateError> {
        let ino = self.handle_node(r.session, r.handle)?;
        self.node(ino)?;
        let (start, end) = range(r.style, r.start, r.end)?;
        let lock = Held {
            session: r.session,
            owner: r.owner,
            handle: r.handle,
            style: r.style,
            kind: r.kind,
            start,
            end,
            pid: r.pid,
            since_ns: now,
        };
        Ok((ino, lock))
    }

    /// What a lock request would do, decided without changing anything: the node, its table
    /// after the request, the answer and whether the lock generation is bumped.
    fn plan_lock(&self, r: &LockRequest, wait: bool, now: u64) -> Result<LockPlan, StateError> {
        let (ino, lock) = self.resolve_request(r, now)?;
        let mut table = self.locks.get(&ino).cloned().unwrap_or_default();
        let generation = self.nodes[&ino].lock_generation;
        if table.covered(&lock, |k| k == lock.kind) {
            // A repeat changes nothing (and must not lose the lock to a flock conversion).
            return Ok(LockPlan {
                ino,
                table: None,
                result: self.granted(ino, generation),
                bump: false,
                lock,
            });
        }
        // A lock-delay lets a flock downgrade through: judge it before the old lock goes.
        let delayed = table.delayed(&lock, now);
        if lock.style == LockStyle::Flock {
            // Linux converts a flock lock by dropping it first, then acquiring.
            table.unlock(lock.session, lock.owner, LockStyle::Flock, 0, u64::MAX);
        }
        // `Some(first conflicting holder)` when blocked.
        let blocked = match table.first_conflict(&lock, self.slots(ino)) {
            Some(holder) => Some(Some(holder.clone())),
            None if delayed || table.blocked_by_queue(&table.waiters, &lock) => Some(None),
            None => None,
        };
        let mut bump = false;
        let result = match blocked {
            None => {
                bump = table.grant(lock.clone());
                self.granted(ino, generation + u64::from(bump))
            }
            Some(_) if wait => {
                let id = self.meta.next_wait;
                table.waiters.push(super::lock::Waiter {
                    wait: id,
                    lock: lock.clone(),
                });
                LockResult::Queued { wait: id }
            }
            Some(conflict) => {
                let host = |s: u64| self.sessions[&s].host.as_str();
                LockResult::WouldBlock {
                    conflict: conflict.map(|h| h.to_holder(host(h.session))),
                }
            }
        };
        if table.holders.len() > MAX_LOCKS_PER_NODE || table.waiters.len() > MAX_LOCKS_PER_NODE {
            return Err(StateError::NoLocks);
        }
        Ok(LockPlan {
            ino,
            table: Some(table),
            result,
            bump,
            lock,
        })
    }

    /// The node a waiting lock request would queue on, if it would queue (see `quota.rs`).
    pub(super) fn would_queue(&self, r: &LockRequest, now: u64) -> Option<u64> {
        match self.plan_lock(r, true, now) {
            Ok(plan) if matches!(plan.result, LockResult::Queued { .. }) => Some(plan.ino),
            _ => None,
        }
    }

    /// Whether `lock`, a waiting request, would queue behind a holder if it were applied to
    /// the state as it stands (`now` in nanoseconds of the cluster's clock). Only a hint for
    /// when the leader proposes it: applying it decides.
    pub fn lock_would_wait(&self, lock: &Lock, now: u64) -> bool {
        lock.wait && self.would_queue(&LockRequest::of(lock), now).is_some()
    }

    pub(super) fn lock(
        &mut self,
        r: &LockRequest,
        wait: bool,
        now: u64,
    ) -> Result<Outcome, StateError> {
        let LockPlan {
            ino,
            table,
            result,
            bump,
            lock,
        } = self.plan_lock(r, wait, now)?;
        let Some(table) = table else {
            return Ok(Outcome::Lock(result));
        };
        // Checked; mutations from here on.
        if let LockResult::Queued { .. } = result {
            self.meta.next_wait += 1;
            self.meta_dirty = true;
        }
        if bump {
            self.node_mut(ino).lock_generation += 1;
        }
        self.forget_grants(lock.session, lock.owner, lock.style, ino);
        self.settle(ino, table, now);
        Ok(Outcome::Lock(result))
    }

    pub(super) fn unlock(&mut self, c: &Unlock, now: u64) -> Result<Outcome, StateError> {
        let (session, handle, owner, style, start, end) =
            (c.session, c.handle, c.owner, c.style, c.start, c.end);
        let ino = self.handle_node(session, handle)?;
        let (start, end) = range(style, start, end)?;
        // On a deleted node nothing is held: the unlock the mount sends at close succeeds.
        let Some(table) = self.locks.get(&ino) else {
            return Ok(Outcome::Done);
        };
        let mut table = table.clone();
        table.unlock(session, owner, style, start, end);
        self.forget_grants(session, owner, style, ino);
        self.settle(ino, table, now);
        Ok(Outcome::Done)
    }

    /// Frees the locks held on the node at `at`: every holder's, or only session `holder`'s
    /// (see `Command::ReleaseLocks`). Their owners' later unlocks find nothing and succeed.
    pub(super) fn release_locks(
        &mut self,
        at: &Target,
        holder: Option<u64>,
        lock_delay_ns: u64,
        now: u64,
    ) -> Result<Outcome, StateError> {
        let ino = self.lookup(at)?;
        let chosen = |h: &Held| holder.is_none_or(|s| h.session == s);
        let mut table = self.locks.get(&ino).cloned().unwrap_or_default();
        let released: Vec<Held> = table
            .holders
            .iter()
            .filter(|h| chosen(h))
            .cloned()
            .collect();
        if released.is_empty() {
            return Err(StateError::InvalidArgument(match holder {
                Some(s) => format!("session {s} holds no lock there"),
                None => "no lock is held there".into(),
            }));
        }
        table.holders.retain(|h| !chosen(h));
        for h in &released {
            self.forget_grants(h.session, h.owner, h.style, ino);
            self.events.push(Event::LockRevoked {
                session: h.session,
                instance: ino,
                handle: h.handle,
                owner: h.owner,
                style: h.style,
            });
        }
        if lock_delay_ns > 0 {
            table.delay_until_ns = table.delay_until_ns.max(now.saturating_add(lock_delay_ns));
        }
        self.settle(ino, table, now);
        Ok(Outcome::Done)
    }

    pub(super) fn cancel_wait(
        &mut self,
        session: u64,
        wait: u64,
        now: u64,
    ) -> Result<Outcome, StateError> {
        self.live_session(session)?;
        let queued_on = self.locks.iter().find_map(|(&ino, t)| {
            t.waiters
                .iter()
                .any(|w| w.wait == wait && w.lock.session == session)
                .then_some(ino)
        });
        if let Some(ino) = queued_on {
            let mut table = self.locks[&ino].clone();
            table.waiters.retain(|w| w.wait != wait);
            // Later waiters may have been blocked by this one only.
            self.settle(ino, table, now);
            return Ok(Outcome::Cancelled { was_granted: false });
        }
        let Some(granted) = self.sessions[&session].granted.get(&wait).cloned() else {
            return Ok(Outcome::Cancelled { was_granted: false });
        };
        self.session_mut(session).granted.remove(&wait);
        if let Some(table) = self.locks.get(&granted.instance) {
            let mut table = table.clone();
            table.unlock(
                session,
                granted.owner,
                granted.style,
                granted.start,
                granted.end,
            );
            self.settle(granted.instance, table, now);
        }
        Ok(Outcome::Cancelled { was_granted: true })
    }

    // ---- Queries.

    pub(super) fn get_lock(&self, r: &LockRequest) -> Result<Outcome, StateError> {
        let (ino, lock) = self.resolve_request(r, 0)?;
        let conflict = self
            .locks
            .get(&ino)
            .and_then(|t| t.first_conflict(&lock, self.slots(ino)))
            .map(|h| h.to_holder(&self.sessions[&h.session].host));
        Ok(Outcome::LockProbe(conflict))
    }

    /// How many locks node `ino` has (a POSIX owner's disjoint ranges count one each).
    pub fn lock_holders(&self, ino: u64) -> u32 {
        self.locks
            .get(&ino)
            .map_or(0, |t| u32::try_from(t.holders.len()).unwrap_or(u32::MAX))
    }

    /// A page of the nodes with holders or waiters above instance `after` (see
    /// `Query::Locks`), and the instance to go on from if more remain.
    pub(super) fn lock_infos(&self, after: u64, limit: u32) -> (Vec<LockInfo>, Option<u64>) {
        let host = |s: u64| self.sessions[&s].host.as_str();
        let budget = page_size(limit) as usize;
        let mut used = 0;
        let range = (Bound::Excluded(after), Bound::Unbounded);
        let empty = LockTable::default();
        // Nodes with holders or waiters, and nodes with lock settings (listed even while
        // free), merged in instance order as the page goes: a page reads only as far as it
        // lists.
        let held = self
            .locks
            .range(range)
            .filter(|(_, t)| !t.holders.is_empty() || !t.waiters.is_empty())
            .map(|(&ino, _)| ino);
        let semaphores = self.semaphores.range(range).map(|(&ino, _)| ino);
        let on_loss = self.on_loss.range(range).map(|(&ino, _)| ino);
        let listed = merged(merged(held, semaphores), on_loss);
        let mut rest = listed
            .map(|ino| (ino, self.locks.get(&ino).unwrap_or(&empty)))
            .peekable();
        let mut infos = Vec::new();
        while let Some((_, t)) = rest.peek() {
            let weight = 1 + t.holders.len() + t.waiters.len();
            if !infos.is_empty() && used + weight > budget {
                break;
            }
            used += weight;
            let (ino, t) = rest.next().expect("peeked");
            infos.push(LockInfo {
                instance: ino,
                path: self.path_of(ino),
                lock_generation: self.nodes[&ino].lock_generation,
                holders: t
                    .holders
                    .iter()
                    .map(|h| h.to_holder(host(h.session)))
                    .collect(),
                waiters: t
                    .waiters
                    .iter()
                    .map(|w| w.to_waiter(host(w.lock.session)))
                    .collect(),
                delay_until_ns: t.delay_until_ns,
                max_holders: self.slots(ino),
                on_loss: self.on_loss_of(ino),
            });
        }
        let next = match (rest.next(), infos.last()) {
            (Some(_), Some(last)) => Some(last.instance),
            _ => None,
        };
        (infos, next)
    }

    /// The absolute path of a live node, found by walking its parents.
    pub(super) fn path_of(&self, ino: u64) -> String {
        if let Some(orphan) = self.orphans.get(&ino) {
            return orphan.path.clone();
        }
        let mut names = Vec::new();
        let mut at = ino;
        while at != ROOT {
            let node = &self.nodes[&at];
            names.push(node.name.as_str());
            at = node.parent;
        }
        if names.is_empty() {
            return "/".into();
        }
        names.iter().rev().map(|n| format!("/{n}")).collect()
    }

    /// When the leader should propose `Wake`: the earliest pending lock-delay end of a node
    /// with waiters, or the earliest time an orphan may go (`orphan.rs`). Always in the future
    /// of [`StateMachine::clock_ns`]: what came due was handled by the command that moved the
    /// clock past it.
    pub fn next_wake_ns(&self) -> Option<u64> {
        let delay = self
            .delays
            .iter()
            .find(|(_, ino)| !self.locks[ino].waiters.is_empty())
            .map(|&(until, _)| until);
        match (delay, self.next_orphan_ns()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ---- Helpers for every command that changes locks.

    /// Stores a changed lock table of live node `ino`: ends its lock-delay if its time has come,
    /// grants what can be granted (events, generation, granted-wait memory), and keeps the
    /// table only while it holds anything.
    pub(super) fn settle(&mut self, ino: u64, mut table: LockTable, now: u64) {
        if table.delay_until_ns != 0 && table.delay_until_ns <= now {
            table.delay_until_ns = 0;
        }
        let mut generation = self.nodes[&ino].lock_generation;
        let grants = table.scan(now, self.slots(ino), &mut generation);
        if generation != self.nodes[&ino].lock_generation {
            self.node_mut(ino).lock_generation = generation;
        }
        for grant in grants {
            let l = &grant.lock;
            self.forget_grants(l.session, l.owner, l.style, ino);
            let memory = &mut self.session_mut(l.session).granted;
            memory.insert(
                grant.wait,
                GrantedWait {
                    instance: ino,
                    owner: l.owner,
                    style: l.style,
                    start: l.start,
                    end: l.end,
                },
            );
            while memory.len() > MAX_GRANTED_MEMORY {
                memory.pop_first();
            }
            self.events.push(Event::Granted {
                session: l.session,
                wait: grant.wait,
                instance: ino,
                generation: grant.generation,
                on_loss: self.on_loss_of(ino),
            });
        }
        self.store_table(ino, table);
    }

    /// Puts (or, when empty, removes) node `ino`'s lock table, keeping the delay index and the
    /// count of waiters.
    fn store_table(&mut self, ino: u64, table: LockTable) {
        let old = if table.is_empty() {
            self.locks.remove(&ino)
        } else {
            self.locks.insert(ino, table.clone())
        };
        if old.as_ref() == Some(&table) {
            return;
        }
        self.lock_events(
            ino,
            old.as_ref().map_or(&[], |t| &t.holders),
            &table.holders,
        );
        let old_waiters = old.as_ref().map_or(0, |t| t.waiters.len() as u64);
        self.usage.waiters = self.usage.waiters - old_waiters + table.waiters.len() as u64;
        self.dirty_locks.insert(ino);
        if let Some(old) = old.filter(|t| t.delay_until_ns != 0) {
            self.delays.remove(&(old.delay_until_ns, ino));
        }
        if table.delay_until_ns != 0 {
            self.delays.insert((table.delay_until_ns, ino));
        }
    }

    /// Reports the locks of node `ino` that went (first) and came between `old` and `new`
    /// holders. A lock whose kind or range changed is reported as both.
    fn lock_events(&mut self, ino: u64, old: &[Held], new: &[Held]) {
        let key = |h: &Held| (h.session, h.owner, h.style, h.kind, h.start, h.end);
        let generation = self.nodes[&ino].lock_generation;
        let holders = u32::try_from(new.len()).unwrap_or(u32::MAX);
        let gone = old.iter().filter(|h| !new.iter().any(|n| key(n) == key(h)));
        let came = new.iter().filter(|h| !old.iter().any(|o| key(o) == key(h)));
        let changes: Vec<NodeChange> = gone
            .map(|h| NodeChange::Unlocked {
                holder: h.to_holder(self.host_of(h.session)),
                generation,
                holders,
            })
            .chain(came.map(|h| NodeChange::Locked {
                holder: h.to_holder(self.host_of(h.session)),
                generation,
                holders,
            }))
            .collect();
        for change in changes {
            self.node_event(ino, change);
        }
    }

    /// The host of a session, or "" once it is gone.
    fn host_of(&self, session: u64) -> &str {
        self.sessions.get(&session).map_or("", |s| s.host.as_str())
    }

    /// Forgets the granted waits of an owner on a node: its locks there changed since.
    fn forget_grants(&mut self, session: u64, owner: u64, style: LockStyle, ino: u64) {
        let Some(s) = self.sessions.get(&session) else {
            return;
        };
        let stale = |g: &GrantedWait| g.instance == ino && g.owner == owner && g.style == style;
        if s.granted.values().any(stale) {
            self.session_mut(session).granted.retain(|_, g| !stale(g));
        }
    }

    /// Node `ino` is being deleted: its locks go and its waiters fail with NotFound.
    pub(super) fn drop_locks(&mut self, ino: u64) {
        self.drop_semaphore(ino);
        self.drop_on_loss(ino);
        let Some(table) = self.locks.get(&ino) else {
            return;
        };
        for w in table.waiters.clone() {
            self.events.push(Event::WaitFailed {
                session: w.lock.session,
                wait: w.wait,
                error: StateError::NotFound,
            });
        }
        self.store_table(ino, LockTable::default());
    }

    /// Ends every lock-delay whose time has come and grants its waiters.
    pub(super) fn end_delays(&mut self, now: u64) {
        while let Some(&(until, ino)) = self.delays.first() {
            if until > now {
                break;
            }
            let table = self.locks[&ino].clone();
            self.settle(ino, table, now);
        }
    }
}

/// The union of two ascending sequences, ascending and without repeats.
fn merged(a: impl Iterator<Item = u64>, b: impl Iterator<Item = u64>) -> impl Iterator<Item = u64> {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some(&x), Some(&y)) if x == y => {
            b.next();
            a.next()
        }
        (Some(&x), Some(&y)) if y < x => b.next(),
        (Some(_), _) => a.next(),
        (None, _) => b.next(),
    })
}
