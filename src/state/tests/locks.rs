//! flock and POSIX locks: conflicts, queues, lock-delay, cancellation, deletion.

use super::*;

const FL: LockStyle = LockStyle::Flock;
const PX: LockStyle = LockStyle::Posix;
const SH: LockKind = LockKind::Shared;
const EX: LockKind = LockKind::Exclusive;
const MAX: u64 = u64::MAX;
use crate::state::{cmd, OnLoss, MAX_HOLDERS};

/// A sample tree with sessions 1 (host "a") and 2 (host "b"), each with a handle on /g:
/// returns (sm, handle of 1, handle of 2).
fn two_sessions() -> (StateMachine, u64, u64) {
    let mut sm = sample();
    assert_eq!(session(&mut sm, "a"), 1);
    assert_eq!(session(&mut sm, "b"), 2);
    let h1 = open(&mut sm, 1, "/g");
    let h2 = open(&mut sm, 2, "/g");
    sm.take_events();
    (sm, h1, h2)
}

fn g(sm: &StateMachine) -> u64 {
    sm.lookup(&p("/g")).unwrap()
}

#[test]
fn flock_exclusive_excludes_and_bumps_the_generation() {
    let (mut sm, h1, h2) = two_sessions();
    let gen = granted(&mut sm, lock_cmd(1, h1, 7, FL, EX, (0, 0), false));
    assert_eq!(gen, 1);
    assert_eq!(stat(&sm, p("/g")).unwrap().lock_generation, 1);
    let conflict = would_block(&mut sm, lock_cmd(2, h2, 8, FL, SH, (0, 0), false)).unwrap();
    assert_eq!(
        conflict,
        LockHolder {
            session: 1,
            owner: 7,
            style: FL,
            kind: EX,
            start: 0,
            end: MAX,
            pid: 107,
            host: "a".into(),
            since_ns: NOW,
        }
    );
    // flock and POSIX locks never conflict.
    granted(&mut sm, lock_cmd(2, h2, 8, PX, EX, (0, MAX), false));
    // The generation is the node's, whatever the style; a repeat does not bump it.
    assert_eq!(
        granted(&mut sm, lock_cmd(1, h1, 7, FL, EX, (0, 0), false)),
        2
    );
    // The same owner value in another session is another owner.
    assert!(would_block(&mut sm, lock_cmd(2, h2, 7, FL, EX, (0, 0), false)).is_some());
    assert_eq!(sm.take_events(), []);
}

#[test]
fn shared_locks_share_and_do_not_bump() {
    let (mut sm, h1, h2) = two_sessions();
    assert_eq!(
        granted(&mut sm, lock_cmd(1, h1, 1, FL, SH, (0, 0), false)),
        0
    );
    assert_eq!(
        granted(&mut sm, lock_cmd(2, h2, 2, FL, SH, (0, 0), false)),
        0
    );
    assert_eq!(held(&sm, "/g").len(), 2);
    assert!(would_block(&mut sm, lock_cmd(2, h2, 3, FL, EX, (0, 0), false)).is_some());
}

#[test]
fn unlocking_what_is_not_held_succeeds() {
    let (mut sm, h1, _) = two_sessions();
    ok(&mut sm, unlock_cmd(1, h1, 1, FL, 0, MAX));
    ok(&mut sm, unlock_cmd(1, h1, 1, PX, 5, 10));
    granted(&mut sm, lock_cmd(1, h1, 1, PX, EX, (0, 10), false));
    ok(&mut sm, unlock_cmd(1, h1, 1, PX, 0, 10));
    ok(&mut sm, unlock_cmd(1, h1, 1, PX, 0, 10));
    assert_eq!(held(&sm, "/g"), []);
    assert_eq!(locks_of(&sm, "/g"), None);
    assert!(sm.records().iter().all(|(k, _)| !k.starts_with(b"l/")));
}

#[test]
fn lock_arguments_are_checked() {
    let (mut sm, h1, h2) = two_sessions();
    for (start, end) in [(5, 5), (6, 5)] {
        assert!(matches!(
            sm.apply(&ctx(NOW), &lock_cmd(1, h1, 1, PX, SH, (start, end), false)),
            Err(StateError::InvalidArgument(_))
        ));
        assert!(matches!(
            sm.apply(&ctx(NOW), &unlock_cmd(1, h1, 1, PX, start, end)),
            Err(StateError::InvalidArgument(_))
        ));
    }
    // Another session's handle.
    refused(
        &mut sm,
        lock_cmd(1, h2, 1, FL, SH, (0, 0), false),
        StateError::BadHandle,
    );
    refused(
        &mut sm,
        unlock_cmd(1, 99, 1, FL, 0, 0),
        StateError::BadHandle,
    );
    // flock ignores the range: a flock lock covers the whole node.
    granted(&mut sm, lock_cmd(1, h1, 1, FL, SH, (3, 4), false));
    assert_eq!(held(&sm, "/g"), [(1, SH, 0, MAX)]);
}

#[test]
fn directories_can_be_locked() {
    let mut sm = sample();
    let a = session(&mut sm, "a");
    let b = session(&mut sm, "b");
    let ha = open(&mut sm, a, "/d");
    let hb = open(&mut sm, b, "/d");
    granted(&mut sm, lock_cmd(a, ha, 1, FL, EX, (0, 0), false));
    let wait = queued(&mut sm, lock_cmd(b, hb, 1, FL, EX, (0, 0), true));
    ok(
        &mut sm,
        Command::Close(cmd::Close {
            session: a,
            handle: ha,
        }),
    );
    let d = sm.lookup(&p("/d")).unwrap();
    assert_eq!(
        sm.take_events(),
        [Event::Granted {
            session: b,
            wait,
            instance: d,
            generation: 2,
            on_loss: None
        }]
    );
    // Removing the directory drops its locks.
    ok(&mut sm, Command::Unlink(cmd::Unlink { at: p("/d/f") }));
    ok(&mut sm, Command::Rmdir(cmd::Rmdir { at: p("/d") }));
    assert_eq!(
        sm.query(&Query::Locks { after: 0, limit: 0 }),
        Ok(Outcome::Locks {
            locks: vec![],
            next: None
        })
    );
}

