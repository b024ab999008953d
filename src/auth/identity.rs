//! Who is on the other end of a connection: a role and a name, read from the certificate that
//! the cluster CA signed for it.
//!
//! A lockfs certificate carries its identity in subject-alternative-name URIs, one fact each:
//! `urn:lockfs:role:ROLE`, `urn:lockfs:name:NAME`, and for peers `urn:lockfs:id:N`; a host may
//! also be limited to a subtree with `urn:lockfs:subtree:/PATH`. The CA signs these together
//! with the key, so after a verified handshake they are as trustworthy as the CA. A certificate
//! that names no role, or names a fact twice, is refused rather than guessed at.

use std::fmt;

use super::AuthError;

const URN: &str = "urn:lockfs:";
/// Longest name a certificate may carry (a host name fits).
pub const NAME_MAX: usize = 64;

/// What a certificate's holder may do (checked by the node that receives each request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A cluster member with this node id: the only role that may speak Raft.
    Peer(u64),
    /// Cluster administration: membership, ending other hosts' sessions; also everything a host
    /// may do.
    Admin,
    /// A host's mounts and CLI: sessions, reads, writes, locks.
    Host,
    /// Reads only.
    Reader,
}

impl Role {
    /// The role's name as written on the command line and in a certificate.
    pub fn kind(&self) -> &'static str {
        match self {
            Role::Peer(_) => "peer",
            Role::Admin => "admin",
            Role::Host => "host",
            Role::Reader => "reader",
        }
    }
}

/// An authenticated party.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub role: Role,
    /// The name the CA gave it: a node's, a host's or an operator's name.
    pub name: String,
    /// For a host: the only subtree it may touch (an absolute path).
    pub subtree: Option<String>,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.role {
            Role::Peer(id) => write!(f, "peer '{}' (node {id})", self.name),
            r => write!(f, "{} '{}'", r.kind(), self.name),
        }
    }
}

/// Checks a name for a certificate: 1 to 64 bytes of letters, digits, `.`, `-`, `_` and `@`,
/// so that it can be shown in listings and logs as it is.
pub fn check_name(name: &str) -> Result<(), AuthError> {
    let ok = !name.is_empty()
        && name.len() <= NAME_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(AuthError::Usage(format!(
            "name '{}': use 1 to {NAME_MAX} letters, digits, '.', '-', '_' or '@'",
            name.escape_default()
        )))
    }
}

/// Checks a subtree restriction: an absolute path without empty, `.` or `..` components.
pub fn check_subtree(path: &str) -> Result<(), AuthError> {
    let ok = path.starts_with('/')
        && path.len() <= 4096
        && !path.contains('\0')
        && path[1..]
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if ok || path == "/" {
        Ok(())
    } else {
        Err(AuthError::Usage(format!(
            "subtree '{}': give an absolute path such as /svc/web",
            path.escape_default()
        )))
    }
}

impl Identity {
    /// The subject-alternative-name URIs that carry this identity in a certificate.
    pub fn to_uris(&self) -> Vec<String> {
        let mut uris = vec![
            format!("{URN}role:{}", self.role.kind()),
            format!("{URN}name:{}", self.name),
        ];
        if let Role::Peer(id) = self.role {
            uris.push(format!("{URN}id:{id}"));
        }
        if let Some(s) = &self.subtree {
            uris.push(format!("{URN}subtree:{s}"));
        }
        uris
    }

