//! The load generator: one IKE engine acting as `count` distinct initiating nodes, each
//! with its own source address, identity and Ed25519 certificate from the test CA, each
//! setting up one IKE SA and one transport-mode IIPtran child SA (protocol 4 between the
//! two endpoints) with the responder. At most `concurrency` setups are in flight at a
//! time, so the responder is kept busy without being flooded past its half-open limits.

use std::collections::HashMap;
use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use iiptran_ike::auth::{SigningKey, TrustAnchors};
use iiptran_ike::config::{Config, EspSuite, IkeSuite};
use iiptran_ike::iana::{IpProtocol, NotifyType};
use iiptran_ike::identity::Identity;
use iiptran_ike::sa::{Engine, Event, IkeSaId, LocalAuth, PeerAuth, PeerConfig, Policy, Transmit};
use iiptran_ike::ts::TrafficSelector;
use iiptran_xfrm::userspace::batch::{self, RecvBatch};
use rcgen::{CertificateParams, DnType, Issuer, KeyPair, SanType};
use serde::{Deserialize, Serialize};
use tokio::io::Interest;
use tokio::net::UdpSocket;

const IKE_PORT: u16 = 500;

/// What one load-generator run is asked to do.
#[derive(Clone, Debug)]
pub struct Plan {
    pub responder: IpAddr,
    pub responder_id: String,
    /// Node `i` uses address `first + i` and identity `n<i>.vn.example`.
    pub first: Ipv4Addr,
    pub count: u32,
    pub concurrency: u32,
    /// The CA's certificate and key (PEM): the nodes' certificates are issued from them.
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub timeout: Duration,
}

/// What one run measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Outcome {
    pub count: u32,
    pub up: u32,
    pub failed: u32,
    pub concurrency: u32,
    /// From the first IKE_SA_INIT to the last child SA up.
    pub seconds: f64,
    pub setups_per_sec: f64,
    /// The load generator's own CPU time in that interval.
    pub cpu_seconds: f64,
    pub first_failure: Option<String>,
}

/// The identity of node `i`.
pub fn node_identity(i: u32) -> String {
    format!("n{i}.vn.example")
}

/// The address of node `i`.
pub fn node_addr(first: Ipv4Addr, i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(first) + i)
}

/// Initiator-only decisions: nobody may initiate to us, and the responder must answer
/// with exactly the selectors we proposed.
struct Initiators;

impl Policy for Initiators {
    fn peer(&self, _: &Identity, _: SocketAddr) -> Option<Arc<PeerConfig>> {
        None
    }

    fn narrow(
        &self,
        _: &PeerConfig,
        _: &[TrafficSelector],
        _: &[TrafficSelector],
    ) -> Result<(Vec<TrafficSelector>, Vec<TrafficSelector>), NotifyType> {
        Err(NotifyType::TS_UNACCEPTABLE)
    }

    fn accept_narrowed(
        &self,
        peer: &PeerConfig,
        tsi: &[TrafficSelector],
        tsr: &[TrafficSelector],
    ) -> Result<(), NotifyType> {
        if tsi == &*peer.ts_local && tsr == &*peer.ts_remote {
            Ok(())
        } else {
            Err(NotifyType::TS_UNACCEPTABLE)
        }
    }
}

/// The peer configurations of all nodes, each with a fresh key and certificate.
fn peer_configs(plan: &Plan) -> Result<Vec<Arc<PeerConfig>>> {
    let ca_key = KeyPair::from_pem(&plan.ca_key_pem).context("CA key")?;
    let issuer = Issuer::from_ca_cert_pem(&plan.ca_cert_pem, ca_key).context("CA certificate")?;
    let anchors = Arc::new(
        TrustAnchors::from_pem(plan.ca_cert_pem.as_bytes()).context("CA as trust anchor")?,
    );
    let responder_id = Identity::Fqdn(plan.responder_id.clone());
    (0..plan.count)
        .map(|i| {
            let name = node_identity(i);
            let addr = IpAddr::V4(node_addr(plan.first, i));
            let key = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
            let mut params = CertificateParams::default();
            params.distinguished_name.push(DnType::CommonName, &name);
            params.subject_alt_names = vec![
                SanType::DnsName(name.as_str().try_into()?),
                SanType::IpAddress(addr),
            ];
            let cert = params.signed_by(&key, &issuer)?.der().to_vec();
            let signing = SigningKey::from_pkcs8_der(&key.serialize_der())?;
            Ok(Arc::new(PeerConfig {
                local_id: Identity::Fqdn(name),
                local_auth: LocalAuth::Certificate {
                    key: Arc::new(signing),
                    chain: vec![cert].into(),
                },
                remote_id: responder_id.clone(),
                remote_auth: PeerAuth::Certificate(anchors.clone()),
                ts_local: [TrafficSelector::exact(addr, IpProtocol::IPIP)].into(),
                ts_remote: [TrafficSelector::exact(plan.responder, IpProtocol::IPIP)].into(),
            }))
        })
        .collect()
}