#[test]
fn waiters_are_granted_in_fifo_order() {
    let (mut sm, h1, h2) = two_sessions();
    granted(&mut sm, lock_cmd(1, h1, 1, FL, SH, (0, 0), false));
    let w_ex = queued(&mut sm, lock_cmd(2, h2, 2, FL, EX, (0, 0), true));
    // A shared request would fit with the holder, but must not overtake the exclusive waiter.
    assert_eq!(
        would_block(&mut sm, lock_cmd(1, h1, 3, FL, SH, (0, 0), false)),
        None
    );
    let w_sh = queued(&mut sm, lock_cmd(1, h1, 3, FL, SH, (0, 0), true));
    let info = locks_of(&sm, "/g").unwrap();
    assert_eq!(
        info.waiters
            .iter()
            .map(|w| (w.wait, w.owner))
            .collect::<Vec<_>>(),
        [(w_ex, 2), (w_sh, 3)]
    );
    assert_eq!(
        (info.waiters[0].host.as_str(), info.waiters[0].since_ns),
        ("b", NOW)
    );
    ok_at(&mut sm, NOW + 1, unlock_cmd(1, h1, 1, FL, 0, 0));
    let gi = g(&sm);
    assert_eq!(
        sm.take_events(),
        [Event::Granted {
            session: 2,
            wait: w_ex,
            instance: gi,
            generation: 1,
            on_loss: None
        }]
    );
    assert_eq!(held(&sm, "/g"), [(2, EX, 0, MAX)]);
    assert_eq!(locks_of(&sm, "/g").unwrap().holders[0].since_ns, NOW + 1);
    ok(&mut sm, unlock_cmd(2, h2, 2, FL, 0, 0));
    assert_eq!(
        sm.take_events(),
        [Event::Granted {
            session: 1,
            wait: w_sh,
            instance: gi,
            generation: 1,
            on_loss: None
        }]
    );
}

#[test]
fn thousands_of_exclusive_waiters_are_granted_one_by_one_in_order() {
    const N: u64 = 2_000;
    let (mut sm, h1, _) = two_sessions();
    granted(&mut sm, lock_cmd(1, h1, 0, PX, EX, (0, MAX), false));
    let waits: Vec<u64> = (1..=N)
        .map(|owner| queued(&mut sm, lock_cmd(1, h1, owner, PX, EX, (0, MAX), true)))
        .collect();
    assert_eq!(waits, (1..=N).collect::<Vec<_>>());
    for (i, owner) in (0..N).enumerate() {
        ok(&mut sm, unlock_cmd(1, h1, owner, PX, 0, MAX));
        let events = sm.take_events();
        assert_eq!(events.len(), 1, "after unlock {owner}");
        let Event::Granted {
            wait, generation, ..
        } = events[0]
        else {
            panic!("{events:?}");
        };
        assert_eq!((wait, generation), (waits[i], i as u64 + 2));
        assert_eq!(held(&sm, "/g"), [(owner + 1, EX, 0, MAX)]);
    }
    assert!(locks_of(&sm, "/g").unwrap().waiters.is_empty());
}

#[test]
fn shared_waiters_are_granted_together_after_an_exclusive_release() {
    const N: u64 = 3_000;
    let (mut sm, h1, h2) = two_sessions();
    granted(&mut sm, lock_cmd(1, h1, 0, FL, EX, (0, 0), false));
    for owner in 1..=N {
        queued(&mut sm, lock_cmd(2, h2, owner, FL, SH, (0, 0), true));
    }
    // An exclusive request behind them.
    let last = queued(&mut sm, lock_cmd(2, h2, N + 1, FL, EX, (0, 0), true));
    ok(
        &mut sm,
        Command::Close(cmd::Close {
            session: 1,
            handle: h1,
        }),
    );
    let events = sm.take_events();
    assert_eq!(events.len() as u64, N);
    assert!(events
        .iter()
        .zip(1..)
        .all(|(e, w)| matches!(e, Event::Granted { wait, generation: 1, .. } if *wait == w)));
    assert_eq!(held(&sm, "/g").len() as u64, N);
    let info = locks_of(&sm, "/g").unwrap();
    assert_eq!(
        info.waiters.iter().map(|w| w.wait).collect::<Vec<_>>(),
        [last]
    );
}

#[test]
fn closing_a_handle_fails_the_flock_waits_made_through_it() {
    let (mut sm, h1, h2) = two_sessions();
    granted(&mut sm, lock_cmd(2, h2, 2, FL, EX, (0, 0), false));
    let w_fl = queued(&mut sm, lock_cmd(1, h1, 1, FL, EX, (0, 0), true));
    granted(&mut sm, lock_cmd(2, h2, 2, PX, EX, (0, 10), false));
    let w_px = queued(&mut sm, lock_cmd(1, h1, 1, PX, SH, (0, 10), true));
    ok(
        &mut sm,
        Command::Close(cmd::Close {
            session: 1,
            handle: h1,
        }),
    );
    assert_eq!(
        sm.take_events(),
        [Event::WaitFailed {
            session: 1,
            wait: w_fl,
            error: StateError::BadHandle
        }]
    );
    // The POSIX wait belongs to the process and stays.
    let info = locks_of(&sm, "/g").unwrap();
    assert_eq!(
        info.waiters.iter().map(|w| w.wait).collect::<Vec<_>>(),
        [w_px]
    );
}

