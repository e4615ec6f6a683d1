//! `list-certs`: what the configured certificate files hold, and the CRL in use for each
//! CA certificate among them.

use std::net::IpAddr;
use std::path::Path;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::credentials::NodeCredentials;
use crate::control::protocol::CertReport;

const ED25519: &str = "1.3.101.112";
const EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";

/// One report per certificate in the PEM file at `path`.
pub fn reports(path: &Path, credentials: &NodeCredentials) -> Result<Vec<CertReport>, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    CertificateDer::pem_slice_iter(&text)
        .map(|der| {
            let der = der.map_err(|e| format!("{}: {e}", path.display()))?;
            report(path, &der, credentials).map_err(|e| format!("{}: {e}", path.display()))
        })
        .collect()
}

fn report(path: &Path, der: &[u8], credentials: &NodeCredentials) -> Result<CertReport, String> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    let identities = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(identity)
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(e.to_string()),
    };
    let algorithm = cert.public_key().algorithm.algorithm.to_id_string();
    let key_type = match algorithm.as_str() {
        ED25519 => "Ed25519".to_owned(),
        EC_PUBLIC_KEY => "ECDSA".to_owned(),
        other => other.to_owned(),
    };
    let unix = |t: i64| u64::try_from(t).unwrap_or(0);
    Ok(CertReport {
        file: path.to_owned(),
        subject: cert.subject().to_string(),
        identities,
        issuer: cert.issuer().to_string(),
        serial: hex::encode(cert.raw_serial()),
        not_before: unix(cert.validity().not_before.timestamp()),
        not_after: unix(cert.validity().not_after.timestamp()),
        fingerprint: hex::encode(iiptran_certs::fingerprint(der)),
        key_type,
        renewal: None,
        crl: cert.is_ca().then(|| credentials.crl_report(der)).flatten(),
    })
}

fn identity(name: &GeneralName<'_>) -> Option<String> {
    match name {
        GeneralName::DNSName(s) | GeneralName::RFC822Name(s) => Some((*s).to_owned()),
        GeneralName::IPAddress(bytes) => {
            let ip = match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                _ => None,
            };
            ip.map(|ip| ip.to_string())
        }
        _ => None,
    }
}
