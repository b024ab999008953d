//! Authorization: what the authenticated party on a connection may ask of this node.
//!
//! Checked by the node that receives a request, before anything reaches the Raft log:
//! - only a `peer` whose certificate names node N may speak Raft as node N;
//! - membership changes need `admin`, except that a `peer` may ask to add itself (`serve
//!   --join` with the certificate the CA issued for that node id);
//! - `host` and `admin` may open sessions, read and write the tree and take locks;
//! - `reader` may open sessions (to keep a read-only mount alive), open files without creating
//!   them and read, but never change the tree or take a lock;
//! - a `peer` certificate is for cluster work only: it may ask for the cluster's status and
//!   nothing else of the tree.
//!
//! A connection on an `--insecure` node is trusted with everything: that mode is for loopback.
//!
//! Sessions belong to their opener: `OpenSession` is stamped here with the caller's identity
//! (and the session's host with the caller's certified name, whatever the client said), the
//! leader adds a random secret, and the leader admits a request that uses a session into the
//! log only from that identity and with that secret ([`SessionAuth::admits`]). Only an `admin`
//! may end someone else's session, and needs no secret to do so.

use crate::auth::{Identity, Role};
use crate::state::{Command, SessionAccess};

use super::convert::Action;
use super::membership::MemberOp;
use super::ServerError;

/// errno numbers of refusals.
const EPERM: u32 = 1;
const EACCES: u32 = 13;

/// Who sent a request.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A plain-TCP connection to an `--insecure` node.
    Insecure,
    Verified(Identity),
}

/// How far ahead of the last acknowledged request a session's sequence numbers may run: far
/// more than any client has in flight, small enough that a number never nears overflow.
pub const SEQ_WINDOW: u64 = 1 << 20;

/// What a request shows to use a session.
#[derive(Debug, Clone, Default)]
pub struct SessionAuth {
    /// `role:name` of the connection's identity; empty on an `--insecure` node.
    pub owner: String,
    /// The secret the request carries.
    pub secret: u128,
    /// An administrator may end any session without its secret.
    pub admin: bool,
}

impl SessionAuth {
    /// Whether a request may use the live session `access` describes (ending it when
    /// `ending`); the message says why not.
    pub fn admits(&self, id: u64, access: &SessionAccess, ending: bool) -> Result<(), ServerError> {
        if ending && self.admin {
            return Ok(());
        }
        if !access.owner.is_empty() && access.owner != self.owner {
            return Err(denied(
                EPERM,
                format!("session {id} belongs to another identity"),
            ));
        }
        // Compared without an early exit on the first differing byte.
        if (access.secret ^ self.secret) != 0 {
            return Err(denied(EPERM, format!("wrong secret for session {id}")));
        }
        Ok(())
    }
}

/// The session-owner string of an identity.
pub fn owner_of(identity: &Identity) -> String {
    format!("{}:{}", identity.role.kind(), identity.name)
}

fn denied(code: u32, message: String) -> ServerError {
    ServerError::Denied { code, message }
}

impl Caller {
    /// What this caller's requests show to use a session carrying `secret`.
    pub fn session_auth(&self, secret: u128) -> SessionAuth {
        match self {
            Caller::Insecure => SessionAuth {
                owner: String::new(),
                secret,
                admin: true,
            },
            Caller::Verified(id) => SessionAuth {
                owner: owner_of(id),
                secret,
                admin: id.role == Role::Admin,
            },
        }
    }

    /// Fills in what only the node may say about a request: who opens a session, and under
    /// which host name it is listed.
    pub fn stamp(&self, action: &mut Action) {
        if let (
            Caller::Verified(id),
            Action::Write {
                command: Command::OpenSession { host, owner, .. },
                ..
            },
        ) = (self, action)
        {
            *owner = owner_of(id);
            *host = id.name.clone();
        }
    }

    /// May this caller speak Raft as node `from`?
    pub fn check_peer(&self, from: u64) -> Result<(), String> {
        match self {
            Caller::Insecure => Ok(()),
            Caller::Verified(Identity {
                role: Role::Peer(id),
                ..
            }) if *id == from => Ok(()),
            Caller::Verified(id) => Err(format!("{id} may not speak Raft as node {from}")),
        }
    }

    /// May this caller make the request that `action` stands for?
    pub fn authorize(&self, action: &Action) -> Result<(), ServerError> {
        let Caller::Verified(who) = self else {
            return Ok(());
        };
        let refuse = |what: &str| denied(EPERM, format!("permission denied: {who} may not {what}"));
        if who.subtree.is_some() {
            // Never serve such a certificate more than it was meant to have.
            return Err(refuse(
                "use the cluster: this node does not enforce subtree-limited certificates",
            ));
        }
        match (&who.role, action) {
            (_, Action::Status) => Ok(()),
            (Role::Admin, _) => Ok(()),
            (Role::Peer(me), Action::Members(MemberOp::Add { id, .. })) if id == me => Ok(()),
            (_, Action::Members(_)) => Err(refuse("change the cluster's membership (needs admin)")),
            (Role::Peer(_), _) => Err(refuse("use the tree (a peer certificate is for nodes)")),
            (Role::Host, _) => Ok(()),
            (Role::Reader, Action::Read(_) | Action::KeepAlive { .. }) => Ok(()),
            (Role::Reader, Action::Write { command, .. }) => match command {
                Command::OpenSession { .. }
                | Command::CloseSession { .. }
                | Command::Open { create: None, .. }
                | Command::Close { .. } => Ok(()),
                _ => Err(denied(
                    EACCES,
                    format!("permission denied: {who} may only read"),
                )),
            },
        }
    }
}
