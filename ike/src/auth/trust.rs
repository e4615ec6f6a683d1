//! Validation of the peer's certificate chain against the VN's CA certificates.

use super::{AuthError, CA_HASH_LEN, ca_hash};
use crate::identity::{Identity, cert_matches_identity};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, TrustAnchor, UnixTime};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};
use webpki::{
    BorrowedCertRevocationList, CertRevocationList, ExtendedKeyUsageValidator, KeyPurposeId,
    KeyPurposeIdIter, KeyUsage, RequiredEkuNotFoundContext, RevocationOptionsBuilder,
    UnknownStatusPolicy,
};

/// Signature algorithms accepted on certificates and CRLs.
const CHAIN_ALGORITHMS: &[&dyn SignatureVerificationAlgorithm] = &[
    super::ed25519::ED25519,
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
];

/// id-kp-ipsecIKE, 1.3.6.1.5.5.7.3.17 (RFC 4945 §5.1.3.12), DER contents.
const EKU_IPSEC_IKE: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x11];
/// id-kp-serverAuth, 1.3.6.1.5.5.7.3.1 (RFC 5280 §4.2.1.12), DER contents.
const EKU_SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
/// id-kp-clientAuth, 1.3.6.1.5.5.7.3.2 (RFC 5280 §4.2.1.12), DER contents.
const EKU_CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];

/// The CA certificates peers' chains must lead to, and the CRLs (DER) the engine checks
/// peers' certificates against; the CRLs can be replaced while the anchors are in use.
#[derive(Debug)]
pub struct TrustAnchors {
    anchors: Vec<TrustAnchor<'static>>,
    /// The anchors' certificates (DER), which CRLs are checked against as they are set.
    certs: Vec<Vec<u8>>,
    ca_hashes: Vec<[u8; CA_HASH_LEN]>,
    crls: RwLock<Crls>,
    passed: Mutex<HashMap<[u8; 32], Passed>>,
}

#[derive(Debug, Default)]
struct Crls {
    ders: Arc<Vec<Vec<u8>>>,
    /// Counts replacements: a chain that passed holds for the CRLs it was checked against.
    generation: u64,
}

/// A chain that validated: against which CRLs, and the time span (Unix seconds) within
/// every validity period of its certificates.
#[derive(Clone, Copy, Debug)]
struct Passed {
    crls: u64,
    not_before: u64,
    not_after: u64,
}

/// Chains remembered at most; more are forgotten all at once. Only chains that passed
/// get in, so a peer must hold a certificate of the VN to take a place.
const PASSED_CHAINS: usize = 1024;

/// A peer certificate whose chain validated.
#[derive(Clone, Debug)]
pub struct ValidatedPeer {
    end_entity: Vec<u8>,
}

impl ValidatedPeer {
    pub fn cert_der(&self) -> &[u8] {
        &self.end_entity
    }

    /// Whether the certificate is issued for the identity the peer claimed in its ID
    /// payload; a mismatch is an authentication failure.
    pub fn matches(&self, identity: &Identity) -> bool {
        cert_matches_identity(&self.end_entity, identity)
    }
}

/// IKE peers accept a certificate with no extended key usage (as strongSwan does) or one
/// naming IKE, TLS server or TLS client authentication.
struct IkeKeyUsage;

impl ExtendedKeyUsageValidator for IkeKeyUsage {
    fn validate(&self, iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        let accepted = [EKU_IPSEC_IKE, EKU_SERVER_AUTH, EKU_CLIENT_AUTH].map(KeyPurposeId::new);
        let mut present = Vec::new();
        for purpose in iter {
            let purpose = purpose?;
            if accepted.contains(&purpose) {
                return Ok(());
            }
            present.push(purpose.to_decoded_oid());
        }
        if present.is_empty() {
            Ok(())
        } else {
            Err(webpki::Error::RequiredEkuNotFoundContext(
                RequiredEkuNotFoundContext {
                    required: KeyUsage::required_if_present(EKU_IPSEC_IKE),
                    present,
                },
            ))
        }
    }
}

