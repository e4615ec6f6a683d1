//! The VN certificate authority: its key and certificate on disk, token issuance, and
//! certificate issuance under the token and renewal rules.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams,
    CertificateSigningRequestParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, PublicKeyData, RevokedCertParams, SanType,
    SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{
    CertificateDer, CertificateRevocationListDer, CertificateSigningRequestDer,
};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::UnixSecs;
use crate::files::write_atomic;
use crate::identity::NodeId;
use crate::store::{CaStore, IssuedRecord, StoreError};
use crate::token::{JoinToken, TokenError, TokenRecord};

const KEY_FILE: &str = "ca.key";
const CERT_FILE: &str = "ca.pem";
const DB_DIR: &str = "db";
/// id-kp-ipsecIKE (RFC 4945 §5.1.3.12).
const KP_IPSEC_IKE: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 3, 17];
/// How long a CRL is valid; daemons refetch well before.
const CRL_VALIDITY: u64 = 86_400;

/// The signature algorithm of a key pair made by this project.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Algorithm {
    #[default]
    Ed25519,
    /// ECDSA on P-256 with SHA-256.
    P256,
}

impl Algorithm {
    /// A fresh key pair.
    pub fn generate(self) -> Result<KeyPair, rcgen::Error> {
        KeyPair::generate_for(match self {
            Self::Ed25519 => &rcgen::PKCS_ED25519,
            Self::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        })
    }
}

impl FromStr for Algorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "ed25519" => Ok(Self::Ed25519),
            "p256" | "p-256" | "ecdsa-p256" => Ok(Self::P256),
            _ => Err(format!(
                "unknown key algorithm {s:?}: expected ed25519 or p256"
            )),
        }
    }
}

/// SHA-256 of a DER certificate: how operators pin the CA.
pub fn fingerprint(cert_der: &[u8]) -> [u8; 32] {
    Sha256::digest(cert_der).into()
}

/// A CA setup or maintenance failure.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("a CA already exists in {0}")]
    Exists(String),
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("random number generator: {0}")]
    Random(#[from] getrandom::Error),
}

/// Why an enrollment or renewal was refused. The enrollment service maps each to an HTTP
/// status; the messages are safe to show to the client.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("bad certificate request: {0}")]
    BadCsr(String),
    #[error("the certificate request does not name the identity {0} (subject CN or SAN)")]
    IdentityMismatch(String),
    #[error("client certificate not acceptable: {0}")]
    BadClientCert(String),
    #[error("certificate {0} is revoked")]
    Revoked(String),
    #[error("internal error")]
    Internal(String),
}

impl From<StoreError> for IssueError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Token(t) => Self::Token(t),
            StoreError::Revoked(serial) => Self::Revoked(serial),
            StoreError::UnknownSerial(serial) => {
                Self::BadClientCert(format!("serial {serial} was not issued by this CA"))
            }
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<rcgen::Error> for IssueError {
    fn from(e: rcgen::Error) -> Self {
        Self::Internal(e.to_string())
    }
}

/// The VN's certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert: CertificateDer<'static>,
    store: Arc<dyn CaStore>,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("fingerprint", &hex::encode(self.fingerprint()))
            .finish()
    }
}

