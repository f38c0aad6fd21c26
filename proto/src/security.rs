//! Encryption and authentication of the coordinator–worker link.
//!
//! Two independent layers, each off unless configured:
//!
//! - TLS (rustls with the ring provider, through tonic): the coordinator
//!   presents a certificate that each worker verifies against a CA file and a
//!   host name. With a client CA the coordinator also requires a client
//!   certificate from every worker and verifies it (mutual TLS).
//! - A shared-secret token that every worker sends on every call as
//!   `authorization: Bearer <token>` metadata. The coordinator compares it in
//!   constant time ([`RequireToken`]) and rejects a call without the right
//!   token with `Unauthenticated`. Without TLS the token crosses the network
//!   in clear text.
//!
//! The token comes from `--token-file` or the [`TOKEN_ENV`] environment
//! variable. [`SecretToken`] has a redacting `Debug`, no `Display`, and
//! serializes as a flag saying whether a token is set, so the value stays out
//! of logs, `config.json` and the settings a worker sends at registration.
//!
//! Every file is read and checked when the configuration is built: a missing
//! file, a file without the expected PEM block, and a private key that does
//! not match its certificate are errors that name the file.

use rustls::crypto::ring::default_provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, RootCertStore};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tonic::metadata::{Ascii, MetadataMap, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use tonic::{Request, Status};
use tracing::warn;

/// Environment variable that contains the token when `--token-file` is
/// not given.
pub const TOKEN_ENV: &str = "ADMM_TOKEN";

/// gRPC metadata key that carries the token.
const AUTHORIZATION: &str = "authorization";

/// Authentication scheme of the authorization metadata (RFC 6750), whose
/// name is compared case-insensitively.
const BEARER: &str = "Bearer";

/// Maximum duration of a TLS handshake on either side, so that a connection
/// that stalls mid-handshake cannot hold a slot forever.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Number of rejected calls that are each logged. After these, only every
/// [`REJECTION_LOG_INTERVAL`]-th one is, so a misbehaving peer cannot flood
/// the log.
const REJECTIONS_LOGGED_IN_FULL: u64 = 20;
const REJECTION_LOG_INTERVAL: u64 = 1000;

/// An invalid security option or file.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// A file could not be read.
    #[error("failed to read the {role} {}", path.display())]
    Read {
        /// Role of the file, such as "TLS certificate".
        role: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file has no PEM block of the expected kind, or a broken one.
    #[error("the {role} {} is not PEM with a {block} block: {reason}", path.display())]
    NotPem {
        /// Role of the file.
        role: &'static str,
        /// The file.
        path: PathBuf,
        /// The expected PEM block, such as "CERTIFICATE".
        block: &'static str,
        /// The PEM parser's error.
        reason: String,
    },
    /// A certificate file parses as PEM but its content is unusable.
    #[error("the {role} {} is invalid: {reason}", path.display())]
    InvalidCertificate {
        /// Role of the file.
        role: &'static str,
        /// The file.
        path: PathBuf,
        /// The parser's reason.
        reason: String,
    },
    /// A private key of an unsupported type or encoding.
    #[error("the TLS private key {} is not usable: {reason}", path.display())]
    InvalidKey {
        /// The file.
        path: PathBuf,
        /// The rustls error.
        reason: String,
    },
    /// A private key that belongs to another certificate.
    #[error(
        "the TLS private key {} does not match the certificate {}",
        key.display(),
        cert.display()
    )]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// A host name that cannot be checked against a certificate.
    #[error("--tls-domain {domain:?} is not a valid DNS name or IP address")]
    InvalidDomain {
        /// The rejected name.
        domain: String,
    },
    /// An empty token.
    #[error("the token from {origin} is empty")]
    EmptyToken {
        /// Source of the token, such as "token file /etc/admm/token".
        origin: String,
    },
    /// A token that cannot travel as gRPC metadata.
    #[error(
        "the token from {origin} may contain only printable ASCII characters without \
         spaces, because it travels in gRPC metadata"
    )]
    InvalidToken {
        /// Source of the token.
        origin: String,
    },
    /// tonic rejected a TLS configuration.
    #[error("TLS set-up failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// A shared secret that authenticates workers to the coordinator.
