//! `lockfs serve --metrics-listen`: real nodes serving Prometheus metrics, `/health` and
//! `/ready` over HTTP, scraped after real work (writes, lock hand-offs with waits, a session
//! expiry, a leader kill, a partition) and parsed with a Prometheus text parser. Counters must
//! have moved by what the test caused.
//!
//! The nodes run behind the test proxy (to cut one off); every process a test starts is
//! killed when it ends.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ok, Cluster, BIN};

/// One HTTP GET: (status code, body).
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connecting to the metrics listener");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("reading the answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    (status, body.to_string())
}

/// A node's metrics, parsed: (name with its labels, value). Histograms give `_count` and
/// `_sum`.
fn scrape(addr: &str) -> BTreeMap<String, f64> {
    let (status, body) = get(addr, "/metrics");
    assert_eq!(status, 200, "{body}");
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
    let mut out = BTreeMap::new();
    for s in parsed.samples {
        let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let name = if labels.is_empty() {
            s.metric.clone()
        } else {
            format!("{}{{{}}}", s.metric, labels.join(","))
        };
        match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => {
                out.insert(name, v);
            }
            prometheus_parse::Value::Histogram(buckets) => {
                let count = buckets.last().map_or(0.0, |b| b.count);
                out.insert(format!("{name}_count"), count);
            }
            prometheus_parse::Value::Summary(_) => {}
        }
    }
    out
}

fn value(m: &BTreeMap<String, f64>, name: &str) -> f64 {
    *m.get(name)
        .unwrap_or_else(|| panic!("no {name} among {:?}", m.keys().collect::<Vec<_>>()))
}

/// A background `lockfs run`, killed with its command when dropped.
struct Run(Option<Child>, String);

impl Run {
    fn start(servers: &str, args: &[&str], marker: &str) -> Run {
        let child = Command::new(BIN)
            .arg("run")
            .args(args)
            .args(["--", "sh", "-c", &format!("sleep 0.5; : {marker}")])
            .env("LOCKFS_SERVERS", servers)
            .env(common::tls::ENV, common::tls::admin_dir())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning lockfs run");
        Run(Some(child), marker.to_string())
    }

    fn wait(&mut self) -> bool {
        let mut child = self.0.take().expect("waited once");
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("pkill").args(["-f", &self.1]).status();
    }
}

