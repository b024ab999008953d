//! The leader's session timers: when each live session was last heard from, and which
//! sessions' expiry this leader has proposed. Never replicated: a new leader starts every
//! session's timer afresh, so a failover never expires a healthy session (DESIGN.md,
//! Sessions).
//!
//! The timers belong to one term of leadership, and every use names the term it is made in:
//! timers left from an earlier term are dropped at the first use in a new one. A node can be
//! leader in raft's eyes before it has seen the Ready that reports it, and it may have led
//! before: a keep-alive answered in between from the tables of the old leadership was once
//! told "expired" (the old leadership, paused past the TTL, had proposed the expiry, and the
//! proposal was dropped when it stepped down), ending a healthy session. For the same reason a
//! keep-alive of a session whose expiry is proposed is refused without the word "expired": a
//! leader resumed from a pause proposes expiries before it hears of its successor, and those
//! may never commit. They may commit later, too: an expiry left uncommitted in a log commits
//! if that log's node leads again, so a new leadership starts with the expiries already in
//! its log as proposed (`Node::expiries_in_log`), and renews nothing before an entry of its
//! term has committed (`Node::keep_alive`). Pure: time is passed in, so it is tested without
//! a cluster.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct SessionTimers {
    /// The term of leadership the tables below belong to (0: none yet).
    term: u64,
    heard: HashMap<u64, (Instant, Duration)>,
    /// Sessions whose expiry this leadership proposed and has not yet seen applied.
    expiring: HashSet<u64>,
}

/// The answer to a keep-alive.
#[derive(Debug, PartialEq, Eq)]
pub enum Renewal {
    Renewed,
    /// This leader already proposed the session's expiry: no renewal (the client must not
    /// believe in a lease the commit is about to end), though the session is not over until
    /// the expiry commits.
    Expiring,
}

impl SessionTimers {
    /// Starts afresh if `term` is a new term of leadership; says whether it did.
    pub fn lead(&mut self, term: u64) -> bool {
        if self.term == term {
            return false;
        }
        self.term = term;
        self.heard.clear();
        self.expiring.clear();
        true
    }

    /// A keep-alive of a live session (with its TTL) in leadership `term`.
    pub fn keep_alive(&mut self, term: u64, session: u64, ttl: Duration, now: Instant) -> Renewal {
        self.lead(term);
        if self.expiring.contains(&session) {
            return Renewal::Expiring;
        }
        self.heard.insert(session, (now, ttl));
        Renewal::Renewed
    }

    /// How long session `session` has left before this leadership would expire it, if it
    /// has heard from it (for monitoring: a keep-alive late in its TTL is jeopardy).
    pub fn left(&self, session: u64, now: Instant) -> Option<Duration> {
        let (last, ttl) = self.heard.get(&session)?;
        Some((*last + *ttl).saturating_duration_since(now))
    }

    /// Any request of a session shows its client is alive.
    pub fn touch(&mut self, term: u64, session: u64, now: Instant) {
        self.lead(term);
        if let Some((last, _)) = self.heard.get_mut(&session) {
            *last = now;
        }
    }

    /// Every tick of leadership `term`, with the live sessions and their TTLs: the sessions
    /// to expire now, not heard from within their TTL and not already being expired. A
    /// session this leadership has not heard from yet gets a full TTL from `now`.
    #[cfg(test)]
    pub fn overdue(&mut self, term: u64, live: &HashMap<u64, Duration>, now: Instant) -> Vec<u64> {
        self.sync(term, live, now);
        self.due(term, now)
    }

    /// Makes the timers follow the live sessions and their TTLs, which change only when
    /// commands are applied: ended sessions are forgotten, and a session this leadership has
    /// not heard from yet gets a full TTL from `now`. [`SessionTimers::overdue`] is `sync`
    /// then `due`; a caller that knows the sessions did not change calls `due` alone.
    pub fn sync(&mut self, term: u64, live: &HashMap<u64, Duration>, now: Instant) {
        self.lead(term);
        self.heard.retain(|id, _| live.contains_key(id));
        self.expiring.retain(|id| live.contains_key(id));
        for (id, ttl) in live {
            self.heard.entry(*id).or_insert((now, *ttl));
        }
    }

    /// The sessions known from the last `sync` that are due to expire at `now`.
    pub fn due(&mut self, term: u64, now: Instant) -> Vec<u64> {
        self.lead(term);
        let mut overdue: Vec<u64> = self
            .heard
            .iter()
            .filter(|(id, (last, ttl))| {
                now.duration_since(*last) > *ttl && !self.expiring.contains(id)
            })
            .map(|(id, _)| *id)
            .collect();
        overdue.sort_unstable();
        overdue
    }

    /// The expiry of `session` was appended to the log in this leadership.
    pub fn expiry_proposed(&mut self, session: u64) {
        self.expiring.insert(session);
    }

