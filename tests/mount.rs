//! The mount as users touch it: a real 3-node cluster, two real `lockfs mount` processes standing
//! for two hosts, and nothing but shell tools (`flock`, `cat`, `echo`, bash `noclobber`,
//! `getfattr`, `setfattr`) and Python's `fcntl` against them. Faults: kill -9 of lock holders,
//! of the leader, and unmounts.
//!
//! These need root and `/dev/fuse`; without them they fail loudly. Every background process is
//! started in its own process group and killed (the group) when the test ends, then the mounts
//! are stopped, then the cluster.

mod common;

use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::hosts::{
    kill_group, note_state_of, noted_dead, run, wait_until, Hosts, Out, COMMAND_LIMIT, WAIT_LIMIT,
};
use common::Rng;

/// A script that takes `flock` on `file` through fd 9, runs `then`, creates `$OUT/marker` and
/// then holds the lock until killed (bash becomes `sleep`, which keeps fd 9).
fn holder(file: &str, then: &str, marker: &str) -> String {
    format!("exec 9>>\"{file}\" && flock 9 && {then} touch \"$OUT/{marker}\" && exec sleep 1000")
}

/// A numeric `user.lockfs.NAME` attribute of `path`, read with getfattr(1).
fn xattr_number(h: &Hosts, name: &str, path: &str) -> u64 {
    h.ok(&format!(
        "getfattr --only-values -n user.lockfs.{name} \"{path}\""
    ))
    .trim()
    .parse()
    .expect("a number")
}

fn generation(h: &Hosts, path: &str) -> u64 {
    xattr_number(h, "lock_generation", path)
}

#[test]
fn leader_election_with_flock_echo_and_cat() {
    let mut h = Hosts::start();
    h.ok("mkdir -p \"$A/svc/db\" && touch \"$A/svc/db/leader\"");
    let gen0 = generation(&h, "$A/svc/db/leader");
    // Host A is elected and advertises itself; everyone reads it.
    let a = h.spawn_ready(
        &holder(
            "$A/svc/db/leader",
            "echo hostA:5432 > \"$A/svc/db/leader\" &&",
            "elected-a",
        ),
        "elected-a",
    );
    assert_eq!(h.ok("cat \"$B/svc/db/leader\""), "hostA:5432\n");
    let gen1 = generation(&h, "$B/svc/db/leader");
    assert!(gen1 > gen0, "an exclusive grant bumps the generation");
    let holders = h.ok("getfattr --only-values -n user.lockfs.holders \"$B/svc/db/leader\"");
    assert!(holders.contains("exclusive"), "holders: {holders}");
    // Host B cannot take it while A lives; its candidate waits.
    let out = h.sh("flock -n \"$B/svc/db/leader\" true");
    assert_eq!(out.status.code(), Some(1), "flock -n on a held lock");
    let b = h.spawn(
        "bash",
        &[
            "-c",
            &holder(
                "$B/svc/db/leader",
                "echo hostB:5432 > \"$B/svc/db/leader\" &&",
                "elected-b",
            ),
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !h.out("elected-b").exists(),
        "B elected while A holds the lock"
    );
    // A dies: B takes over at once (a closed file releases its flock, no TTL involved).
    h.kill9(a);
    let took = wait_until("B elected", || h.out("elected-b").exists());
    eprintln!("B elected {took:?} after A's kill -9");
    assert!(h.running(b));
    wait_until("the new leader's address", || {
        h.ok("cat \"$A/svc/db/leader\"") == "hostB:5432\n"
    });
    assert!(generation(&h, "$A/svc/db/leader") > gen1);
    // Shared locks: two readers on two hosts hold `flock -s` together; a writer cannot.
    h.kill9(b);
    h.ok("touch \"$A/svc/db/schema\"");
    let r1 = h.spawn_ready(
        "exec 9<\"$A/svc/db/schema\" && flock -s 9 && touch \"$OUT/r1\" && exec sleep 1000",
        "r1",
    );
    h.ok("flock -s -n \"$B/svc/db/schema\" true");
    assert_eq!(
        h.sh("flock -n \"$B/svc/db/schema\" true").status.code(),
        Some(1)
    );
    h.kill9(r1);
    h.ok("flock -n \"$B/svc/db/schema\" true");
}

#[test]
fn flock_counter_is_exact_across_two_mounts() {
    let h = Hosts::start();
    h.ok("echo 0 > \"$A/counter\" && touch \"$A/counter.lock\"");
    // 2 mounts x 4 processes x 50 rounds of read-increment-write under flock.
    let script = r#"
        for i in $(seq 50); do
            flock "$M/counter.lock" bash -c 'n=$(cat "$M/counter") && echo $((n + 1)) > "$M/counter"' || exit 1
        done"#;
    let started = Instant::now();
    let mut workers = Vec::new();
    for i in 0..8 {
        let mount = if i % 2 == 0 { &h.a.path } else { &h.b.path };
        let mut cmd = h.command("bash");
        cmd.arg("-c").arg(script).env("M", mount);
        workers.push(std::thread::spawn(move || {
            run(cmd, Duration::from_secs(600))
        }));
    }
    for w in workers {
        let out = w.join().expect("worker");
        assert!(out.status.success(), "worker failed: {}", out.stderr);
    }
    eprintln!("400 locked increments in {:?}", started.elapsed());
    assert_eq!(h.ok("cat \"$B/counter\""), "400\n");
}

fn content_generation(h: &Hosts, path: &str) -> u64 {
    xattr_number(h, "content_generation", path)
}

#[test]
fn compare_and_set_through_the_cli_with_generations_from_the_mount() {
    let h = Hosts::start();
    h.ok("echo 0 > \"$A/counter\"");
    let g = content_generation(&h, "$B/counter");
    // One `echo >` is one write: one generation.
    h.ok("echo 1 > \"$A/counter\"");
    assert_eq!(content_generation(&h, "$B/counter"), g + 1);
    // At the current generation the put applies; at an older one it is refused with status 3
    // and one line, and changes nothing.
    h.ok(&format!(
        "echo 2 | \"$LOCKFS\" put --if-generation {} /counter",
        g + 1
    ));
    let out = h.sh(&format!(
        "echo 3 | \"$LOCKFS\" put --if-generation {} /counter",
        g + 1
    ));
    assert_eq!(out.status.code(), Some(3), "stale CAS: {}", out.stderr);
    assert_eq!(
        out.stderr.trim_end(),
        format!(
            "lockfs: /counter: content generation is {}, not {}",
            g + 2,
            g + 1
        )
    );
    assert_eq!(h.ok("cat \"$B/counter\""), "2\n");
    assert_eq!(content_generation(&h, "$A/counter"), g + 2);
    // Generation 0: only if the file is missing (or was never written).
    h.ok("echo a | \"$LOCKFS\" put --if-generation 0 /fresh");
    let out = h.sh("echo b | \"$LOCKFS\" put --if-generation 0 /fresh");
    assert_eq!(
        out.status.code(),
        Some(3),
        "create-if-missing twice: {}",
        out.stderr
    );
    assert_eq!(h.ok("cat \"$B/fresh\""), "a\n");
    // A directory is no file to compare: a clear error, not status 3.
    h.ok("mkdir \"$A/dir\"");
    let out = h.sh("echo x | \"$LOCKFS\" put --if-generation 0 /dir");
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("is a directory"), "{}", out.stderr);

    // Lost-update freedom without a lock: 4 processes on two hosts each add 25 to the counter
    // by read (generation, then contents) - compute - compare-and-set, retrying on status 3.
    // A read of contents newer than the generation read first only makes the CAS fail.
    h.ok("echo 0 > \"$A/counter\"");
    let script = r#"
        for i in $(seq 25); do
            done_one=
            for try in $(seq 500); do
                g=$(getfattr --only-values -n user.lockfs.content_generation "$M/counter") || exit 1
                n=$(cat "$M/counter") || exit 1
                if echo $((n + 1)) | "$LOCKFS" put --if-generation "$g" /counter 2>/dev/null; then
                    done_one=1; echo "retries $try" >> "$OUT/cas-$W"; break
                elif [ $? -ne 3 ]; then
                    exit 1
                fi
            done
            [ -n "$done_one" ] || exit 2
        done"#;
    let started = Instant::now();
    let mut workers = Vec::new();
    for i in 0..4 {
        let mount = if i % 2 == 0 { &h.a.path } else { &h.b.path };
        let mut cmd = h.command("bash");
        cmd.arg("-c")
            .arg(script)
            .env("M", mount)
            .env("W", i.to_string());
        workers.push(std::thread::spawn(move || {
            run(cmd, Duration::from_secs(600))
        }));
    }
    for w in workers {
        let out = w.join().expect("worker");
        assert!(
            out.status.success(),
            "worker failed: {} {}",
            out.status,
            out.stderr
        );
    }
    let tries: usize = (0..4)
        .flat_map(|i| {
            h.read_out(&format!("cas-{i}"))
                .lines()
                .map(|l| {
                    l.trim_start_matches("retries ")
                        .parse::<usize>()
                        .unwrap_or(0)
                })
                .collect::<Vec<_>>()
        })
        .sum();
    eprintln!(
        "100 CAS increments in {:?}, {tries} attempts",
        started.elapsed()
    );
    assert_eq!(h.ok("cat \"$B/counter\""), "100\n");
    assert!(tries >= 100);
}

