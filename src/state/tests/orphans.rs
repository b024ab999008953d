//! Files that lose their last name while open (`orphan.rs`): usable until the last close, kept
//! a while for caching mounts, then gone.

use super::*;
use crate::state::cmd;

/// A store kept in step with `take_changes`, to check that what is stored rebuilds the state.
fn stored(sm: &mut StateMachine, store: &mut BTreeMap<Vec<u8>, Vec<u8>>) {
    for (key, value) in sm.take_changes() {
        match value {
            Some(v) => store.insert(key, v),
            None => store.remove(&key),
        };
    }
    let rebuilt = StateMachine::from_records(store.clone()).expect("stored records load");
    assert_eq!(rebuilt.records(), sm.records());
    assert_eq!(rebuilt.next_wake_ns(), sm.next_wake_ns());
}

fn caching_session(sm: &mut StateMachine, host: &str, ttl_ms: u64) -> u64 {
    let cmd = Command::OpenSession(cmd::OpenSession {
        ttl_ms,
        host: host.into(),
        pid: 42,
        name: "mount".into(),
        owner: format!("host:{host}"),
        secret: 7,
        cache: true,
    });
    match ok(sm, cmd) {
        Outcome::Session { id, .. } => id,
        other => panic!("expected a session, got {other:?}"),
    }
}

fn close(sm: &mut StateMachine, session: u64, handle: u64) {
    ok(sm, Command::Close(cmd::Close { session, handle }));
}

fn ino(n: u64) -> Target {
    Target::Ino(n)
}

#[test]
fn a_file_unlinked_while_open_stays_usable_until_its_last_close() {
    let mut store = BTreeMap::new();
    let mut sm = sample();
    let a = session(&mut sm, "a");
    let b = session(&mut sm, "b");
    let ha = open(&mut sm, a, "/d/f");
    let hb = open(&mut sm, b, "/d/f");
    let f = stat(&sm, p("/d/f")).unwrap().instance;
    assert_eq!(stat(&sm, p("/d/f")).unwrap().links, 1);
    stored(&mut sm, &mut store);

    ok_at(
        &mut sm,
        NOW + 1,
        Command::Unlink(cmd::Unlink { at: p("/d/f") }),
    );
    stored(&mut sm, &mut store);
    assert_eq!(stat(&sm, p("/d/f")), Err(StateError::NotFound));
    assert!(names(&sm, p("/d")).is_empty());
    let attr = stat(&sm, ino(f)).unwrap();
    assert_eq!((attr.links, attr.parent, attr.ctime_ns), (0, 0, NOW + 1));
    // Its data, writes and locks go on by instance, as through an open descriptor.
    ok(&mut sm, write(ino(f), 5, b"!", false));
    match sm.query(&Query::Read {
        target: ino(f),
        offset: 0,
        len: None,
    }) {
        Ok(Outcome::Data { data, .. }) => assert_eq!(data, b"hello!"),
        other => panic!("read: {other:?}"),
    }
    ok(&mut sm, chmod(ino(f), 0o600));
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
    assert!(would_block(
        &mut sm,
        lock_cmd(
            b,
            hb,
            2,
            LockStyle::Flock,
            LockKind::Exclusive,
            (0, 0),
            false
        )
    )
    .is_some());
    // `lockfs locks` shows the path it had.
    let Ok(Outcome::Locks { locks, .. }) = sm.query(&Query::Locks { after: 0, limit: 0 }) else {
        panic!("locks");
    };
    assert_eq!(locks[0].path, "/d/f");
    stored(&mut sm, &mut store);

    // What has no name cannot lose it again or move; its old name is free.
    refused(
        &mut sm,
        Command::Unlink(cmd::Unlink { at: ino(f) }),
        StateError::NotFound,
    );
    refused(&mut sm, rename(ino(f), p("/back")), StateError::NotFound);
    ok(&mut sm, put(p("/d/f"), b"new"));
    assert_ne!(stat(&sm, p("/d/f")).unwrap().instance, f);
    // Nothing reports changes of a nameless file: no watch could name it.
    sm.take_node_events();
    ok(&mut sm, write(ino(f), 0, b"H", false));
    assert!(sm.take_node_events().is_empty());

    close(&mut sm, a, ha);
    assert_eq!(stat(&sm, ino(f)).unwrap().links, 0);
    stored(&mut sm, &mut store);
    close(&mut sm, b, hb);
    assert_eq!(stat(&sm, ino(f)), Err(StateError::NotFound));
    assert!(!sm.is_orphan(f));
    stored(&mut sm, &mut store);
    assert!(store.keys().all(|k| !k.starts_with(b"o/")));
    sm.validate().unwrap();
}

