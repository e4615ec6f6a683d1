//! `iiptrand` as a benchmark subject: a certificate-authenticated node on the userspace
//! data plane with the daemon's default log, and `iiptranctl --json` against its control
//! socket.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use iiptran_testkit::command::checked;
use iiptran_testkit::iiptrand::{self, Credentials, Neighbor, NodeConfig};
use iiptran_testkit::pki::{Ca, NodeCert};
use iiptran_testkit::wait::wait_until;
use serde_json::Value;

pub use iiptran_testkit::iiptrand::Binaries;

use iiptran_testkit::netns::Netns;
use iiptran_testkit::process::Process;

use crate::system::Usage;

/// The benchmark's node configuration: certificate files, the userspace data plane, the
/// daemon's default log, `ike` as the lines of `[ike]` (empty keeps every default).
pub fn node(ca: &Ca, cert: &NodeCert, (name, endpoint): (&str, &str), ike: &str) -> NodeConfig {
    let credentials = Credentials::Files {
        ca: ca.cert.clone(),
        cert: cert.cert.clone(),
        key: cert.key.clone(),
    };
    let mut config = NodeConfig::new(name, endpoint, credentials);
    config.identity = cert.id.clone();
    config.dataplane = "userspace".into();
    config.ike = ike.into();
    config.log = None;
    config
}

/// [`node`] with a new certificate from `ca` for `<name>.vn.example`, and an active
/// neighbor `<peer>.vn.example` on link `vn-<peer>` for each `(peer, its endpoint, our
/// address on the link)`.
pub fn issued(
    ca: &Ca,
    (name, endpoint): (&str, &str),
    ike: &str,
    peers: &[(&str, &str, &str)],
) -> Result<NodeConfig> {
    let cert = ca.issue(&format!("{name}.vn.example"), endpoint)?;
    let mut config = node(ca, &cert, (name, endpoint), ike);
    for &(peer, endpoint, address) in peers {
        config = config.neighbor(Neighbor::new(peer, endpoint, address));
    }
    Ok(config)
}

/// A running `iiptrand`, stopped on drop.
pub struct Daemon(iiptrand::Daemon);

impl Daemon {
    /// Writes the configuration into `dir`, starts the daemon in `ns` and waits until its
    /// control socket answers (the daemon has then added every neighbor).
    pub fn start(
        bin: &Binaries,
        ns: &Netns,
        dir: &Path,
        node: &NodeConfig,
        ready_within: Duration,
    ) -> Result<Self> {
        let mut daemon = Self(iiptrand::Daemon::start(bin, ns, dir, node, &[])?);
        daemon.process().set_grace(Duration::from_secs(10));
        let what = format!("iiptrand {} to answer", node.name);
        wait_until(&what, ready_within, Duration::from_millis(100), || {
            if let Some(status) = daemon.0.process.exited()? {
                bail!("iiptrand {} exited: {status}", node.name);
            }
            Ok(daemon.ask(&["status"]).ok())
        })?;
        Ok(daemon)
    }

    /// The process, e.g. to kill it.
    pub fn process(&mut self) -> &mut Process {
        &mut self.0.process
    }

    pub fn ctl(&self, args: &[&str]) -> Result<String> {
        checked(self.0.ctl_command(args))
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
        wait_until(&what, timeout, Duration::from_millis(100), || {
            Ok(self.link_state(name)? == Some(state.to_owned()))
        })
    }

    pub fn usage(&self) -> Result<Usage> {
        Usage::of(self.0.process.pid())
    }
}
