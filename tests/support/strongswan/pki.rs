//! A CA and node certificates made with strongSwan's own `pki` tool.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::support::TempDir;
use crate::support::netns::run;

/// Key types the harness issues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    Ed25519,
    EcdsaP256,
}

impl KeyType {
    fn gen_args(self) -> &'static [&'static str] {
        match self {
            Self::Ed25519 => &["--type", "ed25519"],
            Self::EcdsaP256 => &["--type", "ecdsa", "--size", "256"],
        }
    }
}

/// A node's certificate and key (PEM files) and the CA certificate that signed it.
#[derive(Clone, Debug)]
pub struct NodeCert {
    pub id: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl NodeCert {
    /// Writes the files as `iiptrand enroll` does (`ca.pem`, `cert.pem`, and `key.pem` in
    /// PKCS#8, mode 0600) into `dir`, for a daemon that authenticates with this certificate.
    pub fn export_for_iiptrand(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::copy(&self.ca, dir.join("ca.pem"))?;
        std::fs::copy(&self.cert, dir.join("cert.pem"))?;
        // pki writes ECDSA keys in SEC1 form; iiptrand reads PKCS#8 only.
        let key = run(
            "openssl",
            &["pkcs8", "-topk8", "-nocrypt", "-in", &path(&self.key)],
        )?;
        super::write_private(&dir.join("key.pem"), &key)
    }
}

/// A self-signed CA in a temporary directory.
pub struct Ca {
    dir: TempDir,
    key: PathBuf,
    cert: PathBuf,
}

impl Ca {
    pub fn new(key_type: KeyType) -> Result<Self> {
        let dir = TempDir::new("pki")?;
        let key = gen_key(&dir, "ca", key_type)?;
        let cert = dir.join("ca.crt");
        pki(
            &[
                "--self",
                "--ca",
                "--lifetime",
                "30",
                "--in",
                &path(&key),
                "--dn",
                "CN=iiptran-interop-ca",
                "--outform",
                "pem",
            ],
            &cert,
        )?;
        Ok(Self { dir, key, cert })
    }

    pub fn cert(&self) -> &Path {
        &self.cert
    }

    /// Issues a certificate for `id` (subject `CN=<id>`, SANs `id` and `addr`) on a new key.
    pub fn issue(&self, id: &str, addr: IpAddr, key_type: KeyType) -> Result<NodeCert> {
        let key = gen_key(&self.dir, id, key_type)?;
        let cert = self.dir.join(&format!("{id}.crt"));
        pki(
            &[
                "--issue",
                "--type",
                "priv",
                "--in",
                &path(&key),
                "--cacert",
                &path(&self.cert),
                "--cakey",
                &path(&self.key),
                "--lifetime",
                "30",
                "--dn",
                &format!("CN={id}"),
                "--san",
                id,
                "--san",
                &addr.to_string(),
                "--flag",
                "serverAuth",
                "--flag",
                "clientAuth",
                "--outform",
                "pem",
            ],
            &cert,
        )?;
        Ok(NodeCert {
            id: id.into(),
            cert,
            key,
            ca: self.cert.clone(),
        })
    }
}

fn gen_key(dir: &TempDir, name: &str, key_type: KeyType) -> Result<PathBuf> {
    let key = dir.join(&format!("{name}.key"));
    let mut args = vec!["--gen"];
    args.extend_from_slice(key_type.gen_args());
    args.extend_from_slice(&["--outform", "pem"]);
    pki(&args, &key)?;
    Ok(key)
}

/// Runs `pki` and writes its stdout to `out` (0600: it may be a private key).
fn pki(args: &[&str], out: &Path) -> Result<()> {
    let pem = run("pki", args)?;
    super::write_private(out, &pem)
}

fn path(p: &Path) -> String {
    p.display().to_string()
}