    /// When the lease of `session` ends as this leadership (`term`) knows it: a TTL after it
    /// was last heard from (or after this leadership began). `None` if unknown.
    pub fn lease_end(&self, term: u64, session: u64) -> Option<std::time::Instant> {
        if self.term != term {
            return None;
        }
        self.heard.get(&session).map(|(last, ttl)| *last + *ttl)
    }

    /// The session ended (applied): forget it.
    pub fn ended(&mut self, session: u64) {
        self.heard.remove(&session);
        self.expiring.remove(&session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(5);

    fn live(ids: &[u64]) -> HashMap<u64, Duration> {
        ids.iter().map(|id| (*id, TTL)).collect()
    }

    /// Between changes of the sessions, `due` alone tells the same as `overdue`; an ended
    /// session is gone from it at once, and a new leadership knows nothing until it syncs.
    #[test]
    fn due_between_syncs_follows_the_last_sync() {
        let t0 = Instant::now();
        let mut t = SessionTimers::default();
        t.sync(1, &live(&[1, 2]), t0);
        assert!(t.due(1, t0 + TTL).is_empty());
        t.touch(1, 2, t0 + TTL);
        let late = t0 + TTL + Duration::from_millis(1);
        assert_eq!(t.due(1, late), vec![1]);
        t.ended(1);
        assert!(t.due(1, late).is_empty());
        assert!(
            t.due(2, t0 + TTL * 10).is_empty(),
            "a new term starts afresh"
        );
        t.sync(2, &live(&[2]), t0 + TTL * 10);
        assert_eq!(t.due(2, t0 + TTL * 11 + Duration::from_millis(1)), vec![2]);
    }

    #[test]
    fn a_session_expires_only_after_its_ttl_without_word() {
        let t0 = Instant::now();
        let mut t = SessionTimers::default();
        assert!(t.overdue(1, &live(&[7]), t0).is_empty());
        assert_eq!(t.keep_alive(1, 7, TTL, t0 + TTL), Renewal::Renewed);
        assert!(t
            .overdue(1, &live(&[7]), t0 + TTL * 2 - Duration::from_millis(1))
            .is_empty());
        t.touch(1, 7, t0 + TTL * 2);
        assert!(t.overdue(1, &live(&[7]), t0 + TTL * 3).is_empty());
        let late = t0 + TTL * 3 + Duration::from_millis(1);
        assert_eq!(t.overdue(1, &live(&[7]), late), vec![7]);
        // Proposed: not proposed again, and a late keep-alive does not renew it.
        t.expiry_proposed(7);
        assert!(t.overdue(1, &live(&[7]), late).is_empty());
        assert_eq!(t.keep_alive(1, 7, TTL, late), Renewal::Expiring);
        // Applied: gone.
        t.ended(7);
        assert!(t.overdue(1, &live(&[]), late).is_empty());
    }

    /// A leader paused past the TTL proposes expiries, is deposed (the proposals are dropped),
    /// and is elected again later. In its new term the sessions are healthy and get a full
    /// TTL, whatever the old tables said, and even if a keep-alive comes before anything else
    /// of the new term.
    #[test]
    fn a_new_leadership_forgets_the_timers_and_expiries_of_an_old_one() {
        let t0 = Instant::now();
        let mut t = SessionTimers::default();
        t.keep_alive(3, 1, TTL, t0);
        t.keep_alive(3, 2, TTL, t0);
        // Paused for 12 s: on resuming, still leader of term 3 in its own eyes.
        let resumed = t0 + Duration::from_secs(12);
        assert_eq!(t.overdue(3, &live(&[1, 2]), resumed), vec![1, 2]);
        t.expiry_proposed(1);
        t.expiry_proposed(2);
        // Elected again in term 6, 26 s later: the first word is a keep-alive of session 1.
        let again = resumed + Duration::from_secs(26);
        assert_eq!(t.keep_alive(6, 1, TTL, again), Renewal::Renewed);
        // Or the first tick: session 2 gets a full TTL from now.
        assert!(t.overdue(6, &live(&[1, 2]), again).is_empty());
        assert!(t.overdue(6, &live(&[1, 2]), again + TTL).is_empty());
        let late = again + TTL + Duration::from_millis(1);
        assert_eq!(t.overdue(6, &live(&[1, 2]), late), vec![1, 2]);
        // A stale touch from the old term's timers cannot count either: a new term starts
        // afresh even on a touch.
        let mut t = SessionTimers::default();
        t.keep_alive(3, 1, TTL, t0);
        t.touch(4, 1, t0 + Duration::from_secs(100));
        assert!(t
            .overdue(4, &live(&[1]), t0 + Duration::from_secs(100))
            .is_empty());
    }
}