/// Waits (bounded) until `f` holds.
fn eventually(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn metrics_count_writes_lock_hand_offs_an_expiry_and_a_leader_change() {
    let mut c = Cluster::start_with_metrics(3, &[]);
    let servers = c.servers();
    let leader = c.wait_leader(Duration::from_secs(30));
    for id in 1..=3 {
        let (status, body) = get(&c.metrics[&id], "/health");
        assert_eq!((status, body.as_str()), (200, "ok\n"), "node {id}");
        assert_eq!(get(&c.metrics[&id], "/ready").0, 200, "node {id}");
        assert_eq!(get(&c.metrics[&id], "/nothing").0, 404);
    }

    // Writes.
    const PUTS: usize = 5;
    for i in 0..PUTS {
        ok(&servers, &["put", "/k"], Some(format!("{i}").as_bytes()));
    }
    let puts: f64 = (1..=3)
        .map(|id| scrape(&c.metrics[&id]))
        .map(|m| {
            m.get("lockfs_requests_total{kind=put,outcome=ok}")
                .copied()
                .unwrap_or(0.0)
        })
        .sum();
    assert_eq!(
        puts, PUTS as f64,
        "successful puts counted across the nodes"
    );

    // Three holders of one lock at once: two of them wait for the one before.
    let marker = format!("metrics-test-{}", std::process::id());
    let mut runs: Vec<Run> = (0..3)
        .map(|i| Run::start(&servers, &["--lock", "/l"], &format!("{marker}-{i}")))
        .collect();
    for r in &mut runs {
        assert!(r.wait(), "lockfs run failed");
    }

    // A holder that vanishes: its session expires after its TTL, taking the lock with it.
    let mut gone = Run::start(
        &servers,
        &["--lock", "/e", "--ttl", "2"],
        &format!("{marker}-e"),
    );
    let m = &c.metrics[&leader];
    eventually(
        "the vanishing holder's grant",
        Duration::from_secs(30),
        || value(&scrape(m), "lockfs_lock_grants_total") >= 4.0,
    );
    if let Some(mut child) = gone.0.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
    eventually("the session's expiry", Duration::from_secs(60), || {
        value(&scrape(m), "lockfs_sessions_expired_total") >= 1.0
    });

    // Followers learn of a commit with the leader's next message to them (at the latest its
    // next heartbeat), so they apply the expiry a moment after the leader.
    let applied = value(&scrape(m), "lockfs_raft_applied_index");
    eventually(
        "every node applied what the leader had",
        Duration::from_secs(30),
        || {
            (1..=3)
                .all(|id| value(&scrape(&c.metrics[&id]), "lockfs_raft_applied_index") >= applied)
        },
    );
    for id in 1..=3 {
        let m = scrape(&c.metrics[&id]);
        let at = |name: &str| value(&m, name);
        assert_eq!(at("lockfs_lock_grants_total"), 4.0, "node {id}: grants");
        assert_eq!(
            at("lockfs_sessions_expired_total"),
            1.0,
            "node {id}: expiries"
        );
        assert_eq!(at("lockfs_lock_delay_releases_total"), 1.0, "node {id}");
        assert!(
            at("lockfs_sessions_opened_total") >= 4.0,
            "node {id}: sessions"
        );
        assert!(
            at("lockfs_sessions_closed_total") >= 3.0,
            "node {id}: closes"
        );
        assert_eq!(
            at("lockfs_lock_wait_seconds_count"),
            4.0,
            "node {id}: waits"
        );
        // Two of the three waited for a holder that held for half a second.
        assert!(
            at("lockfs_lock_wait_seconds_sum") >= 0.5,
            "node {id}: wait time"
        );
        assert_eq!(
            at("lockfs_lock_hold_seconds_count"),
            4.0,
            "node {id}: holds"
        );
        assert!(
            at("lockfs_lock_hold_seconds_sum") >= 1.5,
            "node {id}: hold time"
        );
        assert_eq!(at("lockfs_locks_held{kind=exclusive}"), 0.0, "node {id}");
        assert_eq!(at("lockfs_lock_waiters"), 0.0, "node {id}");
        assert!(at("lockfs_tree_nodes") >= 4.0, "node {id}: /, /k, /l, /e");
        assert!(at("lockfs_tree_bytes") >= 1.0, "node {id}");
        assert!(at("lockfs_disk_sync_seconds_count") >= 1.0, "node {id}");
        assert!(
            at("lockfs_raft_applied_index") >= (PUTS + 8) as f64,
            "node {id}"
        );
        assert_eq!(
            at("lockfs_raft_is_leader"),
            f64::from(id == leader),
            "node {id}"
        );
        for family in [
            "lockfs_raft_term",
            "lockfs_raft_commit_index",
            "lockfs_raft_proposals_failed_total",
            "lockfs_snapshots_taken_total",
            "lockfs_snapshots_installed_total",
            "lockfs_sessions",
            "lockfs_session_jeopardy_total",
            "lockfs_fencing_refusals_total",
            "lockfs_tree_ephemeral_nodes",
            "lockfs_client_connections",
            "lockfs_events_pushed_total",
        ] {
            value(&m, family);
        }
    }
    let on_leader = scrape(&c.metrics[&leader]);
    assert!(value(&on_leader, "lockfs_raft_proposals_committed_total") >= PUTS as f64);
    assert!(value(&on_leader, "lockfs_raft_proposal_commit_seconds_count") >= PUTS as f64);
    assert!(value(&on_leader, "lockfs_keep_alives_total") >= 1.0);
    for peer in (1..=3).filter(|p| *p != leader) {
        value(
            &on_leader,
            &format!("lockfs_raft_peer_lag_entries{{peer={peer}}}"),
        );
    }

    // The dashboard and the alert rules name only metrics a node serves.
    let served: std::collections::BTreeSet<String> = on_leader
        .keys()
        .map(|k| k.split('{').next().unwrap_or(k))
        .map(|k| k.strip_suffix("_count").unwrap_or(k).to_string())
        .collect();
    for file in [
        "mount-tools/grafana/lockfs.json",
        "mount-tools/prometheus/lockfs-alerts.yml",
    ] {
        let text = std::fs::read_to_string(file).expect(file);
        let names = text
            .split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
            .filter(|w| w.starts_with("lockfs_"));
        // A host's metrics: checked against a mount in the mount's test.
        for name in names.filter(|n| !n.starts_with("lockfs_mount_")) {
            let family = name.strip_suffix("_bucket").unwrap_or(name);
            assert!(
                served.contains(family),
                "{file} names {name}, which no node serves"
            );
        }
    }

    // The leader dies: the others see a new one.
    c.kill(leader);
    let survivors: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    eventually("a new leader", Duration::from_secs(60), || {
        survivors
            .iter()
            .map(|id| value(&scrape(&c.metrics[id]), "lockfs_raft_is_leader"))
            .sum::<f64>()
            == 1.0
    });
    for id in &survivors {
        let m = scrape(&c.metrics[id]);
        assert!(
            value(&m, "lockfs_raft_leader_changes_total") >= 2.0,
            "node {id}"
        );
        assert!(value(&m, "lockfs_raft_term") >= 2.0, "node {id}");
    }
}

#[test]
fn health_fails_on_a_node_cut_off_from_its_peers_and_comes_back() {
    let c = Cluster::start_with_metrics(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(30));
    let cut = (1..=3).find(|id| *id != leader).expect("a follower");
    let addr = &c.metrics[&cut];
    assert_eq!(get(addr, "/health").0, 200);
    c.partition(&[cut]);
    let mut reason = String::new();
    eventually("503 from the cut-off node", Duration::from_secs(60), || {
        let (status, body) = get(addr, "/health");
        reason = body;
        status == 503
    });
    assert!(reason.contains("no known leader"), "{reason}");
    assert_eq!(get(addr, "/ready").0, 503);
    c.heal();
    eventually("200 again once healed", Duration::from_secs(60), || {
        get(addr, "/health").0 == 200
    });
}

#[test]
fn the_prometheus_examples_are_valid_and_the_alerts_fire_as_tested() {
    let promtool = |args: &[&str]| {
        let out = Command::new("promtool")
            .args(args)
            .current_dir("mount-tools/prometheus")
            .output()
            .expect(
                "promtool (Debian package prometheus; mount-tools/install-deps.sh installs it)",
            );
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    promtool(&["check", "config", "prometheus.yml"]);
    promtool(&["check", "rules", "lockfs-alerts.yml"]);
    promtool(&["test", "rules", "lockfs-alerts.test.yml"]);
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string("mount-tools/grafana/lockfs.json").expect("the dashboard"),
    )
    .expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels
        .iter()
        .all(|p| p["targets"].as_array().is_some_and(|t| !t.is_empty())));
}

