//! In-process tests of the tree: one test per behaviour and per error, a randomized comparison
//! of two replicas (`tests/random.rs`) and data-driven scenarios (`tests/script.rs`).

mod dedup;
mod events;
mod links;
mod locks;
mod orphans;
mod perm;
mod quotas;
mod random;
mod random_sessions;
mod script;
mod sessions;

use std::collections::BTreeMap;

use super::*;
use crate::state::cmd;

const LIMIT: u64 = 64;
const NOW: u64 = 1_000;
const LOCK_DELAY: u64 = 500;

fn ctx(time_ns: u64) -> ApplyCtx {
    ApplyCtx {
        index: 1,
        time_ns,
        max_file_size: LIMIT,
        lock_delay_ns: LOCK_DELAY,
        caller: None,
        quotas: None,
    }
}

fn p(path: &str) -> Target {
    Target::Path(path.into())
}

fn child(parent: u64, name: &str) -> Target {
    Target::Child {
        parent,
        name: name.into(),
    }
}

fn mkdir(at: Target) -> Command {
    Command::Mkdir(cmd::Mkdir {
        at,
        mode: 0o755,
        uid: 10,
        gid: 20,
    })
}

fn create(at: Target, exclusive: bool) -> Command {
    Command::Create(cmd::Create {
        at,
        mode: 0o644,
        uid: 10,
        gid: 20,
        exclusive,
    })
}

fn write(target: Target, offset: u64, data: &[u8], truncate: bool) -> Command {
    Command::Write(cmd::Write {
        target,
        offset,
        data: data.to_vec(),
        truncate,
        append: false,
    })
}

fn put(at: Target, data: &[u8]) -> Command {
    Command::Put(cmd::Put {
        at,
        data: data.to_vec(),
        mode: 0o600,
        uid: 7,
        gid: 8,
        if_generation: None,
    })
}

fn rename(from: Target, to: Target) -> Command {
    Command::Rename(cmd::Rename { from, to })
}

fn chmod(target: Target, mode: u32) -> Command {
    Command::SetAttr(cmd::SetAttr {
        target,
        mode: Some(mode),
        uid: None,
        gid: None,
        atime_ns: None,
        mtime_ns: None,
    })
}

/// Applies at time `NOW` and expects success.
fn ok(sm: &mut StateMachine, cmd: Command) -> Outcome {
    ok_at(sm, NOW, cmd)
}

fn ok_at(sm: &mut StateMachine, time_ns: u64, cmd: Command) -> Outcome {
    sm.apply(&ctx(time_ns), &cmd)
        .unwrap_or_else(|e| panic!("{cmd:?} failed: {e:?}"))
}

fn ok_attr(sm: &mut StateMachine, cmd: Command) -> Attr {
    into_attr(ok(sm, cmd))
}

fn into_attr(outcome: Outcome) -> Attr {
    match outcome {
        Outcome::Attr(attr) => attr,
        other => panic!("expected an attr, got {other:?}"),
    }
}

/// Expects `cmd` to be refused with `err` and to change nothing: not the tree, not the clock,
/// not the pending records (it is applied at a later time than anything before).
fn refused(sm: &mut StateMachine, cmd: Command, err: StateError) {
    sm.take_changes();
    let before = sm.snapshot();
    assert_eq!(sm.apply(&ctx(NOW * 1_000), &cmd), Err(err), "{cmd:?}");
    assert_eq!(sm.snapshot(), before, "{cmd:?} changed the state");
    assert_eq!(sm.take_changes(), vec![], "{cmd:?} left changes");
}

fn stat(sm: &StateMachine, target: Target) -> Result<Attr, StateError> {
    sm.query(&Query::Stat(target)).map(into_attr)
}

fn read(sm: &StateMachine, path: &str, offset: u64, len: Option<u64>) -> Vec<u8> {
    match sm.query(&Query::Read {
        target: p(path),
        offset,
        len,
    }) {
        Ok(Outcome::Data { data, .. }) => data,
        other => panic!("read {path}: {other:?}"),
    }
}

fn names(sm: &StateMachine, target: Target) -> Vec<String> {
    match sm.query(&Query::Readdir(target)) {
        Ok(Outcome::Entries(entries)) => entries.into_iter().map(|e| e.name).collect(),
        other => panic!("readdir: {other:?}"),
    }
}

/// Makes `path` a directory whose new files are ephemeral.
fn ephemeral_dir(sm: &mut StateMachine, path: &str) {
    ok(sm, mkdir(p(path)));
    ok(
        sm,
        Command::SetEphemeral(cmd::SetEphemeral {
            target: p(path),
            ephemeral: true,
        }),
    );
}

/// Opens a session on host `host`; returns its id.
fn session(sm: &mut StateMachine, host: &str) -> u64 {
    let cmd = Command::OpenSession(cmd::OpenSession {
        ttl_ms: 10_000,
        host: host.into(),
        pid: 42,
        name: "mount".into(),
        owner: format!("host:{host}"),
        secret: 7,
        cache: false,
    });
    match ok(sm, cmd) {
        Outcome::Session { id, secret: 7 } => id,
        other => panic!("expected a session, got {other:?}"),
    }
}

fn open_cmd(session: u64, path: &str, create: Option<CreateSpec>) -> Command {
    Command::Open(cmd::Open {
        session,
        at: p(path),
        create,
    })
}

fn spec(exclusive: bool) -> CreateSpec {
    CreateSpec {
        mode: 0o644,
        uid: 10,
        gid: 20,
        exclusive,
    }
}

fn into_opened(outcome: Outcome) -> (u64, Attr) {
    match outcome {
        Outcome::Opened { handle, attr, .. } => (handle, attr),
        other => panic!("expected a handle, got {other:?}"),
    }
}

/// Opens an existing node; returns the handle.
fn open(sm: &mut StateMachine, session: u64, path: &str) -> u64 {
    into_opened(ok(sm, open_cmd(session, path, None))).0
}

/// Opens with O_CREAT; returns the handle and the attributes.
fn open_new(sm: &mut StateMachine, session: u64, path: &str) -> (u64, Attr) {
    into_opened(ok(sm, open_cmd(session, path, Some(spec(false)))))
}

/// A lock request over `(start, end)`, from process `100 + owner`.
fn lock_cmd(
    session: u64,
    handle: u64,
    owner: u64,
    style: LockStyle,
    kind: LockKind,
    (start, end): (u64, u64),
    wait: bool,
) -> Command {
    Command::Lock(cmd::Lock {
        session,
        handle,
        owner,
        style,
        kind,
        start,
        end,
        wait,
        pid: 100 + owner as u32,
    })
}

