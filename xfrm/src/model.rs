//! The data-plane model shared by every backend: selectors, SAs, policies, virtual links,
//! counters and events. It knows nothing of IKE; the daemon translates into it.

use std::fmt;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::time::{Duration, SystemTime};

use zeroize::Zeroizing;

use crate::Error;

/// Request ids the daemon owns. Every SA and policy template it installs carries one, so
/// crash cleanup (`flush_ours`) can remove exactly its own kernel objects.
pub const OWNED_REQIDS: RangeInclusive<u32> = 0x3884_0000..=0x3884_ffff;
/// Policy priorities the daemon owns (lower values win in the kernel). A policy is ours
/// only when both its priority and its template's reqid are in the owned ranges.
pub const OWNED_PRIORITIES: RangeInclusive<u32> = 0x3884_0000..=0x3884_00ff;
/// The priority the daemon uses unless it has a reason to order its own policies.
pub const DEFAULT_PRIORITY: u32 = 0x3884_0080;
/// IP protocol number of IPv4-in-IP (the IIPtran outer header, IPv4 or IPv6, for IPv4
/// inner packets).
pub const IPPROTO_IPIP: u8 = 4;
/// IP protocol number of IPv6-in-IP (the outer header for IPv6 inner packets).
pub const IPPROTO_IPV6: u8 = 41;
/// The IKE NAT-T port; ESP in UDP (RFC 3948) is sent to it unless an SA says otherwise.
pub const NAT_T_PORT: u16 = 4500;
/// The default anti-replay window in packets (RFC 4303 §3.4.3 asks for at least 32; the
/// data planes use 1024 to tolerate reordering at high rates).
pub const DEFAULT_REPLAY_WINDOW: u32 = 1024;
/// The smallest inbound window accepted (RFC 4303 §3.4.3: at least 32 packets).
pub const MIN_REPLAY_WINDOW: u32 = 32;

/// An address prefix, e.g. `192.0.2.1/32`. Bits past the prefix length are ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpPrefix {
    addr: IpAddr,
    len: u8,
}

impl IpPrefix {
    /// A prefix; fails when `len` exceeds the address family's width.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, Error> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(Error::Invalid(format!("prefix length {len} for {addr}")));
        }
        Ok(Self { addr, len })
    }

    /// The single-host prefix of `addr`.
    pub fn host(addr: IpAddr) -> Self {
        let len = if addr.is_ipv4() { 32 } else { 128 };
        Self { addr, len }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// True for the zero-length prefix, which matches every address of its family.
    pub fn is_any(&self) -> bool {
        self.len == 0
    }

    /// Whether `ip` lies inside the prefix (never across address families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(p), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(p) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(p), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(p) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// What an SA or policy applies to. `proto`/ports of `None` match anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Selector {
    pub src: IpPrefix,
    pub dst: IpPrefix,
    pub proto: Option<u8>,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
}

impl Selector {
    /// The IIPtran selector: exactly IP-in-IP (`proto`) from `src` to `dst`.
    pub fn tunnel(src: IpAddr, dst: IpAddr, proto: u8) -> Self {
        Self {
            src: IpPrefix::host(src),
            dst: IpPrefix::host(dst),
            proto: Some(proto),
            src_port: None,
            dst_port: None,
        }
    }

    /// Every protocol from `src` to `dst`: the selector of an SA that carries several
    /// tunnel protocols (IPv4 and IPv6 inner packets), as strongSwan installs a
    /// transport-mode SA negotiated with several traffic selectors. The policies, one per
    /// protocol, still decide what is steered into the SA.
    pub fn endpoints(src: IpAddr, dst: IpAddr) -> Self {
        Self {
            proto: None,
            ..Self::tunnel(src, dst, IPPROTO_IPIP)
        }
    }

    /// Whether a packet with these header fields falls under the selector.
    pub fn matches(&self, src: IpAddr, dst: IpAddr, proto: u8, ports: Option<(u16, u16)>) -> bool {
        let port_ok = |want: Option<u16>, have: Option<u16>| match want {
            None => true,
            Some(w) => have == Some(w),
        };
        self.src.contains(src)
            && self.dst.contains(dst)
            && self.proto.is_none_or(|p| p == proto)
            && port_ok(self.src_port, ports.map(|p| p.0))
            && port_ok(self.dst_port, ports.map(|p| p.1))
    }
}