impl Ca {
    /// Creates a CA in `dir`: `ca.key` (mode 0600) and a self-signed `ca.pem`.
    pub fn init(
        dir: &Path,
        name: &str,
        algorithm: Algorithm,
        validity: Duration,
        now: UnixSecs,
        store: Arc<dyn CaStore>,
    ) -> Result<Self, CaError> {
        let key_path = dir.join(KEY_FILE);
        if key_path.exists() {
            return Err(CaError::Exists(dir.display().to_string()));
        }
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let key = algorithm.generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial()?.0);
        params.not_before = at(now.saturating_sub(300))?;
        params.not_after = at(now.saturating_add(validity.as_secs()))?;
        let cert = params.self_signed(&key)?;
        let key_pem = crate::key_pem(&key);
        write_atomic(&key_path, key_pem.as_bytes(), 0o600).map_err(io_err(&key_path))?;
        let cert_path = dir.join(CERT_FILE);
        write_atomic(&cert_path, cert.pem().as_bytes(), 0o644).map_err(io_err(&cert_path))?;
        Ok(Self {
            issuer: Issuer::new(params, key),
            cert: cert.der().clone(),
            store,
        })
    }

    /// Where the CA database lives inside a CA directory.
    pub fn db_path(dir: &Path) -> std::path::PathBuf {
        dir.join(DB_DIR)
    }

    /// Loads the CA that [`init`](Self::init) made in `dir`.
    pub fn open(dir: &Path, store: Arc<dyn CaStore>) -> Result<Self, CaError> {
        let key_path = dir.join(KEY_FILE);
        let key_pem =
            Zeroizing::new(std::fs::read_to_string(&key_path).map_err(io_err(&key_path))?);
        let key = KeyPair::from_pem(&key_pem)?;
        let cert_path = dir.join(CERT_FILE);
        let cert = CertificateDer::from_pem_file(&cert_path)
            .map_err(|e| CaError::Invalid(format!("{}: {e}", cert_path.display())))?;
        let issuer = Issuer::from_ca_cert_der(&cert, key)?;
        if !spki_matches(&cert, issuer.key())? {
            return Err(CaError::Invalid(format!(
                "{KEY_FILE} does not belong to {CERT_FILE}"
            )));
        }
        Ok(Self {
            issuer,
            cert,
            store,
        })
    }

    /// The CA certificate.
    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// SHA-256 of the CA certificate.
    pub fn fingerprint(&self) -> [u8; 32] {
        fingerprint(&self.cert)
    }

    /// The CA database.
    pub fn store(&self) -> &dyn CaStore {
        self.store.as_ref()
    }

    /// Makes and stores a single-use token for `identity` at `endpoint`, valid for `ttl`.
    pub fn create_token(
        &self,
        identity: &NodeId,
        endpoint: IpAddr,
        ttl: Duration,
        now: UnixSecs,
    ) -> Result<JoinToken, CaError> {
        let token = JoinToken::generate()?;
        self.store.put_token(&TokenRecord {
            hash: token.hash(),
            identity: identity.to_string(),
            endpoint,
            created: now,
            expires: now.saturating_add(ttl.as_secs()),
            used: None,
        })?;
        Ok(token)
    }

    /// Issues a node certificate for a CSR authorised by a join token. Identity and
    /// endpoint come from the token; the CSR contributes only its key and must name the
    /// token's identity. The token is spent in the same transaction that records the serial.
    pub fn enroll(
        &self,
        token: &str,
        csr_der: &[u8],
        lifetime: Duration,
        now: UnixSecs,
    ) -> Result<CertificateDer<'static>, IssueError> {
        let hash = JoinToken::parse(token)?.hash();
        let record = self.store.token(&hash)?.ok_or(TokenError::Unknown)?;
        record.check(&hash, now)?;
        let identity = parse_identity(&record.identity)?;
        let csr = parse_csr(csr_der, &identity)?;
        let (cert, issued) =
            self.issue_node(&csr, &identity, record.endpoint, None, lifetime, now)?;
        self.store.redeem_token_and_record(&hash, now, &issued)?;
        Ok(cert)
    }

    /// Renews the certificate `current` (already authenticated by TLS): it must be ours,
    /// valid at `now` and not revoked; the new one keeps its identity and endpoint.
    pub fn reenroll(
        &self,
        current: &CertificateDer<'_>,
        csr_der: &[u8],
        lifetime: Duration,
        now: UnixSecs,
    ) -> Result<CertificateDer<'static>, IssueError> {
        let serial = self.check_own_cert(current, now)?;
        let old = self
            .store
            .issued(&serial)?
            .ok_or_else(|| IssueError::BadClientCert(format!("serial {serial} unknown")))?;
        if old.revoked_at.is_some() {
            return Err(IssueError::Revoked(serial));
        }
        let endpoint = old.endpoint.ok_or_else(|| {
            IssueError::BadClientCert("the enrollment server's certificate cannot renew".into())
        })?;
        let identity = parse_identity(&old.identity)?;
        let csr = parse_csr(csr_der, &identity)?;
        let (cert, issued) =
            self.issue_node(&csr, &identity, endpoint, Some(serial), lifetime, now)?;
        self.store.record_reissue(&issued)?;
        Ok(cert)
    }

    /// Issues the enrollment service's TLS certificate for `names` (DNS names or IPs) and
    /// a fresh key, and records it.
    pub fn issue_server(
        &self,
        names: &[NodeId],
        lifetime: Duration,
        now: UnixSecs,
    ) -> Result<(CertificateDer<'static>, KeyPair), CaError> {
        let first = names
            .first()
            .ok_or_else(|| CaError::Invalid("the server needs at least one name".into()))?;
        let key = Algorithm::Ed25519.generate()?;
        let invalid = |e: crate::IdentityError| CaError::Invalid(e.to_string());
        let mut params = first.cert_params().map_err(invalid)?;
        params.subject_alt_names = names
            .iter()
            .map(NodeId::san)
            .collect::<Result<_, _>>()
            .map_err(invalid)?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let (serial, issued) = self.fill_common(&mut params, first, None, None, lifetime, now)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        self.store.record_issued(&issued)?;
        tracing::info!(serial, "issued the enrollment server certificate");
        Ok((cert.der().clone(), key))
    }

    /// Revokes a certificate by serial (hex).
    pub fn revoke(&self, serial: &str, now: UnixSecs) -> Result<IssuedRecord, CaError> {
        Ok(self.store.revoke(&serial.to_ascii_lowercase(), now)?)
    }

    /// A CRL signed by the CA listing every revoked certificate that has not yet expired.
    pub fn crl(&self, now: UnixSecs) -> Result<CertificateRevocationListDer<'static>, CaError> {
        let mut revoked_certs = Vec::new();
        for rec in self.store.list()? {
            if let Some(when) = rec.revoked_at.filter(|_| rec.not_after > now) {
                let serial = hex::decode(&rec.serial)
                    .map_err(|_| CaError::Invalid(format!("stored serial {:?}", rec.serial)))?;
                revoked_certs.push(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&serial),
                    revocation_time: at(when)?,
                    reason_code: None,
                    invalidity_date: None,
                });
            }
        }
        let params = CertificateRevocationListParams {
            this_update: at(now)?,
            next_update: at(now.saturating_add(CRL_VALIDITY))?,
            crl_number: SerialNumber::from_slice(&now.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.der().clone())
    }

    fn issue_node(
        &self,
        csr: &CertificateSigningRequestParams,
        identity: &NodeId,
        endpoint: IpAddr,
        renews: Option<String>,
        lifetime: Duration,
        now: UnixSecs,
    ) -> Result<(CertificateDer<'static>, IssuedRecord), IssueError> {
        let mut params = identity
            .cert_params()
            .map_err(|e| IssueError::Internal(e.to_string()))?;
        if *identity != NodeId::Ip(endpoint) {
            params.subject_alt_names.push(SanType::IpAddress(endpoint));
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::Other(KP_IPSEC_IKE.to_vec()),
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let (_, issued) = self
            .fill_common(&mut params, identity, Some(endpoint), renews, lifetime, now)
            .map_err(|e| IssueError::Internal(e.to_string()))?;
        let cert = params.signed_by(&csr.public_key, &self.issuer)?;
        tracing::info!(
            serial = issued.serial,
            identity = issued.identity,
            "issued certificate"
        );
        Ok((cert.der().clone(), issued))
    }

    /// Serial, validity and key identifiers shared by every certificate the CA issues.
    fn fill_common(
        &self,
        params: &mut CertificateParams,
        identity: &NodeId,
        endpoint: Option<IpAddr>,
        renews: Option<String>,
        lifetime: Duration,
        now: UnixSecs,
    ) -> Result<(String, IssuedRecord), CaError> {
        let (serial, serial_hex) = random_serial()?;
        // Tolerate a little clock skew between nodes without eating short test lifetimes.
        let not_before = now.saturating_sub((lifetime.as_secs() / 10).min(300));
        let not_after = now.saturating_add(lifetime.as_secs());
        params.serial_number = Some(serial);
        params.not_before = at(not_before)?;
        params.not_after = at(not_after)?;
        params.use_authority_key_identifier_extension = true;
        let issued = IssuedRecord {
            serial: serial_hex.clone(),
            identity: identity.to_string(),
            endpoint,
            not_before,
            not_after,
            renews,
            revoked_at: None,
        };
        Ok((serial_hex, issued))
    }

    /// Checks that `cert` is signed by this CA and valid at `now`; returns its serial.
    fn check_own_cert(
        &self,
        cert: &CertificateDer<'_>,
        now: UnixSecs,
    ) -> Result<String, IssueError> {
        let bad = |what: &str| IssueError::BadClientCert(what.to_owned());
        let (_, ca) = x509_parser::parse_x509_certificate(&self.cert)
            .map_err(|e| IssueError::Internal(e.to_string()))?;
        let (_, x509) = x509_parser::parse_x509_certificate(cert).map_err(|_| bad("unparsable"))?;
        x509.verify_signature(Some(ca.public_key()))
            .map_err(|_| bad("not signed by this CA"))?;
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        let validity = x509.validity();
        if now < validity.not_before.timestamp() || now >= validity.not_after.timestamp() {
            return Err(bad("outside its validity period"));
        }
        Ok(hex::encode(x509.raw_serial()))
    }
}