fn unlock_cmd(
    session: u64,
    handle: u64,
    owner: u64,
    style: LockStyle,
    start: u64,
    end: u64,
) -> Command {
    Command::Unlock(cmd::Unlock {
        session,
        handle,
        owner,
        style,
        start,
        end,
    })
}

fn lock_result(sm: &mut StateMachine, cmd: Command) -> LockResult {
    match ok(sm, cmd) {
        Outcome::Lock(result) => result,
        other => panic!("expected a lock result, got {other:?}"),
    }
}

/// Expects an immediate grant; returns its generation.
fn granted(sm: &mut StateMachine, cmd: Command) -> u64 {
    match lock_result(sm, cmd.clone()) {
        LockResult::Granted { generation } => generation,
        other => panic!("{cmd:?}: expected a grant, got {other:?}"),
    }
}

/// Expects the request to queue; returns the wait id.
fn queued(sm: &mut StateMachine, cmd: Command) -> u64 {
    match lock_result(sm, cmd.clone()) {
        LockResult::Queued { wait } => wait,
        other => panic!("{cmd:?}: expected to queue, got {other:?}"),
    }
}

/// Expects WouldBlock; returns the conflicting holder.
fn would_block(sm: &mut StateMachine, cmd: Command) -> Option<LockHolder> {
    match lock_result(sm, cmd.clone()) {
        LockResult::WouldBlock { conflict } => conflict,
        other => panic!("{cmd:?}: expected WouldBlock, got {other:?}"),
    }
}

/// The lock table of one node as `Query::Locks` shows it.
fn locks_of(sm: &StateMachine, path: &str) -> Option<LockInfo> {
    let Ok(Outcome::Locks { locks: infos, .. }) = sm.query(&Query::Locks { after: 0, limit: 0 })
    else {
        panic!("locks");
    };
    infos.into_iter().find(|i| i.path == path)
}

/// (owner, kind, start, end) of a node's holders.
fn held(sm: &StateMachine, path: &str) -> Vec<(u64, LockKind, u64, u64)> {
    locks_of(sm, path).map_or(Vec::new(), |info| {
        info.holders
            .iter()
            .map(|h| (h.owner, h.kind, h.start, h.end))
            .collect()
    })
}

/// A tree with /d (dir), /d/f (file "hello") and /g (file "x").
fn sample() -> StateMachine {
    let mut sm = StateMachine::new();
    ok(&mut sm, mkdir(p("/d")));
    ok(&mut sm, put(p("/d/f"), b"hello"));
    ok(&mut sm, put(p("/g"), b"x"));
    sm
}

// ---- The empty tree.

#[test]
fn new_tree_is_a_root_directory() {
    let sm = StateMachine::new();
    let root = stat(&sm, p("/")).unwrap();
    assert_eq!(
        (
            root.instance,
            root.parent,
            root.kind,
            root.mode,
            root.uid,
            root.gid
        ),
        (ROOT, ROOT, Kind::Dir, 0o755, 0, 0)
    );
    assert_eq!((root.size, root.children, root.ephemeral), (0, 0, false));
    assert_eq!((sm.len(), sm.next_instance(), sm.clock_ns()), (1, 2, 0));
    assert_eq!(names(&sm, Target::Ino(ROOT)), Vec::<String>::new());
}

// ---- Names and paths.

#[test]
fn paths_ignore_empty_components() {
    let mut sm = sample();
    let f = stat(&sm, p("/d/f")).unwrap().instance;
    assert_eq!(sm.lookup(&p("//d///f/")), Ok(f));
    assert_eq!(sm.lookup(&p("///")), Ok(ROOT));
    ok(&mut sm, mkdir(p("//e//")));
    assert_eq!(names(&sm, p("/")), ["d", "e", "g"]);
}

#[test]
fn bad_paths_are_invalid_arguments() {
    let mut sm = sample();
    for path in ["", "d", "d/f", "/d/./f", "/d/../g", "/.", "/.."] {
        assert!(
            matches!(sm.lookup(&p(path)), Err(StateError::InvalidArgument(_))),
            "{path:?}"
        );
        assert!(
            matches!(
                sm.apply(&ctx(NOW), &mkdir(p(path))),
                Err(StateError::InvalidArgument(_))
            ),
            "{path:?}"
        );
    }
    refused(
        &mut sm,
        mkdir(p("x")),
        StateError::InvalidArgument("path must be absolute: x".into()),
    );
}

#[test]
fn names_are_checked() {
    let mut sm = sample();
    let long = "n".repeat(MAX_NAME_LEN + 1);
    refused(
        &mut sm,
        mkdir(p(&format!("/{long}"))),
        StateError::NameTooLong,
    );
    refused(&mut sm, mkdir(child(ROOT, &long)), StateError::NameTooLong);
    assert_eq!(
        sm.lookup(&p(&format!("/{long}/x"))),
        Err(StateError::NameTooLong)
    );
    for name in ["", ".", "..", "a/b", "a\0b"] {
        let err = sm.apply(&ctx(NOW), &mkdir(child(ROOT, name))).unwrap_err();
        assert!(
            matches!(err, StateError::InvalidName(_)),
            "{name:?}: {err:?}"
        );
        assert_eq!(err.errno(), 22);
    }
    refused(
        &mut sm,
        mkdir(p("/a\0b")),
        StateError::InvalidName("a\\0b".into()),
    );
    // Exactly 255 bytes is fine, also when the bytes are multi-byte characters.
    let max = "n".repeat(MAX_NAME_LEN);
    ok(&mut sm, mkdir(p(&format!("/{max}"))));
    ok(&mut sm, mkdir(child(ROOT, &"é".repeat(127))));
    refused(
        &mut sm,
        mkdir(child(ROOT, &"é".repeat(128))),
        StateError::NameTooLong,
    );
}

#[test]
fn a_file_in_the_middle_of_a_path_is_not_a_directory() {
    let mut sm = sample();
    assert_eq!(sm.lookup(&p("/g/x")), Err(StateError::NotADirectory));
    assert_eq!(sm.lookup(&p("/d/f/x/y")), Err(StateError::NotADirectory));
    assert_eq!(sm.lookup(&p("/missing/x")), Err(StateError::NotFound));
    refused(&mut sm, mkdir(p("/g/x")), StateError::NotADirectory);
    refused(&mut sm, create(p("/g/x"), false), StateError::NotADirectory);
}

