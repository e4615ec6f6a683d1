//! The IKE engine's questions answered from the VN configuration: which neighbor a peer
//! is, how both sides authenticate, and the IIPtran selector rule for its child SAs.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use iiptran_ike::auth::TrustAnchors;
use iiptran_ike::config::{
    Config as EngineConfig, EspSuite, IkeSuite, Lifetimes, Retransmission, Suites,
};
use iiptran_ike::iana::{IntegId, NotifyType};
use iiptran_ike::identity::Identity;
use iiptran_ike::sa::{LocalAuth, PeerAuth, PeerConfig, Policy};
use iiptran_ike::ts::TrafficSelector;
use iiptran_policy::config::{Config, Credentials, IkeSettings, NatTraversal, Neighbor, Proposal};

use super::DaemonError;
use super::credentials::{Certificates, NodeCredentials};

/// One configured peer as the engine sees it, but for the certificates, which are taken
/// from the node's credentials as each IKE SA starts.
struct Peer {
    neighbor: Arc<Neighbor>,
    local_id: Identity,
    ts_local: Arc<[TrafficSelector]>,
    ts_remote: Arc<[TrafficSelector]>,
    /// The neighbor's proposals (the node's unless it overrides them).
    suites: Arc<Suites>,
    /// The configuration last handed out and the certificates it holds: every IKE SA
    /// keeps its configuration, and one copy per neighbor serves them all until the
    /// certificates change.
    made: Mutex<Option<Made>>,
}

struct Made {
    certificates: Option<Arc<Certificates>>,
    config: Arc<PeerConfig>,
}

/// The engine's [`Policy`] over the neighbors of the configuration. The engine asks for
/// every message, so peers are found through maps, not by a scan of all of them.
pub struct VnPolicy {
    peers: Vec<Peer>,
    /// Positions in `peers`. A valid configuration has unique names, identities and
    /// endpoints; otherwise the first neighbor wins, as in the configuration's own lookups.
    by_name: HashMap<String, usize>,
    by_identity: HashMap<Identity, usize>,
    by_endpoint: HashMap<IpAddr, usize>,
    credentials: Arc<NodeCredentials>,
}

impl Peer {
    fn config(&self, credentials: &NodeCredentials) -> Option<Arc<PeerConfig>> {
        // The node's current certificates, or else the neighbor's PSK.
        let auth = match &self.neighbor.credentials {
            Credentials::Psk(psk) => Err(psk),
            Credentials::Certificates => Ok(credentials.current()?),
        };
        let mut made = self.made.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(m) = made.as_ref()
            && match (&m.certificates, &auth) {
                (Some(a), Ok(b)) => Arc::ptr_eq(a, b),
                (None, Err(_)) => true,
                _ => false,
            }
        {
            return Some(m.config.clone());
        }
        let certificates = auth.as_ref().ok().cloned();
        let (local_auth, remote_auth) = match auth {
            Err(psk) => (LocalAuth::Psk(psk.clone()), PeerAuth::Psk(psk.clone())),
            Ok(c) => (
                LocalAuth::Certificate {
                    key: c.key.clone(),
                    chain: c.chain.clone(),
                },
                PeerAuth::Certificate(c.anchors.clone()),
            ),
        };
        let config = Arc::new(PeerConfig {
            local_id: self.local_id.clone(),
            local_auth,
            remote_id: self.neighbor.identity.clone(),
            remote_auth,
            ts_local: self.ts_local.clone(),
            ts_remote: self.ts_remote.clone(),
        });
        *made = Some(Made {
            certificates,
            config: config.clone(),
        });
        Some(config)
    }
}

impl VnPolicy {
    /// The policy of `config`; neighbors with certificates use `credentials`, which must
    /// hold them.
    pub fn new(config: &Config, credentials: Arc<NodeCredentials>) -> Result<Self, DaemonError> {
        let mut shared = SharedSuites::default();
        let peers: Vec<Peer> = config
            .neighbors
            .iter()
            .map(|n| {
                if n.credentials == Credentials::Certificates && credentials.current().is_none() {
                    return Err(DaemonError::Config(format!(
                        "neighbor {:?} needs the [auth] certificates",
                        n.name
                    )));
                }
                let (ts_local, ts_remote) = n.selectors.proposal(true);
                Ok(Peer {
                    neighbor: n.clone(),
                    local_id: config.node.identity.clone(),
                    ts_local: ts_local.into(),
                    ts_remote: ts_remote.into(),
                    suites: shared.of(&n.ike),
                    made: Mutex::new(None),
                })
            })
            .collect::<Result<_, DaemonError>>()?;
        let mut by_name = HashMap::new();
        let mut by_identity = HashMap::new();
        let mut by_endpoint = HashMap::new();
        for (i, p) in peers.iter().enumerate() {
            by_name.entry(p.neighbor.name.clone()).or_insert(i);
            by_identity.entry(p.neighbor.identity.clone()).or_insert(i);
            by_endpoint
                .entry(p.neighbor.selectors.remote())
                .or_insert(i);
        }
        Ok(Self {
            peers,
            by_name,
            by_identity,
            by_endpoint,
            credentials,
        })
    }

