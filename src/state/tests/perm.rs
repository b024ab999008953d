//! Unix permissions as the state machine checks them for a request's user.

use super::*;
use crate::state::cmd;

/// Applies `cmd` as user `uid` (group `gid`, and supplementary `groups`).
fn as_user(
    sm: &mut StateMachine,
    uid: u32,
    gid: u32,
    groups: &[u32],
    cmd: Command,
) -> Result<Outcome, StateError> {
    let ctx = ApplyCtx {
        caller: Some(UserIds {
            uid,
            gid,
            groups: groups.to_vec(),
        }),
        ..ctx(NOW)
    };
    sm.apply(&ctx, &cmd)
}

fn query_as(sm: &StateMachine, uid: u32, gid: u32, q: Query) -> Result<Outcome, StateError> {
    let user = UserIds {
        uid,
        gid,
        groups: vec![],
    };
    sm.query_as(&q, Some(&user))
}

fn owned(at: &str, kind: Kind, mode: u32, uid: u32, gid: u32) -> Command {
    match kind {
        Kind::Dir => Command::Mkdir(cmd::Mkdir {
            at: p(at),
            mode,
            uid,
            gid,
        }),
        Kind::File => Command::Create(cmd::Create {
            at: p(at),
            mode,
            uid,
            gid,
            exclusive: true,
        }),
        Kind::Symlink => Command::Symlink(cmd::Symlink {
            at: p(at),
            target: "elsewhere".into(),
            uid,
            gid,
        }),
    }
}

/// /home (0755 root), /home/a (0700 uid 1), /home/a/f (0644 uid 1), /shared (0770 gid 50),
/// /tmp (1777 root) with /tmp/mine (uid 1) in it.
fn tree() -> StateMachine {
    let mut sm = StateMachine::new();
    for cmd in [
        owned("/home", Kind::Dir, 0o755, 0, 0),
        owned("/home/a", Kind::Dir, 0o700, 1, 1),
        owned("/home/a/f", Kind::File, 0o644, 1, 1),
        owned("/shared", Kind::Dir, 0o770, 0, 50),
        owned("/tmp", Kind::Dir, 0o1777, 0, 0),
        owned("/tmp/mine", Kind::File, 0o644, 1, 1),
    ] {
        ok(&mut sm, cmd);
    }
    sm
}

#[test]
fn paths_need_search_permission_on_the_way() {
    let mut sm = tree();
    let stat = |_uid: u32| Query::Stat(p("/home/a/f"));
    assert!(query_as(&sm, 1, 1, stat(1)).is_ok());
    assert_eq!(query_as(&sm, 2, 2, stat(2)), Err(StateError::AccessDenied));
    assert!(
        query_as(&sm, 0, 0, stat(0)).is_ok(),
        "root searches anything"
    );
    // By instance, as a mount's open handle reaches it, no path is walked.
    let ino = stat_ino(&sm, "/home/a/f");
    assert!(query_as(&sm, 2, 2, Query::Stat(Target::Ino(ino))).is_ok());
    let refused = as_user(
        &mut sm,
        2,
        2,
        &[],
        owned("/home/a/g", Kind::File, 0o644, 2, 2),
    );
    assert_eq!(refused, Err(StateError::AccessDenied));
}

fn stat_ino(sm: &StateMachine, path: &str) -> u64 {
    sm.lookup(&p(path)).expect("exists")
}

#[test]
fn reading_and_writing_follow_the_mode_bits() {
    let mut sm = tree();
    let read = |path: &str| Query::Read {
        target: p(path),
        offset: 0,
        len: None,
    };
    assert!(query_as(&sm, 0, 0, read("/tmp/mine")).is_ok());
    assert!(
        query_as(&sm, 2, 2, read("/tmp/mine")).is_ok(),
        "others may read 0644"
    );
    assert_eq!(
        as_user(&mut sm, 2, 2, &[], write(p("/tmp/mine"), 0, b"x", false)),
        Err(StateError::AccessDenied)
    );
    assert!(as_user(&mut sm, 1, 1, &[], write(p("/tmp/mine"), 0, b"x", false)).is_ok());
    ok(&mut sm, chmod(p("/tmp/mine"), 0o600));
    assert_eq!(
        query_as(&sm, 2, 2, read("/tmp/mine")),
        Err(StateError::AccessDenied)
    );
    // A group reaches through its group bits, supplementary groups too.
    assert_eq!(
        query_as(&sm, 3, 3, Query::Readdir(p("/shared"))),
        Err(StateError::AccessDenied)
    );
    assert!(as_user(
        &mut sm,
        3,
        3,
        &[50],
        owned("/shared/x", Kind::File, 0o644, 3, 3)
    )
    .is_ok());
    assert!(query_as(&sm, 3, 50, Query::Readdir(p("/shared"))).is_ok());
}

#[test]
fn a_sticky_directory_keeps_others_from_removing_entries() {
    let mut sm = tree();
    let unlink = || Command::Unlink(cmd::Unlink { at: p("/tmp/mine") });
    assert_eq!(
        as_user(&mut sm, 2, 2, &[], unlink()),
        Err(StateError::NotPermitted)
    );
    assert!(as_user(
        &mut sm,
        2,
        2,
        &[],
        owned("/tmp/theirs", Kind::File, 0o644, 2, 2)
    )
    .is_ok());
    assert_eq!(
        as_user(&mut sm, 2, 2, &[], rename(p("/tmp/theirs"), p("/tmp/mine"))),
        Err(StateError::NotPermitted),
        "nor replace them"
    );
    assert!(as_user(&mut sm, 1, 1, &[], unlink()).is_ok());
    assert!(as_user(
        &mut sm,
        2,
        2,
        &[],
        Command::Unlink(cmd::Unlink {
            at: p("/tmp/theirs")
        })
    )
    .is_ok());
}

