//! The userspace data plane, for kernels without ESP or IPIP: one TUN device per virtual
//! link, IPIP and ESP transport processing here, ESP carried in UDP (RFC 3948).
//!
//! The UDP socket (normally port 4500) is the caller's. This data plane reads it and
//! demultiplexes: datagrams starting with the 4-octet non-ESP marker are IKE and are handed
//! to the caller through the [`IkeDatagram`] channel (marker removed); everything else is
//! ESP. The caller keeps sending IKE on the same socket (with the marker in front).
//!
//! The IP-in-IP outer header (IPv4 or IPv6, after the link's endpoints) is built for
//! every packet and the SA is chosen on it, as the kernel does; on the wire its place is
//! taken by the UDP datagram's IP header, which the kernel writes. The socket's default
//! path-MTU mode (`IP_PMTUDISC_WANT`) sets DF on every IPv4 datagram that fits the path,
//! so DF is never cleared when the inner packet has it (a socket switched to
//! `IP_PMTUDISC_DONT` would break that); IPv6 has no DF and is never fragmented on the
//! path. With a NAT-T SA (`encap`) the peer's address may be rewritten on the way, so
//! only then is the datagram's source not required to be the SA's source endpoint.
//!
//! IPv6 tunnel endpoints need an IPv6 socket (normally `[::]:4500`); a dual-stack one
//! carries IPv4 endpoints too. Addresses are handled and reported in canonical form: an
//! IPv4 peer reached through a dual-stack socket is an IPv4 address, never IPv4-mapped.

pub mod batch;
mod deadlines;
mod deliver;
mod link_flags;
mod no_queue;
mod rx;
mod sad;
mod spd;
mod tx;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use tokio::net::UdpSocket;
use tokio::sync::{Notify, broadcast, mpsc};
use tokio::task::JoinHandle;

use crate::dataplane::{Dataplane, Error, Result};
use crate::link_group;
use crate::model::{
    DataplaneEvent, Direction, LinkSpec, PolicyId, PolicySpec, SaId, SaSpec, SaStats,
};
use sad::{Expiry, SaState, Tables};

/// An IKE message that arrived on the shared socket.
#[derive(Debug, Clone)]
pub struct IkeDatagram {
    pub from: SocketAddr,
    /// The local address it was sent to, when the socket reports it (IP_PKTINFO).
    pub to: Option<IpAddr>,
    /// The IKE message, without the non-ESP marker.
    pub data: Vec<u8>,
}

/// At most one ACQUIRE per reqid in this interval, like the kernel's larval state.
const ACQUIRE_HOLDOFF: Duration = Duration::from_secs(1);

struct Link {
    spec: LinkSpec,
    dev: Arc<tun_rs::AsyncDevice>,
    up: bool,
    task: JoinHandle<()>,
}

/// Which endpoint families the shared socket can carry.
#[derive(Clone, Copy)]
struct Families {
    v4: bool,
    v6: bool,
}

impl Families {
    fn of(socket: &UdpSocket) -> Result<Self> {
        Ok(match socket.local_addr()? {
            SocketAddr::V4(_) => Self {
                v4: true,
                v6: false,
            },
            SocketAddr::V6(_) => Self {
                v4: !socket2::SockRef::from(socket).only_v6()?,
                v6: true,
            },
        })
    }

    fn check(self, ip: IpAddr) -> Result<()> {
        if (ip.is_ipv4() && !self.v4) || (ip.is_ipv6() && !self.v6) {
            return Err(Error::Unsupported(format!(
                "endpoint {ip}: the ESP socket does not carry its address family"
            )));
        }
        Ok(())
    }
}

struct Shared {
    socket: Arc<UdpSocket>,
    families: Families,
    tables: RwLock<Tables>,
    /// Up links by (local, remote) endpoint, for delivering decrypted packets.
    delivery: RwLock<FxHashMap<(IpAddr, IpAddr), Arc<tun_rs::AsyncDevice>>>,
    events: broadcast::Sender<DataplaneEvent>,
    acquired: Mutex<HashMap<u32, Instant>>,
    /// Wakes the lifetimes task when an SA's deadline is the earliest.
    deadline_moved: Arc<Notify>,
}

impl Shared {
    fn emit(&self, event: DataplaneEvent) {
        tracing::debug!(?event, "data-plane event");
        // No subscriber is not an error: events are advisory.
        let _ = self.events.send(event);
    }

