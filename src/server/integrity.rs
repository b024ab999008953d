//! Replicas check that their states agree.
//!
//! Every `check_entries` applied entries the leader proposes a *check entry*. Each replica,
//! when it applies a check entry, takes the digest of its state right then: every replica does
//! so at the same point of the log, so every correct replica gets the same digest. The digest
//! ([`RecordDigest`]) is kept up to date with each batch of changed records, so a check costs
//! nothing in proportion to the size of the state. The next check entry
//! carries the proposer's digest at the previous one, and each replica compares its own digest
//! at that index with it. A replica whose digest differs has *diverged* from the leader: it
//! says so loudly, remembers it on disk (it keeps refusing after a restart, until it is
//! rebuilt), serves no reads, hands leadership away if it leads, and reports itself with a
//! *report entry*, so that every member (the leader included) logs it and `cluster status`
//! shows it.
//!
//! Check and report entries are told from client commands by their entry context; they never
//! change the state, so a replica that cannot decode one skips it like every other replica.
//! Bit flips on the disk are caught earlier, by the store's checksums (`crate::storage`).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::encoding::LogFormat;
use crate::state::Change;
#[cfg(test)]
use crate::state::StateMachine;
use crate::storage::Records;

/// Own digests kept, by the index of their check entry.
const KEEP: usize = 8;
/// A leader proposes a check at most this often, whatever it applies.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// The data of a check entry: the proposer's digest at the check entry `at`, when it has one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub at: u64,
    pub digest: Option<u128>,
}

/// The data of a report entry: `node` found its state diverged at the check entry `at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub node: u64,
    pub at: u64,
}

/// What one check entry showed this replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to compare (no digest of either side at that index), or equal digests.
    Agrees,
    /// This replica's digest at `at` differs from the proposer's: it diverged.
    Diverged { at: u64, own: u128, theirs: u128 },
}

/// One replica's record of checks. Deterministic but for when a leader proposes.
#[derive(Debug, Default)]
pub struct Integrity {
    own: BTreeMap<u64, u128>,
    /// Index of the last check entry applied.
    last_check: u64,
    proposed: Option<Instant>,
    /// Where this replica found itself diverged (kept on disk).
    pub diverged: Option<u64>,
    /// Members that reported themselves diverged, and where.
    pub reported: BTreeMap<u64, u64>,
}

impl Integrity {
    pub fn new(diverged: Option<u64>) -> Self {
        Integrity {
            diverged,
            ..Default::default()
        }
    }

    /// Leader: the data of a check entry to propose now, in `format`, if `every` entries were
    /// applied since the last check and none was proposed within a second.
    pub fn due(
        &mut self,
        applied: u64,
        every: u64,
        now: Instant,
        format: LogFormat,
    ) -> Option<Vec<u8>> {
        let recently = self
            .proposed
            .is_some_and(|t| now.duration_since(t) < MIN_INTERVAL);
        if recently || applied < self.last_check.saturating_add(every) {
            return None;
        }
        self.proposed = Some(now);
        Some(format.encode(&Check {
            at: self.last_check,
            digest: self.own.get(&self.last_check).copied(),
        }))
    }

    /// Applies the check entry at `index` with `data` in `format`; `digest` is this replica's
    /// digest now. An undecodable entry is skipped (every replica skips it alike).
    pub fn apply_check(
        &mut self,
        index: u64,
        format: LogFormat,
        data: &[u8],
        digest: u128,
    ) -> Result<Verdict, String> {
        let check: Check = format
            .decode(data)
            .map_err(|e| format!("undecodable check entry at {index}: {e}"))?;
        let verdict = match (check.digest, self.own.get(&check.at)) {
            (Some(theirs), Some(&own)) if theirs != own => Verdict::Diverged {
                at: check.at,
                own,
                theirs,
            },
            _ => Verdict::Agrees,
        };
        self.own.insert(index, digest);
        while self.own.len() > KEEP {
            self.own.pop_first();
        }
        self.last_check = index;
        self.proposed = None;
        if let Verdict::Diverged { at, .. } = verdict {
            self.diverged.get_or_insert(at);
        }
        Ok(verdict)
    }