/// Traffic direction relative to this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    In,
    Out,
}

/// The ESP AEAD transforms the data planes implement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AeadAlg {
    /// ChaCha20-Poly1305 for ESP (RFC 7634), 256-bit key.
    ChaCha20Poly1305,
    /// AES-GCM with a 16-octet ICV (RFC 4106), 128-bit key.
    AesGcm128,
    /// AES-GCM with a 16-octet ICV (RFC 4106), 256-bit key.
    AesGcm256,
}

impl AeadAlg {
    /// Cipher key length in octets, without the 4-octet salt.
    pub fn key_len(self) -> usize {
        match self {
            Self::ChaCha20Poly1305 | Self::AesGcm256 => 32,
            Self::AesGcm128 => 16,
        }
    }
}

/// Octets of salt at the end of the keying material (RFC 4106 §8.1, RFC 7634 §2).
pub const SALT_LEN: usize = 4;
/// ICV length of every transform here.
pub const ICV_LEN: usize = 16;

/// AEAD keying material: the cipher key and the salt, wiped on drop, never printed.
#[derive(Clone)]
pub struct KeyMaterial {
    alg: AeadAlg,
    key: Zeroizing<Vec<u8>>,
    salt: Zeroizing<[u8; SALT_LEN]>,
}

impl KeyMaterial {
    /// Splits IKE's KEYMAT for one direction (`key || salt`) as RFC 4106 and 7634 lay it out.
    pub fn from_keymat(alg: AeadAlg, keymat: &[u8]) -> Result<Self, Error> {
        if keymat.len() != alg.key_len() + SALT_LEN {
            return Err(Error::Invalid(format!(
                "{alg:?} needs {} octets of keying material, got {}",
                alg.key_len() + SALT_LEN,
                keymat.len()
            )));
        }
        let (key, salt) = keymat.split_at(alg.key_len());
        let mut s = Zeroizing::new([0u8; SALT_LEN]);
        s.copy_from_slice(salt);
        Ok(Self {
            alg,
            key: Zeroizing::new(key.to_vec()),
            salt: s,
        })
    }

    pub fn alg(&self) -> AeadAlg {
        self.alg
    }

    pub fn key(&self) -> &[u8] {
        &self.key
    }

    pub fn salt(&self) -> &[u8; SALT_LEN] {
        &self.salt
    }
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// Limits after which an SA expires. `None` means no limit of that kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Since installation.
    pub time: Option<Duration>,
    pub bytes: Option<u64>,
    pub packets: Option<u64>,
}

/// Soft limits raise `SoftExpire` (time to rekey); hard limits delete the SA.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lifetimes {
    pub soft: Limits,
    pub hard: Limits,
}

/// Anti-replay configuration of an SA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replay {
    /// Window size in packets. Inbound SAs need at least [`MIN_REPLAY_WINDOW`]; outbound
    /// SAs may leave it 0. Above 4096 the kernel refuses the SA.
    pub window: u32,
    /// 64-bit extended sequence numbers (RFC 4303 §2.2.1).
    pub esn: bool,
}

impl Default for Replay {
    fn default() -> Self {
        Self {
            window: DEFAULT_REPLAY_WINDOW,
            esn: false,
        }
    }
}

/// ESP-in-UDP encapsulation (RFC 3948) for NAT traversal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpEncap {
    pub src_port: u16,
    pub dst_port: u16,
}

/// A firewall mark (kernel `XFRMA_MARK`) to scope SAs and policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mark {
    pub value: u32,
    pub mask: u32,
}

/// Identifies one SA: ESP, its endpoints and SPI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SaId {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub spi: u32,
}

/// One transport-mode ESP SA.
#[derive(Clone, Debug)]
pub struct SaSpec {
    pub spi: u32,
    pub direction: Direction,
    /// Tunnel endpoints: the outer header's source and destination.
    pub src: IpAddr,
    pub dst: IpAddr,
    pub selector: Selector,
    pub key: KeyMaterial,
    pub replay: Replay,
    pub lifetimes: Lifetimes,
    pub encap: Option<UdpEncap>,
    /// Must lie in [`OWNED_REQIDS`].
    pub reqid: u32,
    pub mark: Option<Mark>,
}

