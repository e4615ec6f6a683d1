//! The enrollment service: HTTPS/1.1 over rustls, with bounded bodies and timeouts.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use zeroize::Zeroizing;

use super::server_cert::ServerCert;
use super::{CACERTS, CRL, PKCS7_MIME, PKCS10, SIMPLEENROLL, SIMPLEREENROLL};
use crate::token::TokenError;
use crate::{Ca, CaError, IssueError, NodeId, pkcs7, unix_now};

/// How long the server's own TLS certificate is valid (it is re-issued at two thirds).
const SERVER_CERT_LIFETIME: Duration = Duration::from_secs(90 * 86_400);

/// Bounds on what one client may cost the server.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body accepted (413 beyond).
    pub max_body: usize,
    /// Connections served at once; further ones are closed at once until one ends.
    pub max_connections: usize,
    /// Time allowed for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time allowed to send a request's headers; the connection is closed after it.
    pub header_timeout: Duration,
    /// Time allowed to send a request's body (408 after it).
    pub body_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: 64 * 1024,
            max_connections: 256,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
        }
    }
}

/// Where and how the service runs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// DNS names and IP addresses clients use to reach the server: its TLS certificate's
    /// SANs.
    pub names: Vec<NodeId>,
    /// Lifetime of the node certificates it issues.
    pub cert_lifetime: Duration,
    pub limits: Limits,
}

/// A failure to start or run the service.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("accept: {0}")]
    Accept(std::io::Error),
    #[error("server certificate: {0}")]
    Ca(#[from] CaError),
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// A bound enrollment service; [`run`](Self::run) serves it.
pub struct Server {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    state: Arc<State>,
}

struct State {
    ca: Arc<Ca>,
    cert_lifetime: Duration,
    limits: Limits,
}

impl Server {
    /// Issues the server's TLS certificate from `ca` and binds the listening socket.
    pub async fn bind(ca: Arc<Ca>, config: ServerConfig) -> Result<Self, ServerError> {
        let provider = super::provider();
        let server_cert = ServerCert::new(
            ca.clone(),
            config.names,
            SERVER_CERT_LIFETIME,
            provider.clone(),
        )?;
        let mut roots = RootCertStore::empty();
        roots
            .add(ca.cert().clone())
            .map_err(|e| ServerError::Tls(e.to_string()))?;
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| ServerError::Tls(e.to_string()))?;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ServerError::Tls(e.to_string()))?
            .with_client_cert_verifier(client_verifier)
            .with_cert_resolver(Arc::new(server_cert));
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.listen,
                    source,
                })?;
        Ok(Self {
            listener,
            acceptor: TlsAcceptor::from(Arc::new(tls)),
            state: Arc::new(State {
                ca,
                cert_lifetime: config.cert_lifetime,
                limits: config.limits,
            }),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves connections until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        tokio::pin!(shutdown);
        let connections = Arc::new(tokio::sync::Semaphore::new(
            self.state.limits.max_connections,
        ));
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(pair) => pair,
                    // Per-connection failures (a reset before accept, out of descriptors)
                    // must not stop the service; pause briefly so they cannot spin it.
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => return Ok(()),
            };
            let Ok(permit) = connections.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "too many connections; closing this one");
                continue;
            };
            let acceptor = self.acceptor.clone();
            let state = self.state.clone();
            tokio::spawn(async move {
                serve_connection(acceptor, state, tcp, peer).await;
                drop(permit);
            });
        }
    }
}

