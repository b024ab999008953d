//! Data-driven scenarios: every `testscripts/state/*.txt` is a list of `> command` lines, each
//! followed by its expected output. The runner replays the commands on a fresh tree and
//! compares the whole file; `UPDATE_SCRIPTS=1` rewrites the files with the actual output
//! instead (review the diff!).
//!
//! Commands: `mkdir|create|put|write|truncate|unlink|rmdir|rename|rename-noreplace|exchange|
//! link|symlink|setattr|ephemeral|stat|read|ls` (`symlink PATH data=TARGET`),
//! then targets (`#ino`, `#parent:name`, anything else is a path), then `key=value` options
//! (`mode= uid= gid= data= off= len= size= atime= mtime= ifgen=`) and flags (`excl`, `trunc`, `off`).
//! `time N`, `limit N` and `delay N` set the leader time, file size limit and lock-delay for the
//! commands that follow.
//! Attributes print as `kind #instance parent=#p mode owner=uid:gid size times gen=content/lock/acl
//! children [ephemeral] [links=N]` (links only when a file has other than one); errors as
//! `error: Variant`.
//!
//! Sessions and locks: `session host= ttl= pid= name=`, `endsession s=`, `expire s=`,
//! `open s= TARGET [create] [excl]`, `close s= h=`, `lock s= h= o= flock|posix sh|ex start= end=
//! [wait] pid=`, `unlock s= h= o= flock|posix start= end=`, `cancel s= wait=`, `wake`, and the
//! queries `getlock ...` (as lock), `locks`, `sessions`. `end=max` is `u64::MAX`. Any command
//! takes `req=session:seq:first_unacked` to go through deduplication. The events a command
//! emits print after its output as `event: ...`.

use std::collections::BTreeMap;
use std::path::Path;

use super::super::*;
use crate::state::cmd;

#[test]
fn scripts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testscripts/state");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("testscripts/state exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "txt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no scripts in {}", dir.display());
    for file in files {
        let expected = std::fs::read_to_string(&file).unwrap();
        let actual = run_script(&expected);
        if std::env::var_os("UPDATE_SCRIPTS").is_some() {
            std::fs::write(&file, &actual).unwrap();
        } else {
            assert_eq!(
                actual,
                expected,
                "{} (UPDATE_SCRIPTS=1 rewrites it)",
                file.display()
            );
        }
    }
}

/// The script with every command's output replaced by what the state machine printed.
fn run_script(script: &str) -> String {
    let mut runner = Runner {
        sm: StateMachine::new(),
        ctx: ApplyCtx {
            index: 0,
            time_ns: 0,
            max_file_size: 256 * 1024,
            lock_delay_ns: 0,
            caller: None,
            quotas: None,
        },
    };
    runner.sm.take_events();
    let mut out = String::new();
    let mut in_output = false;
    for line in script.lines() {
        if let Some(command) = line.strip_prefix("> ") {
            out.push_str(line);
            out.push('\n');
            for printed in runner.run(command) {
                out.push_str(&printed);
                out.push('\n');
            }
            in_output = true;
        } else if line.is_empty() || line.starts_with('#') {
            out.push_str(line);
            out.push('\n');
            in_output = false;
        } else {
            // Expected output of the command above: replaced by the actual output.
            assert!(in_output, "stray line outside a command's output: {line:?}");
        }
    }
    out
}

struct Runner {
    sm: StateMachine,
    ctx: ApplyCtx,
}

