//! Quotas: each one lets the state grow exactly to its limit, refuses the next step with
//! `QuotaExceeded` and changes nothing; what does not grow a count always passes; and the
//! derived counts stay exact through random commands, refusals and reloads.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::super::quota::Usage;
use super::*;
use crate::state::cmd;

/// Generous everywhere; each test tightens the quota it is about.
fn roomy() -> Quotas {
    Quotas {
        sessions: 1_000,
        sessions_per_host: 1_000,
        handles_per_session: 1_000,
        nodes: 1_000,
        bytes: 1_000_000,
        waiters_per_lock: 1_000,
        waiters: 1_000,
    }
}

fn qctx(q: Quotas) -> ApplyCtx {
    ApplyCtx {
        quotas: Some(q),
        ..ctx(NOW)
    }
}

fn ok_q(sm: &mut StateMachine, q: Quotas, cmd: Command) -> Outcome {
    sm.apply(&qctx(q), &cmd)
        .unwrap_or_else(|e| panic!("{cmd:?} failed: {e:?}"))
}

/// Expects `cmd` to be refused past a quota with `message`, from the check before the log as
/// well as from applying, and to change nothing.
fn over(sm: &mut StateMachine, q: Quotas, cmd: Command, message: &str) {
    let err = StateError::QuotaExceeded(message.into());
    assert_eq!(sm.check_quotas(&cmd, &q, NOW), Err(err.clone()), "{cmd:?}");
    sm.take_changes();
    let before = sm.snapshot();
    let usage = sm.usage.clone();
    assert_eq!(sm.apply(&qctx(q), &cmd), Err(err), "{cmd:?}");
    assert_eq!(sm.snapshot(), before, "{cmd:?} changed the state");
    assert_eq!(sm.take_changes(), vec![], "{cmd:?} left changes");
    assert_eq!(sm.usage, usage, "{cmd:?} changed the counts");
}

fn open_session(host: &str) -> Command {
    Command::OpenSession(cmd::OpenSession {
        ttl_ms: 10_000,
        host: host.into(),
        pid: 1,
        name: "m".into(),
        owner: String::new(),
        secret: 7,
        cache: false,
    })
}

fn truncate(path: &str, size: u64) -> Command {
    Command::Truncate(cmd::Truncate {
        target: p(path),
        size,
    })
}

#[test]
fn sessions_fit_up_to_the_quota_then_are_refused() {
    let q = Quotas {
        sessions: 3,
        ..roomy()
    };
    let mut sm = StateMachine::new();
    for host in ["a", "b", "c"] {
        ok_q(&mut sm, q, open_session(host));
    }
    over(&mut sm, q, open_session("d"), "quota: at most 3 sessions");
    // Ending one makes room again.
    ok(
        &mut sm,
        Command::CloseSession(cmd::CloseSession { session: 1 }),
    );
    ok_q(&mut sm, q, open_session("d"));
}

#[test]
fn sessions_per_host_are_counted_by_host() {
    let q = Quotas {
        sessions_per_host: 2,
        ..roomy()
    };
    let mut sm = StateMachine::new();
    ok_q(&mut sm, q, open_session("a"));
    ok_q(&mut sm, q, open_session("a"));
    over(
        &mut sm,
        q,
        open_session("a"),
        "quota: at most 2 sessions for host a",
    );
    ok_q(&mut sm, q, open_session("b"));
    ok(
        &mut sm,
        Command::ExpireSession(cmd::ExpireSession { session: 1 }),
    );
    ok_q(&mut sm, q, open_session("a"));
    assert_eq!(sm.usage.sessions_per_host["a"], 2);
}

