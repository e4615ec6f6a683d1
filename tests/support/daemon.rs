//! `iiptrand` as a test process: a node's configuration, the daemon in its namespace, and
//! its control socket through `iiptranctl --json`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use iiptran::control::protocol::{
    CertReport, IkeSaReport, LinkState, NeighborReport, StatusReport,
};
use iiptran::control::{Body, Response};

use super::capture::IkeKeys;
use super::netns::{Netns, veth};
use super::process::Process;
use super::wait::wait_until;

pub const IIPTRAND: &str = env!("CARGO_BIN_EXE_iiptrand");
pub const IIPTRANCTL: &str = env!("CARGO_BIN_EXE_iiptranctl");

/// Short liveness settings for tests: 2 s idle, then retransmissions 1 s apart, so a dead
/// peer is noticed within `LIVENESS_BOUND`.
pub const FAST_LIVENESS: &str =
    "liveness = \"2s\"\nretransmit_timeout = \"1s\"\nretransmit_base = 1.0\nretransmit_tries = 2\n";
pub const LIVENESS_BOUND: Duration = Duration::from_secs(20);

/// The environment variable that picks the data plane of every [`NodeConfig`]:
/// `userspace` (the default) or `kernel`, which `tests/vm/run` sets in its guest.
pub const DATAPLANE_ENV: &str = "IIPTRAN_TEST_DATAPLANE";

/// The data plane the tests run with, from [`DATAPLANE_ENV`].
pub fn test_dataplane() -> String {
    std::env::var(DATAPLANE_ENV).unwrap_or_else(|_| "userspace".to_owned())
}

/// How a node authenticates.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// One pre-shared key, written into every neighbor.
    Psk(String),
    /// Files as `iiptrand enroll` writes them: `ca.pem`, `cert.pem` and `key.pem` in `dir`.
    Enrolled(PathBuf),
}

/// One `[[neighbor]]`.
#[derive(Clone, Debug)]
pub struct Neighbor {
    pub name: String,
    pub identity: String,
    pub endpoint: String,
    pub link: String,
    /// The link's address with prefix, e.g. `10.255.0.0/31`.
    pub address: String,
    /// Further addresses of the link, e.g. an IPv6 one beside an IPv4 `address`.
    pub more_addresses: Vec<String>,
    /// Further `key = value` lines of this neighbor, e.g. `passive = true`.
    pub extra: String,
}

impl Neighbor {
    /// A neighbor named `name` with identity `<name>.vn.example` and link `vn-<name>`.
    pub fn new(name: &str, endpoint: &str, address: &str) -> Self {
        Self {
            name: name.to_owned(),
            identity: format!("{name}.vn.example"),
            endpoint: endpoint.to_owned(),
            link: format!("vn-{name}"),
            address: address.to_owned(),
            more_addresses: Vec::new(),
            extra: String::new(),
        }
    }
}

/// A node's configuration file.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub name: String,
    pub identity: String,
    pub endpoint: String,
    pub dataplane: String,
    pub credentials: Credentials,
    /// Further lines of the `[auth]` section with `Credentials::Enrolled`, e.g.
    /// `crl_refresh = "1s"`.
    pub auth: String,
    /// Lines of the `[ike]` section.
    pub ike: String,
    /// Further top-level sections, e.g. `[enroll.server]`.
    pub sections: String,
    pub neighbors: Vec<Neighbor>,
}

impl NodeConfig {
    /// A node with the data plane of [`test_dataplane`], fast liveness and no neighbors yet.
    pub fn new(name: &str, endpoint: &str, credentials: Credentials) -> Self {
        Self {
            name: name.to_owned(),
            identity: format!("{name}.vn.example"),
            endpoint: endpoint.to_owned(),
            dataplane: test_dataplane(),
            credentials,
            auth: String::new(),
            ike: FAST_LIVENESS.to_owned(),
            sections: String::new(),
            neighbors: Vec::new(),
        }
    }

    pub fn neighbor(mut self, neighbor: Neighbor) -> Self {
        self.neighbors.push(neighbor);
        self
    }