#[test]
fn targets_by_instance_and_by_child() {
    let mut sm = sample();
    let d = sm.lookup(&p("/d")).unwrap();
    let f = sm.lookup(&p("/d/f")).unwrap();
    assert_eq!(sm.lookup(&Target::Ino(f)), Ok(f));
    assert_eq!(sm.lookup(&child(d, "f")), Ok(f));
    assert_eq!(sm.lookup(&Target::Ino(99)), Err(StateError::NotFound));
    assert_eq!(sm.lookup(&child(d, "nope")), Err(StateError::NotFound));
    assert_eq!(sm.lookup(&child(99, "f")), Err(StateError::NotFound));
    assert_eq!(sm.lookup(&child(f, "x")), Err(StateError::NotADirectory));
    let created = ok_attr(&mut sm, create(child(d, "new"), true));
    assert_eq!(sm.lookup(&p("/d/new")), Ok(created.instance));
    refused(&mut sm, create(child(99, "x"), true), StateError::NotFound);
    refused(
        &mut sm,
        create(child(f, "x"), true),
        StateError::NotADirectory,
    );
}

#[test]
fn creation_targets_refuse_instances() {
    let mut sm = sample();
    let err = StateError::InvalidArgument("a new entry needs a path or a parent and name".into());
    refused(&mut sm, mkdir(Target::Ino(ROOT)), err.clone());
    refused(&mut sm, create(Target::Ino(ROOT), false), err.clone());
    refused(&mut sm, put(Target::Ino(ROOT), b""), err.clone());
    refused(&mut sm, rename(p("/g"), Target::Ino(ROOT)), err);
}

// ---- Mkdir.

#[test]
fn mkdir_creates_a_directory_and_touches_the_parent() {
    let mut sm = StateMachine::new();
    let a = ok_attr(&mut sm, mkdir(p("/a")));
    assert_eq!(
        (a.instance, a.parent, a.kind, a.mode, a.uid, a.gid),
        (2, ROOT, Kind::Dir, 0o755, 10, 20)
    );
    assert_eq!((a.atime_ns, a.mtime_ns, a.ctime_ns), (NOW, NOW, NOW));
    assert_eq!(
        (a.content_generation, a.lock_generation, a.acl_generation),
        (0, 0, 0)
    );
    let root = stat(&sm, p("/")).unwrap();
    assert_eq!(
        (root.children, root.mtime_ns, root.ctime_ns, root.atime_ns),
        (1, NOW, NOW, 0)
    );
    let b = ok_attr(&mut sm, mkdir(p("/a/b")));
    assert_eq!((b.instance, b.parent), (3, 2));
    assert_eq!(stat(&sm, p("/a")).unwrap().children, 1);
}

#[test]
fn mkdir_keeps_only_permission_bits() {
    let mut sm = StateMachine::new();
    let cmd = Command::Mkdir(cmd::Mkdir {
        at: p("/a"),
        mode: 0o40000 | 0o1777,
        uid: 0,
        gid: 0,
    });
    assert_eq!(ok_attr(&mut sm, cmd).mode, 0o1777);
}

#[test]
fn a_set_group_id_directory_passes_on_its_group_and_its_bit() {
    let mut sm = StateMachine::new();
    ok_attr(&mut sm, mkdir(p("/sg")));
    ok_attr(
        &mut sm,
        Command::SetAttr(cmd::SetAttr {
            target: p("/sg"),
            mode: Some(0o2777),
            uid: None,
            gid: Some(7),
            atime_ns: None,
            mtime_ns: None,
        }),
    );
    let d = ok_attr(&mut sm, mkdir(p("/sg/d")));
    assert_eq!((d.mode, d.uid, d.gid), (0o2755, 10, 7));
    let f = ok_attr(&mut sm, create(p("/sg/f"), true));
    assert_eq!((f.mode, f.uid, f.gid), (0o644, 10, 7));
    let n = ok_attr(&mut sm, put(p("/sg/d/n"), b"x"));
    assert_eq!((n.mode, n.uid, n.gid), (0o600, 7, 7));
    // Elsewhere the creator's group stays.
    assert_eq!(ok_attr(&mut sm, mkdir(p("/e"))).gid, 20);
}

#[test]
fn mkdir_errors() {
    let mut sm = sample();
    refused(&mut sm, mkdir(p("/d")), StateError::AlreadyExists);
    refused(&mut sm, mkdir(p("/g")), StateError::AlreadyExists);
    refused(&mut sm, mkdir(p("/")), StateError::AlreadyExists);
    refused(&mut sm, mkdir(p("/x/y")), StateError::NotFound);
    refused(&mut sm, mkdir(p("/g/y")), StateError::NotADirectory);
}

// ---- Create.

#[test]
fn create_makes_an_empty_file() {
    let mut sm = sample();
    let f = ok_attr(&mut sm, create(p("/d/new"), true));
    assert_eq!(
        (f.kind, f.mode, f.uid, f.gid, f.size),
        (Kind::File, 0o644, 10, 20, 0)
    );
    assert_eq!(
        (f.content_generation, f.ephemeral, f.children),
        (0, false, 0)
    );
    assert_eq!(read(&sm, "/d/new", 0, None), b"");
}

#[test]
fn create_of_an_existing_file() {
    let mut sm = sample();
    let before = stat(&sm, p("/g")).unwrap();
    // Not exclusive: the file as it is, contents and times untouched.
    let got = ok_attr(&mut sm, create(p("/g"), false));
    assert_eq!(got, before);
    assert_eq!(read(&sm, "/g", 0, None), b"x");
    refused(&mut sm, create(p("/g"), true), StateError::AlreadyExists);
    refused(&mut sm, create(p("/d"), false), StateError::IsADirectory);
    refused(&mut sm, create(p("/d"), true), StateError::AlreadyExists);
    refused(&mut sm, create(p("/"), false), StateError::IsADirectory);
    refused(&mut sm, create(p("/nope/f"), false), StateError::NotFound);
}

// ---- Write.

#[test]
fn append_writes_at_the_end_whatever_the_offset() {
    let mut sm = sample();
    let mut cmd = write(p("/d/f"), 0, b"++", false);
    if let Command::Write(cmd::Write { append, .. }) = &mut cmd {
        *append = true;
    }
    let a = ok_attr(&mut sm, cmd.clone());
    assert_eq!(read(&sm, "/d/f", 0, None), b"hello++");
    assert_eq!(a.size, 7);
    ok_attr(&mut sm, cmd);
    assert_eq!(read(&sm, "/d/f", 0, None), b"hello++++");
}

