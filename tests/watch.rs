//! Watches from a shell: `lockfs watch` and `lockfs wait` against a real 3-node cluster and two
//! real mounts standing for two hosts. Every event kind, the same order for every watcher, a
//! resync after the watcher's server is killed, watches ending with their session, and each
//! condition of `lockfs wait` (through a mount path) with its timeout.
//!
//! These need root and `/dev/fuse`; without them they fail loudly. Background processes run in
//! their own process groups and are killed when the test ends, then the mounts are stopped,
//! then the cluster.

mod common;

use std::time::Duration;

use common::hosts::{kill_group, wait_until, Hosts};

/// Starts `lockfs watch ARGS` in the background, its lines into `$OUT/name` and its stderr
/// into `$OUT/name.err`; returns once the watch is registered.
fn start_watch(h: &mut Hosts, name: &str, args: &str) -> u32 {
    let script = format!("exec \"$LOCKFS\" watch {args} > \"$OUT/{name}\" 2> \"$OUT/{name}.err\"");
    let pid = h.spawn("bash", &["-c", &script]);
    wait_until(&format!("watch {name} registered"), || {
        assert!(
            h.running(pid),
            "watch {name} exited: {}",
            h.read_out(&format!("{name}.err"))
        );
        h.read_out(&format!("{name}.err")).contains("watching")
    });
    pid
}

/// The JSON lines of a watcher, parsed.
fn events(h: &Hosts, name: &str) -> Vec<serde_json::Value> {
    h.read_out(name)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}: {l:?}: {e}")))
        .collect()
}

/// (index, event, path) of each line.
fn summary(events: &[serde_json::Value]) -> Vec<(u64, String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["index"].as_u64().expect("index"),
                e["event"].as_str().expect("event").to_string(),
                e["path"].as_str().expect("path").to_string(),
            )
        })
        .collect()
}

fn has(events: &[serde_json::Value], event: &str, path: &str) -> bool {
    events
        .iter()
        .any(|e| e["event"] == event && e["path"] == path)
}

