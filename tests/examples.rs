//! The runnable examples of `mount-tools/examples/` and the mount(8) helper
//! `mount-tools/mount.lockfs`, each run against a real 3-node cluster with two real mounts
//! standing for two hosts, and checked for its outcome.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::hosts::{note_state_of, noted_dead, run, wait_until, waited, Hosts, COMMAND_LIMIT};

/// Asserts that nothing reads or writes the cluster for a few seconds once what runs has
/// caught up with the last change: it follows changes without polling. (A script that
/// polls never has a quiet second, and the wait for one fails.)
fn quiet(h: &Hosts, what: &str) {
    wait_until(&format!("{what} to settle"), || {
        let before = h.requests();
        std::thread::sleep(Duration::from_secs(1));
        h.requests() == before
    });
    let before = h.requests();
    std::thread::sleep(Duration::from_secs(3));
    let after = h.requests();
    assert_eq!(
        after - before,
        0,
        "{what} made {} requests in 3 s while nothing changed",
        after - before
    );
}

/// Starts `leader-election.sh candidate` on host `host` ("A" or "B") with the address
/// `host<HOST>:5432` and `cmd` as the leader's command ("": the default), its output in
/// `$OUT/<host>.log`.
fn candidate(h: &mut Hosts, host: &str, cmd: &str) -> u32 {
    let lower = host.to_lowercase();
    let script = format!(
        "exec \"$EXAMPLES/leader-election.sh\" candidate \"${host}\" host{host}:5432 {cmd} \
         > \"$OUT/{lower}.log\" 2>&1"
    );
    h.spawn("bash", &["-c", &script])
}

#[test]
fn leader_election_one_leader_and_followers_learn_the_next() {
    let mut h = Hosts::start();
    let follower = h.spawn(
        "bash",
        &[
            "-c",
            "exec \"$EXAMPLES/leader-election.sh\" follow \"$B\" > \"$OUT/follow.log\"",
        ],
    );
    let a = candidate(&mut h, "A", "");
    if !waited(|| h.read_out("a.log").contains("leader: hostA:5432")) {
        panic!(
            "A not elected; its output:\n{}\n{}",
            h.read_out("a.log"),
            h.logs()
        );
    }
    let b = candidate(&mut h, "B", "");
    wait_until("the follower to learn of A", || {
        h.read_out("follow.log").contains("leader: hostA:5432")
    });
    // Exactly one leader: B's candidate waits, one exclusive holder.
    std::thread::sleep(Duration::from_millis(500));
    assert!(!h.read_out("b.log").contains("leader:"), "two leaders");
    let holders = h.ok("getfattr --only-values -n user.lockfs.holders \"$A/svc/db/leader\"");
    assert_eq!(holders.lines().count(), 1, "holders: {holders}");
    assert!(h.running(b));
    // The follower (and B's waiting candidate) cost the cluster nothing while nothing changes.
    quiet(&h, "the follower");
    // The leader dies; B is elected; the follower learns the new address.
    h.kill9(a);
    wait_until("B elected", || {
        h.read_out("b.log").contains("leader: hostB:5432")
    });
    wait_until("the follower to learn of B", || {
        h.read_out("follow.log").contains("leader: hostB:5432")
    });
    assert_eq!(h.ok("cat \"$A/svc/db/leader\""), "hostB:5432\n");
    assert!(h.running(follower));
}

