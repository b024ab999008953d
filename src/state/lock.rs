//! The lock table of one node: who holds which byte ranges, who waits in which order, and until
//! when a lock-delay keeps anything from being granted. Pure data and range arithmetic; the
//! commands that drive it (and the events they emit) live in `locking.rs`.
//!
//! The rules, in one place:
//! - An owner is (session, owner). Two locks conflict iff they have the same style, different
//!   owners, overlapping `[start, end)` ranges, and at least one is exclusive. flock and POSIX
//!   locks never conflict with each other, as on Linux.
//! - An owner's POSIX locks on a node are disjoint ranges; a new lock replaces the owner's
//!   coverage of its range (splitting what it cuts) and merges with touching or overlapping
//!   ranges of the same kind, as fcntl does. A flock lock always covers the whole node, one per
//!   owner.
//! - FIFO: a request is blocked by a holder it conflicts with, or by an earlier queued waiter
//!   it conflicts with, so nobody overtakes a conflicting earlier request. One exception keeps
//!   POSIX upgrades from deadlocking: a waiter that is itself waiting on a lock of the
//!   requesting owner does not block that owner (granting the owner makes that waiter wait no
//!   longer than it already must; Linux, which has no queue at all, grants such upgrades too).
//! - While a lock-delay is pending nothing new is granted: only requests that the owner's own
//!   locks already cover (a repeat or a downgrade) go through.
//! - Holders are kept sorted by (style, session, owner, start), so the "first" conflicting
//!   holder is well defined and the same on every replica.
//! - A semaphore: a node that admits `slots` > 1 exclusive flock holders at once (its
//!   `user.lockfs.max_holders`, `semaphore.rs`) lets an exclusive flock request through
//!   while fewer than `slots` other owners hold it exclusively and none holds it shared. The
//!   queue stays FIFO: a queued exclusive request still blocks a later one.

use serde::{Deserialize, Serialize};

use super::{LockHolder, LockKind, LockStyle, LockWaiter};

/// A granted lock, or the lock a waiter asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Held {
    pub session: u64,
    pub owner: u64,
    /// The handle the lock was requested through: Close releases the flock locks of a handle.
    pub handle: u64,
    pub style: LockStyle,
    pub kind: LockKind,
    pub start: u64,
    /// Exclusive; `u64::MAX` is "to the end of the file".
    pub end: u64,
    pub pid: u32,
    /// When it was granted; for a waiter, when it was queued.
    pub since_ns: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Waiter {
    pub wait: u64,
    pub lock: Held,
}

/// A waiter granted by [`LockTable::scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Grant {
    pub wait: u64,
    pub lock: Held,
    pub generation: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct LockTable {
    pub holders: Vec<Held>,
    /// In queue order.
    pub waiters: Vec<Waiter>,
    /// Nothing new is granted while the clock is below this; 0 when no lock-delay is pending.
    pub delay_until_ns: u64,
}

impl Held {
    pub fn same_owner(&self, session: u64, owner: u64, style: LockStyle) -> bool {
        self.session == session && self.owner == owner && self.style == style
    }

    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start < end && start < self.end
    }

    pub fn conflicts(&self, other: &Held) -> bool {
        self.style == other.style
            && (self.session, self.owner) != (other.session, other.owner)
            && self.overlaps(other.start, other.end)
            && (self.kind == LockKind::Exclusive || other.kind == LockKind::Exclusive)
    }

    fn sort_key(&self) -> (LockStyle, u64, u64, u64) {
        (self.style, self.session, self.owner, self.start)
    }

    pub fn to_holder(&self, host: &str) -> LockHolder {
        LockHolder {
            session: self.session,
            owner: self.owner,
            style: self.style,
            kind: self.kind,
            start: self.start,
            end: self.end,
            pid: self.pid,
            host: host.to_owned(),
            since_ns: self.since_ns,
        }
    }
}

