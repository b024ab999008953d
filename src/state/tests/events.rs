//! Node events: what each command reports to watches, in order, with its path.

use super::*;
use crate::state::cmd;

/// (path, change) of the events since the last call, with the change's details dropped.
fn seen(sm: &mut StateMachine) -> Vec<(String, &'static str)> {
    sm.take_node_events()
        .into_iter()
        .map(|e| {
            let what = match e.change {
                NodeChange::Created => "created",
                NodeChange::Deleted => "deleted",
                NodeChange::Modified { .. } => "modified",
                NodeChange::Attrib => "attrib",
                NodeChange::Locked { .. } => "locked",
                NodeChange::Unlocked { .. } => "unlocked",
            };
            (e.path, what)
        })
        .collect()
}

fn ev(list: &[(&str, &'static str)]) -> Vec<(String, &'static str)> {
    list.iter().map(|(p, w)| (p.to_string(), *w)).collect()
}

#[test]
fn each_change_of_the_tree_is_reported_at_its_path() {
    let mut sm = StateMachine::new();
    sm.take_node_events();
    ok(&mut sm, mkdir(p("/d")));
    ok(&mut sm, put(p("/d/f"), b"one"));
    ok(&mut sm, write(p("/d/f"), 0, b"two", true));
    ok(&mut sm, chmod(p("/d/f"), 0o600));
    ok(&mut sm, rename(p("/d/f"), p("/d/g")));
    ok(
        &mut sm,
        Command::Truncate(cmd::Truncate {
            target: p("/d/g"),
            size: 1,
        }),
    );
    ok(&mut sm, Command::Unlink(cmd::Unlink { at: p("/d/g") }));
    ok(&mut sm, Command::Rmdir(cmd::Rmdir { at: p("/d") }));
    assert_eq!(
        seen(&mut sm),
        ev(&[
            ("/d", "created"),
            ("/d/f", "created"),
            ("/d/f", "modified"),
            ("/d/f", "modified"),
            ("/d/f", "attrib"),
            ("/d/f", "deleted"),
            ("/d/g", "created"),
            ("/d/g", "modified"),
            ("/d/g", "deleted"),
            ("/d", "deleted"),
        ])
    );
}

#[test]
fn a_rename_over_a_file_reports_the_replaced_file_deleted_first() {
    let mut sm = StateMachine::new();
    ok(&mut sm, put(p("/a"), b"a"));
    ok(&mut sm, put(p("/b"), b"b"));
    sm.take_node_events();
    ok(&mut sm, rename(p("/a"), p("/b")));
    assert_eq!(
        seen(&mut sm),
        ev(&[("/b", "deleted"), ("/a", "deleted"), ("/b", "created")])
    );
}

#[test]
fn events_carry_their_log_index_generation_and_size() {
    let mut sm = StateMachine::new();
    let at = |index| ApplyCtx { index, ..ctx(NOW) };
    sm.apply(&at(7), &put(p("/f"), b"hello")).unwrap();
    let events = sm.take_node_events();
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e.index == 7 && e.kind == Kind::File));
    assert_eq!(
        events[1].change,
        NodeChange::Modified {
            generation: 1,
            size: 5
        }
    );
    // A refused command reports nothing.
    assert!(sm
        .apply(&at(8), &Command::Unlink(cmd::Unlink { at: p("/nope") }))
        .is_err());
    assert!(sm.take_node_events().is_empty());
}

#[test]
fn locks_granted_and_released_are_reported_with_holder_and_count() {
    let mut sm = StateMachine::new();
    let a = session(&mut sm, "host-a");
    let b = session(&mut sm, "host-b");
    let (ha, _) = open_new(&mut sm, a, "/lock");
    let hb = open(&mut sm, b, "/lock");
    sm.take_node_events();
    let flock = |s, h, o, wait| {
        lock_cmd(
            s,
            h,
            o,
            LockStyle::Flock,
            LockKind::Exclusive,
            (0, u64::MAX),
            wait,
        )
    };
    let generation = granted(&mut sm, flock(a, ha, 1, false));
    queued(&mut sm, flock(b, hb, 2, true));
    // A's close releases its lock and grants B's wait, in that order, in one command.
    ok(
        &mut sm,
        Command::Close(cmd::Close {
            session: a,
            handle: ha,
        }),
    );
    let events = sm.take_node_events();
    let summary: Vec<_> = events
        .iter()
        .map(|e| match &e.change {
            NodeChange::Locked {
                holder,
                generation,
                holders,
            } => ("locked", holder.host.clone(), *generation, *holders),
            NodeChange::Unlocked {
                holder,
                generation,
                holders,
            } => ("unlocked", holder.host.clone(), *generation, *holders),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("locked", "host-a".to_string(), generation, 1),
            ("unlocked", "host-a".to_string(), generation + 1, 1),
            ("locked", "host-b".to_string(), generation + 1, 1),
        ]
    );
    // B's session expires: its lock goes, reported as released.
    ok(
        &mut sm,
        Command::ExpireSession(cmd::ExpireSession { session: b }),
    );
    let events = sm.take_node_events();
    assert!(
        matches!(
            events.as_slice(),
            [NodeEvent {
                change: NodeChange::Unlocked { holders: 0, .. },
                ..
            }]
        ),
        "{events:?}"
    );
}

#[test]
fn an_ephemeral_file_is_reported_deleted_when_its_last_handle_closes() {
    let mut sm = StateMachine::new();
    let s = session(&mut sm, "h");
    ok(&mut sm, mkdir(p("/eph")));
    ok(
        &mut sm,
        Command::SetEphemeral(cmd::SetEphemeral {
            target: p("/eph"),
            ephemeral: true,
        }),
    );
    let (h, _) = open_new(&mut sm, s, "/eph/me");
    sm.take_node_events();
    ok(
        &mut sm,
        Command::Close(cmd::Close {
            session: s,
            handle: h,
        }),
    );
    assert_eq!(seen(&mut sm), ev(&[("/eph/me", "deleted")]));
}
