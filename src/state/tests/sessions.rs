//! Sessions, handles and the lifetime of ephemeral files.

use super::*;
use crate::state::cmd;

#[test]
fn session_ids_count_from_one_and_are_never_reused() {
    let mut sm = StateMachine::new();
    assert_eq!(session(&mut sm, "a"), 1);
    assert_eq!(session(&mut sm, "b"), 2);
    ok(
        &mut sm,
        Command::CloseSession(cmd::CloseSession { session: 2 }),
    );
    assert_eq!(session(&mut sm, "c"), 3);
    assert_eq!(sm.session_ids(), [(1, 10_000), (3, 10_000)]);
    assert_eq!(
        (sm.session_ttl_ms(3), sm.session_ttl_ms(2)),
        (Some(10_000), None),
        "a closed session has no TTL"
    );
    let Ok(Outcome::Sessions {
        sessions: infos, ..
    }) = sm.query(&Query::Sessions { after: 0, limit: 0 })
    else {
        panic!("sessions");
    };
    assert_eq!(
        infos[1],
        SessionInfo {
            id: 3,
            ttl_ms: 10_000,
            host: "c".into(),
            pid: 42,
            name: "mount".into(),
            handles: 0,
            created_ns: NOW,
            owner: "host:c".into(),
            locks: 0,
        }
    );
    // The counter survives a reload.
    let mut reloaded = StateMachine::from_records(sm.records()).unwrap();
    assert_eq!(session(&mut reloaded, "d"), 4);
}

#[test]
fn commands_of_a_dead_session_are_refused() {
    let mut sm = sample();
    let s = session(&mut sm, "a");
    let h = open(&mut sm, s, "/g");
    let gone = session(&mut sm, "b");
    ok(
        &mut sm,
        Command::ExpireSession(cmd::ExpireSession { session: gone }),
    );
    for dead in [gone, 99, 0] {
        let commands = [
            Command::CloseSession(cmd::CloseSession { session: dead }),
            Command::ExpireSession(cmd::ExpireSession { session: dead }),
            open_cmd(dead, "/g", None),
            open_cmd(dead, "/new", Some(spec(true))),
            Command::Close(cmd::Close {
                session: dead,
                handle: h,
            }),
            lock_cmd(
                dead,
                h,
                1,
                LockStyle::Flock,
                LockKind::Exclusive,
                (0, 1),
                false,
            ),
            unlock_cmd(dead, h, 1, LockStyle::Posix, 0, 1),
            Command::CancelWait(cmd::CancelWait {
                session: dead,
                wait: 1,
            }),
        ];
        for cmd in commands {
            refused(&mut sm, cmd, StateError::SessionExpired);
        }
        let q = Query::GetLock {
            session: dead,
            handle: h,
            owner: 1,
            style: LockStyle::Flock,
            kind: LockKind::Shared,
            start: 0,
            end: 1,
        };
        assert_eq!(sm.query(&q), Err(StateError::SessionExpired));
    }
}

#[test]
fn open_existing_files_and_directories() {
    let mut sm = sample();
    let s = session(&mut sm, "a");
    let (h1, attr) = into_opened(ok(&mut sm, open_cmd(s, "/d/f", None)));
    assert_eq!(attr, stat(&sm, p("/d/f")).unwrap());
    let (h2, attr) = into_opened(ok(&mut sm, open_cmd(s, "/d", None)));
    assert_eq!(attr.kind, Kind::Dir);
    let by_ino = Command::Open(cmd::Open {
        session: s,
        at: Target::Ino(attr.instance),
        create: None,
    });
    let (h3, _) = into_opened(ok(&mut sm, by_ino));
    assert_eq!((h1, h2, h3), (1, 2, 3));
    refused(&mut sm, open_cmd(s, "/nope", None), StateError::NotFound);
    let Ok(Outcome::Sessions {
        sessions: infos, ..
    }) = sm.query(&Query::Sessions { after: 0, limit: 0 })
    else {
        panic!("sessions");
    };
    assert_eq!(infos[0].handles, 3);
}