#[test]
fn handles_per_session_are_bounded() {
    let q = Quotas {
        handles_per_session: 2,
        ..roomy()
    };
    let mut sm = sample();
    let s = session(&mut sm, "h");
    let other = session(&mut sm, "h");
    let first = into_opened(ok_q(&mut sm, q, open_cmd(s, "/g", None))).0;
    ok_q(&mut sm, q, open_cmd(s, "/d/f", None));
    over(
        &mut sm,
        q,
        open_cmd(s, "/g", None),
        "quota: at most 2 open handles per session",
    );
    // Another session has its own; a closed handle makes room.
    ok_q(&mut sm, q, open_cmd(other, "/g", None));
    ok(
        &mut sm,
        Command::Close(cmd::Close {
            session: s,
            handle: first,
        }),
    );
    ok_q(&mut sm, q, open_cmd(s, "/g", None));
}

#[test]
fn nodes_are_bounded_for_every_way_of_creating_one() {
    // The sample holds the root, /d, /d/f and /g.
    let q = Quotas {
        nodes: 5,
        ..roomy()
    };
    let mut sm = sample();
    let s = session(&mut sm, "h");
    ok_q(&mut sm, q, mkdir(p("/e")));
    let message = "quota: at most 5 nodes";
    over(&mut sm, q, mkdir(p("/x")), message);
    over(&mut sm, q, create(p("/x"), false), message);
    over(&mut sm, q, put(p("/x"), b"1"), message);
    over(&mut sm, q, open_cmd(s, "/x", Some(spec(false))), message);
    // Nothing new: existing nodes are written, opened and created-if-missing as before.
    ok_q(&mut sm, q, put(p("/g"), b"new"));
    ok_q(&mut sm, q, create(p("/g"), false));
    let (h, _) = into_opened(ok_q(&mut sm, q, open_cmd(s, "/g", Some(spec(false)))));
    // Other refusals keep their own error.
    assert_eq!(
        sm.apply(&qctx(q), &mkdir(p("/e"))),
        Err(StateError::AlreadyExists)
    );
    // An unlinked file still open counts until its last close, as its blocks do on Linux.
    ok(&mut sm, Command::Unlink(cmd::Unlink { at: p("/g") }));
    over(&mut sm, q, put(p("/x"), b"1"), message);
    ok(
        &mut sm,
        Command::Close(cmd::Close {
            session: s,
            handle: h,
        }),
    );
    ok_q(&mut sm, q, put(p("/x"), b"1"));
}

#[test]
fn bytes_are_bounded_across_files() {
    let q = Quotas {
        bytes: 40,
        ..roomy()
    };
    let mut sm = StateMachine::new();
    ok_q(&mut sm, q, put(p("/a"), &[1; 30]));
    ok_q(&mut sm, q, put(p("/b"), &[2; 10]));
    assert_eq!(sm.usage.bytes, 40);
    let message = "quota: at most 40 bytes of file data";
    over(&mut sm, q, put(p("/c"), b"1"), message);
    over(&mut sm, q, put(p("/a"), &[1; 31]), message);
    over(&mut sm, q, write(p("/b"), 10, b"x", false), message);
    over(
        &mut sm,
        q,
        Command::Write(cmd::Write {
            target: p("/b"),
            offset: 0,
            data: b"x".to_vec(),
            truncate: false,
            append: true,
        }),
        message,
    );
    over(&mut sm, q, truncate("/a", 31), message);
    // Refusals of their own keep their own error.
    ok(&mut sm, mkdir(p("/d")));
    assert_eq!(
        sm.apply(&qctx(q), &put(p("/d"), b"x")),
        Err(StateError::IsADirectory)
    );
    // What does not grow the total passes: overwrites in place, shrinking, replacing.
    ok_q(&mut sm, q, write(p("/b"), 0, &[3; 10], false));
    ok_q(&mut sm, q, write(p("/a"), 0, &[4; 5], true));
    assert_eq!(sm.usage.bytes, 15);
    ok_q(&mut sm, q, put(p("/c"), &[5; 25]));
    assert_eq!(sm.usage.bytes, 40);
    ok(&mut sm, rename(p("/c"), p("/a")));
    assert_eq!(sm.usage.bytes, 35);
    ok(&mut sm, Command::Unlink(cmd::Unlink { at: p("/a") }));
    assert_eq!(sm.usage.bytes, 10);
    ok_q(&mut sm, q, truncate("/b", 40));
}

