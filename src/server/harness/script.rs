//! The node scripts (`src/server/testscripts/node/*.txt`): blocks of commands, each followed by
//! `----` and the output the commands must print, blocks apart by a blank line; `#` starts a
//! comment line (comments go before a block's commands). Every command prints the answers to requests that came in while it ran (`#N nID
//! what: answer`) and the snapshots delivered; `status` prints every node. A run that prints
//! anything else fails with both outputs; `LOCKFS_REWRITE=1` writes what was printed instead.
//!
//! Commands (IDs are node ids; `k=v` arguments are optional):
//! - `start ID... [snapshot_entries=N] [lock_delay_ms=N] [log-format=N]`: the initial cluster
//!   (first, once); `log-format=N`: its nodes read log formats up to N only, as an older
//!   lockfs does
//! - `campaign ID`: ID starts an election now
//! - `tick [ID...] [times=N]`: the nodes (all when none is named) tick, nothing is delivered
//! - `deliver [times=N]`: what is in flight is delivered, or dropped where a link is cut
//! - `stabilize`: deliver until nothing is in flight
//! - `run ticks=N`: N rounds of every node ticking and the network stabilizing
//! - `status`; `formats`: the log format each node reads, and the one its applied state says
//!   the cluster writes
//! - `put ID PATH DATA`, `read ID PATH`, `session ID ttl=MS`, `keepalive ID SESSION`,
//!   `sessions ID` (a read of the live sessions' ids)
//! - `crash ID`, `restart ID [log-format=N]` (from now on, node ID reads log formats up to N)
//! - `partition ID... | ID...`, `cut FROM TO` (one way), `heal`
//! - `add VIA ID [promote=0] [log-format=N]`, `remove VIA ID`, `promote VIA ID`: membership
//!   changes asked of VIA (`promote=0`: the new member stays a learner)

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use super::{show, Cluster, Settings};
use crate::encoding::LogFormat;
use crate::server::membership::MemberOp;

/// One block: its commands (with their line numbers) and the output it must print.
struct Block {
    commands: Vec<(usize, String)>,
    comments: Vec<String>,
    expected: String,
}

fn parse(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    loop {
        while lines.peek().is_some_and(|(_, l)| l.trim().is_empty()) {
            lines.next();
        }
        if lines.peek().is_none() {
            return blocks;
        }
        let mut block = Block {
            commands: Vec::new(),
            comments: Vec::new(),
            expected: String::new(),
        };
        for (n, line) in lines.by_ref() {
            if line == "----" {
                break;
            }
            if line.trim_start().starts_with('#') {
                block.comments.push(line.to_string());
            } else if !line.trim().is_empty() {
                block.commands.push((n + 1, line.to_string()));
            }
        }
        for (_, line) in lines.by_ref() {
            if line.is_empty() {
                break;
            }
            block.expected.push_str(line);
            block.expected.push('\n');
        }
        blocks.push(block);
    }
}

/// A command's words: positional ones, and `k=v` ones.
struct Args {
    words: Vec<String>,
    named: BTreeMap<String, String>,
}

impl Args {
    fn of(line: &str) -> Args {
        let mut words = Vec::new();
        let mut named = BTreeMap::new();
        for w in line.split_whitespace() {
            match w.split_once('=') {
                Some((k, v)) => {
                    named.insert(k.to_string(), v.to_string());
                }
                None => words.push(w.to_string()),
            }
        }
        Args { words, named }
    }

    fn id(&self, i: usize) -> u64 {
        let w = self
            .words
            .get(i)
            .unwrap_or_else(|| panic!("a node id is missing: {:?}", self.words));
        w.parse().unwrap_or_else(|_| panic!("not a node id: {w}"))
    }

    fn ids(&self, from: usize) -> Vec<u64> {
        (from..self.words.len()).map(|i| self.id(i)).collect()
    }

    fn word(&self, i: usize) -> &str {
        self.words
            .get(i)
            .unwrap_or_else(|| panic!("an argument is missing: {:?}", self.words))
    }

    /// `log-format=N`: the newest log format a node reads (see `Cluster::set_reads`).
    fn log_format(&self) -> Option<LogFormat> {
        self.named.get("log-format").map(|v| {
            v.parse()
                .ok()
                .and_then(LogFormat::from_number)
                .unwrap_or_else(|| panic!("log-format={v}: not a log format"))
        })
    }

    fn num(&self, key: &str, default: u64) -> u64 {
        self.named.get(key).map_or(default, |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{key}={v}: not a number"))
        })
    }
}

