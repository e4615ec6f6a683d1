//! Fixtures for the enrollment integration tests: a CA made with `iiptranctl`, the
//! `iiptrand enroll-server` process, and running openssl/curl.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use iiptran_testkit::WorkDir;
use iiptran_testkit::command::sh;

pub const IIPTRAND: &str = env!("CARGO_BIN_EXE_iiptrand");
pub const IIPTRANCTL: &str = env!("CARGO_BIN_EXE_iiptranctl");

/// Runs a command and returns its output, whatever its exit status.
pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e} (is it installed?)"))
}

/// Asserts that a finished command succeeded, showing its stderr otherwise.
pub fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA directory made by `iiptranctl ca init`.
pub struct TestCa {
    pub dir: WorkDir,
    pub fingerprint: String,
}

impl TestCa {
    pub fn new() -> Self {
        let dir = WorkDir::temp("ca").unwrap();
        let ca = dir.join("ca");
        sh(
            IIPTRANCTL,
            &["ca", "init", "--name", "vn.example", "--dir", path_str(&ca)],
        );
        let fingerprint = sh(IIPTRANCTL, &["ca", "fingerprint", "--dir", path_str(&ca)])
            .trim()
            .to_owned();
        assert_eq!(fingerprint.len(), 64);
        Self { dir, fingerprint }
    }

    pub fn ca_dir(&self) -> PathBuf {
        self.dir.join("ca")
    }

    pub fn ca_pem(&self) -> PathBuf {
        self.ca_dir().join("ca.pem")
    }

    pub fn token(&self, identity: &str, endpoint: &str, ttl: &str) -> String {
        let dir = self.ca_dir();
        let args = [
            "ca",
            "token",
            "--dir",
            path_str(&dir),
            "--identity",
            identity,
            "--endpoint",
            endpoint,
            "--ttl",
            ttl,
        ];
        sh(IIPTRANCTL, &args).trim().to_owned()
    }

    pub fn ctl(&self, args: &[&str]) -> String {
        let dir = self.ca_dir();
        let mut all = vec!["ca", args[0], "--dir", path_str(&dir)];
        all.extend_from_slice(&args[1..]);
        sh(IIPTRANCTL, &all)
    }

    /// Enrolls a node through `server` with `iiptrand enroll` and a fresh token for
    /// `identity` at `endpoint`: its key, certificate and the CA land in `dir`.
    pub fn enroll(&self, server: &EnrollServer, identity: &str, endpoint: &str, dir: &Path) {
        let token = self.token(identity, endpoint, "1h");
        sh(
            IIPTRAND,
            &[
                "enroll",
                "--server",
                &server.url(""),
                // A token may begin with '-'.
                &format!("--token={token}"),
                "--ca-fingerprint",
                &self.fingerprint,
                "--identity",
                identity,
                "--dir",
                path_str(dir),
            ],
        );
    }

    /// Starts `iiptrand enroll-server` on a free loopback port.
    pub fn serve(&self, extra: &[&str]) -> EnrollServer {
        let dir = self.ca_dir();
        let mut args = vec![
            "enroll-server",
            "--ca-dir",
            path_str(&dir),
            "--listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let mut child = Command::new(IIPTRAND)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn iiptrand");
        let stdout = child.stdout.take().unwrap();
        let mut server = EnrollServer {
            child,
            addr: String::new(),
        };
        // The server prints its bound address once it accepts connections.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server did not start in time");
        server.addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        server
    }
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A running `iiptrand enroll-server`, killed and reaped when dropped.
pub struct EnrollServer {
    child: Child,
    pub addr: String,
}

impl EnrollServer {
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }
}

impl Drop for EnrollServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One curl request: returns the HTTP status and the body.
pub fn curl(ca_pem: &Path, url: &str, extra: &[&str], scratch: &WorkDir) -> (u16, Vec<u8>) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let body = scratch.join(&format!("curl-body-{}", N.fetch_add(1, Ordering::Relaxed)));
    let mut args = vec![
        "-sS",
        "--max-time",
        "30",
        "--cacert",
        path_str(ca_pem),
        "-o",
        path_str(&body),
        "-w",
        "%{http_code}",
    ];
    args.extend_from_slice(extra);
    args.push(url);
    let status = sh("curl", &args);
    (
        status.trim().parse().unwrap(),
        std::fs::read(&body).unwrap_or_default(),
    )
}

/// Makes a private key and a DER CSR with openssl; `algorithm` is ed25519 or p256.
pub fn openssl_csr(scratch: &WorkDir, name: &str, algorithm: &str, subject_cn: &str) -> PathBuf {
    let key = scratch.join(&format!("{name}.key"));
    let csr = scratch.join(&format!("{name}.csr"));
    match algorithm {
        "ed25519" => sh(
            "openssl",
            &["genpkey", "-algorithm", "ed25519", "-out", path_str(&key)],
        ),
        _ => sh(
            "openssl",
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                path_str(&key),
            ],
        ),
    };
    let subject = format!("/CN={subject_cn}");
    sh(
        "openssl",
        &[
            "req",
            "-new",
            "-key",
            path_str(&key),
            "-subj",
            &subject,
            "-outform",
            "DER",
            "-out",
            path_str(&csr),
        ],
    );
    let b64 = scratch.join(&format!("{name}.csr.b64"));
    std::fs::write(&b64, sh("openssl", &["base64", "-in", path_str(&csr)])).unwrap();
    b64
}

/// Decodes an EST base64 PKCS#7 answer and prints its certificates as PEM with openssl.
pub fn pkcs7_to_pem(answer: &[u8], scratch: &WorkDir, name: &str) -> PathBuf {
    use base64::Engine;
    let text: Vec<u8> = answer
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64 answer");
    let p7 = scratch.join(&format!("{name}.p7"));
    std::fs::write(&p7, der).unwrap();
    let pem = scratch.join(&format!("{name}.pem"));
    sh(
        "openssl",
        &[
            "pkcs7",
            "-inform",
            "DER",
            "-in",
            path_str(&p7),
            "-print_certs",
            "-out",
            path_str(&pem),
        ],
    );
    pem
}

/// The serial of a PEM certificate, lowercase hex as `iiptranctl ca list` shows it.
pub fn serial_of(cert_pem: &Path) -> String {
    let out = sh(
        "openssl",
        &["x509", "-in", path_str(cert_pem), "-noout", "-serial"],
    );
    out.trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase()
}

/// `openssl x509 -text` of a PEM certificate.
pub fn cert_text(cert_pem: &Path) -> String {
    sh(
        "openssl",
        &["x509", "-in", path_str(cert_pem), "-noout", "-text"],
    )
}

/// Asserts that `openssl verify` accepts the certificate under the CA file.
pub fn assert_verifies(ca_pem: &Path, cert_pem: &Path) {
    let out = sh(
        "openssl",
        &["verify", "-CAfile", path_str(ca_pem), path_str(cert_pem)],
    );
    assert!(out.trim().ends_with(": OK"), "{out}");
}

/// `openssl pkey -text` of a PEM private key.
pub fn key_text(key_pem: &Path) -> String {
    sh(
        "openssl",
        &["pkey", "-in", path_str(key_pem), "-noout", "-text"],
    )
}
