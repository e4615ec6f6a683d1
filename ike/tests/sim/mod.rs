//! A simulated network of engines and a simulated clock: datagrams can be dropped,
//! duplicated, delayed and reordered by a seeded PRNG, so every run is reproducible.
#![allow(dead_code)] // each test crate uses a different part

use iiptran_ike::auth::{SigningKey, TrustAnchors};
use iiptran_ike::config::{Config, Suites};
use iiptran_ike::iana::{IpProtocol, NotifyType};
use iiptran_ike::identity::Identity;
use iiptran_ike::sa::{ChildSa, Engine, Event, IkeSaId, LocalAuth, PeerAuth, PeerConfig, Policy};
use iiptran_ike::secret::Secret;
use iiptran_ike::ts::{IiptranSelectors, TrafficSelector};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, IsCa, Issuer,
    KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SanType, SerialNumber,
    SignatureAlgorithm, date_time_ymd,
};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The wall-clock time when every simulation starts: 2027-01-01, inside the validity
/// of the test certificates.
pub fn wall_start() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_798_761_600)
}

/// xorshift64*: tiny, seeded, good enough to schedule faults.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    pub loss: f64,
    pub duplicate: f64,
    /// Each datagram takes `latency` plus up to this much more, so they reorder.
    pub jitter: Duration,
}

/// The node's decisions: the peers it knows, and for child SAs the IIPtran rule
/// ([`IiptranSelectors`]) between our endpoint and the peer's.
pub struct TestPolicy {
    pub peers: Vec<Arc<PeerConfig>>,
    /// When set, every child SA is refused with TS_UNACCEPTABLE.
    pub refuse_children: bool,
    /// Suites for the peer at an address, instead of the engine's.
    pub suites: Vec<(IpAddr, Arc<Suites>)>,
}

/// The IIPtran selectors of a peer configuration: IPIP between its two endpoints.
fn iiptran(peer: &PeerConfig) -> Result<IiptranSelectors, NotifyType> {
    let endpoint = |ts: &[TrafficSelector]| ts.first().map(|t| t.start_addr);
    let (Some(local), Some(remote)) = (endpoint(&peer.ts_local), endpoint(&peer.ts_remote)) else {
        return Err(NotifyType::TS_UNACCEPTABLE);
    };
    IiptranSelectors::new(local, remote, &[IpProtocol::IPIP]).map_err(|e| e.notify())
}

impl Policy for TestPolicy {
    fn peer(&self, remote_id: &Identity, _remote: SocketAddr) -> Option<Arc<PeerConfig>> {
        self.peers
            .iter()
            .find(|p| &p.remote_id == remote_id)
            .cloned()
    }

    fn certificate_request(&self, remote: SocketAddr) -> Option<Arc<TrustAnchors>> {
        self.peers
            .iter()
            .filter(|p| p.ts_remote.first().map(|t| t.start_addr) == Some(remote.ip()))
            .find_map(|p| match &p.remote_auth {
                PeerAuth::Certificate(anchors) => Some(anchors.clone()),
                PeerAuth::Psk(_) => None,
            })
    }

    fn narrow(
        &self,
        peer: &PeerConfig,
        tsi: &[TrafficSelector],
        tsr: &[TrafficSelector],
    ) -> Result<(Vec<TrafficSelector>, Vec<TrafficSelector>), NotifyType> {
        if self.refuse_children {
            return Err(NotifyType::TS_UNACCEPTABLE);
        }
        iiptran(peer)?
            .narrow_as_responder(tsi, tsr)
            .map_err(|e| e.notify())
    }

    fn accept_narrowed(
        &self,
        peer: &PeerConfig,
        tsi: &[TrafficSelector],
        tsr: &[TrafficSelector],
    ) -> Result<(), NotifyType> {
        iiptran(peer)?
            .check_initiator_answer(tsi, tsr)
            .map_err(|e| e.notify())
    }

    fn suites(&self, remote: SocketAddr) -> Option<Arc<Suites>> {
        self.suites
            .iter()
            .find(|(ip, _)| *ip == remote.ip())
            .map(|(_, s)| s.clone())
    }
}

pub fn fqdn(name: &str) -> Identity {
    Identity::Fqdn(name.into())
}

/// IPIP from or to one endpoint.
pub fn ipip(addr: IpAddr) -> Vec<TrafficSelector> {
    vec![TrafficSelector::exact(addr, IpProtocol::IPIP)]
}

pub struct Node {
    pub name: String,
    pub ip: IpAddr,
    pub engine: Engine<TestPolicy>,
    pub events: Vec<Event>,
}