    /// The node's certificate credentials and CRLs.
    pub fn credentials(&self) -> &Arc<NodeCredentials> {
        &self.credentials
    }

    /// The engine configuration of a neighbor, for initiating towards it.
    pub fn peer_config(&self, neighbor: &str) -> Option<Arc<PeerConfig>> {
        let i = *self.by_name.get(neighbor)?;
        self.peers.get(i)?.config(&self.credentials)
    }

    /// The name of the neighbor with identity `id`.
    pub fn neighbor(&self, id: &Identity) -> Option<&str> {
        self.with_identity(id).map(|p| p.neighbor.name.as_str())
    }

    /// The name of the neighbor a peer is: by the identity it gave, else by its address.
    pub fn neighbor_of_peer(&self, id: Option<&Identity>, addr: IpAddr) -> Option<&str> {
        id.and_then(|id| self.with_identity(id))
            .or_else(|| self.at(addr))
            .map(|p| p.neighbor.name.as_str())
    }

    fn with_identity(&self, id: &Identity) -> Option<&Peer> {
        self.peers.get(*self.by_identity.get(id)?)
    }

    fn at(&self, addr: IpAddr) -> Option<&Peer> {
        self.peers.get(*self.by_endpoint.get(&addr)?)
    }
}

impl Policy for VnPolicy {
    fn peer(&self, remote_id: &Identity, remote: SocketAddr) -> Option<Arc<PeerConfig>> {
        // The identity must be the one configured for the endpoint it speaks from.
        self.with_identity(remote_id)
            .filter(|p| p.neighbor.selectors.remote() == remote.ip())
            .and_then(|p| p.config(&self.credentials))
    }

    fn certificate_request(&self, remote: SocketAddr) -> Option<Arc<TrustAnchors>> {
        let certificates = self
            .at(remote.ip())
            .is_some_and(|p| p.neighbor.credentials == Credentials::Certificates);
        certificates
            .then(|| self.credentials.current())
            .flatten()
            .map(|c| c.anchors.clone())
    }

    fn narrow(
        &self,
        peer: &PeerConfig,
        tsi: &[TrafficSelector],
        tsr: &[TrafficSelector],
    ) -> Result<(Vec<TrafficSelector>, Vec<TrafficSelector>), NotifyType> {
        let p = self
            .with_identity(&peer.remote_id)
            .ok_or(NotifyType::TS_UNACCEPTABLE)?;
        p.neighbor
            .selectors
            .narrow_as_responder(tsi, tsr)
            .map_err(|e| e.notify())
    }

    fn accept_narrowed(
        &self,
        peer: &PeerConfig,
        tsi: &[TrafficSelector],
        tsr: &[TrafficSelector],
    ) -> Result<(), NotifyType> {
        let p = self
            .with_identity(&peer.remote_id)
            .ok_or(NotifyType::TS_UNACCEPTABLE)?;
        p.neighbor
            .selectors
            .check_initiator_answer(tsi, tsr)
            .map_err(|e| e.notify())
    }

    fn suites(&self, remote: SocketAddr) -> Option<Arc<Suites>> {
        self.at(remote.ip()).map(|p| p.suites.clone())
    }
}

/// The suites of each distinct pair of proposal lists, made once: neighbors without
/// proposals of their own share the node's lists, and so their suites.
#[derive(Default)]
struct SharedSuites(Vec<(IkeSettings, Arc<Suites>)>);

impl SharedSuites {
    fn of(&mut self, ike: &IkeSettings) -> Arc<Suites> {
        let same = |made: &IkeSettings| {
            Arc::ptr_eq(&made.proposals, &ike.proposals)
                && Arc::ptr_eq(&made.esp_proposals, &ike.esp_proposals)
                && made.pfs == ike.pfs
        };
        if let Some((_, suites)) = self.0.iter().find(|(made, _)| same(made)) {
            return suites.clone();
        }
        let suites = Arc::new(suites(ike));
        self.0.push((ike.clone(), suites.clone()));
        suites
    }
}