///
/// It never prints its value: `Debug` shows `<redacted>`, there is no
/// `Display`, and the configuration structs serialize only whether a token
/// is set.
#[derive(Clone)]
pub struct SecretToken {
    value: Arc<str>,
    /// The `Bearer <token>` metadata value, marked sensitive so that HPACK
    /// never stores it in its header table.
    header: MetadataValue<Ascii>,
}

impl SecretToken {
    /// Builds a token from `text` with surrounding whitespace removed.
    /// `origin` names the source in errors.
    pub fn new(text: &str, origin: &str) -> Result<Self, SecurityError> {
        let value = text.trim();
        if value.is_empty() {
            return Err(SecurityError::EmptyToken {
                origin: origin.to_string(),
            });
        }
        // The token follows "Bearer " in an HTTP/2 header, so it must be
        // visible ASCII without spaces.
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(SecurityError::InvalidToken {
                origin: origin.to_string(),
            });
        }
        let mut header: MetadataValue<Ascii> =
            format!("{BEARER} {value}")
                .parse()
                .map_err(|_| SecurityError::InvalidToken {
                    origin: origin.to_string(),
                })?;
        header.set_sensitive(true);
        Ok(Self {
            value: value.into(),
            header,
        })
    }

    /// Compares `presented` with this token in time that depends only on
    /// the lengths, not on where the bytes first differ.
    ///
    /// NOTE: a length mismatch returns early, so the timing can reveal the
    /// token's length but none of its content.
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.value.as_bytes().ct_eq(presented).into()
    }
}

impl fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretToken(<redacted>)")
    }
}

impl PartialEq for SecretToken {
    fn eq(&self, other: &Self) -> bool {
        self.matches(other.value.as_bytes())
    }
}

/// Serializes an optional token as `true` or `false`, never its value.
fn serialize_token_set<S: Serializer>(
    token: &Option<SecretToken>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_bool(token.is_some())
}

/// Loads the token from `token_file` (its content, trimmed), else from the
/// [`TOKEN_ENV`] environment variable, or returns `None` when neither is set.
pub fn load_token(token_file: Option<&Path>) -> Result<Option<SecretToken>, SecurityError> {
    token_from(token_file, std::env::var_os(TOKEN_ENV))
}

/// [`load_token`] with the environment value passed in, for tests.
fn token_from(
    token_file: Option<&Path>,
    env_value: Option<std::ffi::OsString>,
) -> Result<Option<SecretToken>, SecurityError> {
    if let Some(path) = token_file {
        let origin = format!("token file {}", path.display());
        let bytes = read_file("token file", path)?;
        // The UTF-8 error would quote bytes of the token, so it is dropped.
        let text = String::from_utf8(bytes).map_err(|_| SecurityError::InvalidToken {
            origin: origin.clone(),
        })?;
        return SecretToken::new(&text, &origin).map(Some);
    }
    let Some(value) = env_value else {
        return Ok(None);
    };
    let text = value
        .into_string()
        .map_err(|_| SecurityError::InvalidToken {
            origin: TOKEN_ENV.to_string(),
        })?;
    SecretToken::new(&text, TOKEN_ENV).map(Some)
}

/// A certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key of the leaf (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl CertificateFiles {
    /// Reads both files and checks that the key belongs to the certificate.
    fn load_identity(&self) -> Result<Identity, SecurityError> {
        let (cert_pem, chain) = read_certificates("TLS certificate", &self.cert)?;
        let key_pem = read_file("TLS private key", &self.key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| SecurityError::NotPem {
            role: "TLS private key",
            path: self.key.clone(),
            block: "PRIVATE KEY",
            reason: e.to_string(),
        })?;
        let signing_key = default_provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| SecurityError::InvalidKey {
                path: self.key.clone(),
                reason: e.to_string(),
            })?;
        match CertifiedKey::new(chain, signing_key).keys_match() {
            // Unknown: the key type cannot report its public key, so rustls
            // cannot compare; the handshake still fails on a mismatch.
            Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
            Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
                return Err(SecurityError::KeyMismatch {
                    cert: self.cert.clone(),
                    key: self.key.clone(),
                });
            }
            Err(e) => {
                return Err(SecurityError::InvalidCertificate {
                    role: "TLS certificate",
                    path: self.cert.clone(),
                    reason: e.to_string(),
                });
            }
        }
        Ok(Identity::from_pem(cert_pem, key_pem))
    }
}

