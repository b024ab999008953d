//! Mutual TLS on every connection, peers and clients alike, with rustls (TLS 1.3 only).
//!
//! Both sides present a certificate signed by the cluster CA and verify the other's:
//! - a node (the TLS server) requires a client certificate from the CA and learns the dialer's
//!   [`Identity`] from it; what that identity may do is the node's decision, made per request;
//! - a dialer (a client, or a node dialing a peer) accepts only a `peer` certificate from the
//!   CA, and when it dials a particular node, only that node's id. Host names are not checked:
//!   the CA is the cluster's own and signs nothing else, and members are often reached by IP.
//!
//! With [`Tls::Off`] (`--insecure`), connections are plain TCP and nobody is authenticated;
//! the node treats every dialer as trusted, so that mode is only for loopback. A node tells a
//! plain-TCP dialer apart from a TLS one by the first byte (a TLS handshake record is 0x16, a
//! lockfs frame starts with a length below 64 KiB), so each side can say what went wrong.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::certs::{CA_CERT, CERT, KEY};
use super::identity::{Identity, Role};
use super::AuthError;

/// A byte stream to the other side, plain or encrypted.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub type Stream = Box<dyn Io>;

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// How this process connects: with its credentials, or (`--insecure`) in plain TCP.
#[derive(Clone)]
pub enum Tls {
    On(Arc<CredentialDir>),
    Off,
}

/// A credentials directory, read again for each new connection when its files changed: a
/// certificate is rotated by replacing the files, without a restart (connections already up
/// keep the session they made). A new certificate must carry the same identity as the one it
/// replaces, since sessions belong to identities; one that does not is refused with a warning,
/// as is one that does not load, and the old one stays in use.
pub struct CredentialDir {
    dir: PathBuf,
    current: Mutex<(Stamp, Arc<Credentials>)>,
}

/// What tells that a credential file changed: (modification time, inode, size) of each.
type Stamp = [Option<(SystemTime, u64, u64)>; 3];

fn stamp(dir: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    [CA_CERT, CERT, KEY].map(|name| {
        let m = std::fs::metadata(dir.join(name)).ok()?;
        Some((m.modified().ok()?, m.ino(), m.len()))
    })
}

impl CredentialDir {
    fn open(dir: &Path) -> Result<CredentialDir, AuthError> {
        let stamp = stamp(dir);
        let creds = Credentials::load(dir)?;
        Ok(CredentialDir {
            dir: dir.to_path_buf(),
            current: Mutex::new((stamp, Arc::new(creds))),
        })
    }

    /// The credentials to use for a new connection.
    fn current(&self) -> Arc<Credentials> {
        let now = stamp(&self.dir);
        let mut current = self.current.lock().expect("credentials poisoned");
        if current.0 != now {
            current.0 = now;
            match Credentials::load(&self.dir) {
                Ok(creds) if creds.identity == current.1.identity => {
                    log::info!(
                        "{}: new credentials loaded for {}",
                        self.dir.display(),
                        creds.identity
                    );
                    current.1 = Arc::new(creds);
                }
                Ok(creds) => log::warn!(
                    "{}: the new certificate is for {}, not {}; keeping the old one",
                    self.dir.display(),
                    creds.identity,
                    current.1.identity
                ),
                Err(e) => log::warn!(
                    "{}: keeping the credentials loaded before: {e}",
                    self.dir.display()
                ),
            }
        }
        current.1.clone()
    }
}

/// Which server certificate a dialer accepts.
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    /// Any member of the cluster (clients).
    AnyPeer,
    /// Exactly this node (a peer link).
    Peer(u64),
}