    /// The data of the report entry, in `format`, that tells the others this replica diverged
    /// at `at`.
    pub fn report(node: u64, at: u64, format: LogFormat) -> Vec<u8> {
        format.encode(&Report { node, at })
    }

    /// Applies a report entry in `format`; returns it, or why it was skipped.
    pub fn apply_report(
        &mut self,
        index: u64,
        format: LogFormat,
        data: &[u8],
    ) -> Result<Report, String> {
        let report: Report = format
            .decode(data)
            .map_err(|e| format!("undecodable report entry at {index}: {e}"))?;
        self.reported.entry(report.node).or_insert(report.at);
        Ok(report)
    }

    /// The latest check this replica took part in: (index, own digest).
    pub fn latest(&self) -> Option<(u64, u128)> {
        self.own.last_key_value().map(|(i, d)| (*i, *d))
    }

    /// A snapshot replaced the state: digests taken before it compare with nothing.
    pub fn restored(&mut self, index: u64) {
        self.own.clear();
        self.last_check = self.last_check.max(index);
    }
}

/// The digest of a set of records: the wrapping sum of a SHA-256 (its first 128 bits) of each
/// record, key and value. Two replicas' digests are equal exactly when their records are (but
/// for a chance of 2^-128). A sum needs no order, so it follows changes one record at a time.
#[derive(Debug, Default)]
pub struct RecordDigest {
    /// Hash of each record, by hash of its key.
    hashes: HashMap<u128, u128>,
    sum: u128,
}

fn sha(parts: &[&[u8]]) -> u128 {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        ctx.update(&(part.len() as u64).to_le_bytes());
        ctx.update(part);
    }
    let hash = ctx.finish();
    u128::from_le_bytes(
        hash.as_ref()[..16]
            .try_into()
            .expect("SHA-256 has 32 bytes"),
    )
}

impl RecordDigest {
    /// The digest of `records` as stored (or received in a snapshot): the same as that of the
    /// state machine built from them, without encoding its records again.
    pub fn of_records(records: &Records) -> Self {
        let mut d = RecordDigest::default();
        for (key, value) in records {
            d.put(key, Some(value));
        }
        d
    }

    /// The digest of every record of `machine`, encoded afresh (to check the others).
    #[cfg(test)]
    pub fn of(machine: &StateMachine) -> Self {
        let mut d = RecordDigest::default();
        machine.for_each_record(|key, value| d.put(&key, Some(&value)));
        d
    }

    /// Follows a batch of changes (from `StateMachine::take_changes`).
    pub fn apply(&mut self, changes: &[Change]) {
        for (key, value) in changes {
            self.put(key, value.as_deref());
        }
    }

    fn put(&mut self, key: &[u8], value: Option<&[u8]>) {
        let k = sha(&[key]);
        if let Some(old) = self.hashes.remove(&k) {
            self.sum = self.sum.wrapping_sub(old);
        }
        if let Some(value) = value {
            let h = sha(&[key, value]);
            self.hashes.insert(k, h);
            self.sum = self.sum.wrapping_add(h);
        }
    }