/// A proposal's integrity algorithms; AEAD proposals name none, which the engine spells
/// INTEG NONE.
fn integs_or_none(p: &Proposal) -> Vec<IntegId> {
    if p.integ.is_empty() {
        vec![IntegId::NONE]
    } else {
        p.integ.clone()
    }
}

/// The suites of a set of `[ike]` settings: every combination of each proposal's
/// transforms, in the order of the proposals.
fn suites(ike: &IkeSettings) -> Suites {
    let mut ike_suites = Vec::new();
    for p in ike.proposals.iter() {
        for e in &p.encr {
            for &prf in &p.prf {
                for &dh in &p.dh {
                    for integ in integs_or_none(p) {
                        ike_suites.push(IkeSuite {
                            encr: e.id,
                            key_bits: e.key_bits,
                            integ,
                            prf,
                            dh,
                        });
                    }
                }
            }
        }
    }
    let mut esp_suites = Vec::new();
    for p in ike.esp_proposals.iter() {
        for e in &p.encr {
            for integ in integs_or_none(p) {
                esp_suites.push(EspSuite {
                    encr: e.id,
                    key_bits: e.key_bits,
                    integ,
                    esn: p
                        .esn
                        .first()
                        .is_some_and(|&esn| esn == iiptran_ike::iana::EsnId::ESN),
                });
            }
        }
    }
    let child_pfs = ike.pfs.then(|| {
        ike.esp_proposals
            .iter()
            .chain(ike.proposals.iter())
            .find_map(|p| p.dh.first().copied())
    });
    Suites {
        ike: ike_suites,
        esp: esp_suites,
        child_pfs: child_pfs.flatten(),
    }
}