#[test]
fn a_reader_never_sees_a_partial_replace() {
    let mut h = Hosts::start();
    let value = |i: u32| format!("value-{i}-{:0>300}\n", i);
    h.ok(&format!("echo -n '{}' > \"$A/f\"", value(0)));
    let writer = h.spawn(
        "bash",
        &[
            "-c",
            r#"for i in $(seq 1 300); do printf 'value-%d-%0300d\n' $i $i > "$A/f" || exit 1; done"#,
        ],
    );
    let path = h.b.path.join("f");
    let mut reads = 0u32;
    let mut last = 0u32;
    while h.running(writer) {
        let text = std::fs::read_to_string(&path).expect("read on mount B");
        let i: u32 = text
            .strip_prefix("value-")
            .and_then(|t| t.split('-').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("read {text:?}"));
        assert_eq!(text, value(i), "a partial or mixed value");
        assert!(i >= last, "went back in time: {i} after {last}");
        last = i;
        reads += 1;
        assert!(reads < 1_000_000, "bounded");
    }
    assert!(h.wait_child(writer).success());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), value(300));
    eprintln!("{reads} reads on B while A replaced the file 300 times");
    assert!(reads > 0);
}

/// Regression: `cat` reads until a read returns nothing; a replace on another host between two
/// of its reads once showed the start of one version and the end of the next.
#[test]
fn one_read_pass_sees_one_version_across_a_replace() {
    let h = Hosts::start();
    h.ok("printf 'old-version-1234567890\\n' > \"$A/f\"");
    let script = r#"
import os, subprocess, sys
fd = os.open(os.environ["B"] + "/f", os.O_RDONLY)
first = os.read(fd, 4)
subprocess.run(["bash", "-c", 'printf "new!\n" > "$A/f"'], check=True)
rest = os.read(fd, 1000)
os.lseek(fd, 0, os.SEEK_SET)
again = os.read(fd, 1000)
sys.stdout.write(repr((first + rest).decode()) + " " + repr(again.decode()))
"#;
    std::fs::write(h.out("pass.py"), script).unwrap();
    let out = h.ok("python3 \"$OUT/pass.py\"");
    assert_eq!(out, "'old-version-1234567890\\n' 'new!\\n'");
}

/// The leader's commit index, from `lockfs cluster status --json`.
fn commit_index(h: &Hosts) -> u64 {
    let out = common::ok(&h.cluster.servers(), &["cluster", "status", "--json"], None);
    let status: serde_json::Value = serde_json::from_slice(&out).expect("status json");
    status["commit"].as_u64().expect("a commit index")
}

/// The commit index once nothing has committed for a while: the kernel sends RELEASE in the
/// background, so the close of a file written just before may still be on its way.
fn quiet_commit_index(h: &Hosts) -> u64 {
    let mut last = commit_index(h);
    let start = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = commit_index(h);
        if now == last {
            return now;
        }
        assert!(start.elapsed() < WAIT_LIMIT, "the cluster never went quiet");
        last = now;
    }
}

/// Issue 15: reading a file never commits anything. A read-only open of an ordinary file
/// takes no handle in the cluster, so `cat` costs reads only; a lock through such an open
/// still takes a handle and excludes across hosts, and a read-only open of an ephemeral file
/// still holds it.
#[test]
fn reading_a_file_commits_nothing_yet_locks_and_ephemeral_holds_work() {
    let mut h = Hosts::start();
    h.ok("echo hello > \"$A/f\" && mkdir \"$A/d\" && touch \"$A/d/x\"");
    // A quiet cluster: keep-alives commit nothing, and check entries come every 10000.
    let before = quiet_commit_index(&h);
    let out = h.ok(r#"for i in $(seq 20); do
             for m in "$A" "$B"; do
               cat "$m/f"; head -c1 "$m/f"; echo; stat -c %s "$m/f"; ls "$m" "$m/d" >/dev/null
             done
           done | sort | uniq -c"#);
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["40", "6", "40", "h", "40", "hello"],
        "{out}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let after = commit_index(&h);
    eprintln!("40 cats, heads, stats and lss: commit index {before} -> {after}");
    assert_eq!(
        after,
        before,
        "reading committed {} entries",
        after - before
    );

    // flock through read-only opens excludes across the two mounts.
    let holder = h.spawn_ready(
        "exec 9<\"$B/f\" && flock 9 && touch \"$OUT/b-holds\" && exec sleep 1000",
        "b-holds",
    );
    assert!(commit_index(&h) > after, "the lock took a handle");
    let busy = h.sh("exec 9<\"$A/f\" && flock -n 9");
    assert_eq!(busy.status.code(), Some(1), "flock -n on A while B holds");
    let busy = h.sh("flock -n \"$A/f\" true");
    assert_eq!(
        busy.status.code(),
        Some(1),
        "flock(1) -n on A while B holds"
    );
    h.kill9(holder);
    wait_until("A's flock once B's holder died", || {
        h.sh("exec 9<\"$A/f\" && flock -n 9").status.success()
    });

    // A read-only open of an ephemeral file on B holds it after A, its creator, closed it.
    h.ok("mkdir \"$A/eph\" && setfattr -n user.lockfs.ephemeral -v 1 \"$A/eph\"");
    let creator = h.spawn_ready(
        "set -o noclobber; exec 8>\"$A/eph/e\" && touch \"$OUT/a-made\" && exec sleep 1000",
        "a-made",
    );
    let reader = h.spawn_ready(
        "exec 9<\"$B/eph/e\" && touch \"$OUT/b-open\" && exec sleep 1000",
        "b-open",
    );
    h.kill9(creator);
    std::thread::sleep(Duration::from_millis(500));
    h.ok("test -e \"$A/eph/e\" && test -e \"$B/eph/e\"");
    h.kill9(reader);
    wait_until("the ephemeral file to go at B's close", || {
        !h.a.path.join("eph/e").exists()
    });
}

/// A file opened read-only without a handle still belongs to the session it was opened in:
/// once that session has expired, reads and locks through it fail with EIO, as through a
/// handle of the session, while new opens start a new session and work.
#[test]
fn a_file_opened_without_a_handle_fails_with_eio_after_its_session_expired() {
    let mut h = Hosts::start();
    let c = common::Mount::start_as(
        "host-a",
        &h.cluster.servers(),
        &h.out("c"),
        "allow_other,ttl=2",
        &h.out("mount-c.log"),
        "info",
    );
    h.ok("echo hello > \"$A/f\"");
    let script = r#"
import errno, fcntl, os, time
m, out = os.environ["C"], os.environ["OUT"]
fd = os.open(m + "/f", os.O_RDONLY)
assert os.read(fd, 100) == b"hello\n"
open(out + "/opened", "w").close()
while not os.path.exists(out + "/go"):
    time.sleep(0.02)
said = []
for what, op in [("read", lambda: os.pread(fd, 100, 0)),
                 ("flock", lambda: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB))]:
    try:
        op()
        said.append(what + " ok")
    except OSError as e:
        said.append(what + " " + errno.errorcode[e.errno])
os.close(fd)
with open(m + "/f") as again:
    said.append(again.read().strip())
open(out + "/said", "w").write(" ".join(said))
"#;
    std::fs::write(h.out("expiry.py"), script).unwrap();
    let reader = h.spawn_ready(
        &format!("C='{}' exec python3 \"$OUT/expiry.py\"", c.path.display()),
        "opened",
    );
    // Freeze the mount for longer than its TTL: the cluster expires its session.
    let pid = c.pid().expect("mount c runs") as i32;
    // SAFETY: kill(2) on the mount process this test started.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    std::thread::sleep(Duration::from_secs(6));
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    wait_until("mount c to learn its session ended", || {
        let log = c.log_text();
        log.contains(" expired") || log.contains(" lost:")
    });
    std::fs::write(h.out("go"), b"").unwrap();
    assert!(h.wait_child(reader).success(), "{}", c.log_text());
    assert_eq!(h.read_out("said"), "read EIO flock EIO hello");
}

