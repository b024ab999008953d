//! Settings of `lockfs serve`, from flags or a TOML file (the same names in both).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::ServerError;
use crate::encoding::LogFormat;
use crate::state::Quotas;

/// Default size limit of a file, per DESIGN.md.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 256 * 1024;

/// Everything a node needs to start.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub id: u64,
    pub data: PathBuf,
    pub listen: String,
    /// Every voter of the initial cluster, this node included: id -> address. Read only when
    /// the data directory is new and there is nothing to join; afterwards the replicated member
    /// book decides.
    pub peers: BTreeMap<u64, String>,
    /// Members of an existing cluster to ask to add this node, when its data directory is new.
    pub join: Vec<String>,
    /// When joining: stay a learner (a read replica) instead of becoming a voter.
    pub learner: bool,
    /// One raft tick. Elections time out after `election_ticks` to twice that many ticks without
    /// a leader (raft-rs randomizes in that range); the leader sends heartbeats every
    /// `heartbeat_ticks`.
    pub tick: Duration,
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// Whether each election timeout is drawn at random (always, outside tests); when not, it
    /// is exactly `election_ticks`, so a test sets which node times out first.
    pub random_election: bool,
    /// Take a snapshot and compact the log once this many entries were applied since the last.
    pub snapshot_entries: u64,
    /// Largest file; the leader stamps it into each command so every replica enforces the same.
    pub max_file_size: u64,
    /// After a session expires, its locks are not granted to anyone else for this long (Chubby's
    /// lock-delay): a holder that was cut off, not dead, gets time to notice before anyone
    /// else acts under the same lock.
    pub lock_delay: Duration,
    /// Cluster-wide quotas; the leader stamps them into each command that can grow something.
    pub quotas: Quotas,
    /// Bounds on the session TTL a client may ask for.
    pub min_session_ttl: Duration,
    pub max_session_ttl: Duration,
    /// This node's credentials (`ca.pem`, `cert.pem`, `key.pem`; a `peer` certificate for this
    /// node's id).
    pub tls_dir: Option<PathBuf>,
    /// Plain TCP without authentication; only allowed on a loopback address.
    pub insecure: bool,
    /// A client connection that sends nothing for this long, with no request pending, is
    /// closed. Keep it above the longest session TTL clients use: a session's keep-alives then
    /// keep its connection open.
    pub idle_timeout: Duration,
    /// Client requests (keep-alives aside) the node handles at once; more are answered "busy".
    pub max_requests: usize,
    /// A leader proposes a check of the replicas' states (see `integrity.rs`) after this many
    /// applied entries. Each check hashes the whole state on every replica.
    pub check_entries: u64,
    /// Where to serve Prometheus metrics, `/health` and `/ready` over HTTP (`metrics.rs`);
    /// `None`: nowhere.
    pub metrics_listen: Option<String>,
    /// The newest log format this node reads, writes and says it reads (see
    /// `crate::encoding`): the newest there is, except where a test has a node stand in for
    /// an older lockfs (`LOCKFS_TEST_LOG_FORMAT`).
    pub log_format: LogFormat,
}

/// The same settings as they appear in a `--config` file; every field is optional there.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub id: Option<u64>,
    pub data: Option<PathBuf>,
    pub listen: Option<String>,
    /// `"1=host:port,2=host:port,..."`, as on the command line.
    pub peers: Option<String>,
    /// `"host:port,host:port"`: members of the cluster to join.
    pub join: Option<String>,
    pub learner: Option<bool>,
    pub tick_ms: Option<u64>,
    pub election_ticks: Option<usize>,
    pub heartbeat_ticks: Option<usize>,
    pub snapshot_entries: Option<u64>,
    pub max_file_size: Option<u64>,
    pub lock_delay_ms: Option<u64>,
    pub tls_dir: Option<PathBuf>,
    pub insecure: Option<bool>,
    pub idle_timeout_ms: Option<u64>,
    pub max_requests: Option<usize>,
    pub check_entries: Option<u64>,
    /// `"host:port"`: where to serve metrics.
    pub metrics_listen: Option<String>,
    /// The `[quotas]` table; a quota not given keeps its default.
    pub quotas: Option<QuotasFile>,
}

