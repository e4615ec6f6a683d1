//! The enrolling node's side: key and CSR made locally, certificate fetched over TLS that is
//! anchored in the pinned CA, renewal over mutual TLS.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rcgen::{KeyPair, PublicKeyData};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use zeroize::Zeroizing;

use super::pin::PinnedCa;
use super::renewal::RenewalSchedule;
use super::{CACERTS, CRL, PKCS10, SIMPLEENROLL, SIMPLEREENROLL};
use crate::{Algorithm, NodeId, fingerprint, pkcs7, write_atomic};

const CERT_FILE: &str = "cert.pem";
const CA_FILE: &str = "ca.pem";
const KEY_FILE: &str = "key.pem";
/// Responses larger than this are refused; a certificate chain is a few KiB.
const MAX_RESPONSE: usize = 1024 * 1024;
const TIMEOUT: Duration = Duration::from_secs(30);

/// An enrollment failure on the client side.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("server URL {0:?}: expected https://HOST[:PORT]")]
    Url(String),
    #[error("connecting to {0}")]
    Connect(String, #[source] std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("timed out talking to the enrollment server")]
    Timeout,
    #[error("the server refused with {status}: {reason}")]
    Refused { status: StatusCode, reason: String },
    #[error("bad response: {0}")]
    BadResponse(String),
    #[error("the token contains characters that cannot be sent in a header")]
    BadToken,
    #[error("the server's CA certificates do not include the pinned CA")]
    PinMismatch,
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// A node's key, its certificate and the CA chain: the contents of its state directory.
pub struct Credentials {
    /// PKCS#8 PEM of the node's private key.
    pub key_pem: Zeroizing<String>,
    pub cert: CertificateDer<'static>,
    /// The CA certificates, issuing CA first.
    pub ca_chain: Vec<CertificateDer<'static>>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("cert", &hex::encode(fingerprint(&self.cert)))
            .field("ca_chain", &self.ca_chain.len())
            .finish_non_exhaustive()
    }
}

/// Where a node's key, certificate and CA chain live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialFiles {
    pub key: PathBuf,
    pub cert: PathBuf,
    pub ca: PathBuf,
}

impl CredentialFiles {
    /// The files `iiptrand enroll` writes into a state directory: `key.pem`, `cert.pem`
    /// and `ca.pem`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            key: dir.join(KEY_FILE),
            cert: dir.join(CERT_FILE),
            ca: dir.join(CA_FILE),
        }
    }
}

impl Credentials {
    /// Writes `key.pem` (0600), `cert.pem` and `ca.pem` into `dir`; see
    /// [`save_to`](Self::save_to).
    pub fn save(&self, dir: &Path) -> Result<(), ClientError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        self.save_to(&CredentialFiles::in_dir(dir))
    }

    /// Writes the key (0600), the CA chain and the certificate, each atomically. The key
    /// is written first and a renewal keeps the key, so the files never pair a
    /// certificate with a key it does not belong to for longer than one enrollment.
    pub fn save_to(&self, files: &CredentialFiles) -> Result<(), ClientError> {
        let write = |path: &Path, data: &[u8], mode: u32| {
            write_atomic(path, data, mode).map_err(io_err(path))
        };
        write(&files.key, self.key_pem.as_bytes(), 0o600)?;
        write(&files.ca, pem_certs(&self.ca_chain).as_bytes(), 0o644)?;
        write(
            &files.cert,
            pem_certs(std::slice::from_ref(&self.cert)).as_bytes(),
            0o644,
        )
    }

    /// Reads what [`save`](Self::save) wrote into `dir`.
    pub fn load(dir: &Path) -> Result<Self, ClientError> {
        Self::load_from(&CredentialFiles::in_dir(dir))
    }

    /// Reads what [`save_to`](Self::save_to) wrote.
    pub fn load_from(files: &CredentialFiles) -> Result<Self, ClientError> {
        let read = |path: &Path| std::fs::read(path).map_err(io_err(path));
        let certs = |path: &Path| -> Result<Vec<CertificateDer<'static>>, ClientError> {
            CertificateDer::pem_slice_iter(&read(path)?)
                .collect::<Result<_, _>>()
                .map_err(|e| ClientError::BadResponse(format!("{}: {e}", path.display())))
        };
        let key_pem = Zeroizing::new(String::from_utf8(read(&files.key)?).map_err(|_| {
            ClientError::BadResponse(format!("{} is not PEM", files.key.display()))
        })?);
        let cert = certs(&files.cert)?.into_iter().next().ok_or_else(|| {
            ClientError::BadResponse(format!("{} holds no certificate", files.cert.display()))
        })?;
        Ok(Self {
            key_pem,
            cert,
            ca_chain: certs(&files.ca)?,
        })
    }
}

