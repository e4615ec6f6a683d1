//! Peer authentication (RFC 7296 §2.15): what is signed or MACed, the pre-shared key
//! method, RFC 7427 digital signatures, and validation of the peer's certificate chain.
//!
//! Every failure here is an [`AuthError`]; the engine answers all of them with
//! AUTHENTICATION_FAILED ([`AuthError::NOTIFY`]) and logs the detail locally only.

mod certreq;
mod ed25519;
mod hash_algorithms;
mod psk;
mod signature;
mod trust;

pub use certreq::{CA_HASH_LEN, ca_hash, parse_ca_hashes};
pub use hash_algorithms::{our_hash_algorithms, parse_hash_algorithms};
pub use psk::{psk_auth, verify_psk};
pub use signature::{SigningKey, verify};
pub use trust::{TrustAnchors, ValidatedPeer};

use crate::crypto::Prf;
use crate::iana::{AuthMethod, NotifyType};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("AUTH payload does not verify")]
    Mismatch,
    #[error("authentication method {0} is not supported")]
    UnsupportedMethod(AuthMethod),
    #[error("malformed AUTH data")]
    MalformedAuthData,
    #[error("signature algorithm not supported")]
    UnsupportedSignatureAlgorithm,
    #[error("signature algorithm does not match the certificate's key")]
    KeyMismatch,
    #[error("malformed certificate: {0}")]
    BadCertificate(webpki::Error),
    #[error("certificate chain rejected: {0}")]
    Chain(webpki::Error),
    #[error("malformed CRL: {0}")]
    BadCrl(webpki::Error),
    #[error("the CRL's signature does not verify with the CA certificate it names as issuer")]
    CrlSignature,
    #[error("no usable trust anchor")]
    NoTrustAnchor,
    #[error("cannot read PEM: {0}")]
    Pem(rustls_pki_types::pem::Error),
    #[error("private key is not a PKCS#8 Ed25519 or P-256 key")]
    BadPrivateKey,
    #[error("time before the Unix epoch")]
    BadTime,
    #[error("malformed SIGNATURE_HASH_ALGORITHMS data")]
    BadHashAlgorithms,
}

impl AuthError {
    /// The only notification a peer learns about a failed authentication.
    pub const NOTIFY: NotifyType = NotifyType::AUTHENTICATION_FAILED;
}

/// The octets a party signs or MACs (RFC 7296 §2.15): its own first message, the
/// peer's nonce, and prf(SK_p, the body of its own ID payload). `sk_p` is SK_pi for the
/// initiator's octets and SK_pr for the responder's; `id_payload_body` is the ID payload
/// after its generic header (ID type, three reserved octets, identification data).
pub fn signed_octets(
    real_message: &[u8],
    peer_nonce: &[u8],
    prf: Prf,
    sk_p: &[u8],
    id_payload_body: &[u8],
) -> Vec<u8> {
    let maced_id = prf.compute(sk_p, id_payload_body);
    let mut octets = Vec::with_capacity(real_message.len() + peer_nonce.len() + maced_id.len());
    octets.extend_from_slice(real_message);
    octets.extend_from_slice(peer_nonce);
    octets.extend_from_slice(maced_id.expose());
    octets
}

#[cfg(test)]
mod tests;