#[test]
fn write_overwrites_extends_and_bumps() {
    let mut sm = sample();
    let before = stat(&sm, p("/d/f")).unwrap();
    let a = ok_attr(&mut sm, write(p("/d/f"), 1, b"EL", false));
    assert_eq!(read(&sm, "/d/f", 0, None), b"hELlo");
    assert_eq!(a.content_generation, before.content_generation + 1);
    let a = into_attr(ok_at(&mut sm, NOW + 5, write(p("/d/f"), 5, b"!!", false)));
    assert_eq!(read(&sm, "/d/f", 0, None), b"hELlo!!");
    assert_eq!(a.size, 7);
    assert_eq!(a.content_generation, before.content_generation + 2);
    assert_eq!(
        (a.mtime_ns, a.ctime_ns, a.atime_ns),
        (NOW + 5, NOW + 5, before.atime_ns)
    );
    // The directory's entries did not change.
    assert_eq!(stat(&sm, p("/d")).unwrap().mtime_ns, NOW);
}

#[test]
fn sparse_writes_fill_the_gap_with_zeros() {
    let mut sm = sample();
    ok(&mut sm, write(p("/g"), 4, b"yz", false));
    assert_eq!(read(&sm, "/g", 0, None), b"x\0\0\0yz");
    ok(&mut sm, create(p("/e"), true));
    ok(&mut sm, write(p("/e"), 3, b"a", false));
    assert_eq!(read(&sm, "/e", 0, None), b"\0\0\0a");
}

#[test]
fn write_with_truncate_replaces_the_contents() {
    let mut sm = sample();
    let a = ok_attr(&mut sm, write(p("/d/f"), 0, b"HI", true));
    assert_eq!(read(&sm, "/d/f", 0, None), b"HI");
    assert_eq!(a.size, 2);
    ok(&mut sm, write(p("/d/f"), 2, b"yo", true));
    assert_eq!(read(&sm, "/d/f", 0, None), b"\0\0yo");
    // O_TRUNC with nothing written (folded in at close) empties the file.
    let a = ok_attr(&mut sm, write(p("/d/f"), 0, b"", true));
    assert_eq!(a.size, 0);
}

#[test]
fn an_empty_write_does_not_extend() {
    let mut sm = sample();
    let before = stat(&sm, p("/g")).unwrap();
    let a = ok_attr(&mut sm, write(p("/g"), 50, b"", false));
    assert_eq!(a.size, 1);
    assert_eq!(a.content_generation, before.content_generation + 1);
    ok(&mut sm, write(p("/g"), u64::MAX, b"", false));
    assert_eq!(read(&sm, "/g", 0, None), b"x");
}

#[test]
fn file_size_limit_is_inclusive() {
    let mut sm = sample();
    let limit = LIMIT as usize;
    ok(&mut sm, write(p("/g"), 0, &vec![1; limit], false));
    refused(
        &mut sm,
        write(p("/g"), limit as u64, b"z", false),
        StateError::FileTooLarge,
    );
    refused(
        &mut sm,
        write(p("/g"), 0, &vec![1; limit + 1], true),
        StateError::FileTooLarge,
    );
    refused(
        &mut sm,
        write(p("/g"), u64::MAX, b"z", false),
        StateError::FileTooLarge,
    );
    refused(
        &mut sm,
        Command::Truncate(cmd::Truncate {
            target: p("/g"),
            size: LIMIT + 1,
        }),
        StateError::FileTooLarge,
    );
    refused(
        &mut sm,
        put(p("/g"), &vec![2; limit + 1]),
        StateError::FileTooLarge,
    );
    refused(
        &mut sm,
        put(p("/new"), &vec![2; limit + 1]),
        StateError::FileTooLarge,
    );
    // With truncate the old contents do not count.
    ok(&mut sm, write(p("/g"), 1, &vec![3; limit - 1], true));
    assert_eq!(stat(&sm, p("/g")).unwrap().size, LIMIT);
    ok(&mut sm, put(p("/d/f"), &vec![4; limit]));
    assert_eq!(stat(&sm, p("/d/f")).unwrap().size, LIMIT);
    assert_eq!(StateError::FileTooLarge.errno(), 27);
}

#[test]
fn write_errors() {
    let mut sm = sample();
    refused(
        &mut sm,
        write(p("/d"), 0, b"x", false),
        StateError::IsADirectory,
    );
    refused(
        &mut sm,
        write(p("/"), 0, b"x", false),
        StateError::IsADirectory,
    );
    refused(
        &mut sm,
        write(p("/nope"), 0, b"x", false),
        StateError::NotFound,
    );
    refused(
        &mut sm,
        write(Target::Ino(99), 0, b"x", false),
        StateError::NotFound,
    );
}

// ---- Put.

#[test]
fn put_creates_or_replaces() {
    let mut sm = sample();
    let created = ok_attr(&mut sm, put(p("/d/new"), b"abc"));
    assert_eq!(
        (created.mode, created.uid, created.gid, created.size),
        (0o600, 7, 8, 3)
    );
    assert_eq!(created.content_generation, 1);
    assert_eq!(stat(&sm, p("/d")).unwrap().children, 2);
    let cmd = Command::Put(cmd::Put {
        at: p("/d/new"),
        data: b"z".to_vec(),
        mode: 0o777,
        uid: 1,
        gid: 1,
        if_generation: None,
    });
    let replaced = into_attr(ok_at(&mut sm, NOW + 1, cmd));
    assert_eq!(read(&sm, "/d/new", 0, None), b"z");
    assert_eq!(
        (replaced.instance, replaced.mode, replaced.uid),
        (created.instance, 0o600, 7)
    );
    assert_eq!(
        (replaced.content_generation, replaced.mtime_ns),
        (2, NOW + 1)
    );
    // Replacing contents leaves the directory's entries, and so its times, alone.
    assert_eq!(stat(&sm, p("/d")).unwrap().mtime_ns, NOW);
}

#[test]
fn put_errors() {
    let mut sm = sample();
    refused(&mut sm, put(p("/d"), b"x"), StateError::IsADirectory);
    refused(&mut sm, put(p("/"), b"x"), StateError::IsADirectory);
    refused(&mut sm, put(p("/nope/x"), b"x"), StateError::NotFound);
    refused(&mut sm, put(p("/g/x"), b"x"), StateError::NotADirectory);
}

