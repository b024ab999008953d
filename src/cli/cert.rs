//! `lockfs cert`: make a cluster CA and issue certificates with it.
//!
//! `lockfs cert ca --out DIR` makes the CA; `lockfs cert issue --ca DIR --role ROLE --name NAME
//! [--id N] [--subtree PATH] --out DIR` issues a key and certificate that carry a role and a
//! name (see `crate::auth::identity`). The issued directory is what `--tls-dir` takes.

use std::path::{Path, PathBuf};

use clap::{Subcommand, ValueEnum};

use super::CliError;
use crate::auth::identity::{check_name, check_subtree};
use crate::auth::{certs, Identity, Role};

#[derive(Subcommand)]
pub enum CertCmd {
    /// Make a new cluster CA in DIR (ca.pem, and ca-key.pem, which signs every certificate:
    /// keep it off the cluster's machines).
    Ca {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// A name for the CA, shown in its certificate.
        #[arg(long, default_value = "cluster")]
        name: String,
        /// Days the CA is valid.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Issue a key and certificate signed by the CA, into DIR (ca.pem, cert.pem, key.pem).
    Issue {
        /// The CA's directory (from `lockfs cert ca`).
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        #[arg(long, value_enum)]
        role: RoleArg,
        /// The holder's name: a node's, a host's, an operator's (letters, digits, . - _ @).
        #[arg(long)]
        name: String,
        /// The node id, for --role peer.
        #[arg(long)]
        id: Option<u64>,
        /// Limit a host or reader to this subtree, e.g. /svc/web: it may read and change only
        /// what is below it (and look at the directories on the way there).
        #[arg(long, value_name = "PATH")]
        subtree: Option<String>,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 365)]
        days: u32,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// The roles, as the command line names them.
#[derive(Clone, Copy, ValueEnum)]
pub enum RoleArg {
    /// A cluster member (with --id): the only role that speaks Raft.
    Peer,
    /// Cluster administration: membership, ending other hosts' sessions, and all a host may do.
    Admin,
    /// A host's mounts and CLI: sessions, reads, writes, locks.
    Host,
    /// Reads only.
    Reader,
}

fn failed(e: crate::auth::AuthError) -> CliError {
    CliError::Other(e.to_string())
}

/// The identity the flags describe, checked.
pub fn identity(
    role: RoleArg,
    name: &str,
    id: Option<u64>,
    subtree: Option<&str>,
) -> Result<Identity, CliError> {
    let usage = |e: crate::auth::AuthError| CliError::Usage(e.to_string());
    check_name(name).map_err(usage)?;
    if let Some(s) = subtree {
        check_subtree(s).map_err(usage)?;
    }
    let role = match (role, id) {
        (RoleArg::Peer, Some(0)) => return Err(CliError::Usage("node ids start at 1".into())),
        (RoleArg::Peer, Some(n)) => Role::Peer(n),
        (RoleArg::Peer, None) => return Err(CliError::Usage("--role peer needs --id N".into())),
        (_, Some(_)) => return Err(CliError::Usage("--id is only for --role peer".into())),
        (RoleArg::Admin, None) => Role::Admin,
        (RoleArg::Host, None) => Role::Host,
        (RoleArg::Reader, None) => Role::Reader,
    };
    if subtree.is_some() && !matches!(role, Role::Host | Role::Reader) {
        return Err(CliError::Usage(
            "--subtree is only for --role host or reader".into(),
        ));
    }
    Ok(Identity {
        role,
        name: name.to_string(),
        subtree: subtree.map(str::to_string),
    })
}

pub fn run(cmd: CertCmd) -> Result<(), CliError> {
    match cmd {
        CertCmd::Ca { out, name, days } => {
            check_name(&name).map_err(|e| CliError::Usage(e.to_string()))?;
            certs::make_ca(&out, &name, days).map_err(failed)?;
            println!("made a CA in {}", out.display());
        }
        CertCmd::Issue {
            ca,
            role,
            name,
            id,
            subtree,
            days,
            out,
        } => {
            let identity = identity(role, &name, id, subtree.as_deref())?;
            certs::issue(&ca, &identity, days, &out).map_err(failed)?;
            println!("issued {identity} in {}", out.display());
        }
    }
    Ok(())
}

/// Makes (or reuses) a CA under `dir/ca` and, for each wanted identity, a credentials directory
/// under `dir/NAME` unless one is there: what `lockfs dev` and the benchmarks run with.
pub fn ensure(dir: &Path, wanted: &[(&str, Identity)]) -> Result<(), CliError> {
    let ca = dir.join("ca");
    if !ca.join(certs::CA_CERT).exists() {
        certs::make_ca(&ca, "dev", 3650).map_err(failed)?;
    }
    for (sub, identity) in wanted {
        let out = dir.join(sub);
        if !out.join(certs::CERT).exists() {
            certs::issue(&ca, identity, 3650, &out).map_err(failed)?;
        }
    }
    Ok(())
}