impl Node {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, 500)
    }

    pub fn id(&self) -> Identity {
        fqdn(&self.name)
    }

    /// Child SAs that came up (first, by rekey) and were not deleted or retired since.
    pub fn live_children(&self) -> Vec<ChildSa> {
        let mut live: Vec<ChildSa> = Vec::new();
        for e in &self.events {
            match e {
                Event::ChildSaUp(c) => live.push(c.clone()),
                Event::ChildSaRekeyed { new, .. } => live.push(new.clone()),
                Event::ChildSaDeleted { spis, .. } | Event::ChildSaRetired { spis, .. } => {
                    live.retain(|c| c.spis != *spis)
                }
                _ => {}
            }
        }
        live
    }

    /// Child SAs in use for outbound traffic: live and not replaced by a rekey.
    pub fn active_children(&self) -> Vec<ChildSa> {
        let mut live = self.live_children();
        for e in &self.events {
            if let Event::ChildSaRekeyed { old, .. } = e {
                live.retain(|c| c.spis != *old);
            }
        }
        live
    }

    pub fn ike_up(&self) -> Vec<IkeSaId> {
        let mut up = Vec::new();
        for e in &self.events {
            match e {
                Event::IkeSaUp { sa, .. } => up.push(*sa),
                Event::IkeSaDown { sa, .. } => up.retain(|s| s != sa),
                _ => {}
            }
        }
        up
    }

    pub fn count(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.events.iter().filter(|e| f(e)).count()
    }
}

/// Sees (from, to, payload) of every datagram; returning false drops it.
pub type Filter = Box<dyn FnMut(SocketAddr, SocketAddr, &[u8]) -> bool>;

/// A NAT in front of the node at `inside`: its datagrams leave from `outside` with the
/// port moved up by `PORT_SHIFT`, and datagrams to such a port of `outside` go back in.
#[derive(Clone, Copy, Debug)]
pub struct Nat {
    pub inside: IpAddr,
    pub outside: IpAddr,
}

impl Nat {
    pub const PORT_SHIFT: u16 = 10_000;

    fn outbound(self, from: SocketAddr) -> SocketAddr {
        if from.ip() == self.inside {
            SocketAddr::new(self.outside, from.port() + Self::PORT_SHIFT)
        } else {
            from
        }
    }

    fn inbound(self, to: SocketAddr) -> SocketAddr {
        match to.port().checked_sub(Self::PORT_SHIFT) {
            Some(port) if to.ip() == self.outside => SocketAddr::new(self.inside, port),
            _ => to,
        }
    }
}

/// A simulation taking more steps than this has an engine that keeps asking for a
/// deadline it does not clear.
const MAX_STEPS: u64 = 2_000_000;

struct InFlight {
    at: Instant,
    seq: u64,
    from: SocketAddr,
    to: SocketAddr,
    payload: Vec<u8>,
}

pub struct Net {
    pub start: Instant,
    pub now: Instant,
    pub nodes: Vec<Node>,
    pub faults: Faults,
    pub latency: Duration,
    rng: Rng,
    in_flight: Vec<InFlight>,
    seq: u64,
    pub sent: usize,
    /// One node behind a NAT.
    pub nat: Option<Nat>,
    steps: u64,
    /// Sees every datagram before faults apply; returning false drops it.
    pub filter: Option<Filter>,
}

impl Net {
    pub fn new(seed: u64) -> Self {
        let start = Instant::now();
        Self {
            start,
            now: start,
            nodes: Vec::new(),
            faults: Faults::default(),
            latency: Duration::from_millis(10),
            rng: Rng::new(seed),
            in_flight: Vec::new(),
            seq: 0,
            sent: 0,
            nat: None,
            steps: 0,
            filter: None,
        }
    }

    fn engine(&self, config: Config, peers: Vec<Arc<PeerConfig>>) -> Engine<TestPolicy> {
        let wall = wall_start() + self.elapsed();
        let policy = TestPolicy {
            peers,
            refuse_children: false,
            suites: Vec::new(),
        };
        Engine::new(config, policy, self.now, wall).expect("engine")
    }

    pub fn add(&mut self, name: &str, ip: &str, config: Config) -> usize {
        let engine = self.engine(config, Vec::new());
        self.nodes.push(Node {
            name: name.into(),
            ip: ip.parse().expect("address"),
            engine,
            events: Vec::new(),
        });
        self.nodes.len() - 1
    }

    /// The configuration with which node `a` talks to node `b` using `psk`.
    pub fn psk_peer(&self, a: usize, b: usize, psk: &[u8]) -> PeerConfig {
        let (na, nb) = (&self.nodes[a], &self.nodes[b]);
        PeerConfig {
            local_id: na.id(),
            local_auth: LocalAuth::Psk(Secret::from_slice(psk)),
            remote_id: nb.id(),
            remote_auth: PeerAuth::Psk(Secret::from_slice(psk)),
            ts_local: ipip(na.ip).into(),
            ts_remote: ipip(nb.ip).into(),
        }
    }

