//! The leader's side of the mounts' consistent caches, as Chubby's master kept its clients'
//! caches: a write is acknowledged only once every cache that may hold what it changed has
//! dropped it, or can no longer serve it.
//!
//! A caching session (opened with `cache`) registers its cache with the leader: a recursive
//! watch of its root (see `events.rs`). From then on the leader pushes it the events of every
//! change under that root, and the session acknowledges them (CacheAck) once it dropped what
//! they name from its cache. The answer to a write that changed something (lock changes aside:
//! caches do not hold lock state) is held ([`CacheWaits::hold`]) until every caching session,
//! the writer's own included (so a mount's own cache has dropped what it wrote before the
//! write returns):
//! - acknowledged the write's index, if it is registered here and watches what changed; or
//! - lost its lease, if it is not registered here (a mount that reconnects registers anew,
//!   with an empty cache); a caching client never serves from its cache past its lease; or
//! - ended.
//!
//! A cache registered with `early` is also told of a write of a file's contents when the leader
//! proposes it, before it commits (a PENDING notice, as Chubby's master invalidated before it
//! wrote): the cache drops what it holds of the file, keeps nothing of it until it hears an
//! event at or past the notice's index, and acknowledges at once. Its acknowledgement then
//! stands for the write's own when the write applies, if the entry applied at that index is
//! the very proposal it was told of and changed that file alone ([`CacheWaits::hold`] takes
//! the registrations told). So the acknowledgements travel while the write commits, instead
//! of after. A registration is told only through the connection it registered on, and its
//! acknowledgement counts only for that registration: one that registered anew was not told.
//!
//! A refused write changed nothing, but its answer tells what the tree held at its index, as a
//! read there would: it waits behind every write held at or below that index
//! ([`CacheWaits::hold_behind`]).
//!
//! A session that neither acknowledges nor loses its lease would hold writes forever: the
//! leader stops renewing the lease of a session that is [`CacheWaits::overdue`], so its lease
//! runs out (and its client drops its cache) within its TTL. Every held write also has a
//! deadline, the longest TTL it waits on plus a margin for a lease that a former leader
//! renewed: past it no waited-on lease can still be running, wherever it was renewed. So a
//! node that stops being leader while holding answers still gives them in time.
//!
//! Pure: time and the registrations are passed in, so every rule is tested without a cluster.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use super::authz::within;
use super::events::Key;

/// The longest TTL of a caching session: a cache that stops answering holds writes for up to
/// its TTL (and a margin), so a host cannot make that long.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(60);

/// How long a session may leave a held write unacknowledged before its lease stops being
/// renewed. A mount acknowledges within a round trip; this is for a stuck one.
pub const ACK_GRACE: Duration = Duration::from_secs(2);

/// A session's cache registration on this node: the path its watch covers and the highest
/// index it acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub path: String,
    pub acked: u64,
    /// The registration's watch.
    pub key: Key,
    /// The highest index of a PENDING notice it acknowledged.
    pub early_acked: u64,
}

struct Held<R> {
    index: u64,
    paths: Vec<String>,
    since: Instant,
    deadline: Instant,
    /// The sessions still waited on.
    waiting: BTreeSet<u64>,
    /// The registrations told of the write before it committed: (session, registration).
    told: Vec<(u64, Key)>,
    replies: Vec<R>,
}

/// What decides whether a session is still waited on, at one moment.
pub struct View<'a> {
    /// The live caching sessions and their TTLs.
    pub caching: &'a [(u64, Duration)],
    /// A session's registration here, if it has one.
    pub registration: &'a dyn Fn(u64) -> Option<Registration>,
    /// Whether a session's lease has certainly lapsed, as this node knows it.
    pub lapsed: &'a dyn Fn(u64) -> bool,
    pub now: Instant,
}

impl View<'_> {
    /// Whether the answer to a write at `index` that changed `paths`, of which the
    /// registrations `told` were told before it committed, waits for `session`.
    fn waits_for(&self, session: u64, index: u64, paths: &[String], told: &[(u64, Key)]) -> bool {
        match (self.registration)(session) {
            // A cache watches everything below its root.
            Some(r) => {
                let early = r.early_acked >= index && told.contains(&(session, r.key));
                r.acked < index && !early && paths.iter().any(|p| within(p, &r.path))
            }
            None => !(self.lapsed)(session),
        }
    }
}

