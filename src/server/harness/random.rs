//! Random schedules: from a seed, a run of writes, ticks, deliveries, crashes (a killed process,
//! or a power loss that also drops unsynced writes), restarts, partitions and elections on a
//! three-node cluster, checked after every step and at the end against what the fault suite
//! checks on real processes:
//! - at most one leader per term;
//! - replicas at the same applied index have the same state (digest), whenever they are seen;
//! - no acknowledged write is lost: once the cluster is whole again, every node has applied
//!   the same state, and a linearizable read of every acknowledged key finds its value;
//! - lock safety: two clients with sessions of their own take turns on one exclusive flock,
//!   and no client is granted it while another may still act under it (`lock_clients.rs`).
//!
//! Half the schedules are rolling upgrades: every node starts as a lockfs that reads log
//! format 1 only (`Cluster::set_reads`), and a restart may bring the newest instead. No node
//! may find the cluster switched to the newest format while a member reads only the older one,
//! and a node halts on an entry in a format it does not read, so the checks above fail if one
//! ever reaches it; at the end every node runs the newest, and the cluster must have switched.
//!
//! `LOCKFS_NODE_SEED=S` replays schedule S (its failure prints it; `LOCKFS_NODE_TRACE=1` prints
//! its every step and answer); `LOCKFS_NODE_SCHEDULES=N`
//! runs N schedules (default 100, the CI run, about 10 s in a debug build), each seeded from
//! the first.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};

use super::lock_clients::LockClients;
use super::{Cluster, Settings};
use crate::encoding::LogFormat;
use crate::state::Outcome;

/// Steps of one schedule.
const STEPS: usize = 600;
/// Ticks the cluster gets, whole again, to settle at the end.
const SETTLE_TICKS: usize = 100;

/// What a schedule has seen so far.
#[derive(Default)]
struct Seen {
    /// term -> the node that led in it.
    leaders: BTreeMap<u64, u64>,
    /// applied index -> (digest there, the node it was first seen on).
    states: BTreeMap<u64, (u128, u64)>,
    /// Acknowledged writes: key -> value.
    acked: BTreeMap<String, String>,
    locks: Option<LockClients>,
}

impl Seen {
    /// Checks every running node's view against what was seen before.
    fn check(&mut self, c: &Cluster, step: &str) {
        for id in c.running() {
            let status = c.status(id).expect("running");
            if status.leader_id == id {
                let leader = *self.leaders.entry(status.term).or_insert(id);
                assert_eq!(
                    leader, id,
                    "two leaders in term {} (n{leader} and n{id}), after {step}",
                    status.term
                );
            }
            let digest = c.digest(id).expect("running");
            let (first, on) = *self.states.entry(status.applied).or_insert((digest, id));
            assert_eq!(
                first, digest,
                "n{id} and n{on} differ at applied index {}, after {step}",
                status.applied
            );
        }
    }

    fn take_answers(&mut self, c: &mut Cluster, step: &str) {
        let now = c.now();
        for a in c.answers() {
            if trace() {
                println!(
                    "{:>8.3}s   n{}: {} -> {}",
                    now.as_secs_f64(),
                    a.node,
                    a.what,
                    super::show(&a)
                );
            }
            if LockClients::owns(&a.what) {
                let clients = self.locks.as_mut().expect("lock clients");
                if let Err(e) = clients.answered(&a, now) {
                    panic!("lock safety: {e}, after {step}");
                }
                continue;
            }
            if let (Ok(_), Some(kv)) = (&a.result, a.what.strip_prefix("put ")) {
                let (k, v) = kv.split_once(' ').expect("put KEY VALUE");
                self.acked.insert(k.to_string(), v.to_string());
            }
        }
    }
}

/// What one schedule did, for the totals the test prints.
#[derive(Default)]
struct Tally {
    terms: usize,
    acked: usize,
    grants: usize,
    crashes: usize,
    snapshots: usize,
    /// Rolling upgrades that ended with the cluster writing the newest log format.
    upgrades: usize,
}

