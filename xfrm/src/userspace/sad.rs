//! The userspace SAD and SPD: per-SA crypto state, counters and lifetimes, kept so that
//! the per-packet path takes only read locks and atomics.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustc_hash::FxHashMap as HashMap;
use smallvec::SmallVec;

use crate::esp::EspCipher;
use crate::model::{Direction, Limits, NAT_T_PORT, SaId, SaSpec, SaStats, Selector};
use crate::replay::ReplayWindow;

use super::deadlines::Deadlines;
use super::spd::Spd;

/// What crossing a limit means for the packet that crossed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    None,
    Soft,
    Hard,
}

/// An SA's soft or hard limits as the packet path reads them: without a lock, and with
/// `u64::MAX` (the kernel's XFRM_INF) for no limit. An update racing a packet may let it
/// see old and new limits mixed, which only moves the crossing by that packet.
struct AtomicLimits {
    time_ns: AtomicU64,
    bytes: AtomicU64,
    packets: AtomicU64,
}

const NO_LIMIT: u64 = u64::MAX;

impl AtomicLimits {
    /// No limit of any kind, until [`set`](Self::set).
    fn none() -> Self {
        Self {
            time_ns: AtomicU64::new(NO_LIMIT),
            bytes: AtomicU64::new(NO_LIMIT),
            packets: AtomicU64::new(NO_LIMIT),
        }
    }

    fn set(&self, limits: &Limits) {
        let time = limits.time.map_or(NO_LIMIT, |t| {
            u64::try_from(t.as_nanos()).unwrap_or(NO_LIMIT)
        });
        self.time_ns.store(time, Ordering::Relaxed);
        self.bytes
            .store(limits.bytes.unwrap_or(NO_LIMIT), Ordering::Relaxed);
        self.packets
            .store(limits.packets.unwrap_or(NO_LIMIT), Ordering::Relaxed);
    }

    fn traffic_over(&self, bytes: u64, packets: u64) -> bool {
        let over = |limit: &AtomicU64, count| {
            let limit = limit.load(Ordering::Relaxed);
            limit != NO_LIMIT && count >= limit
        };
        over(&self.bytes, bytes) || over(&self.packets, packets)
    }

    fn age_over(&self, age: Duration) -> bool {
        self.time().is_some_and(|limit| age >= limit)
    }

    fn time(&self) -> Option<Duration> {
        let limit = self.time_ns.load(Ordering::Relaxed);
        (limit != NO_LIMIT).then(|| Duration::from_nanos(limit))
    }
}

/// One installed SA.
pub struct SaState {
    pub id: SaId,
    pub reqid: u32,
    pub direction: Direction,
    pub selector: Selector,
    pub esn: bool,
    pub cipher: EspCipher,
    pub replay: Mutex<ReplayWindow>,
    /// Last sequence number sent (outbound).
    pub seq: AtomicU64,
    soft: AtomicLimits,
    hard: AtomicLimits,
    dst_port: AtomicU16,
    natt: AtomicBool,
    bytes: AtomicU64,
    packets: AtomicU64,
    pub replay_drops: AtomicU64,
    pub auth_failures: AtomicU64,
    installed_at: Instant,
    last_used: AtomicU64,
    soft_raised: AtomicBool,
    dead: AtomicBool,
}

impl SaState {
    pub fn new(spec: &SaSpec) -> Self {
        // Only inbound SAs check sequence numbers; an outbound one gets the smallest window.
        let window = match spec.direction {
            Direction::In => spec.replay.window,
            Direction::Out => 0,
        };
        let s = Self {
            id: spec.id(),
            reqid: spec.reqid,
            direction: spec.direction,
            selector: spec.selector,
            esn: spec.replay.esn,
            cipher: EspCipher::new(&spec.key, spec.replay.esn),
            replay: Mutex::new(ReplayWindow::new(window, spec.replay.esn)),
            seq: AtomicU64::new(0),
            // Set with the rest of what an update may change, by `reconfigure` below.
            soft: AtomicLimits::none(),
            hard: AtomicLimits::none(),
            dst_port: AtomicU16::new(NAT_T_PORT),
            natt: AtomicBool::new(false),
            bytes: AtomicU64::new(0),
            packets: AtomicU64::new(0),
            replay_drops: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
            installed_at: Instant::now(),
            last_used: AtomicU64::new(0),
            soft_raised: AtomicBool::new(false),
            dead: AtomicBool::new(false),
        };
        s.reconfigure(spec);
        s
    }