/// One process's TLS material: its identity, its key and certificate, and the CA.
pub struct Credentials {
    pub identity: Identity,
    provider: Arc<CryptoProvider>,
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

/// What a node's listener got.
pub enum Accepted {
    /// A verified TLS connection from `identity`.
    Tls(Stream, Identity),
    /// A plain-TCP connection: trusted on an `--insecure` node, to be refused otherwise.
    Plain(Stream),
    /// A TLS handshake on an `--insecure` node, which cannot answer it (see
    /// [`refuse_handshake`]).
    UnexpectedTls(Stream),
}

/// Answers a TLS handshake that this node cannot take with a fatal `handshake_failure` alert,
/// in the clear as TLS allows before any keys exist, so the dialer fails at once and says so
/// instead of waiting or retrying.
pub async fn refuse_handshake(stream: &mut Stream) {
    use tokio::io::AsyncWriteExt;
    const ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28];
    let _ = stream.write_all(&ALERT).await;
    let _ = stream.shutdown().await;
}

fn tls_error(what: &str) -> impl Fn(rustls::Error) -> AuthError + '_ {
    move |e| AuthError::Tls(format!("{what}: {e}"))
}

impl Tls {
    /// The credentials in `dir` (`ca.pem`, `cert.pem`, `key.pem`), or plain TCP when
    /// `insecure`. Exactly one of the two must be given.
    pub fn load(dir: Option<&Path>, insecure: bool) -> Result<Tls, AuthError> {
        match (dir, insecure) {
            (Some(_), true) => Err(AuthError::Usage(
                "give either a TLS directory or --insecure, not both".into(),
            )),
            (None, true) => Ok(Tls::Off),
            (Some(dir), false) => Ok(Tls::On(Arc::new(CredentialDir::open(dir)?))),
            (None, false) => Err(AuthError::Usage(
                "no TLS credentials: give --tls-dir DIR (or LOCKFS_TLS_DIR) holding ca.pem, \
                 cert.pem and key.pem from `lockfs cert issue`; plain TCP needs --insecure \
                 on every node and client"
                    .into(),
            )),
        }
    }

    /// This process's own identity, when it has one.
    pub fn identity(&self) -> Option<Identity> {
        match self {
            Tls::On(dir) => Some(dir.current().identity.clone()),
            Tls::Off => None,
        }
    }

    /// The dialer's side of a new connection: a verified TLS session with a server that
    /// `expect` allows, or the plain stream.
    pub async fn connect(&self, stream: TcpStream, expect: Expect) -> Result<Stream, AuthError> {
        let Tls::On(dir) = self else {
            return Ok(Box::new(stream));
        };
        let creds = dir.current();
        let config = match expect {
            Expect::AnyPeer => creds.client.clone(),
            Expect::Peer(_) => Arc::new(client_config(
                &creds.provider,
                &creds.roots,
                &creds.chain,
                &creds.key,
                expect,
            )?),
        };
        let name = ServerName::try_from("lockfs").expect("a valid DNS name");
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, stream)
            .await
            .map_err(|e| match e.kind() {
                // What rustls refused (a certificate, an alert, not TLS at all).
                std::io::ErrorKind::InvalidData => AuthError::Tls(format!(
                    "TLS handshake failed: {e} (is the node running with the same CA, and not \
                     with --insecure?)"
                )),
                _ => AuthError::Io("TLS handshake".into(), e),
            })?;
        Ok(Box::new(tls))
    }

    /// The node's side of a new connection. The caller bounds how long this may take.
    pub async fn accept(&self, stream: TcpStream) -> Result<Accepted, AuthError> {
        let mut first = [0u8; 1];
        let n = stream
            .peek(&mut first)
            .await
            .map_err(|e| AuthError::Io("reading a new connection".into(), e))?;
        let is_tls = n == 1 && first[0] == TLS_HANDSHAKE;
        let creds = match (self, is_tls) {
            (Tls::Off, false) | (Tls::On(_), false) => {
                return Ok(Accepted::Plain(Box::new(stream)))
            }
            (Tls::Off, true) => return Ok(Accepted::UnexpectedTls(Box::new(stream))),
            (Tls::On(dir), true) => dir.current(),
        };
        let tls = tokio_rustls::TlsAcceptor::from(creds.server.clone())
            .accept(stream)
            .await
            .map_err(|e| AuthError::Tls(format!("TLS handshake failed: {e}")))?;
        let der = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or_else(|| AuthError::Tls("the client sent no certificate".into()))?;
        let identity = Identity::from_der(der)?;
        Ok(Accepted::Tls(Box::new(tls), identity))
    }
}

