//! Clients this project did not write: openssl makes keys and CSRs, curl talks EST to
//! `iiptrand enroll-server`, openssl checks what comes back.

mod enroll_common;

use enroll_common::*;
use iiptran_testkit::WorkDir;
use iiptran_testkit::command::sh;

#[test]
fn openssl_and_curl_enroll() {
    let ca = TestCa::new();
    let bearer = ca.token("b.vn.example", "192.0.2.2", "1h");
    let basic = ca.token("192.0.2.3", "192.0.2.3", "1h");
    let server = ca.serve(&[]);
    let scratch = WorkDir::temp("curl").unwrap();
    let ca_pem = ca.ca_pem();
    let ca_key = key_text(&ca.ca_dir().join("ca.key"));
    assert!(ca_key.contains("ED25519"), "{ca_key}");

    let (status, cacerts) = curl(
        &ca_pem,
        &server.url("/.well-known/est/cacerts"),
        &[],
        &scratch,
    );
    assert_eq!(status, 200);
    let chain = pkcs7_to_pem(&cacerts, &scratch, "cacerts");
    let fingerprint = sh(
        "openssl",
        &[
            "x509",
            "-in",
            path_str(&chain),
            "-noout",
            "-fingerprint",
            "-sha256",
        ],
    );
    assert_eq!(
        fingerprint
            .trim()
            .rsplit('=')
            .next()
            .unwrap()
            .replace(':', "")
            .to_ascii_lowercase(),
        ca.fingerprint
    );

    // Ed25519 key, token as Bearer.
    let csr = openssl_csr(&scratch, "b", "ed25519", "b.vn.example");
    let data = format!("@{}", path_str(&csr));
    let auth = format!("Authorization: Bearer {bearer}");
    let enroll = server.url("/.well-known/est/simpleenroll");
    let args = [
        "-H",
        "Content-Type: application/pkcs10",
        "-H",
        &auth,
        "--data-binary",
        &data,
    ];
    let (status, answer) = curl(&ca_pem, &enroll, &args, &scratch);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let cert = pkcs7_to_pem(&answer, &scratch, "b-cert");
    assert_verifies(&ca_pem, &cert);
    let text = cert_text(&cert);
    assert!(
        text.contains("DNS:b.vn.example, IP Address:192.0.2.2"),
        "{text}"
    );
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    assert!(text.contains("ipsec Internet Key Exchange"), "{text}");
    assert!(text.contains("ED25519"), "{text}");
    // The same token again is refused.
    let (status, _) = curl(&ca_pem, &enroll, &args, &scratch);
    assert_eq!(status, 401);

    // P-256 key, token as the Basic password, identity an IP address.
    let csr = openssl_csr(&scratch, "c", "p256", "192.0.2.3");
    let data = format!("@{}", path_str(&csr));
    let user = format!("node:{basic}");
    let args = [
        "-H",
        "Content-Type: application/pkcs10",
        "-u",
        &user,
        "--data-binary",
        &data,
    ];
    let (status, answer) = curl(&ca_pem, &enroll, &args, &scratch);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let cert = pkcs7_to_pem(&answer, &scratch, "c-cert");
    assert_verifies(&ca_pem, &cert);
    let text = cert_text(&cert);
    assert!(
        text.contains("X509v3 Subject Alternative Name: \n                IP Address:192.0.2.3\n"),
        "{text}"
    );

    // The CRL the server serves is signed by the CA and parses with openssl.
    let (status, crl) = curl(&ca_pem, &server.url("/.well-known/est/crl"), &[], &scratch);
    assert_eq!(status, 200);
    let crl_path = scratch.join("crl.der");
    std::fs::write(&crl_path, crl).unwrap();
    let crl_text = sh(
        "openssl",
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            path_str(&crl_path),
            "-CAfile",
            path_str(&ca_pem),
            "-noout",
            "-text",
        ],
    );
    assert!(crl_text.contains("No Revoked Certificates"), "{crl_text}");

    let list = ca.ctl(&["list"]);
    assert_eq!(
        list.lines().filter(|l| l.ends_with("valid")).count(),
        3,
        "server + two nodes:\n{list}"
    );
}
