//! The replicated tree end to end: real `lockfs serve` processes, real RocksDB, the real CLI, and
//! kill -9.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{block_on, cli, fails_with, ok, tls, Cluster};

#[test]
fn write_through_one_node_read_through_each_other() {
    let c = Cluster::start(3, &[]);
    let one = c.addr(1);
    ok(&one, &["mkdir", "/config"], None);
    ok(&one, &["put", "/config/greeting"], Some(b"hello\n"));
    for id in 1..=3 {
        let at = c.addr(id);
        // A read served by this node alone (ReadIndex), right after the write was acknowledged.
        assert_eq!(ok(&at, &["cat", "/config/greeting"], None), b"hello\n");
        assert_eq!(ok(&at, &["ls", "/config"], None), b"greeting\n");
    }
    // Overwrite through another node; every node sees the new contents at once.
    ok(&c.addr(3), &["put", "/config/greeting"], Some(b"bonjour\n"));
    for id in 1..=3 {
        assert_eq!(
            ok(&c.addr(id), &["cat", "/config/greeting"], None),
            b"bonjour\n"
        );
    }
    let stat: serde_json::Value = serde_json::from_slice(&ok(
        &c.addr(2),
        &["stat", "--json", "/config/greeting"],
        None,
    ))
    .unwrap();
    assert_eq!(stat["size"], 8);
    assert_eq!(stat["kind"], "file");
    assert_eq!(stat["content_generation"], 2);
    assert_eq!(stat["mode"], "0644");

    ok(&one, &["mkdir", "-p", "/a/b/c"], None);
    ok(&one, &["mkdir", "-p", "/a/b/c"], None);
    ok(&one, &["rm", "/a/b/c"], None);
    assert_eq!(ok(&c.addr(2), &["ls", "/a/b"], None), b"");
    let listing: serde_json::Value =
        serde_json::from_slice(&ok(&c.addr(3), &["ls", "--json", "/"], None)).unwrap();
    let names: Vec<&str> = listing
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["a", "config"]);

    let status: serde_json::Value =
        serde_json::from_slice(&ok(&c.servers(), &["cluster", "status", "--json"], None)).unwrap();
    let leader = status["leader"].as_u64().expect("a leader");
    let members = status["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    for m in members {
        let id = m["id"].as_u64().unwrap();
        let role = if id == leader { "leader" } else { "follower" };
        assert_eq!(m["role"], role);
        assert_eq!(m["addr"], c.addr(id));
        assert_eq!(m["reachable"], true);
    }
}

#[test]
fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let c = Cluster::start(1, &["--max-file-size", "1000"]);
    let s = c.servers();
    ok(&s, &["mkdir", "/d"], None);
    ok(&s, &["put", "/d/f"], Some(b"keep"));
    let long = format!("/d/{}", "x".repeat(256));
    fails_with(&s, &["put", &long], Some(b"x"), "too long");
    fails_with(&s, &["put", "/d/f/g"], Some(b"x"), "not a directory");
    fails_with(&s, &["put", "/d/big"], Some(&[b'z'; 1001]), "too large");
    ok(&s, &["put", "/d/exact"], Some(&[b'z'; 1000]));
    fails_with(&s, &["put", "/d"], Some(b"x"), "is a directory");
    fails_with(&s, &["rm", "/d"], None, "not empty");
    fails_with(&s, &["cat", "/nope"], None, "no such file");
    fails_with(&s, &["cat", "/d"], None, "is a directory");
    fails_with(&s, &["mkdir", "/d"], None, "exists");
    fails_with(&s, &["put", "relative"], Some(b"x"), "");
    fails_with(&s, &["put", "/d/../f"], Some(b"x"), "");
    fails_with(&s, &["put", "/d/f", "--mode", "999"], Some(b"x"), "octal");
    // Nothing above touched the existing file.
    assert_eq!(ok(&s, &["cat", "/d/f"], None), b"keep");
    assert_eq!(ok(&s, &["ls", "/d"], None), b"exact\nf\n");
}