fn read_file(role: &'static str, path: &Path) -> Result<Vec<u8>, SecurityError> {
    std::fs::read(path).map_err(|source| SecurityError::Read {
        role,
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a PEM file and parses every CERTIFICATE block in it. Returns the
/// file's bytes and the parsed certificates (at least one).
fn read_certificates(
    role: &'static str,
    path: &Path,
) -> Result<(Vec<u8>, Vec<CertificateDer<'static>>), SecurityError> {
    let pem = read_file(role, path)?;
    let not_pem = |reason: String| SecurityError::NotPem {
        role,
        path: path.to_path_buf(),
        block: "CERTIFICATE",
        reason,
    };
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| not_pem(e.to_string()))?;
    if certificates.is_empty() {
        return Err(not_pem("no CERTIFICATE block found".into()));
    }
    Ok((pem, certificates))
}

/// Reads a PEM file of CA certificates and checks that at least one of them
/// can serve as a trust anchor.
fn read_trust_anchors(role: &'static str, path: &Path) -> Result<Certificate, SecurityError> {
    let (pem, certificates) = read_certificates(role, path)?;
    let count = certificates.len();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(SecurityError::InvalidCertificate {
            role,
            path: path.to_path_buf(),
            reason: format!("none of its {count} certificates parses as an X.509 trust anchor"),
        });
    }
    Ok(Certificate::from_pem(pem))
}

/// The coordinator's security options on the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct ServerSecurityArgs {
    /// PEM certificate chain the coordinator presents; turns TLS on.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates that worker certificates must chain to; with it,
    /// every worker must present a client certificate (mutual TLS).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// File whose content (trimmed) is the token every worker must present
    /// [default: the ADMM_TOKEN environment variable; without either, any
    /// worker may connect].
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
}

/// The coordinator's TLS and token settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerSecurity {
    /// TLS files, or `None` to serve plain-text HTTP/2.
    pub tls: Option<ServerTlsFiles>,
    /// Token every call must carry, or `None` to accept calls without one.
    /// `config.json` records only whether it is set.
    #[serde(
        rename = "token_set",
        serialize_with = "serialize_token_set",
        skip_deserializing
    )]
    pub token: Option<SecretToken>,
}

/// The coordinator's TLS files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerTlsFiles {
    /// The certificate the coordinator presents, and its key.
    #[serde(flatten)]
    pub identity: CertificateFiles,
    /// CA certificates that client certificates must chain to. `Some` turns
    /// mutual TLS on.
    pub client_ca: Option<PathBuf>,
}

impl ServerSecurityArgs {
    /// Loads the token and checks the TLS files.
    pub fn resolve(&self) -> Result<ServerSecurity, SecurityError> {
        // clap enforces the pairs, and a struct built in code without them
        // leaves TLS off.
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(ServerTlsFiles {
                identity: CertificateFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                },
                client_ca: self.tls_client_ca.clone(),
            }),
            _ => None,
        };
        let security = ServerSecurity {
            tls,
            token: load_token(self.token_file.as_deref())?,
        };
        security.validate()?;
        Ok(security)
    }
}

impl ServerSecurity {
    /// Reads and checks every TLS file.
    pub fn validate(&self) -> Result<(), SecurityError> {
        self.tls_config().map(drop)
    }

    /// Builds tonic's TLS configuration from the files, or returns `None`
    /// when TLS is off.
    pub fn tls_config(&self) -> Result<Option<ServerTlsConfig>, SecurityError> {
        let Some(tls) = &self.tls else {
            return Ok(None);
        };
        let mut config = ServerTlsConfig::new()
            .identity(tls.identity.load_identity()?)
            .timeout(TLS_HANDSHAKE_TIMEOUT);
        if let Some(client_ca) = &tls.client_ca {
            config = config.client_ca_root(read_trust_anchors("client CA certificate", client_ca)?);
        }
        Ok(Some(config))
    }