    pub fn sum(&self) -> u128 {
        self.sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{cmd, ApplyCtx, Command, Target};

    fn put(path: &str, data: &[u8]) -> Command {
        Command::Put(cmd::Put {
            at: Target::Path(path.into()),
            data: data.to_vec(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            if_generation: None,
        })
    }

    #[test]
    fn the_digest_follows_changes_as_if_taken_afresh() {
        let mut sm = StateMachine::new();
        let mut d = RecordDigest::default();
        d.apply(&sm.take_changes());
        assert_eq!(d.sum(), RecordDigest::of(&sm).sum());
        let empty = d.sum();
        for (i, cmd) in [
            put("/a", b"1"),
            put("/b", b"2"),
            put("/a", b"3"),
            Command::Unlink(cmd::Unlink {
                at: Target::Path("/b".into()),
            }),
        ]
        .iter()
        .enumerate()
        {
            let ctx = ApplyCtx {
                index: i as u64 + 1,
                time_ns: i as u64 + 1,
                max_file_size: 1024,
                lock_delay_ns: 0,
                caller: None,
                quotas: None,
            };
            sm.apply_request(&ctx, None, cmd).unwrap();
            d.apply(&sm.take_changes());
            assert_eq!(d.sum(), RecordDigest::of(&sm).sum(), "after {cmd:?}");
        }
        assert_ne!(d.sum(), empty);
        let restored = StateMachine::restore(&sm.snapshot()).unwrap();
        assert_eq!(RecordDigest::of(&restored).sum(), d.sum());
        assert_eq!(RecordDigest::of_records(&sm.records()).sum(), d.sum());
    }

    fn check(at: u64, digest: Option<u128>) -> Vec<u8> {
        LogFormat::Two.encode(&Check { at, digest })
    }

    #[test]
    fn replicas_that_agree_stay_quiet_and_one_that_differs_is_diverged() {
        let (mut a, mut b) = (Integrity::new(None), Integrity::new(None));
        // The first check compares nothing; both record their digests at index 10.
        let first = a.due(10, 10, Instant::now(), LogFormat::Two).expect("due");
        assert_eq!(
            a.apply_check(11, LogFormat::Two, &first, 7),
            Ok(Verdict::Agrees)
        );
        assert_eq!(
            b.apply_check(11, LogFormat::Two, &first, 8),
            Ok(Verdict::Agrees)
        );
        assert_eq!(a.latest(), Some((11, 7)));
        // The next carries a's digest at 11: b differs.
        let next = a.due(21, 10, Instant::now(), LogFormat::Two).expect("due");
        assert_eq!(
            a.apply_check(22, LogFormat::Two, &next, 9),
            Ok(Verdict::Agrees)
        );
        assert_eq!(
            b.apply_check(22, LogFormat::Two, &next, 9),
            Ok(Verdict::Diverged {
                at: 11,
                own: 8,
                theirs: 7
            })
        );
        assert_eq!(b.diverged, Some(11));
        assert_eq!(a.diverged, None);
    }

    #[test]
    fn checks_are_proposed_only_when_due() {
        let mut i = Integrity::new(None);
        let now = Instant::now();
        assert!(
            i.due(5, 10, now, LogFormat::Two).is_none(),
            "not enough applied"
        );
        let data = i.due(10, 10, now, LogFormat::Two).expect("due");
        assert!(
            i.due(30, 10, now, LogFormat::Two).is_none(),
            "one proposal at a time"
        );
        i.apply_check(11, LogFormat::Two, &data, 1).unwrap();
        assert!(i.due(15, 10, now, LogFormat::Two).is_none());
        assert!(i.due(21, 10, now, LogFormat::Two).is_some());
    }

    #[test]
    fn a_replica_without_its_own_digest_compares_nothing() {
        let mut i = Integrity::new(None);
        assert_eq!(
            i.apply_check(50, LogFormat::Two, &check(40, Some(3)), 1),
            Ok(Verdict::Agrees)
        );
        i.restored(60);
        assert_eq!(
            i.apply_check(70, LogFormat::Two, &check(50, Some(3)), 1),
            Ok(Verdict::Agrees)
        );
        assert!(i.apply_check(80, LogFormat::Two, b"\xff", 1).is_err());
        assert_eq!(i.latest(), Some((70, 1)));
    }

    #[test]
    fn reports_are_kept_by_member() {
        let mut i = Integrity::new(Some(4));
        let r = i
            .apply_report(9, LogFormat::Two, &Integrity::report(2, 4, LogFormat::Two))
            .unwrap();
        assert_eq!(r, Report { node: 2, at: 4 });
        i.apply_report(12, LogFormat::Two, &Integrity::report(2, 8, LogFormat::Two))
            .unwrap();
        assert_eq!(i.reported, BTreeMap::from([(2, 4)]));
        assert!(i.apply_report(13, LogFormat::Two, b"").is_err());
    }
}
