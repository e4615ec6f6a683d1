//! The enrollment service's own TLS certificate. It is issued by the VN CA when the server
//! starts and again whenever it is two thirds through its lifetime, so a long-running
//! server never presents an expired certificate.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::{ServerError, renew_due};
use crate::{Ca, NodeId, unix_now};

pub(super) struct ServerCert {
    ca: Arc<Ca>,
    names: Vec<NodeId>,
    lifetime: Duration,
    provider: Arc<CryptoProvider>,
    current: Mutex<Arc<CertifiedKey>>,
}

impl fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCert")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl ServerCert {
    pub(super) fn new(
        ca: Arc<Ca>,
        names: Vec<NodeId>,
        lifetime: Duration,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, ServerError> {
        let first = issue(&ca, &names, lifetime, &provider)?;
        Ok(Self {
            ca,
            names,
            lifetime,
            provider,
            current: Mutex::new(first),
        })
    }

    /// The certificate to present now, re-issued first if it is due.
    pub(super) fn current(&self) -> Option<Arc<CertifiedKey>> {
        let mut current = self.current.lock().ok()?;
        let due = current
            .cert
            .first()
            .is_none_or(|cert| renew_due(cert, SystemTime::now()).unwrap_or(true));
        if due {
            match issue(&self.ca, &self.names, self.lifetime, &self.provider) {
                Ok(fresh) => *current = fresh,
                // The old certificate is still valid for a third of its lifetime; the next
                // handshake tries again.
                Err(e) => tracing::error!(error = %e, "re-issuing the server certificate failed"),
            }
        }
        Some(current.clone())
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

fn issue(
    ca: &Ca,
    names: &[NodeId],
    lifetime: Duration,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, ServerError> {
    let (cert, key) = ca.issue_server(names, lifetime, unix_now())?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signer = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert, ca.cert().clone()],
        signer,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Algorithm;
    use crate::testutil::new_ca;

    #[test]
    fn reissued_when_due() {
        let (_dir, ca) = new_ca(Algorithm::Ed25519, unix_now());
        let ca = Arc::new(ca);
        let names = vec![NodeId::Ip([127, 0, 0, 1].into())];
        let lifetime = Duration::from_secs(3);
        let server =
            ServerCert::new(ca.clone(), names, lifetime, super::super::provider()).unwrap();
        let first = server.current().unwrap();
        assert!(
            Arc::ptr_eq(&first, &server.current().unwrap()),
            "not due yet"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !renew_due(&first.cert[0], SystemTime::now()).unwrap() {
            assert!(std::time::Instant::now() < deadline, "never fell due");
            std::thread::sleep(Duration::from_millis(100));
        }
        let second = server.current().unwrap();
        assert_ne!(second.cert[0], first.cert[0]);
        assert_eq!(second.cert[1], *ca.cert(), "the chain ends in the CA");
        assert_eq!(ca.store().list().unwrap().len(), 2);
    }
}