impl Waiter {
    pub fn to_waiter(&self, host: &str) -> LockWaiter {
        let l = &self.lock;
        LockWaiter {
            wait: self.wait,
            session: l.session,
            owner: l.owner,
            style: l.style,
            kind: l.kind,
            start: l.start,
            end: l.end,
            pid: l.pid,
            host: host.to_owned(),
            since_ns: l.since_ns,
        }
    }
}

/// The first of `holders` that `req` conflicts with, on a node that admits `slots` exclusive
/// flock holders at once: there, the other owners' exclusive flock locks conflict with an
/// exclusive flock request only once they fill every slot (the first of them is named), and a
/// shared one always does.
pub(super) fn conflict_among<'a>(holders: &'a [Held], req: &Held, slots: u32) -> Option<&'a Held> {
    let mut conflicts = holders.iter().filter(|h| h.conflicts(req));
    if slots <= 1 || req.style != LockStyle::Flock || req.kind != LockKind::Exclusive {
        return conflicts.next();
    }
    let mut first = None;
    let mut taken: u32 = 0;
    for h in conflicts {
        if h.kind == LockKind::Shared {
            return Some(h);
        }
        first.get_or_insert(h);
        taken += 1;
    }
    first.filter(|_| taken >= slots)
}

impl LockTable {
    /// Nothing held, nobody waiting, no delay pending: the table need not be stored.
    pub fn is_empty(&self) -> bool {
        self.holders.is_empty() && self.waiters.is_empty() && self.delay_until_ns == 0
    }

    pub fn delay_pending(&self, now: u64) -> bool {
        self.delay_until_ns > now
    }

    /// The first holder `req` conflicts with, on a node that admits `slots` exclusive flock
    /// holders at once.
    pub fn first_conflict(&self, req: &Held, slots: u32) -> Option<&Held> {
        conflict_among(&self.holders, req, slots)
    }

    /// `waiter` conflicts with a lock held by `req`'s owner: it waits on that owner already.
    fn waits_on(&self, waiter: &Held, req: &Held) -> bool {
        self.holders
            .iter()
            .any(|h| h.same_owner(req.session, req.owner, req.style) && h.conflicts(waiter))
    }

    /// Whether one of `queued` (earlier, still waiting) keeps `req` from overtaking it.
    pub fn blocked_by_queue(&self, queued: &[Waiter], req: &Held) -> bool {
        queued
            .iter()
            .any(|w| w.lock.conflicts(req) && !self.waits_on(&w.lock, req))
    }

    /// Whether the owner's own locks of `req`'s style cover all of `[start, end)` with kinds
    /// `accept` allows.
    pub fn covered(&self, req: &Held, accept: impl Fn(LockKind) -> bool) -> bool {
        let mut next = req.start;
        for h in self
            .holders
            .iter()
            .filter(|h| h.same_owner(req.session, req.owner, req.style))
        {
            if h.end <= next {
                continue;
            }
            if h.start > next || !accept(h.kind) {
                return false;
            }
            next = h.end;
            if next >= req.end {
                return true;
            }
        }
        next >= req.end
    }

    /// Whether a lock-delay keeps `req` from being granted: it is, unless the owner's own
    /// locks already cover it (a repeat or a downgrade acquires nothing new).
    pub fn delayed(&self, req: &Held, now: u64) -> bool {
        self.delay_pending(now)
            && !self.covered(req, |k| {
                req.kind == LockKind::Shared || k == LockKind::Exclusive
            })
    }

