//! One IKE SA: its keys, its two message-ID windows, its child SAs, and the exchanges
//! it runs as initiator and responder (RFC 7296 §1.2-§1.4, §2.18).

use super::child::{ChildSa, ChildSpis, Negotiated};
use super::event::{DownReason, Event, IkeSaId};
use super::exchange::{
    NAT_T_PORT, Transmit, encrypted, error_notify, esp_notify, find_notify, has_notify, notify,
    plain, with_marker,
};
use super::keys::{Exchanged, IkeKeys, dh_generate, random_bytes, random_u32, random_u64};
use super::nat::detection_hash;
use super::policy::{LocalAuth, PeerAuth, PeerConfig, Policy, id_from_wire, id_to_wire};
use super::proposal;
use super::window::{Expiry, Incoming, Requests, Responses};
use crate::auth::{self, AuthError};
use crate::config::{Config, IkeSuite};
use crate::crypto::{CryptoError, DhPrivate};
use crate::iana::{AuthMethod, CertEncoding, DhId, ExchangeType, NotifyType, ProtocolId};
use crate::secret::Secret;
use crate::wire::{
    self, Authentication, Certificate, Datagram, Delete, Header, Identification, KeyExchange,
    Payload, Progress, Reassembly, ReassemblyLimits,
};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tracing::{debug, warn};

const NONCE_LEN: usize = 32;
/// How often an initiator follows COOKIE or INVALID_KE_PAYLOAD before giving up.
const MAX_INIT_RETRIES: u8 = 4;

/// What the engine lends an IKE SA while it works.
pub(super) struct Ctx<'a> {
    pub now: Instant,
    pub config: &'a Config,
    pub policy: &'a dyn Policy,
    pub transmits: &'a mut VecDeque<Transmit>,
    pub events: &'a mut VecDeque<Event>,
    /// The wall-clock time at `now`, for certificate validity.
    pub wall: SystemTime,
    /// IKE SAs created by a rekey, for the engine to add.
    pub spawned: Vec<IkeSa>,
    /// (old, new) local SPIs: the new IKE SA takes over the old one's children.
    pub handovers: Vec<(u64, u64)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Initiator: IKE_SA_INIT sent.
    InitSent,
    /// Initiator: IKE_AUTH sent.
    AuthSent,
    /// Responder: IKE_SA_INIT answered, waiting for IKE_AUTH (half-open).
    HalfOpen,
    Established,
    /// Replaced by a rekey: no children, waiting for the DELETE that ends it.
    Rekeyed,
    /// Gone: the engine removes it, events already reported.
    Dead,
}

/// What a request we sent needs to process its response.
enum Pending {
    Init(InitAttempt),
    Auth {
        spi_in: u32,
    },
    CreateChild {
        spi_in: u32,
        nonce: Vec<u8>,
        dh: Option<DhPrivate>,
        rekey: Option<ChildSpis>,
    },
    RekeyIke {
        spi: u64,
        nonce: Vec<u8>,
        dh: DhPrivate,
    },
    DeleteChildren(Vec<ChildSpis>),
    DeleteIke,
    Liveness,
}

/// One IKE_SA_INIT request: our DH secret, the cookie it carried, and how many times
/// COOKIE or INVALID_KE_PAYLOAD made us start over.
struct InitAttempt {
    dh: DhPrivate,
    cookie: Option<Vec<u8>>,
    retries: u8,
}

/// The exchange material that keys a child SA besides the IKE SA's SK_d.
struct ChildKeying<'a> {
    pfs: Option<DhId>,
    shared: Option<&'a Secret>,
    ni: &'a [u8],
    nr: &'a [u8],
}

/// Exchanges we want to start once the window is free.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Task {
    CreateChild,
    RekeyChild(ChildSpis),
    RekeyIke,
    DeleteChild(ChildSpis),
    DeleteIke,
    Liveness,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChildState {
    Installed,
    /// Replaced by a rekey; kept for inbound traffic until its DELETE completes.
    Rekeyed,
    /// DELETE sent.
    Deleting,
}

struct Child {
    sa: ChildSa,
    state: ChildState,
    rekey_at: Option<Instant>,
    /// A child we created answering the peer's rekey of this one while our own rekey
    /// of it was outstanding (§2.8.1), with the lowest nonce of that exchange.
    collision: Option<(ChildSa, Vec<u8>)>,
    /// Reported to the caller; a collision's redundant SA never is.
    announced: bool,
}

pub(super) struct IkeSa {
    pub id: IkeSaId,
    /// We are the original initiator (we send with the I flag).
    pub initiator: bool,
    pub spi_i: u64,
    pub spi_r: u64,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub nat_t: bool,
    peer_fragmentation: bool,
    pub phase: Phase,
    pub peer: Option<Arc<PeerConfig>>,
    pub suite: IkeSuite,
    keys: Option<IkeKeys>,
    pub ni: Vec<u8>,
    pub nr: Vec<u8>,
    /// Our IKE_SA_INIT message and the peer's, as signed in AUTH.
    init_ours: Vec<u8>,
    init_theirs: Vec<u8>,
    requests: Requests<Pending>,
    responses: Responses,
    tasks: VecDeque<Task>,
    children: Vec<Child>,
    /// When the SA entered its phase (half-open and replaced SAs time out).
    pub since: Instant,
    last_heard: Instant,
    rekey_at: Option<Instant>,
    /// For a responder's half-open SA: (remote, SPIi) under which the engine finds it.
    pub init_key: Option<(SocketAddr, u64)>,
    reassembly: [Option<(u32, Reassembly)>; 2],
    /// An IKE SA we created answering the peer's rekey while ours was outstanding
    /// (§2.8.2): its local SPI and the lowest nonce of that exchange.
    ike_collision: Option<(u64, Vec<u8>)>,
    /// Set on the IKE SA that a rekey created, until it takes over the children.
    pub successor_of: Option<u64>,
    /// Another IKE SA with the same peer is kept instead of this one.
    pub duplicate: bool,
}

/// Decoded inner payloads of a message, or why there are none.
enum Decoded {
    Payloads(Vec<Payload>),
    /// A fragment was stored; the message is not complete.
    Partial,
    /// Authentic but unparseable: answer a request with this notification.
    Invalid(NotifyType, Vec<u8>),
    /// Not authentic or not for us: drop silently.
    Drop,
}

fn lowest<'a>(a: &'a [u8], b: &'a [u8]) -> &'a [u8] {
    if a <= b { a } else { b }
}

fn payload_body(p: &Identification) -> Vec<u8> {
    let mut body = vec![p.id_type.0, 0, 0, 0];
    body.extend_from_slice(&p.data);
    body
}

impl IkeSa {
    #[allow(clippy::too_many_arguments)]
    fn blank(
        id: IkeSaId,
        initiator: bool,
        spi_i: u64,
        spi_r: u64,
        local: SocketAddr,
        remote: SocketAddr,
        suite: IkeSuite,
        now: Instant,
    ) -> Self {
        Self {
            id,
            initiator,
            spi_i,
            spi_r,
            local,
            remote,
            nat_t: super::exchange::on_nat_t_port(local, remote),
            peer_fragmentation: false,
            phase: Phase::InitSent,
            peer: None,
            suite,
            keys: None,
            ni: Vec::new(),
            nr: Vec::new(),
            init_ours: Vec::new(),
            init_theirs: Vec::new(),
            requests: Requests::new(0),
            responses: Responses::new(0),
            tasks: VecDeque::new(),
            children: Vec::new(),
            since: now,
            last_heard: now,
            rekey_at: None,
            init_key: None,
            reassembly: [None, None],
            ike_collision: None,
            successor_of: None,
            duplicate: false,
        }
    }

    pub fn local_spi(&self) -> u64 {
        if self.initiator {
            self.spi_i
        } else {
            self.spi_r
        }
    }

    pub fn is_established(&self) -> bool {
        self.phase == Phase::Established && self.successor_of.is_none()
    }

    pub fn peer_id(&self) -> Option<&super::policy::Identity> {
        self.peer.as_ref().map(|p| &p.remote_id)
    }

    pub fn child_spis(&self) -> Vec<ChildSpis> {
        self.children
            .iter()
            .filter(|c| c.state == ChildState::Installed)
            .map(|c| c.sa.spis)
            .collect()
    }

    pub fn queue(&mut self, task: Task) {
        if !self.tasks.contains(&task) {
            self.tasks.push_back(task);
        }
    }

    fn header(&self, exchange: ExchangeType, response: bool, message_id: u32) -> Header {
        Header {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            exchange,
            initiator: self.initiator,
            response,
            message_id,
        }
    }

    fn transmit(&self, ctx: &mut Ctx<'_>, datagrams: &[Vec<u8>]) {
        for d in datagrams {
            ctx.transmits.push_back(Transmit {
                local: self.local,
                remote: self.remote,
                payload: d.clone(),
            });
        }
    }

