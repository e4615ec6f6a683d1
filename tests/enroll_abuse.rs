//! Bad input and abuse against `iiptrand enroll-server`: each case gets its own HTTP
//! status, the server survives all of them, and the CA database records only what was
//! really issued.

mod enroll_common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use enroll_common::*;
use iiptran_testkit::WorkDir;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

/// A raw HTTPS exchange: sends `request` and reads until the server closes or
/// `deadline` passes. Returns what was read and how long it took.
fn raw_exchange(
    ca: &TestCa,
    addr: &str,
    request: &[u8],
    deadline: Duration,
) -> (Vec<u8>, Duration) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca.ca_pem()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(deadline)).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let start = Instant::now();
    tls.write_all(request).unwrap();
    tls.flush().unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                panic!(
                    "server still silent after {deadline:?}; read so far: {:?}",
                    String::from_utf8_lossy(&answer)
                )
            }
            // A close without close_notify or a reset also ends the exchange.
            Err(_) => break,
        }
    }
    (answer, start.elapsed())
}

/// [`raw_exchange`] with a 15 s deadline, reduced to the response's status line.
fn exchange(ca: &TestCa, addr: &str, request: &[u8]) -> (String, Duration) {
    let (answer, took) = raw_exchange(ca, addr, request, Duration::from_secs(15));
    (status_line(&answer), took)
}

fn status_line(answer: &[u8]) -> String {
    String::from_utf8_lossy(answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn bad_input_gets_clear_statuses() {
    let ca = TestCa::new();
    let good = ca.token("b.vn.example", "192.0.2.2", "1h");
    let expiring = ca.token("b.vn.example", "192.0.2.2", "1s");
    let expiring_made = Instant::now();
    let misbound = ca.token("b.vn.example", "192.0.2.2", "1h");
    let server = ca.serve(&["--read-timeout", "2s"]);
    let scratch = WorkDir::temp("abuse").unwrap();
    let ca_pem = ca.ca_pem();
    let enroll = server.url("/.well-known/est/simpleenroll");
    let csr_b = openssl_csr(&scratch, "b", "ed25519", "b.vn.example");
    let csr_x = openssl_csr(&scratch, "x", "ed25519", "x.vn.example");
    let pkcs10 = "Content-Type: application/pkcs10";
    let post = |token: &str, content_type: &str, body_file: &std::path::Path| {
        let auth = format!("Authorization: Bearer {token}");
        let data = format!("@{}", path_str(body_file));
        curl(
            &ca_pem,
            &enroll,
            &["-H", content_type, "-H", &auth, "--data-binary", &data],
            &scratch,
        )
    };
    let file = |name: &str, content: &[u8]| {
        let path = scratch.join(name);
        std::fs::write(&path, content).unwrap();
        path
    };

    let unknown_token = "A".repeat(43);
    assert_eq!(post(&unknown_token, pkcs10, &csr_b).0, 401, "unknown token");
    assert_eq!(
        post("not-a-token", pkcs10, &csr_b).0,
        401,
        "malformed token"
    );
    let (status, body) = curl(
        &ca_pem,
        &enroll,
        &[
            "-H",
            pkcs10,
            "--data-binary",
            &format!("@{}", path_str(&csr_b)),
        ],
        &scratch,
    );
    assert_eq!(status, 401, "no token");
    assert!(String::from_utf8_lossy(&body).contains("join token"));
    let (status, body) = post(&misbound, pkcs10, &csr_x);
    assert_eq!(status, 403, "CSR for another identity");
    assert!(
        String::from_utf8_lossy(&body).contains("b.vn.example"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(
        post(&good, pkcs10, &file("not-b64", b"%%% not base64 %%%")).0,
        400,
        "bad base64"
    );
    assert_eq!(
        post(&good, pkcs10, &file("not-der", b"MIIBIjANBgkqhkiG9w0BAQ==")).0,
        400,
        "bad CSR"
    );
    assert_eq!(
        post(&good, "Content-Type: text/plain", &csr_b).0,
        415,
        "content type"
    );
    let (status, _) = curl(&ca_pem, &enroll, &[], &scratch);
    assert_eq!(status, 405, "GET on simpleenroll");
    let (status, _) = curl(
        &ca_pem,
        &server.url("/.well-known/est/cacerts"),
        &["-X", "POST"],
        &scratch,
    );
    assert_eq!(status, 405, "POST on cacerts");
    assert_eq!(
        curl(
            &ca_pem,
            &server.url("/.well-known/est/nothing"),
            &[],
            &scratch
        )
        .0,
        404
    );
    assert_eq!(curl(&ca_pem, &server.url("/"), &[], &scratch).0, 404);
    let reenroll = server.url("/.well-known/est/simplereenroll");
    let data = format!("@{}", path_str(&csr_b));
    assert_eq!(
        curl(
            &ca_pem,
            &reenroll,
            &["-H", pkcs10, "--data-binary", &data],
            &scratch
        )
        .0,
        401,
        "no client cert"
    );

    // Oversized bodies, declared or streamed, are refused without being stored.
    let declared = format!(
        "POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {good}\r\n\
         Content-Type: application/pkcs10\r\nContent-Length: 100000000\r\n\r\n"
    );
    let (status, _) = exchange(&ca, &server.addr, declared.as_bytes());
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    let mut streamed = format!(
        "POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {good}\r\n\
         Content-Type: application/pkcs10\r\nTransfer-Encoding: chunked\r\n\r\n100000\r\n"
    )
    .into_bytes();
    streamed.extend(std::iter::repeat_n(b'A', 64 * 1024 + 1));
    let (status, _) = exchange(&ca, &server.addr, &streamed);
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");

    // Slow clients: a body that stops coming gets 408; headers that stop coming get the
    // connection closed. Both after the 2 s read timeout, neither much later.
    let slow_body = format!(
        "POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {good}\r\n\
         Content-Type: application/pkcs10\r\nContent-Length: 100\r\n\r\nMIIB"
    );
    let (status, took) = exchange(&ca, &server.addr, slow_body.as_bytes());
    assert!(status.starts_with("HTTP/1.1 408"), "{status}");
    assert!(took >= Duration::from_millis(1900), "{took:?}");
    let slow_head = b"POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: x\r\n";
    let (answer, took) = raw_exchange(&ca, &server.addr, slow_head, Duration::from_secs(15));
    assert!(
        answer.is_empty() || !status_line(&answer).starts_with("HTTP/1.1 2"),
        "{answer:?}"
    );
    assert!(took >= Duration::from_millis(1900), "{took:?}");

    // The expiring token's second is over by now, at the latest after this wait.
    while expiring_made.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(post(&expiring, pkcs10, &csr_b).0, 401, "expired token");

    // After all that, the good and the mis-bound tokens still work exactly once.
    assert_eq!(post(&good, pkcs10, &csr_b).0, 200);
    assert_eq!(post(&good, pkcs10, &csr_b).0, 401, "reused token");
    assert_eq!(post(&misbound, pkcs10, &csr_b).0, 200);

    let list = ca.ctl(&["list"]);
    let issued: Vec<&str> = list.lines().skip(1).collect();
    assert_eq!(issued.len(), 3, "server certificate and two nodes:\n{list}");
    assert_eq!(
        issued.iter().filter(|l| l.contains("b.vn.example")).count(),
        2,
        "{list}"
    );
}