impl SaSpec {
    pub fn id(&self) -> SaId {
        SaId {
            src: self.src,
            dst: self.dst,
            spi: self.spi,
        }
    }

    /// Rejects what no backend may install: a zero SPI, a foreign reqid, endpoints of two
    /// address families, or a selector that is not exactly this SA's endpoints (/32 for
    /// IPv4, /128 for IPv6) with protocol 4, 41 or any (an SA carrying both).
    pub fn validate(&self) -> Result<(), Error> {
        if self.spi == 0 {
            return Err(Error::Invalid("SPI 0 is reserved".into()));
        }
        same_family(self.src, self.dst)?;
        if !OWNED_REQIDS.contains(&self.reqid) {
            return Err(Error::Invalid(format!(
                "reqid {:#x} is outside the owned range",
                self.reqid
            )));
        }
        if self.selector.src != IpPrefix::host(self.src)
            || self.selector.dst != IpPrefix::host(self.dst)
        {
            return Err(Error::Invalid(format!(
                "selector {} -> {} does not name the SA's endpoints {} -> {}",
                self.selector.src, self.selector.dst, self.src, self.dst
            )));
        }
        if !matches!(
            self.selector.proto,
            None | Some(IPPROTO_IPIP | IPPROTO_IPV6)
        ) {
            return Err(Error::Invalid(
                "an IIPtran SA selects protocol 4, 41 or both (any)".into(),
            ));
        }
        // Every inbound SA is replay-protected; there is no way to turn it off.
        if self.direction == Direction::In && self.replay.window < MIN_REPLAY_WINDOW {
            return Err(Error::Invalid(format!(
                "inbound replay window {} below {MIN_REPLAY_WINDOW}",
                self.replay.window
            )));
        }
        Ok(())
    }
}

/// Identifies one policy: direction, selector and mark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PolicyId {
    pub direction: Direction,
    pub selector: Selector,
    pub mark: Option<Mark>,
}

/// The ESP transport-mode template of a policy. The level is always "required": traffic
/// matching the policy without a matching SA is dropped, never sent or accepted in clear.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Template {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub reqid: u32,
}

/// One security policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicySpec {
    pub direction: Direction,
    pub selector: Selector,
    pub template: Template,
    /// Lower wins. Must lie in [`OWNED_PRIORITIES`].
    pub priority: u32,
    pub mark: Option<Mark>,
}

impl PolicySpec {
    pub fn id(&self) -> PolicyId {
        PolicyId {
            direction: self.direction,
            selector: self.selector,
            mark: self.mark,
        }
    }

    /// Whether the policy carries the daemon's ownership tags.
    pub fn is_ours(&self) -> bool {
        OWNED_PRIORITIES.contains(&self.priority) && OWNED_REQIDS.contains(&self.template.reqid)
    }

    pub fn validate(&self) -> Result<(), Error> {
        if !self.is_ours() {
            return Err(Error::Invalid(format!(
                "policy priority {:#x} / reqid {:#x} outside the owned ranges",
                self.priority, self.template.reqid
            )));
        }
        same_family(self.template.src, self.template.dst)
    }
}

/// Fails unless both tunnel endpoints are of one address family.
fn same_family(a: IpAddr, b: IpAddr) -> Result<(), Error> {
    if a.is_ipv4() != b.is_ipv4() {
        return Err(Error::Invalid(format!(
            "tunnel endpoints {a} and {b} are of different address families"
        )));
    }
    Ok(())
}

/// The inner (VN) packet families a virtual link carries. Each travels as a tunnel
/// protocol of its own: IPv4 inner packets as protocol 4 ([`IPPROTO_IPIP`]), IPv6 inner
/// packets as protocol 41 ([`IPPROTO_IPV6`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InnerFamilies {
    pub ipv4: bool,
    pub ipv6: bool,
}

impl InnerFamilies {
    pub const IPV4: Self = Self {
        ipv4: true,
        ipv6: false,
    };
    pub const IPV6: Self = Self {
        ipv4: false,
        ipv6: true,
    };
    pub const BOTH: Self = Self {
        ipv4: true,
        ipv6: true,
    };