#[test]
fn close_releases_flock_locks_of_the_handle_but_not_posix_locks() {
    let (mut sm, h1, h2) = two_sessions();
    let h1b = open(&mut sm, 1, "/g");
    granted(&mut sm, lock_cmd(1, h1, 1, FL, SH, (0, 0), false));
    granted(&mut sm, lock_cmd(1, h1b, 2, FL, SH, (0, 0), false));
    granted(&mut sm, lock_cmd(1, h1, 3, PX, EX, (0, 10), false));
    ok(
        &mut sm,
        Command::Close(cmd::Close {
            session: 1,
            handle: h1,
        }),
    );
    let info = locks_of(&sm, "/g").unwrap();
    let left: Vec<_> = info.holders.iter().map(|h| (h.style, h.owner)).collect();
    assert_eq!(left, [(FL, 2), (PX, 3)]);
    // The mount unlocks POSIX locks explicitly, through any handle of the session.
    ok(&mut sm, unlock_cmd(1, h1b, 3, PX, 0, MAX));
    granted(&mut sm, lock_cmd(2, h2, 9, PX, EX, (0, 10), false));
}

#[test]
fn posix_unlock_splits_a_range() {
    let (mut sm, h1, h2) = two_sessions();
    granted(&mut sm, lock_cmd(1, h1, 1, PX, EX, (0, 100), false));
    ok(&mut sm, unlock_cmd(1, h1, 1, PX, 20, 30));
    assert_eq!(held(&sm, "/g"), [(1, EX, 0, 20), (1, EX, 30, 100)]);
    granted(&mut sm, lock_cmd(2, h2, 2, PX, EX, (20, 30), false));
    assert!(would_block(&mut sm, lock_cmd(2, h2, 2, PX, SH, (19, 21), false)).is_some());
    // Unlocking across both pieces trims both.
    ok(&mut sm, unlock_cmd(1, h1, 1, PX, 10, 40));
    assert_eq!(
        held(&sm, "/g"),
        [(1, EX, 0, 10), (1, EX, 40, 100), (2, EX, 20, 30)]
    );
}

#[test]
fn posix_locks_replace_and_merge_the_owners_ranges() {
    let (mut sm, h1, h2) = two_sessions();
    granted(&mut sm, lock_cmd(1, h1, 1, PX, SH, (0, 100), false));
    // Upgrade of a sub-range splits the shared range.
    assert_eq!(
        granted(&mut sm, lock_cmd(1, h1, 1, PX, EX, (40, 60), false)),
        1
    );
    assert_eq!(
        held(&sm, "/g"),
        [(1, SH, 0, 40), (1, EX, 40, 60), (1, SH, 60, 100)]
    );
    assert!(would_block(&mut sm, lock_cmd(2, h2, 2, PX, SH, (50, 51), false)).is_some());
    granted(&mut sm, lock_cmd(2, h2, 2, PX, SH, (0, 40), false));
    // Downgrade merges everything back into one shared range.
    assert_eq!(
        granted(&mut sm, lock_cmd(1, h1, 1, PX, SH, (40, 60), false)),
        1
    );
    assert_eq!(held(&sm, "/g"), [(1, SH, 0, 100), (2, SH, 0, 40)]);
    // Adjacent and overlapping ranges of the same kind merge; of another kind they do not.
    granted(&mut sm, lock_cmd(2, h2, 3, PX, EX, (200, 210), false));
    granted(&mut sm, lock_cmd(2, h2, 3, PX, EX, (210, 220), false));
    granted(&mut sm, lock_cmd(2, h2, 3, PX, EX, (190, 205), false));
    granted(&mut sm, lock_cmd(2, h2, 3, PX, SH, (220, 230), false));
    let owner3: Vec<_> = held(&sm, "/g").into_iter().filter(|h| h.0 == 3).collect();
    assert_eq!(owner3, [(3, EX, 190, 220), (3, SH, 220, 230)]);
    // A repeat inside an existing range changes nothing and does not bump.
    let gen = stat(&sm, p("/g")).unwrap().lock_generation;
    assert_eq!(
        granted(&mut sm, lock_cmd(2, h2, 3, PX, EX, (195, 196), false)),
        gen
    );
    assert_eq!(held(&sm, "/g").iter().filter(|h| h.0 == 3).count(), 2);
}

#[test]
fn a_posix_upgrade_does_not_deadlock_behind_a_waiter_it_blocks() {
    let (mut sm, h1, h2) = two_sessions();
    granted(&mut sm, lock_cmd(1, h1, 1, PX, SH, (0, 10), false));
    queued(&mut sm, lock_cmd(2, h2, 2, PX, EX, (0, 10), true));
    // The waiter waits on owner 1 anyway; owner 1's upgrade goes through, as fcntl's would.
    granted(&mut sm, lock_cmd(1, h1, 1, PX, EX, (0, 10), false));
    assert_eq!(held(&sm, "/g"), [(1, EX, 0, 10)]);
    // Others still queue behind the waiter.
    let conflict = would_block(&mut sm, lock_cmd(2, h2, 3, PX, SH, (5, 6), false));
    assert_eq!(conflict.map(|h| h.owner), Some(1));
    granted(&mut sm, lock_cmd(2, h2, 3, PX, SH, (20, 30), false));
}