#[test]
fn a_mount_serves_its_requests_lock_waits_session_and_cache() {
    let mut h = common::hosts::Hosts::start();
    let addr = format!("127.0.0.1:{}", common::free_port());
    let c = h.extra_mount("c", "host-a", &format!("allow_other,metrics={addr}"));
    let cpath = c.path.display().to_string();
    h.ok("echo x > \"$A/f\"");
    h.ok(&format!(
        "for i in 1 2 3; do cat \"{cpath}/f\" > /dev/null; done"
    ));
    assert_eq!(get(&addr, "/health"), (200, "ok\n".to_string()));
    assert_eq!(get(&addr, "/ready").0, 200);
    let m = scrape(&addr);
    assert!(value(&m, "lockfs_mount_requests_total{op=open}") >= 3.0);
    assert!(value(&m, "lockfs_mount_request_seconds_count{op=read}") >= 3.0);
    assert!(
        value(&m, "lockfs_mount_cache_hits_total") >= 2.0,
        "the cats after the first"
    );
    value(&m, "lockfs_mount_cache_misses_total");
    assert_eq!(value(&m, "lockfs_mount_session{state=live}"), 1.0);
    assert_eq!(value(&m, "lockfs_mount_session{state=expired}"), 0.0);
    assert_eq!(value(&m, "lockfs_mount_lock_waits"), 0.0);

    // Host B holds a lock; a flock on this mount waits for it.
    let holder = h.spawn_ready("flock \"$B/l\" -c 'touch \"$OUT/held\"; sleep 3'", "held");
    let waiter = h.spawn("flock", &[&format!("{cpath}/l"), "true"]);
    eventually("the wait to show", Duration::from_secs(30), || {
        value(&scrape(&addr), "lockfs_mount_lock_waits") == 1.0
    });
    std::thread::sleep(Duration::from_millis(200));
    let m = scrape(&addr);
    assert!(value(&m, "lockfs_mount_oldest_lock_wait_seconds") > 0.1);
    assert!(h.wait_child(waiter).success());
    assert!(h.wait_child(holder).success());
    let m = scrape(&addr);
    assert_eq!(value(&m, "lockfs_mount_lock_waits"), 0.0);
    assert_eq!(value(&m, "lockfs_mount_oldest_lock_wait_seconds"), 0.0);
    assert!(value(&m, "lockfs_mount_request_seconds_count{op=setlk}") >= 1.0);
    drop(c);
    // The dashboard names only metrics a mount serves.
    let served: std::collections::BTreeSet<String> = m
        .keys()
        .map(|k| k.split('{').next().unwrap_or(k))
        .map(|k| k.strip_suffix("_count").unwrap_or(k).to_string())
        .collect();
    let dashboard = std::fs::read_to_string("mount-tools/grafana/lockfs.json").expect("dashboard");
    let names = dashboard
        .split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
        .filter(|w| w.starts_with("lockfs_mount_"));
    for name in names {
        let family = name.strip_suffix("_bucket").unwrap_or(name);
        assert!(
            served.contains(family),
            "the dashboard names {name}, which no mount serves"
        );
    }
}
