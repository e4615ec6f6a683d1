//! EST-style enrollment over HTTPS (RFC 7030 subset).
//!
//! | Request | Authorisation | Answer |
//! |---|---|---|
//! | `GET /.well-known/est/cacerts` | none | base64 certs-only PKCS#7 with the CA certificate |
//! | `POST /.well-known/est/simpleenroll` | join token: `Authorization: Bearer T` or Basic with password T | base64 PKCS#7 with the issued certificate |
//! | `POST /.well-known/est/simplereenroll` | the current certificate, over mutual TLS | as above |
//! | `GET /.well-known/est/crl` | none | the DER CRL (`application/pkix-crl`); not part of RFC 7030 |
//!
//! Enrollment bodies are base64 DER PKCS#10 with content type `application/pkcs10`.

mod client;
mod pin;
mod renewal;
mod server;
mod server_cert;

pub use client::{
    ClientError, CredentialFiles, Credentials, enroll, fetch_cacerts, fetch_crl, reenroll,
    renew_due,
};
pub use renewal::RenewalSchedule;
pub use server::{Limits, Server, ServerConfig, ServerError};

/// Path of the CA certificates distribution (RFC 7030 §4.1).
pub const CACERTS: &str = "/.well-known/est/cacerts";
/// Path of initial enrollment (RFC 7030 §4.2.1).
pub const SIMPLEENROLL: &str = "/.well-known/est/simpleenroll";
/// Path of re-enrollment (RFC 7030 §4.2.2).
pub const SIMPLEREENROLL: &str = "/.well-known/est/simplereenroll";
/// Path of the CA's current CRL (DER).
pub const CRL: &str = "/.well-known/est/crl";

const PKCS7_MIME: &str = "application/pkcs7-mime; smime-type=certs-only";
const PKCS10: &str = "application/pkcs10";

/// Installs the ring crypto provider as rustls' process default; harmless if one is set.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(test)]
mod tests;