#[test]
fn three_watchers_see_every_kind_of_event_in_the_same_order() {
    let mut h = Hosts::start();
    h.ok("mkdir \"$A/w\"");
    for name in ["w1", "w2", "w3"] {
        start_watch(&mut h, name, "/w --json");
    }
    start_watch(&mut h, "deep", "/w --recursive --json");
    // Two hosts write at once, then every other kind of change.
    h.ok(r#"
        ( for i in $(seq 1 15); do echo "a$i" > "$A/w/a"; done ) &
        ( for i in $(seq 1 15); do echo "b$i" > "$B/w/b"; done ) &
        wait
        chmod 600 "$A/w/a"
        flock "$A/w/a" true
        flock -s "$B/w/b" true
        mkdir "$B/w/sub"
        echo deep > "$B/w/sub/deep"
        mv "$A/w/a" "$A/w/c"
        rm "$B/w/b"
        echo end > "$A/w/end"
    "#);
    for name in ["w1", "w2", "w3", "deep"] {
        wait_until(&format!("{name} saw the end"), || {
            has(&events(&h, name), "modified", "/w/end")
        });
    }
    let first = events(&h, "w1");
    let seq = summary(&first);
    for name in ["w2", "w3"] {
        assert_eq!(
            summary(&events(&h, name)),
            seq,
            "{name} saw another sequence"
        );
    }
    assert!(
        seq.windows(2).all(|w| w[0].0 <= w[1].0),
        "indexes go back: {seq:?}"
    );
    for (event, path) in [
        ("created", "/w/a"),
        ("created", "/w/b"),
        ("modified", "/w/a"),
        ("modified", "/w/b"),
        ("attrib", "/w/a"),
        ("locked", "/w/a"),
        ("unlocked", "/w/a"),
        ("locked", "/w/b"),
        ("unlocked", "/w/b"),
        ("created", "/w/sub"),
        ("deleted", "/w/a"),
        ("created", "/w/c"),
        ("deleted", "/w/b"),
        ("created", "/w/end"),
    ] {
        assert!(has(&first, event, path), "no {event} {path} in {seq:#?}");
    }
    // Each host's 15 writes, in its own order.
    for (path, host) in [("/w/a", "a"), ("/w/b", "b")] {
        let sizes: Vec<u64> = first
            .iter()
            .filter(|e| e["event"] == "modified" && e["path"] == path)
            .map(|e| e["generation"].as_u64().unwrap())
            .collect();
        assert_eq!(sizes, (1..=15).collect::<Vec<u64>>(), "{host}'s writes");
    }
    // Lock events name their holder, its host and the fencing generation.
    let locked: Vec<&serde_json::Value> = first.iter().filter(|e| e["event"] == "locked").collect();
    assert_eq!(locked[0]["holder"]["host"], "host-a", "{:?}", locked[0]);
    assert_eq!(locked[0]["holder"]["mode"], "exclusive");
    assert_eq!(locked[0]["holders"], 1);
    assert!(locked[0]["generation"].as_u64().unwrap() > 0);
    assert_eq!(locked[1]["holder"]["host"], "host-b");
    assert_eq!(locked[1]["holder"]["mode"], "shared");
    // Below a child directory only with --recursive.
    assert!(!has(&first, "created", "/w/sub/deep"), "{seq:#?}");
    assert!(has(&events(&h, "deep"), "created", "/w/sub/deep"));
}

#[test]
fn a_watcher_resyncs_when_its_server_dies_and_goes_on() {
    let mut h = Hosts::start();
    let leader = h.cluster.wait_leader(Duration::from_secs(30));
    let addr = h.cluster.addr(leader);
    h.ok("echo 0 | \"$LOCKFS\" put /r");
    start_watch(&mut h, "w", &format!("--servers {addr} /r --json"));
    h.ok("echo 1 | \"$LOCKFS\" put /r");
    wait_until("the first change", || {
        has(&events(&h, "w"), "modified", "/r")
    });
    h.cluster.kill(leader);
    // Writes go on through the other members; the watcher finds them too.
    let others: Vec<String> = (1..=3)
        .filter(|&id| id != leader)
        .map(|id| h.cluster.addr(id))
        .collect();
    h.ok(&format!(
        "echo 2 | \"$LOCKFS\" put --servers {} /r",
        others.join(",")
    ));
    wait_until("a resync, then the change after the failover", || {
        let seen = events(&h, "w");
        let resync = seen.iter().position(|e| e["event"] == "resync");
        resync.is_some_and(|r| {
            seen[r + 1..]
                .iter()
                .any(|e| e["event"] == "modified" && e["generation"].as_u64() >= Some(2))
                || seen[r]["generation"].as_u64() >= Some(2)
        })
    });
    let seen = events(&h, "w");
    let r = seen.iter().position(|e| e["event"] == "resync").unwrap();
    assert_eq!(seen[r]["path"], "/r");
    assert_eq!(seen[r]["exists"], true);
    assert!(
        seen[..r]
            .iter()
            .all(|e| e["index"].as_u64() <= seen[r]["index"].as_u64()),
        "events before the resync are older than it: {seen:#?}"
    );
}

#[test]
fn a_watch_ends_with_its_session() {
    let mut h = Hosts::start();
    h.ok("mkdir \"$A/s\"");
    let pid = start_watch(&mut h, "w", "--ttl 2 /s --json");
    h.ok("echo 1 > \"$A/s/before\"");
    wait_until("the first event", || {
        has(&events(&h, "w"), "created", "/s/before")
    });
    // Frozen past its TTL: the cluster ends the session, and the watch with it.
    kill_group(pid, libc::SIGSTOP);
    std::thread::sleep(Duration::from_secs(8));
    h.ok("echo 1 > \"$A/s/after\"");
    kill_group(pid, libc::SIGCONT);
    let status = h.wait_child(pid);
    assert!(
        !status.success(),
        "the watch went on after its session ended"
    );
    let err = h.read_out("w.err");
    assert!(err.contains("expired"), "{err}");
    assert!(!has(&events(&h, "w"), "created", "/s/after"));
}

#[test]
fn wait_returns_when_each_condition_holds_and_times_out_otherwise() {
    let mut h = Hosts::start();
    h.ok("mkdir \"$A/wt\"");
    // Each wait is started, seen still waiting, then satisfied from the other host. Paths
    // are on mount A: the mount says where the cluster is.
    let wait = |h: &mut Hosts, name: &str, condition: &str| -> u32 {
        let pid = h.spawn(
            "bash",
            &[
                "-c",
                &format!(
                    "\"$LOCKFS\" wait \"$A/wt/f\" --for {condition} 2> \"$OUT/{name}.err\"; \
                     echo $? > \"$OUT/{name}.rc\""
                ),
            ],
        );
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            h.read_out(&format!("{name}.rc")).is_empty(),
            "wait --for {condition} returned at once: {}",
            h.read_out(&format!("{name}.err"))
        );
        pid
    };
    let returned = |h: &Hosts, name: &str| {
        wait_until(&format!("wait {name} returned"), || {
            !h.read_out(&format!("{name}.rc")).is_empty()
        });
        assert_eq!(
            h.read_out(&format!("{name}.rc")).trim(),
            "0",
            "{}",
            h.read_out(&format!("{name}.err"))
        );
    };
    wait(&mut h, "exists", "exists");
    h.ok("echo 1 > \"$B/wt/f\"");
    returned(&h, "exists");

    wait(&mut h, "changed", "changed");
    h.ok("echo 2 > \"$B/wt/f\"");
    returned(&h, "changed");

    wait(&mut h, "locked", "locked");
    let holder = h.spawn_ready(
        "exec 9>>\"$B/wt/f\" && flock 9 && touch \"$OUT/held\" && exec sleep 1000",
        "held",
    );
    returned(&h, "locked");

    wait(&mut h, "unlocked", "unlocked");
    h.kill9(holder);
    returned(&h, "unlocked");

    wait(&mut h, "gone", "gone");
    h.ok("rm \"$B/wt/f\"");
    returned(&h, "gone");

    // Timeouts: exit 1 with a message; 0 checks once.
    let out = h.sh("\"$LOCKFS\" wait /wt/never --for exists --timeout 1");
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("timed out"), "{}", out.stderr);
    let out = h.sh("\"$LOCKFS\" wait /wt --for exists --timeout 0");
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let out = h.sh("\"$LOCKFS\" wait \"$A/wt/f\" --for exists --timeout 0");
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    // A path on a mount is not taken for a cluster path: /wt/f is gone, so is $A/wt/f.
    let out = h.sh("\"$LOCKFS\" wait \"$A/wt/f\" --for gone --timeout 0");
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
}