    /// Creates the interceptor that checks each call's token.
    pub fn require_token(&self) -> RequireToken {
        RequireToken {
            expected: self.token.clone().map(Arc::new),
            rejected_calls: Arc::default(),
        }
    }
}

/// The worker's security options on the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct ClientSecurityArgs {
    /// PEM CA certificates to verify the coordinator's certificate against;
    /// turns TLS on, and the worker connects with https://.
    #[arg(long, value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// Host name the coordinator's certificate must be valid for [default:
    /// the host of --coordinator].
    #[arg(long, value_name = "HOST", requires = "tls_ca")]
    pub tls_domain: Option<String>,
    /// PEM client certificate for mutual TLS.
    #[arg(long, value_name = "PEM", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// File whose content (trimmed) is the token to present to the
    /// coordinator [default: the ADMM_TOKEN environment variable].
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
}

/// The worker's TLS and token settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientSecurity {
    /// TLS settings, or `None` to connect with plain-text HTTP/2.
    pub tls: Option<ClientTlsFiles>,
    /// Token sent on every call. The settings the worker reports record only
    /// whether it is set.
    #[serde(
        rename = "token_set",
        serialize_with = "serialize_token_set",
        skip_deserializing
    )]
    pub token: Option<SecretToken>,
}

/// The worker's TLS settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientTlsFiles {
    /// CA certificates the coordinator's certificate must chain to.
    pub ca: PathBuf,
    /// Host name to verify, or `None` for the host of the coordinator URL.
    pub domain: Option<String>,
    /// Client certificate and key for mutual TLS.
    pub identity: Option<CertificateFiles>,
}

impl ClientSecurityArgs {
    /// Loads the token and checks the TLS files.
    pub fn resolve(&self) -> Result<ClientSecurity, SecurityError> {
        let tls = self.tls_ca.as_ref().map(|ca| ClientTlsFiles {
            ca: ca.clone(),
            domain: self.tls_domain.clone(),
            identity: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(CertificateFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                _ => None,
            },
        });
        let security = ClientSecurity {
            tls,
            token: load_token(self.token_file.as_deref())?,
        };
        security.validate()?;
        Ok(security)
    }
}

impl ClientSecurity {
    /// Reads and checks every TLS file and the host name.
    pub fn validate(&self) -> Result<(), SecurityError> {
        self.tls_config().map(drop)
    }

    /// Builds tonic's TLS configuration, or returns `None` when TLS is off.
    pub fn tls_config(&self) -> Result<Option<ClientTlsConfig>, SecurityError> {
        let Some(tls) = &self.tls else {
            return Ok(None);
        };
        let mut config = ClientTlsConfig::new()
            .ca_certificate(read_trust_anchors("CA certificate", &tls.ca)?)
            .timeout(TLS_HANDSHAKE_TIMEOUT);
        if let Some(domain) = &tls.domain {
            if ServerName::try_from(domain.as_str()).is_err() {
                return Err(SecurityError::InvalidDomain {
                    domain: domain.clone(),
                });
            }
            config = config.domain_name(domain.clone());
        }
        if let Some(identity) = &tls.identity {
            config = config.identity(identity.load_identity()?);
        }
        Ok(Some(config))
    }

    /// Creates the interceptor that adds the token to each call.
    pub fn attach_token(&self) -> AttachToken {
        AttachToken {
            token: self.token.clone(),
        }
    }
}

/// Client interceptor that adds `authorization: Bearer <token>` to every
/// call, or nothing when no token is set.
#[derive(Debug, Clone, Default)]
pub struct AttachToken {
    token: Option<SecretToken>,
}

impl Interceptor for AttachToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert(AUTHORIZATION, token.header.clone());
        }
        Ok(request)
    }
}

/// Server interceptor that rejects, with `Unauthenticated`, every call
/// whose token is missing or wrong. It lets every call through when no
/// token is set.
#[derive(Debug, Clone, Default)]
pub struct RequireToken {
    expected: Option<Arc<SecretToken>>,
    rejected_calls: Arc<AtomicU64>,
}