/// A semaphore of 3 with 8 contenders on two hosts: never more than 3 inside at once, 3 inside
/// together at some point, and every contender gets its turn.
#[test]
fn at_most_n_runs_at_once_and_everyone_gets_a_turn() {
    let mut h = Hosts::start();
    // Each job notes its begin and end in one log (appends are atomic); the first three wait
    // inside until all three are in (bounded), which only a semaphore of 3 allows.
    std::fs::write(
        h.out("job.sh"),
        "echo \"begin $1\" >> \"$OUT/log\"
for _ in $(seq 600); do
    [ \"$(grep -c begin \"$OUT/log\")\" -ge 3 ] && break
    sleep 0.05
done
sleep 0.1
echo \"end $1\" >> \"$OUT/log\"
",
    )
    .unwrap();
    let contenders: Vec<u32> = (0..8)
        .map(|i| {
            let mount = if i % 2 == 0 { "$A" } else { "$B" };
            h.spawn(
                "bash",
                &[
                    "-c",
                    &format!(
                        "exec \"$EXAMPLES/at-most-n.sh\" \"{mount}\" backup 3 -- \
                         bash \"$OUT/job.sh\" {i} 2> \"$OUT/contender-{i}.err\""
                    ),
                ],
            )
        })
        .collect();
    for (i, pid) in contenders.into_iter().enumerate() {
        let status = h.wait_child(pid);
        assert!(
            status.success(),
            "contender {i}: {status}; its stderr: {}\nthe log:\n{}\n{}",
            h.read_out(&format!("contender-{i}.err")),
            h.read_out("log"),
            h.logs()
        );
    }
    let log = h.read_out("log");
    let (mut inside, mut most) = (std::collections::BTreeSet::new(), 0);
    for line in log.lines() {
        match line.split_once(' ') {
            Some(("begin", id)) => assert!(inside.insert(id), "{id} twice:\n{log}"),
            Some(("end", id)) => assert!(inside.remove(id), "{id} ended unbegun:\n{log}"),
            _ => panic!("bad line {line:?}"),
        }
        most = most.max(inside.len());
        assert!(inside.len() <= 3, "more than 3 at once:\n{log}");
    }
    assert!(inside.is_empty());
    assert_eq!(log.lines().count(), 16, "someone never got a turn:\n{log}");
    assert_eq!(most, 3, "never 3 at once:\n{log}");
    // The setting is the file's, seen from either host; the lock listing shows it.
    let file = "\"$B/semaphores/backup\"";
    assert_eq!(
        h.ok(&format!(
            "getfattr --only-values -n user.lockfs.max_holders {file}"
        )),
        "3"
    );
    assert!(h.ok("\"$LOCKFS\" locks").contains(
        "/semaphores/backup  generation 8  0 holder(s) (a semaphore: at most 3 exclusive)"
    ));
    // flock -n with every slot taken gives up at once; 0 and 1001 are refused.
    let holders: Vec<u32> = (0..3)
        .map(|i| {
            h.spawn_ready(
                &format!(
                    "exec \"$EXAMPLES/at-most-n.sh\" \"$A\" backup 3 -- \
                     bash -c 'touch \"$OUT/in{i}\"; exec sleep 1000'"
                ),
                &format!("in{i}"),
            )
        })
        .collect();
    let out = h.sh("\"$EXAMPLES/at-most-n.sh\" \"$B\" backup 3 0 -- true");
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("3 already run backup"),
        "{}",
        out.stderr
    );
    for bad in ["0", "1001", "x"] {
        let out = h.sh(&format!(
            "setfattr -n user.lockfs.max_holders -v {bad} {file}"
        ));
        assert!(
            !out.status.success() && out.stderr.contains("Invalid argument"),
            "{bad}: {}",
            out.stderr
        );
    }
    // Fewer slots than holders: refused while they hold it.
    let out = h.sh(&format!("setfattr -n user.lockfs.max_holders -v 2 {file}"));
    assert!(out.stderr.contains("busy"), "{}", out.stderr);
    for pid in holders {
        h.kill9(pid);
    }
    wait_until("the holders to let go", || {
        h.ok("\"$LOCKFS\" locks").contains("0 holder(s)")
    });
    // Removing the setting makes it an ordinary lock again (no longer listed while free).
    h.ok(&format!("setfattr -x user.lockfs.max_holders {file}"));
    assert_eq!(
        h.ok(&format!(
            "getfattr --only-values -n user.lockfs.max_holders {file}"
        )),
        "1"
    );
    assert!(!h.ok("\"$LOCKFS\" locks").contains("/semaphores/backup"));
}

/// leader-election.sh, on mounts without `on_lock_loss`: the leader file's own
/// `user.lockfs.on_loss=term` is enough. The leader's host is cut off from the cluster; when the
/// other host is elected, the old leader is already dead.
#[test]
fn a_cut_off_leader_is_stopped_before_the_next_is_elected() {
    let mut h = Hosts::start_proxied(4000, "allow_other,ttl=3", "allow_other,ttl=3");
    let b = candidate(&mut h, "B", "");
    wait_until("B elected", || {
        h.read_out("b.log").contains("leader: hostB:5432")
    });
    // A's leader notes what it sees of B's when it starts.
    std::fs::write(
        h.out("lead.sh"),
        format!("{}\nexec sleep infinity", note_state_of(b, "b-seen")),
    )
    .unwrap();
    let _a = candidate(&mut h, "A", "bash \"$OUT/lead.sh\"");
    h.cut_off_b();
    let elected = waited(|| h.out("b-seen").exists());
    h.cluster.heal();
    assert!(
        elected,
        "A not elected:\n{}\n{}",
        h.read_out("a.log"),
        h.logs()
    );
    let seen = h.read_out("b-seen");
    assert!(
        noted_dead(&seen),
        "the old leader still ran when A was elected: {seen}"
    );
    assert!(h.read_out("a.log").contains("leader: hostA:5432"));
    assert_eq!(h.ok("cat \"$A/svc/db/leader\""), "hostA:5432\n");
    assert_eq!(
        h.ok("getfattr --only-values -n user.lockfs.on_loss \"$A/svc/db/leader\""),
        "term"
    );
    let log = h.b.log_text();
    let term = format!("the session's lease ran out: signal {}", libc::SIGTERM);
    assert!(log.contains(&term), "{log}");
}

