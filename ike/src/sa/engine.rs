//! The engine: all IKE SAs of one node, the datagrams and timers that drive them.

use super::by_addresses::{Addresses, ByAddresses};
use super::child::ChildSpis;
use super::cookie::Cookies;
use super::event::{DownReason, Event, IkeSaId};
pub use super::exchange::Transmit;
use super::exchange::{
    NON_ESP_MARKER, find_notify, find_payload, notify, on_nat_t_port, plain, with_marker,
};
use super::ike_sa::{Ctx, IkeSa, Phase, Task, refuse_init};
use super::keys::KeyError;
use super::policy::{PeerConfig, Policy};
use super::snapshot::{IkeSaSnapshot, IkeSaState, SaCounts};
use crate::config::{Config, Suites};
use crate::deadlines::Deadlines;
use crate::iana::{ExchangeType, NotifyType};
use crate::wire::{self, Datagram, Header, Payload};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tracing::debug;

/// At most one INVALID_IKE_SPI notification per source address in this interval, so
/// that forged requests cannot make us a reflector.
const INVALID_SPI_INTERVAL: Duration = Duration::from_secs(1);

pub struct Engine<P: Policy> {
    config: Config,
    /// The suites of `config`, for peers the policy has none of their own for.
    suites: Arc<Suites>,
    policy: P,
    /// By our SPI.
    /// Boxed: an IKE SA is ~2 KiB, and a map of inline values carries up to twice that
    /// per SA in free slots, and moves it whenever an SA is taken out and put back.
    sas: HashMap<u64, Box<IkeSa>>,
    /// Responder SAs not yet authenticated, by the initiator's address and SPI.
    half_open: HashMap<(SocketAddr, u64), u64>,
    /// The current IKE SA behind each id (rekeys change it).
    handles: HashMap<IkeSaId, u64>,
    /// The SAs of `sas` by their pair of addresses, kept while one is out of `sas` being run.
    by_addresses: ByAddresses,
    /// The IKE SAs a rekey created, by the local SPI of the SA each is to succeed.
    successors: HashMap<u64, Vec<u64>>,
    /// SAs that went dead in a run, for `reap`.
    dying: Vec<u64>,
    /// Each IKE SA's next deadline, by our SPI: filed anew whenever the SA may have
    /// changed, so that timers cost nothing per SA that is not due.
    timers: Deadlines<u64, Instant>,
    next_id: u64,
    cookies: Cookies,
    /// An instant and the wall-clock time then: certificates are checked against the
    /// wall-clock time of `now`.
    clock: (Instant, SystemTime),
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    /// When we last answered each source with INVALID_IKE_SPI.
    invalid_spi_sent: HashMap<IpAddr, Instant>,
}