fn parse_identity(text: &str) -> Result<NodeId, IssueError> {
    text.parse()
        .map_err(|e: crate::IdentityError| IssueError::Internal(e.to_string()))
}

fn parse_csr(der: &[u8], identity: &NodeId) -> Result<CertificateSigningRequestParams, IssueError> {
    let csr = CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(der))
        .map_err(|e| IssueError::BadCsr(e.to_string()))?;
    if !identity.requested_by(&csr.params) {
        return Err(IssueError::IdentityMismatch(identity.to_string()));
    }
    Ok(csr)
}

/// A positive 126-bit random serial whose first byte is never zero, so its DER encoding
/// and its hex form agree byte for byte.
fn random_serial() -> Result<(SerialNumber, String), getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    bytes[0] = (bytes[0] & 0x3f) | 0x40;
    Ok((SerialNumber::from_slice(&bytes), hex::encode(bytes)))
}

fn spki_matches(cert: &CertificateDer<'_>, key: &KeyPair) -> Result<bool, CaError> {
    let (_, x509) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| CaError::Invalid(format!("{CERT_FILE}: {e}")))?;
    Ok(x509.public_key().raw == key.subject_public_key_info().as_slice())
}

fn at(secs: UnixSecs) -> Result<OffsetDateTime, CaError> {
    i64::try_from(secs)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .ok_or_else(|| CaError::Invalid(format!("time {secs} out of range")))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::*;

    use super::*;
    use crate::MemStore;
    use crate::testutil::{self, TempDir};

    const NOW: UnixSecs = 1_800_000_000;
    const DAY: Duration = Duration::from_secs(86_400);

    fn new_ca(algorithm: Algorithm) -> (TempDir, Ca) {
        testutil::new_ca(algorithm, NOW)
    }

    fn csr(names: &[&str], key: &KeyPair) -> Vec<u8> {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.serialize_request(key).unwrap().der().to_vec()
    }

    fn token(ca: &Ca, identity: &str) -> String {
        let id: NodeId = identity.parse().unwrap();
        let token = ca
            .create_token(
                &id,
                "192.0.2.2".parse().unwrap(),
                3600 * Duration::from_secs(1),
                NOW,
            )
            .unwrap();
        token.reveal().to_string()
    }

    fn sans(cert: &X509Certificate<'_>) -> Vec<String> {
        cert.subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(s) => format!("dns:{s}"),
                GeneralName::RFC822Name(s) => format!("email:{s}"),
                GeneralName::IPAddress([a, b, c, d]) => format!("ip:{a}.{b}.{c}.{d}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn init_writes_private_key_and_reopens() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, ca) = new_ca(Algorithm::P256);
        let mode = std::fs::metadata(dir.0.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = Ca::open(&dir.0, Arc::new(MemStore::default())).unwrap();
        assert_eq!(again.fingerprint(), ca.fingerprint());
        let exists = Ca::init(
            &dir.0,
            "x",
            Algorithm::Ed25519,
            DAY,
            NOW,
            Arc::new(MemStore::default()),
        );
        assert!(matches!(exists, Err(CaError::Exists(_))));
        let (_, x509) = parse_x509_certificate(ca.cert()).unwrap();
        assert!(x509.is_ca());
        x509.verify_signature(None).unwrap();
    }

    #[test]
    fn issued_cert_takes_identity_and_endpoint_from_token() {
        for (ca_alg, node_alg) in [
            (Algorithm::Ed25519, Algorithm::Ed25519),
            (Algorithm::P256, Algorithm::Ed25519),
            (Algorithm::Ed25519, Algorithm::P256),
        ] {
            let (_dir, ca) = new_ca(ca_alg);
            let key = node_alg.generate().unwrap();
            // The CSR asks for an extra name; only the token's identity may appear.
            let request = csr(&["b.vn.example", "evil.example", "203.0.113.9"], &key);
            let der = ca
                .enroll(&token(&ca, "b.vn.example"), &request, 30 * DAY, NOW)
                .unwrap();
            let (_, cert) = parse_x509_certificate(&der).unwrap();
            let (_, ca_cert) = parse_x509_certificate(ca.cert()).unwrap();
            cert.verify_signature(Some(ca_cert.public_key())).unwrap();
            assert_eq!(sans(&cert), ["dns:b.vn.example", "ip:192.0.2.2"]);
            assert_eq!(
                cert.public_key().raw,
                key.subject_public_key_info().as_slice()
            );
            let eku = cert.extended_key_usage().unwrap().unwrap().value;
            assert!(eku.client_auth && !eku.server_auth);
            assert_eq!(eku.other.len(), 1);
            assert_eq!(eku.other[0].to_id_string(), "1.3.6.1.5.5.7.3.17");
            let validity = cert.validity();
            assert_eq!(validity.not_after.timestamp() as u64, NOW + 30 * 86_400);
            assert!(validity.not_before.timestamp() as u64 <= NOW);
            let serial = hex::encode(cert.raw_serial());
            let record = ca.store().issued(&serial).unwrap().unwrap();
            assert_eq!(record.identity, "b.vn.example");
            assert_eq!(record.endpoint, Some("192.0.2.2".parse().unwrap()));
        }
    }

    #[test]
    fn email_and_ip_identities() {
        let (_dir, ca) = new_ca(Algorithm::Ed25519);
        let key = Algorithm::Ed25519.generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "ops@vn.example");
        let request = params.serialize_request(&key).unwrap().der().to_vec();
        let der = ca
            .enroll(&token(&ca, "ops@vn.example"), &request, DAY, NOW)
            .unwrap();
        assert_eq!(
            sans(&parse_x509_certificate(&der).unwrap().1),
            ["email:ops@vn.example", "ip:192.0.2.2"]
        );
        let request = csr(&["192.0.2.2"], &key);
        let der = ca
            .enroll(&token(&ca, "192.0.2.2"), &request, DAY, NOW)
            .unwrap();
        assert_eq!(
            sans(&parse_x509_certificate(&der).unwrap().1),
            ["ip:192.0.2.2"]
        );
    }

    #[test]
    fn token_rules() {
        let (_dir, ca) = new_ca(Algorithm::Ed25519);
        let key = Algorithm::Ed25519.generate().unwrap();
        let good = csr(&["b.vn.example"], &key);
        let t = token(&ca, "b.vn.example");

        let wrong = ca
            .enroll(&t, &csr(&["c.vn.example"], &key), DAY, NOW)
            .unwrap_err();
        assert!(matches!(wrong, IssueError::IdentityMismatch(ref id) if id == "b.vn.example"));
        let expired = ca.enroll(&t, &good, DAY, NOW + 3600).unwrap_err();
        assert!(matches!(expired, IssueError::Token(TokenError::Expired)));
        // Refusals did not spend it.
        ca.enroll(&t, &good, DAY, NOW).unwrap();
        let reused = ca.enroll(&t, &good, DAY, NOW).unwrap_err();
        assert!(matches!(reused, IssueError::Token(TokenError::Used)));
        assert_eq!(ca.store().list().unwrap().len(), 1);

        let unknown = JoinToken::generate().unwrap().reveal();
        assert!(matches!(
            ca.enroll(&unknown, &good, DAY, NOW),
            Err(IssueError::Token(TokenError::Unknown))
        ));
        assert!(matches!(
            ca.enroll("not-a-token", &good, DAY, NOW),
            Err(IssueError::Token(TokenError::Malformed))
        ));
    }

    #[test]
    fn malformed_and_forged_csrs() {
        let (_dir, ca) = new_ca(Algorithm::Ed25519);
        let t = token(&ca, "b.vn.example");
        assert!(matches!(
            ca.enroll(&t, b"\x30\x03garbage", DAY, NOW),
            Err(IssueError::BadCsr(_))
        ));
        let mut forged = csr(&["b.vn.example"], &Algorithm::Ed25519.generate().unwrap());
        let last = forged.len() - 1;
        forged[last] ^= 0x55; // inside the signature
        assert!(matches!(
            ca.enroll(&t, &forged, DAY, NOW),
            Err(IssueError::BadCsr(_))
        ));
        assert_eq!(
            ca.store()
                .token(&JoinToken::parse(&t).unwrap().hash())
                .unwrap()
                .unwrap()
                .used,
            None
        );
    }

    #[test]
    fn reenroll_rules() {
        let (_dir, ca) = new_ca(Algorithm::Ed25519);
        let key = Algorithm::Ed25519.generate().unwrap();
        let request = csr(&["b.vn.example"], &key);
        let first = ca
            .enroll(&token(&ca, "b.vn.example"), &request, DAY, NOW)
            .unwrap();
        let second = ca.reenroll(&first, &request, DAY, NOW + 100).unwrap();
        let (_, cert) = parse_x509_certificate(&second).unwrap();
        assert_eq!(sans(&cert), ["dns:b.vn.example", "ip:192.0.2.2"]);
        let old_serial = hex::encode(parse_x509_certificate(&first).unwrap().1.raw_serial());
        let record = ca
            .store()
            .issued(&hex::encode(cert.raw_serial()))
            .unwrap()
            .unwrap();
        assert_eq!(record.renews.as_deref(), Some(old_serial.as_str()));

        let other_identity = csr(&["c.vn.example"], &key);
        assert!(matches!(
            ca.reenroll(&second, &other_identity, DAY, NOW),
            Err(IssueError::IdentityMismatch(_))
        ));
        assert!(matches!(
            ca.reenroll(&first, &request, DAY, NOW + 86_400),
            Err(IssueError::BadClientCert(_))
        ));
        ca.revoke(&old_serial, NOW + 200).unwrap();
        assert!(matches!(
            ca.reenroll(&first, &request, DAY, NOW + 300),
            Err(IssueError::Revoked(_))
        ));

        let (_other_dir, stranger) = new_ca(Algorithm::Ed25519);
        let foreign = stranger
            .enroll(&token(&stranger, "b.vn.example"), &request, DAY, NOW)
            .unwrap();
        assert!(matches!(
            ca.reenroll(&foreign, &request, DAY, NOW),
            Err(IssueError::BadClientCert(_))
        ));
    }

    #[test]
    fn crl_lists_revoked_serials() {
        let (_dir, ca) = new_ca(Algorithm::P256);
        let key = Algorithm::Ed25519.generate().unwrap();
        let request = csr(&["b.vn.example"], &key);
        let kept = ca
            .enroll(&token(&ca, "b.vn.example"), &request, DAY, NOW)
            .unwrap();
        let gone = ca
            .enroll(&token(&ca, "b.vn.example"), &request, DAY, NOW)
            .unwrap();
        let gone_serial = parse_x509_certificate(&gone)
            .unwrap()
            .1
            .raw_serial()
            .to_vec();
        ca.revoke(&hex::encode(&gone_serial), NOW + 10).unwrap();

        let der = ca.crl(NOW + 20).unwrap();
        let (_, crl) = parse_x509_crl(&der).unwrap();
        let (_, ca_cert) = parse_x509_certificate(ca.cert()).unwrap();
        crl.verify_signature(ca_cert.public_key()).unwrap();
        assert_eq!(crl.issuer(), ca_cert.subject());
        let revoked: Vec<_> = crl.iter_revoked_certificates().collect();
        assert_eq!(revoked.len(), 1);
        assert_eq!(revoked[0].raw_serial(), gone_serial.as_slice());
        assert_eq!(revoked[0].revocation_date.timestamp() as u64, NOW + 10);
        assert_ne!(
            parse_x509_certificate(&kept).unwrap().1.raw_serial(),
            gone_serial.as_slice()
        );
        // Once the revoked certificate has expired it drops out of the CRL.
        let later = ca.crl(NOW + 2 * 86_400).unwrap();
        let (_, later) = parse_x509_crl(&later).unwrap();
        assert_eq!(later.iter_revoked_certificates().count(), 0);
    }
}