/// Answers held for caches, in index order. `R` is whatever gives an answer.
pub struct CacheWaits<R> {
    held: VecDeque<Held<R>>,
    /// Answers that show the state at their index without changing anything a cache holds
    /// (a refused write's: [`CacheWaits::hold_behind`]), in index order.
    behind: VecDeque<(u64, R)>,
    /// Added to the longest TTL a write waits on (see the module docs).
    margin: Duration,
}

impl<R> CacheWaits<R> {
    pub fn new(margin: Duration) -> Self {
        CacheWaits {
            held: VecDeque::new(),
            behind: VecDeque::new(),
            margin,
        }
    }

    /// The answers of a write applied at `index` that changed `paths`: given back at once if
    /// no cache needs to drop anything first, held otherwise. `told`: the registrations told
    /// of this very write, and of nothing else it changed, before it committed (see the module
    /// docs); their acknowledgements of that notice count as of the write.
    pub fn hold(
        &mut self,
        index: u64,
        paths: Vec<String>,
        told: Vec<(u64, Key)>,
        view: &View<'_>,
        replies: Vec<R>,
    ) -> Vec<R> {
        let waited: Vec<(u64, Duration)> = view
            .caching
            .iter()
            .filter(|(s, _)| view.waits_for(*s, index, &paths, &told))
            .copied()
            .collect();
        if waited.is_empty() {
            return replies;
        }
        let longest = waited.iter().map(|(_, ttl)| *ttl).max().unwrap_or_default();
        self.held.push_back(Held {
            index,
            paths,
            since: view.now,
            deadline: view.now + longest + self.margin,
            waiting: waited.into_iter().map(|(s, _)| s).collect(),
            told,
            replies,
        });
        Vec::new()
    }

    /// The answer to a write applied at `index` that changed nothing a cache holds but
    /// shows the state there (a refusal: "File exists" says a name is taken): given back at
    /// once if no write at or below `index` is held, held until none is otherwise. So a
    /// client told a name is taken finds it in its cache too, as a read at `index` would.
    pub fn hold_behind(&mut self, index: u64, reply: R) -> Option<R> {
        if self.holds_through(index) {
            self.behind.push_back((index, reply));
            None
        } else {
            Some(reply)
        }
    }

    /// The answers no cache holds up anymore.
    pub fn release(&mut self, view: &View<'_>) -> Vec<R> {
        let live: BTreeSet<u64> = view.caching.iter().map(|(s, _)| *s).collect();
        let mut out = Vec::new();
        self.held.retain_mut(|h| {
            h.waiting
                .retain(|s| live.contains(s) && view.waits_for(*s, h.index, &h.paths, &h.told));
            if h.waiting.is_empty() || view.now >= h.deadline {
                out.append(&mut h.replies);
                false
            } else {
                true
            }
        });
        let lowest_held = self.held.iter().map(|h| h.index).min().unwrap_or(u64::MAX);
        while self.behind.front().is_some_and(|(i, _)| *i < lowest_held) {
            out.extend(self.behind.pop_front().map(|(_, r)| r));
        }
        out
    }

    /// Whether `session` has kept a write waiting longer than [`ACK_GRACE`]: its lease is
    /// not renewed until it catches up.
    pub fn overdue(&self, session: u64, now: Instant) -> bool {
        self.held
            .iter()
            .any(|h| h.waiting.contains(&session) && now.duration_since(h.since) > ACK_GRACE)
    }

    /// Every held answer, for a node that stops.
    pub fn drain(&mut self) -> Vec<R> {
        let mut out: Vec<R> = self.held.drain(..).flat_map(|h| h.replies).collect();
        out.extend(self.behind.drain(..).map(|(_, r)| r));
        out
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty() && self.behind.is_empty()
    }

    /// Whether a write at or below `index` is still held: some cache may still serve what it
    /// changed, so a read at `index` must not show the change yet.
    pub fn holds_through(&self, index: u64) -> bool {
        self.held.iter().any(|h| h.index <= index)
    }

    /// Whether a write at or below `index` that changed something [`related`] to `path` is
    /// still held: a read of `path` answered from the state at `index` must wait.
    pub fn holds(&self, index: u64, path: &str) -> bool {
        self.held
            .iter()
            .any(|h| h.index <= index && h.paths.iter().any(|p| related(p, path)))
    }
}

/// Whether a change at `changed` can alter what a read of `read` answers: one is the other
/// or inside it (a listing shows its entries; a path resolves through its directories).
pub fn related(changed: &str, read: &str) -> bool {
    within(changed, read) || within(read, changed)
}

