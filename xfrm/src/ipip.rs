//! The IP-in-IP outer header of an IIPtran virtual link (IPv4: RFC 2003 with DF copied
//! from the inner packet; IPv6: RFC 2473 without the encapsulation limit option), and the
//! few inner-header facts the data plane needs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::model::{IPPROTO_IPIP, IPPROTO_IPV6};

pub const OUTER_V4_LEN: usize = 20;
pub const OUTER_V6_LEN: usize = 40;
/// The outer TTL (IPv4) or hop limit (IPv6).
const DEFAULT_TTL: u8 = 64;
const DF: u16 = 0x4000;

/// What the data plane needs to know about a packet read from a virtual link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inner {
    /// 4 for IPv4 inner packets, 41 for IPv6.
    pub proto: u8,
    /// The inner don't-fragment bit (IPv6 never fragments on path: always set).
    pub df: bool,
}

impl Inner {
    /// Classifies an inner packet by IP version; `None` for anything that is not a
    /// plausible IPv4 or IPv6 packet.
    pub fn classify(packet: &[u8]) -> Option<Self> {
        match packet.first()? >> 4 {
            4 if packet.len() >= 20 => {
                let flags = u16::from_be_bytes([packet[6], packet[7]]);
                Some(Self {
                    proto: IPPROTO_IPIP,
                    df: flags & DF != 0,
                })
            }
            6 if packet.len() >= 40 => Some(Self {
                proto: IPPROTO_IPV6,
                df: true,
            }),
            _ => None,
        }
    }

    /// The source and destination addresses of a packet `classify` accepted.
    pub fn addresses(packet: &[u8]) -> Option<(IpAddr, IpAddr)> {
        match packet.first()? >> 4 {
            4 => {
                let s: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
                let d: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
                Some((IpAddr::from(s), IpAddr::from(d)))
            }
            6 => {
                let s: [u8; 16] = packet.get(8..24)?.try_into().ok()?;
                let d: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
                Some((IpAddr::from(s), IpAddr::from(d)))
            }
            _ => None,
        }
    }
}

/// An outer header as the tunnel would put it on the wire; the SA is selected on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outer {
    V4([u8; OUTER_V4_LEN]),
    V6([u8; OUTER_V6_LEN]),
}

impl Outer {
    /// Builds the outer header `local -> remote` for `inner_len` octets of inner packet:
    /// TTL or hop limit 64, protocol (next header) 4 or 41. IPv4 copies DF from the inner
    /// packet and carries `id` for fragments; IPv6 has no DF (it is never fragmented on
    /// the path, and the tunnel does not fragment: the link MTU and PMTU keep packets
    /// small enough). `None` when the endpoints' families differ or the packet is too long
    /// for the outer length field.
    pub fn new(
        local: IpAddr,
        remote: IpAddr,
        inner: Inner,
        inner_len: usize,
        id: u16,
    ) -> Option<Self> {
        match (local, remote) {
            (IpAddr::V4(l), IpAddr::V4(r)) => v4_header(l, r, inner, inner_len, id).map(Self::V4),
            (IpAddr::V6(l), IpAddr::V6(r)) => v6_header(l, r, inner, inner_len).map(Self::V6),
            _ => None,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        match self {
            Self::V4(h) => h,
            Self::V6(h) => h,
        }
    }

    /// The protocol (IPv4) or next header (IPv6): 4 or 41.
    pub fn proto(&self) -> u8 {
        match self {
            Self::V4(h) => h[9],
            Self::V6(h) => h[6],
        }
    }

    pub fn src(&self) -> IpAddr {
        match self {
            Self::V4(h) => IpAddr::from([h[12], h[13], h[14], h[15]]),
            Self::V6(h) => IpAddr::from(v6_at(h, 8)),
        }
    }

    pub fn dst(&self) -> IpAddr {
        match self {
            Self::V4(h) => IpAddr::from([h[16], h[17], h[18], h[19]]),
            Self::V6(h) => IpAddr::from(v6_at(h, 24)),
        }
    }
}

fn v6_at(h: &[u8; OUTER_V6_LEN], at: usize) -> [u8; 16] {
    let mut a = [0u8; 16];
    a.copy_from_slice(&h[at..at + 16]);
    a
}

fn v4_header(
    local: Ipv4Addr,
    remote: Ipv4Addr,
    inner: Inner,
    inner_len: usize,
    id: u16,
) -> Option<[u8; OUTER_V4_LEN]> {
    let total = u16::try_from(OUTER_V4_LEN + inner_len).ok()?;
    let mut h = [0u8; OUTER_V4_LEN];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[4..6].copy_from_slice(&id.to_be_bytes());
    if inner.df {
        h[6..8].copy_from_slice(&DF.to_be_bytes());
    }
    h[8] = DEFAULT_TTL;
    h[9] = inner.proto;
    h[12..16].copy_from_slice(&local.octets());
    h[16..20].copy_from_slice(&remote.octets());
    let sum = checksum(&h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    Some(h)
}

fn v6_header(
    local: Ipv6Addr,
    remote: Ipv6Addr,
    inner: Inner,
    inner_len: usize,
) -> Option<[u8; OUTER_V6_LEN]> {
    // Jumbograms (RFC 2675) are not tunnelled.
    let payload = u16::try_from(inner_len).ok()?;
    let mut h = [0u8; OUTER_V6_LEN];
    // Version 6, traffic class and flow label 0.
    h[0] = 0x60;
    h[4..6].copy_from_slice(&payload.to_be_bytes());
    h[6] = inner.proto;
    h[7] = DEFAULT_TTL;
    h[8..24].copy_from_slice(&local.octets());
    h[24..40].copy_from_slice(&remote.octets());
    Some(h)
}

/// The Internet checksum (RFC 1071) of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut chunks = data.chunks_exact(2);
    let mut sum: u32 = chunks
        .by_ref()
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_inner(df: bool) -> Vec<u8> {
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&28u16.to_be_bytes());
        if df {
            p[6] = 0x40;
        }
        p[8] = 64;
        p[9] = 1;
        p[12..16].copy_from_slice(&[10, 99, 0, 1]);
        p[16..20].copy_from_slice(&[10, 99, 0, 2]);
        p
    }

