//! At-most-once application of client requests.

use super::*;
use crate::state::cmd;

fn req(session: u64, seq: u64, first_unacked: u64) -> RequestId {
    RequestId {
        session,
        seq,
        first_unacked,
    }
}

fn cached_keys(sm: &StateMachine) -> Vec<(u64, u64)> {
    sm.records()
        .into_iter()
        .filter_map(|(k, _)| {
            let rest = k.strip_prefix(b"r/")?;
            Some((
                u64::from_be_bytes(rest[..8].try_into().unwrap()),
                u64::from_be_bytes(rest[8..].try_into().unwrap()),
            ))
        })
        .collect()
}

#[test]
fn a_retried_request_answers_the_cached_result_and_is_not_applied_again() {
    let mut sm = sample();
    let s = session(&mut sm, "a");
    let cmd = write(p("/g"), 1, b"y", false);
    let first = sm.apply_request(&ctx(NOW), Some(&req(s, 1, 1)), &cmd);
    assert_eq!(into_attr(first.clone().unwrap()).content_generation, 2);
    sm.take_changes();
    let again = sm.apply_request(&ctx(NOW + 50), Some(&req(s, 1, 1)), &cmd);
    assert_eq!(again, first);
    assert_eq!(stat(&sm, p("/g")).unwrap().content_generation, 2);
    // Nothing changed, not even the clock.
    assert_eq!(sm.take_changes(), vec![]);
    assert_eq!(sm.clock_ns(), NOW);
    // A new sequence number is a new request.
    let third = sm
        .apply_request(&ctx(NOW), Some(&req(s, 2, 1)), &cmd)
        .unwrap();
    assert_eq!(into_attr(third).content_generation, 3);
}

#[test]
fn a_cached_error_is_answered_again() {
    let mut sm = sample();
    let s = session(&mut sm, "a");
    let cmd = write(p("/new"), 0, b"x", false);
    let first = sm.apply_request(&ctx(NOW), Some(&req(s, 5, 5)), &cmd);
    assert_eq!(first, Err(StateError::NotFound));
    ok(&mut sm, put(p("/new"), b""));
    // The retry does not apply (it would succeed now).
    let again = sm.apply_request(&ctx(NOW), Some(&req(s, 5, 5)), &cmd);
    assert_eq!(again, Err(StateError::NotFound));
    assert_eq!(read(&sm, "/new", 0, None), b"");
}

#[test]
fn a_retried_lock_request_does_not_queue_twice() {
    let mut sm = sample();
    let a = session(&mut sm, "a");
    let b = session(&mut sm, "b");
    let ha = open(&mut sm, a, "/g");
    let hb = open(&mut sm, b, "/g");
    granted(
        &mut sm,
        lock_cmd(
            a,
            ha,
            1,
            LockStyle::Flock,
            LockKind::Exclusive,
            (0, 0),
            false,
        ),
    );
    let cmd = lock_cmd(
        b,
        hb,
        2,
        LockStyle::Flock,
        LockKind::Exclusive,
        (0, 0),
        true,
    );
    let first = sm
        .apply_request(&ctx(NOW), Some(&req(b, 1, 1)), &cmd)
        .unwrap();
    let again = sm
        .apply_request(&ctx(NOW), Some(&req(b, 1, 1)), &cmd)
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(locks_of(&sm, "/g").unwrap().waiters.len(), 1);
    // The cache survives a reload.
    let mut reloaded = StateMachine::from_records(sm.records()).unwrap();
    assert_eq!(
        reloaded.apply_request(&ctx(NOW), Some(&req(b, 1, 1)), &cmd),
        Ok(first)
    );
}

