//! The node's certificate credentials as the IKE engine uses them, shared by the engine's
//! policy and the tasks that renew the certificate and refresh the CRLs.
//!
//! The policy asks for the current [`Certificates`] whenever an IKE SA starts, so a renewed
//! certificate serves new IKE SAs at once while established ones keep theirs. CRLs come
//! from up to three sources (the `[auth] crl` file, the CA this node hosts, the enrollment
//! server it renews with); for each issuer the newest one goes to the trust anchors.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use iiptran_ike::auth::{SigningKey, TrustAnchors};
use iiptran_policy::config::{CertFiles, Config, Credentials};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};
use tracing::{debug, warn};

use super::DaemonError;
use crate::control::protocol::{CrlReport, RenewalReport};

/// The node's key and certificate chain and the CA certificates peers must chain to.
pub struct Certificates {
    pub key: Arc<SigningKey>,
    pub chain: Arc<[Vec<u8>]>,
    pub anchors: Arc<TrustAnchors>,
}

fn read(path: &Path) -> Result<Vec<u8>, DaemonError> {
    std::fs::read(path).map_err(|e| DaemonError::File {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

impl Certificates {
    fn load(files: &CertFiles) -> Result<Self, DaemonError> {
        let bad = |path: &Path, e: &dyn std::fmt::Display| DaemonError::File {
            path: path.to_owned(),
            message: e.to_string(),
        };
        let key =
            SigningKey::from_pkcs8_pem(&read(&files.key)?).map_err(|e| bad(&files.key, &e))?;
        let chain = CertificateDer::pem_slice_iter(&read(&files.cert)?)
            .map(|c| c.map(|c| c.to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(&files.cert, &e))?;
        let Some(first) = chain.first() else {
            return Err(bad(&files.cert, &"no certificate in the file"));
        };
        if !key.matches_certificate(first) {
            return Err(bad(
                &files.key,
                &"the key does not belong to the certificate",
            ));
        }
        let anchors = TrustAnchors::from_pem(&read(&files.ca)?).map_err(|e| bad(&files.ca, &e))?;
        Ok(Self {
            key: Arc::new(key),
            chain: chain.into(),
            anchors: Arc::new(anchors),
        })
    }
}

/// Where a CRL came from; one CRL is kept per source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CrlSource {
    /// `[auth] crl`.
    File,
    /// The CA of `[enroll.server]`.
    HostedCa,
    /// The enrollment server of `[enroll.client]`.
    Server,
}

/// A parsed CRL and what the reports show of it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Crl {
    der: Vec<u8>,
    /// DER of the issuer's name.
    issuer: Vec<u8>,
    this_update: i64,
    revoked: Vec<String>,
    from: String,
}

impl Crl {
    fn parse(der: Vec<u8>, from: String) -> Result<Self, String> {
        let (_, crl) = x509_parser::parse_x509_crl(&der).map_err(|e| e.to_string())?;
        let issuer = crl.issuer().as_raw().to_vec();
        let this_update = crl.last_update().timestamp();
        let revoked = crl
            .iter_revoked_certificates()
            .map(|r| hex::encode(r.raw_serial()))
            .collect();
        Ok(Self {
            der,
            issuer,
            this_update,
            revoked,
            from,
        })
    }
}

/// A CRL file as `iiptranctl ca crl` writes it (PEM) or as DER.
pub fn read_crl_file(path: &Path) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.starts_with(b"-----BEGIN") {
        CertificateRevocationListDer::from_pem_slice(&bytes)
            .map(|der| der.to_vec())
            .map_err(|e| format!("{}: {e}", path.display()))
    } else {
        Ok(bytes)
    }
}

/// The credentials of one node; see the module documentation.
#[derive(Default)]
pub struct NodeCredentials {
    current: RwLock<Option<Arc<Certificates>>>,
    crls: Mutex<BTreeMap<CrlSource, Crl>>,
    renewal: Mutex<Option<RenewalReport>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether any neighbor authenticates with the `[auth]` certificates.
fn needs_certificates(config: &Config) -> bool {
    config
        .neighbors
        .iter()
        .any(|n| n.credentials == Credentials::Certificates)
}

impl NodeCredentials {
    /// Loads the `[auth]` files when a neighbor needs them.
    pub fn load(config: &Config) -> Result<Self, DaemonError> {
        let credentials = Self::default();
        credentials.reload(config)?;
        Ok(credentials)
    }

    /// Reads the `[auth]` files again (or forgets them when no neighbor needs them). On an
    /// error nothing changes.
    pub fn reload(&self, config: &Config) -> Result<(), DaemonError> {
        let fresh = match &config.auth {
            Some(files) if needs_certificates(config) => Some(Certificates::load(files)?),
            _ => None,
        };
        self.replace(fresh);
        Ok(())
    }

    /// Reads renewed files, if the node uses its certificates; on an error nothing
    /// changes.
    pub fn renewed(&self, files: &CertFiles) -> Result<(), DaemonError> {
        if self.current().is_some() {
            self.replace(Some(Certificates::load(files)?));
        }
        Ok(())
    }

    fn replace(&self, fresh: Option<Certificates>) {
        let fresh = fresh.map(Arc::new);
        if let Some(c) = &fresh {
            self.install_crls(&c.anchors);
        }
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = fresh;
    }

    /// The credentials new IKE SAs use.
    pub fn current(&self) -> Option<Arc<Certificates>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the CRL of `source` with `der`; `from` names it in reports. Returns
    /// whether it revokes other certificates than the one it replaces; a CRL that does not
    /// parse, or is not signed by the CA certificate it names as issuer, changes nothing.
    pub fn set_crl(&self, source: CrlSource, der: Vec<u8>, from: &str) -> Result<bool, String> {
        if let Some(c) = self.current() {
            c.anchors.check_crl(&der).map_err(|e| e.to_string())?;
        }
        let crl = Crl::parse(der, from.to_owned())?;
        let mut crls = lock(&self.crls);
        let old = crls.get(&source);
        let changed =
            old.is_none_or(|old| (&old.issuer, &old.revoked) != (&crl.issuer, &crl.revoked));
        let fresh = old != Some(&crl);
        if fresh {
            crls.insert(source, crl);
        }
        drop(crls);
        if fresh {
            self.apply_crls();
        }
        Ok(changed)
    }

    /// Forgets the CRL of a source that is no longer configured.
    pub fn drop_crl(&self, source: CrlSource) {
        if lock(&self.crls).remove(&source).is_some() {
            self.apply_crls();
        }
    }

    fn apply_crls(&self) {
        if let Some(c) = self.current() {
            self.install_crls(&c.anchors);
        }
    }

    /// The newest CRL of each issuer among those `anchors` accept: CRLs were checked
    /// against the anchors of their time, and the CA certificates may have changed since.
    fn newest(&self, anchors: &TrustAnchors) -> Vec<Crl> {
        let mut by_issuer: BTreeMap<Vec<u8>, Crl> = BTreeMap::new();
        for crl in lock(&self.crls).values() {
            if let Err(e) = anchors.check_crl(&crl.der) {
                debug!(from = crl.from, error = %e, "CRL not for these CA certificates");
                continue;
            }
            let newer = by_issuer
                .get(&crl.issuer)
                .is_none_or(|kept| crl.this_update > kept.this_update);
            if newer {
                by_issuer.insert(crl.issuer.clone(), crl.clone());
            }
        }
        by_issuer.into_values().collect()
    }

    fn install_crls(&self, anchors: &TrustAnchors) {
        let newest = self.newest(anchors);
        let revoked: usize = newest.iter().map(|c| c.revoked.len()).sum();
        match anchors.set_crls(newest.into_iter().map(|c| c.der).collect()) {
            Ok(()) => debug!(revoked, "CRLs in use"),
            Err(e) => warn!(error = %e, "the CRLs were not accepted; keeping the previous ones"),
        }
    }

    /// The CRL in use for certificates issued by the CA certificate `ca_der`.
    pub fn crl_report(&self, ca_der: &[u8]) -> Option<CrlReport> {
        let (_, ca) = x509_parser::parse_x509_certificate(ca_der).ok()?;
        let subject = ca.subject().as_raw();
        self.newest(&self.current()?.anchors)
            .into_iter()
            .find(|crl| crl.issuer == subject)
            .map(|crl| CrlReport {
                source: crl.from,
                this_update: u64::try_from(crl.this_update).unwrap_or(0),
                revoked: crl.revoked,
            })
    }

    pub fn set_renewal(&self, report: Option<RenewalReport>) {
        *lock(&self.renewal) = report;
    }

    pub fn renewal(&self) -> Option<RenewalReport> {
        lock(&self.renewal).clone()
    }
}

#[cfg(test)]
mod tests;