#[test]
fn noclobber_race_has_exactly_one_winner() {
    let h = Hosts::start();
    h.ok("mkdir \"$A/locks\"");
    for round in 0..3 {
        let file = format!("job{round}");
        let go = h.out(&format!("go{round}"));
        let mut racers = Vec::new();
        for i in 0..10 {
            let mount = if i % 2 == 0 { &h.a.path } else { &h.b.path };
            let mut cmd = h.command("bash");
            cmd.arg("-c")
                .arg(format!(
                    "for i in $(seq 3000); do [ -e \"{go}\" ] && break; sleep 0.01; done; \
                     set -o noclobber; if echo $$ > \"$M/locks/{file}\"; then echo won $$; fi",
                    go = go.display()
                ))
                .env("M", mount);
            racers.push(std::thread::spawn(move || run(cmd, COMMAND_LIMIT)));
        }
        std::thread::sleep(Duration::from_millis(300));
        std::fs::write(&go, b"").unwrap();
        let outs: Vec<Out> = racers.into_iter().map(|r| r.join().unwrap()).collect();
        let winners: Vec<&String> = outs
            .iter()
            .map(|o| &o.stdout)
            .filter(|s| s.starts_with("won"))
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let pid = winners[0].trim().trim_start_matches("won ");
        assert_eq!(
            h.ok(&format!("cat \"$B/locks/{file}\"")).trim(),
            pid,
            "the file holds the winner's pid"
        );
        for o in &outs {
            if !o.stdout.starts_with("won") {
                assert!(o.stderr.contains("cannot overwrite"), "{}", o.stderr);
            }
        }
    }
}

