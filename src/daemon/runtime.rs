//! The task that owns the engine: it takes every input (datagrams, timers, control
//! requests, data-plane events, signals), feeds the engine and the adjacencies, and
//! carries out what they ask for.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use iiptran_ike::deadlines::Deadlines;
use iiptran_ike::sa::{ChildSa, ChildSpis, DownReason, Engine, Event, IkeSaId};
use iiptran_policy::adjacency::{
    Adjacency, ChildPair, Command, Event as AdjEvent, History, State, Time, Timing,
};
use iiptran_policy::config::{Config, Neighbor, diff};
use iiptran_policy::store::{InstalledObject, KernelObject, Store};
use iiptran_xfrm::userspace::IkeDatagram;
use iiptran_xfrm::{Dataplane, DataplaneEvent, Direction, Error as DpError, OWNED_REQIDS, SaId};
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, info, warn};

use super::enrollment::Services;
use super::ike_policy::VnPolicy;
use super::kernel_objects::{NeighborObjects, policy_object, sa_object};
use super::link_switch::{LinkSwitch, LinkUpDone};
use super::sockets::{IKE_PORT, NAT_T_PORT, Sockets};
use super::stale::{gone_ok, remove_recorded};
use crate::control::protocol::DataPlaneKind;
use crate::control::{Body, ControlError, ErrorKind, Request};

/// A control request and where its answer goes.
pub struct ControlRequest {
    pub request: Request,
    pub reply: oneshot::Sender<Result<Body, ControlError>>,
}

/// Where IKE datagrams on port 4500 come from: the userspace data plane reads that socket
/// and hands them up without the non-ESP marker; with the kernel data plane the socket
/// only ever sees IKE.
pub enum NatT {
    Userspace(mpsc::Receiver<IkeDatagram>),
    Kernel(Arc<UdpSocket>),
}

const MARKER: [u8; 4] = [0; 4];
const MAX_DATAGRAM: usize = 65_536;
/// How long a changed adjacency record may wait to be written. A setup changes a record
/// several times within milliseconds; writing each once after a pause costs one store
/// write per record and interval instead of one per change. The records keep each
/// adjacency's history across restarts (the adjacency itself starts afresh): a crash
/// loses at most this much of it, and the store's own delay.
const RECORD_WRITE_DELAY: Duration = Duration::from_secs(1);
/// How long the event loop runs before it lets the worker's other tasks run.
const YIELD_AFTER: Duration = Duration::from_millis(1);
/// How long the inbound SA of a retired or deleted pair stays. The peer switches to the
/// new pair before it retires the old one, but ESP it sealed with the old SA just before
/// may still arrive after the IKE message that retires it (on the userspace data plane
/// both leave through one socket, from different tasks).
const INBOUND_GRACE: Duration = Duration::from_secs(2);

impl NatT {
    /// The next datagram, as the engine expects it on port 4500 (with the marker).
    async fn recv(&mut self, buf: &mut [u8]) -> Option<(SocketAddr, Vec<u8>)> {
        match self {
            Self::Userspace(rx) => {
                let d = rx.recv().await?;
                Some((d.from, [MARKER.as_slice(), &d.data].concat()))
            }
            Self::Kernel(socket) => match socket.recv_from(buf).await {
                Ok((n, from)) => Some((from, buf.get(..n)?.to_vec())),
                Err(e) => {
                    warn!(error = %e, "receiving on port 4500");
                    None
                }
            },
        }
    }
}

/// One neighbor: its configuration, adjacency and negotiated child SAs.
pub(super) struct NeighborState {
    pub config: Arc<Neighbor>,
    pub adjacency: Adjacency,
    pub reqid: u32,
    children: Children,
    /// Pairs we responded to a rekey with, by the pair they replace: their outbound SA
    /// is installed once the replaced pair is retired, as by then the peer, which deletes
    /// it after installing the new pair, has the new inbound SA.
    outbound_waits: HashMap<ChildSpis, ChildSpis>,
    /// The revision and state of the adjacency when its record was last stored.
    stored: Option<(u64, State)>,
    /// The number of the latest change asked of its link: a link-up completion with
    /// another number was overtaken.
    link_change: u64,
    /// The IKE SA of our latest initiation, until it is up or gone.
    attempt: Option<IkeSaId>,
}

/// A neighbor's child SAs not yet wholly in the data plane, with the keys it needs: one,
/// or two across a rekey, so a vector holds them in the least memory. Each goes once its
/// SAs are installed: from then on the data plane has the keys, and the daemon keeps no
/// copy of them.
#[derive(Default)]
struct Children(Vec<ChildSa>);

impl Children {
    fn get(&self, spis: &ChildSpis) -> Option<&ChildSa> {
        self.0.iter().find(|c| c.spis == *spis)
    }

    fn insert(&mut self, child: ChildSa) {
        self.remove(&child.spis);
        self.0.reserve_exact(1);
        self.0.push(child);
    }

