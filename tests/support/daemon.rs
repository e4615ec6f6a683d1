//! `iiptrand` and `iiptranctl` of this package as test processes: the testkit's daemon
//! with the typed answers of its control socket (`iiptranctl --json`).

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use iiptran::control::protocol::{
    CertReport, IkeSaReport, LinkState, NeighborReport, StatusReport, TransitionReport,
};
use iiptran::control::{Body, Response};
use iiptran_testkit::command::checked;
use iiptran_testkit::iiptrand::{self, Binaries, Credentials, Neighbor, NodeConfig};
use iiptran_testkit::netns::{Netns, veth};
use iiptran_testkit::strongswan::IkeKeys;
use iiptran_testkit::wait::wait_until;

pub const IIPTRAND: &str = env!("CARGO_BIN_EXE_iiptrand");
pub const IIPTRANCTL: &str = env!("CARGO_BIN_EXE_iiptranctl");

/// This package's binaries, as the test harness built them.
pub fn binaries() -> Binaries {
    Binaries {
        iiptrand: IIPTRAND.into(),
        iiptranctl: IIPTRANCTL.into(),
    }
}

/// Two nodes `a` and `b` in their own namespaces, joined by a veth pair, each the other's
/// one neighbor over the virtual link 10.255.0.0/31 (a .0, b .1).
pub struct TwoNodes {
    pub a_ns: Netns,
    pub b_ns: Netns,
    pub a: NodeConfig,
    pub b: NodeConfig,
}

impl TwoNodes {
    /// The namespaces (names from `prefix`), the veth between the endpoints `a_ip` and
    /// `b_ip` (`prefix_len` on each end), and each node's configuration with the
    /// credentials `credentials` gives for its name.
    pub fn new(
        prefix: &str,
        (a_ip, b_ip, prefix_len): (&str, &str, u8),
        credentials: impl Fn(&str) -> Credentials,
    ) -> Result<Self> {
        let a_ns = Netns::new(&format!("{prefix}a"))?;
        let b_ns = Netns::new(&format!("{prefix}b"))?;
        veth(&a_ns, a_ip.parse()?, &b_ns, b_ip.parse()?, prefix_len)?;
        let a = NodeConfig::new("a", a_ip, credentials("a")).neighbor(Neighbor::new(
            "b",
            b_ip,
            "10.255.0.0/31",
        ));
        let b = NodeConfig::new("b", b_ip, credentials("b")).neighbor(Neighbor::new(
            "a",
            a_ip,
            "10.255.0.1/31",
        ));
        Ok(Self { a_ns, b_ns, a, b })
    }

    /// Starts both daemons, their files under `dir`.
    pub fn start(&self, dir: &Path) -> Result<(Daemon, Daemon)> {
        let a = Daemon::start(&self.a_ns, dir, &self.a, &[])?;
        let b = Daemon::start(&self.b_ns, dir, &self.b, &[])?;
        Ok((a, b))
    }
}

/// IPv4 underlay endpoints for [`TwoNodes::new`].
pub const TWO_NODES_V4: (&str, &str, u8) = ("198.51.100.1", "198.51.100.2", 24);

/// A running `iiptrand` of this package: the testkit's daemon, whose control socket
/// answers are parsed into the daemon's own types.
pub struct Daemon(iiptrand::Daemon);

impl Deref for Daemon {
    type Target = iiptrand::Daemon;
    fn deref(&self) -> &iiptrand::Daemon {
        &self.0
    }
}

impl DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut iiptrand::Daemon {
        &mut self.0
    }
}

impl Daemon {
    /// Writes `<dir>/<name>.toml` and starts the daemon on it inside `ns`; `env` adds to
    /// its environment. Its output goes to `<dir>/iiptrand-<name>.stdout|stderr`.
    pub fn start(
        ns: &Netns,
        dir: &Path,
        config: &NodeConfig,
        env: &[(&str, &Path)],
    ) -> Result<Self> {
        iiptrand::Daemon::start(&binaries(), ns, dir, config, env).map(Self)
    }

    /// The keys of every IKE SA the daemon logged, oldest first; it logs them only when
    /// started with `IIPTRAN_LOG_IKE_KEYS=1`.
    pub fn ike_keys(&self) -> Vec<IkeKeys> {
        let field = |line: &str, name: &str| {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
                .unwrap_or_default()
                .to_owned()
        };
        self.log()
            .lines()
            .filter(|l| l.contains("IKE SA keys (insecure key logging is on)"))
            .map(|l| IkeKeys {
                spi_i: field(l, "spi_i"),
                spi_r: field(l, "spi_r"),
                sk_ei: field(l, "sk_ei"),
                sk_er: field(l, "sk_er"),
                sk_ai: field(l, "sk_ai"),
                sk_ar: field(l, "sk_ar"),
            })
            .collect()
    }