    /// The TOML text, with the state directory and control socket given.
    pub fn render(&self, state_dir: &Path, socket: &Path) -> String {
        let mut text = format!(
            "[node]\nname = \"{}\"\nidentity = \"{}\"\nendpoint = \"{}\"\ndataplane = \"{}\"\n\
             state_dir = \"{}\"\ncontrol_socket = \"{}\"\n\n",
            self.name,
            self.identity,
            self.endpoint,
            self.dataplane,
            state_dir.display(),
            socket.display()
        );
        let psk = match &self.credentials {
            Credentials::Psk(psk) => Some(psk),
            Credentials::Enrolled(dir) => {
                let file = |name: &str| dir.join(name).display().to_string();
                let _ = write!(
                    text,
                    "[auth]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n{}\n",
                    file("ca.pem"),
                    file("cert.pem"),
                    file("key.pem"),
                    self.auth
                );
                None
            }
        };
        let _ = write!(text, "[ike]\n{}\n{}\n", self.ike, self.sections);
        for n in &self.neighbors {
            let addresses: Vec<String> = std::iter::once(&n.address)
                .chain(&n.more_addresses)
                .map(|a| format!("\"{a}\""))
                .collect();
            let _ = write!(
                text,
                "[[neighbor]]\nname = \"{}\"\nidentity = \"{}\"\nendpoint = \"{}\"\n\
                 link = {{ name = \"{}\", address = [{}], mtu = 1400 }}\n{}",
                n.name,
                n.identity,
                n.endpoint,
                n.link,
                addresses.join(", "),
                n.extra
            );
            if let Some(psk) = psk {
                let _ = writeln!(text, "psk = \"{psk}\"");
            }
            text.push('\n');
        }
        text
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

/// A running `iiptrand`: stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Daemon {
    pub name: String,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub process: Process,
    /// How often it was started: each start logs to its own files.
    starts: u32,
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
        let name = config.name.clone();
        let state_dir = dir.join(format!("{name}-state"));
        let socket = dir.join(format!("{name}.sock"));
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config.render(&state_dir, &socket))?;
        let process = Self::spawn(ns, dir, &name, &path, env)?;
        Ok(Self {
            name,
            config: path,
            socket,
            state_dir,
            process,
            starts: 1,
        })
    }

    fn spawn(
        ns: &Netns,
        dir: &Path,
        name: &str,
        config: &Path,
        env: &[(&str, &Path)],
    ) -> Result<Process> {
        let mut command = ns.command(IIPTRAND);
        command.envs(env.iter().copied());
        command.arg("--config").arg(config);
        command.env("RUST_LOG", "info,iiptran=debug,iiptran_ike=debug");
        Process::spawn(&format!("iiptrand-{name}"), command, dir)
    }

    /// Starts the daemon again on the same files (after it was stopped or killed); the
    /// new process logs to `iiptrand-<name>-<n>.stdout|stderr`, the old logs stay.
    pub fn restart(&mut self, ns: &Netns, dir: &Path) -> Result<()> {
        self.process.stop()?;
        self.starts += 1;
        let name = format!("{}-{}", self.name, self.starts);
        self.process = Self::spawn(ns, dir, &name, &self.config, &[])?;
        Ok(())
    }

    /// Rewrites the configuration file (the daemon reads it on `reload`).
    pub fn rewrite(&mut self, config: &NodeConfig) -> Result<()> {
        std::fs::write(&self.config, config.render(&self.state_dir, &self.socket))?;
        Ok(())
    }

    /// The daemon's log so far (its stderr; it writes no colour codes to a file).
    pub fn log(&self) -> String {
        self.process.stderr()
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

    /// Runs `iiptranctl --socket <socket> <args>` and returns its output.
    pub fn ctl(&self, args: &[&str]) -> Result<std::process::Output> {
        Command::new(IIPTRANCTL)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .context("running iiptranctl")
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
    super::netns::checked(command)?;
    Ok(())
}
