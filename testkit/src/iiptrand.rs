//! `iiptrand` as a child process: a node's configuration, the daemon in its namespace, and
//! `iiptranctl` against its control socket.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::netns::Netns;
use crate::process::Process;

/// Where the daemon and its control tool are.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub iiptrand: PathBuf,
    pub iiptranctl: PathBuf,
}

/// The daemon's log filter (`RUST_LOG`) that [`NodeConfig::new`] picks: the IKE exchanges
/// and the daemon's decisions, for failure messages.
pub const TEST_LOG: &str = "info,iiptran=debug,iiptran_ike=debug";

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
    /// A certificate, its key and the CA certificate, wherever they are.
    Files {
        ca: PathBuf,
        cert: PathBuf,
        key: PathBuf,
    },
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
    /// Whether the neighbor waits for the peer to initiate.
    pub passive: bool,
    /// Further `key = value` lines of this neighbor, e.g. `inner = ["ipv4", "ipv6"]`.
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
            passive: false,
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
    /// The daemon's `RUST_LOG`; `None` leaves the daemon's default.
    pub log: Option<String>,
}

impl NodeConfig {
    /// A node with the data plane of [`test_dataplane`], fast liveness, the log filter
    /// [`TEST_LOG`] and no neighbors yet.
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
            log: Some(TEST_LOG.to_owned()),
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
        let (psk, files) = match &self.credentials {
            Credentials::Psk(psk) => (Some(psk), None),
            Credentials::Enrolled(dir) => (
                None,
                Some((
                    dir.join("ca.pem"),
                    dir.join("cert.pem"),
                    dir.join("key.pem"),
                )),
            ),
            Credentials::Files { ca, cert, key } => {
                (None, Some((ca.clone(), cert.clone(), key.clone())))
            }
        };
        if let Some((ca, cert, key)) = files {
            let _ = write!(
                text,
                "[auth]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n{}\n",
                ca.display(),
                cert.display(),
                key.display(),
                self.auth
            );
        }
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
            if n.passive {
                text.push_str("passive = true\n");
            }
            if let Some(psk) = psk {
                let _ = writeln!(text, "psk = \"{psk}\"");
            }
            text.push('\n');
        }
        text
    }
}

/// A running `iiptrand`: stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Daemon {
    pub name: String,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub process: Process,
    bin: Binaries,
    log: Option<String>,
    /// How often it was started: each start logs to its own files.
    starts: u32,
}

impl Daemon {
    /// Writes `<dir>/<name>.toml` and starts the daemon on it inside `ns`; `env` adds to
    /// its environment. Its output goes to `<dir>/iiptrand-<name>.stdout|stderr`.
    pub fn start(
        bin: &Binaries,
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
        let process = spawn(bin, config.log.as_deref(), ns, dir, &name, &path, env)?;
        Ok(Self {
            name,
            config: path,
            socket,
            state_dir,
            process,
            bin: bin.clone(),
            log: config.log.clone(),
            starts: 1,
        })
    }

    /// Starts the daemon again on the same files (after it was stopped or killed); the
    /// new process logs to `iiptrand-<name>-<n>.stdout|stderr`, the old logs stay.
    pub fn restart(&mut self, ns: &Netns, dir: &Path) -> Result<()> {
        self.process.stop()?;
        self.starts += 1;
        let name = format!("{}-{}", self.name, self.starts);
        let log = self.log.as_deref();
        self.process = spawn(&self.bin, log, ns, dir, &name, &self.config, &[])?;
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

    /// `iiptranctl --socket <socket> <args>`, to run.
    pub fn ctl_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.bin.iiptranctl);
        command.arg("--socket").arg(&self.socket).args(args);
        command
    }

    /// Runs `iiptranctl --socket <socket> <args>` and returns its output.
    pub fn ctl(&self, args: &[&str]) -> Result<Output> {
        self.ctl_command(args)
            .output()
            .context("running iiptranctl")
    }
}

/// Starts `iiptrand --config <config>` in `ns` as process `iiptrand-<name>`.
fn spawn(
    bin: &Binaries,
    log: Option<&str>,
    ns: &Netns,
    dir: &Path,
    name: &str,
    config: &Path,
    env: &[(&str, &Path)],
) -> Result<Process> {
    let mut command = ns.command(&bin.iiptrand.display().to_string());
    command.envs(env.iter().copied());
    command.arg("--config").arg(config);
    if let Some(log) = log {
        command.env("RUST_LOG", log);
    }
    Process::spawn(&format!("iiptrand-{name}"), command, dir)
}