/// This process's user and system CPU time.
fn own_cpu() -> Duration {
    // SAFETY: getrusage only writes into the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// One socket for every node: bound to the IKE port on all addresses (an AnyIP route makes
/// the nodes' addresses local), each datagram's destination read from IP_PKTINFO and each
/// sent datagram's source set by it. A socket per node cost a task, an epoll entry and a
/// receive buffer each, paid in CPU time the load generator takes from the responder's
/// machine.
struct NodesSocket {
    socket: UdpSocket,
    received: RecvBatch,
}

impl NodesSocket {
    async fn bind() -> Result<Self> {
        let any = SocketAddr::from((Ipv4Addr::UNSPECIFIED, IKE_PORT));
        let socket = UdpSocket::bind(any)
            .await
            .with_context(|| format!("binding {any}"))?;
        batch::prepare(&socket).context("socket options")?;
        Ok(Self {
            socket,
            received: RecvBatch::new(),
        })
    }

    /// Waits for datagrams and hands each to `engine`.
    async fn receive(&mut self, engine: &mut Engine<Initiators>) {
        let Ok(n) = self.received.recv(&self.socket).await else {
            return;
        };
        let now = Instant::now();
        for i in 0..n {
            let meta = self.received.meta(i);
            let Some(to) = meta.to else { continue };
            let local = SocketAddr::new(to, IKE_PORT);
            // GRO may have joined equal-sized datagrams to one node into one buffer.
            for datagram in self.received.data_mut(i).chunks(meta.segment.max(1)) {
                engine.handle(now, local, meta.from, datagram);
            }
        }
    }

    /// Sends one datagram from its node's address; a datagram the kernel refuses is lost
    /// and retransmitted by the engine like one lost on the wire.
    async fn send(&self, t: &Transmit) {
        let (IpAddr::V4(source), SocketAddr::V4(remote)) = (t.local.ip(), t.remote) else {
            return;
        };
        loop {
            if self.socket.writable().await.is_err() {
                return;
            }
            match self.socket.try_io(Interest::WRITABLE, || {
                send_from(self.socket.as_raw_fd(), source, remote, &t.payload)
            }) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                _ => return,
            }
        }
    }
}

