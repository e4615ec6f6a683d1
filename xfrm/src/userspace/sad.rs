//! The userspace SAD and SPD: per-SA crypto state, counters and lifetimes, kept so that
//! the per-packet path takes only read locks and atomics.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rustc_hash::FxHashMap as HashMap;

use crate::esp::EspCipher;
use crate::model::{Direction, Lifetimes, NAT_T_PORT, SaId, SaSpec, SaStats, Selector};
use crate::replay::ReplayWindow;

use super::spd::Spd;

/// What crossing a limit means for the packet that crossed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    None,
    Soft,
    Hard,
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
    lifetimes: Mutex<Lifetimes>,
    dst_port: AtomicU64,
    natt: AtomicBool,
    bytes: AtomicU64,
    packets: AtomicU64,
    pub replay_drops: AtomicU64,
    pub auth_failures: AtomicU64,
    installed: SystemTime,
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
            lifetimes: Mutex::new(spec.lifetimes),
            dst_port: AtomicU64::new(u64::from(NAT_T_PORT)),
            natt: AtomicBool::new(false),
            bytes: AtomicU64::new(0),
            packets: AtomicU64::new(0),
            replay_drops: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
            installed: SystemTime::now(),
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
        *self.lifetimes.lock().unwrap_or_else(|e| e.into_inner()) = spec.lifetimes;
        self.dst_port.store(
            u64::from(spec.encap.map_or(NAT_T_PORT, |e| e.dst_port)),
            Ordering::Relaxed,
        );
        self.natt.store(spec.encap.is_some(), Ordering::Relaxed);
    }

    /// UDP port ESP for this SA is sent to.
    pub fn dst_port(&self) -> u16 {
        self.dst_port.load(Ordering::Relaxed) as u16
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
        let lifetimes = *self.lifetimes.lock().unwrap_or_else(|e| e.into_inner());
        let over = |l: &crate::model::Limits| {
            l.bytes.is_some_and(|m| b >= m) || l.packets.is_some_and(|m| p >= m)
        };
        if over(&lifetimes.hard) {
            Expiry::Hard
        } else if over(&lifetimes.soft) {
            self.soft_once()
        } else {
            Expiry::None
        }
    }

    /// Checks the time limits.
    pub fn age(&self) -> Expiry {
        let lifetimes = *self.lifetimes.lock().unwrap_or_else(|e| e.into_inner());
        let age = self.installed_at.elapsed();
        if lifetimes.hard.time.is_some_and(|t| age >= t) {
            Expiry::Hard
        } else if lifetimes.soft.time.is_some_and(|t| age >= t) {
            self.soft_once()
        } else {
            Expiry::None
        }
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
            installed: Some(self.installed),
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
    /// Oldest first within each pair of endpoints.
    outbound: HashMap<(IpAddr, IpAddr), Vec<Arc<SaState>>>,
    pub reserved: HashMap<u32, (IpAddr, IpAddr)>,
    pub policies: Spd,
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

    pub fn all_sas(&self) -> impl Iterator<Item = &Arc<SaState>> {
        self.inbound
            .values()
            .chain(self.outbound.values().flatten())
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
            sas.retain(&mut keep);
        }
        self.outbound.retain(|_, sas| !sas.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        AeadAlg, DEFAULT_PRIORITY, IPPROTO_IPIP, IPPROTO_IPV6, KeyMaterial, OWNED_REQIDS,
        PolicySpec, Replay, Template,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// One SA selecting every protocol from `a` to `b`, and an outbound policy for IPIP
    /// only: an IPv4 inner packet finds both, an IPv6 one (protocol 41) finds the SA but no
    /// policy, so it is refused; traffic of another reqid or towards another endpoint finds
    /// nothing.
    #[test]
    fn an_any_protocol_sa_serves_only_the_protocols_with_policies() {
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        let reqid = *OWNED_REQIDS.start();
        let spec = SaSpec {
            spi: 0x100,
            direction: Direction::Out,
            src: a,
            dst: b,
            selector: Selector::endpoints(a, b),
            key: KeyMaterial::from_keymat(AeadAlg::AesGcm128, &[7; 20]).unwrap(),
            replay: Replay::default(),
            lifetimes: Lifetimes::default(),
            encap: None,
            reqid,
            mark: None,
        };
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