#[test]
fn open_with_create() {
    let mut sm = sample();
    let s = session(&mut sm, "a");
    let (_, attr) = into_opened(ok_at(
        &mut sm,
        NOW + 5,
        open_cmd(s, "/new", Some(spec(true))),
    ));
    assert_eq!(
        (
            attr.kind,
            attr.mode,
            attr.uid,
            attr.gid,
            attr.size,
            attr.ctime_ns
        ),
        (Kind::File, 0o644, 10, 20, 0, NOW + 5)
    );
    assert_eq!(stat(&sm, p("/")).unwrap().mtime_ns, NOW + 5);
    // Not exclusive: the existing file, unchanged.
    let (_, again) = into_opened(ok(&mut sm, open_cmd(s, "/new", Some(spec(false)))));
    assert_eq!(again, stat(&sm, p("/new")).unwrap());
    refused(
        &mut sm,
        open_cmd(s, "/new", Some(spec(true))),
        StateError::AlreadyExists,
    );
    refused(
        &mut sm,
        open_cmd(s, "/d", Some(spec(false))),
        StateError::IsADirectory,
    );
    refused(
        &mut sm,
        open_cmd(s, "/nope/x", Some(spec(false))),
        StateError::NotFound,
    );
    refused(
        &mut sm,
        open_cmd(s, "/g/x", Some(spec(false))),
        StateError::NotADirectory,
    );
    let by_ino = Command::Open(cmd::Open {
        session: s,
        at: Target::Ino(ROOT),
        create: Some(spec(false)),
    });
    assert!(matches!(
        sm.apply(&ctx(NOW), &by_ino),
        Err(StateError::InvalidArgument(_))
    ));
}

#[test]
fn close_checks_the_handle() {
    let mut sm = sample();
    let a = session(&mut sm, "a");
    let b = session(&mut sm, "b");
    let h = open(&mut sm, a, "/g");
    let close = |session, handle| Command::Close(cmd::Close { session, handle });
    refused(&mut sm, close(b, h), StateError::BadHandle);
    refused(&mut sm, close(a, 77), StateError::BadHandle);
    ok(&mut sm, close(a, h));
    refused(&mut sm, close(a, h), StateError::BadHandle);
    refused(
        &mut sm,
        lock_cmd(a, h, 1, LockStyle::Flock, LockKind::Shared, (0, 1), false),
        StateError::BadHandle,
    );
}

/// /eph is an ephemeral directory.
fn with_ephemeral_dir() -> StateMachine {
    let mut sm = sample();
    ok(&mut sm, mkdir(p("/eph")));
    ok(
        &mut sm,
        Command::SetEphemeral(cmd::SetEphemeral {
            target: p("/eph"),
            ephemeral: true,
        }),
    );
    sm
}

#[test]
fn an_ephemeral_file_goes_exactly_at_its_last_close() {
    let mut sm = with_ephemeral_dir();
    let a = session(&mut sm, "a");
    let b = session(&mut sm, "b");
    let (h1, attr) = open_new(&mut sm, a, "/eph/member");
    assert!(attr.ephemeral);
    let h2 = open(&mut sm, a, "/eph/member");
    let h3 = open(&mut sm, b, "/eph/member");
    ok(
        &mut sm,
        Command::Close(cmd::Close {
            session: a,
            handle: h1,
        }),
    );
    ok(
        &mut sm,
        Command::Close(cmd::Close {
            session: b,
            handle: h3,
        }),
    );
    assert!(stat(&sm, p("/eph/member")).is_ok());
    ok_at(
        &mut sm,
        NOW + 9,
        Command::Close(cmd::Close {
            session: a,
            handle: h2,
        }),
    );
    assert_eq!(stat(&sm, p("/eph/member")), Err(StateError::NotFound));
    assert_eq!(stat(&sm, p("/eph")).unwrap().mtime_ns, NOW + 9);
    // Non-ephemeral files stay.
    let h = open(&mut sm, a, "/g");
    ok(
        &mut sm,
        Command::Close(cmd::Close {
            session: a,
            handle: h,
        }),
    );
    assert!(stat(&sm, p("/g")).is_ok());
}

#[test]
fn an_ephemeral_file_goes_with_the_session_that_held_it() {
    for expire in [false, true] {
        let mut sm = with_ephemeral_dir();
        let a = session(&mut sm, "a");
        let b = session(&mut sm, "b");
        open_new(&mut sm, a, "/eph/only-a");
        open_new(&mut sm, a, "/eph/both");
        open(&mut sm, b, "/eph/both");
        let end = if expire {
            Command::ExpireSession(cmd::ExpireSession { session: a })
        } else {
            Command::CloseSession(cmd::CloseSession { session: a })
        };
        sm.take_events();
        ok(&mut sm, end);
        assert_eq!(
            sm.take_events(),
            [Event::SessionEnded {
                session: a,
                expired: expire
            }]
        );
        assert_eq!(names(&sm, p("/eph")), ["both"]);
        ok(
            &mut sm,
            Command::CloseSession(cmd::CloseSession { session: b }),
        );
        assert_eq!(names(&sm, p("/eph")), Vec::<String>::new());
        sm.validate().unwrap();
    }
}