    /// Looks out for `sa`'s time limits (anew after an update).
    fn watch(&self, t: &mut Tables, sa: &SaState) {
        if let Some(at) = sa.next_deadline()
            && t.deadlines.push(at, sa.id)
        {
            self.deadline_moved.notify_one();
        }
    }

    /// Expires the SAs whose time limits fell due by `now`; the next deadline.
    fn expire_due(&self, now: Instant) -> Option<Instant> {
        let due = self.write_tables().deadlines.due(now);
        for id in due {
            let Some(sa) = self.read_tables().find(id).cloned() else {
                continue;
            };
            self.expire(&sa, sa.age());
            if !sa.is_dead() {
                self.watch(&mut self.write_tables(), &sa);
            }
        }
        let mut t = self.write_tables();
        t.compact_deadlines();
        t.deadlines.next()
    }

    /// Acts on a crossed limit: soft raises an event, hard removes the SA.
    fn expire(&self, sa: &SaState, expiry: Expiry) {
        match expiry {
            Expiry::None => {}
            Expiry::Soft => self.emit(DataplaneEvent::SoftExpire {
                sa: sa.id,
                reqid: sa.reqid,
            }),
            Expiry::Hard => {
                if sa.kill() {
                    self.write_tables().remove(sa.id);
                    self.emit(DataplaneEvent::HardExpire {
                        sa: sa.id,
                        reqid: sa.reqid,
                    });
                }
            }
        }
    }

    fn acquire(&self, src: IpAddr, dst: IpAddr, reqid: u32) {
        let now = Instant::now();
        let mut acquired = self.acquired.lock().unwrap_or_else(|e| e.into_inner());
        if acquired
            .get(&reqid)
            .is_some_and(|t| now.duration_since(*t) < ACQUIRE_HOLDOFF)
        {
            return;
        }
        acquired.insert(reqid, now);
        drop(acquired);
        self.emit(DataplaneEvent::Acquire { src, dst, reqid });
    }

    /// Where to send to `ip`: IPv4 peers are IPv4-mapped on an IPv6 socket.
    fn peer(&self, ip: IpAddr, port: u16) -> SocketAddr {
        match ip {
            IpAddr::V4(a) if self.families.v6 => SocketAddr::new(a.to_ipv6_mapped().into(), port),
            _ => SocketAddr::new(ip, port),
        }
    }

    fn read_tables(&self) -> std::sync::RwLockReadGuard<'_, Tables> {
        self.tables.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_tables(&self) -> std::sync::RwLockWriteGuard<'_, Tables> {
        self.tables.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// The userspace backend. Dropping it stops its tasks and removes its TUN devices.
pub struct UserspaceDataplane {
    shared: Arc<Shared>,
    links: tokio::sync::Mutex<HashMap<String, Link>>,
    flags: link_flags::LinkFlags,
    /// For the links' device group.
    rtnl: rtnetlink::Handle,
    tasks: Vec<JoinHandle<()>>,
}

impl UserspaceDataplane {
    /// Takes over reading `socket` (bound by the caller, normally to port 4500) and returns
    /// the channel on which IKE datagrams arriving there are handed up. Must be called
    /// inside a tokio runtime.
    pub fn new(socket: Arc<UdpSocket>) -> Result<(Self, mpsc::Receiver<IkeDatagram>)> {
        batch::prepare(&socket)?;
        let families = Families::of(&socket)?;
        let flags = link_flags::LinkFlags::open()?;
        let (events, _) = broadcast::channel(256);
        let shared = Arc::new(Shared {
            socket,
            families,
            tables: RwLock::new(Tables::default()),
            delivery: RwLock::new(FxHashMap::default()),
            events,
            acquired: Mutex::new(HashMap::new()),
            deadline_moved: Arc::default(),
        });
        let (ike_tx, ike_rx) = mpsc::channel(256);
        let (connection, rtnl, _) = rtnetlink::new_connection()?;
        let tasks = vec![
            tokio::spawn(rx::run(shared.clone(), ike_tx)),
            tokio::spawn(lifetimes(
                Arc::downgrade(&shared),
                shared.deadline_moved.clone(),
            )),
            tokio::spawn(connection),
        ];
        Ok((
            Self {
                shared,
                links: tokio::sync::Mutex::new(HashMap::new()),
                flags,
                rtnl,
                tasks,
            },
            ike_rx,
        ))
    }

    fn publish(&self, link: &Link) {
        let mut d = self
            .shared
            .delivery
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let key = (link.spec.local, link.spec.remote);
        if link.up {
            d.insert(key, link.dev.clone());
        } else {
            d.remove(&key);
        }
    }
}

impl Drop for UserspaceDataplane {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for link in self.links.get_mut().values() {
            link.task.abort();
        }
    }
}

