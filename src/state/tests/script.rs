//! Data-driven scenarios: every `testscripts/state/*.txt` is a list of `> command` lines, each
//! followed by its expected output. The runner replays the commands on a fresh tree and
//! compares the whole file; `UPDATE_SCRIPTS=1` rewrites the files with the actual output
//! instead (review the diff!).
//!
//! Commands: `mkdir|create|put|write|truncate|unlink|rmdir|rename|setattr|ephemeral|stat|read|ls`,
//! then targets (`#ino`, `#parent:name`, anything else is a path), then `key=value` options
//! (`mode= uid= gid= data= off= len= size= atime= mtime=`) and flags (`excl`, `trunc`, `off`).
//! `time N` and `limit N` set the leader time and file size limit for the commands that follow.
//! Attributes print as `kind #instance parent=#p mode owner=uid:gid size times gen=content/lock/acl
//! children [ephemeral]`; errors as `error: Variant`.

use std::collections::BTreeMap;
use std::path::Path;

use super::super::*;

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
        },
    };
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
        let command = match *op {
            "time" => return self.set(|ctx| ctx.time_ns = number(rest[0])),
            "limit" => return self.set(|ctx| ctx.max_file_size = number(rest[0])),
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
            "mkdir" => Command::Mkdir {
                at: at(),
                mode: mode.unwrap_or(0o755),
                uid: uid.unwrap_or(0),
                gid: gid.unwrap_or(0),
            },
            "create" => Command::Create {
                at: at(),
                mode: mode.unwrap_or(0o644),
                uid: uid.unwrap_or(0),
                gid: gid.unwrap_or(0),
                exclusive: flag("excl"),
            },
            "put" => Command::Put {
                at: at(),
                data,
                mode: mode.unwrap_or(0o644),
                uid: uid.unwrap_or(0),
                gid: gid.unwrap_or(0),
            },
            "write" => Command::Write {
                target: at(),
                offset: num("off").unwrap_or(0),
                data,
                truncate: flag("trunc"),
            },
            "truncate" => Command::Truncate {
                target: at(),
                size: num("size").expect("size="),
            },
            "unlink" => Command::Unlink { at: at() },
            "rmdir" => Command::Rmdir { at: at() },
            "rename" => Command::Rename {
                from: at(),
                to: targets[1].clone(),
            },
            "setattr" => Command::SetAttr {
                target: at(),
                mode,
                uid,
                gid,
                atime_ns: num("atime"),
                mtime_ns: num("mtime"),
            },
            "ephemeral" => Command::SetEphemeral {
                target: at(),
                ephemeral: !flag("off"),
            },
            other => panic!("unknown command {other:?}"),
        };
        self.ctx.index += 1;
        show(self.sm.apply(&self.ctx, &command))
            .lines()
            .map(str::to_owned)
            .collect()
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

const FLAGS: [&str; 3] = ["excl", "trunc", "off"];

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

/// Decimal, or octal with a leading 0 (modes).
fn number(text: &str) -> u64 {
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
        Ok(Outcome::Attr(attr)) => show_attr(&attr),
        Ok(Outcome::Data { data, .. }) => format!("{:?}", String::from_utf8_lossy(&data)),
        Ok(Outcome::Entries(entries)) if entries.is_empty() => "(empty)".into(),
        Ok(Outcome::Entries(entries)) => entries
            .iter()
            .map(|e| format!("{} {} #{}", e.name, kind(e.kind), e.instance))
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

fn kind(kind: Kind) -> &'static str {
    match kind {
        Kind::Dir => "dir",
        Kind::File => "file",
    }
}

fn show_attr(a: &Attr) -> String {
    format!(
        "{} #{} parent=#{} mode={:o} owner={}:{} size={} atime={} mtime={} ctime={} gen={}/{}/{} children={}{}",
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
        if a.ephemeral { " ephemeral" } else { "" }
    )
}