/// Reason for rejecting a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rejection {
    /// No authorization metadata.
    Missing,
    /// Authorization metadata that is not `Bearer <token>`.
    Malformed,
    /// A token that differs from the expected one.
    Wrong,
}

impl Rejection {
    fn reason(self) -> &'static str {
        match self {
            Rejection::Missing => "missing",
            Rejection::Malformed => "malformed",
            Rejection::Wrong => "wrong",
        }
    }

    /// Builds the status the peer receives, which never quotes what the peer
    /// sent.
    fn status(self) -> Status {
        let message = match self {
            Rejection::Missing => {
                "missing authentication token: the coordinator requires one; \
                 give the worker --token-file or ADMM_TOKEN"
            }
            Rejection::Malformed => {
                "missing authentication token: the authorization metadata is not \
                 of the form \"Bearer <token>\""
            }
            Rejection::Wrong => {
                "wrong authentication token: it does not match the coordinator's \
                 --token-file or ADMM_TOKEN"
            }
        };
        Status::unauthenticated(message)
    }
}

impl RequireToken {
    /// Checks the authorization metadata against `expected`.
    fn check(expected: &SecretToken, metadata: &MetadataMap) -> Result<(), Rejection> {
        let Some(value) = metadata.get(AUTHORIZATION) else {
            return Err(Rejection::Missing);
        };
        let bytes = value.as_encoded_bytes();
        let scheme_len = BEARER.len();
        let has_scheme = bytes.len() > scheme_len
            && bytes[..scheme_len].eq_ignore_ascii_case(BEARER.as_bytes())
            && bytes[scheme_len] == b' ';
        if !has_scheme {
            return Err(Rejection::Malformed);
        }
        if expected.matches(&bytes[scheme_len + 1..]) {
            Ok(())
        } else {
            Err(Rejection::Wrong)
        }
    }

    /// Logs a rejection: each of the first few, then one in
    /// [`REJECTION_LOG_INTERVAL`], with the running count.
    fn log(&self, rejection: Rejection, peer: Option<SocketAddr>) {
        let count = self.rejected_calls.fetch_add(1, Ordering::Relaxed) + 1;
        // `u64::is_multiple_of` needs Rust 1.87, but the workspace supports 1.85.
        #[allow(clippy::manual_is_multiple_of)]
        let sampled = count % REJECTION_LOG_INTERVAL == 0;
        if count <= REJECTIONS_LOGGED_IN_FULL || sampled {
            // The worker id travels in the message body, which is not
            // decoded yet, so the peer address identifies the caller.
            let peer = peer.map_or_else(|| "unknown".to_string(), |a| a.to_string());
            warn!(
                %peer,
                reason = rejection.reason(),
                rejected_calls = count,
                "rejected a call without a valid token"
            );
        }
    }
}

impl Interceptor for RequireToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.expected else {
            return Ok(request);
        };
        match Self::check(expected, request.metadata()) {
            Ok(()) => Ok(request),
            Err(rejection) => {
                self.log(rejection, request.remote_addr());
                Err(rejection.status())
            }
        }
    }
}