/// The `[quotas]` table of a config file (see [`Quotas`] for what each bounds).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotasFile {
    pub sessions: Option<u64>,
    pub sessions_per_host: Option<u64>,
    pub handles_per_session: Option<u64>,
    pub nodes: Option<u64>,
    pub bytes: Option<u64>,
    pub waiters_per_lock: Option<u64>,
    pub waiters: Option<u64>,
}

impl QuotasFile {
    /// The quotas with defaults for what is not given; zero is refused (it would refuse
    /// everything, the root's node included).
    fn finish(self) -> Result<Quotas, ServerError> {
        let d = Quotas::default();
        let mut q = d;
        for (name, given, field) in [
            ("sessions", self.sessions, &mut q.sessions),
            (
                "sessions_per_host",
                self.sessions_per_host,
                &mut q.sessions_per_host,
            ),
            (
                "handles_per_session",
                self.handles_per_session,
                &mut q.handles_per_session,
            ),
            ("nodes", self.nodes, &mut q.nodes),
            ("bytes", self.bytes, &mut q.bytes),
            (
                "waiters_per_lock",
                self.waiters_per_lock,
                &mut q.waiters_per_lock,
            ),
            ("waiters", self.waiters, &mut q.waiters),
        ] {
            match given {
                Some(0) => {
                    return Err(ServerError::Config(format!(
                        "quotas.{name} must be at least 1"
                    )))
                }
                Some(n) => *field = n,
                None => {}
            }
        }
        Ok(q)
    }
}

impl ConfigFile {
    pub fn read(path: &Path) -> Result<ConfigFile, ServerError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ServerError::Io(path.display().to_string(), e))?;
        toml::from_str(&text)
            .map_err(|e| ServerError::Config(format!("{}: {}", path.display(), e.message())))
    }

    /// Fills in what flags left unset and checks the result.
    pub fn finish(self) -> Result<ServeConfig, ServerError> {
        let missing = |what: &str| ServerError::Config(format!("missing setting: {what}"));
        let id = self.id.ok_or_else(|| missing("--id"))?;
        let data = self.data.ok_or_else(|| missing("--data"))?;
        let join: Vec<String> = self
            .join
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(String::from)
            .collect();
        let peers = match (&self.peers, join.is_empty()) {
            (Some(p), _) => parse_peers(p)?,
            (None, false) => BTreeMap::new(),
            (None, true) => return Err(missing("--peers (or --join)")),
        };
        let listen = match self.listen {
            Some(l) => l,
            None => peers.get(&id).cloned().ok_or_else(|| missing("--listen"))?,
        };
        if id == 0 {
            return Err(ServerError::Config("node ids start at 1".into()));
        }
        if join.is_empty() && !peers.contains_key(&id) {
            return Err(ServerError::Config(format!(
                "node {id} is not in --peers ({})",
                format_peers(&peers)
            )));
        }
        let cfg = ServeConfig {
            id,
            data,
            listen,
            peers,
            join,
            learner: self.learner.unwrap_or(false),
            tick: Duration::from_millis(self.tick_ms.unwrap_or(100)),
            election_ticks: self.election_ticks.unwrap_or(10),
            heartbeat_ticks: self.heartbeat_ticks.unwrap_or(2),
            random_election: true,
            snapshot_entries: self.snapshot_entries.unwrap_or(10_000),
            max_file_size: self.max_file_size.unwrap_or(DEFAULT_MAX_FILE_SIZE),
            lock_delay: Duration::from_millis(self.lock_delay_ms.unwrap_or(5_000)),
            quotas: self.quotas.unwrap_or_default().finish()?,
            min_session_ttl: Duration::from_secs(1),
            max_session_ttl: Duration::from_secs(600),
            tls_dir: self.tls_dir,
            insecure: self.insecure.unwrap_or(false),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms.unwrap_or(900_000)),
            max_requests: self.max_requests.unwrap_or(16 * 1024),
            check_entries: self.check_entries.unwrap_or(10_000),
            metrics_listen: self.metrics_listen,
            log_format: test_log_format()?,
        };
        match (&cfg.tls_dir, cfg.insecure) {
            (Some(_), true) => {
                return Err(ServerError::Config(
                    "give either tls-dir or insecure, not both".into(),
                ))
            }
            (None, false) => {
                return Err(ServerError::Config(
                    "missing setting: --tls-dir (this node's credentials from `lockfs cert \
                     issue --role peer`), or --insecure for plain TCP on loopback"
                        .into(),
                ))
            }
            (None, true) if !is_loopback(&cfg.listen) => {
                return Err(ServerError::Config(format!(
                    "--insecure listens on loopback addresses only, not on {}: anyone who \
                     can reach the port would own the cluster",
                    cfg.listen
                )))
            }
            _ => {}
        }
        if cfg.tick.is_zero()
            || cfg.heartbeat_ticks == 0
            || cfg.election_ticks <= cfg.heartbeat_ticks
        {
            return Err(ServerError::Config(
                "need tick-ms > 0 and election-ticks > heartbeat-ticks > 0".into(),
            ));
        }
        if cfg.idle_timeout < Duration::from_secs(1) {
            return Err(ServerError::Config(
                "idle-timeout-ms must be >= 1000".into(),
            ));
        }
        if cfg.check_entries == 0 {
            return Err(ServerError::Config("check-entries must be > 0".into()));
        }
        if cfg.max_requests == 0 {
            return Err(ServerError::Config("max-requests must be > 0".into()));
        }
        if cfg.snapshot_entries == 0 {
            return Err(ServerError::Config("snapshot-entries must be > 0".into()));
        }
        if cfg.max_file_size > (crate::proto::CLIENT_MAX_FRAME as u64) / 2 {
            return Err(ServerError::Config(format!(
                "max-file-size is limited to {} bytes",
                crate::proto::CLIENT_MAX_FRAME / 2
            )));
        }
        Ok(cfg)
    }
}