impl TrustAnchors {
    /// Every certificate in a PEM bundle becomes an anchor.
    pub fn from_pem(pem: &[u8]) -> Result<Self, AuthError> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .map(|c| c.map(|c| c.to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(AuthError::Pem)?;
        Self::from_der(&certs)
    }

    pub fn from_der(certs: &[Vec<u8>]) -> Result<Self, AuthError> {
        let anchors = certs
            .iter()
            .map(|der| {
                webpki::anchor_from_trusted_cert(&CertificateDer::from(der.as_slice()))
                    .map(|anchor| anchor.to_owned())
                    .map_err(AuthError::BadCertificate)
            })
            .collect::<Result<Vec<_>, _>>()?;
        if anchors.is_empty() {
            return Err(AuthError::NoTrustAnchor);
        }
        let ca_hashes = certs
            .iter()
            .map(|der| {
                x509_parser::parse_x509_certificate(der)
                    .map(|(_, cert)| ca_hash(cert.tbs_certificate.subject_pki.raw))
                    .map_err(|_| AuthError::BadCertificate(webpki::Error::BadDer))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            anchors,
            certs: certs.to_vec(),
            ca_hashes,
            crls: RwLock::default(),
            passed: Mutex::default(),
        })
    }

    /// The Certification Authority field of our CERTREQ payloads: the SHA-1 hash of each
    /// anchor's SubjectPublicKeyInfo (RFC 7296 §3.7), which lets the peer pick its
    /// certificate.
    pub fn certreq_data(&self) -> Vec<u8> {
        self.ca_hashes.concat()
    }

    /// Replaces the CRLs the engine checks peers' certificates against, for example when
    /// the CA has published a new one. Every CRL must pass [`check_crl`](Self::check_crl);
    /// otherwise nothing changes.
    pub fn set_crls(&self, crls: Vec<Vec<u8>>) -> Result<(), AuthError> {
        for der in &crls {
            self.check_crl(der)?;
        }
        let mut current = self.crls.write().unwrap_or_else(PoisonError::into_inner);
        current.ders = Arc::new(crls);
        current.generation += 1;
        Ok(())
    }

    /// Checks a CRL before it is used: it must parse and, when its issuer is the subject of
    /// an anchor, be signed by that anchor's key. A CRL signed by another key would fail
    /// the chain of every peer of that CA; one of an intermediate CA is checked with the
    /// chain that leads through it, as webpki does for every CRL.
    pub fn check_crl(&self, der: &[u8]) -> Result<(), AuthError> {
        BorrowedCertRevocationList::from_der(der).map_err(AuthError::BadCrl)?;
        let (_, crl) = x509_parser::parse_x509_crl(der)
            .map_err(|_| AuthError::BadCrl(webpki::Error::BadDer))?;
        let issuer = crl.issuer().as_raw();
        let mut keys = self
            .certs
            .iter()
            .filter_map(|der| x509_parser::parse_x509_certificate(der).ok())
            .filter(|(_, ca)| ca.subject().as_raw() == issuer)
            .peekable();
        if keys.peek().is_none() {
            return Ok(());
        }
        if keys.any(|(_, ca)| crl.verify_signature(ca.public_key()).is_ok()) {
            Ok(())
        } else {
            Err(AuthError::CrlSignature)
        }
    }

    /// The CRLs last set with [`set_crls`](Self::set_crls).
    pub fn crls(&self) -> Arc<Vec<Vec<u8>>> {
        self.current_crls().0
    }

    fn current_crls(&self) -> (Arc<Vec<Vec<u8>>>, u64) {
        let current = self.crls.read().unwrap_or_else(PoisonError::into_inner);
        (current.ders.clone(), current.generation)
    }

    /// [`validate`](Self::validate) against the CRLs last set. A chain that passed is
    /// remembered, and the same chain again passes on its hash alone while the CRLs are
    /// unchanged and `now` is within its certificates' validity: a peer that comes back
    /// costs no signature check of its chain.
    pub fn validate_peer(
        &self,
        end_entity: &[u8],
        intermediates: &[Vec<u8>],
        now: SystemTime,
    ) -> Result<ValidatedPeer, AuthError> {
        let (crls, generation) = self.current_crls();
        let key = chain_hash(end_entity, intermediates);
        let seconds = now
            .duration_since(UNIX_EPOCH)
            .map_err(|_| AuthError::BadTime)?
            .as_secs();
        let remembered = self
            .passed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .copied();
        if let Some(p) = remembered
            && p.crls == generation
            && (p.not_before..=p.not_after).contains(&seconds)
        {
            return Ok(ValidatedPeer {
                end_entity: end_entity.to_vec(),
            });
        }
        let validated = self.validate(end_entity, intermediates, now, &crls)?;
        if let Some((not_before, not_after)) = validity(end_entity, intermediates) {
            let mut passed = self.passed.lock().unwrap_or_else(PoisonError::into_inner);
            if passed.len() >= PASSED_CHAINS {
                passed.clear();
            }
            passed.insert(
                key,
                Passed {
                    crls: generation,
                    not_before,
                    not_after,
                },
            );
        }
        Ok(validated)
    }

    /// Validates `end_entity` at time `now`: validity periods, a chain through
    /// `intermediates` to an anchor, signature algorithms, extended key usage, and
    /// revocation against `crls` (DER) when any are given. A certificate whose issuer has
    /// no CRL among them counts as not revoked.
    pub fn validate(
        &self,
        end_entity: &[u8],
        intermediates: &[Vec<u8>],
        now: SystemTime,
        crls: &[Vec<u8>],
    ) -> Result<ValidatedPeer, AuthError> {
        let since_epoch = now
            .duration_since(UNIX_EPOCH)
            .map_err(|_| AuthError::BadTime)?;
        let end_entity_der = CertificateDer::from(end_entity);
        let cert =
            webpki::EndEntityCert::try_from(&end_entity_der).map_err(AuthError::BadCertificate)?;
        let intermediates: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .map(|der| CertificateDer::from(der.as_slice()))
            .collect();
        let crls = crls
            .iter()
            .map(|der| {
                BorrowedCertRevocationList::from_der(der)
                    .map(CertRevocationList::from)
                    .map_err(AuthError::BadCrl)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let crl_refs: Vec<&CertRevocationList<'_>> = crls.iter().collect();
        let revocation = RevocationOptionsBuilder::new(&crl_refs)
            .ok()
            .map(|builder| {
                builder
                    .with_status_policy(UnknownStatusPolicy::Allow)
                    .build()
            });
        cert.verify_for_usage(
            CHAIN_ALGORITHMS,
            &self.anchors,
            &intermediates,
            UnixTime::since_unix_epoch(since_epoch),
            IkeKeyUsage,
            revocation,
            None,
        )
        .map_err(AuthError::Chain)?;
        Ok(ValidatedPeer {
            end_entity: end_entity.to_vec(),
        })
    }
}

#[cfg(test)]
impl TrustAnchors {
    /// How many chains that passed are remembered.
    pub(super) fn remembered(&self) -> usize {
        self.passed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// SHA-256 over the chain as sent, each certificate preceded by its length.
fn chain_hash(end_entity: &[u8], intermediates: &[Vec<u8>]) -> [u8; 32] {
    let mut h = Sha256::new();
    for der in std::iter::once(end_entity).chain(intermediates.iter().map(Vec::as_slice)) {
        h.update((der.len() as u64).to_be_bytes());
        h.update(der);
    }
    h.finalize().into()
}

/// The span within every certificate's validity period, in Unix seconds: the chain that
/// validated may use fewer of the intermediates than were sent, so this may be narrower
/// than its own, never wider.
fn validity(end_entity: &[u8], intermediates: &[Vec<u8>]) -> Option<(u64, u64)> {
    use x509_parser::nom::Parser as _;
    let mut span = (0u64, u64::MAX);
    // Only the validity is read: the extensions need not be decoded.
    let mut parser =
        x509_parser::certificate::X509CertificateParser::new().with_deep_parse_extensions(false);
    for der in std::iter::once(end_entity).chain(intermediates.iter().map(Vec::as_slice)) {
        let (_, cert) = parser.parse(der).ok()?;
        let v = cert.validity();
        let not_before = u64::try_from(v.not_before.timestamp()).unwrap_or(0);
        let not_after = u64::try_from(v.not_after.timestamp()).ok()?;
        span = (span.0.max(not_before), span.1.min(not_after));
    }
    Some(span)
}