#[test]
fn blocked_flocks_end_as_on_a_local_filesystem() {
    let mut h = Hosts::start();
    let a = h.spawn_ready(&holder("$A/job", "", "held"), "held");
    // flock -w 1 gives up after about a second with status 1.
    let out = h.sh("flock -w 1 \"$B/job\" true");
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    eprintln!("flock -w 1 returned 1 after {:?}", out.elapsed);
    assert!(out.elapsed >= Duration::from_millis(900));
    // Ctrl-C (SIGINT) ends a blocked flock.
    let waiter = h.spawn(
        "flock",
        &[&h.b.path.join("job").display().to_string(), "true"],
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(h.running(waiter), "the waiter waits");
    let sent = Instant::now();
    kill_group(waiter, libc::SIGINT);
    let status = h.wait_child(waiter);
    eprintln!("SIGINT ended a blocked flock after {:?}", sent.elapsed());
    assert!(!status.success());
    // The interrupted wait left nothing behind: a new waiter gets the lock when the holder
    // is killed -9, at once (the holder's file closes; no session expires).
    let w2 = h.spawn(
        "bash",
        &[
            "-c",
            "flock \"$B/job\" touch \"$OUT/got\" && exec sleep 1000",
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(!h.out("got").exists());
    h.kill9(a);
    let took = wait_until("the waiter's grant", || h.out("got").exists());
    eprintln!("waiter on B granted {took:?} after the holder's kill -9 on A");
    h.kill9(w2);
    h.ok("flock -n \"$A/job\" true");
}

#[test]
fn ephemeral_files_follow_their_holders_across_mounts() {
    let mut h = Hosts::start();
    h.ok("mkdir \"$A/eph\" && setfattr -n user.lockfs.ephemeral -v 1 \"$A/eph\"");
    assert_eq!(
        h.ok("getfattr --only-values -n user.lockfs.ephemeral \"$B/eph\""),
        "1"
    );
    // A lockfile without stale locks: held open by a process on A.
    let holder = h.spawn_ready(
        "set -o noclobber; exec 8>\"$A/eph/job\" && touch \"$OUT/made\" && exec sleep 1000",
        "made",
    );
    h.ok("test -e \"$B/eph/job\"");
    let lost = h.sh("set -o noclobber; echo x > \"$B/eph/job\"");
    assert!(!lost.status.success(), "noclobber: B must lose");
    h.kill9(holder);
    let gone = wait_until("the ephemeral file to go after kill -9", || {
        !h.b.path.join("eph/job").exists()
    });
    eprintln!("ephemeral file gone {gone:?} after its holder's kill -9");
    // Now B wins; a file opened on both mounts lives until the last close anywhere.
    let hb = h.spawn_ready(
        "set -o noclobber; exec 8>\"$B/eph/job\" && touch \"$OUT/b-made\" && exec sleep 1000",
        "b-made",
    );
    let ha = h.spawn_ready(
        "exec 8<\"$A/eph/job\" && touch \"$OUT/a-open\" && exec sleep 1000",
        "a-open",
    );
    h.kill9(hb);
    std::thread::sleep(Duration::from_millis(500));
    h.ok("test -e \"$B/eph/job\"");
    h.kill9(ha);
    wait_until("the last close", || !h.b.path.join("eph/job").exists());
    // An unmount ends the session: its ephemeral files go, while the holder still runs.
    let _survivor = h.spawn_ready(
        "exec 8>\"$A/eph/member-a\" && touch \"$OUT/a-member\" && exec sleep 1000",
        "a-member",
    );
    h.ok("test -e \"$B/eph/member-a\"");
    assert!(h.a.stop(), "mount A stops cleanly on SIGTERM");
    let gone = wait_until("the unmounted host's ephemeral file", || {
        !h.b.path.join("eph/member-a").exists()
    });
    eprintln!("ephemeral file gone {gone:?} after its mount was stopped");
    assert_eq!(h.ok("ls -A \"$B/eph\""), "");
}

#[test]
fn locks_and_waits_survive_kill9_of_the_leader() {
    let mut h = Hosts::start();
    // The holder keeps its file open across the failover and writes through it afterwards.
    let holder = h.spawn_ready(
        "exec 9>>\"$A/lease\" && flock 9 && touch \"$OUT/held\" && \
         for i in $(seq 6000); do [ -e \"$OUT/go\" ] && break; sleep 0.01; done && \
         echo written-after-failover >&9 && touch \"$OUT/wrote\" && exec sleep 1000",
        "held",
    );
    let _waiter = h.spawn(
        "bash",
        &[
            "-c",
            "flock \"$B/lease\" touch \"$OUT/got\" && exec sleep 1000",
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    let gen = generation(&h, "$B/lease");
    let leader = h.cluster.wait_leader(WAIT_LIMIT);
    h.cluster.kill(leader);
    // A surviving node may still name the old leader until it notices; wait for the new one.
    let start = Instant::now();
    while h.cluster.wait_leader(WAIT_LIMIT) == leader {
        assert!(start.elapsed() < WAIT_LIMIT, "no new leader");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Still exactly one holder: nobody else gets it, the waiter still waits.
    assert_eq!(h.sh("flock -n \"$B/lease\" true").status.code(), Some(1));
    assert_eq!(generation(&h, "$B/lease"), gen, "no new grant");
    assert!(!h.out("got").exists(), "a second holder after failover");
    // The holder's handle still works.
    std::fs::write(h.out("go"), b"").unwrap();
    wait_until("the holder's write", || h.out("wrote").exists());
    assert_eq!(h.ok("cat \"$B/lease\""), "written-after-failover\n");
    // Its release reaches the waiter through the new leader.
    h.kill9(holder);
    wait_until("the waiter's grant", || h.out("got").exists());
    assert!(generation(&h, "$A/lease") > gen);
    // Both mounts' sessions survived.
    h.ok("echo fine > \"$A/after\" && cat \"$B/after\"");
    for log in [h.a.log_text(), h.b.log_text()] {
        assert!(!log.contains("expired"), "a session expired:\n{log}");
    }
    h.cluster.spawn(leader);
}

const PY_HOLD: &str = r#"
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.lockf(fd, fcntl.LOCK_EX, 10, 0)          # bytes 0..10
fcntl.lockf(fd, fcntl.LOCK_SH, 10, 100)        # bytes 100..110, shared
open(sys.argv[2], "w").close()
time.sleep(1000)
"#;

const PY_PROBE: &str = r#"
import errno, fcntl, os, struct, sys
fd = os.open(sys.argv[1], os.O_RDWR)
def try_lock(kind, length, start):
    try:
        fcntl.lockf(fd, kind | fcntl.LOCK_NB, length, start)
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]
def getlk(kind, start, length):
    # struct flock on x86_64/aarch64: short l_type, short l_whence, off_t l_start, off_t l_len,
    # pid_t l_pid (plus padding).
    packed = struct.pack("hhqqi4x", kind, 0, start, length, 0)
    t, _, s, l, _ = struct.unpack("hhqqi4x", fcntl.fcntl(fd, fcntl.F_GETLK, packed))
    return {fcntl.F_UNLCK: "unlck", fcntl.F_RDLCK: "rdlck", fcntl.F_WRLCK: "wrlck"}[t], s, l
print("ex0", try_lock(fcntl.LOCK_EX, 10, 0))
print("ex5", try_lock(fcntl.LOCK_EX, 10, 5))
print("ex10", try_lock(fcntl.LOCK_EX, 10, 10))
print("sh100", try_lock(fcntl.LOCK_SH, 10, 100))
print("ex100", try_lock(fcntl.LOCK_EX, 10, 100))
print("getlk0", *getlk(fcntl.F_WRLCK, 0, 5))
print("getlk50", *getlk(fcntl.F_WRLCK, 50, 10))
"#;

#[test]
fn python_fcntl_byte_ranges_across_mounts() {
    let mut h = Hosts::start();
    std::fs::write(h.out("hold.py"), PY_HOLD).unwrap();
    std::fs::write(h.out("probe.py"), PY_PROBE).unwrap();
    let holder = h.spawn_ready(
        "exec python3 \"$OUT/hold.py\" \"$A/ranges\" \"$OUT/ready\"",
        "ready",
    );
    let out = h.ok("python3 \"$OUT/probe.py\" \"$B/ranges\"");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "ex0 EAGAIN",
            "ex5 EAGAIN",
            "ex10 ok",
            "sh100 ok",
            "ex100 EAGAIN",
            "getlk0 wrlck 0 10",
            "getlk50 unlck 50 10",
        ],
        "{out}"
    );
    // A blocking lockf on B waits for the holder on A and gets the range when it dies.
    let waiter = h.spawn(
        "python3",
        &[
            "-c",
            "import fcntl, os, sys, time\n\
             fd = os.open(sys.argv[1], os.O_RDWR)\n\
             fcntl.lockf(fd, fcntl.LOCK_EX, 10, 0)\n\
             open(sys.argv[2], 'w').close()\n\
             time.sleep(1000)",
            &h.b.path.join("ranges").display().to_string(),
            &h.out("granted").display().to_string(),
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(!h.out("granted").exists());
    h.kill9(holder);
    wait_until("the blocking lockf", || h.out("granted").exists());
    assert!(h.running(waiter));
}

/// The outcome of one operation: a value, or the errno it failed with.
type Outcome = Result<String, i32>;

fn outcome<T: std::fmt::Debug>(r: std::io::Result<T>) -> Outcome {
    r.map(|v| format!("{v:?}"))
        .map_err(|e| e.raw_os_error().unwrap_or(-1))
}

/// One random operation on `root`, described by `op`.
fn apply(root: &Path, op: &Op) -> Outcome {
    use std::io::{Seek, SeekFrom, Write};
    let p = |rel: &str| root.join(rel);
    match op {
        Op::Replace(path, data) => outcome(std::fs::write(p(path), data)),
        Op::Append(path, data) => outcome(
            std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(p(path))
                .and_then(|mut f| f.write_all(data)),
        ),
        Op::WriteAt(path, offset, data) => outcome(
            std::fs::OpenOptions::new()
                .write(true)
                .open(p(path))
                .and_then(|mut f| {
                    f.seek(SeekFrom::Start(*offset))?;
                    f.write_all(data)
                }),
        ),
        Op::Truncate(path, len) => outcome(
            std::fs::OpenOptions::new()
                .write(true)
                .open(p(path))
                .and_then(|f| f.set_len(*len)),
        ),
        Op::CreateNew(path) => outcome(
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(p(path))
                .map(|_| ()),
        ),
        Op::Read(path) => outcome(std::fs::read(p(path))),
        // A directory's size differs between filesystems; only a file's is compared.
        Op::Size(path) => outcome(
            std::fs::metadata(p(path)).map(|m| (m.is_dir(), if m.is_dir() { 0 } else { m.len() })),
        ),
        Op::Unlink(path) => outcome(std::fs::remove_file(p(path))),
        Op::Mkdir(path) => outcome(std::fs::create_dir(p(path))),
        Op::Rmdir(path) => outcome(std::fs::remove_dir(p(path))),
        Op::Rename(from, to) => outcome(std::fs::rename(p(from), p(to))),
        Op::Link(from, to) => outcome(std::fs::hard_link(p(from), p(to))),
        Op::Symlink(target, at) => outcome(std::os::unix::fs::symlink(target, p(at))),
        Op::Readlink(path) => outcome(std::fs::read_link(p(path))),
        Op::Links(path) => {
            use std::os::unix::fs::MetadataExt;
            outcome(std::fs::symlink_metadata(p(path)).map(|m| (m.is_dir(), m.nlink())))
        }
        Op::Rename2(from, to, flags) => {
            let c = |rel: &str| std::ffi::CString::new(p(rel).into_os_string().into_vec()).unwrap();
            let (from, to) = (c(from), c(to));
            // SAFETY: two NUL-terminated paths that live across the call.
            let r = unsafe {
                libc::renameat2(
                    libc::AT_FDCWD,
                    from.as_ptr(),
                    libc::AT_FDCWD,
                    to.as_ptr(),
                    *flags,
                )
            };
            outcome(if r == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            })
        }
        Op::Chmod(path, mode) => outcome(std::fs::set_permissions(
            p(path),
            std::os::unix::fs::PermissionsExt::from_mode(*mode),
        )),
        Op::Chown(path, uid) => outcome(std::os::unix::fs::lchown(p(path), Some(*uid), Some(*uid))),
        Op::Owner(path) => {
            use std::os::unix::fs::MetadataExt;
            outcome(std::fs::symlink_metadata(p(path)).map(|m| {
                let mode = if m.file_type().is_symlink() {
                    0
                } else {
                    m.mode() & 0o7777
                };
                (m.uid(), m.gid(), format!("{mode:o}"))
            }))
        }
        Op::AsOther(op) => as_other(root, op),
        Op::List(path) => outcome(std::fs::read_dir(p(path)).and_then(|rd| {
            let mut names = rd
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<std::io::Result<Vec<_>>>()?;
            names.sort();
            Ok(names)
        })),
    }
}

/// `op` on `root` as user and group [`OTHER`] without supplementary groups, from a thread of
/// its own: the raw system calls change the credentials of the calling thread only (glibc's
/// wrappers would change every thread's).
fn as_other(root: &Path, op: &Op) -> Outcome {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: plain system calls on this thread's credentials; a null list is valid
            // with a count of 0.
            let ok = unsafe {
                libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) == 0
                    && libc::syscall(libc::SYS_setresgid, OTHER, OTHER, OTHER) == 0
                    && libc::syscall(libc::SYS_setresuid, OTHER, OTHER, OTHER) == 0
            };
            assert!(
                ok,
                "becoming uid {OTHER}: {}",
                std::io::Error::last_os_error()
            );
            apply(root, op)
        })
        .join()
        .expect("the other user's thread")
    })
}