#[test]
fn one_job_at_a_time_across_hosts() {
    let mut h = Hosts::start();
    let _running = h.spawn_ready(
        "exec \"$EXAMPLES/one-at-a-time.sh\" \"$A\" backup -- \
         bash -c 'touch \"$OUT/running\"; exec sleep 1000'",
        "running",
    );
    // flock -n: B gives up at once.
    let out = h.sh("\"$EXAMPLES/one-at-a-time.sh\" \"$B\" backup -- touch \"$OUT/second\"");
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("running on another host"),
        "{}",
        out.stderr
    );
    // flock -w 1: B gives up after about a second.
    let out = h.sh("\"$EXAMPLES/one-at-a-time.sh\" \"$B\" backup 1 -- touch \"$OUT/second\"");
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(!h.out("second").exists(), "the job ran twice at once");
    // A different job runs at the same time; the job's own status comes back.
    let out = h.sh("\"$EXAMPLES/one-at-a-time.sh\" \"$B\" report -- sh -c 'exit 3'");
    assert_eq!(out.status.code(), Some(3));
    // A waiting run gets its turn when the first one ends.
    let waiter = h.spawn(
        "bash",
        &[
            "-c",
            "exec \"$EXAMPLES/one-at-a-time.sh\" \"$B\" backup 60 -- touch \"$OUT/second\"",
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(!h.out("second").exists());
    h.kill9(_running);
    assert!(h.wait_child(waiter).success());
    assert!(h.out("second").exists());
}

#[test]
fn service_registry_reflects_arrivals_and_deaths() {
    let mut h = Hosts::start();
    let _master = h.spawn(
        "bash",
        &[
            "-c",
            "exec \"$EXAMPLES/registry.sh\" master \"$B\" > \"$OUT/master.log\"",
        ],
    );
    let m1 = h.spawn(
        "bash",
        &[
            "-c",
            "exec \"$EXAMPLES/registry.sh\" member \"$A\" rs1 10.0.0.1:16020 > \"$OUT/rs1.log\"",
        ],
    );
    let _m2 = h.spawn(
        "bash",
        &[
            "-c",
            "exec \"$EXAMPLES/registry.sh\" member \"$B\" rs2 10.0.0.2:16020 > \"$OUT/rs2.log\"",
        ],
    );
    wait_until("both members listed", || {
        let log = h.read_out("master.log");
        log.contains("+ rs1 10.0.0.1:16020") && log.contains("+ rs2 10.0.0.2:16020")
    });
    quiet(&h, "the master");
    // A second rs1 cannot register while the first lives.
    let dup = h.sh("\"$EXAMPLES/registry.sh\" member \"$B\" rs1 10.0.0.9:16020 true");
    assert_eq!(dup.status.code(), Some(1), "{}", dup.stderr);
    assert_eq!(h.ok("cat \"$B/svc/rs/rs1\""), "10.0.0.1:16020\n");
    // rs1 dies: the master sees it leave, rs2 stays.
    h.kill9(m1);
    wait_until("rs1's departure", || {
        h.read_out("master.log").contains("- rs1")
    });
    assert_eq!(h.ok("ls \"$A/svc/rs\""), "rs2\n");
    assert!(!h.read_out("master.log").contains("- rs2"));
}

#[test]
fn hot_standby_takes_over_and_stale_writes_are_fenced() {
    let mut h = Hosts::start();
    let a = h.spawn(
        "bash",
        &[
            "-c",
            "exec \"$EXAMPLES/hot-standby.sh\" node \"$A\" a \"$OUT/store\" > \"$OUT/a.log\"",
        ],
    );
    wait_until("a active", || h.read_out("a.log").contains("a: active"));
    let _b = h.spawn(
        "bash",
        &[
            "-c",
            "exec \"$EXAMPLES/hot-standby.sh\" node \"$B\" b \"$OUT/store\" > \"$OUT/b.log\"",
        ],
    );
    wait_until("b standing by", || {
        h.read_out("b.log").contains("b: standby")
    });
    wait_until("a's writes", || {
        h.read_out("store/records").lines().count() >= 3
    });
    assert!(!h.read_out("b.log").contains("active"), "two active nodes");
    let token_a = token(&h.read_out("a.log"), "a");
    h.kill9(a);
    wait_until("b active", || h.read_out("b.log").contains("b: active"));
    let token_b = token(&h.read_out("b.log"), "b");
    assert!(
        token_b > token_a,
        "the fencing token grows: {token_a} -> {token_b}"
    );
    wait_until("b's writes", || {
        h.read_out("store/records")
            .contains(&format!("{token_b} b 2"))
    });
    // The old active, had it only been paused, would still write with its old token: refused.
    let late = h.sh(&format!(
        "\"$EXAMPLES/hot-standby.sh\" write \"$OUT/store\" {token_a} 'a late'"
    ));
    assert_eq!(late.status.code(), Some(1));
    assert!(late.stderr.contains("refused"), "{}", late.stderr);
    // Every record in the store is in token order: a's, then b's.
    let records = h.read_out("store/records");
    let tokens: Vec<u64> = records
        .lines()
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(tokens.windows(2).all(|w| w[0] <= w[1]), "{records}");
    assert!(!records.contains("a late"));
}

fn token(log: &str, name: &str) -> u64 {
    let prefix = format!("{name}: active with token ");
    log.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or_else(|| panic!("no token in {log:?}"))
}

#[test]
fn lockfile_has_one_winner_and_never_goes_stale() {
    let mut h = Hosts::start();
    // Ten racers on two hosts: exactly one gets the lockfile.
    let go = h.out("go");
    let mut racers = Vec::new();
    for i in 0..10 {
        let mount = if i % 2 == 0 { &h.a.path } else { &h.b.path };
        let mut cmd = h.command("bash");
        cmd.arg("-c")
            .arg(format!(
                "for i in $(seq 3000); do [ -e \"{}\" ] && break; sleep 0.01; done; \
                 exec \"$EXAMPLES/lockfile.sh\" \"$M\" job -- sh -c 'echo won; sleep 2'",
                go.display()
            ))
            .env("M", mount);
        racers.push(std::thread::spawn(move || run(cmd, COMMAND_LIMIT)));
    }
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&go, b"").unwrap();
    let outs: Vec<_> = racers.into_iter().map(|r| r.join().unwrap()).collect();
    let winners = outs.iter().filter(|o| o.stdout == "won\n").count();
    assert_eq!(
        winners,
        1,
        "{:?}",
        outs.iter().map(|o| &o.stderr).collect::<Vec<_>>()
    );
    for o in outs.iter().filter(|o| o.stdout != "won\n") {
        assert_eq!(o.status.code(), Some(1));
        assert!(o.stderr.contains("is held by"), "{}", o.stderr);
    }
    // The winner finished: the lockfile goes with its last close, which the kernel sends
    // in the background once the process has exited.
    let deadline = Instant::now() + Duration::from_secs(60);
    while h.a.path.join("eph/job").exists() {
        assert!(
            Instant::now() < deadline,
            "the winner's lockfile is still there after 60 s; in the cluster: {:?}; on B: {:?}\n{}",
            h.sh("\"$LOCKFS\" stat /eph/job").stdout,
            h.sh("ls \"$B/eph\"").stdout,
            h.logs()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // A holder killed -9 leaves no stale lockfile behind.
    let holder = h.spawn_ready(
        "exec \"$EXAMPLES/lockfile.sh\" \"$A\" job -- bash -c 'touch \"$OUT/holding\"; exec sleep 1000'",
        "holding",
    );
    let out = h.sh("\"$EXAMPLES/lockfile.sh\" \"$B\" job -- true");
    assert_eq!(out.status.code(), Some(1));
    h.kill9(holder);
    wait_until("the stale lockfile to vanish", || {
        !h.b.path.join("eph/job").exists()
    });
    h.ok("\"$EXAMPLES/lockfile.sh\" \"$B\" job -- true");
}

/// `/sbin/mount.lockfs` for the length of a test: installed as a link to the repository's
/// helper if no helper is installed, removed again at the end.
struct Helper {
    installed: bool,
}

impl Helper {
    fn install() -> Helper {
        let target = Path::new("/sbin/mount.lockfs");
        let ours = Path::new(env!("CARGO_MANIFEST_DIR")).join("mount-tools/mount.lockfs");
        if target.symlink_metadata().is_ok() {
            eprintln!("using the installed {}", target.display());
            return Helper { installed: false };
        }
        std::os::unix::fs::symlink(&ours, target).expect("installing /sbin/mount.lockfs");
        Helper { installed: true }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        if self.installed {
            let _ = std::fs::remove_file("/sbin/mount.lockfs");
        }
    }
}

/// The `lockfs mount` daemon serving `mountpoint`, if one runs.
fn daemon_of(mountpoint: &Path) -> Option<u32> {
    let out = Command::new("pgrep")
        .arg("-f")
        .arg(format!("lockfs mount .*{}$", mountpoint.display()))
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
}

/// Unmounts and kills whatever a test left at `mountpoint`.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if common::is_mounted(&self.0) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
        if let Some(pid) = daemon_of(&self.0) {
            // SAFETY: kill(2) of the daemon this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

#[test]
fn mount_t_lockfs_and_an_fstab_line_work() {
    let mut h = Hosts::start();
    let _helper = Helper::install();
    let m = h.out("m");
    std::fs::create_dir(&m).unwrap();
    let _cleanup = Cleanup(m.clone());
    let servers = h.cluster.servers();
    // A third host, with credentials of its own.
    let tls_dir = common::tls::host_dir("host-c");
    let opts = format!(
        "allow_other,ttl=5,_netdev,log={},lockfs={},tls_dir={}",
        h.out("m.log").display(),
        common::BIN,
        tls_dir.display()
    );
    // Errors come back with mount(8)'s exit codes and a clear line.
    let bad = h.sh(&format!(
        "mount -t lockfs {servers} \"$OUT/m\" -o bogus,lockfs={},tls_dir={}",
        common::BIN,
        tls_dir.display()
    ));
    assert_eq!(bad.status.code(), Some(1), "{}", bad.stderr);
    assert!(
        bad.stderr.contains("unknown mount option 'bogus'"),
        "{}",
        bad.stderr
    );
    let missing = h.sh(&format!(
        "mount -t lockfs {servers} \"$OUT/nowhere\" -o {opts}"
    ));
    assert_ne!(missing.status.code(), Some(0));
    assert!(!common::is_mounted(&m));
    // mount -t lockfs: mounted when it returns, and a host like any other.
    h.ok(&format!("mount -t lockfs {servers} \"$OUT/m\" -o {opts}"));
    assert!(common::is_mounted(&m));
    h.ok("echo via-mount-t > \"$OUT/m/f\" && cat \"$A/f\"");
    assert_eq!(h.ok("cat \"$B/f\""), "via-mount-t\n");
    h.ok("mkdir \"$A/eph\" && setfattr -n user.lockfs.ephemeral -v 1 \"$A/eph\"");
    let holder = h.spawn_ready(
        "exec 9>\"$OUT/m/eph/member\" && flock 9 && touch \"$OUT/held\" && exec sleep 1000",
        "held",
    );
    assert_eq!(
        h.sh("flock -n \"$A/eph/member\" true").status.code(),
        Some(1)
    );
    // As on a local filesystem, umount refuses while a process has a file open there...
    let busy = h.sh("umount \"$OUT/m\"");
    assert!(!busy.status.success(), "umount of a busy mount");
    assert!(common::is_mounted(&m));
    assert_eq!(
        h.sh("flock -n \"$A/eph/member\" true").status.code(),
        Some(1)
    );
    // ... and once it is closed, umount ends the daemon and its session.
    let other = h.spawn_ready(
        "exec 9>\"$OUT/m/eph/other\" && touch \"$OUT/other\" && exec sleep 1000",
        "other",
    );
    h.kill9(holder);
    h.ok("flock -n \"$A/eph/member\" true");
    h.kill9(other);
    h.ok("umount \"$OUT/m\"");
    wait_until("the daemon to exit", || daemon_of(&m).is_none());
    assert!(!common::is_mounted(&m));
    h.ok("test ! -e \"$A/eph/member\" && test ! -e \"$A/eph/other\"");
    // The same through an fstab line (an alternative fstab, so the host's stays untouched).
    std::fs::write(
        h.out("fstab"),
        format!("{servers} {} lockfs {opts} 0 0\n", m.display()),
    )
    .unwrap();
    h.ok("mount -T \"$OUT/fstab\" \"$OUT/m\"");
    assert!(common::is_mounted(&m));
    assert_eq!(h.ok("cat \"$OUT/m/f\""), "via-mount-t\n");
    h.ok("umount \"$OUT/m\"");
    let start = Instant::now();
    while daemon_of(&m).is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "daemon still running"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!common::is_mounted(&m));
}