/// Runs one command; what it prints is appended to `out`.
fn command(cluster: &mut Option<Cluster>, line: &str, out: &mut String) {
    let args = Args::of(line);
    let name = args.word(0).to_string();
    if name == "start" {
        assert!(cluster.is_none(), "start comes once, first");
        let settings = Settings {
            snapshot_entries: args.num("snapshot_entries", 10_000),
            lock_delay: std::time::Duration::from_millis(args.num("lock_delay_ms", 5_000)),
            ..Settings::default()
        };
        let ids = args.ids(1);
        let reads = args.log_format();
        *cluster = Some(Cluster::start(&ids, settings, reads));
        return;
    }
    let c = cluster.as_mut().expect("start comes first");
    match name.as_str() {
        "campaign" => c.campaign(args.id(1)),
        "tick" => {
            let ids = match args.ids(1) {
                ids if ids.is_empty() => c.running(),
                ids => ids,
            };
            for _ in 0..args.num("times", 1) {
                for &id in &ids {
                    c.tick(id);
                }
            }
        }
        "deliver" => {
            for _ in 0..args.num("times", 1) {
                c.deliver();
            }
        }
        "stabilize" => c.stabilize(),
        "run" => c.run(args.num("ticks", 1) as usize),
        "status" => out.push_str(&c.describe()),
        "put" => {
            let (id, path, data) = (args.id(1), args.word(2), args.word(3));
            c.put(id, path, data);
        }
        "read" => c.read(args.id(1), args.word(2)),
        "session" => c.open_session(args.id(1), args.num("ttl", 10_000)),
        "keepalive" => c.keep_alive(args.id(1), args.id(2)),
        "sessions" => c.sessions(args.id(1)),
        "crash" => c.crash(args.id(1)),
        "restart" => {
            if let Some(format) = args.log_format() {
                c.set_reads(args.id(1), format);
            }
            c.restart(args.id(1));
        }
        "formats" => out.push_str(&c.describe_formats()),
        "partition" => {
            let rest = line.trim_start().trim_start_matches("partition");
            let (a, b) = rest
                .split_once('|')
                .unwrap_or_else(|| panic!("partition A... | B...: {line}"));
            let ids = |s: &str| -> Vec<u64> {
                s.split_whitespace()
                    .map(|w| w.parse().unwrap_or_else(|_| panic!("not a node id: {w}")))
                    .collect()
            };
            c.partition(&ids(a), &ids(b));
        }
        "cut" => c.cut_one_way(args.id(1), args.id(2)),
        "heal" => c.heal(),
        "add" => {
            if let Some(format) = args.log_format() {
                c.set_reads(args.id(2), format);
            }
            c.add(args.id(1), args.id(2), args.num("promote", 1) == 1);
        }
        "remove" => c.change_members(args.id(1), MemberOp::Remove { id: args.id(2) }),
        "promote" => c.change_members(args.id(1), MemberOp::Promote { id: args.id(2) }),
        other => panic!("unknown command {other:?}"),
    }
    for line in c.take_log() {
        let _ = writeln!(out, "{line}");
    }
    for answer in c.answers() {
        let _ = writeln!(out, "{}", show(&answer));
    }
}

/// Runs the script at `path`; returns it as it should read given what the commands printed.
fn run(path: &Path) -> (String, String) {
    let text = std::fs::read_to_string(path).expect("the script reads");
    let mut cluster = None;
    let mut rewritten = String::new();
    for block in parse(&text) {
        let mut out = String::new();
        for comment in &block.comments {
            let _ = writeln!(rewritten, "{comment}");
        }
        for (n, line) in &block.commands {
            let _ = writeln!(rewritten, "{line}");
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                command(&mut cluster, line, &mut out)
            }));
            if let Err(e) = r {
                let msg = super::panic_message(&*e);
                panic!("{}:{n}: {line}: {msg}", path.display());
            }
        }
        rewritten.push_str("----\n");
        rewritten.push_str(&out);
        rewritten.push('\n');
    }
    (text, rewritten)
}

#[test]
fn node_scripts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/server/testscripts/node");
    let mut scripts: Vec<_> = std::fs::read_dir(&dir)
        .expect("the scripts' directory")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    scripts.sort();
    assert!(!scripts.is_empty(), "no scripts in {}", dir.display());
    let rewrite = std::env::var_os("LOCKFS_REWRITE").is_some();
    let mut failed = Vec::new();
    for path in &scripts {
        let (text, want) = run(path);
        let want = format!("{}\n", want.trim_end());
        if text == want {
            continue;
        }
        if rewrite {
            std::fs::write(path, &want).expect("the script is rewritten");
        } else {
            failed.push(format!(
                "{} printed other than it says:\n--- the script\n{text}\n--- printed\n{want}",
                path.display()
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
