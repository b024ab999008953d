//! Authentication and authorization against a real 3-node TLS cluster: each attack an attacker
//! on the network could try is replayed and must be refused with a clear error (and logged with
//! the attacker's address), and afterwards every acknowledged write is on every node, the same
//! everywhere. Also: plain TCP needs `--insecure` on both sides, and only on loopback.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lockfs::auth::Tls;
use lockfs::client::{ops, Client, ClientError, InSession};
use lockfs::proto::{
    self, frame::FramedConn, Request_oneof_op as Op, Response_oneof_result as Res,
};

use common::{block_on, cli, cli_as, ok, output_within, testdir, tls, Cluster, BIN};

const EPERM: u32 = 1;
const EINVAL: u32 = 22;

/// Connects to `addr` (in plain TCP when `creds` is `None`), says `hello` and returns the
/// node's reply with the still-open connection, or why there was none.
async fn say_hello(
    addr: &str,
    creds: Option<&Path>,
    hello: proto::Hello,
) -> Result<(proto::HelloReply, FramedConn<lockfs::auth::Stream>), String> {
    let stream = tls::connect(addr, creds).await?;
    let mut conn = FramedConn::new(stream, proto::HELLO_MAX_FRAME);
    conn.send(&hello).await.map_err(|e| e.to_string())?;
    let reply = tokio::time::timeout(Duration::from_secs(10), conn.recv())
        .await
        .map_err(|_| "no reply".to_string())?
        .map_err(|e| e.to_string())?;
    Ok((reply, conn))
}

fn client_hello() -> proto::Hello {
    let mut h = proto::Hello::new();
    h.version = proto::PROTOCOL_VERSION;
    h.mut_client().name = "attacker".into();
    h
}

use tls::peer_hello;

/// A forged heartbeat at a high term, as an attacker would send it after a hello.
fn forged_heartbeat(from: u64, to: u64) -> proto::PeerFrame {
    use protobuf::Message as _;
    let mut msg = raft::prelude::Message::new();
    msg.set_msg_type(raft::prelude::MessageType::MsgHeartbeat);
    msg.from = from;
    msg.to = to;
    msg.term = 1 << 40;
    let mut frame = proto::PeerFrame::new();
    frame.raft = msg.write_to_bytes().expect("encoding");
    frame
}

/// The hello must be refused with `needle` in the reason, tell nothing about the cluster, and
/// the connection must be closed: a forged raft message sent after it reaches nobody.
fn assert_refused(
    what: &str,
    outcome: Result<(proto::HelloReply, FramedConn<lockfs::auth::Stream>), String>,
    needle: &str,
) {
    let (reply, mut conn) = outcome.unwrap_or_else(|e| panic!("{what}: no refusal came: {e}"));
    let err = reply
        .error
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: the hello was accepted"));
    assert!(
        err.message.contains(needle),
        "{what}: refusal {:?} lacks {needle:?}",
        err.message
    );
    assert_eq!(
        (reply.cluster_id, reply.node_id),
        (0, 0),
        "{what}: a refusal told the cluster's identity"
    );
    block_on(async {
        let _ = conn.send(&forged_heartbeat(3, 1)).await;
        let next = tokio::time::timeout(Duration::from_secs(10), conn.recv::<proto::HelloReply>())
            .await
            .expect("the node closes a refused connection");
        assert!(next.is_err(), "{what}: the connection stayed open");
    });
}

fn client_as(dir: &Path, servers: &str) -> Client {
    let creds = Tls::load(Some(dir), false).expect("credentials");
    Client::new(
        servers.split(',').map(String::from).collect(),
        Duration::from_secs(15),
        "security-test".into(),
        creds,
    )
}

/// Runs `lockfs ARGS` (no credentials needed: `cert` and `serve` take their own) and asserts
/// success.
fn lockfs_ok(args: &[&str]) {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    let out = output_within(cmd, None, Duration::from_secs(60));
    assert!(out.status.success(), "lockfs {args:?}: {}", stderr(&out));
}