/// Fetches the CA certificates over TLS anchored in the CA with SHA-256 `ca_fingerprint`.
pub async fn fetch_cacerts(
    server: &str,
    ca_fingerprint: &[u8; 32],
) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let config = tls_builder()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCa::new(
            *ca_fingerprint,
            super::provider(),
        )))
        .with_no_client_auth();
    let body = request(server, Arc::new(config), Method::GET, CACERTS, None).await?;
    let certs = decode_pkcs7(&body)?;
    if !certs
        .iter()
        .any(|cert| fingerprint(cert) == *ca_fingerprint)
    {
        return Err(ClientError::PinMismatch);
    }
    Ok(certs)
}

/// Enrolls `identity`: makes its key locally, sends a CSR authorised by `token` and returns
/// the credentials (nothing is written; see [`Credentials::save`]).
pub async fn enroll(
    server: &str,
    token: &str,
    ca_fingerprint: &[u8; 32],
    identity: &NodeId,
    algorithm: Algorithm,
) -> Result<Credentials, ClientError> {
    let ca_chain = fetch_cacerts(server, ca_fingerprint).await?;
    let key = algorithm.generate()?;
    let csr = csr_for(identity, &key)?;
    let config = trusting(&ca_chain)?.with_no_client_auth();
    let auth = Zeroizing::new(format!("Bearer {token}"));
    let body = request(
        server,
        Arc::new(config),
        Method::POST,
        SIMPLEENROLL,
        Some((csr, auth.as_str())),
    )
    .await?;
    let cert = issued_cert(&body, &key)?;
    Ok(Credentials {
        key_pem: crate::key_pem(&key),
        cert,
        ca_chain,
    })
}

/// Renews `current` over mutual TLS with its own key and certificate. The new certificate
/// keeps the identity and the key.
pub async fn reenroll(server: &str, current: &Credentials) -> Result<Credentials, ClientError> {
    let key = KeyPair::from_pem(&current.key_pem)?;
    let identity = cert_identity(&current.cert)?;
    let csr = csr_for(&identity, &key)?;
    let client_key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let config = trusting(&current.ca_chain)?
        .with_client_auth_cert(vec![current.cert.clone()], client_key)
        .map_err(|e| ClientError::Tls(e.to_string()))?;
    let body = request(
        server,
        Arc::new(config),
        Method::POST,
        SIMPLEREENROLL,
        Some((csr, "")),
    )
    .await?;
    let cert = issued_cert(&body, &key)?;
    Ok(Credentials {
        key_pem: current.key_pem.clone(),
        cert,
        ca_chain: current.ca_chain.clone(),
    })
}

/// The CA's current CRL (DER) from the enrollment server, over TLS anchored in `ca_chain`.
/// Its signature is checked where it is used, against the certificate it revokes.
pub async fn fetch_crl(
    server: &str,
    ca_chain: &[CertificateDer<'static>],
) -> Result<Vec<u8>, ClientError> {
    let config = trusting(ca_chain)?.with_no_client_auth();
    let body = request(server, Arc::new(config), Method::GET, CRL, None).await?;
    Ok(body.to_vec())
}

/// Whether `cert` should be renewed at `now`: from two thirds of its lifetime on.
pub fn renew_due(cert: &CertificateDer<'_>, now: SystemTime) -> Result<bool, ClientError> {
    Ok(RenewalSchedule::of(cert)?.due(now))
}

pub(crate) fn csr_for(identity: &NodeId, key: &KeyPair) -> Result<Vec<u8>, ClientError> {
    let params = identity
        .cert_params()
        .map_err(|e| ClientError::BadResponse(e.to_string()))?;
    Ok(params.serialize_request(key)?.der().to_vec())
}

/// The identity a certificate was issued for: its subject CN, which the CA sets to it.
fn cert_identity(cert: &CertificateDer<'_>) -> Result<NodeId, ClientError> {
    let bad = |what: &str| ClientError::BadResponse(format!("current certificate: {what}"));
    let (_, x509) = x509_parser::parse_x509_certificate(cert).map_err(|_| bad("unparsable"))?;
    let cn = x509
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or_else(|| bad("no subject CN"))?;
    cn.parse().map_err(|_| bad("subject CN is not an identity"))
}

fn issued_cert(body: &[u8], key: &KeyPair) -> Result<CertificateDer<'static>, ClientError> {
    let cert = decode_pkcs7(body)?
        .into_iter()
        .next()
        .ok_or_else(|| ClientError::BadResponse("no certificate in the response".into()))?;
    let (_, x509) = x509_parser::parse_x509_certificate(&cert)
        .map_err(|e| ClientError::BadResponse(e.to_string()))?;
    if x509.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err(ClientError::BadResponse(
            "the certificate is not for our key".into(),
        ));
    }
    Ok(cert)
}

