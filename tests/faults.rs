//! Fault injection with checkers, in the manner of Jepsen's analyses of etcd, ZooKeeper and
//! Consul: a real 3-node cluster, two real mounts standing for two hosts, real clients (`flock`,
//! `getfattr`, bash, `cat`-style reads and `echo`-style writes, the `lockfs` CLI), a nemesis that kills and pauses servers and pauses a
//! host's mount for longer than its session TTL, and checkers over the recorded history.
//!
//! Workloads and what is checked:
//! Faults: kill -9 and restart of the leader or a follower, SIGSTOP/SIGCONT of either
//! (including pauses longer than the sessions' TTL), network partitions that isolate the
//! leader or a follower (a proxy in front of every node, `common/proxy.rs`), then a full disk
//! on node 3 (a small tmpfs: the node must halt with a clear error, lose nothing, and catch up
//! once restarted with space), and at the end host B cut off past its TTL while one of its
//! processes holds the lock: its mount frozen, or its network to the cluster cut.
//!
//! 1. Lock safety with fencing. Four clients (two per host) loop: `flock` a file (the time it
//!    was invoked is recorded, and the wait is reported), read its lock
//!    generation (the fencing token), write records stamped with it to a fenced store outside
//!    the cluster (`mount-tools/examples/hot-standby.sh write`: refuses a token older than one
//!    it has accepted), release. The lock file has `user.lockfs.on_loss=kill`: a holder whose
//!    host loses the lock is killed (by the mount's lock guardian, also when the mount is
//!    frozen). Checked: every grant has its own generation; a grant that starts after another
//!    ended has a higher one; two critical sections never overlap, the cut-off host's
//!    included (a killed section lasts from its first write to its last); the holder that
//!    host B's cut-off strands is killed, never has a write refused, and its lock passes on.
//!    A semaphore: four more clients (two per host) take turns on a file that admits two
//!    holders at once (`user.lockfs.max_holders`), also with `on_loss=kill`. Checked: never
//!    more than two turns at once (a killed turn lasts until its last tick), and every client
//!    had turns.
//! 2. A set of acknowledged writes: every write the cluster acknowledged is on every node at the
//!    end.
//! 3. A linearizable register: four clients use `/reg`, two through the files of mounts A and B
//!    (read, write with O_TRUNC, the `user.lockfs.content_generation` attribute) and two through
//!    the CLI (`lockfs cat`, `lockfs stat`, `lockfs put`, and compare-and-set with `lockfs put
//!    --if-generation` at the generation they saw last). Each write is a unique value. The
//!    history, contents and generations both, is checked by a Wing-Gong search
//!    (`common/linearizable.rs`), with operations of unknown outcome free to have happened or
//!    not; a failing history is shrunk to a small one that still fails, for the report.
//!    A second register, `/reg2`, is read only through host A's mount (its cache serves what
//!    it holds) while host B only replaces it (`echo >`), and checked the same way.
//! 4. Ephemeral files: a file held open on host B exists as long as B is connected (through
//!    every server fault) and is gone within TTL plus a grace after B is cut off.
//!
//! Each run prints a report (operations by kind and outcome, the faults, any anomalies with the
//! history that shows them) and the seed; `LOCKFS_FAULT_SEED` replays a run's fault schedule,
//! `LOCKFS_FAULT_SECONDS` sets how long faults are injected (default 45: the CI run; longer for
//! soak runs), `LOCKFS_FAULT_CUT=frozen` or `network` how host B is cut off at the end. The
//! seed fixes the faults, their order and lengths, not the interleaving of real
//! processes: a replay re-runs the same schedule, which is how a failure is chased here.
//!
//! A second test pauses and kills the leader round after round while a host with a 5 s TTL
//! holds a lock and an ephemeral file: the host's session must never end.
//!
//! The parts live apart: the faults in `common/nemesis.rs`, the clients in
//! `common/workloads.rs` (the shell ones as scripts in `tests/scripts/`), the checkers in
//! `common/checkers.rs` and `common/linearizable.rs`; this file runs them and reports.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::checkers::{
    check_ephemeral, check_locks, check_semaphore, elections_ns, parse_lock_logs, LockHistory,
    SEM_SLOTS,
};
use common::linearizable::{self, Kind as RegKind, Op as RegOp};
use common::nemesis::{
    cut_off_host, fill_until_halted, now_ns, pause_node, random_server_faults, Paused, SmallDisk,
};
use common::workloads::{
    ephemeral_dir, json_generation, observe, register_client, set_on, set_writer, setfattr,
    Clients, Procs, Via, CRITICAL_SECTION, STALE_CLIENT,
};
use common::{Cluster, Mount, Rng};

/// The mounts' session TTL: the default. A 5 s TTL under leader faults is the second test's.
const TTL_S: u64 = 10;
const LOCK_DELAY_MS: u64 = 1000;
/// How long after a host is cut off its ephemeral file must be gone: TTL, the leader's tick,
/// and a commit, with room for a busy machine.
const EPHEMERAL_GRACE: Duration = Duration::from_secs(5);