#[test]
fn malformed_frames_and_unknown_peers_are_refused_and_the_node_keeps_serving() {
    use lockfs::proto::{self, frame::FramedConn};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let c = Cluster::start(1, &[]);
    let s = c.servers();
    ok(&s, &["put", "/x"], Some(b"1"));
    let garbage = [0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff];
    let status: serde_json::Value =
        serde_json::from_slice(&ok(&s, &["cluster", "status", "--json"], None)).unwrap();
    let cluster_id = u64::from_str_radix(status["cluster_id"].as_str().unwrap(), 16).unwrap();
    let addr = c.addr(1);

    // Writes `bytes` as the holder of `creds` (plain TCP without) and reads until the node
    // hangs up, within a bound.
    let send_garbage = |creds: Option<std::path::PathBuf>, bytes: Vec<u8>| {
        block_on(async {
            let mut conn = tls::connect(&addr, creds.as_deref())
                .await
                .expect("connect");
            let _ = conn.write_all(&bytes).await;
            let _ = conn.flush().await;
            let mut buf = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut buf));
            assert!(read.await.is_ok(), "the node did not hang up");
        })
    };
    // Garbage instead of a TLS handshake; then instead of a hello, over TLS; then a frame that
    // announces 2 GiB.
    send_garbage(None, garbage.to_vec());
    send_garbage(Some(tls::admin_dir()), garbage.to_vec());
    send_garbage(
        Some(tls::admin_dir()),
        vec![0x7f, 0xff, 0xff, 0xff, 1, 2, 3],
    );

    // A peer hello, answered with a refusal.
    let refusal = |creds: std::path::PathBuf, from: u64, cluster_id: u64| -> String {
        block_on(async {
            let conn = tls::connect(&addr, Some(&creds)).await.expect("connect");
            let mut conn = FramedConn::new(conn, proto::HELLO_MAX_FRAME);
            conn.send(&tls::peer_hello(cluster_id, from, 1))
                .await
                .expect("send the hello");
            let reply: proto::HelloReply =
                tokio::time::timeout(Duration::from_secs(10), conn.recv())
                    .await
                    .expect("a reply in time")
                    .expect("a reply");
            reply.get_error().message.clone()
        })
    };
    // A node id the cluster does not have, with a peer certificate for it.
    let why = refusal(tls::peer_dir(99), 99, cluster_id);
    assert!(why.contains("unknown node id 99"), "{why}");
    // A peer of another cluster, as node 1 with node 1's certificate (one CA signs every test
    // cluster's certificates, so only the hello tells the clusters apart).
    let why = refusal(tls::peer_dir(1), 1, cluster_id ^ 1);
    assert!(why.contains("belongs to cluster"), "{why}");

    // Still serving.
    ok(&s, &["put", "/x"], Some(b"2"));
    assert_eq!(ok(&s, &["cat", "/x"], None), b"2");
}

/// Writes `/k/<i>` with contents `v<i>` through the CLI; returns whether it was acknowledged.
fn put_key(servers: &str, i: usize) -> bool {
    cli(
        servers,
        &["put", &format!("/k/{i}")],
        Some(format!("v{i}").as_bytes()),
    )
    .status
    .success()
}

