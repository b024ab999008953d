//! Limits against a real cluster: requests past a limit are refused where they enter a node,
//! before the Raft log; frames cost a node only the bytes that arrived; silent connections are
//! closed; a node with too many requests in hand says "busy" and clients retry; and a node that
//! panics exits (so a supervisor restarts it) instead of living on serving nothing. The cluster
//! keeps every acknowledged write throughout.

mod common;

use std::path::Path;
use std::time::Duration;

use lockfs::auth::Stream;
use lockfs::proto::{self, frame::FramedConn};
use protobuf::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
fn a_node_told_of_commits_past_its_log_halts_and_comes_back_when_restarted() {
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
    // lies far beyond the victim's log, as if the victim had lost entries it acknowledged:
    // it halts (raft-rs would panic on it) and says so.
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
        c.log_of(victim)
            .contains("lost entries it had acknowledged"),
        "{}",
        c.log_of(victim)
    );

    // The others go on; restarted (its disk was fine: the heartbeat lied), the node catches
    // up and serves everything.
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

/// Resident memory of process `pid`, in MiB.
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib / 1024
}

async fn write_frame(s: &mut Stream, body: &[u8]) {
    s.write_all(&(body.len() as u32).to_be_bytes())
        .await
        .expect("write");
    s.write_all(body).await.expect("write");
}

/// The next frame, or `None` once the node closed the connection.
async fn read_frame(s: &mut Stream) -> Option<Vec<u8>> {
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await.ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(head) as usize];
    s.read_exact(&mut body).await.ok()?;
    Some(body)
}

/// An authenticated connection with `creds` that said `hello` and was welcomed.
async fn welcomed(addr: &str, creds: &Path, hello: proto::Hello) -> Stream {
    let mut s = tls::connect(addr, Some(creds)).await.expect("connect");
    write_frame(&mut s, &hello.write_to_bytes().expect("encode")).await;
    let reply = read_frame(&mut s).await.expect("hello reply");
    let reply = proto::HelloReply::parse_from_bytes(&reply).expect("decode");
    assert!(reply.error.is_none(), "refused: {:?}", reply.error);
    s
}

fn client_hello() -> proto::Hello {
    let mut h = proto::Hello::new();
    h.version = proto::PROTOCOL_VERSION;
    h.mut_client().name = "limits".into();
    h
}

fn response(frame: &[u8]) -> proto::Response {
    match proto::ServerFrame::parse_from_bytes(frame)
        .expect("decode")
        .kind
    {
        Some(proto::ServerFrame_oneof_kind::response(r)) => r,
        other => panic!("expected a response, got {other:?}"),
    }
}

