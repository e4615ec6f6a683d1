//! Digital signature authentication: RFC 7427 (method 14) with Ed25519 (RFC 8420) and
//! ECDSA, plus RFC 4754 ECDSA P-256 (method 9) on the verifying side.

use super::AuthError;
use crate::iana::{AuthMethod, HashAlgorithm};
use core::fmt;
use ed25519_dalek::Signer as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, SignatureVerificationAlgorithm};
use tracing::debug;

/// Ed25519 AlgorithmIdentifier (RFC 8420 §2, id-Ed25519 from RFC 8410 with no
/// parameters).
const ALG_ED25519: &[u8] = &[0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70];
/// ecdsa-with-SHA256 AlgorithmIdentifier (RFC 7427 Appendix A.3.1).
const ALG_ECDSA_SHA256: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
];
/// ecdsa-with-SHA384 AlgorithmIdentifier (RFC 7427 Appendix A.3.2).
const ALG_ECDSA_SHA384: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03,
];

/// RFC 4754 §7: the ECDSA_SHA256_P256 AUTH data is r || s, 32 octets each.
const RAW_P256_SIGNATURE_LEN: usize = 64;

/// For each AlgorithmIdentifier we accept, the verifiers it may mean; which one applies
/// depends on the certificate's key (a P-384 key may sign with SHA-256 and vice versa).
const VERIFIERS: &[(&[u8], &[&dyn SignatureVerificationAlgorithm])] = &[
    (ALG_ED25519, &[super::ed25519::ED25519]),
    (
        ALG_ECDSA_SHA256,
        &[
            webpki::ring::ECDSA_P256_SHA256,
            webpki::ring::ECDSA_P384_SHA256,
        ],
    ),
    (
        ALG_ECDSA_SHA384,
        &[
            webpki::ring::ECDSA_P384_SHA384,
            webpki::ring::ECDSA_P256_SHA384,
        ],
    ),
];

/// Our private key for signature authentication.
pub enum SigningKey {
    Ed25519(ed25519_dalek::SigningKey),
    EcdsaP256(p256::ecdsa::SigningKey),
}

impl SigningKey {
    /// Loads an unencrypted PKCS#8 key (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pkcs8_pem(pem: &[u8]) -> Result<Self, AuthError> {
        match PrivateKeyDer::from_pem_slice(pem).map_err(AuthError::Pem)? {
            PrivateKeyDer::Pkcs8(der) => Self::from_pkcs8_der(der.secret_pkcs8_der()),
            _ => Err(AuthError::BadPrivateKey),
        }
    }

    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, AuthError> {
        use p256::pkcs8::DecodePrivateKey as _;
        if let Ok(key) = ed25519_dalek::SigningKey::from_pkcs8_der(der) {
            return Ok(SigningKey::Ed25519(key));
        }
        p256::ecdsa::SigningKey::from_pkcs8_der(der)
            .map(SigningKey::EcdsaP256)
            .map_err(|_| AuthError::BadPrivateKey)
    }

    /// The AUTH method our AUTH payloads carry.
    pub fn method(&self) -> AuthMethod {
        AuthMethod::DIGITAL_SIGNATURE
    }

    /// The hash the peer must support (in its SIGNATURE_HASH_ALGORITHMS) to verify us.
    pub fn hash_algorithm(&self) -> HashAlgorithm {
        match self {
            SigningKey::Ed25519(_) => HashAlgorithm::IDENTITY,
            SigningKey::EcdsaP256(_) => HashAlgorithm::SHA2_256,
        }
    }

    /// Whether `cert_der` carries this key's public key: a configuration check before
    /// the certificate is sent as ours.
    pub fn matches_certificate(&self, cert_der: &[u8]) -> bool {
        const PROBE: &[u8] = b"iiptran key and certificate check";
        verify(cert_der, self.method(), &self.sign(PROBE), PROBE).is_ok()
    }

    /// Signs `octets`, returning the RFC 7427 AUTH data: the AlgorithmIdentifier's length,
    /// the AlgorithmIdentifier, the signature.
    pub fn sign(&self, octets: &[u8]) -> Vec<u8> {
        let (alg, signature) = match self {
            SigningKey::Ed25519(key) => (ALG_ED25519, key.sign(octets).to_bytes().to_vec()),
            SigningKey::EcdsaP256(key) => {
                let signature: p256::ecdsa::Signature = key.sign(octets);
                (ALG_ECDSA_SHA256, signature.to_der().as_bytes().to_vec())
            }
        };
        let mut auth = Vec::with_capacity(1 + alg.len() + signature.len());
        auth.push(alg.len() as u8);
        auth.extend_from_slice(alg);
        auth.extend_from_slice(&signature);
        auth
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SigningKey::Ed25519(_) => f.write_str("SigningKey::Ed25519(redacted)"),
            SigningKey::EcdsaP256(_) => f.write_str("SigningKey::EcdsaP256(redacted)"),
        }
    }
}

/// Verifies the peer's AUTH data against the public key of its end-entity certificate.
/// The certificate's chain must be validated separately ([`super::TrustAnchors`]).
pub fn verify(
    cert_der: &[u8],
    method: AuthMethod,
    auth_data: &[u8],
    octets: &[u8],
) -> Result<(), AuthError> {
    let cert_der = CertificateDer::from(cert_der);
    let cert = webpki::EndEntityCert::try_from(&cert_der).map_err(AuthError::BadCertificate)?;
    match method {
        AuthMethod::DIGITAL_SIGNATURE => {
            let (&alg_len, rest) = auth_data
                .split_first()
                .ok_or(AuthError::MalformedAuthData)?;
            let (alg, signature) = rest
                .split_at_checked(usize::from(alg_len))
                .ok_or(AuthError::MalformedAuthData)?;
            let (_, candidates) = VERIFIERS
                .iter()
                .find(|(id, _)| *id == alg)
                .ok_or(AuthError::UnsupportedSignatureAlgorithm)?;
            verify_with(&cert, candidates, octets, signature)
        }
        AuthMethod::ECDSA_SHA256_P256 => {
            if auth_data.len() != RAW_P256_SIGNATURE_LEN {
                return Err(AuthError::MalformedAuthData);
            }
            let signature = p256::ecdsa::Signature::from_slice(auth_data)
                .map_err(|_| AuthError::MalformedAuthData)?;
            let der = signature.to_der();
            verify_with(
                &cert,
                &[webpki::ring::ECDSA_P256_SHA256],
                octets,
                der.as_bytes(),
            )
        }
        other => Err(AuthError::UnsupportedMethod(other)),
    }
}

fn verify_with(
    cert: &webpki::EndEntityCert<'_>,
    candidates: &[&dyn SignatureVerificationAlgorithm],
    octets: &[u8],
    signature: &[u8],
) -> Result<(), AuthError> {
    for alg in candidates {
        match cert.verify_signature(*alg, octets, signature) {
            Ok(()) => return Ok(()),
            Err(webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(_)) => continue,
            Err(e) => {
                debug!(error = %e, "AUTH signature does not verify");
                return Err(AuthError::Mismatch);
            }
        }
    }
    Err(AuthError::KeyMismatch)
}