#[test]
fn inotify_on_a_mount_sees_other_hosts_create_and_delete() {
    let mut h = Hosts::start();
    h.ok("mkdir \"$A/n\"; setfattr -n user.lockfs.ephemeral -v 1 \"$A/n\"");
    // The watching host mounts with -o inotify.
    let mut d = h.extra_mount("d", "host-a", "allow_other,inotify");
    let watcher = h.spawn(
        "bash",
        &[
            "-c",
            &format!(
                "exec inotifywait -m -e create,delete \"{}/n\" > \"$OUT/inotify\" 2> \"$OUT/inotify.err\"",
                d.path.display()
            ),
        ],
    );
    wait_until("inotifywait ready", || {
        h.read_out("inotify.err").contains("Watches established")
    });
    // Host C holds an ephemeral file, then dies (kill -9 of its mount): the file vanishes
    // when its session expires (TTL 2 s).
    let mut c = h.extra_mount("c", "host-b", "allow_other,ttl=2");
    let cpath = c.path.display().to_string();
    let holder = h.spawn_ready(
        &format!("exec 8>\"{cpath}/n/member\" && touch \"$OUT/held\" && exec sleep 1000"),
        "held",
    );
    h.ok("echo x > \"$B/n/file\"; mkdir \"$B/n/dir\"; rm \"$B/n/file\"; rmdir \"$B/n/dir\"");
    // Files in an ephemeral directory live while held open: the two hosts' own are gone at
    // their close, C's when C dies.
    wait_until("B's changes reported", || {
        h.read_out("inotify").contains("DELETE,ISDIR dir")
    });
    if let Some(pid) = c.pid() {
        // SAFETY: kill(2) of a mount process this test started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    wait_until("the dead host's ephemeral file reported deleted", || {
        h.read_out("inotify").contains("DELETE member")
    });
    h.kill9(holder);
    c.stop();
    let log = h.read_out("inotify");
    let lines: Vec<&str> = log
        .lines()
        .map(|l| l.split_once(' ').map_or(l, |(_, r)| r))
        .collect();
    for want in [
        "CREATE member",
        "CREATE file",
        "CREATE,ISDIR dir",
        "DELETE file",
        "DELETE,ISDIR dir",
        "DELETE member",
    ] {
        assert!(lines.contains(&want), "no {want:?} in {lines:?}");
    }
    h.kill9(watcher);
    d.stop();
}

/// A file that lives only a moment on another host is still reported created, then deleted:
/// the replay of its creation may come when it is gone already.
#[test]
fn inotify_reports_files_that_lived_only_a_moment_elsewhere() {
    let mut h = Hosts::start();
    // In an ephemeral directory a file goes at its last close: a moment after its creation.
    h.ok("mkdir \"$A/q\"; setfattr -n user.lockfs.ephemeral -v 1 \"$A/q\"");
    let mut d = h.extra_mount("d", "host-a", "allow_other,inotify");
    let watcher = h.spawn(
        "bash",
        &[
            "-c",
            &format!(
                "exec inotifywait -m -e create,delete \"{}/q\" > \"$OUT/inotify\" 2> \"$OUT/inotify.err\"",
                d.path.display()
            ),
        ],
    );
    wait_until("inotifywait ready", || {
        h.read_out("inotify.err").contains("Watches established")
    });
    h.ok("for i in $(seq 1 10); do : > \"$B/q/f$i\"; done");
    wait_until("every deletion reported", || {
        h.read_out("inotify").contains("DELETE f10")
    });
    let log = h.read_out("inotify");
    let lines: Vec<&str> = log
        .lines()
        .map(|l| l.split_once(' ').map_or(l, |(_, r)| r))
        .collect();
    for i in 1..=10 {
        let (created, deleted) = (format!("CREATE f{i}"), format!("DELETE f{i}"));
        let at = |want: &str| lines.iter().position(|l| *l == want);
        match (at(&created), at(&deleted)) {
            (Some(c), Some(d)) => assert!(c < d, "f{i} deleted before created: {lines:?}"),
            _ => panic!("f{i} not reported created and deleted: {lines:?}"),
        }
    }
    h.kill9(watcher);
    d.stop();
}