#[test]
fn a_file_replaced_by_a_rename_while_open_stays_usable() {
    let mut sm = sample();
    let a = session(&mut sm, "a");
    let h = open(&mut sm, a, "/g");
    let g = stat(&sm, p("/g")).unwrap().instance;
    let f = stat(&sm, p("/d/f")).unwrap().instance;
    ok(&mut sm, rename(p("/d/f"), p("/g")));
    assert_eq!(stat(&sm, p("/g")).unwrap().instance, f);
    assert_eq!(stat(&sm, ino(g)).unwrap().links, 0);
    ok(&mut sm, write(ino(g), 0, b"still", true));
    close(&mut sm, a, h);
    assert_eq!(stat(&sm, ino(g)), Err(StateError::NotFound));
    sm.validate().unwrap();
}

#[test]
fn without_a_handle_or_a_caching_mount_an_unlinked_file_goes_at_once() {
    let mut sm = sample();
    session(&mut sm, "a");
    let f = stat(&sm, p("/d/f")).unwrap().instance;
    ok(&mut sm, Command::Unlink(cmd::Unlink { at: p("/d/f") }));
    assert_eq!(stat(&sm, ino(f)), Err(StateError::NotFound));
    assert_eq!(sm.next_wake_ns(), None);
    assert_eq!(sm.len(), 3);
}

#[test]
fn while_a_mount_caches_an_unheld_unlinked_file_is_kept_for_twice_the_longest_ttl() {
    let mut store = BTreeMap::new();
    let mut sm = sample();
    let short = caching_session(&mut sm, "a", 1_000);
    let long = caching_session(&mut sm, "b", 3_000);
    let f = stat(&sm, p("/d/f")).unwrap().instance;
    ok_at(&mut sm, NOW, Command::Unlink(cmd::Unlink { at: p("/d/f") }));
    let due = NOW + 2 * 3_000_000_000 + 1_000_000_000;
    assert_eq!(sm.next_wake_ns(), Some(due));
    stored(&mut sm, &mut store);
    // A mount that read it without a handle takes one now, by instance.
    let (h, attr) = into_opened(ok_at(
        &mut sm,
        NOW + 5,
        Command::Open(cmd::Open {
            session: short,
            at: ino(f),
            create: None,
        }),
    ));
    assert_eq!(attr.links, 0);
    // At its time it stays: a handle holds it. The last close after that deletes it.
    ok_at(&mut sm, due, Command::Wake);
    assert_eq!(sm.next_wake_ns(), None);
    assert_eq!(stat(&sm, ino(f)).unwrap().links, 0);
    stored(&mut sm, &mut store);
    ok_at(
        &mut sm,
        due + 1,
        Command::Close(cmd::Close {
            session: short,
            handle: h,
        }),
    );
    assert_eq!(stat(&sm, ino(f)), Err(StateError::NotFound));
    stored(&mut sm, &mut store);

    // One that nobody opens goes at the Wake the leader proposes at its time.
    let g = stat(&sm, p("/g")).unwrap().instance;
    ok_at(
        &mut sm,
        due + 10,
        Command::Unlink(cmd::Unlink { at: p("/g") }),
    );
    let due_g = due + 10 + 7_000_000_000;
    assert_eq!(sm.next_wake_ns(), Some(due_g));
    ok_at(&mut sm, due_g - 1, Command::Wake);
    assert!(sm.is_orphan(g));
    stored(&mut sm, &mut store);
    ok_at(&mut sm, due_g, Command::Wake);
    assert!(!sm.is_orphan(g));
    assert_eq!(stat(&sm, ino(g)), Err(StateError::NotFound));
    assert_eq!(sm.next_wake_ns(), None);
    stored(&mut sm, &mut store);
    ok(
        &mut sm,
        Command::CloseSession(cmd::CloseSession { session: long }),
    );
}

#[test]
fn a_held_orphan_goes_with_the_session_that_held_it() {
    let mut sm = sample();
    let a = session(&mut sm, "a");
    let h = open(&mut sm, a, "/d/f");
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
    let f = stat(&sm, p("/d/f")).unwrap().instance;
    ok(&mut sm, Command::Unlink(cmd::Unlink { at: p("/d/f") }));
    assert!(sm.is_orphan(f));
    ok(
        &mut sm,
        Command::ExpireSession(cmd::ExpireSession { session: a }),
    );
    assert_eq!(stat(&sm, ino(f)), Err(StateError::NotFound));
    assert!(sm.records().iter().all(|(k, _)| !k.starts_with(b"l/")));
    sm.validate().unwrap();
}

#[test]
fn an_unlinked_ephemeral_file_lives_while_held() {
    let mut sm = StateMachine::new();
    ephemeral_dir(&mut sm, "/eph");
    let a = session(&mut sm, "a");
    let (h, attr) = open_new(&mut sm, a, "/eph/m");
    ok(&mut sm, Command::Unlink(cmd::Unlink { at: p("/eph/m") }));
    assert_eq!(stat(&sm, ino(attr.instance)).unwrap().links, 0);
    sm.validate().unwrap();
    close(&mut sm, a, h);
    assert_eq!(stat(&sm, ino(attr.instance)), Err(StateError::NotFound));
    sm.validate().unwrap();
}