#[test]
fn a_lowered_quota_refuses_growth_but_never_shrinking() {
    let mut sm = StateMachine::new();
    ok(&mut sm, put(p("/a"), &[1; 50]));
    ok(&mut sm, mkdir(p("/d")));
    let q = Quotas {
        bytes: 10,
        nodes: 1,
        ..roomy()
    };
    over(
        &mut sm,
        q,
        truncate("/a", 51),
        "quota: at most 10 bytes of file data",
    );
    ok_q(&mut sm, q, truncate("/a", 20));
    ok_q(&mut sm, q, write(p("/a"), 0, b"overwritten", false));
    ok(&mut sm, Command::Rmdir(cmd::Rmdir { at: p("/d") }));
    over(&mut sm, q, mkdir(p("/d")), "quota: at most 1 nodes");
}

#[test]
fn waiters_are_bounded_per_lock_and_in_total() {
    let q = Quotas {
        waiters_per_lock: 2,
        waiters: 3,
        ..roomy()
    };
    let mut sm = sample();
    let s = session(&mut sm, "h");
    let exclusive = |h, owner, wait| {
        lock_cmd(
            s,
            h,
            owner,
            LockStyle::Flock,
            LockKind::Exclusive,
            (0, 0),
            wait,
        )
    };
    let f = open(&mut sm, s, "/d/f");
    let g = open(&mut sm, s, "/g");
    // The holder of each, then two waiters on /d/f: the most one lock may have.
    granted(&mut sm, exclusive(f, 1, true));
    granted(&mut sm, exclusive(g, 1, true));
    for owner in [2, 3] {
        let cmd = exclusive(f, owner, true);
        assert!(matches!(
            ok_q(&mut sm, q, cmd),
            Outcome::Lock(LockResult::Queued { .. })
        ));
    }
    over(
        &mut sm,
        q,
        exclusive(f, 4, true),
        "quota: at most 2 waiters per lock",
    );
    // Requests that do not wait pass: a try, a repeat of the holder's lock.
    ok_q(&mut sm, q, exclusive(f, 4, false));
    ok_q(&mut sm, q, exclusive(f, 1, true));
    // One more waiter in total fits (on /g), then none.
    ok_q(&mut sm, q, exclusive(g, 2, true));
    assert_eq!(sm.usage.waiters, 3);
    over(
        &mut sm,
        q,
        exclusive(g, 3, true),
        "quota: at most 3 waiters",
    );
    // A grant makes room.
    ok(&mut sm, unlock_cmd(s, f, 1, LockStyle::Flock, 0, u64::MAX));
    assert_eq!(sm.usage.waiters, 2);
    ok_q(&mut sm, q, exclusive(g, 3, true));
}

#[test]
fn commands_that_grow_nothing_carry_no_quota() {
    for cmd in [
        Command::Unlink(cmd::Unlink { at: p("/a") }),
        Command::CloseSession(cmd::CloseSession { session: 1 }),
        Command::Wake,
        rename(p("/a"), p("/b")),
    ] {
        assert!(!cmd.can_grow(), "{cmd:?}");
    }
    for cmd in [open_session("h"), put(p("/a"), b""), mkdir(p("/d"))] {
        assert!(cmd.can_grow(), "{cmd:?}");
    }
}

