//! Limits against a real cluster: requests past a limit are refused where they enter a node,
//! before the Raft log, and a node that panics exits (so a supervisor restarts it) instead of
//! living on serving nothing; the cluster keeps every acknowledged write either way.

mod common;

use std::time::Duration;

use lockfs::proto::{self, frame::FramedConn};
use protobuf::Message as _;

use common::{block_on, cli, ok, tls, Cluster, Mount};

fn status(servers: &str) -> serde_json::Value {
    serde_json::from_slice(&ok(servers, &["cluster", "status", "--json"], None))
        .expect("status json")
}

#[test]
fn requests_past_a_limit_are_refused_before_the_log() {
    let c = Cluster::start(3, &[]);
    let servers = c.servers();
    ok(&servers, &["put", "/small"], Some(b"fits"));
    let before = status(&servers)["last_index"].as_u64().expect("last_index");
    let long_name = format!("/{}", "n".repeat(300));
    let long_path = "/d".repeat(3000);
    let big = vec![b'x'; 300 * 1024];
    for (args, input, needle) in [
        (vec!["put", "/big"], Some(&big[..]), "file too large"),
        (
            vec!["put", long_name.as_str()],
            Some(&b"x"[..]),
            "name too long",
        ),
        (vec!["mkdir", long_path.as_str()], None, "name too long"),
    ] {
        let out = cli(&servers, &args, input);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{:?} was accepted", &args[..1]);
        assert!(err.contains(needle), "{:?}: {err}", &args[..1]);
    }
    let after = status(&servers)["last_index"].as_u64().expect("last_index");
    assert_eq!(before, after, "a refused request reached the log");
    assert_eq!(ok(&servers, &["cat", "/small"], None), b"fits");
}

#[test]
fn a_node_that_panics_exits_and_comes_back() {
    let mut c = Cluster::start(3, &[]);
    let servers = c.servers();
    ok(&servers, &["put", "/before"], Some(b"1"));
    let s = status(&servers);
    let leader = s["leader"].as_u64().expect("leader");
    let term = s["term"].as_u64().expect("term");
    let cluster_id = u64::from_str_radix(s["cluster_id"].as_str().expect("id"), 16).unwrap();
    let victim = (1..=3).find(|id| *id != leader).unwrap();
    let claimed = (1..=3).find(|id| *id != victim).unwrap();

    // A member (authenticated with its own certificate) sends a heartbeat whose commit index
    // lies far beyond the victim's log: raft-rs panics on it.
    block_on(async {
        let stream = tls::connect(&c.addr(victim), Some(&tls::peer_dir(claimed)))
            .await
            .expect("connect");
        let mut conn = FramedConn::new(stream, proto::HELLO_MAX_FRAME);
        conn.send(&tls::peer_hello(cluster_id, claimed, victim))
            .await
            .expect("hello");
        let reply: proto::HelloReply = conn.recv().await.expect("hello reply");
        assert!(reply.error.is_none(), "refused: {:?}", reply.error);
        let mut msg = raft::prelude::Message::new();
        msg.set_msg_type(raft::prelude::MessageType::MsgHeartbeat);
        msg.from = claimed;
        msg.to = victim;
        msg.term = term;
        msg.commit = 1 << 40;
        let mut frame = proto::PeerFrame::new();
        frame.raft = msg.write_to_bytes().expect("encode");
        conn.send(&frame).await.expect("send");
    });
    let code = c.wait_exit(victim, Duration::from_secs(30));
    assert!(
        code.is_some_and(|code| code != 0),
        "node {victim} did not exit with an error ({code:?}):\n{}",
        c.log_of(victim)
    );
    assert!(
        c.log_of(victim).contains("panic, exiting"),
        "{}",
        c.log_of(victim)
    );

    // The others go on; restarted, the node catches up and serves everything.
    ok(&servers, &["put", "/during"], Some(b"2"));
    c.spawn(victim);
    let node = lockfs::client::Client::pinned(
        c.addr(victim),
        Duration::from_secs(30),
        "check".into(),
        tls::admin(),
    );
    for (path, value) in [("/before", "1"), ("/during", "2")] {
        match block_on(node.call(lockfs::client::ops::read(path))) {
            Ok(proto::Response_oneof_result::data(d)) => {
                assert_eq!(String::from_utf8_lossy(&d.data), value, "{path}")
            }
            other => panic!("{path} on the restarted node: {other:?}"),
        }
    }
}

