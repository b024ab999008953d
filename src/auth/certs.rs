//! Making a cluster CA and issuing certificates with it (`lockfs cert`), with rcgen.
//!
//! Files, all PEM: a CA directory holds `ca.pem` and `ca-key.pem`; an issued directory holds
//! `ca.pem` (a copy of the CA certificate, to verify the other side), `cert.pem` and `key.pem`,
//! which is all `--tls-dir` needs. Keys are ECDSA P-256 and written readable by their owner
//! only. Nothing is ever overwritten: issuing into a directory that holds a certificate fails,
//! so a rotation writes a new directory and switches to it.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};

use super::identity::Identity;
use super::AuthError;

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca-key.pem";
pub const CERT: &str = "cert.pem";
pub const KEY: &str = "key.pem";

fn failed(what: &str) -> impl Fn(rcgen::Error) -> AuthError + '_ {
    move |e| AuthError::Usage(format!("{what}: {e}"))
}

fn validity(params: &mut CertificateParams, days: u32) -> Result<(), AuthError> {
    if days == 0 {
        return Err(AuthError::Usage("--days must be at least 1".into()));
    }
    let now = time::OffsetDateTime::now_utc();
    // A little slack for clocks that are slightly behind the issuer's.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days.into());
    Ok(())
}

fn serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // a positive DER integer
    SerialNumber::from_slice(&bytes)
}

/// Writes `contents` to a new file `dir/name` with `mode`; fails if it exists.
fn write_new(dir: &Path, name: &str, contents: &str, mode: u32) -> Result<(), AuthError> {
    let path = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&path)
        .map_err(|e| AuthError::Io(format!("creating {}", path.display()), e))?;
    f.write_all(contents.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| AuthError::Io(format!("writing {}", path.display()), e))
}

fn make_dir(dir: &Path) -> Result<(), AuthError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| AuthError::Io(format!("creating {}", dir.display()), e))
}

pub fn read(path: &Path) -> Result<String, AuthError> {
    std::fs::read_to_string(path)
        .map_err(|e| AuthError::Io(format!("reading {}", path.display()), e))
}

/// Makes a new CA in `out` (created if missing), valid for `days`.
pub fn make_ca(out: &Path, name: &str, days: u32) -> Result<(), AuthError> {
    if out.join(CA_CERT).exists() || out.join(CA_KEY).exists() {
        return Err(AuthError::Usage(format!(
            "{} already holds a CA; choose another directory",
            out.display()
        )));
    }
    make_dir(out)?;
    let key = KeyPair::generate().map_err(failed("generating the CA key"))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "lockfs");
    dn.push(DnType::CommonName, format!("lockfs CA {name}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.serial_number = Some(serial());
    validity(&mut params, days)?;
    let cert = params.self_signed(&key).map_err(failed("signing the CA"))?;
    write_new(out, CA_KEY, &key.serialize_pem(), 0o600)?;
    write_new(out, CA_CERT, &cert.pem(), 0o644)
}

/// Issues a key and certificate for `identity`, signed by the CA in `ca`, into `out` (created
/// if missing), valid for `days`.
pub fn issue(ca: &Path, identity: &Identity, days: u32, out: &Path) -> Result<(), AuthError> {
    if out.join(CERT).exists() || out.join(KEY).exists() {
        return Err(AuthError::Usage(format!(
            "{} already holds a certificate; issue into a new directory",
            out.display()
        )));
    }
    if let Ok(existing) = std::fs::read_to_string(out.join(CA_CERT)) {
        if existing != read(&ca.join(CA_CERT))? {
            return Err(AuthError::Usage(format!(
                "{} holds the certificate of another CA",
                out.join(CA_CERT).display()
            )));
        }
    }
    let ca_pem = read(&ca.join(CA_CERT))?;
    let ca_key =
        KeyPair::from_pem(&read(&ca.join(CA_KEY))?).map_err(failed("reading the CA key"))?;
    let ca_cert = CertificateParams::from_ca_cert_pem(&ca_pem)
        .map_err(failed("reading the CA certificate"))?
        .self_signed(&ca_key)
        .map_err(failed("loading the CA"))?;

    let key = KeyPair::generate().map_err(failed("generating a key"))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "lockfs");
    dn.push(DnType::OrganizationalUnitName, identity.role.kind());
    dn.push(DnType::CommonName, identity.name.clone());
    params.distinguished_name = dn;
    params.subject_alt_names = identity
        .to_uris()
        .into_iter()
        .map(|u| {
            rcgen::Ia5String::try_from(u)
                .map(SanType::URI)
                .map_err(failed("encoding the identity"))
        })
        .collect::<Result<_, _>>()?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Every certificate serves as a client's; peers also serve (and dial each other).
    params.extended_key_usages = match identity.role {
        super::Role::Peer(_) => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        _ => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    params.serial_number = Some(serial());
    validity(&mut params, days)?;
    let cert = params
        .signed_by(&key, &ca_cert, &ca_key)
        .map_err(failed("signing the certificate"))?;
    make_dir(out)?;
    write_new(out, KEY, &key.serialize_pem(), 0o600)?;
    write_new(out, CERT, &cert.pem(), 0o644)?;
    if out.join(CA_CERT).exists() {
        return Ok(());
    }
    write_new(out, CA_CERT, &ca_pem, 0o644)
}
