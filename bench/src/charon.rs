//! strongSwan's charon as a benchmark subject: one instance in a namespace with a
//! connection per peer, the load-tester plugin's fake kernel completing transport-mode
//! child SAs on a kernel without ESP (see tests/interop/setup).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use iiptran_testkit::WorkDir;
use iiptran_testkit::pki::NodeCert;
use iiptran_testkit::strongswan::{self, Auth, CharonOptions, Connection, Installation};

use iiptran_testkit::netns::Netns;

use crate::system::Usage;

/// The plugins of the interop harness minus what this suite does not use (`openssl`,
/// `gcm`): charon picks its ChaCha20-Poly1305 and X25519 from `chapoly` and `curve25519`.
const PLUGINS: &str = "random nonce drbg aes sha1 sha2 hmac kdf pem pkcs1 pkcs8 x509 pubkey \
                       constraints curve25519 chapoly kernel-netlink socket-default vici";

/// One peer the responder accepts.
#[derive(Clone, Debug)]
pub struct Peer {
    pub identity: String,
    pub endpoint: String,
}

/// A running charon, stopped on drop.
pub struct Charon(strongswan::Charon);

impl Charon {
    /// Starts charon in `ns` (its files in `dir`) with an IIPtran connection `p<i>` from
    /// `endpoint` to every peer, as iiptrand has a neighbor per peer, and loads them.
    pub fn start(
        ns: &Netns,
        dir: &Path,
        cert: &NodeCert,
        ca: &Path,
        endpoint: &str,
        peers: &[Peer],
    ) -> Result<Self> {
        let install = Installation::find(&[])?;
        let cert = NodeCert {
            ca: ca.to_owned(),
            ..cert.clone()
        };
        let local = endpoint.parse()?;
        let connections = peers
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let remote = p.endpoint.parse()?;
                let auth = Auth::Pubkey(cert.clone());
                let mut conn = Connection::iiptran(local, &cert.id, remote, &p.identity, auth);
                conn.name = format!("p{i}");
                Ok(conn)
            })
            .collect::<Result<Vec<_>>>()?;
        let options = CharonOptions {
            ike_log_level: 1,
            fake_kernel: true,
            // The IKE SA table sized for the largest runs, as an operator of that many
            // peers would.
            settings: "    ikesa_table_size = 32768\n".into(),
            plugins: PLUGINS.into(),
            flush_log: false,
            grace: Duration::from_secs(10),
        };
        let dir = WorkDir::new(dir.to_owned())?;
        strongswan::Charon::start_in(&install, ns, dir, "responder", &options, &connections)
            .map(Self)
    }

    pub fn swanctl(&self, args: &[&str]) -> Result<String> {
        self.0.swanctl(args)
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
        Usage::of(self.0.pid())
    }
}