/// Expires SAs as their time limits fall due.
async fn lifetimes(shared: std::sync::Weak<Shared>, moved: Arc<Notify>) {
    loop {
        let next = match shared.upgrade() {
            Some(shared) => shared.expire_due(Instant::now()),
            None => return,
        };
        // A deadline pushed since is not missed: its notification waits as a permit.
        let moved = moved.notified();
        match next {
            Some(at) => {
                let _ = tokio::time::timeout_at(at.into(), moved).await;
            }
            None => moved.await,
        }
    }
}

/// How long a new link waits for a device of the same name that is going away.
const NAME_RELEASE: Duration = Duration::from_secs(2);

/// [`build_tun`], waiting while a device of that name is still being torn down: the
/// kernel frees the name only once the last holder of the old device has closed it,
/// which a deleted link's task does as it ends.
async fn build_tun_when_free(spec: &LinkSpec) -> Result<tun_rs::AsyncDevice> {
    let deadline = tokio::time::Instant::now() + NAME_RELEASE;
    loop {
        match build_tun(spec) {
            Err(e) if e.errno() == Some(libc::EBUSY) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            built => return built,
        }
    }
}

fn build_tun(spec: &LinkSpec) -> Result<tun_rs::AsyncDevice> {
    // Offload lets the kernel hand over (and the transmit task split) 64 KiB TCP packets,
    // one read instead of dozens; every packet then carries a virtio-net header.
    let mut b = tun_rs::DeviceBuilder::new()
        .name(&spec.name)
        .mtu(spec.mtu)
        .offload(true)
        .enable(false);
    for p in &spec.addresses {
        b = match p.addr() {
            IpAddr::V4(a) => b.ipv4(a, p.prefix_len(), None),
            IpAddr::V6(a) => b.ipv6(a, p.prefix_len()),
        };
    }
    Ok(b.build_async()?)
}

impl Dataplane for UserspaceDataplane {
    fn outlives_process(&self) -> bool {
        false
    }

    async fn allocate_spi(&self, src: IpAddr, dst: IpAddr, _reqid: u32) -> Result<u32> {
        let mut t = self.shared.write_tables();
        for _ in 0..64 {
            let mut b = [0u8; 4];
            getrandom_fill(&mut b)?;
            // SPIs 1-255 are reserved by IANA (RFC 4303 §2.1).
            let spi = u32::from_be_bytes(b);
            if spi >= 256 && !t.inbound.contains_key(&spi) && !t.reserved.contains_key(&spi) {
                t.reserved.insert(spi, (src, dst));
                return Ok(spi);
            }
        }
        Err(Error::Exists("no free SPI found".into()))
    }

    async fn install_sa(&self, sa: &SaSpec) -> Result<()> {
        sa.validate()?;
        self.shared.families.check(sa.dst)?;
        let mut t = self.shared.write_tables();
        if t.find(sa.id()).is_some()
            || (sa.direction == Direction::In && t.inbound.contains_key(&sa.spi))
        {
            return Err(Error::Exists(format!("SA {:?}", sa.id())));
        }
        t.reserved.remove(&sa.spi);
        let state = Arc::new(SaState::new(sa));
        self.shared.watch(&mut t, &state);
        match sa.direction {
            Direction::In => {
                t.inbound.insert(sa.spi, state);
            }
            Direction::Out => t.insert_outbound(state),
        }
        Ok(())
    }

    async fn update_sa(&self, sa: &SaSpec) -> Result<()> {
        sa.validate()?;
        let existing = self.shared.read_tables().find(sa.id()).cloned();
        match existing {
            Some(state) => {
                state.reconfigure(sa);
                self.shared.watch(&mut self.shared.write_tables(), &state);
                Ok(())
            }
            None if self.shared.read_tables().reserved.contains_key(&sa.spi) => {
                self.install_sa(sa).await
            }
            None => Err(Error::NotFound(format!("SA {:?}", sa.id()))),
        }
    }

    async fn delete_sa(&self, id: SaId) -> Result<()> {
        let mut t = self.shared.write_tables();
        if t.reserved.remove(&id.spi).is_some() {
            return Ok(());
        }
        let sa = t
            .remove(id)
            .ok_or_else(|| Error::NotFound(format!("SA {id:?}")))?;
        sa.kill();
        Ok(())
    }