/// Random commands under small quotas: the derived counts equal the ones computed from
/// scratch after every step and after a reload, no quota is ever exceeded, and refusals
/// change nothing.
#[test]
fn derived_counts_stay_exact_under_random_commands() {
    let seed: u64 = match std::env::var("LOCKFS_SEED") {
        Ok(seed) => seed.parse().expect("LOCKFS_SEED must be a number"),
        Err(_) => rand::random(),
    };
    println!("seed {seed} (rerun with LOCKFS_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let q = Quotas {
        sessions: 4,
        sessions_per_host: 3,
        handles_per_session: 4,
        nodes: 8,
        bytes: 150,
        waiters_per_lock: 2,
        waiters: 3,
    };
    let mut sm = StateMachine::new();
    let mut store = BTreeMap::new();
    let (mut refused, mut over_quota, mut applied) = (0, 0, 0);
    for step in 0..3_000u64 {
        let path = format!("/f{}", rng.gen_range(0..8));
        let session = rng.gen_range(1..=step.min(30) + 1);
        let handle = rng.gen_range(1..=step.min(60) + 1);
        let cmd = match rng.gen_range(0..12) {
            0 => open_session(["a", "b", "c"][rng.gen_range(0..3)]),
            1 => Command::CloseSession(cmd::CloseSession { session }),
            2 => open_cmd(session, &path, Some(spec(false))),
            3 => Command::Close(cmd::Close { session, handle }),
            4 => put(p(&path), &vec![1; rng.gen_range(0..40)]),
            5 => write(p(&path), rng.gen_range(0..40), &[2; 10], rng.gen()),
            6 => truncate(&path, rng.gen_range(0..60)),
            7 => Command::Unlink(cmd::Unlink { at: p(&path) }),
            8 => mkdir(p(&path)),
            9 => Command::Rmdir(cmd::Rmdir { at: p(&path) }),
            _ => lock_cmd(
                session,
                handle,
                rng.gen_range(0..4),
                LockStyle::Flock,
                LockKind::Exclusive,
                (0, 0),
                true,
            ),
        };
        let at = format!("step {step}, seed {seed}: {cmd:?}");
        let before = sm.snapshot();
        let ctx = ApplyCtx {
            index: step + 1,
            time_ns: NOW + step,
            ..qctx(q)
        };
        let checked = sm.check_quotas(&cmd, &q, NOW + step);
        match sm.apply(&ctx, &cmd) {
            Ok(_) => {
                applied += 1;
                assert_eq!(checked, Ok(()), "{at}");
            }
            Err(e) => {
                refused += 1;
                assert_eq!(sm.snapshot(), before, "refused but changed, {at}");
                if let StateError::QuotaExceeded(_) = e {
                    over_quota += 1;
                    assert_eq!(checked, Err(e), "{at}");
                }
            }
        }
        sm.take_events();
        assert_eq!(sm.usage, Usage::of(&sm), "{at}");
        assert!(sm.sessions.len() as u64 <= q.sessions, "{at}");
        assert!(sm.nodes.len() as u64 <= q.nodes, "{at}");
        assert!(sm.usage.bytes <= q.bytes, "{at}");
        assert!(sm.usage.waiters <= q.waiters, "{at}");
        assert!(
            sm.usage
                .sessions_per_host
                .values()
                .all(|&n| n <= q.sessions_per_host),
            "{at}"
        );
        for s in sm.sessions.values() {
            assert!(s.handles.len() as u64 <= q.handles_per_session, "{at}");
        }
        for t in sm.locks.values() {
            assert!(t.waiters.len() as u64 <= q.waiters_per_lock, "{at}");
        }
        apply_changes(&mut store, sm.take_changes());
        if step % 100 == 0 {
            let rebuilt = StateMachine::from_records(store.clone()).expect(&at);
            assert_eq!(rebuilt.usage, sm.usage, "{at}");
            let restored = StateMachine::restore(&sm.snapshot()).expect(&at);
            assert_eq!(restored.usage, sm.usage, "{at}");
        }
    }
    println!("{applied} applied, {refused} refused ({over_quota} past a quota)");
    assert!(
        applied > 300 && over_quota > 50,
        "{applied} applied, {over_quota} past a quota"
    );
}