/// What a follower remembers of the latest changes caches may hold: (index, paths), the
/// newest [`RecentChanges::MAX`] of them. The leader holds such a change until the caches
/// dropped it, but a follower applies it at once; a read there whose ReadIndex came before
/// the change must not be answered from a state that shows it (it asks again instead).
#[derive(Default)]
pub struct RecentChanges {
    changes: VecDeque<(u64, Vec<String>)>,
    /// Changes at or below this index may have been forgotten.
    forgotten_through: u64,
}

impl RecentChanges {
    pub const MAX: usize = 4096;

    /// Nothing at or below `index` is known: a replica that starts, or installs a snapshot.
    pub fn forget_through(&mut self, index: u64) {
        self.changes.retain(|(i, _)| *i > index);
        self.forgotten_through = self.forgotten_through.max(index);
    }

    /// The change applied at `index` changed `paths`.
    pub fn record(&mut self, index: u64, paths: Vec<String>) {
        if self.changes.len() == Self::MAX {
            if let Some((i, _)) = self.changes.pop_front() {
                self.forgotten_through = i;
            }
        }
        self.changes.push_back((index, paths));
    }

    /// Whether something related to `path` may have changed after `after`, through
    /// `through`: certainly if such a change is remembered, and also if what came after
    /// `after` is partly forgotten.
    pub fn changed(&self, after: u64, through: u64, path: &str) -> bool {
        if after >= through {
            return false;
        }
        if after < self.forgotten_through {
            return true;
        }
        self.changes
            .iter()
            .rev()
            .take_while(|(i, _)| *i > after)
            .any(|(i, ps)| *i <= through && ps.iter().any(|p| related(p, path)))
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use super::*;

    const TTL: Duration = Duration::from_secs(10);
    const MARGIN: Duration = Duration::from_secs(1);

    struct World {
        caching: Vec<(u64, Duration)>,
        regs: RefCell<HashMap<u64, Registration>>,
        lapsed: RefCell<BTreeSet<u64>>,
    }

    impl World {
        fn new(sessions: &[u64]) -> World {
            World {
                caching: sessions.iter().map(|s| (*s, TTL)).collect(),
                regs: RefCell::default(),
                lapsed: RefCell::default(),
            }
        }

        fn register(&self, s: u64, path: &str, acked: u64) {
            self.register_told(s, path, acked, (s, 1), 0);
        }

        /// Registered through watch `key`, with PENDING notices acknowledged up to `early`.
        fn register_told(&self, s: u64, path: &str, acked: u64, key: Key, early: u64) {
            let reg = Registration {
                path: path.into(),
                acked,
                key,
                early_acked: early,
            };
            self.regs.borrow_mut().insert(s, reg);
        }

        fn with<T>(&self, now: Instant, f: impl FnOnce(&View<'_>) -> T) -> T {
            let registration = |s: u64| self.regs.borrow().get(&s).cloned();
            let lapsed = |s: u64| self.lapsed.borrow().contains(&s);
            f(&View {
                caching: &self.caching,
                registration: &registration,
                lapsed: &lapsed,
                now,
            })
        }
    }

    fn paths(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_write_waits_for_every_registered_cache_that_watches_it() {
        let t0 = Instant::now();
        let w = World::new(&[1, 2, 3, 4]);
        w.register(1, "/", 5);
        w.register(2, "/", 5);
        w.register(3, "/other", 5);
        w.register(4, "/", 9); // already acknowledged past the write
        let mut waits = CacheWaits::new(MARGIN);
        let now = w.with(t0, |v| {
            waits.hold(7, paths(&["/a/f"]), vec![], v, vec!["w7"])
        });
        assert!(now.is_empty(), "held for sessions 1 and 2");
        assert!(w.with(t0, |v| waits.release(v)).is_empty());
        w.register(2, "/", 7);
        w.register(1, "/", 6);
        assert!(w.with(t0, |v| waits.release(v)).is_empty(), "6 < 7");
        w.register(1, "/", 7);
        assert_eq!(w.with(t0, |v| waits.release(v)), vec!["w7"]);
        assert!(waits.is_empty());
    }

    #[test]
    fn a_notice_acknowledged_before_the_write_applied_stands_for_the_write_only_where_it_was_told()
    {
        let t0 = Instant::now();
        let w = World::new(&[1, 2, 3]);
        // 1 was told of the write at 7 and acknowledged it; 2 acknowledged a notice at 8 but
        // was not told of 7; 3 was told through a registration it has since replaced.
        w.register_told(1, "/", 5, (1, 1), 7);
        w.register_told(2, "/", 5, (2, 1), 8);
        w.register_told(3, "/", 5, (3, 2), 9);
        let told = vec![(1, (1, 1)), (3, (3, 1))];
        let mut waits = CacheWaits::new(MARGIN);
        assert!(w
            .with(t0, |v| waits.hold(7, paths(&["/f"]), told, v, vec!["w7"]))
            .is_empty());
        // 2 and 3 must still acknowledge the write's own event.
        w.register_told(2, "/", 7, (2, 1), 8);
        assert!(w.with(t0, |v| waits.release(v)).is_empty());
        w.register_told(3, "/", 7, (3, 2), 9);
        assert_eq!(w.with(t0, |v| waits.release(v)), vec!["w7"]);
        // Told, but the notice not yet acknowledged: held until it is.
        w.register_told(1, "/", 7, (1, 1), 7);
        let told = vec![(1, (1, 1)), (2, (2, 1)), (3, (3, 2))];
        w.register_told(2, "/", 7, (2, 1), 10);
        w.register_told(3, "/", 7, (3, 2), 10);
        assert!(w
            .with(t0, |v| waits.hold(10, paths(&["/g"]), told, v, vec!["w10"]))
            .is_empty());
        w.register_told(1, "/", 7, (1, 1), 10);
        assert_eq!(w.with(t0, |v| waits.release(v)), vec!["w10"]);
        assert!(waits.is_empty());
    }

    #[test]
    fn an_unregistered_cache_is_waited_for_until_its_lease_lapses() {
        let t0 = Instant::now();
        let w = World::new(&[1]);
        let mut waits = CacheWaits::new(MARGIN);
        assert!(w
            .with(t0, |v| waits.hold(3, paths(&["/f"]), vec![], v, vec![3]))
            .is_empty());
        assert!(w.with(t0, |v| waits.release(v)).is_empty());
        w.lapsed.borrow_mut().insert(1);
        assert_eq!(w.with(t0, |v| waits.release(v)), vec![3]);
        // Lapsed already: nothing to wait for.
        assert_eq!(
            w.with(t0, |v| waits.hold(4, paths(&["/f"]), vec![], v, vec![4])),
            vec![4]
        );
    }

    #[test]
    fn reads_at_or_above_a_held_write_wait_and_a_barrier_without_answers_holds_too() {
        let t0 = Instant::now();
        let w = World::new(&[1]);
        w.register(1, "/", 2);
        let mut waits: CacheWaits<u32> = CacheWaits::new(MARGIN);
        w.with(t0, |v| waits.hold(5, paths(&["/f"]), vec![], v, vec![5]));
        assert!(!waits.holds_through(4));
        assert!(waits.holds_through(5) && waits.holds_through(9));
        // A new leader's barrier: no answers, held for every cache all the same.
        w.with(t0, |v| waits.hold(7, paths(&["/"]), vec![], v, Vec::new()));
        w.register(1, "/", 5);
        assert_eq!(w.with(t0, |v| waits.release(v)), vec![5]);
        assert!(!waits.holds_through(6) && waits.holds_through(7));
        w.register(1, "/", 7);
        assert!(w.with(t0, |v| waits.release(v)).is_empty());
        assert!(!waits.holds_through(u64::MAX));
    }

    #[test]
    fn a_read_waits_for_held_writes_related_to_its_path_at_the_state_it_shows() {
        let t0 = Instant::now();
        let w = World::new(&[1]);
        w.register(1, "/", 2);
        let mut waits: CacheWaits<u32> = CacheWaits::new(MARGIN);
        w.with(t0, |v| waits.hold(5, paths(&["/d/f"]), vec![], v, vec![5]));
        // A read shows the state at its index: below the write, nothing to wait for.
        assert!(!waits.holds(4, "/d/f"));
        // The file, its directory (a listing) and a path through it wait; others do not.
        assert!(waits.holds(5, "/d/f") && waits.holds(9, "/d") && waits.holds(9, "/"));
        assert!(waits.holds(9, "/d/f/x"));
        assert!(!waits.holds(9, "/d/g") && !waits.holds(9, "/d/ff") && !waits.holds(9, "/e"));
        // A barrier ("/") holds every read.
        w.with(t0, |v| waits.hold(7, paths(&["/"]), vec![], v, Vec::new()));
        assert!(waits.holds(7, "/e") && !waits.holds(6, "/e"));
    }

    #[test]
    fn a_refusal_waits_behind_every_held_write_at_or_below_its_index() {
        let t0 = Instant::now();
        let w = World::new(&[1, 2]);
        w.register(1, "/", 2);
        w.register(2, "/", 2);
        let mut waits: CacheWaits<&str> = CacheWaits::new(MARGIN);
        // Nothing held: a refusal is answered at once.
        assert_eq!(waits.hold_behind(3, "r3"), Some("r3"));
        w.with(t0, |v| waits.hold(5, paths(&["/a"]), vec![], v, vec!["w5"]));
        w.with(t0, |v| waits.hold(6, paths(&["/b"]), vec![], v, vec!["w6"]));
        // Below every held write: at once; at or above one: behind it.
        assert_eq!(waits.hold_behind(4, "r4"), Some("r4"));
        assert_eq!(waits.hold_behind(6, "r6"), None);
        assert_eq!(waits.hold_behind(7, "r7"), None);
        assert!(!waits.is_empty());
        // Released out of order: the refusals wait for the write at 5 as well.
        w.register(1, "/", 6);
        w.with(t0, |v| waits.hold(8, paths(&["/c"]), vec![], v, vec!["w8"]));
        w.register(2, "/", 6);
        assert_eq!(
            w.with(t0, |v| waits.release(v)),
            vec!["w5", "w6", "r6", "r7"]
        );
        w.register(1, "/", 8);
        w.register(2, "/", 8);
        assert_eq!(w.with(t0, |v| waits.release(v)), vec!["w8"]);
        assert!(waits.is_empty());
        assert_eq!(waits.hold_behind(9, "r9"), Some("r9"));
    }

    #[test]
    fn a_follower_knows_which_reads_a_later_change_may_have_altered() {
        let mut recent = RecentChanges::default();
        recent.forget_through(10);
        recent.record(12, paths(&["/a"]));
        recent.record(15, paths(&["/b/f", "/c"]));
        assert!(!recent.changed(12, 14, "/a"), "nothing after 12 through 14");
        assert!(recent.changed(11, 14, "/a"));
        assert!(recent.changed(12, 15, "/b") && recent.changed(12, 15, "/c/x"));
        assert!(!recent.changed(12, 15, "/a") && !recent.changed(15, 20, "/b/f"));
        // What came after 9 is partly forgotten: maybe changed.
        assert!(recent.changed(9, 11, "/zzz"));
        assert!(!recent.changed(20, 20, "/"));
        // Past its bound it forgets the oldest.
        for i in 0..RecentChanges::MAX as u64 {
            recent.record(100 + i, paths(&["/x"]));
        }
        assert!(recent.changed(14, 16, "/y"), "15 was forgotten");
        assert!(!recent.changed(15, 16, "/y"));
        assert!(!recent.changed(100, 101 + 4000, "/y"));
        // A snapshot installed: nothing before it is known.
        recent.forget_through(5000);
        assert!(recent.changed(4999, 5000, "/y"));
        assert!(!recent.changed(5000, 6000, "/"));
    }

    #[test]
    fn a_cache_that_registers_anew_no_longer_holds_older_writes() {
        let t0 = Instant::now();
        let w = World::new(&[1]);
        let mut waits = CacheWaits::new(MARGIN);
        w.with(t0, |v| waits.hold(3, paths(&["/f"]), vec![], v, vec![3]));
        // Reconnected and registered (with an empty cache) at index 8.
        w.register(1, "/", 8);
        assert_eq!(w.with(t0, |v| waits.release(v)), vec![3]);
    }

    #[test]
    fn ended_sessions_and_deadlines_release_and_stuck_sessions_are_overdue() {
        let t0 = Instant::now();
        let mut w = World::new(&[1, 2]);
        w.register(1, "/", 0);
        w.register(2, "/", 0);
        let mut waits = CacheWaits::new(MARGIN);
        w.with(t0, |v| waits.hold(1, paths(&["/f"]), vec![], v, vec![1]));
        assert!(!waits.overdue(1, t0 + ACK_GRACE));
        assert!(waits.overdue(1, t0 + ACK_GRACE + Duration::from_millis(1)));
        w.caching.retain(|(s, _)| *s != 2); // session 2 ended
        w.register(1, "/", 1);
        assert_eq!(w.with(t0, |v| waits.release(v)), vec![1]);
        // A write nobody acknowledges goes at its deadline: TTL plus the margin.
        w.with(t0, |v| waits.hold(2, paths(&["/f"]), vec![], v, vec![2]));
        assert!(w
            .with(t0 + TTL + MARGIN - Duration::from_millis(1), |v| waits
                .release(v))
            .is_empty());
        assert_eq!(w.with(t0 + TTL + MARGIN, |v| waits.release(v)), vec![2]);
    }
}
