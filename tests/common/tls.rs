//! TLS credentials for the tests: one cluster CA per test binary, made on first use with the
//! real `lockfs cert ca`, and certificates issued from it with the real `lockfs cert issue`.
//!
//! Each certificate is issued once, by the first caller that asks for it; callers on other
//! threads wait for it and get the same directory (`ca.pem`, `cert.pem`, `key.pem`: what
//! `--tls-dir` and `LOCKFS_TLS_DIR` take). Everything lives in one temporary directory that
//! lasts as long as the test process (nodes and mounts are started with these files until the
//! last test ends) and is removed when the process exits. Every `lockfs cert` run is bounded,
//! and a failure panics with its stderr.
//!
//! The parties: node `N` is `peer_dir(N)` (a peer certificate for node id N, named `node-N`);
//! the CLI is `admin_dir()` (admin may do everything a host may, and administer the cluster);
//! a mount is `host_dir(NAME)`; `reader_dir()` may only read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use super::testdir::TempDir;
use super::BIN;

/// The environment variable the mount and the CLI read their credentials' directory from.
pub const ENV: &str = "LOCKFS_TLS_DIR";
/// The name of the admin certificate the CLI uses.
pub const ADMIN: &str = "test-admin";
/// The name of the reader certificate.
pub const READER: &str = "test-reader";
/// The bound on one `lockfs cert` run.
const CERT_LIMIT: Duration = Duration::from_secs(60);

struct Credentials {
    /// `ca/` (the CA's certificate and key) and one directory per issued certificate.
    dir: TempDir,
    /// The issued directories by `ROLE-NAME`. Held while a certificate is issued, so that each
    /// is issued once.
    issued: Mutex<BTreeMap<String, PathBuf>>,
}

static CREDENTIALS: OnceLock<Credentials> = OnceLock::new();

/// Removes the credentials' directory as the process exits (a static is never dropped).
extern "C" fn remove_at_exit() {
    if let Some(c) = CREDENTIALS.get() {
        let _ = std::fs::remove_dir_all(c.dir.path());
    }
}

/// The process's credentials, with the CA made on the first call.
fn credentials() -> &'static Credentials {
    CREDENTIALS.get_or_init(|| {
        // Should `lockfs cert ca` fail, the panic drops (removes) the directory.
        let dir = super::testdir::tempdir().expect("a temporary directory for the test CA");
        let mut cmd = Command::new(BIN);
        cmd.args(["cert", "ca", "--out"]).arg(dir.path().join("ca"));
        run_cert(cmd);
        // SAFETY: atexit(3) with a function that takes nothing and only removes files; a
        // failure to register it only leaves the directory behind.
        unsafe { libc::atexit(remove_at_exit) };
        Credentials {
            dir,
            issued: Mutex::new(BTreeMap::new()),
        }
    })
}

/// Runs a `lockfs cert` command (bounded); panics with its stderr if it fails.
fn run_cert(mut cmd: Command) {
    cmd.env("RUST_LOG", "warn");
    let shown = format!("{cmd:?}");
    let out = super::output_within(cmd, None, CERT_LIMIT);
    assert!(
        out.status.success(),
        "{shown} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The directory of the certificate for `role` and `name` (and node `id`), issued on the first
/// call.
fn issued(role: &str, name: &str, id: Option<u64>) -> PathBuf {
    let c = credentials();
    // A panic while issuing poisons the lock; the next caller issues the certificate afresh.
    let mut issued = c.issued.lock().unwrap_or_else(|e| e.into_inner());
    let key = format!("{role}-{name}");
    if let Some(dir) = issued.get(&key) {
        return dir.clone();
    }
    let out = c.dir.path().join(&key);
    // What an issue of this certificate that panicked left behind.
    let _ = std::fs::remove_dir_all(&out);
    let mut cmd = Command::new(BIN);
    cmd.args(["cert", "issue", "--ca"])
        .arg(ca_dir())
        .args(["--role", role, "--name", name]);
    if let Some(id) = id {
        cmd.arg("--id").arg(id.to_string());
    }
    cmd.arg("--out").arg(&out);
    run_cert(cmd);
    issued.insert(key, out.clone());
    out
}

/// The CA's directory (`ca.pem`, `ca-key.pem`).
pub fn ca_dir() -> PathBuf {
    credentials().dir.path().join("ca")
}

/// The credentials of node `id` (a peer certificate named `node-ID`), for `lockfs serve --id ID`.
pub fn peer_dir(id: u64) -> PathBuf {
    issued("peer", &format!("node-{id}"), Some(id))
}

/// The credentials of the test administrator (role admin, named `test-admin`): the CLI's.
pub fn admin_dir() -> PathBuf {
    issued("admin", ADMIN, None)
}

/// The credentials of host `name` (role host), for mounts.
pub fn host_dir(name: &str) -> PathBuf {
    issued("host", name, None)
}

/// The credentials of a reader (role reader, named `test-reader`).
pub fn reader_dir() -> PathBuf {
    issued("reader", READER, None)
}

/// The test administrator's credentials, loaded for in-process clients.
pub fn admin() -> lockfs::auth::Tls {
    let dir = admin_dir();
    lockfs::auth::Tls::load(Some(dir.as_path()), false)
        .unwrap_or_else(|e| panic!("loading the credentials in {}: {e}", dir.display()))
}

/// A peer's hello: node `from` of cluster `cluster_id` dialing node `to`, reading the newest
/// log format, as a lockfs of this version says.
pub fn peer_hello(cluster_id: u64, from: u64, to: u64) -> lockfs::proto::Hello {
    let mut h = lockfs::proto::Hello::new();
    h.version = lockfs::proto::PROTOCOL_VERSION;
    let p = h.mut_peer();
    p.cluster_id = cluster_id;
    p.from = from;
    p.to = to;
    p.log_format = lockfs::encoding::LogFormat::NEWEST.number();
    h
}

/// A connection to the node at `addr` with the credentials in `dir` (plain TCP when `None`),
/// through lockfs's own TLS, for tests that write raw frames.
pub async fn connect(addr: &str, dir: Option<&Path>) -> Result<lockfs::auth::Stream, String> {
    let tls = lockfs::auth::Tls::load(dir, dir.is_none()).map_err(|e| e.to_string())?;
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    tls.connect(stream, lockfs::auth::Expect::AnyPeer)
        .await
        .map_err(|e| e.to_string())
}