// ---- Truncate.

#[test]
fn truncate_grows_and_shrinks() {
    let mut sm = sample();
    let a = ok_attr(
        &mut sm,
        Command::Truncate(cmd::Truncate {
            target: p("/d/f"),
            size: 2,
        }),
    );
    assert_eq!((a.size, a.content_generation), (2, 2));
    assert_eq!(read(&sm, "/d/f", 0, None), b"he");
    ok(
        &mut sm,
        Command::Truncate(cmd::Truncate {
            target: p("/d/f"),
            size: 4,
        }),
    );
    assert_eq!(read(&sm, "/d/f", 0, None), b"he\0\0");
    ok(
        &mut sm,
        Command::Truncate(cmd::Truncate {
            target: p("/d/f"),
            size: LIMIT,
        }),
    );
    refused(
        &mut sm,
        Command::Truncate(cmd::Truncate {
            target: p("/d"),
            size: 0,
        }),
        StateError::IsADirectory,
    );
    refused(
        &mut sm,
        Command::Truncate(cmd::Truncate {
            target: p("/x"),
            size: 0,
        }),
        StateError::NotFound,
    );
}

// ---- Unlink and rmdir.

#[test]
fn unlink_removes_a_file() {
    let mut sm = sample();
    let f = sm.lookup(&p("/d/f")).unwrap();
    assert_eq!(
        ok_at(
            &mut sm,
            NOW + 3,
            Command::Unlink(cmd::Unlink { at: p("/d/f") })
        ),
        Outcome::Done
    );
    assert_eq!(sm.lookup(&p("/d/f")), Err(StateError::NotFound));
    assert_eq!(sm.lookup(&Target::Ino(f)), Err(StateError::NotFound));
    let d = stat(&sm, p("/d")).unwrap();
    assert_eq!((d.children, d.mtime_ns, d.ctime_ns), (0, NOW + 3, NOW + 3));
    assert_eq!(sm.len(), 3);
}

#[test]
fn unlink_errors() {
    let mut sm = sample();
    refused(
        &mut sm,
        Command::Unlink(cmd::Unlink { at: p("/d") }),
        StateError::IsADirectory,
    );
    refused(
        &mut sm,
        Command::Unlink(cmd::Unlink { at: p("/") }),
        StateError::IsADirectory,
    );
    refused(
        &mut sm,
        Command::Unlink(cmd::Unlink {
            at: Target::Ino(ROOT),
        }),
        StateError::IsADirectory,
    );
    refused(
        &mut sm,
        Command::Unlink(cmd::Unlink { at: p("/nope") }),
        StateError::NotFound,
    );
}

#[test]
fn rmdir_removes_an_empty_directory() {
    let mut sm = sample();
    ok(&mut sm, mkdir(p("/e")));
    assert_eq!(
        ok_at(&mut sm, NOW + 2, Command::Rmdir(cmd::Rmdir { at: p("/e") })),
        Outcome::Done
    );
    assert_eq!(sm.lookup(&p("/e")), Err(StateError::NotFound));
    let root = stat(&sm, p("/")).unwrap();
    assert_eq!((root.children, root.mtime_ns), (2, NOW + 2));
}

#[test]
fn rmdir_errors() {
    let mut sm = sample();
    refused(
        &mut sm,
        Command::Rmdir(cmd::Rmdir { at: p("/d") }),
        StateError::NotEmpty,
    );
    refused(
        &mut sm,
        Command::Rmdir(cmd::Rmdir { at: p("/g") }),
        StateError::NotADirectory,
    );
    refused(
        &mut sm,
        Command::Rmdir(cmd::Rmdir { at: p("/") }),
        StateError::Busy,
    );
    refused(
        &mut sm,
        Command::Rmdir(cmd::Rmdir {
            at: Target::Ino(ROOT),
        }),
        StateError::Busy,
    );
    refused(
        &mut sm,
        Command::Rmdir(cmd::Rmdir { at: p("/nope") }),
        StateError::NotFound,
    );
}

// ---- Rename.

#[test]
fn rename_moves_a_file_keeping_its_instance() {
    let mut sm = sample();
    let f = stat(&sm, p("/d/f")).unwrap();
    ok(&mut sm, mkdir(p("/e")));
    assert_eq!(
        ok_at(&mut sm, NOW + 7, rename(p("/d/f"), p("/e/moved"))),
        Outcome::Done
    );
    let moved = stat(&sm, p("/e/moved")).unwrap();
    assert_eq!(
        (moved.instance, moved.parent),
        (f.instance, sm.lookup(&p("/e")).unwrap())
    );
    assert_eq!((moved.ctime_ns, moved.mtime_ns), (NOW + 7, f.mtime_ns));
    assert_eq!(moved.content_generation, f.content_generation);
    assert_eq!(read(&sm, "/e/moved", 0, None), b"hello");
    assert_eq!(sm.lookup(&p("/d/f")), Err(StateError::NotFound));
    for dir in ["/d", "/e"] {
        let d = stat(&sm, p(dir)).unwrap();
        assert_eq!((d.mtime_ns, d.ctime_ns), (NOW + 7, NOW + 7), "{dir}");
    }
    // Within one directory, by instance and by child.
    let e = sm.lookup(&p("/e")).unwrap();
    ok(&mut sm, rename(Target::Ino(f.instance), child(e, "again")));
    assert_eq!(names(&sm, p("/e")), ["again"]);
}

#[test]
fn rename_replaces_an_existing_file() {
    let mut sm = sample();
    let f = sm.lookup(&p("/d/f")).unwrap();
    let g = sm.lookup(&p("/g")).unwrap();
    ok(&mut sm, rename(p("/g"), p("/d/f")));
    assert_eq!(sm.lookup(&p("/d/f")), Ok(g));
    assert_eq!(sm.lookup(&Target::Ino(f)), Err(StateError::NotFound));
    assert_eq!(read(&sm, "/d/f", 0, None), b"x");
    assert_eq!(names(&sm, p("/")), ["d"]);
    assert_eq!(sm.len(), 3);
}

#[test]
fn rename_onto_itself_changes_nothing() {
    let mut sm = sample();
    sm.take_changes();
    let before = sm.snapshot();
    assert_eq!(ok(&mut sm, rename(p("/g"), p("//g"))), Outcome::Done);
    assert_eq!(sm.snapshot(), before);
}