fn decode_pkcs7(body: &[u8]) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let der = crate::pem::base64_decode(body)
        .ok_or_else(|| ClientError::BadResponse("not base64".into()))?;
    pkcs7::decode_certs_only(&der).map_err(|e| ClientError::BadResponse(e.to_string()))
}

fn tls_builder()
-> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>, ClientError> {
    rustls::ClientConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))
}

fn trusting(
    ca_chain: &[CertificateDer<'static>],
) -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>, ClientError>
{
    let mut roots = RootCertStore::empty();
    for cert in ca_chain {
        roots
            .add(cert.clone())
            .map_err(|e| ClientError::Tls(e.to_string()))?;
    }
    Ok(tls_builder()?.with_root_certificates(roots))
}

/// One HTTPS request on a fresh connection; returns the body of a 200 answer.
async fn request(
    server: &str,
    config: Arc<rustls::ClientConfig>,
    method: Method,
    path: &str,
    csr: Option<(Vec<u8>, &str)>,
) -> Result<Bytes, ClientError> {
    tokio::time::timeout(TIMEOUT, request_inner(server, config, method, path, csr))
        .await
        .unwrap_or(Err(ClientError::Timeout))
}

async fn request_inner(
    server: &str,
    config: Arc<rustls::ClientConfig>,
    method: Method,
    path: &str,
    csr: Option<(Vec<u8>, &str)>,
) -> Result<Bytes, ClientError> {
    let url_err = || ClientError::Url(server.to_owned());
    let uri: Uri = server.parse().map_err(|_| url_err())?;
    if uri.scheme_str() != Some("https") {
        return Err(url_err());
    }
    let authority = uri.authority().ok_or_else(url_err)?.clone();
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = authority.port_u16().unwrap_or(443);
    let name = ServerName::try_from(host.clone()).map_err(|_| url_err())?;
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| ClientError::Connect(authority.to_string(), e))?;
    let tls = TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| ClientError::Tls(e.to_string()))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    let connection = tokio::spawn(connection);

    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, authority.as_str());
    let body = match csr {
        Some((der, auth)) => {
            builder = builder.header(header::CONTENT_TYPE, PKCS10);
            if !auth.is_empty() {
                let mut value = HeaderValue::from_str(auth).map_err(|_| ClientError::BadToken)?;
                value.set_sensitive(true);
                builder = builder.header(header::AUTHORIZATION, value);
            }
            Full::new(Bytes::from(crate::pem::base64_lines(&der)))
        }
        None => Full::new(Bytes::new()),
    };
    let req = builder
        .body(body)
        .map_err(|e| ClientError::BadResponse(e.to_string()))?;
    let response = sender.send_request(req).await?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_RESPONSE)
        .collect()
        .await
        .map_err(|e| ClientError::BadResponse(e.to_string()))?
        .to_bytes();
    connection.abort();
    if status != StatusCode::OK {
        let reason = String::from_utf8_lossy(&body).trim().to_owned();
        return Err(ClientError::Refused { status, reason });
    }
    Ok(body)
}

fn pem_certs(certs: &[CertificateDer<'_>]) -> String {
    certs
        .iter()
        .map(|cert| crate::to_pem("CERTIFICATE", cert))
        .collect()
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ClientError + '_ {
    move |source| ClientError::Io {
        path: path.display().to_string(),
        source,
    }
}