#[test]
fn a_flood_of_connections_is_capped_and_the_node_serves_after_it() {
    use std::io::Read;
    const FLOOD: usize = 200;
    // At most this many connections from one address may be waiting to authenticate.
    const CAP: usize = 64;
    let c = Cluster::start(1, &[]);
    let servers = c.servers();
    ok(&servers, &["put", "/before"], Some(b"1"));
    // Connections that never say anything: the ones past the cap are closed at once, the
    // others are held until the hello deadline.
    let mut flood: Vec<std::net::TcpStream> = (0..FLOOD)
        .map(|_| std::net::TcpStream::connect(c.addr(1)).expect("connect"))
        .collect();
    // Polled without blocking, for well under the node's 10 s hello deadline (after which it
    // closes the held ones too).
    let mut closed = [false; FLOOD];
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        for (conn, closed) in flood.iter_mut().zip(closed.iter_mut()) {
            conn.set_nonblocking(true).expect("nonblocking");
            match conn.read(&mut [0u8; 1]) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                _ => *closed = true,
            }
        }
        let n = closed.iter().filter(|c| **c).count();
        if n >= FLOOD - CAP || std::time::Instant::now() > deadline {
            println!("{n} of {FLOOD} silent connections closed at once");
            assert!(n >= FLOOD - CAP, "only {n} of {FLOOD} were refused");
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(c.log_of(1).contains("refusing connections: at the cap"));
    drop(flood);
    // Once they are gone, the node serves as before.
    ok(&servers, &["put", "/after"], Some(b"2"));
    assert_eq!(ok(&servers, &["cat", "/before"], None), b"1");
}

/// The last index of the leader's log, once every node has applied what it holds.
fn last_index(servers: &str) -> u64 {
    status(servers)["last_index"].as_u64().expect("last_index")
}

#[test]
fn sessions_past_the_quota_are_refused_before_the_log() {
    let c = Cluster::start_with_config(3, "[quotas]\nsessions = 3\n");
    let servers = c.servers();
    let dir = common::testdir::tempdir().expect("tempdir");
    // Three hosts' mounts: three sessions, the most the cluster holds.
    let mut mounts: Vec<Mount> = (0..3)
        .map(|i| {
            Mount::start(
                &servers,
                &dir.path().join(format!("m{i}")),
                "allow_other",
                &dir.path().join(format!("mount{i}.log")),
            )
        })
        .collect();
    std::fs::write(mounts[0].path.join("f"), b"kept").expect("write through a mount");
    let before = last_index(&servers);
    let out = cli(&servers, &["run", "--lock", "/job", "--", "true"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a fourth session was opened");
    assert!(err.contains("quota: at most 3 sessions"), "{err}");
    assert_eq!(
        before,
        last_index(&servers),
        "the refused session reached the log"
    );
    // The cluster serves on: the mounts work, and a session ended makes room for another.
    assert_eq!(
        std::fs::read(mounts[1].path.join("f")).expect("read"),
        b"kept"
    );
    ok(&servers, &["put", "/after"], Some(b"1"));
    assert!(mounts.pop().expect("a mount").stop(), "unmount");
    ok(&servers, &["run", "--lock", "/job", "--", "true"], None);
}

#[test]
fn writes_past_the_bytes_quota_fail_with_edquot_and_keep_the_data() {
    let c = Cluster::start_with_config(3, "[quotas]\nbytes = 4096\nnodes = 5\n");
    let servers = c.servers();
    let kept = vec![b'k'; 3000];
    ok(&servers, &["put", "/kept"], Some(&kept));
    // Through the CLI: refused by the node it reaches, before the log.
    let before = last_index(&servers);
    let out = cli(&servers, &["put", "/big"], Some(&[b'x'; 2000]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a put past the quota was accepted");
    assert!(
        err.contains("quota: at most 4096 bytes of file data"),
        "{err}"
    );
    assert_eq!(
        before,
        last_index(&servers),
        "the refused put reached the log"
    );

    // Through a mount: write(2) fails with EDQUOT, as on a full quota of a local disk.
    let dir = common::testdir::tempdir().expect("tempdir");
    let m = Mount::start(
        &servers,
        &dir.path().join("m"),
        "allow_other",
        &dir.path().join("mount.log"),
    );
    let e = std::fs::write(m.path.join("big"), [b'x'; 2000]).expect_err("written past the quota");
    assert_eq!(e.raw_os_error(), Some(libc::EDQUOT), "{e}");
    let out = common::output_within(
        {
            let mut sh = std::process::Command::new("sh");
            sh.arg("-c").arg(format!(
                "head -c 2000 /dev/zero > {}/shell",
                m.path.display()
            ));
            sh
        },
        None,
        Duration::from_secs(60),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the shell's write was accepted");
    assert!(err.contains("Disk quota exceeded"), "{err}");
    // What was there is intact.
    assert_eq!(std::fs::read(m.path.join("kept")).expect("read"), kept);
    assert_eq!(ok(&servers, &["cat", "/kept"], None), kept);
    // The nodes quota: the root, /kept and the (empty) /big and /shell make 4 of 5.
    std::fs::write(m.path.join("small"), b"1").expect("the fifth node fits");
    let e = std::fs::write(m.path.join("sixth"), b"1").expect_err("a sixth node");
    assert_eq!(e.raw_os_error(), Some(libc::EDQUOT), "{e}");
    // Room made is room to use.
    std::fs::remove_file(m.path.join("kept")).expect("rm");
    std::fs::write(m.path.join("big"), [b'x'; 2000]).expect("fits now");
}