#[test]
fn flock_conversion_drops_the_old_lock_first() {
    let (mut sm, h1, h2) = two_sessions();
    granted(&mut sm, lock_cmd(1, h1, 1, FL, SH, (0, 0), false));
    granted(&mut sm, lock_cmd(2, h2, 2, FL, SH, (0, 0), false));
    // Converting to exclusive must wait for owner 2; the shared lock is already gone.
    let wait = queued(&mut sm, lock_cmd(1, h1, 1, FL, EX, (0, 0), true));
    assert_eq!(held(&sm, "/g"), [(2, SH, 0, MAX)]);
    ok(&mut sm, unlock_cmd(2, h2, 2, FL, 0, 0));
    assert!(
        matches!(sm.take_events()[..], [Event::Granted { wait: w, generation: 1, .. }] if w == wait)
    );
    assert_eq!(held(&sm, "/g"), [(1, EX, 0, MAX)]);
    // Downgrade converts in place.
    assert_eq!(
        granted(&mut sm, lock_cmd(1, h1, 1, FL, SH, (0, 0), false)),
        1
    );
    assert_eq!(held(&sm, "/g"), [(1, SH, 0, MAX)]);
    // A non-blocking conversion that fails loses the old lock, as flock(2) documents.
    granted(&mut sm, lock_cmd(2, h2, 2, FL, SH, (0, 0), false));
    assert!(would_block(&mut sm, lock_cmd(1, h1, 1, FL, EX, (0, 0), false)).is_some());
    assert_eq!(held(&sm, "/g"), [(2, SH, 0, MAX)]);
}

#[test]
fn an_unlinked_file_keeps_its_locks_until_it_is_gone() {
    for delete in [
        Command::Unlink(cmd::Unlink { at: p("/g") }),
        rename(p("/d/f"), p("/g")),
    ] {
        let (mut sm, h1, h2) = two_sessions();
        let gi = g(&sm);
        granted(&mut sm, lock_cmd(1, h1, 1, FL, EX, (0, 0), false));
        let wait = queued(&mut sm, lock_cmd(2, h2, 2, FL, EX, (0, 0), true));
        // As on Linux: the open descriptors still lock the file that lost its name.
        ok(&mut sm, delete.clone());
        assert_eq!(sm.take_events(), []);
        ok(
            &mut sm,
            Command::Close(cmd::Close {
                session: 1,
                handle: h1,
            }),
        );
        assert!(matches!(
            sm.take_events()[..],
            [Event::Granted { wait: w, .. }] if w == wait
        ));
        ok(
            &mut sm,
            Command::Close(cmd::Close {
                session: 2,
                handle: h2,
            }),
        );
        assert_eq!(stat(&sm, Target::Ino(gi)), Err(StateError::NotFound));
        assert!(sm.records().iter().all(|(k, _)| !k.starts_with(b"l/")));
        sm.validate().unwrap();
    }
}

#[test]
fn removing_a_directory_fails_its_waiters() {
    let mut sm = sample();
    ok(&mut sm, mkdir(p("/e")));
    let a = session(&mut sm, "a");
    let b = session(&mut sm, "b");
    let ha = open(&mut sm, a, "/e");
    let hb = open(&mut sm, b, "/e");
    granted(&mut sm, lock_cmd(a, ha, 1, FL, EX, (0, 0), false));
    let wait = queued(&mut sm, lock_cmd(b, hb, 2, FL, EX, (0, 0), true));
    sm.take_events();
    ok(&mut sm, Command::Rmdir(cmd::Rmdir { at: p("/e") }));
    assert_eq!(
        sm.take_events(),
        [Event::WaitFailed {
            session: b,
            wait,
            error: StateError::NotFound
        }]
    );
    assert!(sm.records().iter().all(|(k, _)| !k.starts_with(b"l/")));
    // The handles stay open; closing them is fine.
    ok(
        &mut sm,
        Command::Close(cmd::Close {
            session: a,
            handle: ha,
        }),
    );
    ok(
        &mut sm,
        Command::CancelWait(cmd::CancelWait { session: b, wait }),
    );
    assert_eq!(sm.take_events(), []);
    sm.validate().unwrap();
}

#[test]
fn ephemeral_cleanup_fails_waiters_of_other_sessions() {
    let mut sm = sample();
    ok(&mut sm, mkdir(p("/eph")));
    ok(
        &mut sm,
        Command::SetEphemeral(cmd::SetEphemeral {
            target: p("/eph"),
            ephemeral: true,
        }),
    );
    let a = session(&mut sm, "a");
    let b = session(&mut sm, "b");
    let (ha, _) = open_new(&mut sm, a, "/eph/x");
    let hb = open(&mut sm, b, "/eph/x");
    granted(&mut sm, lock_cmd(a, ha, 1, FL, EX, (0, 0), false));
    let wait = queued(&mut sm, lock_cmd(b, hb, 1, FL, EX, (0, 0), true));
    // b's handle keeps the file; its wait is granted when a goes.
    ok(
        &mut sm,
        Command::CloseSession(cmd::CloseSession { session: a }),
    );
    assert!(matches!(sm.take_events()[..], [_, Event::Granted { wait: w, .. }] if w == wait));
    ok(
        &mut sm,
        Command::CloseSession(cmd::CloseSession { session: b }),
    );
    assert_eq!(names(&sm, p("/eph")), Vec::<String>::new());
}

#[test]
fn a_session_that_expires_while_waiting_leaves_the_queue() {
    let (mut sm, h1, h2) = two_sessions();
    granted(&mut sm, lock_cmd(1, h1, 1, FL, EX, (0, 0), false));
    queued(&mut sm, lock_cmd(2, h2, 2, FL, EX, (0, 0), true));
    ok(
        &mut sm,
        Command::ExpireSession(cmd::ExpireSession { session: 2 }),
    );
    assert_eq!(
        sm.take_events(),
        [Event::SessionEnded {
            session: 2,
            expired: true
        }]
    );
    assert!(locks_of(&sm, "/g").unwrap().waiters.is_empty());
    // It held nothing: no lock-delay.
    assert_eq!(locks_of(&sm, "/g").unwrap().delay_until_ns, 0);
    ok(&mut sm, unlock_cmd(1, h1, 1, FL, 0, 0));
    assert_eq!(sm.take_events(), []);
    assert_eq!(locks_of(&sm, "/g"), None);
}