    /// Applies what an update may change: lifetimes and encapsulation.
    pub fn reconfigure(&self, spec: &SaSpec) {
        self.soft.set(&spec.lifetimes.soft);
        self.hard.set(&spec.lifetimes.hard);
        self.dst_port.store(
            spec.encap.map_or(NAT_T_PORT, |e| e.dst_port),
            Ordering::Relaxed,
        );
        self.natt.store(spec.encap.is_some(), Ordering::Relaxed);
    }

    /// UDP port ESP for this SA is sent to.
    pub fn dst_port(&self) -> u16 {
        self.dst_port.load(Ordering::Relaxed)
    }

    /// Whether the SA was set up for NAT traversal (the peer's address may be rewritten).
    pub fn natt(&self) -> bool {
        self.natt.load(Ordering::Relaxed)
    }

    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Relaxed)
    }

    /// Marks the SA unusable; true for the caller that killed it.
    pub fn kill(&self) -> bool {
        !self.dead.swap(true, Ordering::AcqRel)
    }

    /// Next outbound sequence number, or `None` once the space is exhausted: a sequence
    /// number never cycles (RFC 4303 §3.3.3).
    pub fn next_seq(&self) -> Option<u64> {
        let limit = if self.esn {
            u64::MAX
        } else {
            u64::from(u32::MAX)
        };
        let seq = self.seq.fetch_add(1, Ordering::Relaxed).checked_add(1)?;
        (seq <= limit).then_some(seq)
    }

    /// Counts one packet and reports which limit, if any, it crossed.
    pub fn account(&self, bytes: usize) -> Expiry {
        let b = self.bytes.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64;
        let p = self.packets.fetch_add(1, Ordering::Relaxed) + 1;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_used.store(now, Ordering::Relaxed);
        if self.hard.traffic_over(b, p) {
            Expiry::Hard
        } else if self.soft.traffic_over(b, p) {
            self.soft_once()
        } else {
            Expiry::None
        }
    }

    /// Checks the time limits.
    pub fn age(&self) -> Expiry {
        let age = self.installed_at.elapsed();
        if self.hard.age_over(age) {
            Expiry::Hard
        } else if self.soft.age_over(age) {
            self.soft_once()
        } else {
            Expiry::None
        }
    }

    /// When [`age`](Self::age) has news next: at the soft time limit until it is crossed,
    /// then at the hard one.
    pub fn next_deadline(&self) -> Option<Instant> {
        let soft = if self.soft_raised.load(Ordering::Relaxed) {
            None
        } else {
            self.soft.time()
        };
        let limit = match (soft, self.hard.time()) {
            (Some(soft), Some(hard)) => soft.min(hard),
            (soft, hard) => soft.or(hard)?,
        };
        self.installed_at.checked_add(limit)
    }

    fn soft_once(&self) -> Expiry {
        if self.soft_raised.swap(true, Ordering::Relaxed) {
            Expiry::None
        } else {
            Expiry::Soft
        }
    }

    pub fn stats(&self) -> SaStats {
        let last = self.last_used.load(Ordering::Relaxed);
        SaStats {
            bytes: self.bytes.load(Ordering::Relaxed),
            packets: self.packets.load(Ordering::Relaxed),
            replay_drops: self.replay_drops.load(Ordering::Relaxed),
            auth_failures: self.auth_failures.load(Ordering::Relaxed),
            // The wall-clock time of installation, from its age: one clock less per SA.
            installed: SystemTime::now().checked_sub(self.installed_at.elapsed()),
            last_used: (last != 0).then(|| UNIX_EPOCH + std::time::Duration::from_secs(last)),
        }
    }
}

/// SAs by SPI (inbound) and by endpoints (outbound), SPIs reserved by `allocate_spi`,
/// and the policies. Every lookup on the packet path is by key: a node with thousands of
/// neighbors scans only the one or two SAs of a rekey.
#[derive(Default)]
pub struct Tables {
    pub inbound: HashMap<u32, Arc<SaState>>,
    /// Oldest first within each pair of endpoints; mostly one, which stays in the entry.
    outbound: HashMap<(IpAddr, IpAddr), SmallVec<[Arc<SaState>; 1]>>,
    pub reserved: HashMap<u32, (IpAddr, IpAddr)>,
    pub policies: Spd,
    pub deadlines: Deadlines,
}

