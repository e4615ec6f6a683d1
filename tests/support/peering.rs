//! `iiptrand` and strongSwan's charon as IKEv2 peers: each in its own network namespace,
//! joined by a veth pair, configured for one IIPtran adjacency between them.
//!
//! iiptrand (node `a`, identity `a.vn.example`, userspace data plane) is at `OURS`;
//! charon (identity `ss.vn.example`, the neighbor `ss` in iiptrand's configuration) is at
//! `THEIRS` with one connection `iiptran` and its child `ipip`.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use iiptran_testkit::WorkDir;
use iiptran_testkit::iiptrand::{Credentials, FAST_LIVENESS, Neighbor, NodeConfig};
use iiptran_testkit::netns::{Netns, veth};
use iiptran_testkit::pki::NodeCert;
use iiptran_testkit::strongswan::{
    Auth, Charon, CharonOptions, ChildSa, Connection, IkeSa, Installation,
};

use super::daemon::Daemon;

pub const OURS: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
pub const THEIRS: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
pub const OUR_ID: &str = "a.vn.example";
pub const CHARON_ID: &str = "ss.vn.example";
/// Charon's node as iiptrand's configuration names it.
pub const NEIGHBOR: &str = "ss";
/// How long one IKE SA with its child may take to come up, retransmissions included.
pub const SETUP: Duration = Duration::from_secs(20);

const PSK: &str = "interop pre-shared key of at least thirty-two bytes";

/// How the two authenticate.
#[derive(Clone, Debug)]
pub enum Keys {
    Psk,
    /// iiptrand's files as `iiptrand enroll` writes them (`ca.pem`, `cert.pem`, `key.pem`
    /// in this directory) and charon's certificate, both under one CA.
    Certificates {
        ours: PathBuf,
        theirs: NodeCert,
    },
}

/// One scenario's settings.
pub struct Plan {
    pub keys: Keys,
    /// Whether iiptrand initiates; otherwise its neighbor is passive and the test has
    /// charon initiate.
    pub iiptran_initiates: bool,
    /// iiptrand's liveness lines of its `[ike]` section (default: `FAST_LIVENESS`).
    pub liveness: String,
    /// Further lines of iiptrand's `[ike]` section.
    pub ike: String,
    pub charon: CharonOptions,
    /// Environment variables for iiptrand, e.g. `IIPTRAN_LOG_IKE_KEYS=1`.
    pub daemon_env: Vec<(&'static str, PathBuf)>,
    /// charon's connection, from the IIPtran one.
    pub connection: Connection,
}

impl Plan {
    pub fn new(keys: Keys, iiptran_initiates: bool) -> Self {
        let auth = match &keys {
            Keys::Psk => Auth::Psk(PSK.as_bytes().to_vec()),
            Keys::Certificates { theirs, .. } => Auth::Pubkey(theirs.clone()),
        };
        Self {
            keys,
            iiptran_initiates,
            liveness: FAST_LIVENESS.to_owned(),
            ike: String::new(),
            charon: CharonOptions::default(),
            daemon_env: Vec::new(),
            connection: Connection::iiptran(THEIRS, CHARON_ID, OURS, OUR_ID, auth),
        }
    }

    /// Both sides offer exactly these proposals (strongSwan syntax, e.g.
    /// `aes256-sha256-x25519` and `aes256gcm16`).
    pub fn suite(mut self, ike: &str, esp: &str) -> Self {
        self.ike.push_str(&format!(
            "proposals = [\"{ike}\"]\nesp_proposals = [\"{esp}\"]\n"
        ));
        self.connection = self.connection.proposals(ike, esp);
        self
    }

    pub fn charon_connection(mut self, configure: impl FnOnce(Connection) -> Connection) -> Self {
        self.connection = configure(self.connection);
        self
    }
}

/// The two peers. Dropping it stops both and removes the namespaces.
pub struct Peering {
    pub daemon: Daemon,
    pub charon: Charon,
    /// The veth's name (the same in both namespaces), for captures.
    pub ifname: String,
    pub dir: WorkDir,
    pub ours: Netns,
    pub theirs: Netns,
}

impl Peering {
    /// Starts charon, then iiptrand (which initiates at once unless the plan says
    /// otherwise).
    pub fn start(install: &Installation, plan: &Plan) -> Result<Self> {
        let ours = Netns::new("iio")?;
        let theirs = Netns::new("iis")?;
        let (end, _) = veth(&ours, OURS, &theirs, THEIRS, 24)?;
        let dir = WorkDir::temp("peering")?;
        let charon = Charon::start(
            install,
            &theirs,
            "ss",
            &plan.charon,
            std::slice::from_ref(&plan.connection),
        )?;
        let credentials = match &plan.keys {
            Keys::Psk => Credentials::Psk(PSK.to_owned()),
            Keys::Certificates { ours, .. } => Credentials::Enrolled(ours.clone()),
        };
        let mut neighbor = Neighbor::new(NEIGHBOR, &THEIRS.to_string(), "10.255.0.0/31");
        if !plan.iiptran_initiates {
            neighbor.passive = true;
        }
        let mut config = NodeConfig::new("a", &OURS.to_string(), credentials).neighbor(neighbor);
        config.ike = format!("{}{}", plan.liveness, plan.ike);
        let env: Vec<(&str, &std::path::Path)> = plan
            .daemon_env
            .iter()
            .map(|(k, v)| (*k, v.as_path()))
            .collect();
        let daemon = Daemon::start(&ours, dir.path(), &config, &env)?;
        Ok(Self {
            daemon,
            charon,
            ifname: end.ifname,
            dir,
            ours,
            theirs,
        })
    }

    /// Brings the IIPtran adjacency up from the side the plan names, and waits until
    /// iiptrand has it established with its link up and charon lists the child INSTALLED.
    pub fn establish(&self, plan: &Plan) -> Result<IkeSa> {
        if !plan.iiptran_initiates {
            self.charon.initiate_child("ipip")?;
        }
        self.daemon.wait_established(NEIGHBOR, SETUP)?;
        self.charon
            .wait_for_sas("charon's installed child SA", SETUP, installed)
    }
}

/// The established IKE SA with exactly one child, INSTALLED.
pub fn installed(sas: &[IkeSa]) -> Option<IkeSa> {
    sas.iter()
        .find(|sa| {
            sa.state == "ESTABLISHED"
                && sa.children.len() == 1
                && sa.children[0].state == "INSTALLED"
        })
        .cloned()
}

/// The one child of an SA `installed` returned.
pub fn child(sa: &IkeSa) -> &ChildSa {
    &sa.children[0]
}
