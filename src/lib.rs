//! lockfs: a replicated, Chubby-style lock service that Linux hosts mount as a filesystem.
//!
//! Layers, each depending only on those below it:
//! - `cli`: the `lockfs` command line;
//! - `client`: sessions and RPC to a cluster, used by the CLI (and the mount);
//! - `server`: a cluster member: network service, transport, the Raft loop;
//! - `state`: the deterministic state machine (the tree), no I/O;
//! - `storage`: RocksDB: the Raft log and the state machine's records;
//! - `proto`: wire messages and framing, shared by clients and servers;
//! - `auth`: certificates and mutual TLS, shared by clients and servers.

pub mod auth;
pub mod cli;
pub mod client;
pub mod encoding;
pub mod errno;
pub mod fs;
#[cfg(test)]
mod fuzz;
pub mod metrics;
pub mod proto;
pub mod server;
pub mod state;
pub mod storage;
#[cfg(test)]
mod testdir;