#[test]
fn rename_errors() {
    let mut sm = sample();
    refused(&mut sm, rename(p("/d"), p("/g")), StateError::NotADirectory);
    refused(
        &mut sm,
        rename(p("/d"), p("/d/e")),
        StateError::InvalidArgument("a directory cannot move below itself".into()),
    );
    refused(&mut sm, rename(p("/"), p("/e")), StateError::Busy);
    refused(&mut sm, rename(p("/g"), p("/d")), StateError::IsADirectory);
    refused(&mut sm, rename(p("/g"), p("/")), StateError::Busy);
    refused(&mut sm, rename(p("/nope"), p("/e")), StateError::NotFound);
    refused(&mut sm, rename(p("/g"), p("/nope/e")), StateError::NotFound);
    refused(
        &mut sm,
        rename(p("/g"), p("/d/f/e")),
        StateError::NotADirectory,
    );
    refused(
        &mut sm,
        rename(p("/g"), child(ROOT, "..")),
        StateError::InvalidName("..".into()),
    );
}

// ---- SetAttr.

#[test]
fn set_attr_changes_permissions_owner_and_times() {
    let mut sm = sample();
    let a = into_attr(ok_at(&mut sm, NOW + 1, chmod(p("/g"), 0o100_4751)));
    assert_eq!(
        (a.mode, a.acl_generation, a.ctime_ns, a.mtime_ns),
        (0o4751, 1, NOW + 1, NOW)
    );
    let cmd = Command::SetAttr(cmd::SetAttr {
        target: p("/g"),
        mode: None,
        uid: Some(5),
        gid: Some(6),
        atime_ns: Some(11),
        mtime_ns: Some(12),
    });
    let a = into_attr(ok_at(&mut sm, NOW + 2, cmd));
    assert_eq!((a.mode, a.uid, a.gid, a.acl_generation), (0o4751, 5, 6, 2));
    assert_eq!((a.atime_ns, a.mtime_ns, a.ctime_ns), (11, 12, NOW + 2));
    // Same value again still counts as a change of permissions.
    assert_eq!(ok_attr(&mut sm, chmod(p("/g"), 0o4751)).acl_generation, 3);
    // Times only: no acl change.
    let times = Command::SetAttr(cmd::SetAttr {
        target: p("/d"),
        mode: None,
        uid: None,
        gid: None,
        atime_ns: Some(1),
        mtime_ns: None,
    });
    let d = into_attr(ok_at(&mut sm, NOW + 3, times));
    assert_eq!(
        (d.atime_ns, d.mtime_ns, d.ctime_ns, d.acl_generation),
        (1, NOW, NOW + 3, 0)
    );
    assert_eq!(d.content_generation, 0);
    refused(&mut sm, chmod(p("/nope"), 0), StateError::NotFound);
}

// ---- Ephemeral directories.

#[test]
fn files_created_in_an_ephemeral_directory_are_ephemeral() {
    let mut sm = sample();
    ok(&mut sm, mkdir(p("/eph")));
    let eph = Command::SetEphemeral(cmd::SetEphemeral {
        target: p("/eph"),
        ephemeral: true,
    });
    let dir = into_attr(ok_at(&mut sm, NOW + 1, eph));
    assert_eq!((dir.ephemeral, dir.ctime_ns), (true, NOW + 1));
    let s = session(&mut sm, "h1");
    assert!(open_new(&mut sm, s, "/eph/a").1.ephemeral);
    assert!(open_new(&mut sm, s, "/eph/b").1.ephemeral);
    assert!(!ok_attr(&mut sm, mkdir(p("/eph/sub"))).ephemeral);
    assert!(!ok_attr(&mut sm, create(p("/eph/sub/c"), true)).ephemeral);
    // The flag belongs to the file from its creation on.
    ok(&mut sm, rename(p("/eph/a"), p("/moved")));
    assert!(stat(&sm, p("/moved")).unwrap().ephemeral);
    ok(&mut sm, rename(p("/g"), p("/eph/g")));
    assert!(!stat(&sm, p("/eph/g")).unwrap().ephemeral);
    ok(
        &mut sm,
        Command::SetEphemeral(cmd::SetEphemeral {
            target: p("/eph"),
            ephemeral: false,
        }),
    );
    assert!(stat(&sm, p("/eph/b")).unwrap().ephemeral);
    assert!(!ok_attr(&mut sm, create(p("/eph/later"), true)).ephemeral);
}

#[test]
fn new_files_in_an_ephemeral_directory_come_only_from_open() {
    let mut sm = sample();
    ok(
        &mut sm,
        Command::SetEphemeral(cmd::SetEphemeral {
            target: p("/d"),
            ephemeral: true,
        }),
    );
    let refusal = StateError::InvalidArgument(
        "files in an ephemeral directory are created by opening them".into(),
    );
    refused(&mut sm, create(p("/d/new"), false), refusal.clone());
    refused(&mut sm, put(p("/d/new"), b"x"), refusal);
    // Existing files (made before the directory was marked) are written as usual.
    ok(&mut sm, put(p("/d/f"), b"again"));
    ok(&mut sm, create(p("/d/f"), false));
    ok(&mut sm, write(p("/d/f"), 0, b"A", false));
    ok(&mut sm, mkdir(p("/d/sub")));
}

#[test]
fn only_directories_are_marked_ephemeral() {
    let mut sm = sample();
    let cmd = Command::SetEphemeral(cmd::SetEphemeral {
        target: p("/g"),
        ephemeral: true,
    });
    refused(&mut sm, cmd, StateError::NotADirectory);
    let cmd = Command::SetEphemeral(cmd::SetEphemeral {
        target: p("/x"),
        ephemeral: true,
    });
    refused(&mut sm, cmd, StateError::NotFound);
}

// ---- Queries.

#[test]
fn read_ranges() {
    let sm = sample();
    assert_eq!(read(&sm, "/d/f", 0, None), b"hello");
    assert_eq!(read(&sm, "/d/f", 1, Some(3)), b"ell");
    assert_eq!(read(&sm, "/d/f", 3, Some(100)), b"lo");
    assert_eq!(read(&sm, "/d/f", 5, None), b"");
    assert_eq!(read(&sm, "/d/f", 500, Some(2)), b"");
    assert_eq!(read(&sm, "/d/f", u64::MAX, Some(u64::MAX)), b"");
    assert_eq!(read(&sm, "/d/f", 2, Some(0)), b"");
    let Ok(Outcome::Data { attr, .. }) = sm.query(&Query::Read {
        target: p("/d/f"),
        offset: 0,
        len: None,
    }) else {
        panic!("read failed");
    };
    assert_eq!(attr, stat(&sm, p("/d/f")).unwrap());
    let q = Query::Read {
        target: p("/d"),
        offset: 0,
        len: None,
    };
    assert_eq!(sm.query(&q), Err(StateError::IsADirectory));
    let q = Query::Read {
        target: p("/x"),
        offset: 0,
        len: None,
    };
    assert_eq!(sm.query(&q), Err(StateError::NotFound));
}