async fn serve_connection(
    acceptor: TlsAcceptor,
    state: Arc<State>,
    tcp: TcpStream,
    peer: SocketAddr,
) {
    let tls = match tokio::time::timeout(state.limits.handshake_timeout, acceptor.accept(tcp)).await
    {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "TLS handshake timed out");
            return;
        }
    };
    // The verifier has checked the chain to the VN CA and the validity period.
    let client_cert: Option<CertificateDer<'static>> = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .map(|cert| cert.clone().into_owned());
    let client_cert = Arc::new(client_cert);
    let header_timeout = state.limits.header_timeout;
    let service = hyper::service::service_fn(move |req| {
        let state = state.clone();
        let client_cert = client_cert.clone();
        async move {
            Ok::<_, Infallible>(handle(&state, peer, client_cert.as_ref().as_ref(), req).await)
        }
    });
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(tls), service)
        .await;
    if let Err(e) = result {
        tracing::info!(%peer, error = %e, "connection ended with an error");
    }
}

/// A finished answer: status, content type and body, plus extra headers.
struct Reply {
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
    headers: Vec<(header::HeaderName, HeaderValue)>,
    /// Why a request failed, for the log; never holds a token or key.
    reason: Option<String>,
}

impl Reply {
    fn ok(content_type: &'static str, body: impl Into<Bytes>) -> Self {
        Self {
            status: StatusCode::OK,
            content_type,
            body: body.into(),
            headers: Vec::new(),
            reason: None,
        }
    }

    fn pkcs7(certs: &[CertificateDer<'_>]) -> Self {
        let mut reply = Self::ok(
            PKCS7_MIME,
            crate::pem::base64_lines(&pkcs7::encode_certs_only(certs)),
        );
        reply.headers.push((
            header::HeaderName::from_static("content-transfer-encoding"),
            HeaderValue::from_static("base64"),
        ));
        reply
    }

    fn error(status: StatusCode, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: Bytes::from(format!("{reason}\n")),
            headers: Vec::new(),
            reason: Some(reason),
        }
    }

    fn with_header(mut self, name: header::HeaderName, value: &'static str) -> Self {
        self.headers.push((name, HeaderValue::from_static(value)));
        self
    }
}

async fn handle(
    state: &State,
    peer: SocketAddr,
    client_cert: Option<&CertificateDer<'static>>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let reply = route(state, client_cert, req).await;
    match &reply.reason {
        Some(reason) if reply.status.is_server_error() => {
            tracing::error!(%peer, %method, path, status = reply.status.as_u16(), reason, "EST request failed")
        }
        Some(reason) => {
            tracing::warn!(%peer, %method, path, status = reply.status.as_u16(), reason, "EST request refused")
        }
        None => tracing::info!(%peer, %method, path, status = reply.status.as_u16(), "EST request"),
    }
    let mut response = Response::new(Full::new(reply.body));
    *response.status_mut() = reply.status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(reply.content_type),
    );
    for (name, value) in reply.headers {
        headers.insert(name, value);
    }
    response
}

async fn route(
    state: &State,
    client_cert: Option<&CertificateDer<'static>>,
    req: Request<Incoming>,
) -> Reply {
    let path = req.uri().path();
    let allowed = match path {
        CACERTS | CRL => Method::GET,
        SIMPLEENROLL | SIMPLEREENROLL => Method::POST,
        _ => return Reply::error(StatusCode::NOT_FOUND, format!("no such resource {path}")),
    };
    if req.method() != allowed {
        let allow = if allowed == Method::GET {
            "GET"
        } else {
            "POST"
        };
        return Reply::error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{path} accepts only {allow}"),
        )
        .with_header(header::ALLOW, allow);
    }
    match path {
        CACERTS => Reply::pkcs7(std::slice::from_ref(state.ca.cert())),
        CRL => {
            let ca = state.ca.clone();
            match blocking(move || {
                ca.crl(unix_now())
                    .map_err(|e| IssueError::Internal(e.to_string()))
            })
            .await
            {
                Ok(crl) => Reply::ok("application/pkix-crl", crl.to_vec()),
                Err(e) => issue_error(e),
            }
        }
        SIMPLEENROLL => enroll(state, req).await,
        _ => reenroll(state, client_cert, req).await,
    }
}