#[test]
fn expiry_leaves_a_lock_delay_that_wake_ends() {
    let (mut sm, h1, h2) = two_sessions();
    let c = session(&mut sm, "c");
    let hc = open(&mut sm, c, "/g");
    granted(&mut sm, lock_cmd(1, h1, 1, FL, EX, (0, 0), false));
    let wait = queued(&mut sm, lock_cmd(2, h2, 2, FL, EX, (0, 0), true));
    ok(
        &mut sm,
        Command::ExpireSession(cmd::ExpireSession { session: 1 }),
    );
    sm.take_events();
    let until = NOW + LOCK_DELAY;
    let info = locks_of(&sm, "/g").unwrap();
    assert_eq!((info.holders.len(), info.delay_until_ns), (0, until));
    assert_eq!(sm.next_wake_ns(), Some(until));
    // During the delay nothing is granted, not even on a free node.
    assert_eq!(
        would_block(&mut sm, lock_cmd(c, hc, 3, FL, SH, (0, 0), false)),
        None
    );
    ok_at(&mut sm, until - 1, Command::Wake);
    assert_eq!(sm.take_events(), []);
    assert_eq!(sm.next_wake_ns(), Some(until));
    // A late leader clock does not end it early.
    ok_at(&mut sm, NOW, Command::Wake);
    assert_eq!(sm.take_events(), []);
    ok_at(&mut sm, until, Command::Wake);
    let gi = g(&sm);
    assert_eq!(
        sm.take_events(),
        [Event::Granted {
            session: 2,
            wait,
            instance: gi,
            generation: 2,
            on_loss: None
        }]
    );
    assert_eq!(sm.next_wake_ns(), None);
    assert_eq!(locks_of(&sm, "/g").unwrap().delay_until_ns, 0);
    sm.validate().unwrap();
}

#[test]
fn a_semaphore_admits_n_exclusive_holders_and_queues_the_rest_in_order() {
    let (mut sm, h1, h2) = two_sessions();
    let c = session(&mut sm, "c");
    let hc = open(&mut sm, c, "/g");
    let d = session(&mut sm, "d");
    let hd = open(&mut sm, d, "/g");
    let set = |n| {
        Command::SetMaxHolders(cmd::SetMaxHolders {
            target: p("/g"),
            max_holders: n,
        })
    };
    for n in [0, MAX_HOLDERS + 1] {
        refused(
            &mut sm,
            set(n),
            StateError::InvalidArgument("max_holders is 1 to 1000".into()),
        );
    }
    ok(&mut sm, set(2));
    // Listed while nobody holds it, so that its size can be read.
    assert_eq!(locks_of(&sm, "/g").unwrap().max_holders, 2);
    // Two exclusive holders at once, each granted a generation of its own.
    assert_eq!(
        granted(&mut sm, lock_cmd(1, h1, 1, FL, EX, (0, 0), false)),
        1
    );
    assert_eq!(
        granted(&mut sm, lock_cmd(2, h2, 2, FL, EX, (0, 0), false)),
        2
    );
    // A third would block (on the first holder); POSIX locks are not counted.
    assert_eq!(
        would_block(&mut sm, lock_cmd(c, hc, 3, FL, EX, (0, 0), false)).map(|h| h.session),
        Some(1)
    );
    // (Its grant bumps the generation all the same.)
    assert_eq!(
        granted(&mut sm, lock_cmd(c, hc, 3, PX, EX, (0, 10), false)),
        3
    );
    let wc = queued(&mut sm, lock_cmd(c, hc, 3, FL, EX, (0, 0), true));
    let wd = queued(&mut sm, lock_cmd(d, hd, 4, FL, EX, (0, 0), true));
    // A setting below the exclusive holders there now is refused.
    refused(&mut sm, set(1), StateError::Busy);
    // A release lets in the first waiter only.
    sm.take_events();
    ok(&mut sm, unlock_cmd(1, h1, 1, FL, 0, 0));
    assert!(matches!(sm.take_events()[..],
        [Event::Granted { session, wait, generation: 4, .. }] if session == c && wait == wc));
    // More room lets in the next at once.
    ok(&mut sm, set(3));
    assert!(matches!(sm.take_events()[..],
        [Event::Granted { session, wait, generation: 5, .. }] if session == d && wait == wd));
    assert_eq!(locks_of(&sm, "/g").unwrap().holders.len(), 4);
    sm.validate().unwrap();
    // A shared lock keeps exclusive ones out, as ever.
    ok(&mut sm, unlock_cmd(2, h2, 2, FL, 0, 0));
    ok(&mut sm, unlock_cmd(d, hd, 4, FL, 0, 0));
    ok(&mut sm, unlock_cmd(c, hc, 3, FL, 0, 0));
    granted(&mut sm, lock_cmd(1, h1, 1, FL, SH, (0, 0), false));
    assert_eq!(
        would_block(&mut sm, lock_cmd(2, h2, 2, FL, EX, (0, 0), false)).map(|h| h.session),
        Some(1)
    );
    // The setting is stored, and goes with its node.
    let reloaded = StateMachine::from_records(sm.records()).unwrap();
    assert_eq!(reloaded.slots(g(&sm)), 3);
    assert_eq!(reloaded.snapshot(), sm.snapshot());
    ok(&mut sm, put(p("/s"), b""));
    ok(
        &mut sm,
        Command::SetMaxHolders(cmd::SetMaxHolders {
            target: p("/s"),
            max_holders: 5,
        }),
    );
    assert!(
        sm.records()
            .iter()
            .filter(|(k, _)| k.starts_with(b"c/"))
            .count()
            == 2
    );
    ok(&mut sm, Command::Unlink(cmd::Unlink { at: p("/s") }));
    ok(&mut sm, set(1));
    assert!(sm.records().iter().all(|(k, _)| !k.starts_with(b"c/")));
    sm.validate().unwrap();
}