impl Tables {
    /// The newest live outbound SA for these endpoints and reqid whose selector takes a
    /// packet of protocol `proto` between them, as the kernel matches an SA's selector
    /// against the flow (after a rekey the new SA takes over while the old one drains).
    pub fn outbound_sa(
        &self,
        src: IpAddr,
        dst: IpAddr,
        reqid: u32,
        proto: u8,
    ) -> Option<&Arc<SaState>> {
        self.outbound
            .get(&(src, dst))?
            .iter()
            .rev()
            .find(|s| s.reqid == reqid && s.selector.matches(src, dst, proto, None) && !s.is_dead())
    }

    pub fn insert_outbound(&mut self, sa: Arc<SaState>) {
        self.outbound
            .entry((sa.id.src, sa.id.dst))
            .or_default()
            .push(sa);
    }

    /// Drops the deadlines of SAs gone, once they may outnumber the live ones.
    pub fn compact_deadlines(&mut self) {
        // Endpoint pairs for outbound SAs: no count to keep up, and short only during
        // rekeys, which then compacts a little early.
        let live = self.inbound.len() + self.outbound.len();
        let mut deadlines = std::mem::take(&mut self.deadlines);
        deadlines.compact(live, |id| self.find(*id).is_some());
        self.deadlines = deadlines;
    }

    pub fn find(&self, id: SaId) -> Option<&Arc<SaState>> {
        self.inbound
            .get(&id.spi)
            .filter(|s| s.id == id)
            .or_else(|| {
                self.outbound
                    .get(&(id.src, id.dst))?
                    .iter()
                    .find(|s| s.id == id)
            })
    }

    pub fn remove(&mut self, id: SaId) -> Option<Arc<SaState>> {
        if self.inbound.get(&id.spi).is_some_and(|s| s.id == id) {
            return self.inbound.remove(&id.spi);
        }
        let key = (id.src, id.dst);
        let sas = self.outbound.get_mut(&key)?;
        let i = sas.iter().position(|s| s.id == id)?;
        let sa = sas.remove(i);
        if sas.is_empty() {
            self.outbound.remove(&key);
        }
        Some(sa)
    }