impl Runner {
    fn run(&mut self, line: &str) -> Vec<String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (op, rest) = words.split_first().expect("empty command");
        let targets: Vec<Target> = rest
            .iter()
            .filter(|w| is_target(w))
            .map(|w| target(w))
            .collect();
        let options: BTreeMap<&str, &str> = rest
            .iter()
            .filter(|w| !is_target(w))
            .map(|w| w.split_once('=').unwrap_or((w, "")))
            .collect();
        let flag = |name: &str| options.contains_key(name);
        let num = |name: &str| options.get(name).map(|v| number(v));
        let (mode, uid, gid) = (
            num("mode").map(|m| m as u32),
            num("uid").map(|u| u as u32),
            num("gid").map(|g| g as u32),
        );
        let data = options
            .get("data")
            .map_or(Vec::new(), |d| d.as_bytes().to_vec());
        let at = || targets.first().cloned().expect("command needs a target");
        let text = |name: &str| options.get(name).map_or(String::new(), |v| v.to_string());
        let id = |name: &str| num(name).unwrap_or_else(|| panic!("{op} needs {name}="));
        let style = if flag("posix") {
            LockStyle::Posix
        } else {
            LockStyle::Flock
        };
        let kind = if flag("ex") {
            LockKind::Exclusive
        } else {
            LockKind::Shared
        };
        let (start, end) = (num("start").unwrap_or(0), num("end").unwrap_or(u64::MAX));
        let command = match *op {
            "time" => return self.set(|ctx| ctx.time_ns = number(rest[0])),
            "limit" => return self.set(|ctx| ctx.max_file_size = number(rest[0])),
            "delay" => return self.set(|ctx| ctx.lock_delay_ns = number(rest[0])),
            "locks" => return self.query(Query::Locks { after: 0, limit: 0 }),
            "sessions" => return self.query(Query::Sessions { after: 0, limit: 0 }),
            "getlock" => {
                return self.query(Query::GetLock {
                    session: id("s"),
                    handle: id("h"),
                    owner: id("o"),
                    style,
                    kind,
                    start,
                    end,
                })
            }
            "session" => Command::OpenSession(cmd::OpenSession {
                ttl_ms: num("ttl").unwrap_or(10_000),
                host: text("host"),
                pid: num("pid").unwrap_or(0) as u32,
                name: text("name"),
                owner: text("owner"),
                secret: num("secret").unwrap_or(0).into(),
                cache: false,
            }),
            "endsession" => Command::CloseSession(cmd::CloseSession { session: id("s") }),
            "expire" => Command::ExpireSession(cmd::ExpireSession { session: id("s") }),
            "open" => Command::Open(cmd::Open {
                session: id("s"),
                at: at(),
                create: flag("create").then(|| CreateSpec {
                    mode: mode.unwrap_or(0o644),
                    uid: uid.unwrap_or(0),
                    gid: gid.unwrap_or(0),
                    exclusive: flag("excl"),
                }),
            }),
            "close" => Command::Close(cmd::Close {
                session: id("s"),
                handle: id("h"),
            }),
            "lock" => Command::Lock(cmd::Lock {
                session: id("s"),
                handle: id("h"),
                owner: id("o"),
                style,
                kind,
                start,
                end,
                wait: flag("wait"),
                pid: num("pid").unwrap_or(0) as u32,
            }),
            "unlock" => Command::Unlock(cmd::Unlock {
                session: id("s"),
                handle: id("h"),
                owner: id("o"),
                style,
                start,
                end,
            }),
            "cancel" => Command::CancelWait(cmd::CancelWait {
                session: id("s"),
                wait: id("wait"),
            }),
            "wake" => Command::Wake,
            "stat" => return self.query(Query::Stat(at())),
            "ls" => return self.query(Query::Readdir(at())),
            "read" => {
                let q = Query::Read {
                    target: at(),
                    offset: num("off").unwrap_or(0),
                    len: num("len"),
                };
                return self.query(q);
            }
            "mkdir" => Command::Mkdir(cmd::Mkdir {
                at: at(),
                mode: mode.unwrap_or(0o755),
                uid: uid.unwrap_or(0),
                gid: gid.unwrap_or(0),
            }),
            "create" => Command::Create(cmd::Create {
                at: at(),
                mode: mode.unwrap_or(0o644),
                uid: uid.unwrap_or(0),
                gid: gid.unwrap_or(0),
                exclusive: flag("excl"),
            }),
            "put" => Command::Put(cmd::Put {
                at: at(),
                data,
                mode: mode.unwrap_or(0o644),
                uid: uid.unwrap_or(0),
                gid: gid.unwrap_or(0),
                if_generation: num("ifgen"),
            }),
            "write" => Command::Write(cmd::Write {
                target: at(),
                offset: num("off").unwrap_or(0),
                data,
                truncate: flag("trunc"),
                append: flag("append"),
            }),
            "truncate" => Command::Truncate(cmd::Truncate {
                target: at(),
                size: num("size").expect("size="),
            }),
            "unlink" => Command::Unlink(cmd::Unlink { at: at() }),
            "rmdir" => Command::Rmdir(cmd::Rmdir { at: at() }),
            "rename" => Command::Rename(cmd::Rename {
                from: at(),
                to: targets[1].clone(),
            }),
            "rename-noreplace" => Command::RenameNoReplace(cmd::RenameNoReplace {
                from: at(),
                to: targets[1].clone(),
            }),
            "exchange" => Command::Exchange(cmd::Exchange {
                a: at(),
                b: targets[1].clone(),
            }),
            "link" => Command::Link(cmd::Link {
                target: at(),
                at: targets[1].clone(),
            }),
            "symlink" => Command::Symlink(cmd::Symlink {
                at: at(),
                target: text("data"),
                uid: uid.unwrap_or(0),
                gid: gid.unwrap_or(0),
            }),
            "setattr" => Command::SetAttr(cmd::SetAttr {
                target: at(),
                mode,
                uid,
                gid,
                atime_ns: num("atime"),
                mtime_ns: num("mtime"),
            }),
            "ephemeral" => Command::SetEphemeral(cmd::SetEphemeral {
                target: at(),
                ephemeral: !flag("off"),
            }),
            other => panic!("unknown command {other:?}"),
        };
        self.ctx.index += 1;
        let req = options.get("req").map(|r| {
            let n: Vec<u64> = r.split(':').map(number).collect();
            RequestId {
                session: n[0],
                seq: n[1],
                first_unacked: n[2],
            }
        });
        let result = self.sm.apply_request(&self.ctx, req.as_ref(), &command);
        let mut out: Vec<String> = show(result).lines().map(str::to_owned).collect();
        out.extend(
            self.sm
                .take_events()
                .iter()
                .map(|e| format!("event: {}", show_event(e))),
        );
        out
    }

    fn set(&mut self, change: impl FnOnce(&mut ApplyCtx)) -> Vec<String> {
        change(&mut self.ctx);
        Vec::new()
    }

    fn query(&self, q: Query) -> Vec<String> {
        show(self.sm.query(&q)).lines().map(str::to_owned).collect()
    }
}