/// Returns whether `host` (from a URL, IPv6 in brackets) names this machine,
/// so that plain text to it never crosses a network.
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Returns the rustls error behind a connection failure, if any: a failed
/// handshake (untrusted certificate, wrong host name, a peer that does not
/// speak TLS) that retrying cannot fix.
pub fn find_tls_error<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // tokio-rustls wraps the rustls error in an io::Error, whose
        // `source()` skips the wrapped error itself.
        if let Some(tls) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};
    use std::ffi::OsString;

    const TOKEN: &str = "s3cret-token";

    fn token() -> SecretToken {
        SecretToken::new(TOKEN, "test").expect("valid token")
    }

    fn metadata_with(value: &str) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        metadata.insert(AUTHORIZATION, value.parse().expect("ASCII value"));
        metadata
    }

    /// Writes a self-signed certificate for localhost and its key, and
    /// returns the key of a second, unrelated pair.
    fn write_certificate(dir: &Path) -> (CertificateFiles, PathBuf) {
        let key = KeyPair::generate().expect("key generation");
        let cert = CertificateParams::new(vec!["localhost".to_string()])
            .expect("valid name")
            .self_signed(&key)
            .expect("self-signed certificate");
        let files = CertificateFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write certificate");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        let other_key = dir.join("other-key.pem");
        let other = KeyPair::generate().expect("key generation");
        std::fs::write(&other_key, other.serialize_pem()).expect("write key");
        (files, other_key)
    }

    #[test]
    fn token_is_trimmed() {
        let token = SecretToken::new("  abc\n", "test").expect("valid token");
        assert!(token.matches(b"abc"));
        assert!(!token.matches(b"  abc\n"));
    }

    #[test]
    fn token_rejects_empty_and_spaces() {
        let empty = SecretToken::new(" \n", "test").expect_err("empty token");
        assert!(empty.to_string().contains("is empty"), "{empty}");
        let spaced = SecretToken::new("a b", "test").expect_err("token with a space");
        assert!(spaced.to_string().contains("printable ASCII"), "{spaced}");
        let unicode = SecretToken::new("é", "test").expect_err("non-ASCII token");
        assert!(matches!(unicode, SecurityError::InvalidToken { .. }));
    }

    #[test]
    fn token_debug_is_redacted() {
        let debug = format!("{:?}", token());
        assert!(!debug.contains(TOKEN), "{debug}");
        let security = ServerSecurity {
            tls: None,
            token: Some(token()),
        };
        let debug = format!("{security:?}");
        assert!(!debug.contains(TOKEN), "{debug}");
    }

    #[test]
    fn token_serializes_as_flag() {
        let security = ClientSecurity {
            tls: None,
            token: Some(token()),
        };
        let json = serde_json::to_string(&security).expect("serializable");
        assert!(!json.contains(TOKEN), "{json}");
        assert!(json.contains("\"token_set\":true"), "{json}");
        let back: ClientSecurity = serde_json::from_str(&json).expect("deserializable");
        assert_eq!(back.token, None);
    }

    #[test]
    fn token_file_wins_over_environment() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("token");
        std::fs::write(&path, format!("{TOKEN}\n")).expect("write token");
        let loaded = token_from(Some(&path), Some(OsString::from("from-env")))
            .expect("readable token")
            .expect("token set");
        assert!(loaded.matches(TOKEN.as_bytes()));
        let from_env = token_from(None, Some(OsString::from("from-env")))
            .expect("valid token")
            .expect("token set");
        assert!(from_env.matches(b"from-env"));
        assert_eq!(token_from(None, None).expect("no token").map(drop), None);
    }

    #[test]
    fn missing_token_file_names_path() {
        let error = token_from(Some(Path::new("/nonexistent/token")), None)
            .expect_err("missing token file");
        let message = error.to_string();
        assert!(message.contains("/nonexistent/token"), "{message}");
        assert!(message.contains("token file"), "{message}");
    }

    #[test]
    fn check_accepts_right_token() {
        let expected = token();
        let accepted = RequireToken::check(&expected, &metadata_with(&format!("Bearer {TOKEN}")));
        assert_eq!(accepted, Ok(()));
        let lower = RequireToken::check(&expected, &metadata_with(&format!("bearer {TOKEN}")));
        assert_eq!(lower, Ok(()));
    }

    #[test]
    fn check_rejects_missing_malformed_wrong() {
        let expected = token();
        let cases = [
            (MetadataMap::new(), Rejection::Missing),
            (metadata_with(TOKEN), Rejection::Malformed),
            (
                metadata_with(&format!("Basic {TOKEN}")),
                Rejection::Malformed,
            ),
            (metadata_with("Bearer"), Rejection::Malformed),
            (metadata_with("Bearer wrong"), Rejection::Wrong),
            (metadata_with(&format!("Bearer {TOKEN}x")), Rejection::Wrong),
            (metadata_with(&format!("Bearer  {TOKEN}")), Rejection::Wrong),
        ];
        for (metadata, rejection) in cases {
            assert_eq!(
                RequireToken::check(&expected, &metadata),
                Err(rejection),
                "{metadata:?}"
            );
        }
    }

    #[test]
    fn interceptors_round_trip() {
        let security = ClientSecurity {
            tls: None,
            token: Some(token()),
        };
        let request = security
            .attach_token()
            .call(Request::new(()))
            .expect("attach never fails");
        let server = ServerSecurity {
            tls: None,
            token: Some(token()),
        };
        assert!(server.require_token().call(request).is_ok());
        let status = server
            .require_token()
            .call(Request::new(()))
            .expect_err("no token");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert!(status.message().contains("missing"), "{}", status.message());
    }

    #[test]
    fn loopback_hosts_are_recognized() {
        for host in ["localhost", "LOCALHOST", "127.0.0.1", "127.5.0.1", "[::1]"] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "10.0.0.5",
            "coordinator-host",
            "[2001:db8::1]",
            "localhost.example",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn no_token_lets_calls_through() {
        let mut open = ServerSecurity::default().require_token();
        assert!(open.call(Request::new(())).is_ok());
    }

    #[test]
    fn status_never_quotes_token() {
        for rejection in [Rejection::Missing, Rejection::Malformed, Rejection::Wrong] {
            let status = rejection.status();
            assert_eq!(status.code(), tonic::Code::Unauthenticated);
            assert!(!status.message().contains(TOKEN));
        }
    }

    #[test]
    fn identity_loads_matching_pair() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (files, _) = write_certificate(dir.path());
        assert!(files.load_identity().is_ok());
    }

    #[test]
    fn identity_rejects_mismatched_key() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (files, other_key) = write_certificate(dir.path());
        let mismatched = CertificateFiles {
            cert: files.cert.clone(),
            key: other_key,
        };
        let error = mismatched.load_identity().expect_err("mismatched key");
        assert!(
            matches!(error, SecurityError::KeyMismatch { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("does not match"), "{error}");
    }

    #[test]
    fn identity_rejects_missing_and_non_pem() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (files, _) = write_certificate(dir.path());
        let missing = CertificateFiles {
            cert: dir.path().join("absent.pem"),
            key: files.key.clone(),
        };
        let error = missing.load_identity().expect_err("missing certificate");
        assert!(matches!(error, SecurityError::Read { .. }), "{error}");
        assert!(error.to_string().contains("absent.pem"), "{error}");

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").expect("write file");
        let not_pem = CertificateFiles {
            cert: garbage.clone(),
            key: files.key.clone(),
        };
        let error = not_pem
            .load_identity()
            .expect_err("certificate without PEM");
        assert!(matches!(error, SecurityError::NotPem { .. }), "{error}");
        assert!(error.to_string().contains("garbage.pem"), "{error}");

        let key_is_cert = CertificateFiles {
            cert: files.cert.clone(),
            key: files.cert.clone(),
        };
        let error = key_is_cert
            .load_identity()
            .expect_err("key file without a key");
        assert!(matches!(error, SecurityError::NotPem { .. }), "{error}");
        assert!(error.to_string().contains("PRIVATE KEY"), "{error}");
    }

    #[test]
    fn client_rejects_invalid_domain() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (files, _) = write_certificate(dir.path());
        let security = ClientSecurity {
            tls: Some(ClientTlsFiles {
                ca: files.cert,
                domain: Some("not a host".into()),
                identity: None,
            }),
            token: None,
        };
        let error = security.validate().expect_err("invalid domain");
        assert!(
            matches!(error, SecurityError::InvalidDomain { .. }),
            "{error}"
        );
    }

    #[test]
    fn ca_file_without_certificate_is_rejected() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (files, _) = write_certificate(dir.path());
        let security = ServerSecurity {
            tls: Some(ServerTlsFiles {
                identity: files.clone(),
                client_ca: Some(files.key.clone()),
            }),
            token: None,
        };
        let error = security.validate().expect_err("CA file holds a key");
        assert!(matches!(error, SecurityError::NotPem { .. }), "{error}");
        assert!(
            error.to_string().contains("client CA certificate"),
            "{error}"
        );
    }
}