#[test]
fn leader_kill9_writes_resume_and_nothing_acknowledged_is_lost() {
    let mut c = Cluster::start(3, &[]);
    let s = c.servers();
    ok(&s, &["mkdir", "/k"], None);
    let mut acked = Vec::new();
    for i in 0..20 {
        if put_key(&s, i) {
            acked.push(i);
        }
    }
    assert_eq!(acked.len(), 20, "all writes before the fault succeed");
    let leader = c.wait_leader(Duration::from_secs(10));
    c.kill(leader);
    let killed_at = Instant::now();
    let survivors: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
    let mut first_after = None;
    for i in 20..60 {
        if put_key(&s, i) {
            acked.push(i);
            first_after.get_or_insert_with(|| killed_at.elapsed());
        }
    }
    let first_after = first_after.expect("writes resumed after the leader died");
    eprintln!("first write acknowledged {first_after:?} after kill -9 of the leader");
    for &id in &survivors {
        for &i in &acked {
            assert_eq!(
                ok(&c.addr(id), &["cat", &format!("/k/{i}")], None),
                format!("v{i}").as_bytes(),
                "node {id} lost /k/{i}"
            );
        }
    }
    // The old leader comes back as a follower and catches up.
    c.spawn(leader);
    let deadline = Instant::now() + Duration::from_secs(30);
    let last = *acked.last().unwrap();
    loop {
        let out = cli(&c.addr(leader), &["cat", &format!("/k/{last}")], None);
        if out.status.success() {
            assert_eq!(out.stdout, format!("v{last}").as_bytes());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "old leader never caught up\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn kill9_of_every_node_loses_nothing_acknowledged() {
    let mut c = Cluster::start(3, &[]);
    let s = c.servers();
    ok(&s, &["mkdir", "/k"], None);
    for i in 0..30 {
        assert!(put_key(&s, i), "write {i}");
    }
    ok(&s, &["put", "/k/0"], Some(b"rewritten"));
    ok(&s, &["rm", "/k/1"], None);
    for id in 1..=3 {
        c.kill(id);
    }
    for id in 1..=3 {
        c.spawn(id);
    }
    c.wait_leader(Duration::from_secs(30));
    for id in 1..=3 {
        let at = c.addr(id);
        assert_eq!(ok(&at, &["cat", "/k/0"], None), b"rewritten");
        fails_with(&at, &["cat", "/k/1"], None, "no such file");
        for i in 2..30 {
            assert_eq!(
                ok(&at, &["cat", &format!("/k/{i}")], None),
                format!("v{i}").as_bytes()
            );
        }
    }
}

/// Reads every file under `/bulk` through `server` with the client library.
async fn contents(server: String) -> BTreeMap<String, Vec<u8>> {
    use lockfs::client::{ops, Client};
    use lockfs::proto::Response_oneof_result as Res;
    let client = Client::new(
        vec![server],
        Duration::from_secs(30),
        "test".into(),
        tls::admin(),
    );
    let Res::entries(list) = client.call(ops::readdir("/bulk")).await.unwrap() else {
        panic!("readdir");
    };
    let mut out = BTreeMap::new();
    for e in list.entries {
        let path = format!("/bulk/{}", e.name);
        let Res::data(d) = client.call(ops::read(&path)).await.unwrap() else {
            panic!("read");
        };
        out.insert(path, d.data);
    }
    out
}

#[test]
fn a_node_stopped_during_thousands_of_writes_catches_up_from_a_snapshot() {
    let mut c = Cluster::start(3, &["--snapshot-entries", "200"]);
    let s = c.servers();
    ok(&s, &["mkdir", "/bulk"], None);
    let leader = c.wait_leader(Duration::from_secs(10));
    let lagging = if leader == 3 { 2 } else { 3 };
    c.kill(lagging);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let servers: Vec<String> = s.split(',').map(String::from).collect();
    rt.block_on(async {
        use lockfs::client::{ops, Client};
        let client = std::sync::Arc::new(Client::new(
            servers,
            Duration::from_secs(30),
            "bulk".into(),
            tls::admin(),
        ));
        // 3000 writes, 32 in flight at a time, over 500 files (so most are overwrites).
        let mut tasks = Vec::new();
        for w in 0..32usize {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                for i in (w..3000).step_by(32) {
                    let path = format!("/bulk/f{}", i % 500);
                    let data = format!("write {i}").into_bytes();
                    client
                        .call(ops::put(&path, data, 0o644, 0, 0))
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let leader_log = c.log_of(c.wait_leader(Duration::from_secs(10)));
    assert!(
        leader_log.contains("compacted the log"),
        "the leader compacted its log"
    );

    c.spawn(lagging);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !c.log_of(lagging).contains("installed a snapshot") {
        assert!(
            Instant::now() < deadline,
            "node {lagging} never installed a snapshot\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let expected = rt.block_on(contents(c.addr(leader)));
    assert_eq!(expected.len(), 500);
    for id in 1..=3 {
        assert_eq!(
            rt.block_on(contents(c.addr(id))),
            expected,
            "node {id} serves different contents"
        );
    }
}

#[test]
fn data_directory_and_config_file_are_checked() {
    let mut c = Cluster::start(1, &[]);
    let s = c.servers();
    ok(&s, &["put", "/f"], Some(b"x"));
    assert!(c.terminate(1), "SIGTERM stops a node cleanly");

    // The data of node 1 cannot be started as node 2 (with node 2's certificate).
    let mut serve = std::process::Command::new(common::BIN);
    serve
        .args(["serve", "--id", "2", "--peers", &format!("2={}", c.addr(1))])
        .arg("--data")
        .arg(&c.nodes[0].data)
        .arg("--tls-dir")
        .arg(tls::peer_dir(2));
    let out = common::output_within(serve, None, Duration::from_secs(60));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds the data of node 1"));

    // The same node started from a config file (its credentials too) serves its data.
    let conf = c.dir.path().join("node1.toml");
    std::fs::write(
        &conf,
        format!(
            "id = 1\ndata = {:?}\npeers = \"{}\"\ntick_ms = 100\ntls_dir = {:?}\n",
            c.nodes[0].data,
            c.peers,
            tls::peer_dir(1)
        ),
    )
    .unwrap();
    c.spawn_with(1, &["--config".into(), conf.display().to_string()]);
    c.wait_leader(Duration::from_secs(30));
    assert_eq!(ok(&s, &["cat", "/f"], None), b"x");

    // An unknown setting in the file is an error.
    std::fs::write(&conf, "bogus = 1\n").unwrap();
    let mut serve = std::process::Command::new(common::BIN);
    serve
        .args(["serve", "--config"])
        .arg(&conf)
        .arg("--tls-dir")
        .arg(tls::peer_dir(1));
    let out = common::output_within(serve, None, Duration::from_secs(60));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus"));
}

/// A node started in-process (`Server::start`, as `lockfs serve` starts one) serves clients,
/// stops with `shutdown` without ending the process, and starts again from its data directory
/// with what it had acknowledged.
#[test]
fn a_node_runs_in_process_stops_cleanly_and_recovers_its_data() {
    use lockfs::client::{ops, Client};
    use lockfs::proto::Response_oneof_result as Res;
    use lockfs::server::{config::ConfigFile, Server};
    let dir = common::testdir::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let config = || {
        ConfigFile {
            id: Some(1),
            data: Some(dir.path().join("node1")),
            listen: Some(listen.clone()),
            peers: Some(format!("1={listen}")),
            tls_dir: Some(tls::peer_dir(1)),
            ..Default::default()
        }
        .finish()
        .expect("config")
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = || {
        let creds = lockfs::auth::Tls::load(Some(&tls::admin_dir()), false).unwrap();
        Client::new(
            vec![listen.clone()],
            Duration::from_secs(30),
            "in-process".into(),
            creds,
        )
    };
    let server = Server::start(config()).expect("start");
    assert_eq!(server.local_addr().port(), port);
    runtime
        .block_on(client().call(ops::put("/kept", b"hello".to_vec(), 0o644, 0, 0)))
        .expect("put");
    server.shutdown().expect("a clean stop");
    // The port is free again and the data is there.
    let server = Server::start(config()).expect("restart");
    match runtime.block_on(client().call(ops::read("/kept"))) {
        Ok(Res::data(d)) => assert_eq!(d.data, b"hello"),
        other => panic!("read /kept: {other:?}"),
    }
    server.shutdown().expect("a clean stop");
    runtime.shutdown_timeout(Duration::from_secs(1));
}