/// Anything that is neither `key=value` nor a flag; paths need not be valid, to test refusals.
fn is_target(word: &str) -> bool {
    !word.contains('=') && !FLAGS.contains(&word)
}

const FLAGS: [&str; 12] = [
    "append", "excl", "trunc", "off", "create", "wait", "sh", "ex", "flock", "posix", "locks",
    "sessions",
];

/// `#ino`, `#parent:name`, or else a path.
fn target(word: &str) -> Target {
    match word.strip_prefix('#') {
        None => Target::Path(word.to_owned()),
        Some(ino) => match ino.split_once(':') {
            None => Target::Ino(number(ino)),
            Some((parent, name)) => Target::Child {
                parent: number(parent),
                name: name.to_owned(),
            },
        },
    }
}

/// Decimal, octal with a leading 0 (modes), or `max`.
fn number(text: &str) -> u64 {
    if text == "max" {
        return u64::MAX;
    }
    let parsed = match text.strip_prefix('0') {
        Some(octal) if !octal.is_empty() => u64::from_str_radix(octal, 8),
        _ => text.parse(),
    };
    parsed.unwrap_or_else(|_| panic!("not a number: {text:?}"))
}

fn show(result: Result<Outcome, StateError>) -> String {
    match result {
        Err(err) => format!("error: {err:?}"),
        Ok(Outcome::Done) => "ok".into(),
        Ok(Outcome::Attr(attr) | Outcome::Made { attr, .. }) => show_attr(&attr),
        Ok(Outcome::Data { data, .. }) => format!("{:?}", String::from_utf8_lossy(&data)),
        Ok(Outcome::Entries(entries)) if entries.is_empty() => "(empty)".into(),
        Ok(Outcome::Entries(entries)) => entries
            .iter()
            .map(|e| format!("{} {} #{}", e.name, kind(e.kind), e.instance))
            .collect::<Vec<_>>()
            .join("\n"),
        Ok(Outcome::Session { id, .. }) => format!("session {id}"),
        Ok(Outcome::Opened { handle, attr, .. }) => {
            format!("handle {handle}: {}", show_attr(&attr))
        }
        Ok(Outcome::Lock(LockResult::Granted { generation })) => {
            format!("granted gen={generation}")
        }
        Ok(Outcome::Lock(LockResult::GrantedOnLoss {
            generation,
            on_loss,
        })) => format!("granted gen={generation} on_loss={on_loss:?}"),
        Ok(Outcome::Lock(LockResult::Queued { wait })) => format!("queued wait={wait}"),
        Ok(Outcome::Lock(LockResult::WouldBlock { conflict: None })) => "would block".into(),
        Ok(Outcome::Lock(LockResult::WouldBlock {
            conflict: Some(holder),
        })) => format!("would block: {}", show_holder(&holder)),
        Ok(Outcome::Cancelled { was_granted }) => format!("cancelled was_granted={was_granted}"),
        Ok(Outcome::LockProbe(None)) => "no conflict".into(),
        Ok(Outcome::LockProbe(Some(holder))) => format!("conflict: {}", show_holder(&holder)),
        Ok(Outcome::Locks { locks: infos, .. }) if infos.is_empty() => "(no locks)".into(),
        Ok(Outcome::Locks { locks: infos, .. }) => infos
            .iter()
            .flat_map(|info| {
                let head = format!(
                    "{} #{} gen={} delay_until={}",
                    info.path, info.instance, info.lock_generation, info.delay_until_ns
                );
                let holders = info
                    .holders
                    .iter()
                    .map(|h| format!("  holder {}", show_holder(h)));
                let waiters = info.waiters.iter().map(|w| {
                    format!(
                        "  waiter wait={} s={} o={} {} pid={} host={} since={}",
                        w.wait,
                        w.session,
                        w.owner,
                        show_lock(w.style, w.kind, w.start, w.end),
                        w.pid,
                        w.host,
                        w.since_ns
                    )
                });
                std::iter::once(head).chain(holders).chain(waiters)
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Ok(Outcome::Sessions { sessions, .. }) if sessions.is_empty() => "(no sessions)".into(),
        Ok(Outcome::Sessions { sessions, .. }) => sessions
            .iter()
            .map(|s| {
                format!(
                    "session {} ttl={} host={} pid={} name={} handles={} created={}",
                    s.id, s.ttl_ms, s.host, s.pid, s.name, s.handles, s.created_ns
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

fn show_lock(style: LockStyle, kind: LockKind, start: u64, end: u64) -> String {
    let end = if end == u64::MAX {
        "max".to_string()
    } else {
        end.to_string()
    };
    format!("{style:?} {kind:?} [{start},{end})")
}

fn show_holder(h: &LockHolder) -> String {
    format!(
        "s={} o={} {} pid={} host={} since={}",
        h.session,
        h.owner,
        show_lock(h.style, h.kind, h.start, h.end),
        h.pid,
        h.host,
        h.since_ns
    )
}

fn show_event(event: &Event) -> String {
    match event {
        Event::Granted {
            session,
            wait,
            instance,
            generation,
            on_loss,
        } => format!(
            "granted s={session} wait={wait} #{instance} gen={generation}{}",
            on_loss
                .map(|v| format!(" on_loss={v:?}"))
                .unwrap_or_default()
        ),
        Event::WaitFailed {
            session,
            wait,
            error,
        } => format!("wait failed s={session} wait={wait}: {error:?}"),
        Event::SessionEnded { session, expired } => {
            format!("session {session} ended expired={expired}")
        }
        Event::LockRevoked {
            session,
            instance,
            owner,
            ..
        } => format!("revoked s={session} #{instance} owner={owner}"),
    }
}

fn kind(kind: Kind) -> &'static str {
    match kind {
        Kind::Dir => "dir",
        Kind::File => "file",
        Kind::Symlink => "symlink",
    }
}

fn show_attr(a: &Attr) -> String {
    format!(
        "{} #{} parent=#{} mode={:o} owner={}:{} size={} atime={} mtime={} ctime={} gen={}/{}/{} children={}{}{}",
        kind(a.kind),
        a.instance,
        a.parent,
        a.mode,
        a.uid,
        a.gid,
        a.size,
        a.atime_ns,
        a.mtime_ns,
        a.ctime_ns,
        a.content_generation,
        a.lock_generation,
        a.acl_generation,
        a.children,
        if a.ephemeral { " ephemeral" } else { "" },
        match (a.kind, a.links) {
            (Kind::File | Kind::Symlink, 1) | (Kind::Dir, 2) => String::new(),
            (_, n) => format!(" links={n}"),
        }
    )
}