/// The unprivileged user of [`Op::AsOther`].
const OTHER: u32 = 65534;

#[derive(Debug)]
enum Op {
    Replace(String, Vec<u8>),
    Append(String, Vec<u8>),
    WriteAt(String, u64, Vec<u8>),
    Truncate(String, u64),
    CreateNew(String),
    Read(String),
    Size(String),
    Unlink(String),
    Mkdir(String),
    Rmdir(String),
    Rename(String, String),
    /// renameat2 with RENAME_NOREPLACE or RENAME_EXCHANGE.
    Rename2(String, String, u32),
    Link(String, String),
    /// A symbolic link (target, where).
    Symlink(String, String),
    Readlink(String),
    /// The link count: a file's names, a directory's 2 and its subdirectories (as ext4 and
    /// tmpfs count them).
    Links(String),
    List(String),
    /// chmod by root.
    Chmod(String, u32),
    /// chown by root, to that uid and the gid of the same number (not following a symlink).
    Chown(String, u32),
    /// Owner, group and mode (a symlink's mode differs between filesystems).
    Owner(String),
    /// The operation as user and group [`OTHER`].
    AsOther(Box<Op>),
}

/// A random operation, sometimes as another user, and sometimes one that changes who may do
/// what (chmod, chown by root).
fn random_op(rng: &mut Rng) -> Op {
    let any = |rng: &mut Rng| match rng.index(3) {
        0 => ["f0", "f1", "d0/f2", "d0", "d1", "d0/d2"][rng.index(6)].to_string(),
        _ => ["", "d0", "d1"][rng.index(3)].to_string(),
    };
    match rng.index(12) {
        0 => {
            const MODES: [u32; 8] = [0o644, 0o600, 0o666, 0o755, 0o777, 0o1777, 0o2775, 0o4755];
            Op::Chmod(any(rng), MODES[rng.index(MODES.len())])
        }
        1 => Op::Chown(any(rng), [0, OTHER][rng.index(2)]),
        2 => Op::Owner(any(rng)),
        3..=5 => Op::AsOther(Box::new(basic_op(rng))),
        _ => basic_op(rng),
    }
}

fn basic_op(rng: &mut Rng) -> Op {
    const DIRS: [&str; 3] = ["d0", "d1", "d0/d2"];
    const FILES: [&str; 3] = ["f0", "f1", "f2"];
    let dir = |rng: &mut Rng| match rng.index(4) {
        0 => String::new(),
        i => format!("{}/", DIRS[i - 1]),
    };
    let file = |rng: &mut Rng| format!("{}{}", dir(rng), FILES[rng.index(FILES.len())]);
    let data = |rng: &mut Rng| {
        let len = rng.index(40);
        (0..len).map(|_| b'a' + rng.index(26) as u8).collect()
    };
    // Directories move too; these names may be free or taken.
    let any_dir = |rng: &mut Rng| ["d0", "d1", "d0/d2", "d3", "d1/d4"][rng.index(5)].to_string();
    let either = |rng: &mut Rng| {
        if rng.index(2) == 0 {
            any_dir(rng)
        } else {
            file(rng)
        }
    };
    match rng.index(19) {
        0 | 1 => Op::Replace(file(rng), data(rng)),
        2 => Op::Append(file(rng), data(rng)),
        3 => Op::WriteAt(file(rng), rng.index(50) as u64, data(rng)),
        4 => Op::Truncate(file(rng), rng.index(30) as u64),
        5 => Op::CreateNew(file(rng)),
        6 | 7 => Op::Read(file(rng)),
        8 => Op::Size(file(rng)),
        9 => Op::Unlink(file(rng)),
        10 => match rng.index(2) {
            0 => Op::Mkdir(DIRS[rng.index(DIRS.len())].to_string()),
            _ => Op::Rmdir(DIRS[rng.index(DIRS.len())].to_string()),
        },
        11 => Op::Rename(file(rng), file(rng)),
        12 => Op::Rename(any_dir(rng), either(rng)),
        13 => {
            let flags = [libc::RENAME_NOREPLACE, libc::RENAME_EXCHANGE][rng.index(2)];
            Op::Rename2(either(rng), either(rng), flags)
        }
        14 => Op::Link(either(rng), file(rng)),
        15 => Op::Links(either(rng)),
        16 => Op::Symlink(either(rng), file(rng)),
        17 => Op::Readlink(either(rng)),
        _ => Op::List(dir(rng).trim_end_matches('/').to_string()),
    }
}