#[test]
fn readdir_lists_entries_sorted_by_name() {
    let mut sm = StateMachine::new();
    for name in ["b", "a", "C", "aa"] {
        ok(&mut sm, create(child(ROOT, name), true));
    }
    ok(&mut sm, mkdir(p("/dir")));
    let Ok(Outcome::Entries(entries)) = sm.query(&Query::Readdir(p("/"))) else {
        panic!("readdir failed");
    };
    let listed: Vec<_> = entries.iter().map(|e| (e.name.as_str(), e.kind)).collect();
    assert_eq!(
        listed,
        [
            ("C", Kind::File),
            ("a", Kind::File),
            ("aa", Kind::File),
            ("b", Kind::File),
            ("dir", Kind::Dir)
        ]
    );
    for e in &entries {
        assert_eq!(sm.lookup(&child(ROOT, &e.name)), Ok(e.instance));
    }
    assert_eq!(stat(&sm, p("/")).unwrap().children, 5);
    assert_eq!(
        sm.query(&Query::Readdir(p("/a"))),
        Err(StateError::NotADirectory)
    );
    assert_eq!(
        sm.query(&Query::Readdir(p("/z"))),
        Err(StateError::NotFound)
    );
}

#[test]
fn stat_through_every_kind_of_target() {
    let sm = sample();
    let by_path = stat(&sm, p("/d/f")).unwrap();
    assert_eq!(
        stat(&sm, Target::Ino(by_path.instance)),
        Ok(by_path.clone())
    );
    assert_eq!(stat(&sm, child(by_path.parent, "f")), Ok(by_path.clone()));
    assert_eq!(sm.attr(by_path.instance), Ok(by_path));
    assert_eq!(stat(&sm, p("/d/none")), Err(StateError::NotFound));
}

// ---- Instances and time.

#[test]
fn instances_are_never_reused() {
    let mut sm = StateMachine::new();
    let a = ok_attr(&mut sm, create(p("/a"), true)).instance;
    ok(&mut sm, Command::Unlink(cmd::Unlink { at: p("/a") }));
    let b = ok_attr(&mut sm, create(p("/a"), true)).instance;
    assert!(b > a);
    ok(&mut sm, Command::Unlink(cmd::Unlink { at: p("/a") }));
    // Nor across a reload: the counter is in the meta record.
    let mut reloaded = StateMachine::from_records(sm.records()).unwrap();
    let c = ok_attr(&mut reloaded, mkdir(p("/a"))).instance;
    assert_eq!((a, b, c), (2, 3, 4));
    // A failed creation does not use one up.
    refused(&mut reloaded, mkdir(p("/a")), StateError::AlreadyExists);
    assert_eq!(ok_attr(&mut reloaded, mkdir(p("/b"))).instance, 5);
}

#[test]
fn the_clock_never_goes_backwards() {
    let mut sm = StateMachine::new();
    ok_at(&mut sm, 500, mkdir(p("/a")));
    let b = into_attr(ok_at(&mut sm, 100, mkdir(p("/b"))));
    assert_eq!((b.atime_ns, b.mtime_ns, b.ctime_ns), (500, 500, 500));
    assert_eq!(sm.clock_ns(), 500);
    let c = into_attr(ok_at(&mut sm, 900, put(p("/b/c"), b"")));
    assert_eq!(c.mtime_ns, 900);
    assert_eq!(
        StateMachine::from_records(sm.records()).unwrap().clock_ns(),
        900
    );
}

// ---- Persistence.

#[test]
fn take_changes_returns_each_changed_record_once_in_key_order() {
    let mut sm = StateMachine::new();
    let initial = sm.take_changes();
    let keys: Vec<_> = initial.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(
        keys,
        [
            b"m/meta".to_vec(),
            [b"n/".as_slice(), &1u64.to_be_bytes()].concat()
        ]
    );
    assert_eq!(sm.take_changes(), vec![]);

    ok(&mut sm, mkdir(p("/a")));
    ok(&mut sm, put(p("/a/f"), b"1"));
    ok(&mut sm, put(p("/a/f"), b"2"));
    ok(&mut sm, create(p("/tmp"), true));
    ok(&mut sm, Command::Unlink(cmd::Unlink { at: p("/tmp") }));
    let changes = sm.take_changes();
    let summary: Vec<_> = changes
        .iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(&k[..2]).into_owned(),
                k.len(),
                v.is_some(),
            )
        })
        .collect();
    let key = |ino: u64| [b"n/".as_slice(), &ino.to_be_bytes()].concat();
    assert_eq!(
        changes.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        [b"m/meta".to_vec(), key(1), key(2), key(3), key(4)]
    );
    assert_eq!(
        summary.iter().map(|s| s.2).collect::<Vec<_>>(),
        [true, true, true, true, false]
    );
    // The live value is the last one written.
    let mut store: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    apply_changes(&mut store, initial);
    apply_changes(&mut store, changes);
    let reloaded = StateMachine::from_records(store).unwrap();
    assert_eq!(reloaded.snapshot(), sm.snapshot());
    let q = Query::Read {
        target: p("/a/f"),
        offset: 0,
        len: None,
    };
    assert_eq!(reloaded.query(&q), sm.query(&q));
}

fn apply_changes(store: &mut BTreeMap<Vec<u8>, Vec<u8>>, changes: Vec<Change>) {
    for (key, value) in changes {
        match value {
            Some(value) => store.insert(key, value),
            None => store.remove(&key),
        };
    }
}