    /// Alice (node 0) and Bob (node 1) on `config`, knowing each other with a PSK.
    pub fn psk_pair(seed: u64, config: Config) -> Self {
        let mut net = Self::new(seed);
        net.add("alice.vn.example", "192.0.2.1", config.clone());
        net.add("bob.vn.example", "192.0.2.2", config);
        net.pair_psk(0, 1);
        net
    }

    /// Both nodes know each other with the same PSK.
    pub fn pair_psk(&mut self, a: usize, b: usize) {
        let ab = Arc::new(self.psk_peer(a, b, b"shared secret"));
        let ba = Arc::new(self.psk_peer(b, a, b"shared secret"));
        self.nodes[a].engine.policy_mut().peers.push(ab);
        self.nodes[b].engine.policy_mut().peers.push(ba);
    }

    /// Node `n` crashes and comes back with the same configuration and no SAs.
    pub fn restart(&mut self, n: usize) {
        let config = self.nodes[n].engine.config().clone();
        let peers = self.nodes[n].engine.policy().peers.clone();
        self.nodes[n].engine = self.engine(config, peers);
        self.nodes[n].events.clear();
    }

    /// Changes the configuration node `n` has for its first peer.
    pub fn edit_peer(&mut self, n: usize, edit: impl FnOnce(&mut PeerConfig)) {
        let peers = &mut self.nodes[n].engine.policy_mut().peers;
        let mut config = (*peers[0]).clone();
        edit(&mut config);
        peers[0] = Arc::new(config);
    }

    /// Both nodes authenticate with certificates from one CA whose keys (CA and nodes)
    /// are of type `alg`; returns the CA.
    pub fn pair_certs(&mut self, a: usize, b: usize, alg: &'static SignatureAlgorithm) -> Ca {
        let ca = Ca::new(alg);
        let anchors =
            Arc::new(TrustAnchors::from_der(std::slice::from_ref(&ca.der)).expect("anchor"));
        let configs: Vec<PeerConfig> = [(a, b), (b, a)]
            .iter()
            .map(|&(x, y)| {
                let (key, der) = ca.issue(&self.nodes[x].name, alg);
                PeerConfig {
                    local_auth: LocalAuth::Certificate {
                        key: Arc::new(key),
                        chain: vec![der].into(),
                    },
                    remote_auth: PeerAuth::Certificate(anchors.clone()),
                    ..self.psk_peer(x, y, b"unused")
                }
            })
            .collect();
        for ((x, _), config) in [(a, b), (b, a)].into_iter().zip(configs) {
            self.nodes[x]
                .engine
                .policy_mut()
                .peers
                .push(Arc::new(config));
        }
        ca
    }