/// The engine's node-wide settings from `[ike]`; each neighbor's own proposals reach the
/// engine through [`VnPolicy`]'s [`Policy::suites`].
pub fn engine_config(ike: &IkeSettings, force_nat_t: bool) -> EngineConfig {
    let Suites {
        ike: ike_suites,
        esp: esp_suites,
        child_pfs,
    } = suites(ike);
    let child_rekey = ike.child_rekey_time;
    EngineConfig {
        ike_suites,
        esp_suites,
        child_pfs,
        retransmission: Retransmission {
            timeout: ike.retransmit_timeout,
            base: ike.retransmit_base,
            tries: ike.retransmit_tries,
        },
        liveness_interval: Some(ike.liveness),
        lifetimes: Lifetimes {
            child_rekey: Some(child_rekey),
            child_hard: child_rekey + child_rekey / 5,
            ike_rekey: Some(ike.rekey_time),
        },
        fragment_size: usize::from(ike.fragment_size),
        force_nat_t: force_nat_t || ike.nat_t == NatTraversal::Force,
        ..EngineConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iiptran_ike::iana::{DhId, EncrId, PrfId};
    use iiptran_policy::config::Proposal;
    use std::path::Path;

    fn settings(ike: &[&str], esp: &[&str], pfs: bool) -> IkeSettings {
        let config = Config::parse(
            "[node]\nname = \"a\"\nidentity = \"a.vn.example\"\nendpoint = \"192.0.2.1\"\n",
            "node.toml",
            Path::new("."),
        )
        .unwrap();
        IkeSettings {
            proposals: ike.iter().map(|p| Proposal::ike(p).unwrap()).collect(),
            esp_proposals: esp.iter().map(|p| Proposal::esp(p).unwrap()).collect(),
            pfs,
            ..config.ike
        }
    }

    #[test]
    fn proposals_expand_into_suites_in_preference_order() {
        let s = settings(
            &[
                "chacha20poly1305-prfsha256-x25519-ecp256",
                "aes256gcm16-prfsha384-ecp256",
            ],
            &["aes128gcm16", "chacha20poly1305"],
            false,
        );
        let c = engine_config(&s, false);
        let ike: Vec<(EncrId, DhId, PrfId)> =
            c.ike_suites.iter().map(|s| (s.encr, s.dh, s.prf)).collect();
        assert_eq!(
            ike,
            [
                (
                    EncrId::CHACHA20_POLY1305,
                    DhId::CURVE25519,
                    PrfId::HMAC_SHA2_256
                ),
                (
                    EncrId::CHACHA20_POLY1305,
                    DhId::ECP_256,
                    PrfId::HMAC_SHA2_256
                ),
                (EncrId::AES_GCM_16, DhId::ECP_256, PrfId::HMAC_SHA2_384),
            ]
        );
        assert!(c.ike_suites.iter().all(|s| s.integ == IntegId::NONE));
        let esp: Vec<(EncrId, Option<u16>)> =
            c.esp_suites.iter().map(|s| (s.encr, s.key_bits)).collect();
        assert_eq!(
            esp,
            [
                (EncrId::AES_GCM_16, Some(128)),
                (EncrId::CHACHA20_POLY1305, None)
            ]
        );
        assert_eq!(c.child_pfs, None);
    }

    #[test]
    fn pfs_uses_the_esp_group_or_else_the_ike_group() {
        let with_esp_group = settings(
            &["chacha20poly1305-prfsha256-x25519"],
            &["chacha20poly1305-ecp256"],
            true,
        );
        assert_eq!(
            engine_config(&with_esp_group, false).child_pfs,
            Some(DhId::ECP_256)
        );
        let without = settings(
            &["chacha20poly1305-prfsha256-x25519"],
            &["chacha20poly1305"],
            true,
        );
        assert_eq!(
            engine_config(&without, false).child_pfs,
            Some(DhId::CURVE25519)
        );
    }

    #[test]
    fn a_neighbors_proposals_are_its_suites_in_the_policy() {
        let config = Config::parse(
            "[node]\nname = \"a\"\nidentity = \"a.vn.example\"\nendpoint = \"192.0.2.1\"\n\
             [[neighbor]]\nname = \"b\"\nidentity = \"b.vn.example\"\nendpoint = \"192.0.2.2\"\n\
             link = { name = \"vn-b\" }\npsk = \"a pre-shared key for b\"\n\
             proposals = [\"aes256gcm16-prfsha384-ecp256\"]\nesp_proposals = [\"aes256gcm16\"]\n\
             [[neighbor]]\nname = \"c\"\nidentity = \"c.vn.example\"\nendpoint = \"192.0.2.3\"\n\
             link = { name = \"vn-c\" }\npsk = \"a pre-shared key for c\"\n\
             [[neighbor]]\nname = \"d\"\nidentity = \"d.vn.example\"\nendpoint = \"192.0.2.4\"\n\
             link = { name = \"vn-d\" }\npsk = \"a pre-shared key for d\"\n",
            "node.toml",
            Path::new("."),
        )
        .unwrap();
        let credentials = Arc::new(NodeCredentials::load(&config).unwrap());
        let policy = VnPolicy::new(&config, credentials).unwrap();
        let at = |ip: &str| SocketAddr::new(ip.parse().unwrap(), 500);
        let b = policy.suites(at("192.0.2.2")).expect("b's suites");
        let ike: Vec<(EncrId, DhId, PrfId)> = b.ike.iter().map(|s| (s.encr, s.dh, s.prf)).collect();
        assert_eq!(
            ike,
            [(EncrId::AES_GCM_16, DhId::ECP_256, PrfId::HMAC_SHA2_384)]
        );
        assert_eq!(b.esp, [EspSuite::AES256_GCM16]);
        let node = engine_config(&config.ike, false);
        let c = policy.suites(at("192.0.2.3")).expect("c's suites");
        assert_eq!(*c, node.suites(), "c keeps the node's proposals");
        assert_ne!(b.ike, node.ike_suites);
        // Neighbors without proposals of their own share the node's, and their suites.
        let [nb, nc, nd] = &config.neighbors[..] else {
            panic!("three neighbors");
        };
        assert!(Arc::ptr_eq(&nc.ike.proposals, &config.ike.proposals));
        assert!(Arc::ptr_eq(
            &nd.ike.esp_proposals,
            &config.ike.esp_proposals
        ));
        assert!(!Arc::ptr_eq(&nb.ike.proposals, &config.ike.proposals));
        let d = policy.suites(at("192.0.2.4")).expect("d's suites");
        assert!(Arc::ptr_eq(&c, &d));
        assert!(!Arc::ptr_eq(&b, &c));
        // A peer is the neighbor of the identity it gives, else the one at its address.
        let id = |s: &str| Identity::Fqdn(s.into());
        let of = |id: Option<&Identity>, ip: &str| policy.neighbor_of_peer(id, ip.parse().unwrap());
        assert_eq!(of(Some(&id("c.vn.example")), "192.0.2.2"), Some("c"));
        assert_eq!(of(Some(&id("x.vn.example")), "192.0.2.2"), Some("b"));
        assert_eq!(of(None, "192.0.2.4"), Some("d"));
        assert_eq!(of(Some(&id("x.vn.example")), "192.0.2.9"), None);
        assert!(
            policy.suites(at("192.0.2.9")).is_none(),
            "no neighbor there"
        );
        // One configuration per neighbor serves all its IKE SAs while credentials stay.
        let b = policy.peer_config("b").expect("b");
        assert!(Arc::ptr_eq(&b, &policy.peer_config("b").expect("b")));
        assert!(!Arc::ptr_eq(&b, &policy.peer_config("c").expect("c")));
    }
}