/// Runs the schedule of `seed`; panics with what went wrong.
fn schedule(seed: u64) -> Tally {
    let mut rng = StdRng::seed_from_u64(seed);
    let settings = Settings {
        election_step: rng.gen_range(1..4),
        snapshot_entries: [5, 40, 10_000][rng.gen_range(0..3)],
        ..Settings::default()
    };
    let ids = [1, 2, 3];
    let upgrade = rng.gen_bool(0.5);
    let mut c = Cluster::start(&ids, settings, upgrade.then_some(LogFormat::One));
    let mut seen = Seen {
        locks: Some(LockClients::new(2)),
        ..Seen::default()
    };
    let mut next_key = 0u64;
    let mut tally = Tally::default();
    for n in 0..STEPS {
        let running = c.running();
        let down: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|i| !running.contains(i))
            .collect();
        let any = |rng: &mut StdRng, of: &[u64]| of[rng.gen_range(0..of.len())];
        let roll = rng.gen_range(0..100);
        let step = match roll {
            0 => {
                seen.locks
                    .as_mut()
                    .expect("lock clients")
                    .freeze(&mut rng, c.now());
                "a lock client freezes".into()
            }
            1..=19 if !running.is_empty() => {
                let id = to_leader(&c, &mut rng, &running);
                seen.locks
                    .as_mut()
                    .expect("lock clients")
                    .step(&mut c, &mut rng, id);
                format!("a lock client's step through n{id}")
            }
            20..=34 if !running.is_empty() => {
                let id = to_leader(&c, &mut rng, &running);
                next_key += 1;
                c.put(id, &format!("/k{next_key}"), &format!("v{next_key}"));
                format!("put through n{id}")
            }
            35..=64 => {
                for &id in &running {
                    c.tick(id);
                }
                if !running.is_empty() {
                    let id = to_leader(&c, &mut rng, &running);
                    seen.locks
                        .as_mut()
                        .expect("lock clients")
                        .keep_alive(&mut c, id);
                }
                "tick".into()
            }
            92 if running.len() > 1 => {
                let id = any(&mut rng, &running);
                tally.crashes += 1;
                if rng.gen_bool(0.5) {
                    c.crash(id);
                    format!("crash n{id}")
                } else {
                    c.lose_power(id);
                    format!("power loss n{id}")
                }
            }
            93..=95 if !down.is_empty() => {
                let id = any(&mut rng, &down);
                let upgraded = upgrade && rng.gen_bool(0.5);
                if upgraded {
                    c.set_reads(id, LogFormat::NEWEST);
                }
                c.restart(id);
                format!("restart n{id}{}", if upgraded { " (upgraded)" } else { "" })
            }
            96 => {
                let alone = any(&mut rng, &ids);
                let rest: Vec<u64> = ids.iter().copied().filter(|&i| i != alone).collect();
                c.partition(&[alone], &rest);
                format!("isolate n{alone}")
            }
            97..=98 => {
                c.heal();
                "heal".into()
            }
            99 if !running.is_empty() => {
                let id = any(&mut rng, &running);
                c.campaign(id);
                format!("campaign n{id}")
            }
            _ => {
                c.deliver();
                "deliver".into()
            }
        };
        if trace() {
            println!("{:>8.3}s step {n}: {step}", c.now().as_secs_f64());
            if std::env::var_os("LOCKFS_NODE_TRACE_STATE").is_some() {
                for id in c.running() {
                    let state = c.locks_and_sessions(id).unwrap_or_default();
                    println!("          n{id} {state}");
                }
            }
        }
        seen.check(&c, &format!("step {n} ({step})"));
        if upgrade {
            early_switch(&c, &ids, &format!("step {n} ({step})"));
        }
        seen.take_answers(&mut c, &format!("step {n} ({step})"));
        tally.snapshots += c.take_log().len();
    }

    // The cluster whole again: every node up and running the newest lockfs, every link
    // healed, time for a leader.
    c.heal();
    for id in ids {
        if upgrade && c.reads(id) < LogFormat::NEWEST {
            if c.running().contains(&id) {
                c.crash(id);
            }
            c.set_reads(id, LogFormat::NEWEST);
        }
        if !c.running().contains(&id) {
            c.restart(id);
        }
    }
    for _ in 0..SETTLE_TICKS {
        c.run(1);
        seen.check(&c, "settling");
        seen.take_answers(&mut c, "settling");
        if c.pending() == 0 && settled(&c) {
            break;
        }
    }
    assert!(settled(&c), "the cluster did not settle:\n{}", c.describe());
    // Every acknowledged write, read through every node.
    let keys: BTreeSet<String> = seen.acked.keys().cloned().collect();
    for id in ids {
        for k in &keys {
            c.read(id, k);
        }
    }
    for _ in 0..SETTLE_TICKS {
        c.run(1);
        if c.pending() == 0 {
            break;
        }
    }
    let answers: Vec<_> = c
        .answers()
        .into_iter()
        .filter(|a| !LockClients::owns(&a.what))
        .collect();
    assert_eq!(answers.len(), keys.len() * ids.len(), "reads unanswered");
    for a in answers {
        let key = a.what.strip_prefix("read ").expect("a read");
        let want = &seen.acked[key];
        match &a.result {
            Ok(Outcome::Data { data, .. }) => assert_eq!(
                String::from_utf8_lossy(data),
                want.as_str(),
                "n{} read {key}",
                a.node
            ),
            other => panic!(
                "an acknowledged write was lost: n{} read {key}: {other:?}",
                a.node
            ),
        }
    }
    if upgrade {
        // Every member reads the newest format now: the leader switches the cluster to it.
        let switched = |c: &Cluster| ids.iter().all(|&id| c.writes(id) == LogFormat::NEWEST);
        for _ in 0..SETTLE_TICKS {
            if switched(&c) {
                break;
            }
            c.run(1);
            seen.check(&c, "switching");
        }
        assert!(
            switched(&c),
            "the cluster did not switch:\n{}",
            c.describe_formats()
        );
        tally.upgrades += 1;
    }
    tally.terms = seen.leaders.len();
    tally.grants = seen.locks.as_ref().map_or(0, |l| l.grants);
    tally.acked = seen.acked.len();
    tally
}

