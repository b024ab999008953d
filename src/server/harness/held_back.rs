//! The leader holds back a waiting lock request that finds its lock held (`Node::holds_back`):
//! it enters the log with the next proposal, in the order it came, or alone once its time is
//! up, and what it gets is decided when it is applied.

use super::{Answer, Cluster, Settings};
use crate::state::{cmd, Command, CreateSpec, LockKind, LockResult, LockStyle, Outcome, Target};

fn lock(session: u64, handle: u64, wait: bool) -> Command {
    Command::Lock(cmd::Lock {
        session,
        handle,
        owner: 1,
        style: LockStyle::Flock,
        kind: LockKind::Exclusive,
        start: 0,
        end: u64::MAX,
        wait,
        pid: 1,
    })
}

fn unlock(session: u64, handle: u64) -> Command {
    Command::Unlock(cmd::Unlock {
        session,
        handle,
        owner: 1,
        style: LockStyle::Flock,
        start: 0,
        end: u64::MAX,
    })
}

fn last_index(c: &Cluster) -> u64 {
    c.status(1).expect("node 1 runs").last_index
}

/// The one answer that came in since last asked, by what it was named.
fn only_answer(c: &mut Cluster) -> Answer {
    let mut answers = c.answers();
    assert_eq!(answers.len(), 1, "one answer expected: {answers:?}");
    answers.pop().unwrap()
}

/// `session` takes the lock through `handle` (waiting if `wait`) and is granted it at once.
fn take(c: &mut Cluster, session: u64, handle: u64, wait: bool) {
    let before = last_index(c);
    c.propose_as(
        1,
        session,
        format!("s{session} lock"),
        lock(session, handle, wait),
    );
    c.turn_all();
    assert_eq!(last_index(c), before + 1, "a free lock is never held back");
    c.stabilize();
    assert!(matches!(
        only_answer(c).result,
        Ok(Outcome::Lock(LockResult::Granted { .. }))
    ));
}

/// A three-node cluster led by node 1, with `n` sessions that each opened `/lock`: their
/// (session, handle) pairs.
fn cluster_with_holders(n: usize) -> (Cluster, Vec<(u64, u64)>) {
    let mut c = Cluster::start(&[1, 2, 3], Settings::default(), None);
    c.campaign(1);
    c.stabilize();
    let mut owners = Vec::new();
    for i in 0..n {
        c.open_session_as(1, 10_000, format!("s{i}"));
        c.stabilize();
        let Ok(Outcome::Session { id, .. }) = only_answer(&mut c).result else {
            panic!("no session");
        };
        let open = Command::Open(cmd::Open {
            session: id,
            at: Target::Path("/lock".into()),
            create: Some(CreateSpec {
                mode: 0o644,
                uid: 0,
                gid: 0,
                exclusive: false,
            }),
        });
        c.propose_as(1, id, format!("s{i} open"), open);
        c.stabilize();
        let Ok(Outcome::Opened { handle, .. }) = only_answer(&mut c).result else {
            panic!("no handle");
        };
        owners.push((id, handle));
    }
    (c, owners)
}

#[test]
fn a_waiting_request_for_a_held_lock_enters_the_log_with_the_unlock_that_hands_it_on() {
    let (mut c, owners) = cluster_with_holders(3);
    let [(s0, h0), (s1, h1), (s2, h2)] = owners[..] else {
        unreachable!()
    };
    take(&mut c, s0, h0, false);

    // Two waiting requests come while s0 holds the lock: neither is in the log yet.
    let before = last_index(&c);
    c.propose_as(1, s1, "s1 lock".into(), lock(s1, h1, true));
    c.propose_as(1, s2, "s2 lock".into(), lock(s2, h2, true));
    c.turn_all();
    assert_eq!(last_index(&c), before, "held back");
    assert_eq!(c.pending(), 2);

    // The holder's unlock comes: all three enter the log in one turn, the waiters first, in
    // the order they came, so the lock goes to s1 and s2 queues behind it.
    c.propose_as(1, s0, "s0 unlock".into(), unlock(s0, h0));
    c.turn_all();
    assert_eq!(last_index(&c), before + 3, "proposed together");
    c.stabilize();
    let answers: Vec<_> = c
        .answers()
        .into_iter()
        .map(|a| (a.what, a.result))
        .collect();
    assert!(
        matches!(
            &answers[..],
            [
                (a, Ok(Outcome::Lock(LockResult::Queued { .. }))),
                (b, Ok(Outcome::Lock(LockResult::Queued { .. }))),
                (u, Ok(_)),
            ] if a == "s1 lock" && b == "s2 lock" && u == "s0 unlock"
        ),
        "{answers:?}"
    );
    // s0 tries again without waiting: s1 stands in its way.
    c.propose_as(1, s0, "s0 try".into(), lock(s0, h0, false));
    c.stabilize();
    let result = only_answer(&mut c).result;
    assert!(
        matches!(
            &result,
            Ok(Outcome::Lock(LockResult::WouldBlock { conflict: Some(holder) })) if holder.session == s1
        ),
        "{result:?}"
    );
}

#[test]
fn a_held_back_request_goes_alone_once_its_time_is_up_and_a_free_lock_is_never_held_back() {
    let (mut c, owners) = cluster_with_holders(2);
    let [(s0, h0), (s1, h1)] = owners[..] else {
        unreachable!()
    };
    // The lock is free: a waiting request goes at once and is granted.
    take(&mut c, s0, h0, true);

    // Held now: s1's waiting request is held back until node 1's clock moves on.
    let before = last_index(&c);
    c.propose_as(1, s1, "s1 lock".into(), lock(s1, h1, true));
    c.turn_all();
    assert_eq!(last_index(&c), before);
    c.tick(1);
    assert_eq!(last_index(&c), before + 1, "proposed once its time was up");
    c.stabilize();
    assert!(matches!(
        only_answer(&mut c).result,
        Ok(Outcome::Lock(LockResult::Queued { .. }))
    ));
}