/// The fault tests take turns: each loads a 2-core machine enough to bend the other's timings.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn take_turn() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn locks_writes_and_ephemeral_files_survive_the_nemesis() {
    let _turn = take_turn();
    let seed = std::env::var("LOCKFS_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now_ns() | 1);
    let fault_secs: u64 = std::env::var("LOCKFS_FAULT_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(45);
    eprintln!(
        "fault run: seed {seed} (LOCKFS_FAULT_SEED={seed} replays it), {fault_secs} s of faults"
    );
    let mut rng = Rng(seed);

    let lock_delay = LOCK_DELAY_MS.to_string();
    let dir = common::testdir::tempdir().unwrap();
    // Node 3 keeps its data on a small disk, to be filled.
    let disk = SmallDisk::mount(dir.path().join("disk3"));
    let data = BTreeMap::from([(3, disk.path.join("node3"))]);
    let mut cluster = Cluster::start_proxied_with_data(3, &["--lock-delay-ms", &lock_delay], &data);
    let out = dir.path().to_path_buf();
    let servers = cluster.servers();
    let opts = format!("allow_other,ttl={TTL_S}");
    // Lock waits are logged, for the autopsy of a lock anomaly.
    let filter =
        "info,lockfs::fs::locks=debug,lockfs::client::session=debug,lockfs::fs::guardian=debug";
    let mut a = Mount::start_as(
        "host-a",
        &servers,
        &out.join("a"),
        &opts,
        &out.join("mount-a.log"),
        filter,
    );
    let mut b = Mount::start_as(
        "host-b",
        &servers,
        &out.join("b"),
        &opts,
        &out.join("mount-b.log"),
        filter,
    );
    let paused = Paused::default();
    let mut procs = Procs::default();
    let mut holders = Procs::default();
    let store = Path::new(env!("CARGO_MANIFEST_DIR")).join("mount-tools/examples/hot-standby.sh");

    // Set-up: the lock file, the set directory, an ephemeral file held open on B.
    std::fs::write(a.path.join("lock"), b"").unwrap();
    // Lock-loss enforcement: a holder of the lock (or the semaphore) whose host loses it is
    // killed, so no host is excused an overlap any more.
    setfattr(&a.path.join("lock"), "user.lockfs.on_loss", "kill");
    std::fs::create_dir(a.path.join("set")).unwrap();
    ephemeral_dir(&a.path.join("eph"));
    let mut holder = Command::new("bash");
    holder
        .arg("-c")
        .arg("exec 8>\"$B/eph/member\" && exec sleep 100000")
        .env("B", &b.path);
    holders.spawn(holder);
    let member = a.path.join("eph/member");
    let start = Instant::now();
    while !member.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the ephemeral file never appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Workloads.
    // The clients stop when told (below); this only bounds them if the test dies first.
    let run_secs = fault_secs + 900;
    let end = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + run_secs;
    let hosts = Clients {
        hosts: [("A", &a.path), ("B", &b.path)],
        out: &out,
        end,
    };
    let clients = hosts.start_lock_clients(&mut procs, &store, 4);
    let logged: Vec<String> = clients.iter().cloned().chain(["stale".into()]).collect();
    // A semaphore of SEM_SLOTS, two clients per host.
    let sem = a.path.join("sem");
    std::fs::write(&sem, b"").unwrap();
    setfattr(&sem, "user.lockfs.max_holders", &SEM_SLOTS.to_string());
    setfattr(&sem, "user.lockfs.on_loss", "kill");
    let sem_clients = hosts.start_sem_clients(&mut procs, 4);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = set_writer(servers.clone(), stop.clone());
    common::ok(&servers, &["put", "/reg"], Some(b"init"));
    let reg_gen0 = json_generation(&common::ok(&servers, &["stat", "--json", "/reg"], None))
        .expect("a content generation in lockfs stat --json");
    let epoch = Instant::now();
    let vias = [
        Via::Files(a.path.join("reg")),
        Via::Files(b.path.join("reg")),
        Via::Cli(servers.clone()),
        Via::Cli(servers.clone()),
    ];
    let registers: Vec<_> = vias
        .into_iter()
        .zip(1..)
        .map(|(via, id)| register_client(id, via, epoch, stop.clone()))
        .collect();
    // A second register: host A only reads (through its cache) what host B keeps replacing.
    common::ok(&servers, &["put", "/reg2"], Some(b"init"));
    let reg2_gen0 = json_generation(&common::ok(&servers, &["stat", "--json", "/reg2"], None))
        .expect("a content generation in lockfs stat --json");
    let registers2: Vec<_> = [
        Via::Reads(a.path.join("reg2")),
        Via::Reads(a.path.join("reg2")),
        Via::Replaces(b.path.join("reg2")),
    ]
    .into_iter()
    .zip(5..)
    .map(|(via, id)| register_client(id, via, epoch, stop.clone()))
    .collect();
    let observer = observe(member.clone(), stop.clone());

    // The nemesis: random server faults, a full disk, then host B cut off past its TTL.
    let mut faults = random_server_faults(&mut cluster, &paused, &mut rng, fault_secs, TTL_S);
    let (halted, full_disk) = fill_until_halted(&mut cluster, &disk, 3);
    faults.push(full_disk);

    // Host B cut off (its mount paused) for longer than its TTL while one of its processes
    // holds the lock: its session expires, the lock goes to a client on A after the
    // lock-delay, its ephemeral file goes, and the stranded holder's late writes are fenced.
    let stale_writes = (TTL_S * 1000 + LOCK_DELAY_MS + 5000) / 200;
    let holding = out.join("stale-holding");
    let mut stale = Command::new("bash");
    stale
        .arg("-c")
        .arg(STALE_CLIENT)
        .env("ID", "stale")
        .env("HOST", "B")
        .env("M", &b.path)
        .env("OUT", &out)
        .env("STORE", &store)
        .env("CS", CRITICAL_SECTION)
        .env("MARKER", &holding)
        .env("N", stale_writes.to_string());
    procs.spawn(stale);
    let start = Instant::now();
    let mut early_anomalies = Vec::new();
    while !holding.exists() {
        if start.elapsed() > Duration::from_secs(90) {
            // Go on with the cut-off: the report and the logs tell the rest.
            early_anomalies.push(format!(
                "the stranded holder never got the lock within 90 s; its stderr: {:?}",
                std::fs::read_to_string(out.join("client-stale.err")).unwrap_or_default()
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let b_pid = b.pid().unwrap();
    let b_log_before_cut = b.log_text();
    // Cut off in one of two ways: its mount process frozen, or the network between its mount
    // and every node cut while the host runs on. `LOCKFS_FAULT_CUT=frozen|network` picks one.
    let frozen = match std::env::var("LOCKFS_FAULT_CUT").as_deref() {
        Ok("frozen") => true,
        Ok("network") => false,
        _ => rng.below(2) == 0,
    };
    let cut = cut_off_host(&cluster, &paused, ("B", b_pid), TTL_S * 1000 + 3000, frozen);
    let cut_start = cut.start_ns;
    faults.push(cut);

    // The clients on A keep asking for the lock until well after it must have passed on
    // (however long the faults before took: a fixed end once stopped them first), then finish
    // their last rounds: a flock timeout and a critical section, or the stranded holder's
    // long one.
    let passed_on_by = cut_start
        + TTL_S * 1_000_000_000
        + LOCK_DELAY_MS * 1_000_000
        + EPHEMERAL_GRACE.as_nanos() as u64;
    std::thread::sleep(Duration::from_nanos(
        (passed_on_by + 5_000_000_000).saturating_sub(now_ns()),
    ));
    std::fs::write(out.join("stop"), b"").unwrap();
    let stragglers = procs.wait_all(Duration::from_secs(60));
    stop.store(true, Ordering::SeqCst);
    let (acked, failed) = writer.join().unwrap();
    let reg_history: Vec<RegOp> = registers
        .into_iter()
        .flat_map(|r| r.join().unwrap())
        .collect();
    let reg2_history: Vec<RegOp> = registers2
        .into_iter()
        .flat_map(|r| r.join().unwrap())
        .collect();
    let seen = observer.join().unwrap();
    cluster.wait_leader(Duration::from_secs(60));
    // The cluster's locks and waiters as the run ends, for the report.
    let locks_at_end =
        String::from_utf8_lossy(&common::cli(&servers, &["locks"], None).stdout).into_owned();

    // Checkers.
    let mut anomalies = early_anomalies;
    // Server faults never end a connected host's session (a new leader restarts every
    // session's timer; the client finds it within the TTL): A's never, B's not before its
    // cut-off.
    for (host, log) in [("A", a.log_text()), ("B", b_log_before_cut)] {
        for line in session_endings(&log) {
            anomalies.push(format!(
                "host {host}'s session ended while it was connected: {line}"
            ));
        }
    }
    let log3 = cluster.log_of(3);
    if !halted || !log3.contains("No space left on device") {
        anomalies.push(format!(
            "node 3 did not halt on its full disk with a clear error (halted: {halted})"
        ));
    }
    let history = parse_lock_logs(&out, &logged);
    // No excuse for a cut-off host: its holders were killed when the lease ran out, before the
    // cluster could expire the session and, after the lock-delay, pass the lock on.
    anomalies.extend(check_locks(&history, &[]));
    anomalies.extend(check_semaphore(&out, &sem_clients, &[]));
    anomalies.extend(check_stranded_holder(
        &history,
        &out,
        cut_start,
        passed_on_by,
    ));
    if history.sections.len() < 5 {
        anomalies.push(format!(
            "only {} critical sections: the lock workload barely ran",
            history.sections.len()
        ));
    }
    anomalies.extend(check_acked_writes(&cluster, &acked));
    if let Err(e) = linearizable::check("init", reg2_gen0, &reg2_history) {
        let small = linearizable::shrink("init", reg2_gen0, &reg2_history, Duration::from_secs(30));
        let shown: String = small
            .iter()
            .rev()
            .take(40)
            .rev()
            .map(|o| format!("\n    {o:?}"))
            .collect();
        anomalies.push(format!(
            "register /reg2 (reads on A, replaces on B): {e}\n  smallest failing history ({} of {} operations):{shown}",
            small.len(),
            reg2_history.len()
        ));
    }
    let reads2 = reg2_history
        .iter()
        .filter(|o| matches!(o.kind, RegKind::Read(_)))
        .count();
    let checked = Instant::now();
    let register_verdict = linearizable::check("init", reg_gen0, &reg_history);
    let check_time = checked.elapsed();
    if let Err(e) = register_verdict {
        // The smallest history found that shows it, with times relative to its first call.
        let small = linearizable::shrink("init", reg_gen0, &reg_history, Duration::from_secs(30));
        let t0 = small.first().map_or(0, |o| o.call);
        let mut shown = String::new();
        for o in small.iter().rev().take(60).rev() {
            let ret = if o.ret == u64::MAX {
                "unknown".to_string()
            } else {
                format!("{:.3} ms", (o.ret - t0) as f64 / 1e6)
            };
            let _ = write!(
                shown,
                "\n    client {} {:?}: {:.3} ms .. {ret}",
                o.client,
                o.kind,
                (o.call - t0) as f64 / 1e6
            );
        }
        anomalies.push(format!(
            "register: {e}\n  smallest failing history found ({} of {} operations, from generation {reg_gen0}; the last 60 shown):{shown}",
            small.len(),
            reg_history.len()
        ));
    }
    // The ephemeral file: present from the start until B was cut off, gone within TTL plus a
    // grace after B's session timer last started, and not before B's keep-alives could have
    // lapsed.
    let elections: Vec<u64> = (1..=3)
        .flat_map(|id| elections_ns(&cluster.log_of(id)))
        .collect();
    anomalies.extend(check_ephemeral(
        &seen,
        cut_start,
        &elections,
        TTL_S * 1_000_000_000,
        EPHEMERAL_GRACE.as_nanos() as u64,
    ));

    // The report.
    let t0 = faults.first().map_or(cut_start, |f| f.start_ns);
    let mut report = String::new();
    let _ = writeln!(report, "== lockfs fault run, seed {seed} ==");
    let _ = writeln!(
        report,
        "lock: {} critical sections, flock(1) outcomes {:?} (0 granted, 1 timed out), store writes {} accepted / {} refused",
        history.sections.len(),
        history.attempts,
        history.writes.iter().filter(|w| w.accepted).count(),
        history.writes.iter().filter(|w| !w.accepted).count()
    );
    let mut waits: Vec<u64> = history
        .sections
        .iter()
        .map(|s| s.t0.saturating_sub(s.invoked))
        .collect();
    waits.sort_unstable();
    let pct = |p: usize| waits.get((waits.len() * p / 100).min(waits.len().saturating_sub(1)));
    if let (Some(p50), Some(p99), Some(max)) = (pct(50), pct(99), waits.last()) {
        let _ = writeln!(
            report,
            "lock waits, flock(1) invoked to granted: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            *p50 as f64 / 1e6,
            *p99 as f64 / 1e6,
            *max as f64 / 1e6
        );
    }
    let _ = writeln!(
        report,
        "set: {} writes acknowledged, {failed} failed or unknown",
        acked.len()
    );
    let count = |f: &dyn Fn(&RegOp) -> bool| reg_history.iter().filter(|o| f(o)).count();
    let unknown = |o: &RegOp| o.ret == u64::MAX;
    let _ = writeln!(
        report,
        "register (2 clients through files, 2 through the CLI): {} reads, {} generation reads, \
         {} writes ({} of unknown outcome), compare-and-set {} applied / {} refused / {} unknown; \
         checked in {check_time:?}",
        count(&|o| matches!(o.kind, RegKind::Read(_))),
        count(&|o| matches!(o.kind, RegKind::ReadGen(_))),
        count(&|o| matches!(o.kind, RegKind::Write(_))),
        count(&|o| matches!(o.kind, RegKind::Write(_)) && unknown(o)),
        count(&|o| matches!(o.kind, RegKind::Cas { ok: true, .. }) && !unknown(o)),
        count(&|o| matches!(o.kind, RegKind::Cas { ok: false, .. })),
        count(&|o| matches!(o.kind, RegKind::Cas { .. }) && unknown(o)),
    );
    let _ = writeln!(
        report,
        "register /reg2 (host A reads through its cache what host B replaces): {reads2} reads, \
         {} writes",
        reg2_history.len() - reads2
    );
    let _ = writeln!(report, "ephemeral: presence seen from host A {seen:?}");
    let _ = writeln!(report, "faults ({}):", faults.len());
    for f in &faults {
        let _ = writeln!(
            report,
            "  +{:>6.1} s .. +{:>6.1} s  {}",
            (f.start_ns - t0) as f64 / 1e9,
            (f.end_ns - t0) as f64 / 1e9,
            f.what
        );
    }
    for ps in &stragglers {
        let _ = writeln!(
            report,
            "a client process group had to be killed at the end:\n{ps}"
        );
    }
    if !stragglers.is_empty() {
        let tail: Vec<String> = b
            .log_text()
            .lines()
            .rev()
            .take(30)
            .map(String::from)
            .collect();
        let _ = writeln!(report, "mount B's log, last lines:");
        for l in tail.iter().rev() {
            let _ = writeln!(report, "  {l}");
        }
    }
    if !anomalies.is_empty() {
        let _ = writeln!(report, "locks at the end (lockfs locks):\n{locks_at_end}");
    }
    let _ = writeln!(report, "anomalies: {}", anomalies.len());
    for a in &anomalies {
        let _ = writeln!(report, "  - {a}");
    }
    eprintln!("{report}");
    // Keep the report and every log of the run, small as they are, for a failure's autopsy.
    let keep = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("faults-{seed}-{}", now_ns() / 1_000_000_000));
    let _ = std::fs::create_dir_all(&keep);
    let _ = std::fs::write(keep.join("report.txt"), &report);
    // The register history, one operation per line, for checking again by hand.
    let ops: String = reg_history.iter().map(|o| format!("{o:?}\n")).collect();
    let _ = std::fs::write(keep.join("register-history.txt"), ops);
    for entry in std::fs::read_dir(&out)
        .into_iter()
        .flatten()
        .chain(std::fs::read_dir(cluster.dir.path()).into_iter().flatten())
        .flatten()
    {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "log" || e == "err") {
            let _ = std::fs::copy(&path, keep.join(entry.file_name()));
        }
    }
    let _ = std::fs::copy(out.join("store/records"), keep.join("store-records"));
    eprintln!("report and logs kept in {}", keep.display());
    drop(procs);
    drop(holders);
    a.stop();
    b.stop();
    assert!(
        anomalies.is_empty(),
        "{} anomalies (seed {seed}); see the report above\n{}",
        anomalies.len(),
        cluster.logs()
    );
}

/// Every node holds every write of the set workload that was acknowledged (in `/set`).
fn check_acked_writes(cluster: &Cluster, acked: &[u64]) -> Vec<String> {
    let mut anomalies = Vec::new();
    for node in 1..=3u64 {
        match set_on(&cluster.addr(node)) {
            Ok(present) => {
                let present: std::collections::BTreeSet<u64> = present.into_iter().collect();
                let lost: Vec<u64> = acked
                    .iter()
                    .filter(|i| !present.contains(i))
                    .copied()
                    .collect();
                if !lost.is_empty() {
                    anomalies.push(format!("node {node} lacks acknowledged writes {lost:?}"));
                }
            }
            Err(e) => anomalies.push(format!("node {node} could not list /set: {e}")),
        }
    }
    anomalies
}

/// The stranded holder on host B (client "stale", holding the lock when B was cut off at
/// `cut_start`) must have been killed before it wrote anything the store refused, and its
/// lock passed to a client on another host by `passed_on_by` (TTL + lock-delay + grace). A
/// holder stuck on a frozen mount may have written nothing at all: every child it forks hangs
/// closing the lock file until the mount answers.
fn check_stranded_holder(
    history: &LockHistory,
    out: &Path,
    cut_start: u64,
    passed_on_by: u64,
) -> Vec<String> {
    let mut anomalies = Vec::new();
    let stale = history.sections.iter().find(|s| s.client == "stale");
    if stale.is_some_and(|st| st.completed) {
        anomalies.push(format!(
            "the stranded holder was not killed when its host lost the lock: {stale:?}"
        ));
    }
    let stale_log = std::fs::read_to_string(out.join("client-stale.log")).unwrap_or_default();
    if !stale_log.contains("attempt stale 137 ") {
        anomalies.push(format!(
            "the stranded holder's flock did not die of SIGKILL: {:?}",
            stale_log.lines().last()
        ));
    }
    let taken = history
        .sections
        .iter()
        .find(|s| s.client != "stale" && s.t0 > cut_start && stale.is_none_or(|st| s.gen > st.gen))
        .map(|s| s.t0);
    match taken {
        Some(t) if t <= passed_on_by => {}
        Some(t) => anomalies.push(format!(
            "the lock of the cut-off host passed on only {:.1} s after the cut-off",
            (t - cut_start) as f64 / 1e9
        )),
        None => anomalies.push("the lock of the cut-off host never passed on".into()),
    }
    for w in history
        .writes
        .iter()
        .filter(|w| w.client == "stale" && !w.accepted)
    {
        anomalies.push(format!(
            "the stranded holder still wrote after a newer holder did (refused): {w:?}"
        ));
    }
    anomalies
}

/// The lines of a mount's log that say its session ended, however it learned of it.
fn session_endings(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("expired") || l.contains(" lost:") || l.contains(" ended;"))
        .map(String::from)
        .collect()
}

/// With a short TTL (5 s), the leader is paused (shorter and longer than the TTL) and killed,
/// round after round, while a host holds a lock, keeps an ephemeral file open and writes: its
/// session must survive every round (a new leader restarts every session's timer, and the
/// client finds the new leader before its lease runs out), so the lock stays with the same
/// holder under the same fencing token and the ephemeral file stays.
#[test]
fn a_connected_hosts_session_survives_leader_faults_with_a_short_ttl() {
    const SHORT_TTL_S: u64 = 5;
    let _turn = take_turn();
    let mut cluster = Cluster::start(3, &["--lock-delay-ms", "1000"]);
    let dir = common::testdir::tempdir().unwrap();
    let servers = cluster.servers();
    let opts = format!("allow_other,ttl={SHORT_TTL_S}");
    let mut m = Mount::start(
        &servers,
        &dir.path().join("m"),
        &opts,
        &dir.path().join("mount.log"),
    );
    let paused = Paused::default();
    let mut procs = Procs::default();
    ephemeral_dir(&m.path.join("eph"));
    std::fs::write(m.path.join("lock"), b"").unwrap();
    let marker = dir.path().join("holding");
    let mut holder = Command::new("bash");
    holder
        .arg("-c")
        .arg(
            "exec 8>\"$M/eph/member\" && exec 9>>\"$M/lock\" && flock 9 && touch \"$MARKER\" \
             && exec sleep 100000",
        )
        .env("M", &m.path)
        .env("MARKER", &marker);
    procs.spawn(holder);
    let start = Instant::now();
    while !marker.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the holder never got the lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let generation = |m: &Mount| {
        let out = Command::new("getfattr")
            .args(["--only-values", "-n", "user.lockfs.lock_generation"])
            .arg(m.path.join("lock"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let gen0 = generation(&m);
    assert!(!gen0.is_empty(), "no lock generation");
    // A writer keeps the mount busy through every fault.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (path, stop) = (m.path.join("beat"), stop.clone());
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0u64, 0u64);
            while !stop.load(Ordering::SeqCst) {
                match std::fs::write(&path, ok.to_string()) {
                    Ok(()) => ok += 1,
                    Err(_) => failed += 1,
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (ok, failed)
        })
    };
    let pause_ms = [
        2000,
        SHORT_TTL_S * 1000 + 2000,
        0,
        SHORT_TTL_S * 1000 + 2000,
        3000,
        0,
    ];
    let mut problems = Vec::new();
    for (round, ms) in pause_ms.into_iter().enumerate() {
        let leader = cluster.wait_leader(Duration::from_secs(60));
        let what = if ms == 0 {
            cluster.kill(leader);
            std::thread::sleep(Duration::from_millis(1500));
            cluster.spawn(leader);
            format!("kill -9 of leader {leader}")
        } else {
            pause_node(&cluster, &paused, leader, ms);
            format!("SIGSTOP of leader {leader} for {ms} ms")
        };
        // Give a wrongly expiring leader time to act, then look.
        std::thread::sleep(Duration::from_millis(SHORT_TTL_S * 1000 / 2 + 1000));
        let gen = generation(&m);
        let member = m.path.join("eph/member").exists();
        let ended = session_endings(&m.log_text());
        eprintln!(
            "round {round}: {what}; lock generation {gen}, ephemeral file {member}, session endings {}",
            ended.len()
        );
        if gen != gen0 || !member || !ended.is_empty() {
            problems.push(format!(
                "after round {round} ({what}): lock generation {gen} (was {gen0}), ephemeral \
                 file present: {member}, session endings in the mount's log: {ended:?}"
            ));
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    let (beats, failed) = writer.join().unwrap();
    eprintln!("writes through the mount during the faults: {beats} ok, {failed} failed");
    // A busy host keeps its lock: another process on it still cannot take it.
    let busy = Command::new("flock")
        .args(["-n"])
        .arg(m.path.join("lock"))
        .arg("true")
        .status()
        .unwrap();
    if busy.code() != Some(1) {
        problems.push(format!("flock -n on the held lock: {busy}"));
    }
    if failed > 0 {
        problems.push(format!("{failed} writes through the mount failed"));
    }
    drop(procs);
    drop(paused);
    let log = m.log_text();
    m.stop();
    assert!(
        problems.is_empty(),
        "{problems:#?}\n--- mount log (last lines) ---\n{}\n{}",
        log.lines()
            .rev()
            .take(60)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n"),
        cluster.logs()
    );
}

/// A paused leader keeps its connections open and says nothing. A request a mount sent it must
/// go to the new leader after a few seconds, not wait on the paused one until its deadline and
/// fail with EIO.
#[test]
fn a_request_stuck_on_a_paused_leader_goes_to_the_new_one() {
    let _turn = take_turn();
    let cluster = Cluster::start(3, &[]);
    let dir = common::testdir::tempdir().unwrap();
    let mut m = Mount::start(
        &cluster.servers(),
        &dir.path().join("m"),
        "allow_other",
        &dir.path().join("mount.log"),
    );
    let paused = Paused::default();
    // The mount's connection is now to the leader: writes go there.
    std::fs::write(m.path.join("f"), b"before").unwrap();
    let leader = cluster.wait_leader(Duration::from_secs(60));
    let pid = cluster
        .nodes
        .iter()
        .find(|n| n.id == leader)
        .unwrap()
        .pid()
        .unwrap();
    paused.pause(pid);
    // Resumed when these return, or by the drop of `paused` if they never do.
    let write = std::fs::write(m.path.join("f"), b"during");
    let read = std::fs::read(m.path.join("f"));
    let new_leader = cluster.wait_leader(Duration::from_secs(60));
    paused.resume(pid);
    let log = m.log_text();
    m.stop();
    assert!(write.is_ok(), "write during the pause: {write:?}\n{log}");
    assert_eq!(
        read.ok().as_deref(),
        Some(&b"during"[..]),
        "read during the pause\n{log}"
    );
    assert_ne!(new_leader, leader, "the paused leader was replaced");
}

#[test]
fn the_ephemeral_checker_counts_the_ttl_from_the_last_election_during_the_cut() {
    let s = 1_000_000_000u64;
    let line =
        "[2026-11-30T22:42:14.028Z INFO  lockfs::server::node] node 1 is now the leader (term 2)";
    let other = "[2026-11-30T22:42:15.000Z INFO  lockfs::server::node] node 1 is Follower";
    let elections = elections_ns(&format!("{line}\n{other}\ngarbage\n"));
    assert_eq!(elections, vec![1_796_078_534_028_000_000], "{line}");
    let (cut, ttl, grace) = (100 * s, 10 * s, 5 * s);
    let gone_at = |t: u64| vec![(cut - s, true), (t, false)];
    assert!(check_ephemeral(&gone_at(cut + 12 * s), cut, &[], ttl, grace).is_empty());
    let late = check_ephemeral(&gone_at(cut + 16 * s), cut, &[], ttl, grace);
    assert!(late[0].contains("outlived"), "{late:?}");
    // An election during the cut restarts the session's timer; one before the cut does not.
    let after = [cut - 50 * s, cut + 4 * s];
    assert!(check_ephemeral(&gone_at(cut + 16 * s), cut, &after, ttl, grace).is_empty());
    let late = check_ephemeral(&gone_at(cut + 20 * s), cut, &after, ttl, grace);
    assert!(late[0].contains("after the last election"), "{late:?}");
    let early = check_ephemeral(&gone_at(cut + 2 * s), cut, &[], ttl, grace);
    assert!(
        early[0].contains("while its host was connected"),
        "{early:?}"
    );
    let back = vec![(cut, true), (cut + 12 * s, false), (cut + 13 * s, true)];
    assert!(check_ephemeral(&back, cut, &[], ttl, grace)[0].contains("came back"));
    let never = vec![(cut, true)];
    assert!(check_ephemeral(&never, cut, &[], ttl, grace)[0].contains("never vanished"));
}

#[test]
fn the_lock_checker_finds_overlaps_reused_tokens_and_late_stale_writes() {
    use common::checkers::{LockHistory, Section, StoreWrite};
    let section = |client: &str, host: &str, gen, t0, t1| Section {
        client: client.into(),
        host: host.into(),
        gen,
        invoked: t0,
        t0,
        t1,
        completed: true,
    };
    let write = |client: &str, gen, accepted, t| StoreWrite {
        client: client.into(),
        host: String::new(),
        gen,
        accepted,
        t,
    };
    let history = |sections: Vec<Section>, writes: Vec<StoreWrite>| LockHistory {
        sections,
        writes,
        intents: Vec::new(),
        attempts: Default::default(),
    };
    // One after the other, each with a higher token: fine.
    let ok = history(
        vec![section("a", "A", 1, 10, 20), section("b", "B", 2, 21, 30)],
        vec![write("a", 1, true, 15), write("b", 2, true, 25)],
    );
    assert_eq!(check_locks(&ok, &[]), Vec::<String>::new());
    // A token granted twice, and a later grant with a lower token.
    let reused = history(
        vec![section("a", "A", 2, 10, 20), section("b", "B", 2, 21, 30)],
        vec![],
    );
    assert!(check_locks(&reused, &[])[0].contains("granted twice"));
    let lower = history(
        vec![section("a", "A", 3, 10, 20), section("b", "B", 2, 21, 30)],
        vec![],
    );
    assert!(check_locks(&lower, &[])[0].contains("lower or equal generation"));
    // Overlapping holders: an anomaly, unless the older one's host was cut off meanwhile; and
    // then its write after the newer holder's first accepted one must have been refused.
    let overlap = |late_accepted| {
        history(
            vec![section("b", "B", 1, 10, 40), section("a", "A", 2, 20, 30)],
            vec![
                write("b", 1, true, 12),
                write("a", 2, true, 22),
                write("b", 1, late_accepted, 25),
            ],
        )
    };
    assert!(check_locks(&overlap(false), &[])[0].contains("never cut off"));
    let b_cut = [("B".to_string(), 11, 35)];
    assert_eq!(check_locks(&overlap(false), &b_cut), Vec::<String>::new());
    assert!(check_locks(&overlap(true), &b_cut)[0].contains("stale holder's write was accepted"));
    // A killed section (writes, no end logged) spans its first to its last write; with
    // lock-loss enforcement no host is excused, so it must end before the next one begins.
    let dir = common::testdir::tempdir().expect("tempdir");
    let logs = |killed_last: u64| {
        std::fs::write(
            dir.path().join("client-k.log"),
            format!("i k 1 11 B\nw k 1 ok 12 B\ni k 1 {killed_last} B\nattempt k 137 50\n"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("client-a.log"),
            "w a 2 ok 22 A\ncs a 2 20 21 30 A\nattempt a 0 31\n",
        )
        .unwrap();
        parse_lock_logs(dir.path(), &["k".into(), "a".into()])
    };
    let before = logs(18);
    let killed = before.sections.iter().find(|s| s.client == "k").unwrap();
    assert_eq!((killed.t0, killed.t1, killed.completed), (11, 18, false));
    assert_eq!(killed.host, "B");
    assert_eq!(check_locks(&before, &[]), Vec::<String>::new());
    assert!(check_locks(&logs(25), &[])[0].contains("never cut off"));
}

#[test]
fn the_semaphore_checker_counts_turns_and_excuses_only_a_cut_off_host() {
    let dir = common::testdir::tempdir().expect("tempdir");
    let clients: Vec<(String, String)> = [("s1", "A"), ("s2", "B"), ("s3", "A")]
        .iter()
        .map(|(c, h)| (c.to_string(), h.to_string()))
        .collect();
    let write = |logs: [&str; 3]| {
        for ((id, _), log) in clients.iter().zip(logs) {
            std::fs::write(dir.path().join(format!("sem-{id}.log")), log).unwrap();
        }
    };
    // Two at a time, a third once one ended (at the very time it ended).
    write([
        "sem s1 10 begin\nsem s1 20 end\n",
        "sem s2 12 begin\nsem s2 30 end\n",
        "sem s3 20 begin\nsem s3 25 end\n",
    ]);
    assert_eq!(
        check_semaphore(dir.path(), &clients, &[]),
        Vec::<String>::new()
    );
    // Three at once: an anomaly, unless B (holding one of them) was cut off meanwhile.
    write([
        "sem s1 10 begin\nsem s1 20 end\n",
        "sem s2 12 begin\nsem s2 30 end\n",
        "sem s3 15 begin\nsem s3 25 end\n",
    ]);
    assert_eq!(check_semaphore(dir.path(), &clients, &[]).len(), 1);
    let b_cut = [("B".to_string(), 13, 40)];
    assert_eq!(
        check_semaphore(dir.path(), &clients, &b_cut),
        Vec::<String>::new()
    );
    let a_cut = [("A".to_string(), 1, 9)];
    assert_eq!(check_semaphore(dir.path(), &clients, &a_cut).len(), 1);
    // A turn killed before its end lasted until the last thing it logged.
    let killed = |tick| {
        write([
            "sem s1 10 begin\nsem s1 20 end\n",
            &format!("sem s2 12 begin\nsem s2 {tick} tick\nsem s2 40 begin\nsem s2 45 end\n"),
            "sem s3 15 begin\nsem s3 25 end\n",
        ]);
        check_semaphore(dir.path(), &clients, &[]).len()
    };
    assert_eq!(killed(14), 0);
    assert_eq!(killed(16), 1);
    // A client without a turn.
    write([
        "sem s1 10 begin\nsem s1 20 end\n",
        "",
        "sem s3 20 begin\nsem s3 25 end\n",
    ]);
    assert_eq!(
        check_semaphore(dir.path(), &clients, &[]),
        ["semaphore client s2 never had a turn"]
    );
}

#[test]
fn the_linearizability_checker_accepts_and_refuses_what_it_should() {
    let op = |client, kind, call, ret| RegOp {
        client,
        kind,
        call,
        ret,
    };
    let w = |v: &str| RegKind::Write(v.into());
    let r = |v: &str| RegKind::Read(v.into());
    let g = RegKind::ReadGen;
    let cas = |gen, v: &str, ok| RegKind::Cas {
        gen,
        value: v.into(),
        ok,
    };
    let check = |h: &[RegOp]| linearizable::check("0", 5, h);
    // Sequential and right.
    let h = [op(1, w("a"), 0, 1), op(2, r("a"), 2, 3)];
    assert!(check(&h).is_ok());
    // A stale read after the write returned.
    let h = [op(1, w("a"), 0, 1), op(2, r("0"), 2, 3)];
    assert!(check(&h).is_err());
    // Concurrent with the write: either value.
    for v in ["0", "a"] {
        let h = [op(1, w("a"), 0, 10), op(2, r(v), 2, 3)];
        assert!(check(&h).is_ok(), "{v}");
    }
    // A value nobody wrote.
    let h = [op(1, w("a"), 0, 1), op(2, r("b"), 2, 3)];
    assert!(check(&h).is_err());
    // Reads that go back in time: a, then 0 again after a was seen.
    let h = [
        op(1, w("a"), 0, 10),
        op(2, r("a"), 1, 2),
        op(3, r("0"), 3, 4),
    ];
    assert!(check(&h).is_err());
    // A write of unknown outcome may explain a read, or be left out.
    let h = [op(1, w("a"), 0, u64::MAX), op(2, r("a"), 5, 6)];
    assert!(check(&h).is_ok());
    let h = [op(1, w("a"), 0, u64::MAX), op(2, r("0"), 5, 6)];
    assert!(check(&h).is_ok());
    // A failed file write is recorded with its possible lone O_TRUNC: an empty read is
    // explained by it, and only by it.
    let h = [
        op(1, w("a"), 0, 1),
        op(2, w("b"), 2, u64::MAX),
        op(3, r(""), 5, 6),
    ];
    assert!(check(&h).is_err());
    let h = [
        op(1, w("a"), 0, 1),
        op(2, w("b"), 2, u64::MAX),
        op(2, w(""), 2, u64::MAX),
        op(3, r(""), 5, 6),
        op(3, r("b"), 7, 8),
    ];
    assert!(check(&h).is_ok());
    // Generations: each write bumps by one; a CAS applies at its generation only.
    let h = [
        op(1, g(5), 0, 1),
        op(1, w("a"), 2, 3),
        op(2, g(6), 4, 5),
        op(2, cas(6, "b", true), 6, 7),
        op(3, cas(6, "c", false), 8, 9),
        op(1, r("b"), 10, 11),
        op(1, g(7), 12, 13),
    ];
    assert!(check(&h).is_ok());
    // Two CAS at one generation cannot both apply.
    let h = [
        op(1, cas(5, "a", true), 0, 10),
        op(2, cas(5, "b", true), 0, 10),
    ];
    assert!(check(&h).is_err());
    // A refused CAS at the current generation, or an applied one at another.
    let h = [op(1, cas(5, "a", false), 0, 1)];
    assert!(check(&h).is_err());
    let h = [op(1, cas(4, "a", true), 0, 1)];
    assert!(check(&h).is_err());
    // A generation that went back.
    let h = [op(1, w("a"), 0, 1), op(2, g(5), 2, 3)];
    assert!(check(&h).is_err());
    // A CAS of unknown outcome: applied (the read sees it) or never run.
    for (v, gen) in [("a", 6), ("0", 5)] {
        let h = [
            op(1, cas(5, "a", true), 0, u64::MAX),
            op(2, r(v), 3, 4),
            op(2, g(gen), 5, 6),
        ];
        assert!(check(&h).is_ok(), "{v}");
    }
    // Two writers and interleaved readers, a long valid history.
    let mut h = Vec::new();
    let mut t = 0;
    for i in 0..300 {
        let v = format!("v{i}");
        h.push(op(1 + i % 2, w(&v), t, t + 5));
        h.push(op(3, r(&v), t + 6, t + 7));
        h.push(op(3, g(5 + i + 1), t + 6, t + 7));
        t += 8;
    }
    assert!(check(&h).is_ok());

    // Shrinking: one stale read among 900 operations comes down to the two writes and the
    // read that show it.
    let mut bad = h.clone();
    bad.retain(|o| !matches!(o.kind, RegKind::ReadGen(_)));
    let at = 200;
    bad.push(op(4, r("v120"), at * 8 + 6, at * 8 + 7));
    bad.sort_by_key(|o| o.call);
    assert!(check(&bad).is_err());
    let small = linearizable::shrink("0", 5, &bad, Duration::from_secs(60));
    assert!(check(&small).is_err());
    assert_eq!(small.len(), 3, "{small:#?}");
    // With generations counted, writes stay, but the tail goes and the observations are cut
    // down to those that show the anomaly.
    let mut bad = h.clone();
    bad.push(op(4, g(5 + 120), 150 * 8 + 6, 150 * 8 + 7));
    assert!(check(&bad).is_err());
    let small = linearizable::shrink("0", 5, &bad, Duration::from_secs(60));
    assert!(check(&small).is_err());
    assert!(
        small.len() <= 152
            && small
                .iter()
                .filter(|o| !matches!(o.kind, RegKind::Write(_)))
                .count()
                <= 2,
        "{} operations left: {small:#?}",
        small.len()
    );
    // A linearizable history is left as it is.
    assert_eq!(
        linearizable::shrink("0", 5, &h, Duration::from_secs(60)).len(),
        h.len()
    );

    // A long history with heavy overlap, linearizable by construction: each operation takes
    // effect at a random point between its call and its return. As long as the soak runs make.
    let h = concurrent_history(40_000, 7);
    let started = Instant::now();
    assert!(check(&h).is_ok());
    eprintln!(
        "{} overlapping operations checked in {:?}",
        h.len(),
        started.elapsed()
    );
    // The same with one read made stale: found.
    let mut bad = h.clone();
    let i = bad
        .iter()
        .rposition(|o| matches!(o.kind, RegKind::Read(_)) && o.call > h[h.len() / 2].call)
        .unwrap();
    bad[i].kind = r("0");
    assert!(check(&bad).is_err());
}

/// `n` operations of 4 clients on a register starting at ("0", 5), each taking effect at a
/// random point between its call and its return, outcomes computed in that order: a
/// linearizable history by construction, with much overlap. A few writes have unknown outcome.
fn concurrent_history(n: usize, seed: u64) -> Vec<RegOp> {
    let mut rng = Rng(seed);
    // (point of effect, the op with its kind still to be completed)
    let mut planned: Vec<(u64, RegOp)> = Vec::new();
    let mut clock = [0u64; 4];
    for k in 0..n {
        let c = k % 4;
        let call = clock[c] + rng.below(20);
        let ret = call + 1 + rng.below(200);
        clock[c] = ret;
        let at = call + rng.below(ret - call + 1);
        let kind = match rng.below(4) {
            0 => RegKind::Read(String::new()),
            1 => RegKind::ReadGen(0),
            2 => RegKind::Write(format!("w{k}")),
            _ => RegKind::Cas {
                gen: 0,
                value: format!("w{k}"),
                ok: false,
            },
        };
        let op = RegOp {
            client: c as u64,
            kind,
            call,
            ret,
        };
        planned.push((at, op));
    }
    planned.sort_by_key(|(at, _)| *at);
    let (mut value, mut gen) = ("0".to_string(), 5u64);
    let mut seen = [5u64; 4];
    let mut out = Vec::with_capacity(n);
    for (_, mut op) in planned {
        let c = op.client as usize;
        match &mut op.kind {
            RegKind::Read(v) => *v = value.clone(),
            RegKind::ReadGen(g) => {
                *g = gen;
                seen[c] = gen;
            }
            RegKind::Write(v) => {
                value = v.clone();
                gen += 1;
                if rng.below(100) == 0 {
                    op.ret = u64::MAX;
                }
            }
            RegKind::Cas {
                gen: at_gen,
                value: v,
                ok,
            } => {
                *at_gen = seen[c];
                *ok = gen == seen[c];
                if *ok {
                    value = v.clone();
                    gen += 1;
                }
            }
        }
        out.push(op);
    }
    out
}