/// `sendmsg` of `payload` to `remote` with `source` as the IP source (IP_PKTINFO).
fn send_from(fd: i32, source: Ipv4Addr, remote: SocketAddrV4, payload: &[u8]) -> io::Result<()> {
    let name = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: remote.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*remote.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let info = libc::in_pktinfo {
        ipi_ifindex: 0,
        ipi_spec_dst: libc::in_addr {
            s_addr: u32::from(source).to_be(),
        },
        ipi_addr: libc::in_addr { s_addr: 0 },
    };
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr().cast_mut().cast(),
        iov_len: payload.len(),
    };
    // Room for one cmsghdr and an in_pktinfo (CMSG_SPACE(12) = 32), aligned for both.
    let mut control = [0u64; 4];
    // SAFETY: the msghdr points at the name, iovec and control buffer above, all alive for
    // the call and of the stated sizes; CMSG_FIRSTHDR of a 32-octet control buffer is its
    // start, and the header and in_pktinfo written through it fit in CMSG_SPACE(12).
    let rc = unsafe {
        let mut h: libc::msghdr = mem::zeroed();
        h.msg_name = (&name as *const libc::sockaddr_in).cast_mut().cast();
        h.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        h.msg_iov = &mut iov;
        h.msg_iovlen = 1;
        h.msg_control = control.as_mut_ptr().cast();
        h.msg_controllen = libc::CMSG_SPACE(mem::size_of::<libc::in_pktinfo>() as u32) as usize;
        let c = libc::CMSG_FIRSTHDR(&h);
        (*c).cmsg_level = libc::IPPROTO_IP;
        (*c).cmsg_type = libc::IP_PKTINFO;
        (*c).cmsg_len = libc::CMSG_LEN(mem::size_of::<libc::in_pktinfo>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::in_pktinfo>(), info);
        libc::sendmsg(fd, &h, libc::MSG_DONTWAIT)
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The state of a run: which setups are in flight and how many ended how.
struct Tally {
    pending: HashMap<IkeSaId, u32>,
    up: u32,
    failed: u32,
    first_failure: Option<String>,
    last_up: Instant,
}

impl Tally {
    fn on_event(&mut self, event: Event) {
        match event {
            Event::ChildSaUp(child) => self.up(child.ike_sa),
            Event::IkeSaDown { sa, reason } => self.fail(sa, format!("IKE SA down: {reason:?}")),
            Event::AuthFailed { sa, .. } => self.fail(sa, "authentication failed".into()),
            Event::ChildSaFailed { ike_sa, notify } => {
                self.fail(ike_sa, format!("child SA refused: {notify:?}"));
            }
            _ => {}
        }
    }

    fn up(&mut self, sa: IkeSaId) {
        if self.pending.remove(&sa).is_some() {
            self.up += 1;
            self.last_up = Instant::now();
        }
    }

    fn fail(&mut self, sa: IkeSaId, why: String) {
        if let Some(node) = self.pending.remove(&sa) {
            self.failed += 1;
            self.first_failure
                .get_or_insert_with(|| format!("node {node}: {why}"));
        }
    }
}

/// A prepared run: the nodes' credentials are issued and their sockets bound, so that
/// [`Loadgen::run`] measures setups only.
pub struct Loadgen {
    plan: Plan,
    peers: Vec<Arc<PeerConfig>>,
    socket: NodesSocket,
    engine: Engine<Initiators>,
}

impl Loadgen {
    pub async fn prepare(plan: Plan) -> Result<Self> {
        if !plan.responder.is_ipv4() {
            bail!("the nodes' addresses are IPv4, so the responder's must be");
        }
        let peers = peer_configs(&plan)?;
        let socket = NodesSocket::bind().await?;
        let config = Config {
            ike_suites: vec![IkeSuite::CHACHA_X25519],
            esp_suites: vec![EspSuite::CHACHA],
            // The responder checks liveness; answering is enough.
            liveness_interval: None,
            ..Config::default()
        };
        let engine = Engine::new(config, Initiators, Instant::now(), SystemTime::now())?;
        Ok(Self {
            plan,
            peers,
            socket,
            engine,
        })
    }

    /// Sets up every node's SAs; returns when all are up or failed, or the plan's
    /// timeout has passed.
    pub async fn run(&mut self) -> Result<Outcome> {
        let started = Instant::now();
        let cpu_before = own_cpu();
        let deadline = started + self.plan.timeout;
        let remote = SocketAddr::new(self.plan.responder, IKE_PORT);
        let mut tally = Tally {
            pending: HashMap::new(),
            up: 0,
            failed: 0,
            first_failure: None,
            last_up: started,
        };
        let mut next = 0u32;
        let (count, concurrency) = (self.plan.count, self.plan.concurrency as usize);
        let room = |tally: &Tally, next: u32| next < count && tally.pending.len() < concurrency;
        while tally.up + tally.failed < self.plan.count {
            let now = Instant::now();
            while room(&tally, next) {
                let peer = self.peers[next as usize].clone();
                let local = SocketAddr::new(IpAddr::V4(node_addr(self.plan.first, next)), IKE_PORT);
                let sa = self.engine.initiate(now, local, remote, peer)?;
                tally.pending.insert(sa, next);
                next += 1;
            }
            self.flush(&mut tally).await;
            // Setups that ended in this flush made room: fill it before waiting, since
            // with every setup ended nothing would wake the wait but the deadline.
            if tally.up + tally.failed == self.plan.count || room(&tally, next) {
                continue;
            }
            if Instant::now() > deadline {
                bail!(
                    "{} of {} setups up, {} failed after {:?}",
                    tally.up,
                    self.plan.count,
                    tally.failed,
                    self.plan.timeout
                );
            }
            self.step(deadline).await;
        }
        let seconds = tally.last_up.duration_since(started).as_secs_f64();
        Ok(Outcome {
            count: self.plan.count,
            up: tally.up,
            failed: tally.failed,
            concurrency: self.plan.concurrency,
            seconds,
            setups_per_sec: f64::from(tally.up) / seconds.max(f64::EPSILON),
            cpu_seconds: (own_cpu() - cpu_before).as_secs_f64(),
            first_failure: tally.first_failure,
        })
    }

    /// Keeps the SAs alive (answers the responder's liveness checks) until `stop` ends.
    pub async fn hold(&mut self, stop: impl Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        let mut ignored = Tally {
            pending: HashMap::new(),
            up: 0,
            failed: 0,
            first_failure: None,
            last_up: Instant::now(),
        };
        loop {
            let far = Instant::now() + Duration::from_secs(3600);
            tokio::select! {
                () = &mut stop => return,
                () = self.step(far) => self.flush(&mut ignored).await,
            }
        }
    }

    /// Waits for datagrams or a timer and feeds them to the engine.
    async fn step(&mut self, deadline: Instant) {
        let wake = self
            .engine
            .poll_timeout()
            .map_or(deadline, |t| t.min(deadline));
        tokio::select! {
            () = self.socket.receive(&mut self.engine) => {}
            () = tokio::time::sleep_until(wake.into()) => {
                self.engine.handle_timeout(Instant::now());
            }
        }
    }

    async fn flush(&mut self, tally: &mut Tally) {
        loop {
            while let Some(t) = self.engine.poll_transmit() {
                self.socket.send(&t).await;
            }
            match self.engine.poll_event() {
                Some(event) => tally.on_event(event),
                None => return,
            }
        }
    }
}