    fn remove(&mut self, spis: &ChildSpis) {
        self.0.retain(|c| c.spis != *spis);
        // Most of the time the last one went: its room would stay for the pair's life.
        self.0.shrink_to_fit();
    }
}

pub struct Runtime<D: Dataplane> {
    pub(super) config: Config,
    config_path: PathBuf,
    pub(super) engine: Engine<VnPolicy>,
    pub(super) dataplane: Arc<D>,
    links: LinkSwitch,
    /// The number of the latest change asked of any link.
    link_changes: u64,
    pub(super) kind: DataPlaneKind,
    sockets: Sockets,
    store: Store,
    services: Services,
    /// Boxed: a map node holds eleven entries whatever its fill, and a neighbor's state
    /// is large; thousands of neighbors are configured.
    /// Keyed by name, shared with the maps that lead to a neighbor.
    pub(super) neighbors: BTreeMap<Arc<str>, Box<NeighborState>>,
    /// The neighbor of each reqid, so that data-plane events need no scan of them all.
    by_reqid: HashMap<u32, Arc<str>>,
    /// The neighbor of each established IKE SA.
    ike_sas: HashMap<IkeSaId, Arc<str>>,
    /// The neighbor of each IKE SA we initiated that is not up yet (the latest attempt
    /// of each): its failure fails the attempt.
    attempts: HashMap<IkeSaId, Arc<str>>,
    /// The timer each adjacency has armed, by neighbor name.
    timers: Deadlines<String, Time>,
    /// Inbound SAs of retired pairs, removed after [`INBOUND_GRACE`].
    retiring: Deadlines<SaId, Instant>,
    /// Neighbors whose record changed since it was last written, and when to write them.
    unwritten: BTreeSet<String>,
    write_records_at: Option<Instant>,
    next_reqid: u32,
    pub(super) started: Instant,
}

pub fn wall_now() -> Time {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    Time(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// The instant of a wall-clock time, for sleeping until it.
fn instant_of(at: Time) -> Instant {
    Instant::now() + at.since(wall_now())
}

/// What an IKE SA we initiated that went before it was up means for the attempt, if it
/// failed it. Authentication failures come as an event of their own; a redundant IKE SA
/// of crossing initiations and one we deleted fail nothing.
fn attempt_failure(reason: &DownReason) -> Option<String> {
    match reason {
        DownReason::Refused(notify) => Some(format!("IKE SA refused: {notify}")),
        DownReason::Timeout | DownReason::LivenessFailed => {
            Some("no answer from the peer".to_owned())
        }
        DownReason::DeletedByPeer => Some("peer deleted the IKE SA".to_owned()),
        DownReason::Local(why) => Some(format!("IKE SA failed: {why}")),
        DownReason::AuthFailed
        | DownReason::Duplicate
        | DownReason::DeletedLocally
        | DownReason::PeerRestarted => None,
    }
}

fn pair_of(ike_sa: IkeSaId, spis: ChildSpis) -> ChildPair {
    ChildPair {
        ike_sa: ike_sa.0,
        spi_in: spis.inbound,
        spi_out: spis.outbound,
    }
}

pub(super) fn spis_of(pair: &ChildPair) -> ChildSpis {
    ChildSpis {
        inbound: pair.spi_in,
        outbound: pair.spi_out,
    }
}

impl<D: Dataplane + 'static> Runtime<D> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Config,
        config_path: PathBuf,
        engine: Engine<VnPolicy>,
        dataplane: D,
        kind: DataPlaneKind,
        sockets: Sockets,
        store: Store,
        services: Services,
    ) -> Self {
        let dataplane = Arc::new(dataplane);
        Self {
            config,
            config_path,
            engine,
            links: LinkSwitch::new(dataplane.clone()),
            link_changes: 0,
            dataplane,
            kind,
            sockets,
            store,
            services,
            neighbors: BTreeMap::new(),
            by_reqid: HashMap::new(),
            ike_sas: HashMap::new(),
            attempts: HashMap::new(),
            timers: Deadlines::default(),
            retiring: Deadlines::default(),
            unwritten: BTreeSet::new(),
            write_records_at: None,
            next_reqid: *OWNED_REQIDS.start() + 1,
            started: Instant::now(),
        }
    }
}

impl<D: Dataplane> Runtime<D> {
    fn local_ike(&self) -> SocketAddr {
        SocketAddr::new(self.config.node.endpoint, IKE_PORT)
    }

