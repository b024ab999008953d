//! Sessions, cluster-wide locks and ephemeral files through real `lockfs run` processes against a
//! real cluster, with kill -9 of holders and of the leader.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ok, Cluster, BIN};

/// A background `lockfs run`; killed (with its command) when dropped.
struct Run {
    child: Option<Child>,
    /// A unique argument of the command, to find it with pkill.
    marker: String,
}

impl Run {
    fn start(servers: &str, args: &[&str], cmd: &[&str], marker: &str) -> Run {
        let child = Command::new(BIN)
            .arg("run")
            .args(args)
            .arg("--")
            .args(cmd)
            .env("LOCKFS_SERVERS", servers)
            .env(common::tls::ENV, common::tls::admin_dir())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning lockfs run");
        Run {
            child: Some(child),
            marker: marker.to_string(),
        }
    }

    /// Waits (bounded) for the run to exit; returns (exit code, stderr).
    fn wait(&mut self, limit: Duration) -> (i32, String) {
        let mut child = self.child.take().expect("already waited");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                let mut err = String::new();
                use std::io::Read;
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                return (status.code().unwrap_or(-1), err);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("lockfs run did not finish within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.kill9();
        if !self.marker.is_empty() {
            let _ = Command::new("pkill").args(["-f", &self.marker]).status();
        }
    }
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    loop {
        if f() {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn locks_json(servers: &str) -> serde_json::Value {
    serde_json::from_slice(&ok(servers, &["locks", "--json"], None)).expect("locks json")
}

fn holders(servers: &str, path: &str) -> usize {
    locks_json(servers)
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["path"] == path)
        .map(|l| l["holders"].as_array().unwrap().len())
        .sum()
}

#[test]
fn two_runs_never_overlap_and_waiters_take_turns() {
    let c = Cluster::start(3, &[]);
    let s = c.servers();
    ok(&s, &["mkdir", "/jobs"], None);
    let dir = common::testdir::tempdir().unwrap();
    let log = dir.path().join("sections");
    // Each critical section appends "start N" and "end N" with a pause between: any overlap
    // shows up as two starts in a row.
    let script = format!(
        "echo start $1 >> {0}; sleep 0.1; echo end $1 >> {0}",
        log.display()
    );
    let mut runs = Vec::new();
    for i in 0..4 {
        let script = script.clone();
        let s = s.clone();
        runs.push(std::thread::spawn(move || {
            for round in 0..3 {
                let id = format!("{i}.{round}");
                let mut r = Run::start(
                    &s,
                    &["--lock", "/jobs/x", "--wait", "60"],
                    &["sh", "-c", &script, "section", &id],
                    "",
                );
                let (code, err) = r.wait(Duration::from_secs(90));
                assert_eq!(code, 0, "run {id}: {err}");
            }
        }));
    }
    for r in runs {
        r.join().expect("runner thread");
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 24, "{text}");
    for pair in lines.chunks(2) {
        let (a, b) = (pair[0], pair[1]);
        assert!(a.starts_with("start "), "{text}");
        assert_eq!(b, a.replacen("start", "end", 1), "overlap:\n{text}");
    }
    // Everything was released: no holder is left.
    assert_eq!(holders(&s, "/jobs/x"), 0);
}

/// `lockfs run --max-holders 2`: a semaphore without a mount. Never more than two sections at
/// once, two together at some point, each with a fencing generation of its own.
#[test]
fn runs_on_a_semaphore_admit_two_at_once_each_with_its_own_generation() {
    let c = Cluster::start(3, &[]);
    let s = c.servers();
    let dir = common::testdir::tempdir().unwrap();
    let log = dir.path().join("sections");
    // The first two wait inside (bounded) until both are in, which only a semaphore allows.
    let script = format!(
        "echo start $1 $LOCKFS_LOCK_GENERATION >> {0}
         for _ in $(seq 200); do [ $(grep -c start {0}) -ge 2 ] && break; sleep 0.05; done
         sleep 0.1; echo end $1 >> {0}",
        log.display()
    );
    let runs: Vec<_> = (0..4)
        .map(|i| {
            let (script, s) = (script.clone(), s.clone());
            std::thread::spawn(move || {
                let mut r = Run::start(
                    &s,
                    &["--lock", "/sem", "--max-holders", "2", "--wait", "60"],
                    &["sh", "-c", &script, "section", &i.to_string()],
                    "",
                );
                let (code, err) = r.wait(Duration::from_secs(90));
                assert_eq!(code, 0, "run {i}: {err}");
            })
        })
        .collect();
    for r in runs {
        r.join().expect("runner thread");
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let (mut inside, mut most, mut generations) = (0, 0, std::collections::BTreeSet::new());
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f[0] {
            "start" => {
                inside += 1;
                assert!(
                    generations.insert(f[2].to_string()),
                    "a generation twice:\n{text}"
                );
            }
            _ => inside -= 1,
        }
        most = most.max(inside);
        assert!(inside <= 2, "three at once:\n{text}");
    }
    assert_eq!((most, generations.len()), (2, 4), "{text}");
    let all: serde_json::Value = locks_json(&s);
    let sem = all
        .as_array()
        .and_then(|a| a.iter().find(|l| l["path"] == "/sem"))
        .expect("a semaphore is listed while free");
    assert_eq!(sem["max_holders"], 2);
    assert_eq!(holders(&s, "/sem"), 0);
}

#[test]
fn try_lock_and_timed_waits_give_up_with_a_clear_error() {
    let c = Cluster::start(1, &[]);
    let s = c.servers();
    let marker = "59.101";
    let mut holder = Run::start(&s, &["--lock", "/l"], &["sleep", marker], marker);
    wait_until("the holder", Duration::from_secs(30), || {
        holders(&s, "/l") == 1
    });

    let info = locks_json(&s);
    let l = &info.as_array().unwrap()[0];
    assert_eq!(l["path"], "/l");
    assert_eq!(l["holders"][0]["mode"], "exclusive");
    assert_eq!(l["holders"][0]["style"], "flock");
    assert!(l["holders"][0]["pid"].as_u64().unwrap() > 0);
    assert!(l["generation"].as_u64().unwrap() >= 1);

    let mut r = Run::start(&s, &["--lock", "/l", "--wait", "0"], &["true"], "");
    let (code, err) = r.wait(Duration::from_secs(30));
    assert_ne!(code, 0);
    assert!(err.contains("lock is held"), "{err}");

    let started = Instant::now();
    let mut r = Run::start(&s, &["--lock", "/l", "--wait", "1"], &["true"], "");
    let (code, err) = r.wait(Duration::from_secs(30));
    assert_ne!(code, 0);
    assert!(err.contains("gave up waiting"), "{err}");
    assert!(started.elapsed() >= Duration::from_secs(1));
    // The abandoned wait left the queue.
    let info = locks_json(&s);
    assert_eq!(info[0]["waiters"].as_array().unwrap().len(), 0, "{info}");

    // Shared locks coexist with each other, not with the exclusive holder.
    holder.kill9();
    let _ = Command::new("pkill").args(["-f", marker]).status();
    let marker2 = "59.102";
    let _a = Run::start(
        &s,
        &["--lock", "/l", "--shared", "--wait", "60"],
        &["sleep", marker2],
        marker2,
    );
    let _b = Run::start(
        &s,
        &["--lock", "/l", "--shared", "--wait", "60"],
        &["sleep", marker2],
        "",
    );
    wait_until("two shared holders", Duration::from_secs(60), || {
        holders(&s, "/l") == 2
    });
    let mut r = Run::start(&s, &["--lock", "/l", "--wait", "0"], &["true"], "");
    assert_ne!(r.wait(Duration::from_secs(30)).0, 0);
}

#[test]
fn exit_status_and_fencing_token_reach_the_command() {
    let c = Cluster::start(1, &[]);
    let s = c.servers();
    let mut r = Run::start(&s, &["--lock", "/g"], &["sh", "-c", "exit 7"], "");
    assert_eq!(r.wait(Duration::from_secs(30)).0, 7);
    let dir = common::testdir::tempdir().unwrap();
    let out = dir.path().join("gen");
    let script = format!("echo $LOCKFS_LOCK_GENERATION >> {}", out.display());
    for _ in 0..2 {
        let mut r = Run::start(&s, &["--lock", "/g"], &["sh", "-c", &script], "");
        assert_eq!(r.wait(Duration::from_secs(30)).0, 0);
    }
    let gens: Vec<u64> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(gens.len(), 2);
    assert!(gens[1] > gens[0], "generations increase: {gens:?}");
}

#[test]
fn kill9_of_a_holder_frees_the_lock_after_ttl_plus_lock_delay_and_not_before() {
    let c = Cluster::start(3, &["--lock-delay-ms", "1500"]);
    let s = c.servers();
    let marker = "59.201";
    let mut holder = Run::start(
        &s,
        &["--lock", "/l", "--ttl", "3"],
        &["sleep", marker],
        marker,
    );
    wait_until("the holder", Duration::from_secs(30), || {
        holders(&s, "/l") == 1
    });
    holder.kill9();
    let killed = Instant::now();
    let mut waiter = Run::start(&s, &["--lock", "/l", "--wait", "60"], &["true"], "");
    let (code, err) = waiter.wait(Duration::from_secs(90));
    assert_eq!(code, 0, "{err}");
    let took = killed.elapsed();
    eprintln!("lock freed {took:?} after kill -9 of its holder (ttl 3 s, lock-delay 1.5 s)");
    // The holder's last keep-alive was at most ttl/3 before the kill.
    assert!(
        took >= Duration::from_millis(2000 + 1500),
        "freed too early: {took:?}"
    );
}

#[test]
fn ephemeral_files_vanish_with_their_holder() {
    let c = Cluster::start(3, &[]);
    let s = c.servers();
    ok(&s, &["mkdir", "--ephemeral", "/svc"], None);
    let stat: serde_json::Value =
        serde_json::from_slice(&ok(&s, &["stat", "--json", "/svc"], None)).unwrap();
    assert_eq!(stat["ephemeral"], true);
    // A plain put cannot create an ephemeral file: nobody would hold it.
    let out = common::cli(&s, &["put", "/svc/x"], Some(b"x"));
    assert!(!out.status.success());

    // Clean exit: gone at once.
    let mut r = Run::start(&s, &["--lock", "/svc/a"], &["sh", "-c", "exit 0"], "");
    assert_eq!(r.wait(Duration::from_secs(30)).0, 0);
    assert_eq!(ok(&s, &["ls", "/svc"], None), b"");

    // Death of the holder: gone after its session expires.
    let marker = "59.301";
    let mut holder = Run::start(
        &s,
        &["--lock", "/svc/b", "--ttl", "2"],
        &["sleep", marker],
        marker,
    );
    wait_until("the ephemeral file", Duration::from_secs(30), || {
        ok(&s, &["ls", "/svc"], None) == b"b\n"
    });
    holder.kill9();
    let gone = wait_until("the file to vanish", Duration::from_secs(60), || {
        ok(&s, &["ls", "/svc"], None).is_empty()
    });
    eprintln!("ephemeral file gone {gone:?} after kill -9 of its holder (ttl 2 s)");
    assert!(
        gone >= Duration::from_millis(1300),
        "gone too early: {gone:?}"
    );
}

#[test]
fn sessions_and_held_locks_survive_kill9_of_the_leader() {
    let mut c = Cluster::start(3, &[]);
    let s = c.servers();
    let dir = common::testdir::tempdir().unwrap();
    let done = dir.path().join("done");
    let script = format!("sleep 6; touch {}", done.display());
    let mut holder = Run::start(
        &s,
        &["--lock", "/l", "--ttl", "4"],
        &["sh", "-c", &script],
        "",
    );
    wait_until("the holder", Duration::from_secs(30), || {
        holders(&s, "/l") == 1
    });
    let leader = c.wait_leader(Duration::from_secs(10));
    c.kill(leader);
    // While the holder runs, nobody else gets the lock, across the failover.
    while !done.exists() {
        let mut r = Run::start(&s, &["--lock", "/l", "--wait", "0"], &["true"], "");
        let (code, err) = r.wait(Duration::from_secs(60));
        if done.exists() {
            break;
        }
        assert_ne!(code, 0, "a second holder during the failover: {err}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, err) = holder.wait(Duration::from_secs(60));
    assert_eq!(code, 0, "the holder kept its lock and session: {err}");
    assert!(!err.contains("lock lost"), "{err}");
    let mut r = Run::start(&s, &["--lock", "/l", "--wait", "30"], &["true"], "");
    assert_eq!(r.wait(Duration::from_secs(60)).0, 0);
    let _ = Path::new(&done);
}

/// An administrator's `lockfs locks release` of the lock a `lockfs run` holds stops its
/// command, as a lost session would.
#[test]
fn an_administrators_release_stops_the_command_of_lockfs_run() {
    let c = Cluster::start(3, &[]);
    let s = c.servers();
    let mut r = Run::start(
        &s,
        &["--lock", "/job", "--kill-grace", "1"],
        // A command whose own child must stop too.
        &["sh", "-c", "sleep 1000; true", "release-run-marker"],
        "release-run-marker",
    );
    wait_until("the run holds the lock", Duration::from_secs(60), || {
        holders(&s, "/job") == 1
    });
    ok(&s, &["locks", "release", "/job"], None);
    let (code, err) = r.wait(Duration::from_secs(60));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("lock lost (released by an administrator)"),
        "{err}"
    );
}