#[test]
fn acknowledged_results_are_dropped_and_never_applied_again() {
    let mut sm = sample();
    let s = session(&mut sm, "a");
    for seq in 1..=4 {
        sm.apply_request(&ctx(NOW), Some(&req(s, seq, 1)), &Command::Wake)
            .unwrap();
    }
    assert_eq!(cached_keys(&sm), [(s, 1), (s, 2), (s, 3), (s, 4)]);
    sm.take_changes();
    sm.apply_request(&ctx(NOW), Some(&req(s, 5, 3)), &Command::Wake)
        .unwrap();
    assert_eq!(cached_keys(&sm), [(s, 3), (s, 4), (s, 5)]);
    let deleted: Vec<_> = sm
        .take_changes()
        .into_iter()
        .filter(|(k, v)| k.starts_with(b"r/") && v.is_none())
        .count()
        .to_string()
        .into_bytes()
        .into_iter()
        .collect();
    assert_eq!(deleted, b"2");
    // A retry of a dropped request is refused, not applied again; an older first_unacked
    // does not bring anything back.
    let stale = sm.apply_request(&ctx(NOW), Some(&req(s, 2, 1)), &put(p("/g"), b"again"));
    assert!(
        matches!(stale, Err(StateError::InvalidArgument(_))),
        "{stale:?}"
    );
    assert_eq!(read(&sm, "/g", 0, None), b"x");
    // Still cached above it.
    assert_eq!(
        sm.apply_request(&ctx(NOW), Some(&req(s, 4, 1)), &put(p("/g"), b"no")),
        Ok(Outcome::Done)
    );
    assert_eq!(read(&sm, "/g", 0, None), b"x");
}

#[test]
fn the_cache_of_a_session_is_bounded() {
    let mut sm = sample();
    let s = session(&mut sm, "a");
    let n = MAX_CACHED_RESULTS as u64;
    for seq in 1..=n {
        sm.apply_request(&ctx(NOW), Some(&req(s, seq, 1)), &Command::Wake)
            .unwrap();
    }
    let full = sm.apply_request(&ctx(NOW), Some(&req(s, n + 1, 1)), &Command::Wake);
    assert!(
        matches!(full, Err(StateError::InvalidArgument(_))),
        "{full:?}"
    );
    // Acknowledging makes room.
    sm.apply_request(&ctx(NOW), Some(&req(s, n + 1, 2)), &Command::Wake)
        .unwrap();
    sm.validate().unwrap();
}

#[test]
fn requests_of_unknown_sessions_are_refused() {
    let mut sm = sample();
    let s = session(&mut sm, "a");
    assert_eq!(
        sm.apply_request(&ctx(NOW), Some(&req(9, 1, 1)), &Command::Wake),
        Err(StateError::SessionExpired)
    );
    // The request's session must be the command's.
    let other = session(&mut sm, "b");
    let cmd = Command::CloseSession(cmd::CloseSession { session: other });
    assert!(matches!(
        sm.apply_request(&ctx(NOW), Some(&req(s, 1, 1)), &cmd),
        Err(StateError::InvalidArgument(_))
    ));
    // Ending its own session takes the cache with it.
    let cmd = Command::CloseSession(cmd::CloseSession { session: s });
    assert_eq!(
        sm.apply_request(&ctx(NOW), Some(&req(s, 2, 1)), &cmd),
        Ok(Outcome::Done)
    );
    assert_eq!(
        sm.apply_request(&ctx(NOW), Some(&req(s, 2, 1)), &cmd),
        Err(StateError::SessionExpired)
    );
    assert_eq!(cached_keys(&sm), []);
}

#[test]
fn apply_is_apply_request_without_a_request() {
    let mut a = sample();
    let mut b = sample();
    let cmd = put(p("/g"), b"1");
    assert_eq!(
        a.apply(&ctx(NOW), &cmd),
        b.apply_request(&ctx(NOW), None, &cmd)
    );
    assert_eq!(a.snapshot(), b.snapshot());
}

#[test]
fn a_retry_that_reached_a_quota_still_answers_its_result() {
    let mut sm = sample();
    let s = session(&mut sm, "a");
    let q = Quotas {
        handles_per_session: 1,
        ..Quotas::default()
    };
    let ctx = ApplyCtx {
        quotas: Some(q),
        ..ctx(NOW)
    };
    let cmd = open_cmd(s, "/g", None);
    let r = req(s, 1, 1);
    assert!(!sm.answered(&r));
    let first = sm.apply_request(&ctx, Some(&r), &cmd);
    assert!(first.is_ok());
    // The state is at the quota now; the check before the log must let the retry through
    // (`answered`), and applying it answers the first result.
    assert!(sm.answered(&r));
    assert!(matches!(
        sm.check_quotas(&cmd, &q, NOW),
        Err(StateError::QuotaExceeded(_))
    ));
    assert_eq!(sm.apply_request(&ctx, Some(&r), &cmd), first);
}