async fn enroll(state: &State, req: Request<Incoming>) -> Reply {
    let Some(token) = bearer_or_basic(req.headers()) else {
        return Reply::error(
            StatusCode::UNAUTHORIZED,
            "simpleenroll needs a join token (Authorization: Bearer or Basic)",
        )
        .with_header(header::WWW_AUTHENTICATE, "Bearer, Basic realm=\"est\"");
    };
    let csr = match read_csr(state, req).await {
        Ok(csr) => csr,
        Err(reply) => return reply,
    };
    let ca = state.ca.clone();
    let lifetime = state.cert_lifetime;
    match blocking(move || ca.enroll(&token, &csr, lifetime, unix_now())).await {
        Ok(cert) => Reply::pkcs7(&[cert]),
        Err(e) => issue_error(e),
    }
}

async fn reenroll(
    state: &State,
    client_cert: Option<&CertificateDer<'static>>,
    req: Request<Incoming>,
) -> Reply {
    let Some(current) = client_cert.cloned() else {
        return Reply::error(
            StatusCode::UNAUTHORIZED,
            "simplereenroll needs the current certificate as TLS client certificate",
        );
    };
    let csr = match read_csr(state, req).await {
        Ok(csr) => csr,
        Err(reply) => return reply,
    };
    let ca = state.ca.clone();
    let lifetime = state.cert_lifetime;
    match blocking(move || ca.reenroll(&current, &csr, lifetime, unix_now())).await {
        Ok(cert) => Reply::pkcs7(&[cert]),
        Err(e) => issue_error(e),
    }
}

/// Checks the content type and reads the base64 PKCS#10 body within the size and time limits.
async fn read_csr(state: &State, req: Request<Incoming>) -> Result<Vec<u8>, Reply> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .unwrap_or("");
    if !content_type.eq_ignore_ascii_case(PKCS10) {
        return Err(Reply::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content type must be {PKCS10}, not {content_type:?}"),
        ));
    }
    let max = state.limits.max_body;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return Err(too_large(max));
    }
    let body = Limited::new(req.into_body(), max);
    let bytes = match tokio::time::timeout(state.limits.body_timeout, body.collect()).await {
        Err(_) => {
            return Err(Reply::error(
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time",
            ));
        }
        Ok(Err(e)) if e.is::<LengthLimitError>() => return Err(too_large(max)),
        Ok(Err(e)) => {
            return Err(Reply::error(
                StatusCode::BAD_REQUEST,
                format!("reading the body: {e}"),
            ));
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    crate::pem::base64_decode(&bytes)
        .ok_or_else(|| Reply::error(StatusCode::BAD_REQUEST, "the body is not base64"))
}

fn too_large(max: usize) -> Reply {
    Reply::error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body larger than {max} bytes"),
    )
}

/// The join token from `Authorization: Bearer T` or `Basic base64(user:T)`.
fn bearer_or_basic(headers: &HeaderMap) -> Option<Zeroizing<String>> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.trim().split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(Zeroizing::new(rest.trim().to_owned()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = Zeroizing::new(crate::pem::base64_decode(rest.as_bytes())?);
        let text = std::str::from_utf8(&decoded).ok()?;
        let (_, password) = text.split_once(':')?;
        return Some(Zeroizing::new(password.to_owned()));
    }
    None
}

fn issue_error(e: IssueError) -> Reply {
    let status = match &e {
        IssueError::Token(TokenError::Mismatch)
        | IssueError::IdentityMismatch(_)
        | IssueError::Revoked(_) => StatusCode::FORBIDDEN,
        IssueError::Token(_) | IssueError::BadClientCert(_) => StatusCode::UNAUTHORIZED,
        IssueError::BadCsr(_) => StatusCode::BAD_REQUEST,
        IssueError::Internal(detail) => {
            tracing::error!(detail, "CA operation failed");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    Reply::error(status, e.to_string())
}

/// Runs CA work (signing, database transactions with fsync) off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, IssueError> + Send + 'static,
) -> Result<T, IssueError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(IssueError::Internal(format!("CA task failed: {e}"))))
}