    async fn sa_stats(&self, id: SaId) -> Result<SaStats> {
        let t = self.shared.read_tables();
        t.find(id)
            .map(|s| s.stats())
            .ok_or_else(|| Error::NotFound(format!("SA {id:?}")))
    }

    async fn install_policy(&self, policy: &PolicySpec) -> Result<()> {
        policy.validate()?;
        let mut t = self.shared.write_tables();
        if !t.policies.insert(*policy) {
            return Err(Error::Exists(format!("policy {:?}", policy.id())));
        }
        Ok(())
    }

    async fn delete_policy(&self, id: PolicyId) -> Result<()> {
        let mut t = self.shared.write_tables();
        if !t.policies.remove(&id) {
            return Err(Error::NotFound(format!("policy {id:?}")));
        }
        Ok(())
    }

    async fn policies(&self) -> Result<Vec<PolicySpec>> {
        Ok(self.shared.read_tables().policies.all())
    }

    async fn create_link(&self, link: &LinkSpec) -> Result<()> {
        link.validate()?;
        self.shared.families.check(link.remote)?;
        let mut links = self.links.lock().await;
        if links.contains_key(&link.name) {
            return Err(Error::Exists(format!("link {}", link.name)));
        }
        let dev = Arc::new(build_tun_when_free(link).await?);
        crate::ipv6_off::unless_carried(link);
        // Neither is needed for the link to work: without the group it goes on its own at
        // shutdown, without noqueue each up builds a qdisc that holds nothing back.
        match dev.if_index() {
            Ok(index) => {
                let (grouped, unqueued) = tokio::join!(
                    link_group::join(&self.rtnl, index),
                    no_queue::attach(&self.rtnl, index)
                );
                if let Err(error) = grouped {
                    tracing::debug!(link = %link.name, %error, "not in the links' group");
                }
                if let Err(error) = unqueued {
                    tracing::debug!(link = %link.name, %error, "keeps the default qdisc");
                }
            }
            Err(error) => tracing::debug!(link = %link.name, %error, "no index"),
        }
        let task = tokio::spawn(tx::run(self.shared.clone(), dev.clone(), link.clone()));
        links.insert(
            link.name.clone(),
            Link {
                spec: link.clone(),
                dev,
                up: false,
                task,
            },
        );
        Ok(())
    }

    async fn set_link_up(&self, name: &str, up: bool) -> Result<()> {
        let mut links = self.links.lock().await;
        let link = links
            .get_mut(name)
            .ok_or_else(|| Error::NotFound(format!("link {name}")))?;
        self.flags.set_up(name, up)?;
        link.up = up;
        self.publish(link);
        Ok(())
    }

    async fn delete_link(&self, name: &str) -> Result<()> {
        let mut links = self.links.lock().await;
        let mut link = links
            .remove(name)
            .ok_or_else(|| Error::NotFound(format!("link {name}")))?;
        link.up = false;
        self.publish(&link);
        link.task.abort();
        // The task holds the device: waiting for it to end leaves no task behind and
        // mostly frees the name at once; `create_link` waits for what the kernel still
        // takes (see `build_tun_when_free`).
        let _ = link.task.await;
        Ok(())
    }

    async fn delete_links(&self) -> Result<()> {
        let mut links = self.links.lock().await;
        // The tasks end first, so that none reports its device gone; the devices stay
        // open in `links` until they are deleted, after which closing them is instant.
        for link in links.values_mut() {
            link.up = false;
            self.publish(link);
            link.task.abort();
        }
        for link in links.values_mut() {
            let _ = (&mut link.task).await;
        }
        let ours: HashSet<&str> = links.keys().map(String::as_str).collect();
        if let Err(error) = link_group::delete_ours(&self.rtnl, &ours).await {
            tracing::warn!(%error, "deleting the links");
        }
        links.clear();
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<DataplaneEvent> {
        self.shared.events.subscribe()
    }

    async fn flush_ours(&self) -> Result<()> {
        let mut t = self.shared.write_tables();
        t.policies.retain(|p| !p.is_ours());
        // Removed SAs are also marked dead, so tasks holding them stop using them.
        let keep = |s: &Arc<SaState>| {
            let ours = crate::model::OWNED_REQIDS.contains(&s.reqid);
            if ours {
                s.kill();
            }
            !ours
        };
        t.retain_sas(keep);
        t.reserved.clear();
        Ok(())
    }
}

fn getrandom_fill(buf: &mut [u8]) -> Result<()> {
    // SAFETY: getrandom writes at most buf.len() bytes into buf.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != buf.len() as isize {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}