    /// The families whose tunnel protocols are among `protocols` (others are ignored).
    pub fn of_protocols(protocols: impl IntoIterator<Item = u8>) -> Self {
        protocols.into_iter().fold(
            Self {
                ipv4: false,
                ipv6: false,
            },
            |f, p| Self {
                ipv4: f.ipv4 || p == IPPROTO_IPIP,
                ipv6: f.ipv6 || p == IPPROTO_IPV6,
            },
        )
    }

    /// The tunnel protocols of these families, IPv4's first.
    pub fn protocols(self) -> Vec<u8> {
        [(self.ipv4, IPPROTO_IPIP), (self.ipv6, IPPROTO_IPV6)]
            .into_iter()
            .filter_map(|(carried, p)| carried.then_some(p))
            .collect()
    }

    /// Whether packets of `addr`'s family are carried.
    pub fn carries(self, addr: IpAddr) -> bool {
        if addr.is_ipv4() { self.ipv4 } else { self.ipv6 }
    }
}

/// One IIPtran virtual link: an IP-in-IP interface towards one neighbor, carrying the
/// inner families it is given and no other. The kernel makes it an `ipip` link (IPv4
/// endpoints, IPv4 inner packets), a `sit` link (IPv4 endpoints, IPv6 inner packets, in
/// mode `any` when IPv4 ones too) or an `ip6tnl` link (IPv6 endpoints; mode `any` for
/// both families).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkSpec {
    pub name: String,
    /// Tunnel endpoints, both IPv4 or both IPv6.
    pub local: IpAddr,
    pub remote: IpAddr,
    /// Inner (VN) addresses of this end, of the families in `inner`.
    pub addresses: Vec<IpPrefix>,
    pub inner: InnerFamilies,
    pub mtu: u16,
}

impl LinkSpec {
    pub fn validate(&self) -> Result<(), Error> {
        // IFNAMSIZ is 16 including the terminating NUL.
        if self.name.is_empty() || self.name.len() > 15 || self.name.contains(['/', ' ']) {
            return Err(Error::Invalid(format!(
                "bad interface name {:?}",
                self.name
            )));
        }
        if self.mtu < 68 {
            return Err(Error::Invalid(format!(
                "MTU {} below the IPv4 minimum",
                self.mtu
            )));
        }
        if !self.inner.ipv4 && !self.inner.ipv6 {
            return Err(Error::Invalid(format!(
                "link {} carries no inner family",
                self.name
            )));
        }
        if let Some(p) = self
            .addresses
            .iter()
            .find(|p| !self.inner.carries(p.addr()))
        {
            return Err(Error::Invalid(format!(
                "link {} has address {p} of a family it does not carry",
                self.name
            )));
        }
        if self.mtu < 1280 && self.inner.ipv6 {
            return Err(Error::Invalid(format!(
                "MTU {} below the IPv6 minimum for IPv6 inner packets",
                self.mtu
            )));
        }
        same_family(self.local, self.remote)
    }
}

/// Counters and times of one SA.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SaStats {
    /// Payload bytes and packets processed (after decryption for inbound SAs).
    pub bytes: u64,
    pub packets: u64,
    pub replay_drops: u64,
    pub auth_failures: u64,
    pub installed: Option<SystemTime>,
    pub last_used: Option<SystemTime>,
}

