//! A test CA and node certificates (Ed25519) made with strongSwan's `pki`, whose files
//! both charon and iiptrand read; the load generator issues its nodes' certificates from
//! the same CA key.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use std::io::Write as _;

use crate::system::run;

/// A node's certificate and key files.
#[derive(Clone, Debug)]
pub struct NodeCert {
    pub id: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A self-signed CA in `dir`.
pub struct Ca {
    dir: PathBuf,
    pub key: PathBuf,
    pub cert: PathBuf,
}

impl Ca {
    pub fn new(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let key = gen_key(dir, "ca")?;
        let cert = dir.join("ca.pem");
        pki(
            &[
                "--self",
                "--ca",
                "--lifetime",
                "30",
                "--in",
                &path(&key),
                "--dn",
                "CN=bench-ca",
                "--outform",
                "pem",
            ],
            &cert,
        )?;
        Ok(Self {
            dir: dir.to_owned(),
            key,
            cert,
        })
    }

    /// A certificate for `id` (subject `CN=<id>`, SANs `id` and `addr`) on a new key.
    pub fn issue(&self, id: &str, addr: &str) -> Result<NodeCert> {
        let key = gen_key(&self.dir, id)?;
        let cert = self.dir.join(format!("{id}.pem"));
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
                addr,
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
        })
    }
}

fn gen_key(dir: &Path, name: &str) -> Result<PathBuf> {
    let key = dir.join(format!("{name}.key"));
    pki(&["--gen", "--type", "ed25519", "--outform", "pem"], &key)?;
    Ok(key)
}

/// Runs `pki` and writes its output to `out`, readable by its owner only.
fn pki(args: &[&str], out: &Path) -> Result<()> {
    let pem = run("pki", args)?;
    write_private(out, &pem)
}

pub fn write_private(path: &Path, text: &str) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

fn path(p: &Path) -> String {
    p.display().to_string()
}