#[test]
fn an_administrator_releases_a_lock_as_its_expiry_would() {
    let (mut sm, h1, h2) = two_sessions();
    let c = session(&mut sm, "c");
    let hc = open(&mut sm, c, "/g");
    granted(&mut sm, lock_cmd(1, h1, 1, FL, SH, (0, 0), false));
    granted(&mut sm, lock_cmd(2, h2, 2, FL, SH, (0, 0), false));
    let wait = queued(&mut sm, lock_cmd(c, hc, 3, FL, EX, (0, 0), true));
    let release = |holder| {
        Command::ReleaseLocks(cmd::ReleaseLocks {
            at: p("/g"),
            holder,
        })
    };
    // Nothing held there, or not by that session: refused, nothing changes.
    refused(
        &mut sm,
        Command::ReleaseLocks(cmd::ReleaseLocks {
            at: p("/d"),
            holder: None,
        }),
        StateError::InvalidArgument("no lock is held there".into()),
    );
    refused(
        &mut sm,
        release(Some(c)),
        StateError::InvalidArgument(format!("session {c} holds no lock there")),
    );
    refused(
        &mut sm,
        Command::ReleaseLocks(cmd::ReleaseLocks {
            at: p("/nope"),
            holder: None,
        }),
        StateError::NotFound,
    );
    // One holder's: the other still keeps the waiter out. The holder's session hears of it.
    sm.take_events();
    ok(&mut sm, release(Some(1)));
    assert_eq!(
        sm.take_events(),
        [Event::LockRevoked {
            session: 1,
            instance: g(&sm),
            handle: h1,
            owner: 1,
            style: FL
        }]
    );
    let info = locks_of(&sm, "/g").unwrap();
    assert_eq!(info.holders.len(), 1);
    assert_eq!(info.holders[0].session, 2);
    assert_eq!(info.delay_until_ns, NOW + LOCK_DELAY);
    // Every holder's; the waiter gets the lock only after the lock-delay.
    ok(&mut sm, release(None));
    assert!(locks_of(&sm, "/g").unwrap().holders.is_empty());
    assert!(matches!(
        sm.take_events()[..],
        [Event::LockRevoked { session: 2, .. }]
    ));
    let until = NOW + LOCK_DELAY;
    ok_at(&mut sm, until, Command::Wake);
    assert!(
        matches!(sm.take_events()[..], [Event::Granted { session, wait: w, .. }]
        if session == c && w == wait)
    );
    // The former holders' sessions and handles stay; their unlocks find nothing and succeed.
    ok_at(&mut sm, until, unlock_cmd(1, h1, 1, FL, 0, 0));
    ok_at(&mut sm, until, unlock_cmd(2, h2, 2, FL, 0, 0));
    assert_eq!(held(&sm, "/g").len(), 1);
    sm.validate().unwrap();
}

#[test]
fn a_lock_delay_ends_with_any_command_that_passes_it() {
    let (mut sm, h1, h2) = two_sessions();
    granted(&mut sm, lock_cmd(1, h1, 1, PX, EX, (0, 10), false));
    ok(
        &mut sm,
        Command::ExpireSession(cmd::ExpireSession { session: 1 }),
    );
    sm.take_events();
    // No waiters: nothing to wake for, but the delay still holds new requests off.
    assert_eq!(sm.next_wake_ns(), None);
    assert_eq!(
        would_block(&mut sm, lock_cmd(2, h2, 2, PX, SH, (5, 6), false)),
        None
    );
    // Other ranges of the node too: the delay is per node.
    assert_eq!(
        would_block(&mut sm, lock_cmd(2, h2, 2, PX, SH, (50, 60), false)),
        None
    );
    let wait = queued(&mut sm, lock_cmd(2, h2, 2, PX, SH, (5, 6), true));
    ok_at(&mut sm, NOW + LOCK_DELAY + 1, put(p("/d/f"), b"unrelated"));
    let events = sm.take_events();
    assert!(
        matches!(events[..], [Event::Granted { wait: w, generation: 1, .. }] if w == wait),
        "{events:?}"
    );
    // A clean close leaves no delay.
    let h = open(&mut sm, 2, "/d/f");
    granted(&mut sm, lock_cmd(2, h, 2, FL, EX, (0, 0), false));
    ok(
        &mut sm,
        Command::CloseSession(cmd::CloseSession { session: 2 }),
    );
    let c = session(&mut sm, "c");
    let hc = open(&mut sm, c, "/d/f");
    granted(&mut sm, lock_cmd(c, hc, 2, FL, EX, (0, 0), false));
}

#[test]
fn a_lock_delay_lets_the_owner_keep_and_downgrade_what_it_holds() {
    let (mut sm, h1, h2) = two_sessions();
    granted(&mut sm, lock_cmd(1, h1, 1, PX, SH, (0, 10), false));
    granted(&mut sm, lock_cmd(2, h2, 2, PX, EX, (20, 30), false));
    granted(&mut sm, lock_cmd(2, h2, 2, FL, EX, (0, 0), false));
    ok(
        &mut sm,
        Command::ExpireSession(cmd::ExpireSession { session: 1 }),
    );
    granted(&mut sm, lock_cmd(2, h2, 2, PX, SH, (20, 25), false));
    granted(&mut sm, lock_cmd(2, h2, 2, FL, SH, (0, 0), false));
    assert_eq!(
        would_block(&mut sm, lock_cmd(2, h2, 2, PX, EX, (20, 25), false)),
        None
    );
    assert_eq!(
        would_block(&mut sm, lock_cmd(2, h2, 2, PX, SH, (30, 31), false)),
        None
    );
}