#[test]
fn random_file_operations_match_a_local_directory() {
    let h = Hosts::start();
    let seed = std::env::var("LOCKFS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("random file operations: LOCKFS_SEED={seed}");
    let mut rng = Rng(seed);
    let local = h.out("local");
    std::fs::create_dir(&local).unwrap();
    // The other user reaches both trees by absolute paths; they start open to everyone.
    h.ok(&format!(
        "chmod 0755 '{}' && chmod 0777 '{}' \"$A\"",
        h.dir.path().display(),
        local.display()
    ));
    let mut history = Vec::new();
    // What the other user was let do and refused, to show both happened.
    let (mut let_do, mut refused) = (0, 0);
    for step in 0..600 {
        let op = random_op(&mut rng);
        // Writes go through either mount; reads too, so every step also checks that the other
        // host sees what one host did.
        let (host, mount) = if rng.index(2) == 0 {
            ("a", &h.a.path)
        } else {
            ("b", &h.b.path)
        };
        let want = apply(&local, &op);
        let got = apply(mount, &op);
        if let Op::AsOther(_) = op {
            match want {
                Ok(_) => let_do += 1,
                Err(libc::EACCES | libc::EPERM) => refused += 1,
                Err(_) => {}
            }
        }
        history.push(format!("{step} on {host}: {op:?} -> {want:?}"));
        assert_eq!(
            got,
            want,
            "step {step} (LOCKFS_SEED={seed}) on {}: {op:?}\nhistory:\n{}",
            mount.display(),
            history.join("\n")
        );
    }
    assert!(
        let_do > 0 && refused > 0,
        "the other user was let do {let_do} and refused {refused} operations (LOCKFS_SEED={seed})"
    );
    // The whole trees agree at the end, seen from both mounts.
    let local_tree = h.ok(&format!("cd '{}' && find . | sort", local.display()));
    for m in ["$A", "$B"] {
        assert_eq!(
            h.ok(&format!("cd \"{m}\" && find . | sort")),
            local_tree,
            "LOCKFS_SEED={seed}"
        );
    }
}

#[test]
fn lockfs_dev_runs_a_cluster_and_a_mount_and_stops_cleanly() {
    let dir = common::testdir::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let port = common::free_port_run(3);
    let log = std::fs::File::create(dir.path().join("dev.log")).unwrap();
    let mut dev = Command::new(common::BIN)
        .arg("dev")
        .arg("--base-port")
        .arg(port.to_string())
        .arg("--data")
        .arg(dir.path().join("data"))
        .arg(&mnt)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("lockfs dev");
    let pid = dev.id();
    // Whatever happens below, stop the whole dev group and detach a leftover mount.
    struct Guard(u32, PathBuf);
    impl Drop for Guard {
        fn drop(&mut self) {
            kill_group(self.0, libc::SIGKILL);
            if common::is_mounted(&self.1) {
                let _ = Command::new("fusermount3")
                    .args(["-u", "-z"])
                    .arg(&self.1)
                    .status();
            }
        }
    }
    let _guard = Guard(pid, mnt.clone());
    let dev_log = || std::fs::read_to_string(dir.path().join("dev.log")).unwrap_or_default();
    wait_until("lockfs dev's mount", || {
        assert!(
            dev.try_wait().unwrap().is_none(),
            "lockfs dev exited:\n{}",
            dev_log()
        );
        common::is_mounted(&mnt) && dev_log().contains("Ctrl-C")
    });
    let sh = |script: &str| {
        let mut cmd = Command::new("bash");
        cmd.arg("-c").arg(script).env("M", &mnt).process_group(0);
        run(cmd, COMMAND_LIMIT)
    };
    let out = sh("echo hello > \"$M/greeting\" && cat \"$M/greeting\" && \
                  flock \"$M/job\" echo locked");
    assert!(out.status.success(), "{}\n{}", out.stderr, dev_log());
    assert_eq!(out.stdout, "hello\nlocked\n");
    // The CLI sees the same tree through the printed servers, with the credentials lockfs dev
    // printed (its cluster has a CA of its own).
    let servers = format!(
        "127.0.0.1:{},127.0.0.1:{},127.0.0.1:{}",
        port,
        port + 1,
        port + 2
    );
    let tls_dir = dev_log()
        .lines()
        .find_map(|l| l.trim().strip_prefix("export LOCKFS_TLS_DIR="))
        .map(|d| PathBuf::from(d.trim_matches(&['\'', '"'][..])))
        .unwrap_or_else(|| panic!("lockfs dev printed no LOCKFS_TLS_DIR:\n{}", dev_log()));
    let cat = common::cli_as(&tls_dir, &servers, &["cat", "/greeting"], None);
    assert!(
        cat.status.success(),
        "lockfs cat: {}",
        String::from_utf8_lossy(&cat.stderr)
    );
    assert_eq!(cat.stdout, b"hello\n");
    // Ctrl-C stops everything: the mount goes, then the nodes.
    kill_group(pid, libc::SIGINT);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = dev.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < WAIT_LIMIT, "lockfs dev did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}\n{}", dev_log());
    assert!(!common::is_mounted(&mnt), "still mounted after Ctrl-C");
}

