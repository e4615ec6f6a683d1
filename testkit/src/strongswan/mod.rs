//! strongSwan's charon as an IKEv2 peer, one independent instance per network namespace.
//!
//! Each instance reads its own strongswan.conf (through `STRONGSWAN_CONF`) and swanctl
//! directory from a temporary directory, and is driven with `swanctl` over its own vici
//! socket. Debian's charon writes a fixed `/var/run/charon.pid`, so it runs with a private
//! directory bind-mounted over `/run` inside the mount namespace `ip netns exec` gives it.

mod config;
mod keylog;
mod sas;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

pub use config::{Auth, CharonOptions, Connection, PLUGINS};
pub use keylog::IkeKeys;
pub use sas::{ChildSa, IkeSa, parse_list_sas};

use crate::WorkDir;
use crate::command::{checked, run};
use crate::netns::Netns;
use crate::pki::write_private;
use crate::process::Process;
use crate::wait::wait_until;

const CHARON: &str = "/usr/lib/ipsec/charon";
const PLUGIN_CACHE: &str = "/var/cache/iiptran-interop";
const SETUP: &str = "tests/interop/setup";

/// The strongSwan installation, checked once: missing pieces are an error that says how
/// to install them.
#[derive(Clone, Debug)]
pub struct Installation {
    /// Debian version of strongswan-charon, e.g. `5.9.8-5+deb12u6`.
    pub version: String,
    /// The load-tester plugin built by `tests/interop/setup` for that version.
    pub load_tester: PathBuf,
}

impl Installation {
    /// Checks charon, swanctl, pki, the load-tester plugin and the further programs `also`
    /// needs (paths that `SETUP` installs, e.g. `/usr/bin/tshark`).
    pub fn find(also: &[&str]) -> Result<Self> {
        let missing: Vec<&str> = [CHARON, "/usr/sbin/swanctl", "/usr/bin/pki"]
            .iter()
            .chain(also)
            .copied()
            .filter(|p| !Path::new(p).exists())
            .collect();
        if !missing.is_empty() {
            bail!(
                "missing {missing:?}: run `{SETUP}` as root (installs Debian's strongSwan, tcpdump, tshark)"
            );
        }
        let version = run("dpkg-query", &["-W", "-f=${Version}", "strongswan-charon"])?
            .trim()
            .to_owned();
        let load_tester = Path::new(PLUGIN_CACHE)
            .join(&version)
            .join("libstrongswan-load-tester.so");
        if !load_tester.exists() {
            bail!(
                "missing {}: run `{SETUP}` as root (builds the load-tester plugin)",
                load_tester.display()
            );
        }
        Ok(Self {
            version,
            load_tester,
        })
    }
}

/// A running charon in a network namespace. Dropping it stops charon (SIGTERM, then
/// SIGKILL) and removes its directory; on a failing test its log is printed and the
/// directory kept.
pub struct Charon {
    name: String,
    // Declared before `dir`: charon must stop before its directory goes.
    process: Process,
    dir: WorkDir,
}

impl Charon {
    /// [`Charon::start_in`] a new temporary directory.
    pub fn start(
        install: &Installation,
        ns: &Netns,
        name: &str,
        options: &CharonOptions,
        connections: &[Connection],
    ) -> Result<Self> {
        let dir = WorkDir::temp(&format!("charon-{name}"))?;
        Self::start_in(install, ns, dir, name, options, connections)
    }

    /// Writes the configuration for `connections` into `dir`, starts charon in `ns`, waits
    /// for its vici socket and loads the connections, credentials and secrets.
    pub fn start_in(
        install: &Installation,
        ns: &Netns,
        dir: WorkDir,
        name: &str,
        options: &CharonOptions,
        connections: &[Connection],
    ) -> Result<Self> {
        for sub in ["run", "swanctl/x509", "swanctl/x509ca", "swanctl/private"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        std::fs::write(
            dir.join("strongswan.conf"),
            config::strongswan_conf(dir.path(), options),
        )?;
        write_private(
            &dir.join("swanctl/swanctl.conf"),
            &swanctl_conf(&dir, connections)?,
        )?;

        let process = launch(install, ns, &dir, name, options)?;
        let charon = Self {
            name: name.into(),
            process,
            dir,
        };
        charon.load()?;
        Ok(charon)
    }

    /// Stops charon and starts it again on the same files, as a reboot of the peer would:
    /// it remembers no SAs.
    pub fn restart(
        &mut self,
        install: &Installation,
        ns: &Netns,
        options: &CharonOptions,
    ) -> Result<()> {
        self.process.stop()?;
        // A killed charon leaves its pid file and socket; the new one would refuse to start.
        for stale in ["run/charon.pid", "run/charon.vici"] {
            let _ = std::fs::remove_file(self.dir.join(stale));
        }
        self.process = launch(install, ns, &self.dir, &self.name, options)?;
        self.load()
    }

    /// Sends `signal` to charon (e.g. SIGKILL: it dies without deleting its SAs).
    pub fn signal(&mut self, signal: libc::c_int) -> Result<()> {
        self.process.signal(signal)
    }

    /// Loads the connections, credentials and secrets of swanctl.conf.
    fn load(&self) -> Result<()> {
        let swanctl_conf = self.dir.join("swanctl/swanctl.conf");
        self.swanctl(&[
            "--load-all",
            "--noprompt",
            "--file",
            &swanctl_conf.display().to_string(),
        ])?;
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The instance's directory (strongswan.conf, swanctl/, run/, charon.log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn process(&self) -> &Process {
        &self.process
    }

    /// Runs `swanctl <verb> --uri <this charon> <args…>`; its stdout, or an error with its
    /// output if it failed.
    pub fn swanctl(&self, args: &[&str]) -> Result<String> {
        let (verb, rest) = args.split_first().context("swanctl needs a verb")?;
        let uri = format!("unix://{}", self.dir.join("run/charon.vici").display());
        let mut command = Command::new("swanctl");
        command
            .env("STRONGSWAN_CONF", self.dir.join("strongswan.conf"))
            .env("SWANCTL_DIR", self.dir.join("swanctl"))
            .args([verb, "--uri", &uri])
            .args(rest);
        checked(command).with_context(|| format!("charon {}", self.name))
    }

    /// Initiates `child` (and its IKE SA if needed); returns swanctl's log of the exchange.
    pub fn initiate_child(&self, child: &str) -> Result<String> {
        self.swanctl(&["--initiate", "--child", child, "--timeout", "20"])
    }

    /// Initiates the IKE SA of connection `ike` without a child.
    pub fn initiate_ike(&self, ike: &str) -> Result<String> {
        self.swanctl(&["--initiate", "--ike", ike, "--timeout", "20"])
    }

    pub fn terminate_ike(&self, ike: &str) -> Result<String> {
        self.swanctl(&["--terminate", "--ike", ike, "--timeout", "20"])
    }

    pub fn terminate_child(&self, child: &str) -> Result<String> {
        self.swanctl(&["--terminate", "--child", child, "--timeout", "20"])
    }

    /// Asks charon to rekey the child SA (`rekey --child`); the rekeying runs asynchronously.
    pub fn rekey_child(&self, child: &str) -> Result<String> {
        self.swanctl(&["--rekey", "--child", child])
    }

    pub fn rekey_ike(&self, ike: &str) -> Result<String> {
        self.swanctl(&["--rekey", "--ike", ike])
    }

    pub fn list_sas(&self) -> Result<Vec<IkeSa>> {
        parse_list_sas(&self.swanctl(&["--list-sas", "--raw"])?)
    }

    /// The keys of `sa` from the log, for decrypting captures; needs `ike_log_level = 4`
    /// and a log that holds no other IKE SA's keys.
    pub fn ike_keys(&self, sa: &IkeSa) -> Result<IkeKeys> {
        keylog::ike_keys(&self.log(), sa)
    }

    /// The file log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("charon.log")).unwrap_or_default()
    }