    /// The answer of `iiptranctl --json <args>`, or `None` while the daemon does not answer.
    pub fn ask(&self, args: &[&str]) -> Result<Option<Body>> {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        let out = self.ctl(&full)?;
        if !out.status.success() && out.stdout.is_empty() {
            return Ok(None);
        }
        let response: Response = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("parsing {:?}", String::from_utf8_lossy(&out.stdout)))?;
        Ok(Some(response.body))
    }

    /// `list-neighbors`, empty while the daemon does not answer.
    pub fn neighbors(&self) -> Result<Vec<NeighborReport>> {
        match self.ask(&["list-neighbors"])? {
            None => Ok(Vec::new()),
            Some(Body::Neighbors(n)) => Ok(n),
            Some(other) => bail!("unexpected answer {other:?}"),
        }
    }

    pub fn neighbor(&self, name: &str) -> Result<Option<NeighborReport>> {
        Ok(self.neighbors()?.into_iter().find(|n| n.name == name))
    }

    /// `history NAME`, empty while the daemon does not answer.
    pub fn history(&self, name: &str) -> Result<Vec<TransitionReport>> {
        match self.ask(&["history", name])? {
            None => Ok(Vec::new()),
            Some(Body::History(h)) => Ok(h),
            Some(other) => bail!("unexpected answer {other:?}"),
        }
    }

    pub fn status(&self) -> Result<Option<StatusReport>> {
        match self.ask(&["status"])? {
            None => Ok(None),
            Some(Body::Status(s)) => Ok(Some(s)),
            Some(other) => bail!("unexpected answer {other:?}"),
        }
    }

    pub fn sas(&self) -> Result<Vec<IkeSaReport>> {
        match self.ask(&["list-sas"])? {
            None => Ok(Vec::new()),
            Some(Body::Sas(s)) => Ok(s),
            Some(other) => bail!("unexpected answer {other:?}"),
        }
    }

    pub fn certs(&self) -> Result<Vec<CertReport>> {
        match self.ask(&["list-certs"])? {
            Some(Body::Certs(c)) => Ok(c),
            other => bail!("unexpected answer {other:?}"),
        }
    }

    /// The neighbor's report once its adjacency is established and its link up.
    pub fn established(&self, name: &str) -> Result<Option<NeighborReport>> {
        Ok(self
            .neighbor(name)?
            .filter(|n| n.adjacency == "established" && n.link_state == LinkState::Up))
    }

    /// Waits until the adjacency with `name` is established and its link up.
    pub fn wait_established(&self, name: &str, timeout: Duration) -> Result<NeighborReport> {
        let what = format!("{}'s adjacency with {name} to be up", self.name);
        wait_until(&what, timeout, Duration::from_millis(200), || {
            self.established(name)
        })
    }

    /// Waits until the link to `name` is down, and returns the neighbor's report then.
    pub fn wait_link_down(&self, name: &str, timeout: Duration) -> Result<NeighborReport> {
        let what = format!("{}'s link to {name} to go down", self.name);
        wait_until(&what, timeout, Duration::from_millis(100), || {
            Ok(self
                .neighbor(name)?
                .filter(|n| n.link_state == LinkState::Down))
        })
    }
}

/// Enrolls `identity` with `iiptrand enroll`, inside `ns` if given: the token goes through
/// a 0600 file (`<dir>.token`), the key, certificate and CA chain into `dir`.
pub fn enroll(
    ns: Option<&Netns>,
    server: &str,
    token: &str,
    ca_fingerprint: &str,
    identity: &str,
    dir: &Path,
) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let token_file = dir.with_extension("token");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&token_file)
        .with_context(|| format!("creating {}", token_file.display()))?;
    std::io::Write::write_all(&mut file, format!("{token}\n").as_bytes())?;
    let path = |p: &Path| p.display().to_string();
    let mut command = match ns {
        Some(ns) => ns.command(IIPTRAND),
        None => Command::new(IIPTRAND),
    };
    command.args([
        "enroll",
        "--server",
        server,
        "--token-file",
        &path(&token_file),
        "--ca-fingerprint",
        ca_fingerprint,
        "--identity",
        identity,
        "--dir",
        &path(dir),
    ]);
    checked(command)?;
    Ok(())
}