/// Whether every address `listen` stands for is a loopback address.
pub fn is_loopback(listen: &str) -> bool {
    use std::net::ToSocketAddrs;
    match listen.to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<_> = addrs.collect();
            !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())
        }
        Err(_) => false,
    }
}

/// Parses `1=host:port,2=host:port`.
pub fn parse_peers(s: &str) -> Result<BTreeMap<u64, String>, ServerError> {
    let mut peers = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('=').ok_or_else(|| {
            ServerError::Config(format!("peer '{part}' is not of the form ID=HOST:PORT"))
        })?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| ServerError::Config(format!("peer id '{id}' is not a number")))?;
        if id == 0 {
            return Err(ServerError::Config("node ids start at 1".into()));
        }
        if peers.insert(id, addr.trim().to_string()).is_some() {
            return Err(ServerError::Config(format!("peer {id} given twice")));
        }
    }
    if peers.is_empty() {
        return Err(ServerError::Config("--peers names no node".into()));
    }
    Ok(peers)
}

pub fn format_peers(peers: &BTreeMap<u64, String>) -> String {
    peers
        .iter()
        .map(|(id, addr)| format!("{id}={addr}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The id of a cluster bootstrapped from `peers`: every node given the same list computes the
/// same id without talking to the others, and nodes given different lists refuse each other.
pub fn cluster_id_for(peers: &BTreeMap<u64, String>) -> u64 {
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format_peers(peers).bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.max(1)
}

/// `LOCKFS_TEST_LOG_FORMAT=N`: the node reads and writes log formats up to N only, as a lockfs
/// from before format N+1 would, so that tests can upgrade a cluster member by member. Unset:
/// the newest.
fn test_log_format() -> Result<LogFormat, ServerError> {
    match std::env::var("LOCKFS_TEST_LOG_FORMAT") {
        Err(_) => Ok(LogFormat::NEWEST),
        Ok(v) => v
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .and_then(LogFormat::from_number)
            .ok_or_else(|| {
                ServerError::Config(format!(
                    "LOCKFS_TEST_LOG_FORMAT={v}: not a log format this lockfs knows"
                ))
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_reject_bad_input() {
        let p = parse_peers("1=127.0.0.1:7001, 2=127.0.0.1:7002").unwrap();
        assert_eq!(p[&2], "127.0.0.1:7002");
        assert!(parse_peers("1=a,1=b").is_err());
        assert!(parse_peers("x=a").is_err());
        assert!(parse_peers("0=a").is_err());
        assert!(parse_peers("1").is_err());
        assert!(parse_peers("").is_err());
    }

    #[test]
    fn cluster_id_depends_on_members_only() {
        let a = parse_peers("1=h:1,2=h:2").unwrap();
        let b = parse_peers("2=h:2,1=h:1").unwrap();
        let c = parse_peers("1=h:1,2=h:3").unwrap();
        assert_eq!(cluster_id_for(&a), cluster_id_for(&b));
        assert_ne!(cluster_id_for(&a), cluster_id_for(&c));
    }

    #[test]
    fn config_file_fills_defaults_and_checks() {
        let f: ConfigFile = toml::from_str(
            "id = 2\ndata = \"/tmp/x\"\npeers = \"1=h:1,2=h:2\"\ntick_ms = 50\ntls_dir = \"/t\"\n",
        )
        .unwrap();
        let cfg = f.finish().unwrap();
        assert_eq!(cfg.listen, "h:2");
        assert_eq!(cfg.tick, Duration::from_millis(50));
        assert_eq!(cfg.metrics_listen, None);
        assert!(toml::from_str::<ConfigFile>("bogus = 1").is_err());
        let f: ConfigFile = toml::from_str(
            "id = 1\ndata = \"/x\"\npeers = \"1=h:1\"\ntls_dir = \"/t\"\nmetrics_listen = \"h:9\"",
        )
        .unwrap();
        assert_eq!(f.finish().unwrap().metrics_listen.as_deref(), Some("h:9"));
        let f: ConfigFile =
            toml::from_str("id = 3\ndata = \"/x\"\npeers = \"1=h:1\"\ntls_dir = \"/t\"").unwrap();
        assert!(f.finish().is_err());
        // A joining node needs no peers, but an address to listen on.
        let f: ConfigFile = toml::from_str(
            "id = 4\ndata = \"/x\"\njoin = \"h:1, h:2\"\nlisten = \"h:4\"\ntls_dir = \"/t\"",
        )
        .unwrap();
        let cfg = f.finish().unwrap();
        assert_eq!(cfg.join, vec!["h:1", "h:2"]);
        assert!(cfg.peers.is_empty());
        let f: ConfigFile =
            toml::from_str("id = 4\ndata = \"/x\"\njoin = \"h:1\"\ntls_dir = \"/t\"").unwrap();
        assert!(f.finish().is_err());
    }

    #[test]
    fn quotas_default_and_refuse_zero() {
        let cfg = |extra: &str| {
            toml::from_str::<ConfigFile>(&format!(
                "id = 1\ndata = \"/x\"\npeers = \"1=127.0.0.1:7001\"\ninsecure = true\n{extra}"
            ))
            .map_err(|e| ServerError::Config(e.to_string()))
            .and_then(ConfigFile::finish)
        };
        assert_eq!(cfg("").unwrap().quotas, Quotas::default());
        let q = cfg("[quotas]\nsessions = 3\nbytes = 1024").unwrap().quotas;
        assert_eq!((q.sessions, q.bytes), (3, 1024));
        assert_eq!(q.nodes, Quotas::default().nodes);
        let err = cfg("[quotas]\nnodes = 0").unwrap_err().to_string();
        assert!(err.contains("quotas.nodes must be at least 1"), "{err}");
        assert!(cfg("[quotas]\nfiles = 3").is_err());
    }

    #[test]
    fn plain_tcp_needs_a_flag_and_loopback() {
        let cfg = |extra: &str| {
            toml::from_str::<ConfigFile>(&format!(
                "id = 1\ndata = \"/x\"\npeers = \"1=127.0.0.1:7001\"\n{extra}"
            ))
            .unwrap()
            .finish()
        };
        assert!(cfg("").is_err(), "neither TLS nor --insecure");
        assert!(cfg("tls_dir = \"/t\"\ninsecure = true").is_err());
        assert!(cfg("insecure = true").is_ok());
        assert!(cfg("insecure = true\nlisten = \"0.0.0.0:7001\"").is_err());
        assert!(cfg("insecure = true\nlisten = \"10.1.2.3:7001\"").is_err());
        assert!(cfg("insecure = true\nlisten = \"[::1]:7001\"").is_ok());
        assert!(cfg("tls_dir = \"/t\"\nlisten = \"0.0.0.0:7001\"").is_ok());
        assert!(is_loopback("localhost:7001"));
    }
}
