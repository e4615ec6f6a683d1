//! One IKE SA: its keys, its two message-ID windows, its child SAs, and the exchanges
//! it runs as initiator and responder (RFC 7296 §1.2-§1.4, §2.18).

use super::cached_response::{CachedResponse, Plaintext, Unsealed};
use super::child::{ChildSa, ChildSpis, Negotiated};
use super::event::{DownReason, Event, IkeSaId};
use super::nat::detection_hash;
use super::proposal;
use super::snapshot::{ChildSaSnapshot, ChildSaState, IkeSaSnapshot, IkeSaState};
use super::window::{Expiry, Incoming, Requests, Responses};
use crate::auth::{self, AuthError};
use crate::config::{Config, EspSuite, IkeSuite, Suites};
use crate::crypto::{CryptoError, DhPrivate};
use crate::iana::{
    AuthMethod, CertEncoding, DhId, ExchangeType, NotifyType, PayloadType, ProtocolId,
};
use crate::sa::exchange::{
    NAT_T_PORT, Transmit, encrypted, error_notify, esp_notify, find_notify, find_payload,
    has_notify, notify, plain, with_marker,
};
use crate::sa::keys::{Exchanged, IkeKeys, dh_generate, random_bytes, random_u32, random_u64};
use crate::sa::policy::{LocalAuth, PeerAuth, PeerConfig, Policy, id_from_wire, id_to_wire};
use crate::secret::Secret;
use crate::wire::{
    self, Authentication, Certificate, Datagram, Delete, Header, Identification, KeyExchange,
    Payload, Progress, Reassembly, ReassemblyLimits,
};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tracing::{debug, warn};

mod authenticate;
mod create_child;
mod informational;
mod init;

pub(super) use init::refuse_init;

const NONCE_LEN: usize = 32;
/// How often an initiator follows COOKIE or INVALID_KE_PAYLOAD before giving up.
const MAX_INIT_RETRIES: u8 = 4;

/// What the engine lends an IKE SA while it works.
pub(super) struct Ctx<'a> {
    pub now: Instant,
    pub config: &'a Config,
    /// The suites for the peer at hand.
    pub suites: Arc<Suites>,
    /// Whether the engine holds another IKE SA, in any state, with the peer's address.
    pub others_with_peer: bool,
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

impl Ctx<'_> {
    /// When to try a refused rekey again: after one to three retransmission timeouts at
    /// random, so that two peers refusing each other (§2.25) do not meet again.
    fn retry_time(&self) -> Instant {
        let timeout = self.config.retransmission.timeout;
        let per_mille = random_u32().map_or(0, |r| r % 2000);
        self.now + timeout + timeout * per_mille / 1000
    }

    /// Our IKE suites that the crypto module implements, in our order of preference.
    fn ike_suites(&self) -> Vec<IkeSuite> {
        let suites = self.suites.ike.iter().copied();
        suites
            .filter(crate::sa::keys::ike_suite_supported)
            .collect()
    }

    /// Our ESP suites that we can key, in our order of preference.
    fn esp_suites(&self) -> Vec<EspSuite> {
        let suites = self.suites.esp.iter().copied();
        suites
            .filter(crate::sa::keys::esp_suite_supported)
            .collect()
    }

    /// When to rekey an SA with this lifetime: up to a tenth earlier at random, so that
    /// two peers with the same lifetimes rarely rekey at the same moment (§2.8.1).
    fn rekey_time(&self, lifetime: Option<Duration>) -> Option<Instant> {
        let lifetime = lifetime?;
        let per_mille = random_u32().map_or(0, |r| r % 100);
        Some(self.now + lifetime - lifetime * per_mille / 1000)
    }
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
    established: Instant,
    rekey_at: Option<Instant>,
    /// A child we created answering the peer's rekey of this one while our own rekey
    /// of it was outstanding (§2.8.1), with the lowest nonce of that exchange.
    /// Boxed: rare, and as large as the child itself.
    collision: Option<Box<(ChildSa, Vec<u8>)>>,
    /// Reported to the caller; a collision's redundant SA never is.
    announced: bool,
}

