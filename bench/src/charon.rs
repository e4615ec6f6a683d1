//! strongSwan's charon as a benchmark subject: one instance in a namespace with its own
//! strongswan.conf and swanctl directory, the load-tester plugin's fake kernel completing
//! transport-mode child SAs on a kernel without ESP (see tests/interop/setup).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::pki::{NodeCert, write_private};
use crate::system::{Netns, Process, Usage, checked, run, wait_for};

const CHARON: &str = "/usr/lib/ipsec/charon";
const PLUGIN_CACHE: &str = "/var/cache/iiptran-interop";

/// The load-tester plugin `tests/interop/setup` built for the installed charon.
pub fn load_tester() -> Result<PathBuf> {
    let version = run("dpkg-query", &["-W", "-f=${Version}", "strongswan-charon"])
        .context("strongswan-charon is not installed: run tests/interop/setup")?;
    let plugin = Path::new(PLUGIN_CACHE)
        .join(version.trim())
        .join("libstrongswan-load-tester.so");
    if !plugin.exists() {
        bail!("missing {}: run tests/interop/setup", plugin.display());
    }
    Ok(plugin)
}

/// One peer the responder accepts.
#[derive(Clone, Debug)]
pub struct Peer {
    pub identity: String,
    pub endpoint: String,
}

fn strongswan_conf(dir: &Path) -> String {
    let dir = dir.display();
    // The plugin set of the interop harness, minus what this suite does not use; the IKE
    // SA table sized for the largest runs, as an operator of that many peers would.
    format!(
        "charon {{
    load_modular = no
    load = load-tester random nonce drbg aes sha1 sha2 hmac kdf pem pkcs1 pkcs8 x509 pubkey constraints curve25519 chapoly kernel-netlink socket-default vici
    install_routes = no
    install_virtual_ip = no
    ikesa_table_size = 32768
    plugins {{
        vici {{
            socket = unix://{dir}/run/charon.vici
        }}
        load-tester {{
            enable = yes
            fake_kernel = yes
            initiators = 0
        }}
    }}
    filelog {{
        main {{
            path = {dir}/charon.log
            default = 1
        }}
    }}
}}
swanctl {{
    load = pem pkcs1 pkcs8 x509 pubkey curve25519 sha1 sha2 random nonce
}}
"
    )
}

/// A connection per peer, each with its IIPtran child, as iiptrand has a neighbor per peer.
fn swanctl_conf(local: &NodeCert, endpoint: &str, peers: &[Peer]) -> String {
    let mut text = String::from("connections {\n");
    for (i, p) in peers.iter().enumerate() {
        let _ = write!(
            text,
            "    p{i} {{
        version = 2
        local_addrs = {endpoint}
        remote_addrs = {remote}
        proposals = chacha20poly1305-prfsha256-x25519
        local {{
            auth = pubkey
            certs = responder.pem
            id = {local_id}
        }}
        remote {{
            auth = pubkey
            id = {remote_id}
        }}
        children {{
            ipip {{
                mode = transport
                local_ts = dynamic[ipencap]
                remote_ts = dynamic[ipencap]
                esp_proposals = chacha20poly1305
            }}
        }}
    }}
",
            remote = p.endpoint,
            local_id = local.id,
            remote_id = p.identity,
        );
    }
    text.push_str("}\n");
    text
}

/// A running charon, stopped on drop.
pub struct Charon {
    pub process: Process,
    dir: PathBuf,
}

impl Charon {
    /// Starts charon in `ns` with a connection for every peer and loads them.
    pub fn start(
        ns: &Netns,
        dir: &Path,
        cert: &NodeCert,
        ca: &Path,
        endpoint: &str,
        peers: &[Peer],
    ) -> Result<Self> {
        let plugin = load_tester()?;
        for sub in ["run", "swanctl/x509", "swanctl/x509ca", "swanctl/private"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        std::fs::write(dir.join("strongswan.conf"), strongswan_conf(dir))?;
        std::fs::copy(&cert.cert, dir.join("swanctl/x509/responder.pem"))?;
        std::fs::copy(ca, dir.join("swanctl/x509ca/ca.pem"))?;
        write_private(
            &dir.join("swanctl/private/responder.key"),
            &std::fs::read_to_string(&cert.key)?,
        )?;
        std::fs::write(
            dir.join("swanctl/swanctl.conf"),
            swanctl_conf(cert, endpoint, peers),
        )?;
        let mut command = ns.command("sh");
        // Debian's charon writes a fixed /var/run/charon.pid: give it a private /run in
        // the mount namespace `ip netns exec` made for it.
        command
            .env("STRONGSWAN_CONF", dir.join("strongswan.conf"))
            .args([
                "-c",
                r#"mount --bind "$0/run" /run || exit 1; exec env LD_PRELOAD="$2" "$1""#,
            ])
            .arg(dir)
            .arg(CHARON)
            .arg(&plugin);
        let process = Process::spawn("charon", command, dir)?;
        let mut charon = Self {
            process,
            dir: dir.to_owned(),
        };
        let vici = dir.join("run/charon.vici");
        wait_for(
            "charon's vici socket",
            Duration::from_secs(20),
            Duration::from_millis(50),
            || {
                if let Some(status) = charon.process.exited()? {
                    bail!("charon exited: {status}");
                }
                Ok(vici.exists().then_some(()))
            },
        )?;
        let conf = dir.join("swanctl/swanctl.conf").display().to_string();
        charon.swanctl(&["--load-all", "--noprompt", "--file", &conf])?;
        Ok(charon)
    }

    pub fn swanctl(&self, args: &[&str]) -> Result<String> {
        let (verb, rest) = args.split_first().context("swanctl needs a verb")?;
        let uri = format!("unix://{}", self.dir.join("run/charon.vici").display());
        let mut command = Command::new("swanctl");
        command
            .env("STRONGSWAN_CONF", self.dir.join("strongswan.conf"))
            .env("SWANCTL_DIR", self.dir.join("swanctl"))
            .args([verb, "--uri", &uri])
            .args(rest);
        checked(command)
    }

    /// Established IKE SAs and half-open ones, from `swanctl --stats`
    /// (`IKE_SAs: 1000 total, 0 half-open`).
    pub fn ike_sas(&self) -> Result<(u64, u64)> {
        let stats = self.swanctl(&["--stats"])?;
        let line = stats
            .lines()
            .find_map(|l| l.trim().strip_prefix("IKE_SAs:"))
            .context("no IKE_SAs line in swanctl --stats")?;
        let numbers: Vec<u64> = line
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|w| w.parse().ok())
            .collect();
        match numbers[..] {
            [total, half_open] => Ok((total, half_open)),
            _ => bail!("unexpected swanctl --stats line {line:?}"),
        }
    }

    pub fn usage(&self) -> Result<Usage> {
        self.process.usage()
    }
}