#[test]
fn a_renamed_ephemeral_file_lives_as_long_as_its_handles() {
    let mut sm = with_ephemeral_dir();
    let a = session(&mut sm, "a");
    let (h, _) = open_new(&mut sm, a, "/eph/x");
    ok(&mut sm, rename(p("/eph/x"), p("/moved")));
    ok(
        &mut sm,
        Command::Close(cmd::Close {
            session: a,
            handle: h,
        }),
    );
    assert_eq!(stat(&sm, p("/moved")), Err(StateError::NotFound));
}

#[test]
fn handles_on_a_deleted_directory_stay_open() {
    let mut sm = sample();
    ok(&mut sm, mkdir(p("/e")));
    let a = session(&mut sm, "a");
    let h = open(&mut sm, a, "/e");
    ok(&mut sm, Command::Rmdir(cmd::Rmdir { at: p("/e") }));
    refused(
        &mut sm,
        lock_cmd(a, h, 1, LockStyle::Flock, LockKind::Shared, (0, 0), false),
        StateError::NotFound,
    );
    // The unlock the mount sends at close succeeds: nothing is held on a deleted node.
    ok(&mut sm, unlock_cmd(a, h, 1, LockStyle::Posix, 0, u64::MAX));
    ok(
        &mut sm,
        Command::Close(cmd::Close {
            session: a,
            handle: h,
        }),
    );
    sm.validate().unwrap();
}

#[test]
fn closing_a_session_frees_its_locks_without_delay() {
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
    let wait = queued(
        &mut sm,
        lock_cmd(
            b,
            hb,
            2,
            LockStyle::Flock,
            LockKind::Exclusive,
            (0, 0),
            true,
        ),
    );
    sm.take_events();
    // A listing counts the locks each session holds; a waiter holds none.
    let Ok(Outcome::Sessions { sessions, .. }) = sm.query(&Query::Sessions { after: 0, limit: 0 })
    else {
        panic!("sessions");
    };
    let locks: Vec<(u64, u64)> = sessions.iter().map(|s| (s.id, s.locks)).collect();
    assert_eq!(locks, [(a, 1), (b, 0)]);
    ok(
        &mut sm,
        Command::CloseSession(cmd::CloseSession { session: a }),
    );
    let g = stat(&sm, p("/g")).unwrap().instance;
    assert_eq!(
        sm.take_events(),
        [
            Event::SessionEnded {
                session: a,
                expired: false
            },
            Event::Granted {
                session: b,
                wait,
                instance: g,
                generation: 2,
                on_loss: None
            }
        ]
    );
    assert_eq!(stat(&sm, p("/g")).unwrap().lock_generation, 2);
    assert_eq!(sm.next_wake_ns(), None);
}

#[test]
fn sessions_round_trip_through_records() {
    let mut sm = with_ephemeral_dir();
    let a = session(&mut sm, "a");
    let b = session(&mut sm, "b");
    let (h, _) = open_new(&mut sm, a, "/eph/m");
    let hb = open(&mut sm, b, "/eph/m");
    granted(
        &mut sm,
        lock_cmd(
            a,
            h,
            1,
            LockStyle::Posix,
            LockKind::Exclusive,
            (0, 10),
            false,
        ),
    );
    queued(
        &mut sm,
        lock_cmd(b, hb, 2, LockStyle::Posix, LockKind::Shared, (5, 8), true),
    );
    let req = RequestId {
        session: a,
        seq: 1,
        first_unacked: 1,
    };
    sm.apply_request(&ctx(NOW), Some(&req), &Command::Wake)
        .unwrap();
    ok(
        &mut sm,
        Command::ExpireSession(cmd::ExpireSession { session: a }),
    );
    let c = session(&mut sm, "c");
    let hc = open(&mut sm, c, "/eph/m");
    sm.apply_request(
        &ctx(NOW),
        Some(&RequestId {
            session: c,
            seq: 7,
            first_unacked: 7,
        }),
        &unlock_cmd(c, hc, 3, LockStyle::Posix, 0, 1),
    )
    .unwrap();
    let reloaded = StateMachine::from_records(sm.records()).unwrap();
    assert_eq!(reloaded.snapshot(), sm.snapshot());
    assert_eq!(
        reloaded.query(&Query::Locks { after: 0, limit: 0 }),
        sm.query(&Query::Locks { after: 0, limit: 0 })
    );
    assert_eq!(
        reloaded.query(&Query::Sessions { after: 0, limit: 0 }),
        sm.query(&Query::Sessions { after: 0, limit: 0 })
    );
    assert_eq!(reloaded.next_wake_ns(), Some(NOW + LOCK_DELAY));
    let restored = StateMachine::restore(&sm.snapshot()).unwrap();
    assert_eq!(restored.records(), sm.records());
}