#[test]
fn large_frames_cost_a_node_only_the_bytes_that_arrive() {
    const DECLARED: u32 = 900 << 20;
    const SENT: usize = 16 << 20;
    let c = Cluster::start(3, &[]);
    let servers = c.servers();
    ok(&servers, &["put", "/before"], Some(b"1"));
    let s = status(&servers);
    let leader = s["leader"].as_u64().expect("leader");
    let cluster_id = u64::from_str_radix(s["cluster_id"].as_str().expect("id"), 16).unwrap();
    let member = (1..=3).find(|id| *id != leader).unwrap();
    let pid = c.nodes[leader as usize - 1].pid().expect("leader runs");
    let addr = c.addr(leader);
    let before = rss_mib(pid);
    block_on(async {
        // A client's frames are at most max_file_size + 64 KiB: one that announces 900 MiB is
        // told why and cut off before its body is read.
        let mut client = welcomed(&addr, &tls::admin_dir(), client_hello()).await;
        client
            .write_all(&DECLARED.to_be_bytes())
            .await
            .expect("head");
        let _ = client.write_all(&[0u8; 64 * 1024]).await;
        let refusal = response(&read_frame(&mut client).await.expect("an answer"));
        let err = refusal.error.into_option().expect("an error");
        assert!(err.message.contains("limit"), "{}", err.message);
        assert!(read_frame(&mut client).await.is_none(), "still open");

        // A member's frames are at most 64 MiB: one that announces 900 MiB is cut off too.
        let hello = tls::peer_hello(cluster_id, member, leader);
        let mut s = welcomed(&addr, &tls::peer_dir(member), hello).await;
        s.write_all(&DECLARED.to_be_bytes()).await.expect("head");
        let _ = s.write_all(&[0u8; 64 * 1024]).await;
        assert!(read_frame(&mut s).await.is_none(), "still open");

        // Below the limit, a frame costs only what actually arrived: three connections that
        // announce 60 MiB and send 16 MiB each.
        let mut held = Vec::new();
        for _ in 0..3 {
            let hello = tls::peer_hello(cluster_id, member, leader);
            let mut s = welcomed(&addr, &tls::peer_dir(member), hello).await;
            s.write_all(&(60u32 << 20).to_be_bytes())
                .await
                .expect("head");
            s.write_all(&vec![0u8; SENT]).await.expect("body");
            s.flush().await.expect("flush");
            held.push(s);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let during = rss_mib(pid);
        println!(
            "leader RSS: {before} MiB before, {during} MiB with 3 x 60 MiB frames announced \
             and 3 x {} MiB sent",
            SENT >> 20
        );
        assert!(during < 512, "RSS {during} MiB");
        drop(held);
    });
    // The node served throughout, and serves after.
    ok(&servers, &["put", "/after"], Some(b"2"));
    assert_eq!(ok(&servers, &["cat", "/before"], None), b"1");
    assert_eq!(status(&servers)["leader"].as_u64(), Some(leader));
}

#[test]
fn silent_and_trickling_clients_are_disconnected() {
    let c = Cluster::start(1, &["--idle-timeout-ms", "2000"]);
    let servers = c.servers();
    let addr = c.addr(1);
    block_on(async {
        let mut silent = welcomed(&addr, &tls::admin_dir(), client_hello()).await;
        // Half a frame, and then nothing.
        let mut trickle = welcomed(&addr, &tls::admin_dir(), client_hello()).await;
        trickle
            .write_all(&100u32.to_be_bytes())
            .await
            .expect("head");
        trickle.write_all(&[0u8; 10]).await.expect("some");
        for (what, conn) in [("silent", &mut silent), ("trickling", &mut trickle)] {
            let closed = tokio::time::timeout(Duration::from_secs(30), read_frame(conn)).await;
            assert!(
                matches!(closed, Ok(None)),
                "the {what} connection was not closed"
            );
        }
    });
    // A client whose connection was closed for idling just reconnects.
    let client = lockfs::client::Client::new(
        vec![addr],
        Duration::from_secs(20),
        "idle".into(),
        tls::admin(),
    );
    block_on(async {
        client
            .call(lockfs::client::ops::put("/f", b"1".to_vec(), 0o644, 0, 0))
            .await
            .expect("first put");
        tokio::time::sleep(Duration::from_secs(4)).await;
        client
            .call(lockfs::client::ops::read("/f"))
            .await
            .expect("read after idling");
    });
    assert_eq!(ok(&servers, &["cat", "/f"], None), b"1");
}

#[test]
fn a_node_with_too_many_requests_in_hand_says_busy_and_clients_retry() {
    const ENOBUFS: u32 = 105;
    const PIPELINED: u64 = 64;
    let c = Cluster::start(1, &["--max-requests", "2"]);
    let servers = c.servers();
    let addr = c.addr(1);
    let (busy, done) = block_on(async {
        let mut s = welcomed(&addr, &tls::admin_dir(), client_hello()).await;
        // Many writes at once, in one burst: the node takes two at a time.
        let mut burst = Vec::new();
        for id in 1..=PIPELINED {
            let mut req = proto::Request::new();
            req.id = id;
            req.op = Some(lockfs::client::ops::put(
                &format!("/burst-{id}"),
                b"x".to_vec(),
                0o644,
                0,
                0,
            ));
            let body = req.write_to_bytes().expect("encode");
            burst.extend_from_slice(&(body.len() as u32).to_be_bytes());
            burst.extend_from_slice(&body);
        }
        s.write_all(&burst).await.expect("burst");
        let (mut busy, mut done) = (Vec::new(), Vec::new());
        for _ in 0..PIPELINED {
            let frame = tokio::time::timeout(Duration::from_secs(30), read_frame(&mut s))
                .await
                .expect("answers in time")
                .expect("open");
            let r = response(&frame);
            match r.error.into_option() {
                None => done.push(r.id),
                Some(e) => {
                    assert_eq!(e.code, ENOBUFS, "{}", e.message);
                    assert!(e.message.contains("busy"), "{}", e.message);
                    busy.push(r.id);
                }
            }
        }
        (busy, done)
    });
    println!(
        "{} of {PIPELINED} pipelined writes answered busy",
        busy.len()
    );
    assert!(!busy.is_empty() && !done.is_empty(), "busy {busy:?}");
    // What was answered busy was not done; what was answered done was.
    for id in busy {
        let out = cli(&servers, &["cat", &format!("/burst-{id}")], None);
        assert!(!out.status.success(), "busy write {id} was applied");
    }
    for id in done {
        assert_eq!(ok(&servers, &["cat", &format!("/burst-{id}")], None), b"x");
    }
    // Clients retry "busy" on their own: eight writers at once all succeed.
    std::thread::scope(|scope| {
        for i in 0..8 {
            let servers = &servers;
            scope.spawn(move || ok(servers, &["put", &format!("/w{i}")], Some(b"w")));
        }
    });
    for i in 0..8 {
        assert_eq!(ok(&servers, &["cat", &format!("/w{i}")], None), b"w");
    }
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
    // Room made is room to use: once the cluster let go of the deleted file, which a caching
    // mount could still be reading without a handle for up to twice its TTL and a second.
    std::fs::remove_file(m.path.join("kept")).expect("rm");
    common::hosts::wait_until("the deleted file's room", || {
        std::fs::write(m.path.join("big"), [b'x'; 2000]).is_ok()
    });
}
