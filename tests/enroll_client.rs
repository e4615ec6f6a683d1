//! The project's own client (`iiptrand enroll` / `reenroll`) against `iiptrand
//! enroll-server`: pinned first contact, renewal over mutual TLS, refusal after revocation.

mod enroll_common;

use std::os::unix::fs::PermissionsExt;

use enroll_common::*;
use iiptran_testkit::WorkDir;
use iiptran_testkit::command::sh;

/// `iiptrand enroll`; `token` is `["--token", T]` or `["--token-file", PATH]`.
fn enroll(
    server: &EnrollServer,
    token: [&str; 2],
    pin: &str,
    identity: &str,
    dir: &std::path::Path,
    algorithm: &str,
) -> std::process::Output {
    let url = server.url("");
    run(
        IIPTRAND,
        &[
            "enroll",
            "--server",
            &url,
            token[0],
            token[1],
            "--ca-fingerprint",
            pin,
            "--identity",
            identity,
            "--dir",
            path_str(dir),
            "--algorithm",
            algorithm,
        ],
    )
}

fn reenroll(server: &EnrollServer, dir: &std::path::Path) -> std::process::Output {
    run(
        IIPTRAND,
        &[
            "reenroll",
            "--server",
            &server.url(""),
            "--dir",
            path_str(dir),
        ],
    )
}

#[test]
fn client_enrolls_renews_and_is_refused_once_revoked() {
    let ca = TestCa::new();
    let token = ca.token("c.vn.example", "192.0.2.3", "1h");
    let server = ca.serve(&["--cert-lifetime", "1h"]);
    let state = WorkDir::temp("node").unwrap();
    let node = state.join("c");

    // A wrong pin stops the client before it sends the token, so the token stays usable.
    let wrong_pin = "00".repeat(32);
    let out = enroll(
        &server,
        ["--token", &token],
        &wrong_pin,
        "c.vn.example",
        &node,
        "ed25519",
    );
    assert!(!out.status.success());
    assert!(!node.join("cert.pem").exists());

    let out = enroll(
        &server,
        ["--token", &token],
        &ca.fingerprint,
        "c.vn.example",
        &node,
        "ed25519",
    );
    assert_success(&out);
    let key_mode = std::fs::metadata(node.join("key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    let cert = node.join("cert.pem");
    let chain = node.join("ca.pem");
    assert_eq!(
        std::fs::read(&chain).unwrap(),
        std::fs::read(ca.ca_pem()).unwrap()
    );
    assert_verifies(&chain, &cert);
    let text = cert_text(&cert);
    assert!(
        text.contains("DNS:c.vn.example, IP Address:192.0.2.3"),
        "{text}"
    );
    let key = key_text(&node.join("key.pem"));
    assert!(key.contains("ED25519"), "{key}");
    let first_serial = serial_of(&cert);
    let first_key = std::fs::read(node.join("key.pem")).unwrap();

    let out = reenroll(&server, &node);
    assert_success(&out);
    let renewed_serial = serial_of(&cert);
    assert_ne!(renewed_serial, first_serial);
    assert_eq!(
        std::fs::read(node.join("key.pem")).unwrap(),
        first_key,
        "renewal keeps the key"
    );
    let text = cert_text(&cert);
    assert!(
        text.contains("DNS:c.vn.example, IP Address:192.0.2.3"),
        "{text}"
    );

    // P-256 keys work as well; this token is made while the server runs.
    let p256_token = ca.token("d.vn.example", "192.0.2.4", "1h");
    let other = state.join("d");
    let out = enroll(
        &server,
        ["--token", &p256_token],
        &ca.fingerprint,
        "d.vn.example",
        &other,
        "p256",
    );
    assert_success(&out);
    let key = key_text(&other.join("key.pem"));
    assert!(key.contains("P-256"), "{key}");

    // Revocation while the server runs: iiptranctl and the server take turns on the database.
    ca.ctl(&["revoke", &renewed_serial]);
    let crl = ca.dir.join("crl.pem");
    ca.ctl(&["crl", "--out", path_str(&crl)]);
    let crl_text = sh(
        "openssl",
        &[
            "crl",
            "-in",
            path_str(&crl),
            "-CAfile",
            path_str(&ca.ca_pem()),
            "-noout",
            "-text",
        ],
    );
    assert!(
        crl_text.to_ascii_lowercase().contains(&renewed_serial),
        "{crl_text}"
    );
    let list = ca.ctl(&["list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with(&renewed_serial) && l.ends_with("revoked")),
        "{list}"
    );

    let out = reenroll(&server, &node);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("403"), "{stderr}");
    assert_eq!(
        serial_of(&cert),
        renewed_serial,
        "a refused renewal leaves the state alone"
    );
    let out = reenroll(&server, &other);
    assert!(
        out.status.success(),
        "an unrevoked node still renews: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn token_file_must_be_private_to_its_owner() {
    let ca = TestCa::new();
    let token = ca.token("e.vn.example", "192.0.2.5", "1h");
    let server = ca.serve(&[]);
    let state = WorkDir::temp("node-token-file").unwrap();
    let node = state.join("e");
    let token_file = state.join("e.token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let enroll_with_file = || {
        let file = ["--token-file", path_str(&token_file)];
        enroll(
            &server,
            file,
            &ca.fingerprint,
            "e.vn.example",
            &node,
            "ed25519",
        )
    };

    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = enroll_with_file();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("chmod 600"), "{stderr}");
    assert!(!node.join("cert.pem").exists());

    // Refused before it was sent, the token is still good.
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = enroll_with_file();
    assert_success(&out);
    assert_verifies(&node.join("ca.pem"), &node.join("cert.pem"));
}