    #[test]
    fn checksum_matches_a_known_header() {
        // The IPv4 header of the RFC 7634 Appendix A example carries checksum 0xe778.
        let hdr = hex::decode("45000054a6f200004001e778c6336405c0000205").unwrap();
        assert_eq!(checksum(&hdr), 0, "a header with its checksum sums to zero");
        let mut zeroed = hdr.clone();
        zeroed[10..12].fill(0);
        assert_eq!(checksum(&zeroed), 0xe778);
        assert_eq!(checksum(&[0x01]), !0x0100);
    }

    #[test]
    fn outer_header_copies_df_and_sets_the_fields() {
        let (a, b) = (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2));
        for df in [false, true] {
            let inner = ipv4_inner(df);
            let info = Inner::classify(&inner).unwrap();
            assert_eq!(info, Inner { proto: 4, df });
            let outer = Outer::new(a.into(), b.into(), info, inner.len(), 7).unwrap();
            let Outer::V4(h) = outer else {
                panic!("IPv4 endpoints give an IPv4 header")
            };
            assert_eq!(h[0], 0x45);
            assert_eq!(u16::from_be_bytes([h[2], h[3]]), 48);
            assert_eq!(u16::from_be_bytes([h[4], h[5]]), 7);
            assert_eq!(h[6] & 0x40 != 0, df, "DF copied");
            assert_eq!((h[8], h[9]), (64, 4));
            assert_eq!(&h[12..16], &a.octets());
            assert_eq!(&h[16..20], &b.octets());
            assert_eq!(checksum(&h), 0);
            assert_eq!(
                (outer.src(), outer.dst(), outer.proto()),
                (a.into(), b.into(), 4)
            );
        }
        let big = Inner { proto: 4, df: true };
        assert!(Outer::new(a.into(), b.into(), big, 65_516, 0).is_none());
    }

    #[test]
    fn ipv6_outer_header_has_next_header_hop_limit_and_no_checksum() {
        let a: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let b: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let inner = ipv4_inner(false);
        let info = Inner::classify(&inner).unwrap();
        let outer = Outer::new(a.into(), b.into(), info, inner.len(), 7).unwrap();
        let expected = hex::decode(concat!(
            "60000000",
            "001c",
            "04",
            "40",
            "20010db8000000000000000000000001",
            "20010db8000000000000000000000002"
        ))
        .unwrap();
        assert_eq!(outer.bytes(), &expected[..]);
        assert_eq!(
            (outer.src(), outer.dst(), outer.proto()),
            (a.into(), b.into(), 4)
        );
        let v6_inner = Inner {
            proto: 41,
            df: true,
        };
        let o = Outer::new(a.into(), b.into(), v6_inner, 1280, 0).unwrap();
        assert_eq!((o.proto(), o.bytes().len()), (41, 40));
        assert!(Outer::new(a.into(), b.into(), v6_inner, 65_536, 0).is_none());
        let v4: Ipv4Addr = "192.0.2.1".parse().unwrap();
        assert!(Outer::new(a.into(), v4.into(), info, 28, 0).is_none());
    }

    #[test]
    fn classify_by_version_and_drop_garbage() {
        let mut v6 = vec![0u8; 40];
        v6[0] = 0x60;
        assert_eq!(
            Inner::classify(&v6),
            Some(Inner {
                proto: 41,
                df: true
            })
        );
        assert_eq!(Inner::classify(&v6[..39]), None);
        assert_eq!(Inner::classify(&[]), None);
        assert_eq!(Inner::classify(&[0x45; 19]), None);
        assert_eq!(Inner::classify(&[0x55; 40]), None);
        let (s, d) = Inner::addresses(&ipv4_inner(true)).unwrap();
        assert_eq!(
            (s.to_string(), d.to_string()),
            ("10.99.0.1".into(), "10.99.0.2".into())
        );
    }
}