    pub fn initiate(&mut self, a: usize, b: usize) -> IkeSaId {
        let remote = self.nodes[b].addr();
        let local = self.nodes[a].addr();
        let peer = self.nodes[a]
            .engine
            .policy()
            .peers
            .iter()
            .find(|p| p.remote_id == self.nodes[b].id())
            .cloned()
            .expect("peer configured");
        let now = self.now;
        self.nodes[a]
            .engine
            .initiate(now, local, remote, peer)
            .expect("initiate")
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    fn collect(&mut self) {
        for i in 0..self.nodes.len() {
            while let Some(t) = self.nodes[i].engine.poll_transmit() {
                self.sent += 1;
                if let Some(f) = self.filter.as_mut()
                    && !f(t.local, t.remote, &t.payload)
                {
                    continue;
                }
                if self.rng.chance(self.faults.loss) {
                    continue;
                }
                let copies = if self.rng.chance(self.faults.duplicate) {
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    let jitter = self.faults.jitter.mul_f64(self.rng.unit());
                    self.seq += 1;
                    self.in_flight.push(InFlight {
                        at: self.now + self.latency + jitter,
                        seq: self.seq,
                        from: self.nat.map_or(t.local, |nat| nat.outbound(t.local)),
                        to: t.remote,
                        payload: t.payload.clone(),
                    });
                }
            }
            while let Some(e) = self.nodes[i].engine.poll_event() {
                self.nodes[i].events.push(e);
            }
        }
    }

    /// Injects a datagram as if `from` had sent it to `to`.
    pub fn inject(&mut self, from: SocketAddr, to: SocketAddr, payload: Vec<u8>) {
        self.seq += 1;
        self.in_flight.push(InFlight {
            at: self.now,
            seq: self.seq,
            from,
            to,
            payload,
        });
    }

    /// Advances to the next delivery or timer, up to `limit`. Returns false when nothing
    /// is left to happen before it.
    pub fn step(&mut self, limit: Instant) -> bool {
        self.steps += 1;
        assert!(
            self.steps < MAX_STEPS,
            "simulation does not settle at {:?}",
            self.elapsed()
        );
        self.collect();
        let next_delivery = self.in_flight.iter().map(|f| (f.at, f.seq)).min();
        let next_timer = self
            .nodes
            .iter()
            .filter_map(|n| n.engine.poll_timeout())
            .min();
        let next = match (next_delivery.map(|d| d.0), next_timer) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(t) => t,
                None => return false,
            },
        };
        if next > limit {
            self.now = limit;
            return false;
        }
        self.now = self.now.max(next);
        if let Some((at, seq)) = next_delivery
            && at <= self.now
        {
            let i = self
                .in_flight
                .iter()
                .position(|f| f.seq == seq)
                .expect("in flight");
            let f = self.in_flight.swap_remove(i);
            let to = self.nat.map_or(f.to, |nat| nat.inbound(f.to));
            if let Some(node) = self.nodes.iter_mut().find(|n| n.ip == to.ip()) {
                node.engine.handle(self.now, to, f.from, &f.payload);
            }
        } else {
            let now = self.now;
            for n in &mut self.nodes {
                if n.engine.poll_timeout().is_some_and(|t| t <= now) {
                    n.engine.handle_timeout(now);
                }
            }
        }
        self.collect();
        true
    }

    /// Runs until `done` holds or `within` simulated time has passed.
    pub fn run_until(&mut self, within: Duration, done: impl Fn(&Net) -> bool) -> bool {
        let limit = self.now + within;
        loop {
            if done(self) {
                return true;
            }
            if !self.step(limit) {
                return done(self);
            }
        }
    }

    /// Runs for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        let limit = self.now + d;
        while self.step(limit) {}
    }

    /// Node `a` has exactly one active child SA and it pairs with exactly one of `b`'s:
    /// same SPIs crosswise and the same keys crosswise.
    pub fn paired(&self, a: usize, b: usize) -> bool {
        let (ca, cb) = (
            self.nodes[a].active_children(),
            self.nodes[b].active_children(),
        );
        let [x] = ca.as_slice() else { return false };
        let [y] = cb.as_slice() else { return false };
        x.spis.inbound == y.spis.outbound
            && x.spis.outbound == y.spis.inbound
            && x.inbound == y.outbound
            && x.outbound == y.inbound
    }
}

/// A test CA issuing node certificates for DNS names.
pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pub der: Vec<u8>,
}

fn validity(params: &mut CertificateParams) {
    params.not_before = date_time_ymd(2026, 1, 1);
    params.not_after = date_time_ymd(2028, 1, 1);
}

impl Ca {
    pub fn new(alg: &'static SignatureAlgorithm) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "vn ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut params);
        let key = KeyPair::generate_for(alg).expect("CA key");
        let der = params.self_signed(&key).expect("CA").der().to_vec();
        Self { params, key, der }
    }

    /// A key of type `alg` and a certificate for `name` signed by this CA.
    pub fn issue(&self, name: &str, alg: &'static SignatureAlgorithm) -> (SigningKey, Vec<u8>) {
        let key = KeyPair::generate_for(alg).expect("node key");
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.subject_alt_names = vec![SanType::DnsName(name.try_into().expect("name"))];
        validity(&mut params);
        let issuer = Issuer::from_params(&self.params, &self.key);
        let der = params
            .signed_by(&key, &issuer)
            .expect("cert")
            .der()
            .to_vec();
        let signing = SigningKey::from_pkcs8_der(&key.serialize_der()).expect("PKCS#8 key");
        (signing, der)
    }

    /// A CRL of this CA that revokes the certificates `revoked` (DER).
    pub fn crl(&self, revoked: &[&[u8]]) -> Vec<u8> {
        let revoked_certs = revoked
            .iter()
            .map(|der| {
                let (_, cert) = x509_parser::parse_x509_certificate(der).expect("certificate");
                RevokedCertParams {
                    serial_number: SerialNumber::from_slice(cert.raw_serial()),
                    revocation_time: date_time_ymd(2026, 11, 1),
                    reason_code: None,
                    invalidity_date: None,
                }
            })
            .collect();
        CertificateRevocationListParams {
            this_update: date_time_ymd(2026, 12, 1),
            next_update: date_time_ymd(2027, 2, 1),
            crl_number: SerialNumber::from_slice(&[1]),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&Issuer::from_params(&self.params, &self.key))
        .expect("CRL")
        .der()
        .to_vec()
    }
}
