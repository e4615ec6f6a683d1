//! CRLs from several sources reach the trust anchors the engine uses: a changed file, the
//! newest CRL of an issuer winning, and reloads keeping them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use iiptran_certs::{Algorithm, Ca, MemStore, NodeId, unix_now};
use rustls_pki_types::CertificateDer;

use super::*;

struct Dir(PathBuf);

impl Dir {
    fn new() -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("iiptran-credentials-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const ENDPOINT_A: &str = "192.0.2.1";
const ENDPOINT_B: &str = "192.0.2.2";

/// A node certificate from `ca` for `name`.vn.example and its PKCS#8 PEM key.
fn issue(ca: &Ca, name: &str, endpoint: &str, now: u64) -> (CertificateDer<'static>, String) {
    let id: NodeId = format!("{name}.vn.example").parse().unwrap();
    let key = Algorithm::Ed25519.generate().unwrap();
    let csr = id.cert_params().unwrap().serialize_request(&key).unwrap();
    let token = ca
        .create_token(&id, endpoint.parse().unwrap(), Duration::from_secs(60), now)
        .unwrap();
    let cert = ca
        .enroll(&token.reveal(), csr.der(), Duration::from_secs(3600), now)
        .unwrap();
    (cert, iiptran_certs::key_pem(&key).to_string())
}

fn serial(cert: &[u8]) -> String {
    let (_, x509) = x509_parser::parse_x509_certificate(cert).unwrap();
    hex::encode(x509.raw_serial())
}

/// Node a's configuration with b as a neighbor authenticated by certificates.
fn config(dir: &Path) -> Config {
    let text = format!(
        "[node]\nname = \"a\"\nidentity = \"a.vn.example\"\nendpoint = \"{ENDPOINT_A}\"\n\
         [auth]\nca = \"ca.pem\"\ncert = \"a.pem\"\nkey = \"a.key\"\ncrl = \"ca.crl\"\n\
         [[neighbor]]\nname = \"b\"\nidentity = \"b.vn.example\"\nendpoint = \"{ENDPOINT_B}\"\n\
         link = {{ name = \"vn-b\" }}\n"
    );
    Config::parse(&text, "a.toml", dir).unwrap()
}

fn accepts(credentials: &NodeCredentials, cert: &[u8]) -> bool {
    let anchors = credentials.current().unwrap().anchors.clone();
    anchors
        .validate(cert, &[], SystemTime::now(), &anchors.crls())
        .is_ok()
}

#[test]
fn the_newest_crl_of_each_source_reaches_the_anchors_and_survives_reloads() {
    let dir = Dir::new();
    let now = unix_now();
    let ca = Ca::init(
        &dir.0.join("ca"),
        "vn.example",
        Algorithm::Ed25519,
        Duration::from_secs(86_400),
        now - 60,
        Arc::new(MemStore::default()),
    )
    .unwrap();
    let (cert_a, key_a) = issue(&ca, "a", ENDPOINT_A, now - 30);
    let (cert_b, _) = issue(&ca, "b", ENDPOINT_B, now - 30);
    let write = |name: &str, data: &[u8], mode: u32| {
        iiptran_certs::write_atomic(&dir.0.join(name), data, mode).unwrap();
    };
    write("a.key", key_a.as_bytes(), 0o600);
    write(
        "a.pem",
        iiptran_certs::to_pem("CERTIFICATE", &cert_a).as_bytes(),
        0o644,
    );
    write(
        "ca.pem",
        iiptran_certs::to_pem("CERTIFICATE", ca.cert()).as_bytes(),
        0o644,
    );
    let config = config(&dir.0);
    let credentials = NodeCredentials::load(&config).unwrap();
    assert!(accepts(&credentials, &cert_b), "no CRL yet");

    // The file as `iiptranctl ca crl` writes it: PEM, before any revocation.
    let before = ca.crl(now - 20).unwrap();
    write(
        "ca.crl",
        iiptran_certs::to_pem("X509 CRL", &before).as_bytes(),
        0o644,
    );
    let file = config.auth.as_ref().unwrap().crl.clone().unwrap();
    let from_file = read_crl_file(&file).unwrap();
    assert_eq!(from_file, before.to_vec());
    assert!(
        credentials
            .set_crl(CrlSource::File, from_file.clone(), "file")
            .unwrap()
    );
    assert!(
        !credentials
            .set_crl(CrlSource::File, from_file, "file")
            .unwrap()
    );
    assert!(accepts(&credentials, &cert_b));

    let b_serial = serial(&cert_b);
    ca.revoke(&b_serial, now - 10).unwrap();
    let after = ca.crl(now - 10).unwrap().to_vec();
    credentials
        .set_crl(CrlSource::Server, after, "https://ca")
        .unwrap();
    // The file's older CRL of the same CA, which does not revoke b, no longer counts.
    assert!(!accepts(&credentials, &cert_b), "b is revoked");
    assert!(accepts(&credentials, &cert_a), "a is not");
    let report = credentials.crl_report(ca.cert()).unwrap();
    assert_eq!(report.source, "https://ca");
    assert_eq!(report.revoked, [b_serial]);

    // A reload makes new anchors; they get the CRLs too.
    credentials.reload(&config).unwrap();
    assert!(!accepts(&credentials, &cert_b), "revoked after a reload");

    // Without the server's CRL only the file's is left, which revokes nothing.
    credentials.drop_crl(CrlSource::Server);
    assert!(accepts(&credentials, &cert_b));
    assert!(
        credentials
            .crl_report(ca.cert())
            .unwrap()
            .revoked
            .is_empty()
    );

    // A CRL that does not parse changes nothing.
    assert!(
        credentials
            .set_crl(CrlSource::File, b"junk".to_vec(), "file")
            .is_err()
    );
    assert_eq!(credentials.crl_report(ca.cert()).unwrap().source, "file");
}

#[test]
fn a_crl_not_signed_by_its_issuers_ca_certificate_is_refused() {
    let dir = Dir::new();
    let now = unix_now();
    let init = |sub: &str| {
        Ca::init(
            &dir.0.join(sub),
            "vn.example",
            Algorithm::Ed25519,
            Duration::from_secs(86_400),
            now - 60,
            Arc::new(MemStore::default()),
        )
        .unwrap()
    };
    let write = |name: &str, data: &[u8], mode: u32| {
        iiptran_certs::write_atomic(&dir.0.join(name), data, mode).unwrap();
    };
    let use_ca = |ca: &Ca| {
        let (cert_a, key_a) = issue(ca, "a", ENDPOINT_A, now - 30);
        write("a.key", key_a.as_bytes(), 0o600);
        let pem = |der: &[u8]| iiptran_certs::to_pem("CERTIFICATE", der);
        write("a.pem", pem(&cert_a).as_bytes(), 0o644);
        write("ca.pem", pem(ca.cert()).as_bytes(), 0o644);
    };
    // Two CAs of the same name: the second one's CRLs name the first one as issuer too.
    let ca = init("ca");
    let impostor = init("impostor");
    use_ca(&ca);
    let config = config(&dir.0);
    let credentials = NodeCredentials::load(&config).unwrap();
    let (cert_b, _) = issue(&ca, "b", ENDPOINT_B, now - 30);
    ca.revoke(&serial(&cert_b), now - 20).unwrap();
    credentials
        .set_crl(CrlSource::File, ca.crl(now - 10).unwrap().to_vec(), "file")
        .unwrap();
    assert!(!accepts(&credentials, &cert_b), "b is revoked");

    // Newer and revoking nothing, but signed by another key: refused, and the CA's own
    // CRL stays in use.
    let forged = impostor.crl(now - 5).unwrap().to_vec();
    let refused = credentials
        .set_crl(CrlSource::Server, forged, "https://ca")
        .unwrap_err();
    assert!(refused.contains("signature"), "{refused}");
    assert!(!accepts(&credentials, &cert_b), "still revoked");
    assert_eq!(credentials.crl_report(ca.cert()).unwrap().source, "file");

    // The node moves to the other CA: the first CA's CRL, although newer, no longer
    // counts, and the new CA's own CRL does.
    use_ca(&impostor);
    credentials.reload(&config).unwrap();
    let (cert_b2, _) = issue(&impostor, "b", ENDPOINT_B, now - 30);
    impostor.revoke(&serial(&cert_b2), now - 50).unwrap();
    credentials
        .set_crl(
            CrlSource::Server,
            impostor.crl(now - 40).unwrap().to_vec(),
            "https://ca",
        )
        .unwrap();
    assert!(
        !accepts(&credentials, &cert_b2),
        "revoked by its own CA's CRL"
    );
    let report = credentials.crl_report(impostor.cert()).unwrap();
    assert_eq!(report.source, "https://ca");
}
