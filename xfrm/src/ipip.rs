//! The IPIP outer header of an IIPtran virtual link (RFC 2003 with DF copied from the
//! inner packet), and the few inner-header facts the data plane needs.

use std::net::{IpAddr, Ipv4Addr};

use crate::model::{IPPROTO_IPIP, IPPROTO_IPV6};

pub const OUTER_LEN: usize = 20;
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

/// Builds the outer IPv4 header `local -> remote` for `inner_len` octets of inner packet:
/// TTL 64, protocol 4 or 41, DF copied from the inner packet, `id` for fragments.
pub fn outer_header(
    local: Ipv4Addr,
    remote: Ipv4Addr,
    inner: Inner,
    inner_len: usize,
    id: u16,
) -> Option<[u8; OUTER_LEN]> {
    let total = u16::try_from(OUTER_LEN + inner_len).ok()?;
    let mut h = [0u8; OUTER_LEN];
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
            let h = outer_header(a, b, info, inner.len(), 7).unwrap();
            assert_eq!(h[0], 0x45);
            assert_eq!(u16::from_be_bytes([h[2], h[3]]), 48);
            assert_eq!(u16::from_be_bytes([h[4], h[5]]), 7);
            assert_eq!(h[6] & 0x40 != 0, df, "DF copied");
            assert_eq!((h[8], h[9]), (64, 4));
            assert_eq!(&h[12..16], &a.octets());
            assert_eq!(&h[16..20], &b.octets());
            assert_eq!(checksum(&h), 0);
        }
        assert!(outer_header(a, b, Inner { proto: 4, df: true }, 65_516, 0).is_none());
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