impl Credentials {
    /// Loads and checks the credentials in `dir`.
    pub fn load(dir: &Path) -> Result<Credentials, AuthError> {
        let pem = |name: &str| dir.join(name);
        let certs = |path: &Path| -> Result<Vec<CertificateDer<'static>>, AuthError> {
            let bad = |e: rustls::pki_types::pem::Error| {
                AuthError::BadCertificate(format!("{}: {e}", path.display()))
            };
            let list = CertificateDer::pem_file_iter(path)
                .map_err(bad)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(bad)?;
            if list.is_empty() {
                return Err(AuthError::BadCertificate(format!(
                    "{}: no certificate in it",
                    path.display()
                )));
            }
            Ok(list)
        };
        let mut roots = RootCertStore::empty();
        for ca in certs(&pem(CA_CERT))? {
            roots.add(ca).map_err(|e| {
                AuthError::BadCertificate(format!("{}: {e}", pem(CA_CERT).display()))
            })?;
        }
        let chain = certs(&pem(CERT))?;
        let key = PrivateKeyDer::from_pem_file(pem(KEY))
            .map_err(|e| AuthError::BadCertificate(format!("{}: {e}", pem(KEY).display())))?;
        let identity = Identity::from_der(&chain[0])
            .map_err(|e| AuthError::BadCertificate(format!("{}: {e}", pem(CERT).display())))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(roots);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| AuthError::Tls(format!("building the client verifier: {e}")))?;
        // Our own certificate must be one the other side will accept (every lockfs certificate
        // is a client's; peers' serve too, which their dialers check).
        verifier
            .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
            .map_err(|e| {
                AuthError::BadCertificate(format!(
                    "{} is not valid under {}: {e}",
                    pem(CERT).display(),
                    pem(CA_CERT).display()
                ))
            })?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error("configuring TLS"))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(tls_error("loading the certificate"))?;
        let client = client_config(&provider, &roots, &chain, &key, Expect::AnyPeer)?;
        Ok(Credentials {
            identity,
            provider,
            roots,
            chain,
            key,
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }
}

/// A dialer's configuration: our certificate, and a verifier that accepts what `expect` says.
fn client_config(
    provider: &Arc<CryptoProvider>,
    roots: &Arc<RootCertStore>,
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
    expect: Expect,
) -> Result<ClientConfig, AuthError> {
    let verifier = PeerVerifier {
        provider: provider.clone(),
        roots: roots.clone(),
        expect,
    };
    ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error("configuring TLS"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(chain.to_vec(), key.clone_key())
        .map_err(tls_error("loading the certificate"))
}

/// Accepts a server certificate from the cluster CA that names a peer (`expect` says which).
#[derive(Debug)]
struct PeerVerifier {
    provider: Arc<CryptoProvider>,
    roots: Arc<RootCertStore>,
    expect: Expect,
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        let id = Identity::from_der(end_entity)
            .map_err(|e| rustls::Error::General(format!("server certificate: {e}")))?;
        match (&id.role, self.expect) {
            (Role::Peer(_), Expect::AnyPeer) => Ok(ServerCertVerified::assertion()),
            (Role::Peer(n), Expect::Peer(want)) if *n == want => {
                Ok(ServerCertVerified::assertion())
            }
            (_, Expect::Peer(want)) => Err(rustls::Error::General(format!(
                "the server presented the certificate of {id}, not of node {want}"
            ))),
            (_, Expect::AnyPeer) => Err(rustls::Error::General(format!(
                "the server presented the certificate of {id}, not of a cluster member"
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