#[test]
fn a_directory_that_changes_parent_needs_write_on_itself() {
    let mut sm = tree();
    // uid 2 owns /tmp/d2 (writable) and may move it; /tmp/ro (0555, its own) only in place.
    for cmd in [
        owned("/tmp/d2", Kind::Dir, 0o755, 2, 2),
        owned("/tmp/ro", Kind::Dir, 0o555, 2, 2),
        owned("/tmp/to", Kind::Dir, 0o777, 2, 2),
    ] {
        ok(&mut sm, cmd);
    }
    assert!(as_user(&mut sm, 2, 2, &[], rename(p("/tmp/d2"), p("/tmp/to/d2"))).is_ok());
    assert_eq!(
        as_user(&mut sm, 2, 2, &[], rename(p("/tmp/ro"), p("/tmp/to/ro"))),
        Err(StateError::AccessDenied)
    );
    assert!(as_user(&mut sm, 2, 2, &[], rename(p("/tmp/ro"), p("/tmp/ro2"))).is_ok());
    // An exchange moves both, each needing the same.
    assert_eq!(
        as_user(
            &mut sm,
            2,
            2,
            &[],
            Command::Exchange(cmd::Exchange {
                a: p("/tmp/to/d2"),
                b: p("/tmp/ro2"),
            })
        ),
        Err(StateError::AccessDenied)
    );
    // Nor may anyone but root move another's directory out of a sticky one.
    assert_eq!(
        as_user(&mut sm, 3, 3, &[], rename(p("/tmp/to"), p("/tmp/x"))),
        Err(StateError::NotPermitted)
    );
}

#[test]
fn only_owners_change_modes_and_only_root_gives_files_away() {
    let mut sm = tree();
    let set = |mode: Option<u32>, uid: Option<u32>, gid: Option<u32>| {
        Command::SetAttr(cmd::SetAttr {
            target: p("/tmp/mine"),
            mode,
            uid,
            gid,
            atime_ns: None,
            mtime_ns: None,
        })
    };
    assert_eq!(
        as_user(&mut sm, 2, 2, &[], set(Some(0o666), None, None)),
        Err(StateError::NotPermitted)
    );
    assert!(as_user(&mut sm, 1, 1, &[], set(Some(0o664), None, None)).is_ok());
    assert_eq!(
        as_user(&mut sm, 1, 1, &[], set(None, Some(2), None)),
        Err(StateError::NotPermitted)
    );
    assert_eq!(
        as_user(&mut sm, 1, 1, &[], set(None, None, Some(60))),
        Err(StateError::NotPermitted),
        "not a group of the owner"
    );
    assert!(as_user(&mut sm, 1, 1, &[60], set(None, None, Some(60))).is_ok());
    assert!(as_user(&mut sm, 0, 0, &[], set(None, Some(2), Some(2))).is_ok());
    // The checks are deterministic: a refusal changes nothing.
    assert_eq!(stat(&sm, p("/tmp/mine")).unwrap().uid, 2);
}

#[test]
fn a_write_by_anyone_but_root_clears_set_id_bits() {
    let mut sm = tree();
    ok(&mut sm, owned("/tmp/s", Kind::File, 0o6777, 1, 1));
    ok(&mut sm, owned("/tmp/g", Kind::File, 0o2767, 1, 1));
    let mode = |sm: &StateMachine, path: &str| stat(sm, p(path)).unwrap().mode;
    // Root keeps them (CAP_FSETID).
    assert!(as_user(&mut sm, 0, 0, &[], write(p("/tmp/s"), 0, b"x", false)).is_ok());
    assert_eq!(mode(&sm, "/tmp/s"), 0o6777);
    // Anyone else clears set-uid; set-gid of a group-executable file, or when not in the
    // file's group.
    assert!(as_user(&mut sm, 2, 2, &[], write(p("/tmp/s"), 0, b"x", false)).is_ok());
    assert_eq!(mode(&sm, "/tmp/s"), 0o777);
    assert!(as_user(&mut sm, 2, 2, &[1], write(p("/tmp/g"), 0, b"x", false)).is_ok());
    assert_eq!(mode(&sm, "/tmp/g"), 0o2767);
    assert!(as_user(&mut sm, 3, 3, &[], write(p("/tmp/g"), 0, b"x", false)).is_ok());
    assert_eq!(mode(&sm, "/tmp/g"), 0o767);
    // The owner too, and through a truncate.
    ok(&mut sm, chmod(p("/tmp/s"), 0o4755));
    let truncate = Command::Truncate(cmd::Truncate {
        target: p("/tmp/s"),
        size: 0,
    });
    assert!(as_user(&mut sm, 1, 1, &[], truncate).is_ok());
    assert_eq!(mode(&sm, "/tmp/s"), 0o755);
}

#[test]
fn only_a_files_owner_sets_its_lock_settings() {
    let mut sm = tree();
    let on_loss = |path: &str| {
        Command::SetOnLoss(cmd::SetOnLoss {
            target: p(path),
            on_loss: Some(crate::state::OnLoss::Kill),
        })
    };
    let max_holders = |path: &str| {
        Command::SetMaxHolders(cmd::SetMaxHolders {
            target: p(path),
            max_holders: 3,
        })
    };
    // /tmp/mine belongs to uid 1: another user reaches it but may not set its settings.
    for cmd in [on_loss("/tmp/mine"), max_holders("/tmp/mine")] {
        assert_eq!(
            as_user(&mut sm, 2, 2, &[], cmd.clone()),
            Err(StateError::NotPermitted)
        );
        assert!(as_user(&mut sm, 1, 1, &[], cmd).is_ok());
    }
    sm.validate().unwrap();
}