/// An administrator lists the sessions and ends a host's: its lock passes to the other host
/// after the lock-delay, the holder's descriptor fails as after an expiry, and the host's
/// mount goes on in a new session. A host may not end another host's session.
#[test]
fn an_administrator_ends_a_hosts_session_and_its_lock_passes_on() {
    let mut h = Hosts::start();
    let holder = "import errno, fcntl, os, time
fd = os.open(os.environ['B'] + '/lk', os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
open(os.environ['OUT'] + '/held', 'w').close()
deadline = time.time() + 120
while not os.path.exists(os.environ['OUT'] + '/ended') and time.time() < deadline:
    time.sleep(0.05)
try:
    os.pwrite(fd, b'x', 0)
    said = 'written'
except OSError as e:
    said = errno.errorcode[e.errno]
open(os.environ['OUT'] + '/after', 'w').write(said)";
    std::fs::write(h.out("holder.py"), holder).unwrap();
    let pid = h.spawn_ready("exec python3 \"$OUT/holder.py\"", "held");
    let sessions = |h: &Hosts| -> Vec<serde_json::Value> {
        serde_json::from_str(&h.ok("\"$LOCKFS\" sessions --json")).expect("sessions json")
    };
    let of_b: Vec<serde_json::Value> = sessions(&h)
        .into_iter()
        .filter(|s| s["host"] == "host-b" && s["locks"] == 1)
        .collect();
    assert_eq!(of_b.len(), 1, "{of_b:?}");
    let id = of_b[0]["id"].as_u64().unwrap();
    assert!(of_b[0]["handles"].as_u64().unwrap() >= 1);
    assert!(h.ok("\"$LOCKFS\" sessions").contains("host-b"));
    // Host A's certificate may not end B's session.
    let refused = h.sh(&format!(
        "LOCKFS_TLS_DIR='{}' \"$LOCKFS\" sessions end {id}",
        common::tls::host_dir("host-a").display()
    ));
    assert!(!refused.status.success());
    assert!(
        refused.stderr.contains("belongs to another identity"),
        "{}",
        refused.stderr
    );
    h.ok("! flock -n \"$A/lk\" true");
    assert_eq!(
        h.ok(&format!("\"$LOCKFS\" sessions end {id}")),
        format!("session {id} ended\n")
    );
    // The next holder gets the lock once the lock-delay (1 s here) is over.
    h.ok("flock -w 30 \"$A/lk\" true");
    assert!(sessions(&h).iter().all(|s| s["id"] != id));
    std::fs::write(h.out("ended"), b"").unwrap();
    assert!(h.wait_child(pid).success());
    assert_eq!(h.read_out("after"), "EIO");
    // B's mount carries on in a new session.
    h.ok("echo again > \"$B/after\"");
    assert_eq!(h.ok("cat \"$A/after\""), "again\n");
}

/// An administrator releases a lock a host holds: the waiter on the other host gets it after the
/// lock-delay, while the holder's session and descriptors go on working. `--holder` names the
/// session; one that holds nothing there, and a host certificate, are refused.
#[test]
fn an_administrator_releases_a_lock_and_the_next_waiter_gets_it() {
    let mut h = Hosts::start();
    let holder = h.spawn_ready(
        "exec 9>>\"$B/lk\"; flock 9; touch \"$OUT/b-held\"
         while [ ! -e \"$OUT/done\" ]; do sleep 0.1; done
         if echo x >&9; then echo works; else echo fails; fi > \"$OUT/io\" 2>/dev/null
         echo still > \"$B/after\"",
        "b-held",
    );
    let waiter = h.spawn(
        "bash",
        &[
            "-c",
            "exec flock -w 100 \"$A/lk\" -c 'touch \"$OUT/a-got\"'",
        ],
    );
    let lock = |h: &Hosts| -> serde_json::Value {
        let all: serde_json::Value =
            serde_json::from_str(&h.ok("\"$LOCKFS\" locks --json")).expect("locks json");
        all.as_array()
            .and_then(|a| a.iter().find(|l| l["path"] == "/lk").cloned())
            .unwrap_or_default()
    };
    wait_until("A's flock to queue", || {
        lock(&h)["waiters"].as_array().is_some_and(|w| w.len() == 1)
    });
    let id = lock(&h)["holders"][0]["session"]
        .as_u64()
        .expect("a holder");
    // A host certificate may not release it.
    let refused = h.sh(&format!(
        "LOCKFS_TLS_DIR='{}' \"$LOCKFS\" locks release /lk",
        common::tls::host_dir("host-a").display()
    ));
    assert!(!refused.status.success());
    assert!(refused.stderr.contains("needs admin"), "{}", refused.stderr);
    // A session that holds nothing there.
    let none = h.sh(&format!(
        "\"$LOCKFS\" locks release --holder {} /lk",
        id + 1000
    ));
    assert!(!none.status.success());
    assert!(
        none.stderr.contains("holds no lock there"),
        "{}",
        none.stderr
    );
    assert!(!h.out("a-got").exists());
    assert_eq!(
        h.ok(&format!("\"$LOCKFS\" locks release --holder {id} /lk")),
        "released the lock on /lk\n"
    );
    // The waiter gets it once the lock-delay (1 s here) is over.
    assert!(h.wait_child(waiter).success());
    assert!(h.out("a-got").exists());
    // The file the lock was held through fails, as after an expiry; the former holder's
    // session lives on, and its other files work.
    wait_until("B hears of the release", || {
        h.b.log_text().contains("fails from now on")
    });
    std::fs::write(h.out("done"), b"").unwrap();
    assert!(h.wait_child(holder).success());
    assert_eq!(h.read_out("io"), "fails\n");
    assert_eq!(h.ok("cat \"$A/after\""), "still\n");
    assert_eq!(lock(&h), serde_json::Value::Null);
}

/// A lock file with `user.lockfs.on_loss`: an administrator's release signals its holder on
/// its host, as any lost lock.
#[test]
fn an_administrators_release_signals_the_holder_of_a_file_with_on_loss() {
    let mut h = Hosts::start();
    h.ok("touch \"$A/lk\"; setfattr -n user.lockfs.on_loss -v term \"$A/lk\"");
    let holder = h.spawn_ready(
        "trap 'touch \"$OUT/b-term\"; exit 0' TERM
         exec 9>>\"$B/lk\"; flock 9; touch \"$OUT/b-held\"
         while :; do sleep 0.05; done",
        "b-held",
    );
    h.ok("\"$LOCKFS\" locks release /lk");
    assert!(h.wait_child(holder).success());
    assert!(h.out("b-term").exists());
    assert!(
        h.b.log_text()
            .contains("an administrator released the lock: signal 15"),
        "{}",
        h.b.log_text()
    );
}

/// `-o on_lock_loss=signal`: host B holds a lock the way leader-election.sh does (the shell's
/// descriptor, locked by its flock(1) child) and is cut off from the cluster. B's mount signals
/// the shell when its lease runs out, and kills it when it ignores the signal, all before the
/// cluster's lock-delay lets host A have the lock.
#[test]
fn on_lock_loss_stops_a_cut_off_holder_before_another_host_gets_the_lock() {
    let mut h = Hosts::start_proxied(
        4000,
        "allow_other",
        "allow_other,ttl=3,on_lock_loss=signal,lock_loss_grace=1",
    );
    let holder = holder_lost_while_a_waits(&mut h, Isolation::CutOff);
    assert!(h.out("b-term").exists(), "no TERM first");
    let log = reap_killed(&mut h, holder);
    assert!(
        log.contains("on_lock_loss: the session's lease ran out"),
        "{log}"
    );
    assert!(log.contains("SIGKILL"), "{log}");
}

/// `user.lockfs.on_loss=kill` on the lock file: the same cut-off holder is killed at once by a
/// mount without `on_lock_loss`, because the file demands it. The setting's refusals and its
/// removal, through the mount.
#[test]
fn a_lock_file_with_on_loss_kill_has_a_cut_off_holder_killed_by_any_mount() {
    let mut h = Hosts::start_proxied(4000, "allow_other", "allow_other,ttl=3");
    h.ok("touch \"$A/lk\"");
    let set =
        |h: &Hosts, v: &str| h.sh(&format!("setfattr -n user.lockfs.on_loss -v {v} \"$A/lk\""));
    let get = "getfattr --only-values -n user.lockfs.on_loss \"$A/lk\"";
    // Unset: absent.
    assert!(!h.sh(get).status.success());
    assert!(!set(&h, "TERM").status.success());
    assert!(set(&h, "term").status.success());
    assert!(h.ok("\"$LOCKFS\" locks").contains("(on loss: term)"));
    h.ok("setfattr -x user.lockfs.on_loss \"$A/lk\"");
    assert!(!h.sh(get).status.success());
    assert!(set(&h, "kill").status.success());
    assert_eq!(h.ok(get), "kill");
    let holder = holder_lost_while_a_waits(&mut h, Isolation::CutOff);
    // KILL at once: the TERM trap never ran.
    assert!(!h.out("b-term").exists(), "TERM was sent");
    let log = reap_killed(&mut h, holder);
    assert!(
        log.contains(&format!("signal {} to pid", libc::SIGKILL)),
        "{log}"
    );
}

/// A frozen mount (SIGSTOP: hung, or paused) signals no one itself. Its lock guardian, a
/// process of its own, signals the holder once the lease the mount last renewed has run out,
/// and kills it after the grace, before the cluster's expiry and lock-delay let host A have
/// the lock.
#[test]
fn a_frozen_mounts_lock_guardian_stops_its_holder_before_another_host_gets_the_lock() {
    let mut h = Hosts::start_proxied(
        4000,
        "allow_other",
        "allow_other,ttl=3,on_lock_loss=signal,lock_loss_grace=1",
    );
    let holder = holder_lost_while_a_waits(&mut h, Isolation::Frozen);
    let log = reap_killed(&mut h, holder);
    // TERM first. (The shell's trap may never run: a child's close of the lock file waits
    // for the frozen mount, and the shell for the child.)
    let term = format!(
        "on_lock_loss: the session's lease ran out: signal {} to pid {holder}",
        libc::SIGTERM
    );
    assert!(log.contains(&term), "{log}");
    assert!(log.contains("SIGKILL"), "{log}");
}

/// After its session expired, a mount opens a new one through the same client; the grant of a
/// lock its new session waits for must reach it as a push, not only when the wait gives up.
#[test]
fn a_mount_hears_its_grants_after_its_session_expired_and_it_opened_another() {
    let mut h = Hosts::start_proxied(1000, "allow_other", "allow_other,ttl=3");
    h.ok("touch \"$A/lk\"");
    h.cut_off_b();
    wait_until("B's session lost", || {
        h.b.log_text().contains("opening a new one")
            || h.b.log_text().contains("lost: no keep-alive")
    });
    h.cluster.heal();
    // B's next request opens a new session.
    wait_until("B works again", || {
        h.sh("touch \"$B/again\"").status.success()
    });
    let holder = h.spawn_ready(
        "exec flock \"$A/lk\" -c 'touch \"$OUT/a-held\"; while [ ! -e \"$OUT/release\" ]; do sleep 0.05; done'",
        "a-held",
    );
    // Without the push, this wait would end only at its timeout, with the lock granted to it
    // and nobody knowing.
    let waiter = h.spawn(
        "bash",
        &["-c", "exec flock -w 30 \"$B/lk\" -c 'touch \"$OUT/b-got\"'"],
    );
    wait_until("B waits", || {
        h.ok("\"$LOCKFS\" locks --json").contains("\"waiters\":[{")
    });
    std::fs::write(h.out("release"), b"").unwrap();
    assert!(h.wait_child(holder).success());
    let status = h.wait_child(waiter);
    assert!(status.success(), "{status}\n{}", h.logs());
    assert!(h.out("b-got").exists());
}

/// A grant that reaches a mount after its lease ran out is not handed to the process: host B's
/// mount is frozen while its flock waits; the lock is granted to B's session, which then
/// expires, and A gets the lock. When B's mount runs again, its flock fails instead of
/// running its command next to A's.
#[test]
fn a_grant_heard_after_the_lease_ran_out_is_not_handed_to_the_process() {
    let mut h = Hosts::start_proxied(1000, "allow_other", "allow_other,ttl=3");
    let holder = h.spawn_ready(
        "exec flock \"$A/lk\" -c 'touch \"$OUT/a-held\"; while [ ! -e \"$OUT/release\" ]; do sleep 0.05; done'",
        "a-held",
    );
    // Python's flock, not flock(1), which reopens the file and tries again after an EIO.
    let waiter = h.spawn(
        "python3",
        &[
            "-c",
            "import fcntl, os
fd = os.open(os.environ['B'] + '/lk', os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX)
open(os.environ['OUT'] + '/b-ran', 'w').close()",
        ],
    );
    wait_until("B waits", || {
        h.ok("\"$LOCKFS\" locks --json").contains("\"waiters\":[{")
    });
    let frozen = h.freeze_b();
    std::fs::write(h.out("release"), b"").unwrap();
    assert!(h.wait_child(holder).success());
    // B's session expires (TTL 3 s) and, after the lock-delay, A has the lock again.
    let again = h.sh("flock -w 60 \"$A/lk\" -c 'touch \"$OUT/a-again\"'");
    assert!(again.status.success(), "{}\n{}", again.stderr, h.logs());
    drop(frozen);
    let status = h.wait_child(waiter);
    assert!(
        !status.success(),
        "B's flock succeeded after its lease ran out\n{}",
        h.logs()
    );
    assert!(!h.out("b-ran").exists(), "B's command ran without the lock");
    assert!(
        h.b.log_text()
            .contains("granted after the session's lease ran out"),
        "{}",
        h.b.log_text()
    );
}

/// Waits for host B's `holder` and checks that SIGKILL ended it; returns B's mount log.
fn reap_killed(h: &mut Hosts, holder: u32) -> String {
    let status = h.wait_child(holder);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    h.b.log_text()
}

/// How host B loses the cluster.
enum Isolation {
    /// Its mount's network to every node is cut.
    CutOff,
    /// Its mount process is stopped (SIGSTOP).
    Frozen,
}

/// Host B's shell holds `lk` on its descriptor (taken by its flock(1) child) and ignores TERM
/// (noting it); B loses the cluster; A waits for the lock. Checks that the shell was dead when
/// A got the lock, and returns it for the caller to reap.
fn holder_lost_while_a_waits(h: &mut Hosts, how: Isolation) -> u32 {
    let holder = h.spawn_ready(
        "exec 9>>\"$B/lk\"; flock 9
         trap 'date +%s%N > \"$OUT/b-term\"' TERM
         touch \"$OUT/b-held\"
         while :; do sleep 0.05; done",
        "b-held",
    );
    // What A sees of the holder once A holds the lock.
    std::fs::write(h.out("a-got.sh"), note_state_of(holder, "a-got")).unwrap();
    let waiter = h.spawn(
        "bash",
        &["-c", "exec flock -w 100 \"$A/lk\" bash \"$OUT/a-got.sh\""],
    );
    let frozen = match how {
        Isolation::CutOff => {
            h.cut_off_b();
            None
        }
        Isolation::Frozen => Some(h.freeze_b()),
    };
    let status = h.wait_child(waiter);
    h.cluster.heal();
    drop(frozen);
    assert!(status.success(), "{status}\n{}", h.logs());
    let seen = h.read_out("a-got");
    assert!(
        noted_dead(&seen),
        "the holder still ran when A got the lock: {seen}\n{}",
        h.logs()
    );
    holder
}

/// A flock that waits a long time, across a leader's kill -9 in the middle, still gets the lock
/// when the holder lets go, and a wait a signal interrupts answers EINTR and leaves the queue.
/// Two minutes in CI; `LOCKFS_LONG=1` waits 30 minutes, as the issue's soak asks.
#[test]
fn a_long_flock_wait_survives_a_leader_failover_and_a_signal_withdraws_a_wait() {
    let long = std::env::var("LOCKFS_LONG").is_ok_and(|v| v == "1");
    let wait = Duration::from_secs(if long { 30 * 60 } else { 120 });
    let mut h = Hosts::start();
    h.ok("touch \"$A/lk\"");
    let holder = h.spawn_ready(
        "exec flock \"$B/lk\" -c 'touch \"$OUT/b-held\"; while [ ! -e \"$OUT/release\" ]; do sleep 0.1; done'",
        "b-held",
    );
    let waiter = h.spawn(
        "bash",
        &[
            "-c",
            "exec flock -w 3600 \"$A/lk\" -c 'touch \"$OUT/a-got\"'",
        ],
    );
    // A second waiter is interrupted by a signal: EINTR, and its place in the queue goes.
    let out = h.ok("python3 -c '
import ctypes, errno, os, signal, time
libc = ctypes.CDLL(None, use_errno=True)
signal.signal(signal.SIGALRM, lambda *a: None)
fd = os.open(os.environ[\"A\"] + \"/lk\", os.O_RDWR)
signal.alarm(2)
r = libc.flock(fd, 2)
print(r, errno.errorcode.get(ctypes.get_errno()))'");
    assert_eq!(out, "-1 EINTR\n");
    let waiters = |h: &Hosts| -> usize {
        let v: serde_json::Value =
            serde_json::from_str(&h.ok("\"$LOCKFS\" locks --json")).expect("locks json");
        v.as_array().unwrap()[0]["waiters"]
            .as_array()
            .unwrap()
            .len()
    };
    wait_until("one waiter left", || waiters(&h) == 1);
    std::thread::sleep(wait / 2);
    let leader = h.cluster.wait_leader(Duration::from_secs(30));
    h.cluster.kill(leader);
    wait_until("a new leader", || {
        h.cluster.wait_leader(Duration::from_secs(60)) != leader
    });
    h.cluster.spawn(leader);
    std::thread::sleep(wait / 2);
    assert!(
        !h.out("a-got").exists(),
        "granted while B still holds the lock"
    );
    assert_eq!(waiters(&h), 1);
    std::fs::write(h.out("release"), b"").unwrap();
    assert!(h.wait_child(holder).success());
    assert!(h.wait_child(waiter).success());
    assert!(h.out("a-got").exists());
}