    /// Waits until `pick` finds what it wants in the listed SAs; the timeout error shows the
    /// last listing.
    pub fn wait_for_sas<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut pick: impl FnMut(&[IkeSa]) -> Option<T>,
    ) -> Result<T> {
        let mut last = Vec::new();
        let found = wait_until(what, timeout, Duration::from_millis(50), || {
            last = self.list_sas()?;
            Ok(pick(&last))
        });
        found.with_context(|| format!("charon {} lists {last:#?}", self.name))
    }
}

impl Drop for Charon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- charon {} log\n{}", self.name, self.log());
        }
    }
}

/// Starts charon in `ns` on the files in `dir` and waits for its vici socket.
fn launch(
    install: &Installation,
    ns: &Netns,
    dir: &WorkDir,
    name: &str,
    options: &CharonOptions,
) -> Result<Process> {
    let preload = if options.fake_kernel {
        install.load_tester.display().to_string()
    } else {
        String::new()
    };
    let mut command = ns.command("sh");
    command
        .env("STRONGSWAN_CONF", dir.join("strongswan.conf"))
        .args([
            "-c",
            r#"mount --bind "$0/run" /run || exit 1
               if [ -n "$2" ]; then exec env LD_PRELOAD="$2" "$1"; else exec "$1"; fi"#,
        ])
        .arg(dir.path())
        .args([CHARON, &preload]);
    let mut process = Process::spawn("charon", command, dir.path())?;
    process.set_grace(options.grace);
    let vici = dir.join("run/charon.vici");
    let what = format!("charon {name}'s vici socket");
    // A first start in a fresh VM guest takes up to ~20 s (its plugins are read cold over
    // 9p under emulation); on a host it takes well under a second.
    wait_until(
        &what,
        Duration::from_secs(60),
        Duration::from_millis(20),
        || {
            if let Some(status) = process.exited()? {
                bail!("charon {name} exited ({status}): {}", process.dump());
            }
            // The socket file appears when charon binds it, a moment before it listens:
            // ready is when a connection is taken.
            Ok(std::os::unix::net::UnixStream::connect(&vici).is_ok())
        },
    )?;
    Ok(process)
}

/// swanctl.conf for `connections`; each certificate, its key and its CA are written into
/// the swanctl directory once, however many connections use them.
fn swanctl_conf(dir: &WorkDir, connections: &[Connection]) -> Result<String> {
    let mut conns = String::new();
    let mut secrets = String::new();
    let mut written = BTreeSet::new();
    for conn in connections {
        let cert_file = match &conn.auth {
            Auth::Pubkey(node) => {
                let file = format!("{}.pem", node.id);
                if written.insert(node.id.clone()) {
                    std::fs::copy(&node.cert, dir.join(&format!("swanctl/x509/{file}")))?;
                    let ca = format!("swanctl/x509ca/{}-ca.pem", node.id);
                    std::fs::copy(&node.ca, dir.join(&ca))?;
                    let key = std::fs::read_to_string(&node.key)?;
                    write_private(&dir.join(&format!("swanctl/private/{}.key", node.id)), &key)?;
                }
                Some(file)
            }
            Auth::Psk(_) => None,
        };
        conn.render(&mut conns, cert_file.as_deref());
        conn.render_secret(&mut secrets);
    }
    Ok(format!(
        "connections {{\n{conns}}}\nsecrets {{\n{secrets}}}\n"
    ))
}
