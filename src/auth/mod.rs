//! Authentication: the cluster CA, certificates that carry a role and a name, and mutual TLS on
//! every connection.
//!
//! - [`certs`] makes a CA and issues certificates (`lockfs cert ca|issue`);
//! - [`identity`] reads the role and name a certificate carries;
//! - [`tls`] wraps a TCP connection in mutual TLS (or, with `--insecure`, leaves it plain).
//!
//! This layer says *who* is on the other end; what they may do is decided by the node that
//! receives each request (`server::authz`). It depends on nothing else in lockfs.

pub mod certs;
pub mod identity;
pub mod tls;

pub use identity::{Identity, Role};
pub use tls::{refuse_handshake, Accepted, Expect, Stream, Tls};

/// Why credentials could not be made, loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("bad certificate: {0}")]
    BadCertificate(String),
    #[error("{0}")]
    Tls(String),
}