/// What the data plane tells the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataplaneEvent {
    /// A soft limit was reached: rekey.
    SoftExpire { sa: SaId, reqid: u32 },
    /// A hard limit was reached: the SA is gone.
    HardExpire { sa: SaId, reqid: u32 },
    /// Outbound traffic matched a policy with no SA: negotiate one.
    Acquire {
        src: IpAddr,
        dst: IpAddr,
        reqid: u32,
    },
    /// A virtual link went down (deleted or set down outside the daemon's control).
    LinkDown { name: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn prefix_contains_respects_length_and_family() {
        let p = IpPrefix::new(v4("10.1.2.0"), 24).unwrap();
        assert!(p.contains(v4("10.1.2.255")));
        assert!(!p.contains(v4("10.1.3.0")));
        assert!(!p.contains(v4("::1")));
        assert!(
            IpPrefix::new(v4("0.0.0.0"), 0)
                .unwrap()
                .contains(v4("203.0.113.9"))
        );
        assert!(IpPrefix::new(v4("10.0.0.0"), 33).is_err());
        let p6 = IpPrefix::new(v4("2001:db8::"), 32).unwrap();
        assert!(p6.contains(v4("2001:db8:ffff::1")));
        assert!(!p6.contains(v4("2001:db9::1")));
    }

    #[test]
    fn tunnel_selector_matches_only_its_endpoints_and_protocol() {
        let s = Selector::tunnel(v4("192.0.2.1"), v4("192.0.2.2"), IPPROTO_IPIP);
        assert!(s.matches(v4("192.0.2.1"), v4("192.0.2.2"), 4, None));
        assert!(!s.matches(v4("192.0.2.2"), v4("192.0.2.1"), 4, None));
        assert!(!s.matches(v4("192.0.2.1"), v4("192.0.2.2"), 41, None));
        assert!(!s.matches(v4("192.0.2.1"), v4("192.0.2.3"), 4, None));
        let ported = Selector {
            dst_port: Some(4500),
            ..s
        };
        assert!(ported.matches(v4("192.0.2.1"), v4("192.0.2.2"), 4, Some((1, 4500))));
        assert!(!ported.matches(v4("192.0.2.1"), v4("192.0.2.2"), 4, Some((1, 500))));
        assert!(!ported.matches(v4("192.0.2.1"), v4("192.0.2.2"), 4, None));
    }

    #[test]
    fn keymat_splits_key_and_salt_and_hides_them() {
        let km: Vec<u8> = (0..36).collect();
        let k = KeyMaterial::from_keymat(AeadAlg::ChaCha20Poly1305, &km).unwrap();
        assert_eq!(k.key(), &km[..32]);
        assert_eq!(k.salt(), &[32, 33, 34, 35]);
        assert!(!format!("{k:?}").contains("32"));
        assert!(KeyMaterial::from_keymat(AeadAlg::AesGcm128, &km).is_err());
    }

    /// A valid SA `a -> b` selecting protocol `proto`.
    fn sa_between(direction: Direction, a: IpAddr, b: IpAddr, proto: u8) -> SaSpec {
        SaSpec {
            spi: 0x100,
            direction,
            src: a,
            dst: b,
            selector: Selector::tunnel(a, b, proto),
            key: KeyMaterial::from_keymat(AeadAlg::AesGcm128, &[7; 20]).unwrap(),
            replay: Replay::default(),
            lifetimes: Lifetimes::default(),
            encap: None,
            reqid: *OWNED_REQIDS.start(),
            mark: None,
        }
    }

    #[test]
    fn sa_validation_rejects_foreign_or_wildcard_specs() {
        let a = v4("192.0.2.1");
        let b = v4("192.0.2.2");
        let sa = sa_between(Direction::Out, a, b, IPPROTO_IPIP);
        sa.validate().unwrap();
        assert!(
            SaSpec {
                spi: 0,
                ..sa.clone()
            }
            .validate()
            .is_err()
        );
        assert!(
            SaSpec {
                reqid: 1,
                ..sa.clone()
            }
            .validate()
            .is_err()
        );
        let wide = Selector {
            dst: IpPrefix::new(b, 24).unwrap(),
            ..sa.selector
        };
        assert!(
            SaSpec {
                selector: wide,
                ..sa.clone()
            }
            .validate()
            .is_err()
        );
        let no_replay = SaSpec {
            direction: Direction::In,
            replay: Replay {
                window: 0,
                esn: false,
            },
            ..sa.clone()
        };
        assert!(no_replay.validate().is_err());
        let wide_any = Selector {
            dst: IpPrefix::new(b, 24).unwrap(),
            ..Selector::endpoints(a, b)
        };
        assert!(
            SaSpec {
                selector: wide_any,
                ..sa
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn an_sa_carrying_both_families_selects_every_protocol_between_its_endpoints() {
        let (a, b) = (v4("192.0.2.1"), v4("192.0.2.2"));
        let sa = SaSpec {
            selector: Selector::endpoints(a, b),
            ..sa_between(Direction::In, a, b, IPPROTO_IPIP)
        };
        sa.validate().unwrap();
        for proto in [IPPROTO_IPIP, IPPROTO_IPV6] {
            assert!(sa.selector.matches(a, b, proto, None));
        }
        assert!(!sa.selector.matches(b, a, IPPROTO_IPIP, None));
        assert!(!sa.selector.matches(a, v4("192.0.2.3"), IPPROTO_IPV6, None));
        let reversed = SaSpec {
            selector: Selector::endpoints(b, a),
            ..sa
        };
        assert!(reversed.validate().is_err());
    }

    #[test]
    fn inner_families_map_to_tunnel_protocols() {
        assert_eq!(
            InnerFamilies::BOTH.protocols(),
            [IPPROTO_IPIP, IPPROTO_IPV6]
        );
        assert_eq!(InnerFamilies::IPV6.protocols(), [IPPROTO_IPV6]);
        assert_eq!(
            InnerFamilies::of_protocols([IPPROTO_IPV6, 17, IPPROTO_IPIP]),
            InnerFamilies::BOTH
        );
        assert_eq!(
            InnerFamilies::of_protocols([IPPROTO_IPIP]),
            InnerFamilies::IPV4
        );
        assert!(InnerFamilies::of_protocols([]).protocols().is_empty());
        assert!(InnerFamilies::IPV4.carries(v4("10.0.0.1")));
        assert!(!InnerFamilies::IPV4.carries(v4("fd00::1")));
    }

    #[test]
    fn a_link_carries_the_families_of_its_addresses() {
        let link = LinkSpec {
            name: "ipt0".into(),
            local: v4("192.0.2.1"),
            remote: v4("192.0.2.2"),
            addresses: vec![
                IpPrefix::new(v4("10.0.0.1"), 31).unwrap(),
                IpPrefix::new(v4("fd00::1"), 127).unwrap(),
            ],
            inner: InnerFamilies::BOTH,
            mtu: 1400,
        };
        link.validate().unwrap();
        for inner in [InnerFamilies::IPV4, InnerFamilies::IPV6] {
            let narrow = LinkSpec {
                inner,
                ..link.clone()
            };
            assert!(narrow.validate().is_err(), "{inner:?}");
        }
        let nothing = LinkSpec {
            addresses: vec![],
            inner: InnerFamilies::of_protocols([]),
            ..link.clone()
        };
        assert!(nothing.validate().is_err());
        let small = LinkSpec {
            addresses: vec![],
            mtu: 1200,
            ..link.clone()
        };
        assert!(small.validate().is_err(), "IPv6 inner packets need 1280");
        LinkSpec {
            inner: InnerFamilies::IPV4,
            ..small
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn ipv6_endpoints_take_128_bit_selectors_and_one_family() {
        let (a, b) = (v4("2001:db8::1"), v4("2001:db8::2"));
        let sa = sa_between(Direction::In, a, b, IPPROTO_IPV6);
        assert_eq!(sa.selector.src.prefix_len(), 128);
        sa.validate().unwrap();
        SaSpec {
            selector: Selector::tunnel(a, b, IPPROTO_IPIP),
            ..sa.clone()
        }
        .validate()
        .unwrap();
        let slash64 = Selector {
            src: IpPrefix::new(a, 64).unwrap(),
            ..sa.selector
        };
        assert!(
            SaSpec {
                selector: slash64,
                ..sa.clone()
            }
            .validate()
            .is_err()
        );
        let mixed = v4("192.0.2.2");
        assert!(
            SaSpec {
                dst: mixed,
                selector: Selector::tunnel(a, mixed, IPPROTO_IPIP),
                ..sa.clone()
            }
            .validate()
            .is_err()
        );
        assert!(
            SaSpec {
                selector: Selector {
                    proto: Some(50),
                    ..sa.selector
                },
                ..sa
            }
            .validate()
            .is_err()
        );

        let link = LinkSpec {
            name: "ipt0".into(),
            local: a,
            remote: b,
            addresses: vec![IpPrefix::new(v4("fd00::1"), 64).unwrap()],
            inner: InnerFamilies::BOTH,
            mtu: 1400,
        };
        link.validate().unwrap();
        assert!(
            LinkSpec {
                remote: mixed,
                ..link.clone()
            }
            .validate()
            .is_err()
        );
        assert!(LinkSpec { mtu: 1200, ..link }.validate().is_err());
    }
}