/// Fails if a node's state says the cluster writes the newest log format while a member still
/// reads an older one only: a leader may switch only once every member said it reads it.
fn early_switch(c: &Cluster, ids: &[u64], step: &str) {
    if ids.iter().all(|&id| c.reads(id) == LogFormat::NEWEST) {
        return;
    }
    for id in c.running() {
        assert!(
            c.writes(id) < LogFormat::NEWEST,
            "{step}: n{id} switched the log format while a member reads an older one:\n{}",
            c.describe_formats()
        );
    }
}

/// Whether to print every step and answer (`LOCKFS_NODE_TRACE=1`, for replaying one schedule).
fn trace() -> bool {
    std::env::var_os("LOCKFS_NODE_TRACE").is_some()
}

/// Mostly a node that believes it leads; now and then another, to be refused.
fn to_leader(c: &Cluster, rng: &mut StdRng, running: &[u64]) -> u64 {
    let leaders: Vec<u64> = running
        .iter()
        .copied()
        .filter(|&id| c.status(id).is_some_and(|s| s.leader_id == id))
        .collect();
    let of = if !leaders.is_empty() && rng.gen_bool(0.8) {
        &leaders[..]
    } else {
        running
    };
    of[rng.gen_range(0..of.len())]
}

/// One leader, known to all, and every node applied as far as the leader committed.
fn settled(c: &Cluster) -> bool {
    let statuses: Vec<_> = c
        .running()
        .into_iter()
        .filter_map(|id| c.status(id))
        .collect();
    let Some(first) = statuses.first() else {
        return false;
    };
    first.leader_id != 0
        && statuses
            .iter()
            .all(|s| s.leader_id == first.leader_id && s.applied == first.applied)
        && statuses.iter().all(|s| s.applied == s.commit)
}

#[test]
fn random_schedules_keep_one_leader_per_term_the_same_state_and_every_acknowledged_write() {
    let first: u64 = std::env::var("LOCKFS_NODE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let count: u64 = std::env::var("LOCKFS_NODE_SCHEDULES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let started = std::time::Instant::now();
    let mut total = Tally::default();
    for i in 0..count {
        let seed = first.wrapping_add(i);
        let r = std::panic::catch_unwind(|| schedule(seed));
        if let Ok(t) = &r {
            total.terms += t.terms;
            total.acked += t.acked;
            total.grants += t.grants;
            total.crashes += t.crashes;
            total.snapshots += t.snapshots;
            total.upgrades += t.upgrades;
        }
        if let Err(e) = r {
            let msg = super::panic_message(&*e);
            panic!("schedule {seed} failed: {msg}\nreplay: LOCKFS_NODE_SEED={seed} LOCKFS_NODE_SCHEDULES=1 cargo test --lib random_schedules");
        }
    }
    let took = started.elapsed();
    println!(
        "{count} schedules from seed {first} in {:.1} s ({:.1} ms each): {} terms with a \
         leader, {} acknowledged writes checked, {} lock grants checked, {} crashes, {} \
         snapshots sent, {} rolling upgrades",
        took.as_secs_f64(),
        took.as_secs_f64() * 1000.0 / count.max(1) as f64,
        total.terms,
        total.acked,
        total.grants,
        total.crashes,
        total.snapshots,
        total.upgrades
    );
}