#[test]
fn cancel_a_queued_wait() {
    let (mut sm, h1, h2) = two_sessions();
    granted(&mut sm, lock_cmd(1, h1, 1, FL, SH, (0, 0), false));
    let w_ex = queued(&mut sm, lock_cmd(2, h2, 2, FL, EX, (0, 0), true));
    let w_sh = queued(&mut sm, lock_cmd(2, h2, 3, FL, SH, (0, 0), true));
    // Another session cannot cancel it.
    assert_eq!(
        ok(
            &mut sm,
            Command::CancelWait(cmd::CancelWait {
                session: 1,
                wait: w_ex
            })
        ),
        Outcome::Cancelled { was_granted: false }
    );
    assert_eq!(locks_of(&sm, "/g").unwrap().waiters.len(), 2);
    assert_eq!(
        ok(
            &mut sm,
            Command::CancelWait(cmd::CancelWait {
                session: 2,
                wait: w_ex
            })
        ),
        Outcome::Cancelled { was_granted: false }
    );
    // The shared waiter was blocked only by the cancelled one.
    assert!(matches!(sm.take_events()[..], [Event::Granted { wait, .. }] if wait == w_sh));
    // Unknown waits: nothing happens, twice.
    for _ in 0..2 {
        assert_eq!(
            ok(
                &mut sm,
                Command::CancelWait(cmd::CancelWait {
                    session: 2,
                    wait: 999
                })
            ),
            Outcome::Cancelled { was_granted: false }
        );
    }
    assert_eq!(sm.take_events(), []);
}

#[test]
fn cancel_after_the_grant_releases_what_the_wait_obtained() {
    let (mut sm, h1, h2) = two_sessions();
    granted(&mut sm, lock_cmd(1, h1, 1, PX, EX, (0, 100), false));
    let wait = queued(&mut sm, lock_cmd(2, h2, 2, PX, EX, (10, 20), true));
    let next = queued(&mut sm, lock_cmd(1, h1, 3, PX, SH, (15, 16), true));
    granted(&mut sm, lock_cmd(2, h2, 2, PX, SH, (150, 160), false));
    ok(&mut sm, unlock_cmd(1, h1, 1, PX, 0, 100));
    assert!(matches!(sm.take_events()[..], [Event::Granted { wait: w, .. }] if w == wait));
    // The waiting process was interrupted meanwhile: the lock goes to nobody, and the next
    // waiter gets its turn in the same command.
    assert_eq!(
        ok(
            &mut sm,
            Command::CancelWait(cmd::CancelWait { session: 2, wait })
        ),
        Outcome::Cancelled { was_granted: true }
    );
    assert!(matches!(sm.take_events()[..], [Event::Granted { wait: w, .. }] if w == next));
    assert_eq!(held(&sm, "/g"), [(3, SH, 15, 16), (2, SH, 150, 160)]);
    // Only once.
    assert_eq!(
        ok(
            &mut sm,
            Command::CancelWait(cmd::CancelWait { session: 2, wait })
        ),
        Outcome::Cancelled { was_granted: false }
    );
}

#[test]
fn a_granted_wait_is_forgotten_once_the_owner_moves_on() {
    let (mut sm, h1, h2) = two_sessions();
    granted(&mut sm, lock_cmd(1, h1, 1, FL, EX, (0, 0), false));
    let wait = queued(&mut sm, lock_cmd(2, h2, 2, FL, EX, (0, 0), true));
    ok(&mut sm, unlock_cmd(1, h1, 1, FL, 0, 0));
    sm.take_events();
    // The owner locked again (it got the grant): a late cancel must not release that.
    ok(&mut sm, unlock_cmd(2, h2, 2, FL, 0, 0));
    granted(&mut sm, lock_cmd(2, h2, 2, FL, SH, (0, 0), false));
    assert_eq!(
        ok(
            &mut sm,
            Command::CancelWait(cmd::CancelWait { session: 2, wait })
        ),
        Outcome::Cancelled { was_granted: false }
    );
    assert_eq!(held(&sm, "/g"), [(2, SH, 0, MAX)]);
}