impl<P: Policy> Engine<P> {
    /// `wall` is the wall-clock time at `now`.
    pub fn new(
        config: Config,
        policy: P,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Self, KeyError> {
        Ok(Self {
            suites: Arc::new(config.suites()),
            config,
            policy,
            sas: HashMap::new(),
            half_open: HashMap::new(),
            handles: HashMap::new(),
            by_addresses: ByAddresses::default(),
            successors: HashMap::new(),
            dying: Vec::new(),
            timers: Deadlines::default(),
            next_id: 1,
            cookies: Cookies::new(now)?,
            clock: (now, wall),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            invalid_spi_sent: HashMap::new(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn policy(&self) -> &P {
        &self.policy
    }

    pub fn policy_mut(&mut self) -> &mut P {
        &mut self.policy
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Engine::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Files the deadline of IKE SA `spi` anew, after anything that may have changed it.
    fn schedule(&mut self, spi: u64) {
        let at = self.sas.get(&spi).and_then(|sa| sa.deadline(&self.config));
        self.timers.set(spi, at);
    }

    /// Adds a new IKE SA and files its deadline; returns its local SPI.
    fn add(&mut self, sa: IkeSa) -> u64 {
        let spi = sa.local_spi();
        self.by_addresses.add(addresses(&sa), spi);
        if let Some(old) = sa.successor_of {
            self.successors.entry(old).or_default().push(spi);
        }
        self.put_back(spi, Box::new(sa));
        spi
    }

    /// Puts an IKE SA that was taken out of `sas` (or is new) back, noting what its
    /// run changed: a finished handshake leaves the half-open SAs, a dead SA is reaped.
    fn put_back(&mut self, spi: u64, sa: Box<IkeSa>) {
        if sa.phase != Phase::HalfOpen
            && let Some(key) = sa.init_key
            && self.half_open.get(&key) == Some(&spi)
        {
            self.half_open.remove(&key);
        }
        if sa.phase == Phase::Dead {
            self.dying.push(spi);
        }
        self.sas.insert(spi, sa);
        self.schedule(spi);
    }

    /// The established IKE SAs.
    pub fn ike_sas(&self) -> Vec<IkeSaId> {
        let mut ids: Vec<IkeSaId> = self
            .handles
            .iter()
            .filter(|(_, spi)| self.sas.get(spi).is_some_and(|sa| sa.is_established()))
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        ids
    }

    /// The installed (not rekeyed or deleting) child SAs of an IKE SA.
    pub fn child_sas(&self, sa: IkeSaId) -> Vec<ChildSpis> {
        self.current(sa).map(IkeSa::child_spis).unwrap_or_default()
    }

    /// Every IKE SA, established or on its way, with its child SAs, by id.
    pub fn snapshot(&self) -> Vec<IkeSaSnapshot> {
        let mut all: Vec<IkeSaSnapshot> = self
            .handles
            .values()
            .filter_map(|spi| self.sas.get(spi)?.snapshot(&self.config))
            .collect();
        all.sort_by_key(|s| s.id);
        all
    }

    /// What [`Engine::snapshot`] would show, counted: cheap enough to ask often with many
    /// SAs (a status poll).
    pub fn counts(&self) -> SaCounts {
        let mut counts = SaCounts::default();
        for sa in self.handles.values().filter_map(|spi| self.sas.get(spi)) {
            let Some(state) = sa.visible_state() else {
                continue;
            };
            *match state {
                IkeSaState::Connecting => &mut counts.connecting,
                IkeSaState::HalfOpen => &mut counts.half_open,
                IkeSaState::Established => &mut counts.established,
                IkeSaState::Duplicate => &mut counts.duplicate,
            } += 1;
            counts.installed_children += sa.installed_children();
        }
        counts
    }

    /// Whether another IKE SA with the same peer is kept instead of this one
    /// (simultaneous initiation): its child SAs are not to be used (unless reported up
    /// again), and the engine deletes it.
    pub fn is_duplicate(&self, sa: IkeSaId) -> bool {
        self.current(sa).is_some_and(|s| s.duplicate)
    }

    fn current(&self, sa: IkeSaId) -> Option<&IkeSa> {
        self.handles
            .get(&sa)
            .and_then(|spi| self.sas.get(spi))
            .map(|sa| &**sa)
    }

    fn fresh_id(&mut self) -> IkeSaId {
        let id = IkeSaId(self.next_id);
        self.next_id += 1;
        id
    }

    /// Starts an IKE SA with its first child SA towards `remote` (port 500, or 4500 to
    /// start with NAT traversal).
    pub fn initiate(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        peer: Arc<PeerConfig>,
    ) -> Result<IkeSaId, KeyError> {
        let id = self.fresh_id();
        let mut ctx = self.ctx(now, local, remote);
        let sa = IkeSa::initiate(&mut ctx, id, local, remote, peer)?;
        let spi = self.add(sa);
        self.handles.insert(id, spi);
        self.reap(now);
        Ok(id)
    }

    fn command(&mut self, now: Instant, sa: IkeSaId, task: Task) -> bool {
        let Some(&spi) = self.handles.get(&sa) else {
            return false;
        };
        let valid = self.sas.get(&spi).is_some_and(|s| match task {
            Task::RekeyChild(c) | Task::DeleteChild(c) => s.has_child(c),
            _ => s.is_established(),
        });
        if valid {
            self.run(now, spi, |sa, ctx| {
                sa.queue(task);
                sa.drive(ctx);
            });
        }
        valid
    }

    /// Creates another child SA with the peer's configured selectors. Returns false for
    /// an unknown or not yet established IKE SA.
    pub fn create_child(&mut self, now: Instant, sa: IkeSaId) -> bool {
        self.command(now, sa, Task::CreateChild)
    }

    pub fn rekey_child(&mut self, now: Instant, sa: IkeSaId, child: ChildSpis) -> bool {
        self.command(now, sa, Task::RekeyChild(child))
    }

    pub fn delete_child(&mut self, now: Instant, sa: IkeSaId, child: ChildSpis) -> bool {
        self.command(now, sa, Task::DeleteChild(child))
    }

    pub fn rekey_ike(&mut self, now: Instant, sa: IkeSaId) -> bool {
        self.command(now, sa, Task::RekeyIke)
    }

    /// Deletes the IKE SA and its children (an INFORMATIONAL DELETE).
    pub fn delete_ike(&mut self, now: Instant, sa: IkeSaId) -> bool {
        self.command(now, sa, Task::DeleteIke)
    }

    /// Forgets an IKE SA without telling the peer (say, on shutdown after a failed delete).
    pub fn terminate(&mut self, now: Instant, sa: IkeSaId) {
        if let Some(&spi) = self.handles.get(&sa) {
            self.run(now, spi, |sa, ctx| sa.down(ctx, DownReason::DeletedLocally));
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for spi in self.timers.take_due(now) {
            self.run(now, spi, IkeSa::on_timeout);
        }
    }

    /// One UDP payload received on `local` from `remote`.
    pub fn handle(&mut self, now: Instant, local: SocketAddr, remote: SocketAddr, datagram: &[u8]) {
        let datagram = if on_nat_t_port(local, remote) {
            match datagram.strip_prefix(NON_ESP_MARKER.as_slice()) {
                Some(ike) => ike,
                // ESP in UDP belongs to the data plane.
                None => return,
            }
        } else {
            datagram
        };
        let header = match Header::parse(datagram) {
            Ok((header, _)) => header,
            Err(wire::Error::UnsupportedVersion { header, .. }) => {
                if !header.response {
                    let mut ctx = self.ctx(now, local, remote);
                    refuse_init(
                        &mut ctx,
                        local,
                        remote,
                        &header,
                        NotifyType::INVALID_MAJOR_VERSION,
                        Vec::new(),
                    );
                }
                return;
            }
            Err(_) => return,
        };
        if header.exchange == ExchangeType::IKE_SA_INIT && !header.response && header.spi_r == 0 {
            return self.handle_init_request(now, local, remote, &header, datagram);
        }
        let ours = if header.initiator {
            header.spi_r
        } else {
            header.spi_i
        };
        let Some(sa) = self.sas.get(&ours) else {
            debug!(spi = ours, "message for an unknown IKE SA");
            if !header.response && header.spi_i != 0 && header.spi_r != 0 {
                self.invalid_ike_spi(now, local, remote, &header);
            }
            return;
        };
        let in_init = sa.phase == Phase::InitSent;
        if sa.spi_i != header.spi_i || (!in_init && sa.spi_r != header.spi_r) {
            return;
        }
        self.run(now, ours, |sa, ctx| {
            sa.receive(ctx, local, remote, &header, datagram)
        });
    }

    /// RFC 7296 §1.5, §2.21.4: a request for an IKE SA we do not have is answered, outside
    /// any SA, with INVALID_IKE_SPI under the request's SPIs and message ID and only the
    /// Response flag set.
    fn invalid_ike_spi(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        request: &Header,
    ) {
        self.invalid_spi_sent
            .retain(|_, sent| now.saturating_duration_since(*sent) < INVALID_SPI_INTERVAL);
        if self.invalid_spi_sent.contains_key(&remote.ip())
            || self.invalid_spi_sent.len() >= self.config.half_open_limit
        {
            return;
        }
        let reply = Header {
            exchange: ExchangeType::INFORMATIONAL,
            initiator: false,
            response: true,
            ..*request
        };
        if let Some(d) = plain(reply, vec![notify(NotifyType::INVALID_IKE_SPI, Vec::new())]) {
            self.invalid_spi_sent.insert(remote.ip(), now);
            self.transmits.push_back(Transmit {
                local,
                remote,
                payload: with_marker(on_nat_t_port(local, remote), d),
            });
        }
    }

    /// What an IKE SA with the peer at `remote` works with.
    fn ctx(&mut self, now: Instant, local: SocketAddr, remote: SocketAddr) -> Ctx<'_> {
        let suites = self
            .policy
            .suites(remote)
            .unwrap_or_else(|| self.suites.clone());
        // The SA being worked on is out of `sas` meanwhile (or not in yet).
        let others_with_peer = self
            .by_addresses
            .get((local.ip(), remote.ip()))
            .iter()
            .any(|spi| self.sas.get(spi).is_some_and(|sa| sa.phase != Phase::Dead));
        Ctx {
            now,
            config: &self.config,
            suites,
            others_with_peer,
            policy: &self.policy,
            wall: wall_time(self.clock, now),
            transmits: &mut self.transmits,
            events: &mut self.events,
            spawned: Vec::new(),
            handovers: Vec::new(),
        }
    }

    fn handle_init_request(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        header: &Header,
        raw: &[u8],
    ) {
        if let Some(&spi) = self.half_open.get(&(remote, header.spi_i)) {
            return self.run(now, spi, |sa, ctx| {
                sa.receive(ctx, local, remote, header, raw)
            });
        }
        if self.half_open.len() >= self.config.half_open_limit {
            return;
        }
        let payloads = match Datagram::parse(raw) {
            Ok(d) => d.message.payloads,
            Err(wire::Error::UnsupportedCritical(ty)) => {
                let mut ctx = self.ctx(now, local, remote);
                return refuse_init(
                    &mut ctx,
                    local,
                    remote,
                    header,
                    NotifyType::UNSUPPORTED_CRITICAL_PAYLOAD,
                    vec![ty.0],
                );
            }
            Err(_) => return,
        };
        if self.half_open.len() >= self.config.cookie_threshold {
            let ni = find_payload!(payloads, Payload::Nonce)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let cookie = find_notify(&payloads, NotifyType::COOKIE).map(|n| n.data.as_slice());
            let valid =
                cookie.is_some_and(|c| self.cookies.check(now, c, ni, remote, header.spi_i));
            if !valid {
                let Ok(cookie) = self.cookies.make(now, ni, remote, header.spi_i) else {
                    return;
                };
                let mut ctx = self.ctx(now, local, remote);
                return refuse_init(&mut ctx, local, remote, header, NotifyType::COOKIE, cookie);
            }
        }
        let id = self.fresh_id();
        let mut ctx = self.ctx(now, local, remote);
        let Some(sa) = IkeSa::respond_init(&mut ctx, id, local, remote, header, &payloads, raw)
        else {
            return;
        };
        self.half_open
            .insert((remote, header.spi_i), sa.local_spi());
        let spi = self.add(sa);
        self.handles.insert(id, spi);
        self.reap(now);
    }

    /// Runs `f` on one IKE SA, then applies what it asked of the engine.
    fn run(&mut self, now: Instant, spi: u64, f: impl FnOnce(&mut IkeSa, &mut Ctx<'_>)) {
        let Some(mut sa) = self.sas.remove(&spi) else {
            return;
        };
        let was_established = sa.is_established();
        let before = addresses(&sa);
        let mark = self.events.len();
        let mut ctx = self.ctx(now, sa.local, sa.remote);
        f(&mut sa, &mut ctx);
        let spawned = std::mem::take(&mut ctx.spawned);
        let handovers = std::mem::take(&mut ctx.handovers);
        let newly_established = !was_established && sa.is_established();
        if addresses(&sa) != before {
            self.by_addresses.remove(before, spi);
            self.by_addresses.add(addresses(&sa), spi);
        }
        self.put_back(spi, sa);
        for new in spawned {
            self.add(new);
        }
        for (old, new) in handovers {
            self.hand_over(now, old, new);
        }
        if newly_established {
            // A restarted peer's stale SAs are reported gone before the new SA is reported
            // up: their child SAs may hold what the new ones need (a restarted peer can
            // hand out the same SPIs again).
            let fresh = self.events.split_off(mark);
            self.end_stale(now, spi);
            self.events.extend(fresh);
            self.resolve_duplicates(now, spi);
        }
        self.reap(now);
    }

    fn hand_over(&mut self, now: Instant, old: u64, new: u64) {
        let Some(mut from) = self.sas.remove(&old) else {
            return;
        };
        if let Some(to) = self.sas.get_mut(&new) {
            to.adopt(&mut from);
            self.handles.insert(to.id, new);
        }
        self.put_back(old, from);
        self.run(now, new, IkeSa::drive);
    }

    /// Whether two IKE SAs are with one peer: the same identity between the same two
    /// addresses. A node with several local addresses (or a load generator acting as many
    /// nodes) may hold one IKE SA per address with the same peer.
    fn same_peer(a: &IkeSa, b: &IkeSa) -> bool {
        a.peer_id().is_some() && a.peer_id() == b.peer_id() && addresses(a) == addresses(b)
    }

    /// The IKE SAs in `sas` with the same peer as `sa` (itself included).
    fn with_peer_of<'a>(&'a self, sa: &'a IkeSa) -> impl Iterator<Item = (u64, &'a IkeSa)> {
        self.by_addresses
            .get(addresses(sa))
            .iter()
            .filter_map(|spi| Some((*spi, &**self.sas.get(spi)?)))
            .filter(|(_, s)| Self::same_peer(s, sa))
    }

    /// A peer that restarted leaves stale IKE SAs, which go at once.
    fn end_stale(&mut self, now: Instant, spi: u64) {
        let Some(sa) = self.sas.get(&spi) else { return };
        if sa.initial_contact {
            // The peer holds no other IKE SA with us (RFC 7296 §3.16): those established
            // before this one began are from before it restarted. IKE SAs of crossing
            // initiations were still being set up then and are left to resolve_duplicates.
            let began = sa.since;
            let stale: Vec<u64> = self
                .with_peer_of(sa)
                .filter(|(other, s)| {
                    *other != spi && s.is_established() && s.established_before(began)
                })
                .map(|(other, _)| other)
                .collect();
            for other in stale {
                self.run(now, other, IkeSa::end_stale);
            }
        }
    }

    /// Simultaneous initiation leaves two IKE SAs with one peer. Both ends keep the one
    /// whose lowest nonce is higher (the rule of RFC 7296 §2.8.1 for rekey collisions);
    /// whoever initiated the other deletes it.
    fn resolve_duplicates(&mut self, now: Instant, spi: u64) {
        let Some(sa) = self.sas.get(&spi) else { return };
        if sa.peer_id().is_none() {
            return;
        }
        let mut same: Vec<(Rank, u64)> = self
            .with_peer_of(sa)
            .filter(|(_, s)| s.is_established())
            .map(|(spi, s)| (rank(s), spi))
            .collect();
        if same.len() < 2 {
            return;
        }
        same.sort();
        let keep = same.pop();
        if let Some((_, kept)) = keep {
            self.reinstate(kept, None);
        }
        for (_, loser) in same {
            debug!(?keep, loser, "duplicate IKE SA");
            let Some(sa) = self.sas.get_mut(&loser) else {
                continue;
            };
            sa.duplicate = true;
            let initiator = sa.initiator;
            self.schedule(loser);
            if initiator {
                self.run(now, loser, |sa, ctx| {
                    sa.queue(Task::DeleteIke);
                    sa.drive(ctx);
                });
            }
        }
    }

    /// An IKE SA that lost to another with the same peer is kept after all: when it ranks
    /// first again, or when the one kept went first and the peer has not deleted this one
    /// (a peer with another rule, or its DELETE lost). One whose deletion is ours and
    /// under way stays as it is. Its child SAs are reported ahead of the events of
    /// `replacing`, the IKE SA it takes over from, so that the caller sees the new pair
    /// before the old one goes and can switch without a gap.
    fn reinstate(&mut self, spi: u64, replacing: Option<IkeSaId>) {
        if let Some(sa) = self.sas.get_mut(&spi)
            && sa.duplicate
            && !sa.initiator
        {
            debug!(spi, "duplicate IKE SA kept after all");
            let mut up = VecDeque::new();
            sa.reinstate(&mut up);
            let at = replacing
                .and_then(|gone| self.events.iter().position(|e| concerns(e, gone)))
                .unwrap_or(self.events.len());
            for (i, event) in up.into_iter().enumerate() {
                self.events.insert(at + i, event);
            }
            self.schedule(spi);
        }
    }

    /// After an IKE SA with a peer went: if only duplicates are left with that peer, the
    /// best of those this end is not deleting is kept.
    fn successor_among_duplicates(&mut self, gone: &IkeSa) {
        let mut in_use = false;
        let mut best: Option<(Rank, u64)> = None;
        for (spi, s) in self.with_peer_of(gone).filter(|(_, s)| s.is_established()) {
            in_use |= !s.duplicate;
            if !s.initiator {
                best = best.max(Some((rank(s), spi)));
            }
        }
        if let Some((_, spi)) = best
            && !in_use
        {
            self.reinstate(spi, Some(gone.id));
        }
    }

    fn reap(&mut self, now: Instant) {
        for spi in std::mem::take(&mut self.dying) {
            let Some(sa) = self.sas.remove(&spi) else {
                continue;
            };
            self.by_addresses.remove(addresses(&sa), spi);
            if !sa.duplicate && sa.peer_id().is_some() {
                self.successor_among_duplicates(&sa);
            }
            self.timers.set(spi, None);
            if let Some(key) = sa.init_key
                && self.half_open.get(&key) == Some(&spi)
            {
                self.half_open.remove(&key);
            }
            if self.handles.get(&sa.id) == Some(&spi) {
                self.handles.remove(&sa.id);
            }
            for orphan in self.successors.remove(&spi).unwrap_or_default() {
                if let Some(successor) = self.sas.get_mut(&orphan)
                    && successor.successor_of == Some(spi)
                {
                    successor.orphaned_at = Some(now);
                    self.schedule(orphan);
                }
            }
        }
    }
}

fn wall_time((then, wall): (Instant, SystemTime), now: Instant) -> SystemTime {
    match now.checked_duration_since(then) {
        Some(ahead) => wall + ahead,
        None => wall
            .checked_sub(then.duration_since(now))
            .unwrap_or(SystemTime::UNIX_EPOCH),
    }
}

/// Of two IKE SAs with one peer both ends must keep the same: they rank by what both
/// know, an SA carrying a child SA before one whose child was refused (the one that is of
/// use), then by the lowest nonce; the highest is kept.
type Rank = (bool, Vec<u8>);

fn rank(sa: &IkeSa) -> Rank {
    (
        !sa.child_spis().is_empty(),
        std::cmp::min(sa.ni.clone(), sa.nr.clone()),
    )
}

/// Whether `event` reports the end of IKE SA `sa` or of one of its child SAs.
fn concerns(event: &Event, sa: IkeSaId) -> bool {
    match event {
        Event::ChildSaDeleted { ike_sa, .. } => *ike_sa == sa,
        Event::IkeSaDown { sa: down, .. } => *down == sa,
        _ => false,
    }
}

fn addresses(sa: &IkeSa) -> Addresses {
    (sa.local.ip(), sa.remote.ip())
}
