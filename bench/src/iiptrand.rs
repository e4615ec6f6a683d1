//! `iiptrand` as a benchmark subject: its configuration, the daemon in a namespace, and
//! `iiptranctl --json` against its control socket.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::pki::{Ca, NodeCert};
use crate::system::{Netns, Process, Usage, checked, wait_for};

/// Where the daemon and its control tool are.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub iiptrand: PathBuf,
    pub iiptranctl: PathBuf,
}

/// One `[[neighbor]]`.
#[derive(Clone, Debug)]
pub struct Neighbor {
    pub name: String,
    pub identity: String,
    pub endpoint: String,
    pub link: String,
    pub address: String,
    pub passive: bool,
}

/// A node configuration with certificates and the userspace data plane.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub endpoint: String,
    pub cert: NodeCert,
    pub ca: PathBuf,
    /// Lines of `[ike]`; empty keeps every default.
    pub ike: String,
    pub neighbors: Vec<Neighbor>,
}

impl Node {
    /// Node `name` at `endpoint` with a new certificate from `ca` for `<name>.vn.example`,
    /// and an active neighbor on link `vn-<peer>` for each `(peer, its endpoint, our
    /// address on the link)`.
    pub fn issued(
        ca: &Ca,
        (name, endpoint): (&str, &str),
        ike: &str,
        peers: &[(&str, &str, &str)],
    ) -> Result<Self> {
        let cert = ca.issue(&format!("{name}.vn.example"), endpoint)?;
        Ok(Self {
            name: name.into(),
            endpoint: endpoint.into(),
            cert,
            ca: ca.cert.clone(),
            ike: ike.into(),
            neighbors: peers
                .iter()
                .map(|&(peer, endpoint, address)| Neighbor {
                    name: peer.into(),
                    identity: format!("{peer}.vn.example"),
                    endpoint: endpoint.into(),
                    link: format!("vn-{peer}"),
                    address: address.into(),
                    passive: false,
                })
                .collect(),
        })
    }

    fn render(&self, state_dir: &Path, socket: &Path) -> String {
        let mut text = format!(
            "[node]\nname = \"{}\"\nidentity = \"{}\"\nendpoint = \"{}\"\ndataplane = \"userspace\"\n\
             state_dir = \"{}\"\ncontrol_socket = \"{}\"\n\n[auth]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n\n\
             [ike]\n{}\n",
            self.name,
            self.cert.id,
            self.endpoint,
            state_dir.display(),
            socket.display(),
            self.ca.display(),
            self.cert.cert.display(),
            self.cert.key.display(),
            self.ike,
        );
        for n in &self.neighbors {
            let _ = writeln!(
                text,
                "[[neighbor]]\nname = \"{}\"\nidentity = \"{}\"\nendpoint = \"{}\"\n\
                 link = {{ name = \"{}\", address = \"{}\", mtu = 1400 }}\npassive = {}\n",
                n.name, n.identity, n.endpoint, n.link, n.address, n.passive
            );
        }
        text
    }
}

/// A running `iiptrand`, stopped on drop.
pub struct Daemon {
    pub process: Process,
    socket: PathBuf,
    iiptranctl: PathBuf,
}

impl Daemon {
    /// Writes the configuration into `dir`, starts the daemon in `ns` and waits until its
    /// control socket answers (the daemon has then added every neighbor).
    pub fn start(
        bin: &Binaries,
        ns: &Netns,
        dir: &Path,
        node: &Node,
        ready_within: Duration,
    ) -> Result<Self> {
        let state_dir = dir.join(format!("{}-state", node.name));
        let socket = dir.join(format!("{}.sock", node.name));
        let config = dir.join(format!("{}.toml", node.name));
        std::fs::write(&config, node.render(&state_dir, &socket))?;
        let mut command = ns.command(&bin.iiptrand.display().to_string());
        command.arg("--config").arg(&config);
        let process = Process::spawn(&format!("iiptrand-{}", node.name), command, dir)?;
        let mut daemon = Self {
            process,
            socket,
            iiptranctl: bin.iiptranctl.clone(),
        };
        let what = format!("iiptrand {} to answer", node.name);
        wait_for(&what, ready_within, Duration::from_millis(100), || {
            if let Some(status) = daemon.process.exited()? {
                bail!("iiptrand {} exited: {status}", node.name);
            }
            Ok(daemon.ask(&["status"]).ok())
        })?;
        Ok(daemon)
    }

    pub fn ctl(&self, args: &[&str]) -> Result<String> {
        let mut command = Command::new(&self.iiptranctl);
        command.arg("--socket").arg(&self.socket).args(args);
        checked(command)
    }

    /// The JSON answer of `iiptranctl --json <args>`.
    pub fn ask(&self, args: &[&str]) -> Result<Value> {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        let out = self.ctl(&full)?;
        serde_json::from_str(&out).with_context(|| format!("parsing {out:?}"))
    }

    /// Adjacencies up, from `status`.
    pub fn adjacencies_up(&self) -> Result<u64> {
        let status = self.ask(&["status"])?;
        status["status"]["counts"]["adjacencies_up"]
            .as_u64()
            .context("status without counts.adjacencies_up")
    }

    /// The link state (`up`/`down`) of neighbor `name`.
    pub fn link_state(&self, name: &str) -> Result<Option<String>> {
        let list = self.ask(&["list-neighbors"])?;
        Ok(list["neighbors"].as_array().and_then(|ns| {
            ns.iter()
                .find(|n| n["name"] == name)
                .and_then(|n| n["link_state"].as_str().map(str::to_owned))
        }))
    }

    /// Waits until the link to neighbor `name` is in `state` (`up`/`down`), polling
    /// every 100 ms.
    pub fn wait_link(&self, name: &str, state: &str, timeout: Duration) -> Result<()> {
        let what = format!("the link to {name} to be {state}");
        wait_for(&what, timeout, Duration::from_millis(100), || {
            Ok((self.link_state(name)?.as_deref() == Some(state)).then_some(()))
        })
    }

    pub fn usage(&self) -> Result<Usage> {
        self.process.usage()
    }
}