#[test]
fn records_round_trip() {
    let mut sm = sample();
    ok(
        &mut sm,
        Command::SetEphemeral(cmd::SetEphemeral {
            target: p("/d"),
            ephemeral: true,
        }),
    );
    let s = session(&mut sm, "h1");
    open_new(&mut sm, s, "/d/e");
    ok(&mut sm, put(p("/d/e"), b"eph"));
    ok(&mut sm, chmod(p("/g"), 0o640));
    let records = sm.records();
    // Meta, the nodes, the session and its handle.
    assert_eq!(records.len(), sm.len() + 3);
    assert!(
        records.windows(2).all(|w| w[0].0 < w[1].0),
        "records are sorted"
    );
    let reloaded = StateMachine::from_records(records.clone()).unwrap();
    assert_eq!(reloaded.records(), records);
    assert_eq!(reloaded.snapshot(), sm.snapshot());
    assert_eq!(stat(&reloaded, p("/d/e")), stat(&sm, p("/d/e")));
    assert_eq!(names(&reloaded, p("/d")), ["e", "f"]);
    // Any order, and records of other kinds are left alone.
    let mut shuffled: Vec<_> = records.into_iter().rev().collect();
    shuffled.push((b"x/future/1".to_vec(), b"not ours".to_vec()));
    shuffled.push((b"m/other".to_vec(), b"not ours".to_vec()));
    let reloaded = StateMachine::from_records(shuffled).unwrap();
    assert_eq!(reloaded.snapshot(), sm.snapshot());
}

#[test]
fn no_records_give_a_new_tree() {
    let mut empty = StateMachine::from_records(Vec::new()).unwrap();
    let mut new = StateMachine::new();
    assert_eq!(empty.snapshot(), new.snapshot());
    assert_eq!(empty.take_changes(), new.take_changes());
    let others = vec![(b"x/1".to_vec(), vec![1])];
    assert_eq!(
        StateMachine::from_records(others).unwrap().snapshot(),
        new.snapshot()
    );
}

#[test]
fn loading_refuses_corrupt_records() {
    let sm = sample();
    let records = sm.records();
    let f = sm.lookup(&p("/d/f")).unwrap();
    let d = sm.lookup(&p("/d")).unwrap();
    let g = sm.lookup(&p("/g")).unwrap();
    let without =
        |key: &[u8]| -> Vec<_> { records.iter().filter(|(k, _)| k != key).cloned().collect() };
    let node_key = |ino: u64| [b"n/".as_slice(), &ino.to_be_bytes()].concat();
    let corrupt = |records: Vec<(Vec<u8>, Vec<u8>)>| {
        let err = StateMachine::from_records(records).err();
        assert!(matches!(err, Some(StateError::Corrupt(_))), "{err:?}");
        assert_eq!(err.unwrap().errno(), 5);
    };
    // A child whose parent is missing.
    corrupt(without(&node_key(d)));
    // No root, no meta.
    corrupt(without(&node_key(ROOT)));
    corrupt(without(b"m/meta"));
    // Undecodable values and malformed keys.
    let mut bad = records.clone();
    bad[1].1.push(0);
    corrupt(bad);
    let mut bad = records.clone();
    bad.push((b"n/short".to_vec(), bad[1].1.clone()));
    corrupt(bad);
    let mut bad = records.clone();
    bad[0].1 = vec![0xff; 3];
    corrupt(bad);
    // Records are the meta record, then nodes by instance: records[ino] is node ino.
    let f_node: super::node::Node = super::record::decode("node", &records[f as usize].1).unwrap();
    // A child of a file: /d/f re-parented below the file /g.
    let mut node = f_node.clone();
    node.parent = g;
    let mut bad = without(&node_key(f));
    bad.push((node_key(f), super::record::encode(&node)));
    corrupt(bad);
    // Two nodes with one name in one directory: /g replaced by a second /d/f.
    let mut bad = without(&node_key(g));
    bad.push((node_key(g), super::record::encode(&f_node)));
    corrupt(bad);
    // A directory that is its own parent is not reachable from the root.
    let mut node: super::node::Node =
        super::record::decode("node", &records[d as usize].1).unwrap();
    node.parent = d;
    let mut bad = without(&node_key(d));
    bad.push((node_key(d), super::record::encode(&node)));
    corrupt(bad);
    // An instance at or above the next instance number.
    let mut bad = without(&node_key(g));
    bad.push((node_key(sm.next_instance()), records[g as usize].1.clone()));
    corrupt(bad);
    // The same key twice.
    let mut bad = records.clone();
    bad.push(records[1].clone());
    corrupt(bad);
}

#[test]
fn snapshot_and_restore() {
    let mut sm = sample();
    ok(&mut sm, Command::Unlink(cmd::Unlink { at: p("/g") }));
    let snapshot = sm.snapshot();
    let mut restored = StateMachine::restore(&snapshot).unwrap();
    assert_eq!(restored.snapshot(), snapshot);
    assert_eq!(restored.records(), sm.records());
    assert_eq!(restored.take_changes(), vec![]);
    assert_eq!(
        (
            restored.len(),
            restored.next_instance(),
            restored.clock_ns()
        ),
        (3, 5, NOW)
    );
    // Both go on identically.
    let a = ok(&mut sm, put(p("/h"), b"1"));
    let b = ok(&mut restored, put(p("/h"), b"1"));
    assert_eq!(a, b);
    assert_eq!(restored.snapshot(), sm.snapshot());
    assert!(matches!(
        StateMachine::restore(b"garbage"),
        Err(StateError::Corrupt(_))
    ));
    assert!(matches!(
        StateMachine::restore(&snapshot[..snapshot.len() - 1]),
        Err(StateError::Corrupt(_))
    ));
}

#[test]
fn every_error_has_its_errno() {
    let cases = [
        (StateError::NotPermitted, 1),
        (StateError::NotFound, 2),
        (StateError::Corrupt("x".into()), 5),
        (StateError::Busy, 16),
        (StateError::AlreadyExists, 17),
        (StateError::CrossDevice, 18),
        (StateError::NotADirectory, 20),
        (StateError::IsADirectory, 21),
        (StateError::InvalidArgument("x".into()), 22),
        (StateError::InvalidName("x".into()), 22),
        (StateError::FileTooLarge, 27),
        (StateError::NameTooLong, 36),
        (StateError::NotEmpty, 39),
        (StateError::BadHandle, 9),
        (StateError::NoLocks, 37),
        (StateError::SessionExpired, 127),
        (
            StateError::QuotaExceeded("quota: at most 1 nodes".into()),
            122,
        ),
    ];
    for (err, errno) in cases {
        assert_eq!(err.errno(), errno, "{err:?}");
    }
    assert_eq!(
        StateError::NotFound.to_string(),
        "no such file or directory"
    );
    assert_eq!(StateError::SessionExpired.to_string(), "session expired");
}