/// Our IKE_SA_INIT message and the peer's, as signed in AUTH; the peer's also tells a
/// retransmitted first request. Boxed in the IKE SA, so that once it is established no
/// room for them is left behind.
#[derive(Default)]
struct InitMessages {
    ours: Vec<u8>,
    theirs: Vec<u8>,
}

pub(super) struct IkeSa {
    pub id: IkeSaId,
    /// We are the original initiator (we send with the I flag).
    pub initiator: bool,
    pub spi_i: u64,
    pub spi_r: u64,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// IKE runs on port 4500 (with the non-ESP marker).
    pub nat_t: bool,
    /// ESP goes in UDP (RFC 3948): NAT detection found a NAT or one side forces it. An
    /// initiator may float to 4500 without a NAT (strongSwan does, for MOBIKE); that
    /// alone never encapsulates ESP, or the two sides would disagree.
    pub udp_encap: bool,
    peer_fragmentation: bool,
    pub phase: Phase,
    pub peer: Option<Arc<PeerConfig>>,
    pub suite: IkeSuite,
    keys: Option<IkeKeys>,
    pub ni: Vec<u8>,
    pub nr: Vec<u8>,
    /// Until IKE_AUTH is done: the IKE_SA_INIT messages it signs.
    init_messages: Option<Box<InitMessages>>,
    requests: Requests<Pending>,
    responses: Responses,
    tasks: VecDeque<Task>,
    children: Vec<Child>,
    /// When the SA entered its phase (half-open and replaced SAs time out).
    pub since: Instant,
    established: Option<Instant>,
    last_heard: Instant,
    rekey_at: Option<Instant>,
    /// For a responder's half-open SA: (remote, SPIi) under which the engine finds it.
    pub init_key: Option<(SocketAddr, u64)>,
    /// Fragments of a request and of a response being put together, by message ID; boxed,
    /// as most IKE SAs never see a fragment.
    reassembly: [Option<Box<(u32, Reassembly)>>; 2],
    /// An IKE SA we created answering the peer's rekey while ours was outstanding
    /// (§2.8.2): its local SPI and the lowest nonce of that exchange.
    /// Boxed: rare.
    ike_collision: Option<Box<(u64, Vec<u8>)>>,
    /// Set on the IKE SA that a rekey created, until it takes over the children.
    pub successor_of: Option<u64>,
    /// When the SA this one was to succeed went away without handing over.
    pub orphaned_at: Option<Instant>,
    /// Another IKE SA with the same peer is kept instead of this one.
    pub duplicate: bool,
    /// The peer said (INITIAL_CONTACT) it holds no other IKE SA with us.
    pub initial_contact: bool,
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
            nat_t: crate::sa::exchange::on_nat_t_port(local, remote),
            udp_encap: false,
            peer_fragmentation: false,
            phase: Phase::InitSent,
            peer: None,
            suite,
            keys: None,
            ni: Vec::new(),
            nr: Vec::new(),
            init_messages: None,
            requests: Requests::new(0),
            responses: Responses::new(0),
            tasks: VecDeque::new(),
            children: Vec::new(),
            since: now,
            established: None,
            last_heard: now,
            rekey_at: None,
            init_key: None,
            reassembly: [None, None],
            ike_collision: None,
            successor_of: None,
            orphaned_at: None,
            duplicate: false,
            initial_contact: false,
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

    pub fn peer_id(&self) -> Option<&crate::sa::policy::Identity> {
        self.peer.as_ref().map(|p| &p.remote_id)
    }

    /// No longer a duplicate: the child SAs withheld meanwhile are reported up again.
    pub fn reinstate(&mut self, events: &mut VecDeque<Event>) {
        self.duplicate = false;
        for c in &self.children {
            if c.state == ChildState::Installed && c.announced {
                events.push_back(Event::ChildSaUp(c.sa.clone()));
            }
        }
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
        match self.plaintext(inner) {
            Some((first, chain)) => self.seal_plaintext(ctx, header, first, &chain),
            None => Vec::new(),
        }
    }

