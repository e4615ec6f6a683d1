//! A CA and node certificates made with strongSwan's own `pki` tool, whose files both
//! charon and iiptrand read.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::WorkDir;
use crate::command::run;

/// Key types the CA issues.
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
        write_private(&dir.join("key.pem"), &key)
    }
}

/// A self-signed CA (`CN=iiptran-test-ca`) whose files are in `dir`.
pub struct Ca {
    dir: PathBuf,
    pub key: PathBuf,
    pub cert: PathBuf,
    // Declared last: the files go after everything else.
    _temp: Option<WorkDir>,
}

impl Ca {
    /// A CA with an Ed25519 key in `dir` (created if needed).
    pub fn new(dir: &Path) -> Result<Self> {
        Self::create(dir, KeyType::Ed25519, None)
    }

    /// A CA with a `key_type` key in a temporary directory, removed with it.
    pub fn temporary(key_type: KeyType) -> Result<Self> {
        let temp = WorkDir::temp("pki")?;
        let dir = temp.path.clone();
        Self::create(&dir, key_type, Some(temp))
    }

    fn create(dir: &Path, key_type: KeyType, temp: Option<WorkDir>) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let key = gen_key(dir, "ca", key_type)?;
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
                "CN=iiptran-test-ca",
                "--outform",
                "pem",
            ],
            &cert,
        )?;
        Ok(Self {
            dir: dir.to_owned(),
            key,
            cert,
            _temp: temp,
        })
    }

    /// [`Ca::issue_with`] on an Ed25519 key.
    pub fn issue(&self, id: &str, addr: &str) -> Result<NodeCert> {
        self.issue_with(id, addr, KeyType::Ed25519)
    }

    /// A certificate for `id` (subject `CN=<id>`, SANs `id` and `addr`) on a new
    /// `key_type` key. Its files are new each time: one identity issued twice (side-by-side
    /// runs of one setting) never overwrites a key or certificate a running node reads.
    pub fn issue_with(&self, id: &str, addr: &str, key_type: KeyType) -> Result<NodeCert> {
        let stem = format!("{id}-{}", crate::unique_suffix());
        let key = gen_key(&self.dir, &stem, key_type)?;
        let cert = self.dir.join(format!("{stem}.pem"));
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
            ca: self.cert.clone(),
        })
    }
}

fn gen_key(dir: &Path, name: &str, key_type: KeyType) -> Result<PathBuf> {
    let key = dir.join(format!("{name}.key"));
    let mut args = vec!["--gen"];
    args.extend_from_slice(key_type.gen_args());
    args.extend_from_slice(&["--outform", "pem"]);
    pki(&args, &key)?;
    Ok(key)
}

/// Runs `pki` and writes its stdout to `out` (0600: it may be a private key).
fn pki(args: &[&str], out: &Path) -> Result<()> {
    let pem = run("pki", args)?;
    write_private(out, &pem)
}

/// Writes a file readable by its owner only: keys and secrets.
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