    /// Grants `lock` to its owner, replacing the owner's coverage of its range; returns whether
    /// the lock generation moves (an exclusive grant that is not a mere repeat).
    pub fn grant(&mut self, lock: Held) -> bool {
        if self.covered(&lock, |k| k == lock.kind) {
            return false;
        }
        let bumps = lock.kind == LockKind::Exclusive;
        let mut lock = lock;
        match lock.style {
            LockStyle::Flock => {
                self.holders
                    .retain(|h| !h.same_owner(lock.session, lock.owner, LockStyle::Flock));
            }
            LockStyle::Posix => {
                self.unlock(
                    lock.session,
                    lock.owner,
                    LockStyle::Posix,
                    lock.start,
                    lock.end,
                );
                // What is left of the owner's locks only touches the new range; merge the
                // neighbours of the same kind into it.
                let mut merged = Vec::new();
                self.holders.retain(|h| {
                    let touches = h.same_owner(lock.session, lock.owner, LockStyle::Posix)
                        && h.kind == lock.kind
                        && (h.end == lock.start || h.start == lock.end);
                    if touches {
                        merged.push(h.clone());
                    }
                    !touches
                });
                for h in merged {
                    lock.start = lock.start.min(h.start);
                    lock.end = lock.end.max(h.end);
                    lock.since_ns = lock.since_ns.min(h.since_ns);
                }
            }
        }
        let at = self
            .holders
            .partition_point(|h| h.sort_key() < lock.sort_key());
        self.holders.insert(at, lock);
        bumps
    }

    /// Removes the owner's coverage of `[start, end)` (flock: its lock); returns whether
    /// anything was held there.
    pub fn unlock(
        &mut self,
        session: u64,
        owner: u64,
        style: LockStyle,
        start: u64,
        end: u64,
    ) -> bool {
        let mut changed = false;
        let mut kept = Vec::with_capacity(self.holders.len() + 1);
        for h in std::mem::take(&mut self.holders) {
            if !h.same_owner(session, owner, style) || !h.overlaps(start, end) {
                kept.push(h);
                continue;
            }
            changed = true;
            if h.start < start {
                kept.push(Held {
                    end: start,
                    ..h.clone()
                });
            }
            if end < h.end {
                kept.push(Held { start: end, ..h });
            }
        }
        // Pieces keep their owner and stay in order: a left piece sorts where the old range
        // did, a right piece starts before the owner's next range.
        self.holders = kept;
        changed
    }

    /// The waiter scan: in queue order, grants every waiter that conflicts with no holder and
    /// with no earlier waiter that stays queued. Nothing is granted during a lock-delay.
    /// `generation` is the node's lock generation, bumped by each exclusive grant.
    pub fn scan(&mut self, now: u64, slots: u32, generation: &mut u64) -> Vec<Grant> {
        if self.delay_pending(now) || self.waiters.is_empty() {
            return Vec::new();
        }
        let mut grants = Vec::new();
        // A grant can free an earlier waiter (a flock conversion drops the owner's old lock,
        // a POSIX grant merges ranges), so pass over the queue until a pass grants nothing.
        loop {
            let before = grants.len();
            let mut queued: Vec<Waiter> = Vec::new();
            for waiter in std::mem::take(&mut self.waiters) {
                let free = self.first_conflict(&waiter.lock, slots).is_none()
                    && !self.blocked_by_queue(&queued, &waiter.lock);
                if !free {
                    queued.push(waiter);
                    continue;
                }
                let lock = Held {
                    since_ns: now,
                    ..waiter.lock
                };
                if self.grant(lock.clone()) {
                    *generation += 1;
                }
                grants.push(Grant {
                    wait: waiter.wait,
                    lock,
                    generation: *generation,
                });
            }
            self.waiters = queued;
            if grants.len() == before || self.waiters.is_empty() {
                return grants;
            }
        }
    }

    /// Removes every holder and waiter of `session`; returns (held any, waited any).
    pub fn drop_session(&mut self, session: u64) -> (bool, bool) {
        let (holders, waiters) = (self.holders.len(), self.waiters.len());
        self.holders.retain(|h| h.session != session);
        self.waiters.retain(|w| w.lock.session != session);
        (holders != self.holders.len(), waiters != self.waiters.len())
    }
}