    /// The inner payload chain of a message and the type of its first payload.
    fn plaintext(&self, inner: &[Payload]) -> Option<(PayloadType, Vec<u8>)> {
        wire::inner_plaintext(inner)
            .inspect_err(|e| warn!(sa = ?self.id, error = %e, "cannot encode message"))
            .ok()
    }

    /// Encrypts an inner payload chain and sends it; returns the datagrams as sent.
    fn seal_plaintext(
        &mut self,
        ctx: &mut Ctx<'_>,
        header: &Header,
        first: PayloadType,
        chain: &[u8],
    ) -> Vec<Vec<u8>> {
        let fragment = self.peer_fragmentation.then_some(ctx.config.fragment_size);
        let nat_t = self.nat_t;
        let Some(keys) = self.keys.as_mut() else {
            return Vec::new();
        };
        match encrypted(header, first, chain, &mut keys.out, fragment) {
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

    /// Sends a response and keeps it, unsealed, for a retransmitted request.
    fn send_response(&mut self, ctx: &mut Ctx<'_>, request: &Header, inner: &[Payload]) {
        let header = self.header(request.exchange, true, request.message_id);
        let cached = match self.plaintext(inner) {
            Some((first, chain)) => {
                self.seal_plaintext(ctx, &header, first, &chain);
                CachedResponse::Sealed(Box::new(Unsealed {
                    header,
                    first,
                    plaintext: Plaintext::new(&chain, self.own_certificates()),
                }))
            }
            None => CachedResponse::Plain(Vec::new()),
        };
        self.responses.answered(request.message_id, cached);
    }

    /// Sends our last response again; an encrypted one is sealed anew.
    fn resend_response(&mut self, ctx: &mut Ctx<'_>) {
        match self.responses.cached() {
            Some(CachedResponse::Plain(datagrams)) => self.transmit(ctx, datagrams),
            Some(CachedResponse::Sealed(u)) => {
                let (header, first, chain) = (u.header, u.first, u.plaintext.assemble());
                self.seal_plaintext(ctx, &header, first, &chain);
            }
            None => {}
        }
    }

    /// Our certificate chain, when we authenticate with one.
    fn own_certificates(&self) -> Option<&Arc<[Vec<u8>]>> {
        match &self.peer.as_ref()?.local_auth {
            LocalAuth::Certificate { chain, .. } => Some(chain),
            LocalAuth::Psk(_) => None,
        }
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
                if slot.as_ref().is_none_or(|s| s.0 != id) {
                    let limits = ReassemblyLimits {
                        max_fragments: ctx.config.max_fragments,
                        max_bytes: ctx.config.max_message,
                    };
                    *slot = Some(Box::new((id, Reassembly::new(limits, ctx.now))));
                }
                let Some((_, reassembly)) = slot.as_deref_mut() else {
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
        self.nat_t |= crate::sa::exchange::on_nat_t_port(local, remote);
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
                    self.init_messages
                        .as_ref()
                        .is_some_and(|m| raw == m.theirs.as_slice())
                } else {
                    self.authentic_retransmission(raw)
                };
                if resend {
                    self.resend_response(ctx);
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
        if !self.requests.is_idle() {
            return;
        }
        let task = match self.phase {
            Phase::Established if self.successor_of.is_none() => self.tasks.pop_front(),
            // A replaced or redundant IKE SA only deletes itself; its other tasks move
            // to its successor.
            Phase::Established | Phase::Rekeyed => {
                let at = self.tasks.iter().position(|t| *t == Task::DeleteIke);
                at.and_then(|at| self.tasks.remove(at))
            }
            _ => None,
        };
        let Some(task) = task else {
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
            Phase::HalfOpen => at(Some(self.since + config.half_open_timeout)),
            Phase::Rekeyed => at(Some(self.since + config.retransmission.give_up_after())),
            Phase::Established if self.successor_of.is_some() => at(self
                .orphaned_at
                .map(|t| t + config.retransmission.give_up_after())),
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
        let give_up = ctx.config.retransmission.give_up_after();
        match self.phase {
            // A peer that does not complete IKE_AUTH, or that may still retransmit the
            // rekey request we answered, has had its time.
            Phase::HalfOpen if now >= self.since + ctx.config.half_open_timeout => {
                return self.down(ctx, DownReason::Timeout);
            }
            Phase::Rekeyed if now >= self.since + give_up => {
                return self.down(ctx, DownReason::Timeout);
            }
            Phase::Established if self.successor_of.is_some() => {
                // A rekey's redundant result that the peer never deleted after the SA it
                // replaced went away.
                if self.orphaned_at.is_some_and(|t| now >= t + give_up) {
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
        for task in std::mem::take(&mut from.tasks) {
            match task {
                Task::DeleteIke => from.tasks.push_back(task),
                Task::RekeyIke | Task::Liveness => {}
                _ => self.queue(task),
            }
        }
        self.successor_of = None;
    }

    /// The state an operator sees; `None` once the SA is gone or while a rekey's result
    /// has not taken over yet.
    pub fn visible_state(&self) -> Option<IkeSaState> {
        match self.phase {
            Phase::InitSent | Phase::AuthSent => Some(IkeSaState::Connecting),
            Phase::HalfOpen => Some(IkeSaState::HalfOpen),
            Phase::Established if self.successor_of.is_some() => None,
            Phase::Established if self.duplicate => Some(IkeSaState::Duplicate),
            Phase::Established => Some(IkeSaState::Established),
            Phase::Rekeyed | Phase::Dead => None,
        }
    }

    /// The child SAs an operator sees.
    fn visible_children(&self) -> impl Iterator<Item = &Child> {
        self.children.iter().filter(|c| c.announced)
    }

    /// How many of the child SAs an operator sees carry traffic.
    pub fn installed_children(&self) -> usize {
        self.visible_children()
            .filter(|c| c.state == ChildState::Installed)
            .count()
    }

    /// What an operator sees of this SA; `None` once it is gone or while a rekey's result
    /// has not taken over yet.
    pub fn snapshot(&self, config: &Config) -> Option<IkeSaSnapshot> {
        let state = self.visible_state()?;
        let children = self
            .visible_children()
            .map(|c| ChildSaSnapshot {
                spis: c.sa.spis,
                state: match c.state {
                    ChildState::Installed => ChildSaState::Installed,
                    ChildState::Rekeyed => ChildSaState::Rekeyed,
                    ChildState::Deleting => ChildSaState::Deleting,
                },
                suite: c.sa.suite,
                mode: c.sa.mode,
                ts_local: c.sa.ts_local.clone(),
                ts_remote: c.sa.ts_remote.clone(),
                udp_encap: c.sa.udp_encap,
                established: c.established,
                rekey_at: c.rekey_at,
                expire_at: c.established + c.sa.hard_lifetime,
            })
            .collect();
        Some(IkeSaSnapshot {
            id: self.id,
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            initiator: self.initiator,
            state,
            suite: self.suite,
            local_id: self.peer.as_ref().map(|p| p.local_id.clone()),
            remote_id: self.peer_id().cloned(),
            local: self.local,
            remote: self.remote,
            established: self.established,
            rekey_at: self.rekey_at,
            expire_at: (self.phase == Phase::HalfOpen)
                .then(|| self.since + config.half_open_timeout),
            children,
        })
    }

    pub fn established_before(&self, at: Instant) -> bool {
        self.established.is_some_and(|e| e < at)
    }

    /// The peer restarted: tells it once that this SA is deleted, in case it has not,
    /// and ends it without waiting for an answer that cannot come.
    pub fn end_stale(&mut self, ctx: &mut Ctx<'_>) {
        let header = self.header(ExchangeType::INFORMATIONAL, false, self.requests.next_id);
        let delete = Payload::Delete(Delete {
            protocol: ProtocolId::IKE,
            spis: Vec::new(),
        });
        self.seal(ctx, &header, &[delete]);
        self.down(ctx, DownReason::PeerRestarted);
    }

    pub fn has_child(&self, spis: ChildSpis) -> bool {
        self.children
            .iter()
            .any(|c| c.sa.spis == spis && c.state == ChildState::Installed)
    }
}

#[cfg(test)]
mod tests;