fn remote_code(r: Result<Res, ClientError>) -> (u32, String) {
    match r {
        Err(ClientError::Remote { code, message }) => (code, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_tls_cluster_refuses_every_attack_and_loses_nothing() {
    let c = Cluster::start(3, &[]);
    let servers = c.servers();
    let addr1 = c.addr(1);

    // Acknowledged writes, before and between the attacks.
    ok(&servers, &["mkdir", "-p", "/acked"], None);
    let mut acked = Vec::new();
    let mut write = |n: usize| {
        let path = format!("/acked/{n}");
        ok(
            &servers,
            &["put", &path],
            Some(format!("value {n}").as_bytes()),
        );
        acked.push((path, format!("value {n}")));
    };
    for n in 0..5 {
        write(n);
    }
    let Res::status(status) =
        block_on(client_as(&tls::host_dir("host-a"), &servers).call(ops::cluster_status()))
            .expect("status")
    else {
        panic!("status answer")
    };
    let cluster_id = status.cluster_id;

    // Plain TCP, as a client and as a peer: refused, without the cluster's id.
    assert_refused(
        "plain-TCP client",
        block_on(say_hello(&addr1, None, client_hello())),
        "requires mutual TLS",
    );
    assert_refused(
        "plain-TCP peer",
        block_on(say_hello(&addr1, None, peer_hello(cluster_id, 2, 1))),
        "requires mutual TLS",
    );
    // A host's certificate may not speak Raft; a peer's only as its own node.
    assert_refused(
        "host certificate speaking Raft",
        block_on(say_hello(
            &addr1,
            Some(&tls::host_dir("host-a")),
            peer_hello(cluster_id, 2, 1),
        )),
        "may not speak Raft",
    );
    assert_refused(
        "node 2's certificate speaking as node 3",
        block_on(say_hello(
            &addr1,
            Some(&tls::peer_dir(2)),
            peer_hello(cluster_id, 3, 1),
        )),
        "may not speak Raft as node 3",
    );
    assert_refused(
        "a peer certificate of a node that is no member",
        block_on(say_hello(
            &addr1,
            Some(&tls::peer_dir(9)),
            peer_hello(cluster_id, 9, 1),
        )),
        "unknown node id 9",
    );
    write(5);

    // A certificate from another CA: no connection at all.
    let other = testdir::tempdir().expect("tempdir");
    let other_ca = other.path().join("ca");
    let other_host = other.path().join("host");
    lockfs_ok(&["cert", "ca", "--out", other_ca.to_str().unwrap()]);
    lockfs_ok(&[
        "cert",
        "issue",
        "--ca",
        other_ca.to_str().unwrap(),
        "--role",
        "host",
        "--name",
        "host-a",
        "--out",
        other_host.to_str().unwrap(),
    ]);
    match block_on(say_hello(&addr1, Some(&other_host), client_hello())) {
        Ok((reply, _)) => panic!("a certificate from another CA was answered: {reply:?}"),
        Err(e) => eprintln!("another CA's certificate: {e}"),
    }
    let out = cli_as(
        &other_host,
        &servers,
        &["ls", "/", "--timeout", "600"],
        None,
    );
    // The CLI says so at once rather than retrying until its timeout: every node refuses it.
    assert!(!out.status.success(), "another CA's host listed the tree");
    assert!(
        stderr(&out).contains("not authenticated"),
        "{}",
        stderr(&out)
    );

    // Cluster administration needs admin: a host may look, not change.
    let host = tls::host_dir("host-a");
    assert!(cli_as(&host, &servers, &["cluster", "status"], None)
        .status
        .success());
    for args in [
        vec!["cluster", "add", "9", "127.0.0.1:1"],
        vec!["cluster", "remove", "2"],
        vec!["cluster", "promote", "2"],
    ] {
        let out = cli_as(&host, &servers, &args, None);
        assert!(!out.status.success(), "a host could run {args:?}");
        assert!(
            stderr(&out).contains("needs admin"),
            "{args:?}: {}",
            stderr(&out)
        );
    }

    // A reader reads and nothing else.
    let reader = tls::reader_dir();
    let out = cli_as(&reader, &servers, &["cat", "/acked/0"], None);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "value 0",
        "{}",
        stderr(&out)
    );
    for (args, input) in [
        (vec!["put", "/acked/0"], Some(&b"overwritten"[..])),
        (vec!["mkdir", "/by-reader"], None),
        (vec!["rm", "/acked/1"], None),
    ] {
        let out = cli_as(&reader, &servers, &args, input);
        assert!(!out.status.success(), "a reader could run {args:?}");
        assert!(
            stderr(&out).contains("may only read"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    write(6);

    // Sessions belong to their opener and need their secret.
    let a = client_as(&tls::host_dir("host-a"), &servers);
    let b = client_as(&tls::host_dir("host-b"), &servers);
    let mut open = proto::OpenSession::new();
    open.ttl_ms = 10_000;
    open.host = "forged-host".into();
    open.pid = 1;
    let Res::session(opened) = block_on(a.call(Op::open_session(open))).expect("open a session")
    else {
        panic!("session answer")
    };
    let session = opened.session;
    let secret = u128::from_be_bytes(opened.secret.as_slice().try_into().expect("16 bytes"));
    let tag = |secret, seq, first_unacked| InSession {
        session,
        seq,
        first_unacked,
        secret,
    };
    let keep_alive = || Op::keep_alive(proto::KeepAlive::new());
    let close = || Op::close_session(proto::CloseSession::new());
    let timeout = Duration::from_secs(10);
    // Another host, even with the secret.
    for op in [keep_alive(), close()] {
        let (code, message) =
            remote_code(block_on(b.call_with(op, Some(tag(secret, 1, 1)), timeout)));
        assert_eq!(code, EPERM, "{message}");
        assert!(message.contains("belongs to another identity"), "{message}");
    }
    // The opener without the secret.
    let (code, message) = remote_code(block_on(a.call_with(close(), Some(tag(0, 1, 1)), timeout)));
    assert_eq!(code, EPERM, "{message}");
    assert!(message.contains("wrong secret"), "{message}");
    // Out-of-range sequence numbers are refused, never stored.
    let (code, message) = remote_code(block_on(a.call_with(
        ops::mkdir("/acked/x", 0o755, 0, 0),
        Some(tag(secret, 1, 1 << 62)),
        timeout,
    )));
    assert_eq!(code, EINVAL, "{message}");
    let (code, message) = remote_code(block_on(a.call_with(
        ops::mkdir("/acked/x", 0o755, 0, 0),
        Some(tag(secret, 1 << 62, 1)),
        timeout,
    )));
    assert_eq!(code, EINVAL, "{message}");
    // The owner with its secret is served, and the listing names its certified host, not the
    // one it claimed, and shows no secret.
    block_on(a.call_with(keep_alive(), Some(tag(secret, 0, 0)), timeout)).expect("keep-alive");
    block_on(a.call_with(
        ops::mkdir("/acked/by-a", 0o755, 0, 0),
        Some(tag(secret, 1, 1)),
        timeout,
    ))
    .expect("a write in the session");
    let list = block_on(b.all_sessions()).expect("sessions");
    let listed = list
        .iter()
        .find(|s| s.id == session)
        .expect("the session is listed");
    assert_eq!(listed.host, "host-a");
    // An administrator may end it without the secret.
    let admin = client_as(&tls::admin_dir(), &servers);
    // (A sequence number of its own: one the session used already would be answered from the
    // session's cache of results, as a retry.)
    block_on(admin.call_with(close(), Some(tag(0, 100, 100)), timeout))
        .expect("admin ends the session");
    let (_, message) = remote_code(block_on(a.call_with(
        keep_alive(),
        Some(tag(secret, 0, 0)),
        timeout,
    )));
    assert!(message.contains("expired"), "{message}");
    write(7);

    // A rogue node with a host's certificate cannot even start.
    let rogue = testdir::tempdir().expect("tempdir");
    let rogue_addr = format!("127.0.0.1:{}", common::free_port());
    let out = output_within(
        {
            let mut cmd = Command::new(BIN);
            cmd.args([
                "serve",
                "--id",
                "9",
                "--listen",
                &rogue_addr,
                "--join",
                &servers,
            ])
            .arg("--data")
            .arg(rogue.path().join("data"))
            .arg("--tls-dir")
            .arg(tls::host_dir("rogue"));
            cmd
        },
        None,
        Duration::from_secs(60),
    );
    assert!(!out.status.success(), "a host certificate served as a node");
    assert!(
        stderr(&out).contains("not for peer node 9"),
        "{}",
        stderr(&out)
    );

    // Every refusal was logged with the address it came from.
    let logs = c.log_of(1);
    assert!(
        logs.contains("refusing a plain-TCP connection from 127.0.0.1:"),
        "node 1's log"
    );
    assert!(
        logs.contains("refusing a connection from 127.0.0.1:"),
        "node 1's log"
    );
    assert!(
        c.logs().contains("refused a request from 127.0.0.1:"),
        "the nodes' logs"
    );

    // Nothing was lost, and every node serves the same: still three members.
    for id in 1..=3 {
        let node = Client::pinned(
            c.addr(id),
            Duration::from_secs(30),
            "check".into(),
            tls::admin(),
        );
        for (path, value) in &acked {
            let got = block_on(node.call(ops::read(path)));
            match got {
                Ok(Res::data(d)) => assert_eq!(
                    String::from_utf8_lossy(&d.data),
                    *value,
                    "{path} on node {id}"
                ),
                other => panic!("{path} on node {id}: {other:?}"),
            }
        }
    }
    let out = cli(&servers, &["cluster", "status", "--json"], None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("\"id\":9"), "node 9 became a member: {text}");
}

#[test]
fn plain_tcp_is_explicit_and_loopback_only() {
    let dir = testdir::tempdir().expect("tempdir");
    let serve = |args: &[&str]| {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .args(args)
            .arg("--data")
            .arg(dir.path().join("d"));
        output_within(cmd, None, Duration::from_secs(30))
    };
    // Neither credentials nor --insecure.
    let out = serve(&["--id", "1", "--peers", "1=127.0.0.1:1"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--tls-dir"), "{}", stderr(&out));
    // --insecure on an address others can reach.
    let out = serve(&["--id", "1", "--peers", "1=0.0.0.0:7999", "--insecure"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("loopback"), "{}", stderr(&out));

    // A plain-TCP node on loopback serves plain-TCP clients, and tells TLS clients apart.
    let plain = Cluster::start(1, &["--insecure"]);
    let servers = plain.servers();
    let out = cli(&servers, &["ls", "/", "--insecure"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli(&servers, &["ls", "/", "--timeout", "600"], None);
    assert!(
        !out.status.success(),
        "a TLS client was served by an --insecure node"
    );
    assert!(stderr(&out).contains("--insecure"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not authenticated"),
        "{}",
        stderr(&out)
    );
    assert!(plain.log_of(1).contains("this node runs --insecure"));

    // And a TLS cluster refuses plain-TCP clients with a reason.
    let secure = Cluster::start(1, &[]);
    let out = cli(
        &secure.servers(),
        &["ls", "/", "--insecure", "--timeout", "600"],
        None,
    );
    assert!(
        !out.status.success(),
        "a plain-TCP client was served by a TLS node"
    );
    assert!(
        stderr(&out).contains("requires mutual TLS"),
        "{}",
        stderr(&out)
    );
}

/// Moves the credentials in `from` over those in `to`, one rename per file (as an operator's
/// `mv` would).
fn replace_credentials(from: &Path, to: &Path) {
    for file in ["ca.pem", "cert.pem", "key.pem"] {
        let staged = to.join(format!(".{file}.new"));
        std::fs::copy(from.join(file), &staged).expect("copy");
        std::fs::rename(&staged, to.join(file)).expect("rename");
    }
}

#[test]
fn certificates_rotate_without_a_restart() {
    let c = Cluster::start(1, &[]);
    let servers = c.servers();
    let dir = testdir::tempdir().expect("tempdir");
    let issue = |ca: &Path, name: &str, out: &str| {
        let out = dir.path().join(out);
        lockfs_ok(&[
            "cert",
            "issue",
            "--ca",
            ca.to_str().unwrap(),
            "--role",
            "host",
            "--name",
            name,
            "--out",
            out.to_str().unwrap(),
        ]);
        out
    };
    let live = issue(&tls::ca_dir(), "rotating", "live");
    let creds = Tls::load(Some(&live), false).expect("credentials");
    // Every step opens new connections (a new client) with the same loaded credentials.
    let status = || {
        let client = Client::new(
            vec![servers.clone()],
            Duration::from_secs(15),
            "rotation".into(),
            creds.clone(),
        );
        block_on(client.call(ops::cluster_status()))
    };
    status().expect("served with the first certificate");

    // A certificate of the same identity from a CA the cluster does not trust: the next
    // connection uses it, and is refused, which shows the files were read again.
    let foreign_ca = dir.path().join("foreign-ca");
    lockfs_ok(&["cert", "ca", "--out", foreign_ca.to_str().unwrap()]);
    let foreign = issue(&foreign_ca, "rotating", "foreign");
    replace_credentials(&foreign, &live);
    match status() {
        Err(ClientError::Refused(_)) => {}
        other => panic!("a certificate from an untrusted CA was used and served: {other:?}"),
    }
    // A new certificate from the cluster's CA: served again, with no restart anywhere.
    let renewed = issue(&tls::ca_dir(), "rotating", "renewed");
    replace_credentials(&renewed, &live);
    status().expect("served with the renewed certificate");
    // A certificate of another identity is not taken up: sessions belong to identities.
    let other = issue(&tls::ca_dir(), "someone-else", "other");
    replace_credentials(&other, &live);
    assert_eq!(creds.identity().expect("an identity").name, "rotating");
    status().expect("still served with the renewed certificate");
}

#[test]
fn a_host_limited_to_a_subtree_stays_in_it() {
    let c = Cluster::start(1, &[]);
    let servers = c.servers();
    ok(&servers, &["mkdir", "-p", "/svc/web"], None);
    ok(&servers, &["mkdir", "-p", "/svc/db"], None);
    ok(&servers, &["put", "/svc/db/secret"], Some(b"s3cret"));
    ok(&servers, &["put", "/top"], Some(b"top"));
    let dir = testdir::tempdir().expect("tempdir");
    let web = dir.path().join("web");
    lockfs_ok(&[
        "cert",
        "issue",
        "--ca",
        tls::ca_dir().to_str().unwrap(),
        "--role",
        "host",
        "--name",
        "web1",
        "--subtree",
        "/svc/web",
        "--out",
        web.to_str().unwrap(),
    ]);

    // Through the CLI: at home below /svc/web, refused everywhere else.
    let as_web = |args: &[&str], input: Option<&[u8]>| cli_as(&web, &servers, args, input);
    let out = as_web(&["put", "/svc/web/config"], Some(b"v1"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(as_web(&["cat", "/svc/web/config"], None).stdout, b"v1");
    for (args, input) in [
        (vec!["cat", "/svc/db/secret"], None),
        (vec!["put", "/svc/db/secret"], Some(&b"mine"[..])),
        (vec!["put", "/top"], Some(&b"mine"[..])),
        (vec!["rm", "/svc/db/secret"], None),
        (vec!["mkdir", "/svc/webx"], None),
        (vec!["stat", "/svc/db"], None),
        (vec!["ls", "/svc/db"], None),
        (vec!["cat", "/top"], None),
    ] {
        let out = as_web(&args, input);
        assert!(!out.status.success(), "web1 could run {args:?}");
        assert!(
            stderr(&out).contains("outside /svc/web"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    // On the way there it sees only the way.
    assert_eq!(as_web(&["ls", "/"], None).stdout, b"svc/\n");
    assert_eq!(as_web(&["ls", "/svc"], None).stdout, b"web/\n");
    assert!(as_web(&["stat", "/svc"], None).status.success());
    assert_eq!(ok(&servers, &["cat", "/svc/db/secret"], None), b"s3cret");

    // Through a mount of the whole tree with that certificate.
    let mnt = dir.path().join("mnt");
    let _mount = common::Mount::start(
        &servers,
        &mnt,
        &format!("tls_dir={}", web.display()),
        &dir.path().join("mount.log"),
    );
    assert_eq!(
        std::fs::read_to_string(mnt.join("svc/web/config")).expect("read inside"),
        "v1"
    );
    std::fs::write(mnt.join("svc/web/new"), "from the mount").expect("write inside");
    let names = |p: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(p)
            .expect("readdir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&mnt), ["svc"]);
    assert_eq!(names(&mnt.join("svc")), ["web"]);
    for outside in ["svc/db/secret", "top"] {
        let err = std::fs::read_to_string(mnt.join(outside)).expect_err(outside);
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::PermissionDenied,
            "{outside}: {err}"
        );
    }
    let err = std::fs::write(mnt.join("svc/db/mine"), "x").expect_err("write outside");
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
    let status = Command::new("flock")
        .arg("-n")
        .arg(mnt.join("svc/web/lock"))
        .arg("-c")
        .arg("true")
        .status()
        .expect("flock");
    assert!(status.success(), "flock inside the subtree");
    assert_eq!(
        ok(&servers, &["cat", "/svc/web/new"], None),
        b"from the mount"
    );
    // Such a host does not cache (a cache watches the whole tree): the cluster opened its
    // session without one, so no write waits for it.
    let log = std::fs::read_to_string(dir.path().join("mount.log")).unwrap_or_default();
    assert!(log.contains("not caching"), "{log}");
}

#[test]
fn the_cluster_checks_permissions_for_each_user_of_a_host() {
    use std::os::unix::fs::PermissionsExt;
    let c = Cluster::start(1, &[]);
    let servers = c.servers();
    // A host's credentials that the test's unprivileged users can read.
    let dir = testdir::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let host = dir.path().join("host");
    std::fs::create_dir(&host).unwrap();
    for file in ["ca.pem", "cert.pem", "key.pem"] {
        let to = host.join(file);
        std::fs::copy(tls::host_dir("users-host").join(file), &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    // `lockfs ARGS` as uid:gid on that host.
    let as_user = |ids: &str, args: &[&str], input: Option<&[u8]>| {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={}", ids.split(':').next().unwrap()))
            .arg(format!("--regid={}", ids.split(':').nth(1).unwrap()))
            .arg("--clear-groups")
            .arg(BIN)
            .args(args)
            .env("LOCKFS_SERVERS", &servers)
            .env(tls::ENV, &host);
        output_within(cmd, input, Duration::from_secs(60))
    };
    let denied = |out: std::process::Output, what: &str| {
        assert!(!out.status.success(), "{what} was allowed");
        assert!(
            stderr(&out).contains("permission denied"),
            "{what}: {}",
            stderr(&out)
        );
    };
    let allowed = |out: std::process::Output, what: &str| {
        assert!(out.status.success(), "{what}: {}", stderr(&out));
        out.stdout
    };

    ok(&servers, &["mkdir", "--mode", "777", "/pub"], None);
    denied(
        as_user("1000:1000", &["mkdir", "/home"], None),
        "mkdir in root's /",
    );
    allowed(
        as_user("1000:1000", &["put", "/pub/mine"], Some(b"by 1000")),
        "put in a 777 directory",
    );
    allowed(
        as_user("1000:1000", &["mkdir", "--mode", "700", "/pub/priv"], None),
        "mkdir in a 777 directory",
    );
    allowed(
        as_user("1000:1000", &["put", "/pub/priv/secret"], Some(b"s")),
        "put in one's own directory",
    );
    // Another user reads what 0644 lets it read, and nothing of a 0700 directory.
    assert_eq!(
        allowed(
            as_user("1001:1001", &["cat", "/pub/mine"], None),
            "read 0644"
        ),
        b"by 1000"
    );
    denied(
        as_user("1001:1001", &["put", "/pub/mine"], Some(b"by 1001")),
        "overwrite another's 0644 file",
    );
    denied(
        as_user("1001:1001", &["cat", "/pub/priv/secret"], None),
        "read in another's 0700 directory",
    );
    denied(
        as_user("1001:1001", &["ls", "/pub/priv"], None),
        "list another's 0700 directory",
    );
    // The administrator is not checked; nothing was changed by the refusals.
    assert_eq!(ok(&servers, &["cat", "/pub/mine"], None), b"by 1000");
    assert_eq!(ok(&servers, &["cat", "/pub/priv/secret"], None), b"s");

    // root_squash: root on that mount acts as nobody in the cluster, whatever the kernel let
    // through; without it, root is root.
    let squashed = dir.path().join("squashed");
    let _squashed = common::Mount::start(
        &servers,
        &squashed,
        "root_squash,allow_other",
        &dir.path().join("squashed.log"),
    );
    let plain = dir.path().join("plain");
    let _plain = common::Mount::start(
        &servers,
        &plain,
        "allow_other",
        &dir.path().join("plain.log"),
    );
    assert_eq!(
        std::fs::read_to_string(squashed.join("pub/mine")).unwrap(),
        "by 1000"
    );
    let err = std::fs::write(squashed.join("pub/mine"), "by root").expect_err("squashed write");
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
    // (Opening a directory asks the cluster nothing; reading it does.)
    let err = std::fs::read_dir(squashed.join("pub/priv"))
        .and_then(|d| d.collect::<Result<Vec<_>, _>>())
        .expect_err("squashed listing");
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
    std::fs::write(plain.join("pub/mine"), "by root").expect("root writes");
    assert_eq!(ok(&servers, &["cat", "/pub/mine"], None), b"by root");
}