    /// The identity a certificate's URIs carry; `uris` may hold others, which are ignored.
    pub fn from_uris<'a>(uris: impl IntoIterator<Item = &'a str>) -> Result<Identity, AuthError> {
        let (mut role, mut name, mut id, mut subtree) = (None, None, None, None);
        for uri in uris {
            let Some(fact) = uri.strip_prefix(URN) else {
                continue;
            };
            let (key, value) = fact
                .split_once(':')
                .ok_or_else(|| AuthError::BadCertificate(format!("malformed {uri}")))?;
            let slot = match key {
                "role" => &mut role,
                "name" => &mut name,
                "id" => &mut id,
                "subtree" => &mut subtree,
                _ => return Err(AuthError::BadCertificate(format!("unknown fact {uri}"))),
            };
            if slot.replace(value.to_string()).is_some() {
                return Err(AuthError::BadCertificate(format!("{key} given twice")));
            }
        }
        let bad = AuthError::BadCertificate;
        let name = name.ok_or_else(|| bad("the certificate names no lockfs name".into()))?;
        check_name(&name).map_err(|e| bad(e.to_string()))?;
        let role = match (role.as_deref(), id) {
            (Some("peer"), Some(id)) => match id.parse::<u64>() {
                Ok(n) if n > 0 => Role::Peer(n),
                _ => return Err(bad(format!("node id '{id}' is not a number above 0"))),
            },
            (Some("peer"), None) => return Err(bad("a peer certificate names no node id".into())),
            (Some(_), Some(_)) => return Err(bad("only peer certificates carry a node id".into())),
            (Some("admin"), None) => Role::Admin,
            (Some("host"), None) => Role::Host,
            (Some("reader"), None) => Role::Reader,
            (Some(other), None) => return Err(bad(format!("unknown role '{other}'"))),
            (None, _) => return Err(bad("the certificate names no lockfs role".into())),
        };
        if let Some(s) = &subtree {
            check_subtree(s).map_err(|e| bad(e.to_string()))?;
        }
        Ok(Identity {
            role,
            name,
            subtree,
        })
    }

    /// The identity in a DER certificate (already verified against the CA by the caller).
    pub fn from_der(der: &[u8]) -> Result<Identity, AuthError> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| AuthError::BadCertificate(format!("unreadable certificate: {e}")))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| AuthError::BadCertificate(format!("unreadable alternative names: {e}")))?
            .ok_or_else(|| {
                AuthError::BadCertificate("the certificate carries no lockfs identity".into())
            })?;
        Identity::from_uris(san.value.general_names.iter().filter_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(role: Role, name: &str, subtree: Option<&str>) -> Identity {
        Identity {
            role,
            name: name.into(),
            subtree: subtree.map(str::to_string),
        }
    }

    #[test]
    fn identities_round_trip_through_uris() {
        for i in [
            id(Role::Peer(3), "node-3", None),
            id(Role::Admin, "ops@example", None),
            id(Role::Host, "web1.example.com", Some("/svc/web")),
            id(Role::Reader, "dash_board", None),
        ] {
            let uris = i.to_uris();
            assert_eq!(
                Identity::from_uris(uris.iter().map(String::as_str)).unwrap(),
                i
            );
        }
    }

    #[test]
    fn incomplete_or_contradictory_identities_are_refused() {
        let refused = |uris: &[&str]| Identity::from_uris(uris.iter().copied()).unwrap_err();
        refused(&["urn:lockfs:name:x"]);
        refused(&["urn:lockfs:role:host"]);
        refused(&["urn:lockfs:role:peer", "urn:lockfs:name:x"]);
        refused(&[
            "urn:lockfs:role:peer",
            "urn:lockfs:name:x",
            "urn:lockfs:id:0",
        ]);
        refused(&[
            "urn:lockfs:role:host",
            "urn:lockfs:name:x",
            "urn:lockfs:id:2",
        ]);
        refused(&["urn:lockfs:role:root", "urn:lockfs:name:x"]);
        refused(&[
            "urn:lockfs:role:host",
            "urn:lockfs:role:admin",
            "urn:lockfs:name:x",
        ]);
        refused(&["urn:lockfs:role:host", "urn:lockfs:name:a b"]);
        refused(&[
            "urn:lockfs:role:host",
            "urn:lockfs:name:x",
            "urn:lockfs:subtree:svc",
        ]);
        refused(&[
            "urn:lockfs:role:host",
            "urn:lockfs:name:x",
            "urn:lockfs:subtree:/a/../b",
        ]);
        refused(&[
            "urn:lockfs:role:host",
            "urn:lockfs:name:x",
            "urn:lockfs:color:red",
        ]);
    }

    #[test]
    fn names_are_plain() {
        assert!(check_name("host-1.example.com").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name(&"a".repeat(NAME_MAX + 1)).is_err());
        assert!(check_name("a\nb").is_err());
        assert!(check_name("a:b").is_err());
    }
}