    /// Encrypts and sends; returns the datagrams as sent for retransmission.
    fn seal(&mut self, ctx: &mut Ctx<'_>, header: &Header, inner: &[Payload]) -> Vec<Vec<u8>> {
        let fragment = self.peer_fragmentation.then_some(ctx.config.fragment_size);
        let nat_t = self.nat_t;
        let Some(keys) = self.keys.as_mut() else {
            return Vec::new();
        };
        match encrypted(header, inner, &mut keys.out, fragment) {
            Ok(d) => {
                let d: Vec<Vec<u8>> = d.into_iter().map(|d| with_marker(nat_t, d)).collect();
                self.transmit(ctx, &d);
                d
            }
            Err(e) => {
                warn!(sa = ?self.id, error = %e, "cannot encode message");
                Vec::new()
            }
        }
    }

    fn send_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        exchange: ExchangeType,
        inner: &[Payload],
        pending: Pending,
    ) {
        let header = self.header(exchange, false, self.requests.next_id);
        let datagrams = self.seal(ctx, &header, inner);
        self.requests
            .start(ctx.now, &ctx.config.retransmission, datagrams, pending);
    }

    fn send_response(&mut self, ctx: &mut Ctx<'_>, request: &Header, inner: &[Payload]) {
        let header = self.header(request.exchange, true, request.message_id);
        let datagrams = self.seal(ctx, &header, inner);
        self.responses.answered(request.message_id, datagrams);
    }

    // ---------------------------------------------------------------- IKE_SA_INIT

    fn init_notifies(&self, ctx: &Ctx<'_>, spi_r: u64) -> Vec<Payload> {
        let (src, dst) = if ctx.config.force_nat_t {
            // A hash no address matches makes the peer float to 4500 as well.
            (vec![0; 20], vec![0; 20])
        } else {
            (
                detection_hash(self.spi_i, spi_r, self.local),
                detection_hash(self.spi_i, spi_r, self.remote),
            )
        };
        vec![
            notify(NotifyType::NAT_DETECTION_SOURCE_IP, src),
            notify(NotifyType::NAT_DETECTION_DESTINATION_IP, dst),
            notify(NotifyType::IKEV2_FRAGMENTATION_SUPPORTED, Vec::new()),
            notify(
                NotifyType::SIGNATURE_HASH_ALGORITHMS,
                auth::our_hash_algorithms(),
            ),
        ]
    }

    /// Starts an IKE SA as initiator.
    pub fn initiate(
        ctx: &mut Ctx<'_>,
        id: IkeSaId,
        local: SocketAddr,
        remote: SocketAddr,
        peer: Arc<PeerConfig>,
    ) -> Result<Self, super::keys::KeyError> {
        let suite = *ctx
            .config
            .ike_suites
            .first()
            .ok_or(CryptoError::Unsupported("IKE SA without configured suites"))?;
        let mut sa = Self::blank(id, true, random_u64()?, 0, local, remote, suite, ctx.now);
        sa.peer = Some(peer);
        sa.ni = random_bytes(NONCE_LEN)?;
        let (dh, public) = dh_generate(suite.dh)?;
        sa.send_init(ctx, dh, public, None, 0);
        Ok(sa)
    }

    fn send_init(
        &mut self,
        ctx: &mut Ctx<'_>,
        dh: DhPrivate,
        public: Vec<u8>,
        cookie: Option<Vec<u8>>,
        retries: u8,
    ) {
        let group = dh.group().id();
        // The suites whose group we sent go first so the responder can take our KE.
        let mut suites = ctx.config.ike_suites.clone();
        suites.sort_by_key(|s| s.dh != group);
        let mut payloads = Vec::new();
        if let Some(c) = &cookie {
            payloads.push(notify(NotifyType::COOKIE, c.clone()));
        }
        payloads.push(Payload::Sa(proposal::ike_proposals(&suites, &[])));
        payloads.push(Payload::Ke(KeyExchange {
            group,
            data: public,
        }));
        payloads.push(Payload::Nonce(self.ni.clone()));
        payloads.extend(self.init_notifies(ctx, 0));
        let header = self.header(ExchangeType::IKE_SA_INIT, false, 0);
        let Some(datagram) = plain(header, payloads) else {
            return;
        };
        self.init_ours = datagram.clone();
        let datagram = with_marker(self.nat_t, datagram);
        self.transmit(ctx, std::slice::from_ref(&datagram));
        self.requests = Requests::new(0);
        self.requests.start(
            ctx.now,
            &ctx.config.retransmission,
            vec![datagram],
            Pending::Init(InitAttempt {
                dh,
                cookie,
                retries,
            }),
        );
    }

    /// Our NAT detection: whether the peer's view of either address differs.
    fn nat_detected(&self, payloads: &[Payload], spi_r: u64) -> bool {
        let matches = |kind, addr| {
            let expected = detection_hash(self.spi_i, spi_r, addr);
            payloads
                .iter()
                .any(|p| matches!(p, Payload::Notify(n) if n.kind == kind && n.data == expected))
                || !has_notify(payloads, kind)
        };
        !(matches(NotifyType::NAT_DETECTION_SOURCE_IP, self.remote)
            && matches(NotifyType::NAT_DETECTION_DESTINATION_IP, self.local))
    }

    fn float_to_nat_t(&mut self) {
        self.local.set_port(NAT_T_PORT);
        self.remote.set_port(NAT_T_PORT);
        self.nat_t = true;
    }

    /// Answers an IKE_SA_INIT request as responder. Returns the half-open SA, or `None`
    /// when the request was refused (the refusal is already sent).
    #[allow(clippy::too_many_arguments)]
    pub fn respond_init(
        ctx: &mut Ctx<'_>,
        id: IkeSaId,
        local: SocketAddr,
        remote: SocketAddr,
        header: &Header,
        payloads: &[Payload],
        raw: &[u8],
    ) -> Option<Self> {
        let refuse = |ctx: &mut Ctx<'_>, kind, data| {
            refuse_init(ctx, local, remote, header, kind, data);
            None
        };
        let (Some(offered), Some(ke), Some(ni)) = (
            payloads.iter().find_map(|p| match p {
                Payload::Sa(s) => Some(s),
                _ => None,
            }),
            payloads.iter().find_map(|p| match p {
                Payload::Ke(k) => Some(k),
                _ => None,
            }),
            payloads.iter().find_map(|p| match p {
                Payload::Nonce(n) => Some(n),
                _ => None,
            }),
        ) else {
            return refuse(ctx, NotifyType::INVALID_SYNTAX, Vec::new());
        };
        if !(16..=256).contains(&ni.len()) {
            return refuse(ctx, NotifyType::INVALID_SYNTAX, Vec::new());
        }
        let supported: Vec<IkeSuite> = ctx
            .config
            .ike_suites
            .iter()
            .copied()
            .filter(super::keys::ike_suite_supported)
            .collect();
        let Some((suite, chosen)) = proposal::choose_ike(&supported, offered) else {
            return refuse(ctx, NotifyType::NO_PROPOSAL_CHOSEN, Vec::new());
        };
        if ke.group != suite.dh {
            return refuse(
                ctx,
                NotifyType::INVALID_KE_PAYLOAD,
                suite.dh.0.to_be_bytes().to_vec(),
            );
        }
        let spi_r = random_u64().ok()?;
        let mut sa = Self::blank(
            id,
            false,
            header.spi_i,
            spi_r,
            local,
            remote,
            suite,
            ctx.now,
        );
        sa.phase = Phase::HalfOpen;
        sa.init_key = Some((remote, header.spi_i));
        sa.ni = ni.clone();
        sa.nr = random_bytes(NONCE_LEN).ok()?;
        sa.init_theirs = raw.to_vec();
        sa.peer_fragmentation = has_notify(payloads, NotifyType::IKEV2_FRAGMENTATION_SUPPORTED);
        let (dh, public) = dh_generate(suite.dh).ok()?;
        let Ok(shared) = dh.shared_secret(&ke.data) else {
            return refuse(ctx, NotifyType::INVALID_SYNTAX, Vec::new());
        };
        let x = Exchanged {
            shared: &shared,
            ni: &sa.ni,
            nr: &sa.nr,
            spi_i: sa.spi_i,
            spi_r,
        };
        sa.keys = Some(IkeKeys::derive(&suite, &x, None, false).ok()?);
        let mut out = vec![
            Payload::Sa(vec![proposal::ike_answer(&suite, chosen, Vec::new())]),
            Payload::Ke(KeyExchange {
                group: suite.dh,
                data: public,
            }),
            Payload::Nonce(sa.nr.clone()),
        ];
        out.extend(sa.init_notifies(ctx, spi_r));
        let reply = plain(sa.header(ExchangeType::IKE_SA_INIT, true, 0), out)?;
        sa.init_ours = reply.clone();
        let reply = with_marker(sa.nat_t, reply);
        sa.transmit(ctx, std::slice::from_ref(&reply));
        sa.responses.answered(0, vec![reply]);
        Some(sa)
    }

    fn on_init_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        header: &Header,
        payloads: &[Payload],
        raw: &[u8],
        attempt: InitAttempt,
    ) {
        let InitAttempt {
            dh,
            cookie,
            retries,
        } = attempt;
        if let Some(c) = find_notify(payloads, NotifyType::COOKIE) {
            if retries < MAX_INIT_RETRIES && !c.data.is_empty() && c.data.len() <= 64 {
                // The same KE value may be sent again: the responder kept no state.
                return match dh_generate(dh.group().id()) {
                    Ok((d, p)) => self.send_init(ctx, d, p, Some(c.data.clone()), retries + 1),
                    Err(e) => self.down(ctx, DownReason::Local(e.to_string())),
                };
            }
            return self.down(ctx, DownReason::Refused(NotifyType::COOKIE));
        }
        if let Some(n) = find_notify(payloads, NotifyType::INVALID_KE_PAYLOAD) {
            let group = n
                .data
                .get(..2)
                .map(|g| DhId(u16::from_be_bytes([g[0], g[1]])));
            let ours = |g: DhId| ctx.config.ike_suites.iter().any(|s| s.dh == g);
            match group {
                Some(g) if ours(g) && g != dh.group().id() && retries < MAX_INIT_RETRIES => {
                    debug!(sa = ?self.id, group = ?g, "responder wants another group");
                    match dh_generate(g) {
                        Ok((d, p)) => self.send_init(ctx, d, p, cookie, retries + 1),
                        Err(e) => self.down(ctx, DownReason::Local(e.to_string())),
                    }
                }
                _ => self.down(ctx, DownReason::Refused(NotifyType::INVALID_KE_PAYLOAD)),
            }
            return;
        }
        if let Some(kind) = error_notify(payloads) {
            return self.down(ctx, DownReason::Refused(kind));
        }
        let answer = payloads.iter().find_map(|p| match p {
            Payload::Sa(s) => Some(s.as_slice()),
            _ => None,
        });
        let ke = payloads.iter().find_map(|p| match p {
            Payload::Ke(k) => Some(k),
            _ => None,
        });
        let nr = payloads.iter().find_map(|p| match p {
            Payload::Nonce(n) => Some(n),
            _ => None,
        });
        let (Some(answer), Some(ke), Some(nr)) = (answer, ke, nr) else {
            return self.down(ctx, DownReason::Refused(NotifyType::INVALID_SYNTAX));
        };
        let Some(suite) = proposal::accepted_ike(&ctx.config.ike_suites, answer) else {
            return self.down(ctx, DownReason::Refused(NotifyType::NO_PROPOSAL_CHOSEN));
        };
        if ke.group != suite.dh || dh.group().id() != suite.dh || header.spi_r == 0 {
            return self.down(ctx, DownReason::Refused(NotifyType::INVALID_SYNTAX));
        }
        let Ok(shared) = dh.shared_secret(&ke.data) else {
            return self.down(ctx, DownReason::Refused(NotifyType::INVALID_SYNTAX));
        };
        self.spi_r = header.spi_r;
        self.suite = suite;
        self.nr = nr.clone();
        self.init_theirs = raw.to_vec();
        self.peer_fragmentation = has_notify(payloads, NotifyType::IKEV2_FRAGMENTATION_SUPPORTED);
        let x = Exchanged {
            shared: &shared,
            ni: &self.ni,
            nr: &self.nr,
            spi_i: self.spi_i,
            spi_r: self.spi_r,
        };
        match IkeKeys::derive(&suite, &x, None, true) {
            Ok(k) => self.keys = Some(k),
            Err(e) => return self.down(ctx, DownReason::Local(e.to_string())),
        }
        if (ctx.config.force_nat_t || self.nat_detected(payloads, header.spi_r)) && !self.nat_t {
            self.float_to_nat_t();
        }
        self.send_auth(ctx);
    }

    // ---------------------------------------------------------------- IKE_AUTH

    /// The octets one side signs (RFC 7296 §2.15): its IKE_SA_INIT message, the other
    /// side's nonce, prf(SK_p, its ID payload body).
    fn octets(&self, ours: bool, id: &Identification) -> Option<Vec<u8>> {
        let keys = self.keys.as_ref()?;
        let (message, nonce, sk_p) = match (ours, self.initiator) {
            (true, true) => (&self.init_ours, &self.nr, &keys.sk_p_ours),
            (true, false) => (&self.init_ours, &self.ni, &keys.sk_p_ours),
            (false, true) => (&self.init_theirs, &self.ni, &keys.sk_p_peer),
            (false, false) => (&self.init_theirs, &self.nr, &keys.sk_p_peer),
        };
        Some(auth::signed_octets(
            message,
            nonce,
            keys.prf,
            sk_p.expose(),
            &payload_body(id),
        ))
    }

    /// Our AUTH payload for our ID payload `id`.
    fn our_auth(&self, id: &Identification) -> Option<Authentication> {
        let keys = self.keys.as_ref()?;
        let octets = self.octets(true, id)?;
        Some(match &self.peer.as_ref()?.local_auth {
            LocalAuth::Psk(psk) => Authentication {
                method: AuthMethod::SHARED_KEY,
                data: auth::psk_auth(keys.prf, psk, &octets).expose().to_vec(),
            },
            LocalAuth::Certificate { key, .. } => Authentication {
                method: key.method(),
                data: key.sign(&octets),
            },
        })
    }

    /// Our certificate chain as CERT payloads, if we authenticate with one.
    fn our_certificates(&self) -> Vec<Payload> {
        match self.peer.as_ref().map(|p| &p.local_auth) {
            Some(LocalAuth::Certificate { chain, .. }) => chain
                .iter()
                .map(|der| {
                    Payload::Cert(Certificate {
                        encoding: CertEncoding::X509_SIGNATURE,
                        data: der.clone(),
                    })
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Whether the peer proved to be `peer.remote_id`: its AUTH over its ID payload `id`,
    /// and for certificates the chain in `payloads` and the identity it is issued for.
    fn verify_peer_auth(
        &self,
        ctx: &Ctx<'_>,
        peer: &PeerConfig,
        id: &Identification,
        auth: &Authentication,
        payloads: &[Payload],
    ) -> Result<(), AuthError> {
        let keys = self.keys.as_ref().ok_or(AuthError::Mismatch)?;
        if id_from_wire(id).as_ref() != Some(&peer.remote_id) {
            return Err(AuthError::Mismatch);
        }
        let octets = self.octets(false, id).ok_or(AuthError::Mismatch)?;
        match &peer.remote_auth {
            PeerAuth::Psk(psk) => {
                if auth.method != AuthMethod::SHARED_KEY {
                    return Err(AuthError::UnsupportedMethod(auth.method));
                }
                auth::verify_psk(keys.prf, psk, &octets, &auth.data)
            }
            PeerAuth::Certificate(anchors) => {
                let mut certs = payloads.iter().filter_map(|p| match p {
                    Payload::Cert(c) if c.encoding == CertEncoding::X509_SIGNATURE => {
                        Some(c.data.clone())
                    }
                    _ => None,
                });
                let end_entity = certs.next().ok_or(AuthError::Mismatch)?;
                let intermediates: Vec<Vec<u8>> = certs.collect();
                let validated = anchors.validate(&end_entity, &intermediates, ctx.wall, &[])?;
                if !validated.matches(&peer.remote_id) {
                    return Err(AuthError::Mismatch);
                }
                auth::verify(validated.cert_der(), auth.method, &auth.data, &octets)
            }
        }
    }

    fn child_request_payloads(
        &self,
        ctx: &Ctx<'_>,
        spi_in: u32,
        pfs: Option<DhId>,
    ) -> Vec<Payload> {
        let Some(peer) = self.peer.as_ref() else {
            return Vec::new();
        };
        let suites: Vec<_> = ctx
            .config
            .esp_suites
            .iter()
            .copied()
            .filter(super::keys::esp_suite_supported)
            .collect();
        vec![
            notify(NotifyType::USE_TRANSPORT_MODE, Vec::new()),
            notify(NotifyType::ESP_TFC_PADDING_NOT_SUPPORTED, Vec::new()),
            Payload::Sa(proposal::esp_proposals(&suites, spi_in, pfs)),
            Payload::TsI(peer.ts_local.clone()),
            Payload::TsR(peer.ts_remote.clone()),
        ]
    }

    fn send_auth(&mut self, ctx: &mut Ctx<'_>) {
        let Some(peer) = self.peer.clone() else {
            return;
        };
        let id = id_to_wire(&peer.local_id);
        let Some(auth) = self.our_auth(&id) else {
            return self.down(ctx, DownReason::Local("cannot compute AUTH".into()));
        };
        let Ok(spi_in) = random_u32() else {
            return self.down(ctx, DownReason::Local("no randomness".into()));
        };
        let mut inner = vec![Payload::IdI(id)];
        inner.extend(self.our_certificates());
        inner.push(notify(NotifyType::INITIAL_CONTACT, Vec::new()));
        if matches!(peer.remote_auth, PeerAuth::Certificate(_)) {
            // Without hashes of trusted keys: a request to send the certificate at all.
            inner.push(Payload::CertReq(Certificate {
                encoding: CertEncoding::X509_SIGNATURE,
                data: Vec::new(),
            }));
        }
        inner.push(Payload::IdR(id_to_wire(&peer.remote_id)));
        inner.push(Payload::Auth(auth));
        inner.extend(self.child_request_payloads(ctx, spi_in, None));
        self.phase = Phase::AuthSent;
        self.send_request(
            ctx,
            ExchangeType::IKE_AUTH,
            &inner,
            Pending::Auth { spi_in },
        );
    }

    /// As responder: the IKE_AUTH request. Returns the response payloads.
    fn on_auth_request(&mut self, ctx: &mut Ctx<'_>, payloads: &[Payload]) -> Vec<Payload> {
        let idi = payloads.iter().find_map(|p| match p {
            Payload::IdI(i) => Some(i),
            _ => None,
        });
        let auth = payloads.iter().find_map(|p| match p {
            Payload::Auth(a) => Some(a),
            _ => None,
        });
        let (Some(idi), Some(auth)) = (idi, auth) else {
            self.phase = Phase::Dead;
            return vec![notify(NotifyType::INVALID_SYNTAX, Vec::new())];
        };
        let claimed = id_from_wire(idi);
        let peer = claimed
            .as_ref()
            .and_then(|id| ctx.policy.peer(id, self.remote))
            .filter(|p| Some(&p.remote_id) == claimed.as_ref());
        let verified = peer
            .as_ref()
            .map(|p| self.verify_peer_auth(ctx, p, idi, auth, payloads));
        let Some(peer) = peer.filter(|_| matches!(verified, Some(Ok(())))) else {
            warn!(
                sa = ?self.id,
                remote = %self.remote,
                error = ?verified.map(|v| v.err()),
                "peer failed to authenticate"
            );
            ctx.events.push_back(Event::AuthFailed {
                sa: self.id,
                remote: self.remote,
                peer: claimed,
            });
            self.phase = Phase::Dead;
            return vec![notify(NotifyType::AUTHENTICATION_FAILED, Vec::new())];
        };
        self.peer = Some(peer.clone());
        let id = id_to_wire(&peer.local_id);
        let Some(our_auth) = self.our_auth(&id) else {
            self.phase = Phase::Dead;
            return vec![notify(NotifyType::AUTHENTICATION_FAILED, Vec::new())];
        };
        let mut out = vec![Payload::IdR(id)];
        out.extend(self.our_certificates());
        out.push(Payload::Auth(our_auth));
        self.phase = Phase::Established;
        self.last_heard = ctx.now;
        self.rekey_at = ctx.config.lifetimes.ike_rekey.map(|d| ctx.now + d);
        ctx.events.push_back(self.up_event(&peer));
        let (ni, nr) = (self.ni.clone(), self.nr.clone());
        match self.answer_child(ctx, payloads, None, &ni, &nr) {
            Ok((child, reply)) => {
                out.extend(reply);
                ctx.events.push_back(Event::ChildSaUp(child.clone()));
                self.add_child(ctx, child);
            }
            Err(kind) => {
                if payloads.iter().any(|p| matches!(p, Payload::Sa(_))) {
                    ctx.events.push_back(Event::ChildSaFailed {
                        ike_sa: self.id,
                        notify: kind,
                    });
                    out.push(notify(kind, Vec::new()));
                }
            }
        }
        out
    }

    fn up_event(&self, peer: &PeerConfig) -> Event {
        Event::IkeSaUp {
            sa: self.id,
            peer: peer.remote_id.clone(),
            local: self.local,
            remote: self.remote,
            suite: self.suite,
            we_initiated: self.initiator,
        }
    }

    fn add_child(&mut self, ctx: &Ctx<'_>, sa: ChildSa) {
        self.children.push(Child {
            sa,
            state: ChildState::Installed,
            rekey_at: ctx.config.lifetimes.child_rekey.map(|d| ctx.now + d),
            collision: None,
            announced: true,
        });
    }

    /// As responder: a child SA request (IKE_AUTH or CREATE_CHILD_SA). Returns the child
    /// and the payloads of the answer, or the error notification refusing it.
    fn answer_child(
        &mut self,
        ctx: &mut Ctx<'_>,
        payloads: &[Payload],
        shared: Option<&Secret>,
        ni: &[u8],
        nr: &[u8],
    ) -> Result<(ChildSa, Vec<Payload>), NotifyType> {
        let offered = payloads.iter().find_map(|p| match p {
            Payload::Sa(s) => Some(s),
            _ => None,
        });
        let tsi = payloads.iter().find_map(|p| match p {
            Payload::TsI(t) => Some(t),
            _ => None,
        });
        let tsr = payloads.iter().find_map(|p| match p {
            Payload::TsR(t) => Some(t),
            _ => None,
        });
        let (Some(offered), Some(tsi), Some(tsr)) = (offered, tsi, tsr) else {
            return Err(NotifyType::INVALID_SYNTAX);
        };
        if !has_notify(payloads, NotifyType::USE_TRANSPORT_MODE) {
            return Err(NotifyType::NO_PROPOSAL_CHOSEN);
        }
        let pfs = payloads.iter().find_map(|p| match p {
            Payload::Ke(k) => Some(k.group),
            _ => None,
        });
        let suites: Vec<_> = ctx
            .config
            .esp_suites
            .iter()
            .copied()
            .filter(super::keys::esp_suite_supported)
            .collect();
        let (suite, chosen) =
            proposal::choose_esp(&suites, pfs, offered).ok_or(NotifyType::NO_PROPOSAL_CHOSEN)?;
        let spi_out = u32::from_be_bytes(
            chosen
                .spi
                .as_slice()
                .try_into()
                .map_err(|_| NotifyType::INVALID_SYNTAX)?,
        );
        let peer = self.peer.clone().ok_or(NotifyType::AUTHENTICATION_FAILED)?;
        let (tsi, tsr) = ctx.policy.narrow(&peer, tsi, tsr)?;
        let spi_in = random_u32().map_err(|_| NotifyType::TEMPORARY_FAILURE)?;
        let keys = self.keys.as_ref().ok_or(NotifyType::TEMPORARY_FAILURE)?;
        let child = ChildSa::derive(
            keys,
            Negotiated {
                suite,
                spis: ChildSpis {
                    inbound: spi_in,
                    outbound: spi_out,
                },
                ts_local: tsr.clone(),
                ts_remote: tsi.clone(),
                shared,
                ni,
                nr,
            },
            false,
            self.id,
            self.local,
            self.remote,
            self.nat_t,
            ctx.config.lifetimes.child_hard,
        )
        .map_err(|_| NotifyType::NO_PROPOSAL_CHOSEN)?;
        let reply = vec![
            notify(NotifyType::USE_TRANSPORT_MODE, Vec::new()),
            notify(NotifyType::ESP_TFC_PADDING_NOT_SUPPORTED, Vec::new()),
            Payload::Sa(vec![proposal::esp_answer(&suite, pfs, chosen, spi_in)]),
            Payload::TsI(tsi),
            Payload::TsR(tsr),
        ];
        Ok((child, reply))
    }

    /// As initiator: the child SA part of an IKE_AUTH or CREATE_CHILD_SA response.
    fn accept_child(
        &self,
        ctx: &Ctx<'_>,
        payloads: &[Payload],
        spi_in: u32,
        keying: ChildKeying<'_>,
    ) -> Result<ChildSa, NotifyType> {
        let ChildKeying {
            pfs,
            shared,
            ni,
            nr,
        } = keying;
        if let Some(kind) = error_notify(payloads) {
            return Err(kind);
        }
        let answer = payloads.iter().find_map(|p| match p {
            Payload::Sa(s) => Some(s.as_slice()),
            _ => None,
        });
        let tsi = payloads.iter().find_map(|p| match p {
            Payload::TsI(t) => Some(t),
            _ => None,
        });
        let tsr = payloads.iter().find_map(|p| match p {
            Payload::TsR(t) => Some(t),
            _ => None,
        });
        let (Some(answer), Some(tsi), Some(tsr)) = (answer, tsi, tsr) else {
            return Err(NotifyType::INVALID_SYNTAX);
        };
        if !has_notify(payloads, NotifyType::USE_TRANSPORT_MODE) {
            return Err(NotifyType::NO_PROPOSAL_CHOSEN);
        }
        let (suite, spi_out) = proposal::accepted_esp(&ctx.config.esp_suites, pfs, answer)
            .ok_or(NotifyType::NO_PROPOSAL_CHOSEN)?;
        let peer = self
            .peer
            .as_ref()
            .ok_or(NotifyType::AUTHENTICATION_FAILED)?;
        ctx.policy.accept_narrowed(peer, tsi, tsr)?;
        let keys = self.keys.as_ref().ok_or(NotifyType::TEMPORARY_FAILURE)?;
        ChildSa::derive(
            keys,
            Negotiated {
                suite,
                spis: ChildSpis {
                    inbound: spi_in,
                    outbound: spi_out,
                },
                ts_local: tsi.clone(),
                ts_remote: tsr.clone(),
                shared,
                ni,
                nr,
            },
            true,
            self.id,
            self.local,
            self.remote,
            self.nat_t,
            ctx.config.lifetimes.child_hard,
        )
        .map_err(|_| NotifyType::NO_PROPOSAL_CHOSEN)
    }

    fn on_auth_response(&mut self, ctx: &mut Ctx<'_>, payloads: &[Payload], spi_in: u32) {
        let idr = payloads.iter().find_map(|p| match p {
            Payload::IdR(i) => Some(i),
            _ => None,
        });
        let auth = payloads.iter().find_map(|p| match p {
            Payload::Auth(a) => Some(a),
            _ => None,
        });
        let (Some(idr), Some(auth)) = (idr, auth) else {
            let kind = error_notify(payloads).unwrap_or(NotifyType::INVALID_SYNTAX);
            if kind == NotifyType::AUTHENTICATION_FAILED {
                ctx.events.push_back(Event::AuthFailed {
                    sa: self.id,
                    remote: self.remote,
                    peer: self.peer_id().cloned(),
                });
                return self.down(ctx, DownReason::AuthFailed);
            }
            return self.down(ctx, DownReason::Refused(kind));
        };
        let Some(peer) = self.peer.clone() else {
            return self.down(ctx, DownReason::AuthFailed);
        };
        if let Err(e) = self.verify_peer_auth(ctx, &peer, idr, auth, payloads) {
            warn!(sa = ?self.id, remote = %self.remote, error = %e, "responder failed to authenticate");
            ctx.events.push_back(Event::AuthFailed {
                sa: self.id,
                remote: self.remote,
                peer: id_from_wire(idr),
            });
            // RFC 7296 §2.21.2: tell the responder, without waiting for an answer.
            let header = self.header(ExchangeType::INFORMATIONAL, false, self.requests.next_id);
            self.seal(
                ctx,
                &header,
                &[notify(NotifyType::AUTHENTICATION_FAILED, Vec::new())],
            );
            return self.down(ctx, DownReason::AuthFailed);
        }
        self.phase = Phase::Established;
        self.last_heard = ctx.now;
        self.rekey_at = ctx.config.lifetimes.ike_rekey.map(|d| ctx.now + d);
        ctx.events.push_back(self.up_event(&peer));
        let (ni, nr) = (self.ni.clone(), self.nr.clone());
        match self.accept_child(
            ctx,
            payloads,
            spi_in,
            ChildKeying {
                pfs: None,
                shared: None,
                ni: &ni,
                nr: &nr,
            },
        ) {
            Ok(child) => {
                ctx.events.push_back(Event::ChildSaUp(child.clone()));
                self.add_child(ctx, child);
            }
            Err(kind) => ctx.events.push_back(Event::ChildSaFailed {
                ike_sa: self.id,
                notify: kind,
            }),
        }
    }

    // ---------------------------------------------------------------- CREATE_CHILD_SA

    fn start_create_child(&mut self, ctx: &mut Ctx<'_>, rekey: Option<ChildSpis>) {
        let (Ok(spi_in), Ok(nonce)) = (random_u32(), random_bytes(NONCE_LEN)) else {
            return;
        };
        let pfs = ctx.config.child_pfs;
        let dh = match pfs.map(dh_generate) {
            Some(Ok((d, p))) => Some((d, p)),
            Some(Err(_)) => return,
            None => None,
        };
        let mut inner = Vec::new();
        if let Some(old) = rekey {
            inner.push(esp_notify(NotifyType::REKEY_SA, old.inbound));
        }
        inner.extend(self.child_request_payloads(ctx, spi_in, pfs));
        inner.push(Payload::Nonce(nonce.clone()));
        let dh = dh.map(|(d, public)| {
            inner.push(Payload::Ke(KeyExchange {
                group: d.group().id(),
                data: public,
            }));
            d
        });
        self.send_request(
            ctx,
            ExchangeType::CREATE_CHILD_SA,
            &inner,
            Pending::CreateChild {
                spi_in,
                nonce,
                dh,
                rekey,
            },
        );
    }

    fn start_rekey_ike(&mut self, ctx: &mut Ctx<'_>) {
        let (Ok(spi), Ok(nonce)) = (random_u64(), random_bytes(NONCE_LEN)) else {
            return;
        };
        let suite = self.suite;
        let Ok((dh, public)) = dh_generate(suite.dh) else {
            return;
        };
        let mut suites = vec![suite];
        suites.extend(ctx.config.ike_suites.iter().filter(|s| **s != suite));
        suites.retain(|s| s.dh == suite.dh);
        let inner = vec![
            Payload::Sa(proposal::ike_proposals(&suites, &spi.to_be_bytes())),
            Payload::Nonce(nonce.clone()),
            Payload::Ke(KeyExchange {
                group: suite.dh,
                data: public,
            }),
        ];
        self.send_request(
            ctx,
            ExchangeType::CREATE_CHILD_SA,
            &inner,
            Pending::RekeyIke { spi, nonce, dh },
        );
    }

    fn on_create_child_request(&mut self, ctx: &mut Ctx<'_>, payloads: &[Payload]) -> Vec<Payload> {
        let is_ike = payloads.iter().any(|p| {
            matches!(p, Payload::Sa(s) if s.first().is_some_and(|p| p.protocol == ProtocolId::IKE))
        });
        // RFC 7296 §2.25: no child SA exchanges while the IKE SA is rekeyed and no IKE SA
        // rekey while a child SA exchange is under way.
        let busy = match self.requests.outstanding.as_ref().map(|o| &o.exchange) {
            Some(Pending::RekeyIke { .. }) => !is_ike,
            Some(Pending::CreateChild { .. } | Pending::DeleteChildren(_)) => is_ike,
            _ => false,
        };
        if self.phase == Phase::Rekeyed || busy {
            return vec![notify(NotifyType::TEMPORARY_FAILURE, Vec::new())];
        }
        let Some(ni) = payloads.iter().find_map(|p| match p {
            Payload::Nonce(n) => Some(n.clone()),
            _ => None,
        }) else {
            return vec![notify(NotifyType::INVALID_SYNTAX, Vec::new())];
        };
        let Ok(nr) = random_bytes(NONCE_LEN) else {
            return vec![notify(NotifyType::TEMPORARY_FAILURE, Vec::new())];
        };
        let ke = payloads.iter().find_map(|p| match p {
            Payload::Ke(k) => Some(k),
            _ => None,
        });
        if is_ike {
            return self.answer_rekey_ike(ctx, payloads, ke, &ni, nr);
        }
        let rekeyed = find_notify(payloads, NotifyType::REKEY_SA)
            .and_then(|n| n.spi.as_slice().try_into().ok().map(u32::from_be_bytes));
        let old = match rekeyed {
            Some(spi) => match self.children.iter().find(|c| c.sa.spis.outbound == spi) {
                Some(c) if c.state == ChildState::Installed => Some(c.sa.spis),
                Some(_) => return vec![notify(NotifyType::TEMPORARY_FAILURE, Vec::new())],
                None => {
                    return vec![esp_notify(NotifyType::CHILD_SA_NOT_FOUND, spi)];
                }
            },
            None => None,
        };
        let (shared, ke_out) = match ke {
            None => (None, None),
            Some(ke) => {
                let acceptable = ctx.config.child_pfs == Some(ke.group)
                    || (ctx.config.child_pfs.is_none() && super::keys::dh_supported(ke.group));
                if !acceptable {
                    let want = ctx.config.child_pfs.unwrap_or(DhId::CURVE25519);
                    return vec![notify(
                        NotifyType::INVALID_KE_PAYLOAD,
                        want.0.to_be_bytes().to_vec(),
                    )];
                }
                let Ok((dh, public)) = dh_generate(ke.group) else {
                    return vec![notify(NotifyType::TEMPORARY_FAILURE, Vec::new())];
                };
                let Ok(shared) = dh.shared_secret(&ke.data) else {
                    return vec![notify(NotifyType::INVALID_SYNTAX, Vec::new())];
                };
                (
                    Some(shared),
                    Some(Payload::Ke(KeyExchange {
                        group: ke.group,
                        data: public,
                    })),
                )
            }
        };
        let (child, mut reply) = match self.answer_child(ctx, payloads, shared.as_ref(), &ni, &nr) {
            Ok(r) => r,
            Err(kind) => return vec![notify(kind, Vec::new())],
        };
        reply.push(Payload::Nonce(nr.clone()));
        reply.extend(ke_out);
        self.responder_child_created(ctx, child, old, &ni, &nr);
        reply
    }

    fn responder_child_created(
        &mut self,
        ctx: &mut Ctx<'_>,
        child: ChildSa,
        old: Option<ChildSpis>,
        ni: &[u8],
        nr: &[u8],
    ) {
        let Some(old) = old else {
            ctx.events.push_back(Event::ChildSaUp(child.clone()));
            return self.add_child(ctx, child);
        };
        let ours_outstanding = matches!(
            self.requests.outstanding.as_ref().map(|o| &o.exchange),
            Some(Pending::CreateChild { rekey: Some(r), .. }) if *r == old
        );
        if ours_outstanding {
            // §2.8.1: decide when our own rekey of it completes.
            if let Some(c) = self.children.iter_mut().find(|c| c.sa.spis == old) {
                c.collision = Some((child, lowest(ni, nr).to_vec()));
            }
            return;
        }
        self.tasks.retain(|t| *t != Task::RekeyChild(old));
        self.replace_child(ctx, old, child);
    }

    /// `new` takes over from `old`, which stays until its DELETE.
    fn replace_child(&mut self, ctx: &mut Ctx<'_>, old: ChildSpis, new: ChildSa) {
        let Some(c) = self
            .children
            .iter_mut()
            .find(|c| c.sa.spis == old && c.state == ChildState::Installed)
        else {
            // The old SA went away meanwhile: the new one has nothing to replace.
            let spis = new.spis;
            self.add_child(ctx, new);
            if let Some(c) = self.children.last_mut() {
                c.state = ChildState::Rekeyed;
                c.announced = false;
            }
            return self.queue(Task::DeleteChild(spis));
        };
        c.state = ChildState::Rekeyed;
        c.rekey_at = None;
        ctx.events.push_back(Event::ChildSaRekeyed {
            old,
            new: new.clone(),
        });
        self.add_child(ctx, new);
    }

    fn on_create_child_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        payloads: &[Payload],
        spi_in: u32,
        ni: Vec<u8>,
        dh: Option<DhPrivate>,
        rekey: Option<ChildSpis>,
    ) {
        let nr = payloads.iter().find_map(|p| match p {
            Payload::Nonce(n) => Some(n.clone()),
            _ => None,
        });
        let pfs = dh.as_ref().map(|d| d.group().id());
        let shared = match (
            &dh,
            payloads.iter().find_map(|p| match p {
                Payload::Ke(k) => Some(k),
                _ => None,
            }),
        ) {
            (Some(dh), Some(ke)) if Some(ke.group) == pfs => dh.shared_secret(&ke.data).ok(),
            _ => None,
        };
        let result = match nr.as_ref() {
            Some(_) if dh.is_some() && shared.is_none() && error_notify(payloads).is_none() => {
                Err(NotifyType::INVALID_SYNTAX)
            }
            Some(nr) => self.accept_child(
                ctx,
                payloads,
                spi_in,
                ChildKeying {
                    pfs,
                    shared: shared.as_ref(),
                    ni: &ni,
                    nr,
                },
            ),
            None => Err(error_notify(payloads).unwrap_or(NotifyType::INVALID_SYNTAX)),
        };
        let collision = rekey.and_then(|old| {
            self.children
                .iter_mut()
                .find(|c| c.sa.spis == old)
                .and_then(|c| c.collision.take())
        });
        match (result, rekey) {
            (Ok(child), None) => {
                ctx.events.push_back(Event::ChildSaUp(child.clone()));
                self.add_child(ctx, child);
            }
            (Ok(child), Some(old)) => {
                let ours_lowest = nr.as_deref().map(|nr| lowest(&ni, nr).to_vec());
                match collision {
                    Some((theirs, their_lowest)) if ours_lowest.as_ref() < Some(&their_lowest) => {
                        // Our new SA is the redundant one: the peer deletes the old.
                        self.replace_child(ctx, old, theirs);
                        self.add_child(ctx, child.clone());
                        if let Some(c) = self.children.last_mut() {
                            c.state = ChildState::Rekeyed;
                            c.announced = false;
                        }
                        self.queue(Task::DeleteChild(child.spis));
                    }
                    Some(_) => {
                        // Theirs is redundant and the peer deletes it; we delete the old.
                        self.replace_child(ctx, old, child);
                        self.queue(Task::DeleteChild(old));
                    }
                    None => {
                        self.replace_child(ctx, old, child);
                        self.queue(Task::DeleteChild(old));
                    }
                }
            }
            (Err(kind), rekey) => {
                debug!(sa = ?self.id, notify = ?kind, "child SA refused");
                match (rekey, collision) {
                    (Some(old), Some((theirs, _))) => self.replace_child(ctx, old, theirs),
                    (Some(old), None) => {
                        // Try again later unless the peer rekeyed or deleted it meanwhile.
                        let retry = ctx.now + ctx.config.retransmission.wait(2);
                        if let Some(c) = self
                            .children
                            .iter_mut()
                            .find(|c| c.sa.spis == old && c.state == ChildState::Installed)
                        {
                            c.rekey_at = Some(retry);
                        }
                    }
                    (None, _) => ctx.events.push_back(Event::ChildSaFailed {
                        ike_sa: self.id,
                        notify: kind,
                    }),
                }
            }
        }
    }

    /// As responder: the peer rekeys this IKE SA (§2.18).
    fn answer_rekey_ike(
        &mut self,
        ctx: &mut Ctx<'_>,
        payloads: &[Payload],
        ke: Option<&KeyExchange>,
        ni: &[u8],
        nr: Vec<u8>,
    ) -> Vec<Payload> {
        let offered = payloads
            .iter()
            .find_map(|p| match p {
                Payload::Sa(s) => Some(s.as_slice()),
                _ => None,
            })
            .unwrap_or_default();
        let supported: Vec<IkeSuite> = ctx
            .config
            .ike_suites
            .iter()
            .copied()
            .filter(super::keys::ike_suite_supported)
            .collect();
        let Some((suite, chosen)) = proposal::choose_ike(&supported, offered) else {
            return vec![notify(NotifyType::NO_PROPOSAL_CHOSEN, Vec::new())];
        };
        let Some(ke) = ke.filter(|k| k.group == suite.dh) else {
            return vec![notify(
                NotifyType::INVALID_KE_PAYLOAD,
                suite.dh.0.to_be_bytes().to_vec(),
            )];
        };
        let Ok(spi_i) = <[u8; 8]>::try_from(chosen.spi.as_slice()).map(u64::from_be_bytes) else {
            return vec![notify(NotifyType::INVALID_SYNTAX, Vec::new())];
        };
        let (Ok(spi_r), Ok((dh, public))) = (random_u64(), dh_generate(suite.dh)) else {
            return vec![notify(NotifyType::TEMPORARY_FAILURE, Vec::new())];
        };
        let Ok(shared) = dh.shared_secret(&ke.data) else {
            return vec![notify(NotifyType::INVALID_SYNTAX, Vec::new())];
        };
        let Some(new) = self.successor(ctx, suite, &shared, false, spi_i, spi_r, ni, &nr) else {
            return vec![notify(NotifyType::TEMPORARY_FAILURE, Vec::new())];
        };
        let ours_outstanding = matches!(
            self.requests.outstanding.as_ref().map(|o| &o.exchange),
            Some(Pending::RekeyIke { .. })
        );
        if ours_outstanding {
            self.ike_collision = Some((spi_r, lowest(ni, &nr).to_vec()));
        } else {
            self.tasks.retain(|t| *t != Task::RekeyIke);
            self.hand_over(ctx, spi_r);
        }
        ctx.spawned.push(new);
        vec![
            Payload::Sa(vec![proposal::ike_answer(
                &suite,
                chosen,
                spi_r.to_be_bytes().to_vec(),
            )]),
            Payload::Nonce(nr),
            Payload::Ke(KeyExchange {
                group: suite.dh,
                data: public,
            }),
        ]
    }

    /// The IKE SA a rekey creates; it waits for [`Self::hand_over`] before it is used.
    #[allow(clippy::too_many_arguments)]
    fn successor(
        &self,
        ctx: &Ctx<'_>,
        suite: IkeSuite,
        shared: &Secret,
        we_initiated: bool,
        spi_i: u64,
        spi_r: u64,
        ni: &[u8],
        nr: &[u8],
    ) -> Option<IkeSa> {
        let old = self.keys.as_ref()?;
        let x = Exchanged {
            shared,
            ni,
            nr,
            spi_i,
            spi_r,
        };
        let keys = IkeKeys::derive(&suite, &x, Some((old.prf, &old.sk_d)), we_initiated).ok()?;
        let mut sa = Self::blank(
            self.id,
            we_initiated,
            spi_i,
            spi_r,
            self.local,
            self.remote,
            suite,
            ctx.now,
        );
        sa.nat_t = self.nat_t;
        sa.peer_fragmentation = self.peer_fragmentation;
        sa.phase = Phase::Established;
        sa.peer = self.peer.clone();
        sa.keys = Some(keys);
        sa.ni = ni.to_vec();
        sa.nr = nr.to_vec();
        sa.rekey_at = ctx.config.lifetimes.ike_rekey.map(|d| ctx.now + d);
        sa.successor_of = Some(self.local_spi());
        Some(sa)
    }

    /// Marks this SA as replaced by the one with local SPI `new`; the engine moves the
    /// children there.
    fn hand_over(&mut self, ctx: &mut Ctx<'_>, new: u64) {
        self.phase = Phase::Rekeyed;
        self.since = ctx.now;
        self.rekey_at = None;
        self.tasks.retain(|t| *t == Task::DeleteIke);
        ctx.handovers.push((self.local_spi(), new));
    }

    fn on_rekey_ike_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        payloads: &[Payload],
        spi_i: u64,
        ni: Vec<u8>,
        dh: DhPrivate,
    ) {
        let collision = self.ike_collision.take();
        let answer = payloads.iter().find_map(|p| match p {
            Payload::Sa(s) => Some(s.as_slice()),
            _ => None,
        });
        let nr = payloads.iter().find_map(|p| match p {
            Payload::Nonce(n) => Some(n.clone()),
            _ => None,
        });
        let ke = payloads.iter().find_map(|p| match p {
            Payload::Ke(k) => Some(k),
            _ => None,
        });
        let new = match (answer, nr.as_ref(), ke) {
            (Some(answer), Some(nr), Some(ke)) if error_notify(payloads).is_none() => {
                let suite = proposal::accepted_ike(&ctx.config.ike_suites, answer)
                    .filter(|s| s.dh == dh.group().id() && ke.group == s.dh);
                let spi_r = answer
                    .first()
                    .and_then(|p| <[u8; 8]>::try_from(p.spi.as_slice()).ok())
                    .map(u64::from_be_bytes);
                match (suite, spi_r, dh.shared_secret(&ke.data)) {
                    (Some(suite), Some(spi_r), Ok(shared)) => {
                        self.successor(ctx, suite, &shared, true, spi_i, spi_r, &ni, nr)
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        let Some(mut new) = new else {
            debug!(sa = ?self.id, "IKE SA rekey refused");
            match collision {
                Some((theirs, _)) => self.hand_over(ctx, theirs),
                None => self.rekey_at = Some(ctx.now + ctx.config.retransmission.wait(2)),
            }
            return;
        };
        let ours_lowest = nr.as_deref().map(|nr| lowest(&ni, nr).to_vec());
        match collision {
            Some((theirs, their_lowest)) if ours_lowest.as_ref() < Some(&their_lowest) => {
                // §2.8.2: ours has the lowest nonce; we delete it, the peer the old SA.
                new.queue(Task::DeleteIke);
                self.hand_over(ctx, theirs);
            }
            _ => {
                self.hand_over(ctx, new.local_spi());
                self.queue(Task::DeleteIke);
            }
        }
        ctx.spawned.push(new);
    }

    // ---------------------------------------------------------------- INFORMATIONAL

    fn start_delete_children(&mut self, ctx: &mut Ctx<'_>, spis: Vec<ChildSpis>) {
        for c in &mut self.children {
            if spis.contains(&c.sa.spis) && c.state == ChildState::Installed {
                c.state = ChildState::Deleting;
            }
        }
        let inner = vec![Payload::Delete(Delete {
            protocol: ProtocolId::ESP,
            spis: spis.iter().map(|s| s.inbound).collect(),
        })];
        self.send_request(
            ctx,
            ExchangeType::INFORMATIONAL,
            &inner,
            Pending::DeleteChildren(spis),
        );
    }

    /// Removes a child and says why: an old SA of a rekey is retired, others deleted.
    fn remove_child(&mut self, ctx: &mut Ctx<'_>, spis: ChildSpis) {
        let Some(at) = self.children.iter().position(|c| c.sa.spis == spis) else {
            return;
        };
        let child = self.children.remove(at);
        if !child.announced {
            return;
        }
        ctx.events.push_back(if child.state == ChildState::Rekeyed {
            Event::ChildSaRetired {
                ike_sa: self.id,
                spis,
            }
        } else {
            Event::ChildSaDeleted {
                ike_sa: self.id,
                spis,
            }
        });
    }

    fn on_informational_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        payloads: &[Payload],
    ) -> Vec<Payload> {
        let mut out = Vec::new();
        for p in payloads {
            let Payload::Delete(d) = p else { continue };
            if d.protocol == ProtocolId::IKE {
                self.deleted_by_peer(ctx);
                return Vec::new();
            }
            if d.protocol != ProtocolId::ESP {
                continue;
            }
            let mut ours = Vec::new();
            for spi in &d.spis {
                let Some(child) = self
                    .children
                    .iter_mut()
                    .find(|c| c.sa.spis.outbound == *spi)
                else {
                    continue;
                };
                let spis = child.sa.spis;
                let state = child.state;
                if let Some((theirs, _)) = child.collision.take() {
                    // The peer's rekey won before it saw ours (§2.8.1): it deletes the old.
                    self.replace_child(ctx, spis, theirs);
                }
                // A child we are deleting ourselves is answered without its SPI
                // (RFC 7296 §1.4.1, simultaneous deletes).
                if state != ChildState::Deleting {
                    ours.push(spis.inbound);
                }
                self.remove_child(ctx, spis);
            }
            if !ours.is_empty() {
                out.push(Payload::Delete(Delete {
                    protocol: ProtocolId::ESP,
                    spis: ours,
                }));
            }
        }
        out
    }

    fn deleted_by_peer(&mut self, ctx: &mut Ctx<'_>) {
        if let Some((theirs, _)) = self.ike_collision.take() {
            // The peer won the rekey collision and deleted this, the old SA.
            self.hand_over(ctx, theirs);
        }
        self.down(ctx, DownReason::DeletedByPeer);
    }

    /// Ends this IKE SA and reports it, unless it was only a rekey's leftover.
    pub fn down(&mut self, ctx: &mut Ctx<'_>, reason: DownReason) {
        let reported = matches!(
            self.phase,
            Phase::InitSent | Phase::AuthSent | Phase::Established
        ) && self.successor_of.is_none();
        let reason = match reason {
            DownReason::DeletedByPeer | DownReason::DeletedLocally if self.duplicate => {
                DownReason::Duplicate
            }
            other => other,
        };
        if reported {
            debug!(sa = ?self.id, ?reason, "IKE SA down");
            for child in std::mem::take(&mut self.children) {
                ctx.events.push_back(Event::ChildSaDeleted {
                    ike_sa: self.id,
                    spis: child.sa.spis,
                });
            }
            ctx.events.push_back(Event::IkeSaDown {
                sa: self.id,
                reason,
            });
        }
        self.phase = Phase::Dead;
    }

    // ---------------------------------------------------------------- receiving

    fn decode(&mut self, ctx: &Ctx<'_>, raw: &[u8], response: bool) -> Decoded {
        let Ok(datagram) = Datagram::parse(raw) else {
            return Decoded::Drop;
        };
        let Some(protected) = datagram.protected else {
            return Decoded::Drop;
        };
        let Some(keys) = self.keys.as_ref() else {
            return Decoded::Drop;
        };
        let Ok(plaintext) = keys.inb.open(protected.aad, protected.body) else {
            return Decoded::Drop;
        };
        let id = datagram.message.header.message_id;
        let (first, plaintext) = match protected.fragment {
            None => (protected.first, plaintext),
            Some(position) => {
                let slot = &mut self.reassembly[usize::from(response)];
                if slot.as_ref().is_none_or(|(at, _)| *at != id) {
                    let limits = ReassemblyLimits {
                        max_fragments: ctx.config.max_fragments,
                        max_bytes: ctx.config.max_message,
                    };
                    *slot = Some((id, Reassembly::new(limits, ctx.now)));
                }
                let Some((_, reassembly)) = slot.as_mut() else {
                    return Decoded::Drop;
                };
                match reassembly.insert(position, protected.first, plaintext) {
                    Ok(Progress::Complete { first, plaintext }) => {
                        *slot = None;
                        (first, plaintext)
                    }
                    Ok(_) => return Decoded::Partial,
                    Err(e) => {
                        debug!(sa = ?self.id, error = %e, "fragment dropped");
                        return Decoded::Partial;
                    }
                }
            }
        };
        match wire::parse_chain(first, &plaintext) {
            Ok(p) => Decoded::Payloads(p),
            Err(wire::Error::UnsupportedCritical(ty)) => {
                Decoded::Invalid(NotifyType::UNSUPPORTED_CRITICAL_PAYLOAD, vec![ty.0])
            }
            Err(_) => Decoded::Invalid(NotifyType::INVALID_SYNTAX, Vec::new()),
        }
    }

    /// Whether a retransmitted request is authentic (so a cached response may go out).
    fn authentic_retransmission(&self, raw: &[u8]) -> bool {
        let Ok(datagram) = Datagram::parse(raw) else {
            return false;
        };
        let (Some(protected), Some(keys)) = (datagram.protected, self.keys.as_ref()) else {
            return false;
        };
        // RFC 7383 §2.6.1: only the first fragment of a retransmission triggers ours.
        protected.fragment.is_none_or(|f| f.number == 1)
            && keys.inb.open(protected.aad, protected.body).is_ok()
    }

    fn heard(&mut self, ctx: &Ctx<'_>, local: SocketAddr, remote: SocketAddr) {
        self.last_heard = ctx.now;
        // RFC 7296 §2.23: the initiator floated to port 4500 (we follow), or its NAT
        // mapping changed (we follow the address it now uses).
        self.nat_t |= super::exchange::on_nat_t_port(local, remote);
        if self.nat_t && (self.remote != remote || self.local != local) {
            self.remote = remote;
            self.local = local;
        }
    }

    /// A datagram for this SA, the non-ESP marker already removed.
    pub fn receive(
        &mut self,
        ctx: &mut Ctx<'_>,
        local: SocketAddr,
        remote: SocketAddr,
        header: &Header,
        raw: &[u8],
    ) {
        if header.initiator == self.initiator {
            return;
        }
        if header.response {
            self.receive_response(ctx, local, remote, header, raw);
        } else {
            self.receive_request(ctx, local, remote, header, raw);
        }
        self.drive(ctx);
    }

    fn receive_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        local: SocketAddr,
        remote: SocketAddr,
        header: &Header,
        raw: &[u8],
    ) {
        if !self.requests.answers(header.message_id) {
            return;
        }
        let expected = self
            .requests
            .outstanding
            .as_ref()
            .map(|o| match o.exchange {
                Pending::Init(_) => ExchangeType::IKE_SA_INIT,
                Pending::Auth { .. } => ExchangeType::IKE_AUTH,
                Pending::CreateChild { .. } | Pending::RekeyIke { .. } => {
                    ExchangeType::CREATE_CHILD_SA
                }
                _ => ExchangeType::INFORMATIONAL,
            });
        if expected != Some(header.exchange) {
            return;
        }
        if header.exchange == ExchangeType::IKE_SA_INIT {
            let Ok(datagram) = Datagram::parse(raw) else {
                return;
            };
            let Some(outstanding) = self.requests.finish() else {
                return;
            };
            if let Pending::Init(attempt) = outstanding.exchange {
                self.heard(ctx, local, remote);
                let payloads = datagram.message.payloads;
                self.on_init_response(ctx, header, &payloads, raw, attempt);
            }
            return;
        }
        let payloads = match self.decode(ctx, raw, true) {
            Decoded::Payloads(p) => p,
            // An unparseable but authentic response ends the exchange as failed.
            Decoded::Invalid(kind, _) => vec![notify(kind, Vec::new())],
            Decoded::Partial | Decoded::Drop => return,
        };
        let Some(outstanding) = self.requests.finish() else {
            return;
        };
        self.heard(ctx, local, remote);
        match outstanding.exchange {
            Pending::Init(_) => {}
            Pending::Auth { spi_in } => self.on_auth_response(ctx, &payloads, spi_in),
            Pending::CreateChild {
                spi_in,
                nonce,
                dh,
                rekey,
            } => self.on_create_child_response(ctx, &payloads, spi_in, nonce, dh, rekey),
            Pending::RekeyIke { spi, nonce, dh } => {
                self.on_rekey_ike_response(ctx, &payloads, spi, nonce, dh)
            }
            Pending::DeleteChildren(spis) => {
                for spis in spis {
                    self.remove_child(ctx, spis);
                }
            }
            Pending::DeleteIke => self.down(ctx, DownReason::DeletedLocally),
            Pending::Liveness => {}
        }
    }

    fn receive_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        local: SocketAddr,
        remote: SocketAddr,
        header: &Header,
        raw: &[u8],
    ) {
        match self.responses.classify(header.message_id) {
            Incoming::Stale => return,
            Incoming::Retransmitted => {
                let resend = if header.exchange == ExchangeType::IKE_SA_INIT {
                    raw == self.init_theirs.as_slice()
                } else {
                    self.authentic_retransmission(raw)
                };
                if resend {
                    let cached = self.responses.cached().to_vec();
                    self.transmit(ctx, &cached);
                }
                return;
            }
            Incoming::New => {}
        }
        let allowed = match self.phase {
            Phase::HalfOpen => header.exchange == ExchangeType::IKE_AUTH,
            Phase::Established | Phase::Rekeyed => matches!(
                header.exchange,
                ExchangeType::CREATE_CHILD_SA | ExchangeType::INFORMATIONAL
            ),
            _ => false,
        };
        if !allowed {
            return;
        }
        let payloads = match self.decode(ctx, raw, false) {
            Decoded::Payloads(p) => p,
            Decoded::Invalid(kind, data) => {
                self.heard(ctx, local, remote);
                if header.exchange == ExchangeType::IKE_AUTH {
                    self.phase = Phase::Dead;
                }
                return self.send_response(ctx, header, &[notify(kind, data)]);
            }
            Decoded::Partial | Decoded::Drop => return,
        };
        self.heard(ctx, local, remote);
        let reply = match header.exchange {
            ExchangeType::IKE_AUTH => self.on_auth_request(ctx, &payloads),
            ExchangeType::CREATE_CHILD_SA => self.on_create_child_request(ctx, &payloads),
            _ => self.on_informational_request(ctx, &payloads),
        };
        self.send_response(ctx, header, &reply);
    }

    // ---------------------------------------------------------------- timers and tasks

    /// Starts the next queued exchange if the window is free.
    pub fn drive(&mut self, ctx: &mut Ctx<'_>) {
        let can_start = match self.phase {
            Phase::Established => {
                self.successor_of.is_none() || self.tasks.front() == Some(&Task::DeleteIke)
            }
            Phase::Rekeyed => self.tasks.front() == Some(&Task::DeleteIke),
            _ => false,
        };
        if !can_start || !self.requests.is_idle() {
            return;
        }
        let Some(task) = self.tasks.pop_front() else {
            return;
        };
        match task {
            Task::CreateChild => self.start_create_child(ctx, None),
            Task::RekeyChild(spis) => {
                if self
                    .children
                    .iter()
                    .any(|c| c.sa.spis == spis && c.state == ChildState::Installed)
                {
                    self.start_create_child(ctx, Some(spis));
                } else {
                    self.drive(ctx);
                }
            }
            Task::RekeyIke => self.start_rekey_ike(ctx),
            Task::DeleteChild(spis) => self.start_delete_children(ctx, vec![spis]),
            Task::DeleteIke => {
                let inner = vec![Payload::Delete(Delete {
                    protocol: ProtocolId::IKE,
                    spis: Vec::new(),
                })];
                self.send_request(ctx, ExchangeType::INFORMATIONAL, &inner, Pending::DeleteIke);
            }
            Task::Liveness => {
                self.send_request(ctx, ExchangeType::INFORMATIONAL, &[], Pending::Liveness)
            }
        }
    }

    pub fn deadline(&self, config: &Config) -> Option<Instant> {
        let mut d = self.requests.deadline();
        let mut at = |t: Option<Instant>| {
            d = match (d, t) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        };
        match self.phase {
            Phase::HalfOpen | Phase::Rekeyed => at(Some(self.since + config.half_open_timeout)),
            Phase::Established if self.successor_of.is_some() => {
                at(Some(self.since + config.half_open_timeout))
            }
            Phase::Established => {
                if self.requests.is_idle() {
                    at(config.liveness_interval.map(|i| self.last_heard + i));
                }
                at(self.rekey_at);
                for c in &self.children {
                    at(c.rekey_at);
                }
            }
            _ => {}
        }
        d
    }

    pub fn on_timeout(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        match self.requests.expire(now, &ctx.config.retransmission) {
            Expiry::NotYet => {}
            Expiry::Retransmit => {
                if let Some(o) = self.requests.outstanding.as_ref() {
                    let datagrams = o.datagrams.clone();
                    self.transmit(ctx, &datagrams);
                }
            }
            Expiry::GiveUp => {
                let exchange = self.requests.finish().map(|o| o.exchange);
                let reason = match exchange {
                    Some(Pending::Init(_)) => DownReason::Timeout,
                    Some(Pending::DeleteIke) => DownReason::DeletedLocally,
                    _ => DownReason::LivenessFailed,
                };
                return self.down(ctx, reason);
            }
        }
        let expired = now >= self.since + ctx.config.half_open_timeout;
        match self.phase {
            Phase::HalfOpen | Phase::Rekeyed if expired => {
                return self.down(ctx, DownReason::Timeout);
            }
            Phase::Established if self.successor_of.is_some() => {
                // A rekey's redundant result that the peer never deleted, or our delete
                // of it that went unanswered.
                if expired {
                    self.phase = Phase::Dead;
                }
                return self.drive(ctx);
            }
            Phase::Established => {}
            _ => return,
        }
        if let Some(i) = ctx.config.liveness_interval
            && self.requests.is_idle()
            && self.tasks.is_empty()
            && now >= self.last_heard + i
        {
            self.queue(Task::Liveness);
        }
        if self.rekey_at.is_some_and(|t| now >= t) {
            self.rekey_at = None;
            self.queue(Task::RekeyIke);
        }
        let due: Vec<ChildSpis> = self
            .children
            .iter_mut()
            .filter(|c| c.rekey_at.is_some_and(|t| now >= t))
            .map(|c| {
                c.rekey_at = None;
                c.sa.spis
            })
            .collect();
        for spis in due {
            self.queue(Task::RekeyChild(spis));
        }
        self.drive(ctx);
    }

    /// Takes the children of the IKE SA this one replaces.
    pub fn adopt(&mut self, from: &mut IkeSa) {
        self.children.append(&mut from.children);
        for task in from.tasks.iter().filter(|t| **t != Task::DeleteIke) {
            self.queue(*task);
        }
        self.successor_of = None;
    }

    pub fn has_child(&self, spis: ChildSpis) -> bool {
        self.children
            .iter()
            .any(|c| c.sa.spis == spis && c.state == ChildState::Installed)
    }
}

/// Refuses an IKE_SA_INIT request statelessly with one notification.
pub(super) fn refuse_init(
    ctx: &mut Ctx<'_>,
    local: SocketAddr,
    remote: SocketAddr,
    header: &Header,
    kind: NotifyType,
    data: Vec<u8>,
) {
    let reply = Header {
        spi_r: 0,
        initiator: false,
        response: true,
        ..*header
    };
    if let Some(d) = plain(reply, vec![notify(kind, data)]) {
        ctx.transmits.push_back(Transmit {
            local,
            remote,
            payload: with_marker(super::exchange::on_nat_t_port(local, remote), d),
        });
    }
}