#[test]
fn get_lock_reports_the_first_conflicting_holder() {
    let (mut sm, h1, h2) = two_sessions();
    granted(&mut sm, lock_cmd(1, h1, 1, PX, SH, (0, 10), false));
    granted(&mut sm, lock_cmd(1, h1, 4, PX, SH, (5, 15), false));
    let probe = |sm: &StateMachine, owner, kind, start, end| {
        let q = Query::GetLock {
            session: 2,
            handle: h2,
            owner,
            style: PX,
            kind,
            start,
            end,
        };
        match sm.query(&q) {
            Ok(Outcome::LockProbe(h)) => h.map(|h| (h.owner, h.start, h.end)),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(probe(&sm, 2, SH, 0, MAX), None);
    assert_eq!(probe(&sm, 2, EX, 12, 13), Some((4, 5, 15)));
    assert_eq!(probe(&sm, 2, EX, 0, MAX), Some((1, 0, 10)));
    assert_eq!(probe(&sm, 2, EX, 15, MAX), None);
    let q = Query::GetLock {
        session: 2,
        handle: h1,
        owner: 2,
        style: PX,
        kind: EX,
        start: 0,
        end: 1,
    };
    assert_eq!(sm.query(&q), Err(StateError::BadHandle));
}

#[test]
fn the_listing_is_by_instance_one_page_at_a_time() {
    let (mut sm, h1, _) = two_sessions();
    let hf = open(&mut sm, 1, "/d/f");
    let hr = open(&mut sm, 1, "/");
    granted(&mut sm, lock_cmd(1, h1, 1, FL, SH, (0, 0), false));
    granted(&mut sm, lock_cmd(1, hf, 1, FL, SH, (0, 0), false));
    granted(&mut sm, lock_cmd(1, hr, 1, FL, EX, (0, 0), false));
    let page = |after, limit| match sm.query(&Query::Locks { after, limit }) {
        Ok(Outcome::Locks { locks, next }) => {
            let paths: Vec<String> = locks.into_iter().map(|i| i.path).collect();
            (paths, next)
        }
        other => panic!("locks answered {other:?}"),
    };
    assert_eq!(
        page(0, 0),
        (vec!["/".into(), "/d/f".into(), "/g".into()], None)
    );
    // Each node weighs 1 plus its holder: a limit of 2 is one node a page.
    let (d, g) = (
        stat(&sm, p("/d/f")).unwrap().instance,
        stat(&sm, p("/g")).unwrap().instance,
    );
    assert_eq!(page(0, 2), (vec!["/".into()], Some(ROOT)));
    assert_eq!(page(ROOT, 4), (vec!["/d/f".into(), "/g".into()], None));
    assert_eq!(page(ROOT, 1), (vec!["/d/f".into()], Some(d)));
    assert_eq!(page(d, 1), (vec!["/g".into()], None));
    assert_eq!(page(g, 1), (vec![], None));
    ok(&mut sm, rename(p("/d/f"), p("/a")));
    assert!(locks_of(&sm, "/a").is_some());
}

#[test]
fn free_semaphores_are_listed_among_the_locks_in_instance_order() {
    let (mut sm, h1, _) = two_sessions();
    granted(&mut sm, lock_cmd(1, h1, 1, FL, SH, (0, 0), false));
    let set = |path: &str| {
        Command::SetMaxHolders(cmd::SetMaxHolders {
            target: p(path),
            max_holders: 2,
        })
    };
    // Free semaphores before and after the held /g, and /g a semaphore too.
    ok(&mut sm, set("/d"));
    ok(&mut sm, set("/g"));
    ok(&mut sm, put(p("/z"), b""));
    ok(&mut sm, set("/z"));
    let mut seen = Vec::new();
    let mut after = 0;
    for _ in 0..10 {
        let Ok(Outcome::Locks { locks, next }) = sm.query(&Query::Locks { after, limit: 1 }) else {
            panic!("locks");
        };
        seen.extend(locks.into_iter().map(|i| (i.path, i.max_holders)));
        match next {
            Some(n) => after = n,
            None => break,
        }
    }
    let instance = |path| stat(&sm, p(path)).unwrap().instance;
    let mut expected = [
        ("/d", instance("/d")),
        ("/g", instance("/g")),
        ("/z", instance("/z")),
    ];
    expected.sort_by_key(|(_, ino)| *ino);
    let expected: Vec<(String, u32)> = expected
        .iter()
        .map(|(path, _)| (path.to_string(), 2))
        .collect();
    assert_eq!(seen, expected);
}

#[test]
fn a_files_on_loss_setting_rides_on_every_grant_and_goes_with_the_file() {
    let (mut sm, h1, h2) = two_sessions();
    let set = |v| {
        Command::SetOnLoss(cmd::SetOnLoss {
            target: p("/g"),
            on_loss: v,
        })
    };
    // Unset: a plain grant, and nothing listed for a free node.
    assert_eq!(
        granted(&mut sm, lock_cmd(1, h1, 1, FL, EX, (0, 0), false)),
        1
    );
    ok(&mut sm, unlock_cmd(1, h1, 1, FL, 0, 0));
    assert!(locks_of(&sm, "/g").is_none());
    ok(&mut sm, set(Some(OnLoss::Kill)));
    // Listed while free, so that it can be read.
    assert_eq!(locks_of(&sm, "/g").unwrap().on_loss, Some(OnLoss::Kill));
    // An immediate grant carries it, and so does a repeat.
    let grant = lock_cmd(1, h1, 1, FL, EX, (0, 0), false);
    for _ in 0..2 {
        assert_eq!(
            lock_result(&mut sm, grant.clone()).granted(),
            Some((2, Some(OnLoss::Kill)))
        );
    }
    // A queued wait's grant carries the setting of the moment it is granted.
    let wait = queued(&mut sm, lock_cmd(2, h2, 2, FL, EX, (0, 0), true));
    ok(&mut sm, set(Some(OnLoss::Term)));
    sm.take_events();
    ok(&mut sm, unlock_cmd(1, h1, 1, FL, 0, 0));
    assert!(matches!(sm.take_events()[..],
        [Event::Granted { wait: w, on_loss: Some(OnLoss::Term), .. }] if w == wait));
    // Stored, and reloaded.
    let reloaded = StateMachine::from_records(sm.records()).unwrap();
    assert_eq!(reloaded.on_loss_of(g(&sm)), Some(OnLoss::Term));
    assert_eq!(reloaded.snapshot(), sm.snapshot());
    sm.validate().unwrap();
    // Removed, the grants are plain again.
    ok(&mut sm, set(None));
    assert!(sm.records().iter().all(|(k, _)| !k.starts_with(b"p/")));
    ok(&mut sm, unlock_cmd(2, h2, 2, FL, 0, 0));
    assert_eq!(
        granted(&mut sm, lock_cmd(1, h1, 1, FL, EX, (0, 0), false)),
        4
    );
    // The setting goes with its node.
    ok(&mut sm, put(p("/s"), b""));
    ok(
        &mut sm,
        Command::SetOnLoss(cmd::SetOnLoss {
            target: p("/s"),
            on_loss: Some(OnLoss::Term),
        }),
    );
    assert_eq!(
        sm.records()
            .iter()
            .filter(|(k, _)| k.starts_with(b"p/"))
            .count(),
        1
    );
    ok(&mut sm, Command::Unlink(cmd::Unlink { at: p("/s") }));
    assert!(sm.records().iter().all(|(k, _)| !k.starts_with(b"p/")));
    sm.validate().unwrap();
}