#[test]
fn loading_refuses_inconsistent_session_records() {
    let mut sm = sample();
    let a = session(&mut sm, "a");
    let h = open(&mut sm, a, "/g");
    granted(
        &mut sm,
        lock_cmd(
            a,
            h,
            1,
            LockStyle::Flock,
            LockKind::Exclusive,
            (0, 0),
            false,
        ),
    );
    let records = sm.records();
    let corrupt = |records: Vec<(Vec<u8>, Vec<u8>)>| {
        let err = StateMachine::from_records(records).err();
        assert!(matches!(err, Some(StateError::Corrupt(_))), "{err:?}");
    };
    let session_key = [b"s/".as_slice(), &a.to_be_bytes()].concat();
    // A handle and a holder without their session.
    corrupt(
        records
            .iter()
            .filter(|(k, _)| *k != session_key)
            .cloned()
            .collect(),
    );
    // A lock table of a node that is gone.
    let g = sm.lookup(&p("/g")).unwrap();
    let node_key = [b"n/".as_slice(), &g.to_be_bytes()].concat();
    corrupt(
        records
            .iter()
            .filter(|(k, _)| *k != node_key)
            .cloned()
            .collect(),
    );
    // A malformed key.
    let mut bad = records.clone();
    bad.push((b"h/short".to_vec(), vec![]));
    corrupt(bad);
}

/// A counter at 0 would hand out the id that names nothing, one at the top would overflow:
/// either is refused on load, not found by the next command.
#[test]
fn loading_refuses_counters_out_of_range() {
    let sm = sample();
    let meta = |records: &[(Vec<u8>, Vec<u8>)]| -> record::Meta {
        let (_, value) = records.iter().find(|(k, _)| k == record::META_KEY).unwrap();
        record::decode("meta", value).unwrap()
    };
    let records = sm.records();
    let good = meta(&records);
    let with = |change: fn(&mut record::Meta, u64), value: u64| {
        let mut m = good.clone();
        change(&mut m, value);
        let mut records = records.clone();
        for (k, v) in records.iter_mut() {
            if k == record::META_KEY {
                *v = record::encode(&m);
            }
        }
        StateMachine::from_records(records).err()
    };
    let changes: [fn(&mut record::Meta, u64); 4] = [
        |m, v| m.next_instance = v,
        |m, v| m.next_session = v,
        |m, v| m.next_handle = v,
        |m, v| m.next_wait = v,
    ];
    for change in changes {
        for bad in [0, u64::MAX] {
            let err = with(change, bad);
            assert!(matches!(err, Some(StateError::Corrupt(_))), "{err:?}");
        }
        assert!(with(change, 1 << 62).is_none());
    }
}

#[test]
fn sessions_are_listed_one_page_at_a_time() {
    let mut sm = StateMachine::new();
    for host in ["a", "b", "c"] {
        session(&mut sm, host);
    }
    let page = |after, limit| match sm.query(&Query::Sessions { after, limit }) {
        Ok(Outcome::Sessions { sessions, next }) => {
            (sessions.into_iter().map(|s| s.id).collect::<Vec<_>>(), next)
        }
        other => panic!("sessions answered {other:?}"),
    };
    assert_eq!(page(0, 0), (vec![1, 2, 3], None));
    assert_eq!(page(0, 2), (vec![1, 2], Some(2)));
    assert_eq!(page(2, 2), (vec![3], None));
    assert_eq!(page(3, 2), (vec![], None));
    assert_eq!(page(0, u32::MAX), (vec![1, 2, 3], None));
}