    pub(super) fn objects<'a>(&self, n: &'a NeighborState) -> NeighborObjects<'a> {
        NeighborObjects {
            local: self.config.node.endpoint,
            neighbor: &n.config,
            reqid: n.reqid,
        }
    }

    /// Removes what a previous run left in the data plane, then starts every adjacency
    /// with the history its record kept.
    pub async fn start(&mut self) {
        remove_recorded(&self.store, &*self.dataplane).await;
        let mut histories = self.stored_histories();
        let neighbors = self.config.neighbors.clone();
        for n in neighbors {
            let history = histories.remove(n.name.as_str());
            self.add_neighbor(n, history).await;
        }
        for gone in histories.keys() {
            if let Err(e) = self.store.adjacencies().and_then(|db| db.remove(gone)) {
                warn!(neighbor = gone.as_str(), error = %e, "removing the adjacency record");
            }
        }
        self.drain().await;
    }

    /// The history of each adjacency record in the store, by neighbor.
    fn stored_histories(&self) -> HashMap<String, History> {
        match self.store.adjacencies().and_then(|db| db.list()) {
            Ok(records) => records
                .into_iter()
                .map(|r| (r.neighbor, r.history))
                .collect(),
            Err(e) => {
                warn!(error = %e, "reading the adjacency records");
                HashMap::new()
            }
        }
    }

    /// Records objects about to be installed, durably: a crash after the install must
    /// not leave them unknown to the next start. Needless (and a disk flush per setup)
    /// where the objects die with the process.
    fn record(&self, neighbor: &str, objects: Vec<KernelObject>) {
        if !self.dataplane.outlives_process() {
            return;
        }
        let installed_at = wall_now();
        let list: Vec<InstalledObject> = objects
            .into_iter()
            .map(|object| InstalledObject {
                neighbor: neighbor.to_owned(),
                object,
                installed_at,
            })
            .collect();
        if let Err(e) = self.store.installed().and_then(|db| db.record(&list)) {
            warn!(error = %e, "recording installed objects");
        }
    }

    fn forget(&self, objects: &[KernelObject]) {
        if !self.dataplane.outlives_process() {
            return;
        }
        if let Err(e) = self.store.installed().and_then(|db| db.forget(objects)) {
            warn!(error = %e, "forgetting removed objects");
        }
    }

    async fn add_neighbor(&mut self, config: Arc<Neighbor>, history: Option<History>) {
        let seed = wall_now().0 ^ u64::from(self.next_reqid).rotate_left(32);
        let mut adjacency = Adjacency::new(&config.name, config.passive, Timing::default(), seed);
        if let Some(history) = history {
            adjacency.restore(history);
        }
        let name: Arc<str> = config.name.as_str().into();
        self.by_reqid.insert(self.next_reqid, name.clone());
        self.neighbors.insert(
            name.clone(),
            Box::new(NeighborState {
                config,
                adjacency,
                reqid: self.next_reqid,
                children: Children::default(),
                outbound_waits: HashMap::new(),
                stored: None,
                link_change: 0,
                attempt: None,
            }),
        );
        self.next_reqid += 1;
        self.feed(&name, AdjEvent::Start).await;
    }

    /// Serves until SIGTERM or SIGINT, then shuts down.
    pub async fn run(
        mut self,
        mut nat_t: NatT,
        mut control: mpsc::Receiver<ControlRequest>,
    ) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut events = self.dataplane.subscribe();
        let ike = self.sockets.ike.clone();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut nat_t_buf = vec![0u8; MAX_DATAGRAM];
        let mut yielded = Instant::now();
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                received = ike.recv_from(&mut buf) => match received {
                    Ok((n, from)) => {
                        let local = self.local_ike();
                        if let Some(data) = buf.get(..n) {
                            self.engine.handle(Instant::now(), local, from, data);
                        }
                    }
                    Err(e) => warn!(error = %e, "receiving on port 500"),
                },
                Some((from, data)) = nat_t.recv(&mut nat_t_buf) => {
                    let local = SocketAddr::new(self.config.node.endpoint, NAT_T_PORT);
                    self.engine.handle(Instant::now(), local, from, &data);
                }
                () = tokio::time::sleep_until(deadline.into()) => self.on_timeout().await,
                Some(request) = control.recv() => {
                    let answer = self.answer(request.request).await;
                    // The client may have gone; its answer is then of no use.
                    let _ = request.reply.send(answer);
                }
                done = self.links.done() => self.on_link_up(done).await,
                event = events.recv() => match event {
                    Ok(event) => self.on_dataplane(event).await,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        warn!(lost = n, "data-plane events lost");
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        events = self.dataplane.subscribe();
                    }
                },
                _ = hup.recv() => {
                    if let Err(e) = self.reload().await {
                        warn!(error = %e.message, "reload failed");
                    }
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
            self.drain().await;
            // The data plane's tasks may share this worker: in a burst of setups they
            // wait a millisecond and an event at most (a yielding task goes on once the
            // worker has polled for IO), not for as many events as tokio's budget lets
            // a task handle in one go.
            if yielded.elapsed() >= YIELD_AFTER {
                tokio::task::yield_now().await;
                yielded = Instant::now();
            }
        }
        self.shutdown().await;
        Ok(())
    }

    fn next_deadline(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        let timer = self.timers.next().map(instant_of);
        self.engine
            .poll_timeout()
            .into_iter()
            .chain(timer)
            .chain(self.retiring.next())
            .chain(self.write_records_at)
            .min()
            .map_or(far, |d| d.min(far))
    }

    async fn on_timeout(&mut self) {
        let now = Instant::now();
        if self.engine.poll_timeout().is_some_and(|d| d <= now) {
            self.engine.handle_timeout(now);
        }
        for name in self.timers.take_due(wall_now()) {
            self.feed(&name, AdjEvent::Timer).await;
        }
        for id in self.retiring.take_due(now) {
            self.delete_sa(id).await;
        }
        if self.write_records_at.is_some_and(|at| at <= now) {
            self.write_records();
        }
    }

    async fn delete_sa(&mut self, id: SaId) {
        if let Err(e) = gone_ok(self.dataplane.delete_sa(id).await) {
            warn!(spi = id.spi, error = %e, "deleting an SA");
        }
        self.forget(&[sa_object(&id)]);
    }

    /// The neighbor whose latest attempt `sa` was, no longer waiting for it.
    fn end_attempt(&mut self, sa: IkeSaId) -> Option<Arc<str>> {
        let name = self.attempts.remove(&sa)?;
        if let Some(n) = self.neighbors.get_mut(&*name) {
            n.attempt = None;
        }
        Some(name)
    }

    fn write_records(&mut self) {
        self.write_records_at = None;
        let db = match self.store.adjacencies() {
            Ok(db) => db,
            Err(e) => return warn!(error = %e, "storing adjacency records"),
        };
        for name in std::mem::take(&mut self.unwritten) {
            let Some(n) = self.neighbors.get(name.as_str()) else {
                continue;
            };
            if let Err(e) = db.put(&n.adjacency.record()) {
                warn!(error = %e, "storing adjacency records");
                return;
            }
        }
    }

    /// Acts on the engine's events and sends what it has to send, until both are empty.
    /// Events go first: SAs a message announces (the response creating a child SA, the
    /// DELETE following a rekey) are then in place before the peer can act on it.
    pub(super) async fn drain(&mut self) {
        loop {
            while let Some(event) = self.engine.poll_event() {
                self.on_engine(event).await;
            }
            let Some(t) = self.engine.poll_transmit() else {
                return;
            };
            let socket = self.sockets.for_local(t.local);
            if let Err(e) = socket.send_to(&t.payload, t.remote).await {
                debug!(remote = %t.remote, error = %e, "sending an IKE datagram");
            }
        }
    }

    pub(super) fn neighbor_of_sa(&self, sa: IkeSaId) -> Option<Arc<str>> {
        self.ike_sas.get(&sa).cloned()
    }

    /// The shared name of the configured neighbor `name`.
    fn shared_name(&self, name: &str) -> Option<Arc<str>> {
        self.neighbors
            .get_key_value(name)
            .map(|(name, _)| name.clone())
    }

    async fn on_engine(&mut self, event: Event) {
        debug!(?event, "engine event");
        match event {
            Event::IkeSaUp {
                sa, peer, remote, ..
            } => {
                let name = self.engine.policy().neighbor(&peer);
                let Some(name) = name.and_then(|n| self.shared_name(n)) else {
                    warn!(%peer, "IKE SA with a peer that is no neighbor");
                    self.engine.delete_ike(Instant::now(), sa);
                    return;
                };
                info!(neighbor = &*name, %remote, sa = %format_args!("{:016x}", sa.0), "IKE SA up");
                self.end_attempt(sa);
                self.ike_sas.insert(sa, name.clone());
                self.feed(&name, AdjEvent::IkeSaUp).await;
            }
            Event::ChildSaUp(child) => {
                let Some(name) = self.neighbor_of_sa(child.ike_sa) else {
                    return;
                };
                if self.engine.is_duplicate(child.ike_sa) {
                    // Crossing initiations: the engine keeps the other IKE SA and deletes
                    // this one with its child SAs.
                    debug!(neighbor = &*name, "child SA of a redundant IKE SA unused");
                    return;
                }
                let pair = pair_of(child.ike_sa, child.spis);
                if let Some(n) = self.neighbors.get_mut(&*name) {
                    n.children.insert(child);
                }
                self.feed(&name, AdjEvent::ChildSaEstablished(pair)).await;
            }
            Event::ChildSaRekeyed {
                old,
                new,
                initiated,
            } => {
                let Some(name) = self.neighbor_of_sa(new.ike_sa) else {
                    return;
                };
                let old_pair = pair_of(new.ike_sa, old);
                let new_pair = pair_of(new.ike_sa, new.spis);
                if let Some(n) = self.neighbors.get_mut(&*name) {
                    if !initiated {
                        n.outbound_waits.insert(old, new.spis);
                    }
                    n.children.insert(new);
                }
                let event = AdjEvent::ChildSaRekeyed {
                    old: old_pair,
                    new: new_pair,
                };
                self.feed(&name, event).await;
            }
            Event::ChildSaRetired { ike_sa, spis } => {
                if let Some(name) = self.neighbor_of_sa(ike_sa) {
                    self.take_over_outbound(&name, spis).await;
                    self.remove_sas(&name, &pair_of(ike_sa, spis)).await;
                }
            }
            Event::ChildSaDeleted { ike_sa, spis } => {
                let Some(name) = self.neighbor_of_sa(ike_sa) else {
                    return;
                };
                let pair = pair_of(ike_sa, spis);
                self.take_over_outbound(&name, spis).await;
                // The engine has forgotten the pair (the peer deleted it or its IKE SA),
                // so the data plane must too: the kernel keeps SAs until told.
                self.remove_sas(&name, &pair).await;
                // Children of a dying IKE SA go with it: its IkeSaDown follows and
                // tells the adjacency why.
                if self.engine.ike_sas().contains(&ike_sa) {
                    self.feed(&name, AdjEvent::ChildSaDeleted(pair)).await;
                }
            }
            Event::ChildSaFailed { ike_sa, notify } => {
                let Some(name) = self.neighbor_of_sa(ike_sa) else {
                    warn!(%notify, "child SA refused on an IKE SA of no neighbor");
                    return;
                };
                warn!(neighbor = &*name, %notify, "child SA refused");
                let reason = format!("child SA refused: {notify}");
                self.feed(&name, AdjEvent::ChildSaFailed { reason }).await;
                // An IKE SA without child SAs carries nothing; the adjacency's next
                // attempt makes a new one.
                let in_use = self
                    .neighbors
                    .get(&*name)
                    .and_then(|n| n.adjacency.current());
                if self.engine.child_sas(ike_sa).is_empty()
                    && in_use.is_none_or(|p| p.ike_sa != ike_sa.0)
                {
                    self.engine.delete_ike(Instant::now(), ike_sa);
                }
            }
            Event::IkeSaDown { sa, reason } => {
                let Some(name) = self.ike_sas.remove(&sa) else {
                    let attempt = self.end_attempt(sa);
                    match (attempt, attempt_failure(&reason)) {
                        (Some(name), Some(reason)) => {
                            warn!(neighbor = &*name, reason, "IKE SA failed");
                            self.feed(&name, AdjEvent::AttemptFailed { reason }).await;
                        }
                        _ => debug!(?reason, "IKE SA down before it was up"),
                    }
                    return;
                };
                info!(neighbor = &*name, ?reason, "IKE SA down");
                let carries_current = self
                    .neighbors
                    .get(&*name)
                    .and_then(|n| n.adjacency.current())
                    .is_some_and(|c| c.ike_sa == sa.0);
                let event = match reason {
                    // A dead IKE SA that no longer carries the adjacency (the one a
                    // restarted peer left behind, checked after its INITIAL_CONTACT)
                    // says nothing of the pair in use.
                    DownReason::LivenessFailed if carries_current => AdjEvent::LivenessFailed,
                    DownReason::AuthFailed => AdjEvent::AuthFailed {
                        reason: "AUTHENTICATION_FAILED".into(),
                    },
                    // The redundant IKE SA of crossing initiations matters only if its
                    // pair is still the one in use.
                    DownReason::Duplicate if !carries_current => return,
                    // Our own delete of an IKE SA the adjacency no longer uses (it
                    // asked for it, e.g. when its link was lost) says nothing of the
                    // attempt under way since.
                    DownReason::DeletedLocally if !carries_current => return,
                    DownReason::PeerRestarted => AdjEvent::PeerRestarted { ike_sa: sa.0 },
                    _ => AdjEvent::PeerDeleted { ike_sa: sa.0 },
                };
                self.feed(&name, event).await;
            }
            Event::AuthFailed {
                remote,
                peer,
                reason,
                ..
            } => {
                let neighbor = self
                    .engine
                    .policy()
                    .neighbor_of_peer(peer.as_ref(), remote.ip())
                    .map(str::to_owned);
                warn!(%remote, ?peer, ?neighbor, reason, "authentication failed");
                if let Some(name) = neighbor {
                    let reason = format!("AUTHENTICATION_FAILED: {reason}");
                    self.feed(&name, AdjEvent::AuthFailed { reason }).await;
                }
            }
        }
    }

    async fn on_dataplane(&mut self, event: DataplaneEvent) {
        debug!(?event, "data-plane event");
        match event {
            DataplaneEvent::HardExpire { sa, reqid } => {
                if let Some((name, pair)) = self.in_use(sa.spi, reqid) {
                    self.feed(&name, AdjEvent::HardExpire(pair)).await;
                }
            }
            DataplaneEvent::SoftExpire { sa, reqid } => {
                let Some((name, pair)) = self.in_use(sa.spi, reqid) else {
                    return;
                };
                let ike = IkeSaId(pair.ike_sa);
                if self.engine.rekey_child(Instant::now(), ike, spis_of(&pair)) {
                    info!(neighbor = &*name, "rekeying on a soft expiry");
                    self.feed(&name, AdjEvent::RekeyStarted).await;
                }
            }
            DataplaneEvent::Acquire { src, dst, reqid } => {
                let found = match self.by_reqid.get(&reqid) {
                    Some(name) => Some(name.clone()),
                    None if src == self.config.node.endpoint => self
                        .engine
                        .policy()
                        .neighbor_of_peer(None, dst)
                        .and_then(|n| self.shared_name(n)),
                    None => None,
                };
                // The adjacency decides: only one waiting out its back-off connects now.
                if let Some(name) = found {
                    debug!(neighbor = &*name, %dst, "traffic waits for SAs");
                    self.feed(&name, AdjEvent::Traffic).await;
                }
            }
            DataplaneEvent::LinkDown { name: link } => {
                let found = self
                    .neighbors
                    .iter()
                    .find(|(_, n)| n.config.link.name.as_str() == link)
                    .map(|(name, _)| name.clone());
                if let Some(name) = found {
                    warn!(neighbor = &*name, link = link.as_str(), "virtual link lost");
                    self.feed(&name, AdjEvent::LinkLost).await;
                }
            }
        }
    }

    async fn on_link_up(&mut self, done: LinkUpDone) {
        let current = self
            .neighbors
            .get(done.neighbor.as_str())
            .is_some_and(|n| n.link_change == done.seq);
        let name = done.neighbor;
        match done.result {
            Ok(()) if current => self.feed(&name, AdjEvent::LinkUp).await,
            Err(e) if current => {
                warn!(neighbor = &*name, error = %e, "cannot set the link up");
                // Made afresh for the next attempt, as a link lost behind our back.
                self.feed(&name, AdjEvent::LinkLost).await;
            }
            result => debug!(neighbor = &*name, ?result, "link up overtaken"),
        }
    }

    /// Numbers a change to the neighbor's link, which overtakes those asked before.
    fn link_change(&mut self, name: &str) -> u64 {
        self.link_changes += 1;
        if let Some(n) = self.neighbors.get_mut(name) {
            n.link_change = self.link_changes;
        }
        self.link_changes
    }

    /// The neighbor and pair in use that an SA of the data plane belongs to.
    fn in_use(&self, spi: u32, reqid: u32) -> Option<(Arc<str>, ChildPair)> {
        let name = self.by_reqid.get(&reqid)?;
        let current = self.neighbors.get(&**name)?.adjacency.current()?;
        (current.spi_in == spi || current.spi_out == spi).then(|| (name.clone(), current))
    }

    /// Feeds an event to a neighbor's adjacency and carries out its commands, with the
    /// events they cause, until it settles.
    pub(super) async fn feed(&mut self, name: &str, event: AdjEvent) {
        let mut queue = VecDeque::from([event]);
        while let Some(event) = queue.pop_front() {
            let Some(n) = self.neighbors.get_mut(name) else {
                return;
            };
            let commands = n.adjacency.handle(wall_now(), event);
            for command in commands {
                if let Some(follow) = self.execute(name, command).await {
                    queue.push_back(follow);
                }
            }
            self.persist(name);
        }
    }

    fn persist(&mut self, name: &str) {
        let Some(n) = self.neighbors.get_mut(name) else {
            return;
        };
        let (revision, state) = (n.adjacency.revision(), n.adjacency.state());
        match n.stored {
            Some((stored, _)) if stored == revision => return,
            Some((_, shown)) if shown == state => {}
            _ => info!(neighbor = name, ?state, "adjacency"),
        }
        n.stored = Some((revision, state));
        self.unwritten.insert(name.to_owned());
        self.write_records_at
            .get_or_insert_with(|| Instant::now() + RECORD_WRITE_DELAY);
    }

    /// Carries out one adjacency command; returns the event its success means.
    async fn execute(&mut self, name: &str, command: Command) -> Option<AdjEvent> {
        if matches!(
            command,
            Command::CreateLink | Command::DeleteLink | Command::SetLinkDown
        ) {
            // A link-up asked before must not come after this change.
            self.links.settled(name).await;
            self.link_change(name);
        }
        let n = self.neighbors.get(name)?;
        let objects = self.objects(n);
        let result = match command {
            Command::CreateLink => {
                let spec = match objects.link() {
                    Ok(spec) => spec,
                    Err(e) => {
                        warn!(neighbor = name, error = %e, "cannot build the link");
                        return None;
                    }
                };
                self.record(
                    name,
                    vec![KernelObject::Link {
                        name: spec.name.clone(),
                    }],
                );
                self.dataplane.create_link(&spec).await
            }
            Command::DeleteLink => {
                let link = n.config.link.name.to_string();
                let policies = objects.policies();
                for p in &policies {
                    if let Err(e) = gone_ok(self.dataplane.delete_policy(p.id()).await) {
                        warn!(neighbor = name, error = %e, "deleting a policy");
                    }
                }
                let result = gone_ok(self.dataplane.delete_link(&link).await);
                let mut gone: Vec<KernelObject> = policies.iter().map(policy_object).collect();
                gone.push(KernelObject::Link { name: link });
                self.forget(&gone);
                result
            }
            Command::SetLinkUp => {
                let link = n.config.link.name.to_string();
                let seq = self.link_change(name);
                self.links.up(name, &link, seq);
                return None;
            }
            Command::SetLinkDown => {
                let link = n.config.link.name.to_string();
                gone_ok(self.dataplane.set_link_up(&link, false).await)
            }
            Command::Initiate => {
                let remote = SocketAddr::new(n.config.endpoint, IKE_PORT);
                let peer = self.engine.policy().peer_config(name)?;
                let local = self.local_ike();
                match self.engine.initiate(Instant::now(), local, remote, peer) {
                    Ok(sa) => {
                        // An earlier attempt still under way (its retransmissions outlast
                        // the connect timeout) is superseded: it goes, rather than go on
                        // beside this one.
                        if let Some(n) = self.neighbors.get_mut(name)
                            && let Some(old) = n.attempt.replace(sa)
                        {
                            self.attempts.remove(&old);
                            self.engine.terminate(Instant::now(), old);
                        }
                        if let Some(name) = self.shared_name(name) {
                            self.attempts.insert(sa, name);
                        }
                    }
                    Err(e) => warn!(neighbor = name, error = %e, "cannot initiate"),
                }
                Ok(())
            }
            Command::InstallSas(pair) => {
                return match self.install(name, &pair).await {
                    Ok(()) => Some(AdjEvent::ChildSaInstalled(pair)),
                    Err(e) => {
                        warn!(neighbor = name, error = %e, "cannot install the child SAs");
                        Some(AdjEvent::InstallFailed {
                            pair,
                            reason: e.to_string(),
                        })
                    }
                };
            }
            Command::DeleteSas(pair) => {
                self.delete_sas(name, &pair).await;
                Ok(())
            }
            Command::ArmTimer(at) => {
                if self.neighbors.contains_key(name) {
                    self.timers.set(name.to_owned(), Some(at));
                }
                Ok(())
            }
            Command::Log(message) => {
                info!(neighbor = name, "{message}");
                Ok(())
            }
        };
        if let Err(e) = result {
            warn!(neighbor = name, error = %e, "data-plane operation failed");
        }
        None
    }

    async fn install(&mut self, name: &str, pair: &ChildPair) -> Result<(), DpError> {
        let n = self
            .neighbors
            .get(name)
            .ok_or_else(|| DpError::NotFound(name.to_owned()))?;
        let child = n
            .children
            .get(&spis_of(pair))
            .ok_or_else(|| DpError::NotFound(format!("child SA {pair:?}")))?;
        let objects = self.objects(n);
        let waits = n.outbound_waits.values().any(|w| *w == child.spis);
        let sas: Vec<_> = objects
            .sas(child)?
            .into_iter()
            .filter(|s| !(waits && s.direction == Direction::Out))
            .collect();
        let policies = objects.policies();
        let mut record: Vec<KernelObject> = sas.iter().map(|s| sa_object(&s.id())).collect();
        record.extend(policies.iter().map(policy_object));
        self.record(name, record);
        for sa in &sas {
            self.dataplane.install_sa(sa).await?;
        }
        // The policies outlive each pair: a rekey finds them in place.
        for p in &policies {
            if let Err(e) = self.dataplane.install_policy(p).await
                && !e.is_exists()
            {
                return Err(e);
            }
        }
        if !waits && let Some(n) = self.neighbors.get_mut(name) {
            n.children.remove(&spis_of(pair));
        }
        Ok(())
    }

    /// The pair that replaced `old` in a rekey we responded to starts sending: its
    /// outbound SA goes in before the old one goes out.
    async fn take_over_outbound(&mut self, name: &str, old: ChildSpis) {
        let Some(new) = self
            .neighbors
            .get_mut(name)
            .and_then(|n| n.outbound_waits.remove(&old))
        else {
            return;
        };
        let Some(n) = self.neighbors.get(name) else {
            return;
        };
        let Some(child) = n.children.get(&new) else {
            return;
        };
        let outbound = self
            .objects(n)
            .sas(child)
            .map(|sas| sas.into_iter().find(|s| s.direction == Direction::Out));
        let installed = match outbound {
            Ok(Some(sa)) => {
                self.record(name, vec![sa_object(&sa.id())]);
                self.dataplane.install_sa(&sa).await
            }
            Ok(None) => return,
            Err(e) => Err(e),
        };
        if let Err(e) = installed {
            warn!(neighbor = name, error = %e, "cannot install the new outbound SA");
        }
        if let Some(n) = self.neighbors.get_mut(name) {
            n.children.remove(&new);
        }
    }

    /// Removes a pair from the data plane: its outbound SA at once, its inbound SA after
    /// [`INBOUND_GRACE`].
    async fn remove_sas(&mut self, name: &str, pair: &ChildPair) {
        let Some(n) = self.neighbors.get_mut(name) else {
            return;
        };
        let spis = spis_of(pair);
        n.children.remove(&spis);
        n.outbound_waits.retain(|_, new| *new != spis);
        let n = &self.neighbors[name];
        let [inbound, outbound] = self.objects(n).sa_ids(spis_of(pair));
        self.delete_sa(outbound).await;
        self.retiring
            .set(inbound, Some(Instant::now() + INBOUND_GRACE));
    }

    /// Removes a pair from the data plane and deletes it with the peer; a stopped
    /// adjacency's IKE SA goes with it.
    async fn delete_sas(&mut self, name: &str, pair: &ChildPair) {
        self.remove_sas(name, pair).await;
        let Some(n) = self.neighbors.get(name) else {
            return;
        };
        let now = Instant::now();
        let ike = IkeSaId(pair.ike_sa);
        if self.engine.is_duplicate(ike) {
            // The engine deletes the redundant IKE SA of crossing initiations itself.
            return;
        }
        let spis = spis_of(pair);
        let children = self.engine.child_sas(ike);
        // An IKE SA whose last child goes and that the adjacency no longer uses (the
        // loser of crossing initiations) goes too.
        let orphaned = children.iter().all(|c| *c == spis)
            && n.adjacency
                .current()
                .is_none_or(|c| c.ike_sa != pair.ike_sa);
        if orphaned || matches!(n.adjacency.state(), State::Configured | State::Removed) {
            self.engine.delete_ike(now, ike);
        } else if children.contains(&spis) {
            self.engine.delete_child(now, ike, spis);
        }
    }

    /// Reloads the configuration file and applies what changed.
    pub(super) async fn reload(&mut self) -> Result<String, ControlError> {
        let failed = |m: String| ControlError::new(ErrorKind::Failed, m);
        let new = Config::load(&self.config_path).map_err(|e| failed(e.to_string()))?;
        let d = diff(&self.config, &new);
        if let Some(section) = d.sections.iter().find(|s| ["node", "ike"].contains(s)) {
            return Err(failed(format!(
                "the [{section}] section changed: restart the daemon to apply it"
            )));
        }
        // The certificate files are re-read on every reload, changed or not.
        let credentials = self.engine.policy().credentials().clone();
        credentials
            .reload(&new)
            .map_err(|e| failed(e.to_string()))?;
        let services = self.services.reconfigure(&self.config, &new).await;
        if d.is_empty() {
            self.adopt(new);
            return services
                .map(|()| "configuration unchanged; certificates re-read".into())
                .map_err(failed);
        }
        let policy = VnPolicy::new(&new, credentials).map_err(|e| failed(e.to_string()))?;
        for name in d.removed.iter().chain(&d.changed) {
            self.feed(name, AdjEvent::Remove).await;
            if let Some(gone) = self.neighbors.remove(name.as_str()) {
                self.by_reqid.remove(&gone.reqid);
                if let Some(sa) = gone.attempt {
                    self.attempts.remove(&sa);
                }
            }
            self.timers.set(name.clone(), None);
            self.unwritten.remove(name);
            if let Err(e) = self.store.adjacencies().and_then(|db| db.remove(name)) {
                warn!(error = %e, "removing the adjacency record");
            }
        }
        *self.engine.policy_mut() = policy;
        self.adopt(new);
        let names: HashSet<&str> = d
            .added
            .iter()
            .chain(&d.changed)
            .map(String::as_str)
            .collect();
        let fresh: Vec<Arc<Neighbor>> = self
            .config
            .neighbors
            .iter()
            .filter(|n| names.contains(n.name.as_str()))
            .cloned()
            .collect();
        for n in fresh {
            self.add_neighbor(n, None).await;
        }
        self.drain().await;
        info!(?d, "configuration reloaded");
        services.map_err(failed)?;
        Ok(format!(
            "reloaded: {} added, {} removed, {} changed",
            d.added.len(),
            d.removed.len(),
            d.changed.len()
        ))
    }

    /// Makes `new` the configuration; the neighbors it leaves unchanged share their
    /// entries in it again rather than keep the old ones.
    fn adopt(&mut self, new: Config) {
        self.config = new;
        for n in &self.config.neighbors {
            if let Some(state) = self.neighbors.get_mut(n.name.as_str()) {
                state.config = n.clone();
            }
        }
    }

    /// Takes every adjacency down: links down, SAs out of the data plane, IKE SAs
    /// deleted with the peers, links removed.
    async fn shutdown(&mut self) {
        crate::notify::notify(&[crate::notify::State::Stopping]);
        self.links.close().await;
        // All at once first: one by one, the kernel takes a grace period per device.
        if let Err(e) = self.dataplane.delete_links().await {
            warn!(error = %e, "deleting the links");
        }
        let names: Vec<Arc<str>> = self.neighbors.keys().cloned().collect();
        for name in &names {
            self.feed(name, AdjEvent::Shutdown).await;
        }
        for sa in self.engine.ike_sas() {
            self.engine.delete_ike(Instant::now(), sa);
        }
        // The deletes are sent once; the peers see the SAs die by liveness otherwise.
        while let Some(t) = self.engine.poll_transmit() {
            let socket = self.sockets.for_local(t.local);
            if let Err(e) = socket.send_to(&t.payload, t.remote).await {
                debug!(error = %e, "sending an IKE delete");
            }
        }
        remove_recorded(&self.store, &*self.dataplane).await;
        self.write_records();
        self.services.stop().await;
        info!("stopped");
    }
}