    /// Keeps the SAs, inbound and outbound, for which `keep` is true.
    pub fn retain_sas(&mut self, mut keep: impl FnMut(&Arc<SaState>) -> bool) {
        self.inbound.retain(|_, s| keep(s));
        for sas in self.outbound.values_mut() {
            sas.retain(|s| keep(s));
        }
        self.outbound.retain(|_, sas| !sas.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        AeadAlg, DEFAULT_PRIORITY, IPPROTO_IPIP, IPPROTO_IPV6, KeyMaterial, Lifetimes,
        OWNED_REQIDS, PolicySpec, Replay, Template,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn spec(lifetimes: Lifetimes) -> SaSpec {
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        SaSpec {
            spi: 0x100,
            direction: Direction::Out,
            src: a,
            dst: b,
            selector: Selector::endpoints(a, b),
            key: KeyMaterial::from_keymat(AeadAlg::AesGcm128, &[7; 20]).unwrap(),
            replay: Replay::default(),
            lifetimes,
            encap: None,
            reqid: *OWNED_REQIDS.start(),
            mark: None,
        }
    }

    /// Packet and byte limits are crossed once each, soft before hard; an update takes
    /// them away; a zero time limit is crossed at once, and no limit never.
    #[test]
    fn limits_are_crossed_once_and_follow_updates() {
        let packets = |soft, hard| Lifetimes {
            soft: Limits {
                packets: Some(soft),
                bytes: Some(1 << 40),
                ..Limits::default()
            },
            hard: Limits {
                packets: Some(hard),
                ..Limits::default()
            },
        };
        let sa = SaState::new(&spec(packets(2, 4)));
        let seen: Vec<Expiry> = (0..4).map(|_| sa.account(100)).collect();
        assert_eq!(
            seen,
            [Expiry::None, Expiry::Soft, Expiry::None, Expiry::Hard]
        );
        assert_eq!(sa.age(), Expiry::None);
        sa.reconfigure(&spec(Lifetimes::default()));
        assert_eq!(sa.account(100), Expiry::None);

        let bytes = Lifetimes {
            hard: Limits {
                bytes: Some(250),
                ..Limits::default()
            },
            ..Lifetimes::default()
        };
        let sa = SaState::new(&spec(bytes));
        assert_eq!(sa.account(200), Expiry::None);
        assert_eq!(sa.account(100), Expiry::Hard);

        let at_once = Lifetimes {
            soft: Limits {
                time: Some(Duration::ZERO),
                ..Limits::default()
            },
            hard: Limits {
                time: Some(Duration::from_secs(3600)),
                ..Limits::default()
            },
        };
        let sa = SaState::new(&spec(at_once));
        assert_eq!(sa.age(), Expiry::Soft);
        assert_eq!(sa.age(), Expiry::None, "a soft expiry is raised once");
        let stats = sa.stats();
        let installed = stats.installed.unwrap();
        assert!(
            installed <= SystemTime::now()
                && installed.elapsed().unwrap() < Duration::from_secs(60)
        );
    }

    /// The next deadline is the soft time limit until the SA crosses it (by age or by
    /// traffic), then the hard one; none without time limits.
    #[test]
    fn the_next_deadline_is_the_soft_time_limit_until_crossed_then_the_hard_one() {
        let s = Duration::from_secs;
        let times = |soft: Option<u64>, hard: Option<u64>| Lifetimes {
            soft: Limits {
                time: soft.map(s),
                packets: Some(1),
                ..Limits::default()
            },
            hard: Limits {
                time: hard.map(s),
                ..Limits::default()
            },
        };
        let sa = SaState::new(&spec(times(Some(10), Some(20))));
        assert_eq!(sa.next_deadline(), Some(sa.installed_at + s(10)));
        assert_eq!(sa.account(100), Expiry::Soft);
        assert_eq!(sa.next_deadline(), Some(sa.installed_at + s(20)));

        let sa = SaState::new(&spec(times(Some(30), Some(20))));
        assert_eq!(sa.next_deadline(), Some(sa.installed_at + s(20)));
        sa.reconfigure(&spec(times(None, Some(5))));
        assert_eq!(sa.next_deadline(), Some(sa.installed_at + s(5)));
        sa.reconfigure(&spec(times(Some(3), None)));
        assert_eq!(sa.next_deadline(), Some(sa.installed_at + s(3)));
        sa.reconfigure(&spec(times(None, None)));
        assert_eq!(sa.next_deadline(), None);
    }

    /// One SA selecting every protocol from `a` to `b`, and an outbound policy for IPIP
    /// only: an IPv4 inner packet finds both, an IPv6 one (protocol 41) finds the SA but no
    /// policy, so it is refused; traffic of another reqid or towards another endpoint finds
    /// nothing.
    #[test]
    fn an_any_protocol_sa_serves_only_the_protocols_with_policies() {
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        let reqid = *OWNED_REQIDS.start();
        let spec = spec(Lifetimes::default());
        spec.validate().unwrap();
        let mut t = Tables::default();
        t.insert_outbound(Arc::new(SaState::new(&spec)));
        assert!(t.policies.insert(PolicySpec {
            direction: Direction::Out,
            selector: Selector::tunnel(a, b, IPPROTO_IPIP),
            template: Template {
                src: a,
                dst: b,
                reqid,
            },
            priority: DEFAULT_PRIORITY,
            mark: None,
        }));
        for proto in [IPPROTO_IPIP, IPPROTO_IPV6] {
            assert!(t.outbound_sa(a, b, reqid, proto).is_some(), "{proto}");
        }
        assert!(
            t.policies
                .lookup(Direction::Out, a, b, IPPROTO_IPIP)
                .is_some()
        );
        assert!(
            t.policies
                .lookup(Direction::Out, a, b, IPPROTO_IPV6)
                .is_none()
        );
        assert!(
            t.policies
                .lookup(Direction::In, b, a, IPPROTO_IPIP)
                .is_none()
        );
        assert!(t.outbound_sa(a, b, reqid + 1, IPPROTO_IPIP).is_none());
        assert!(
            t.outbound_sa(a, ip("192.0.2.3"), reqid, IPPROTO_IPIP)
                .is_none()
        );
    }
}
