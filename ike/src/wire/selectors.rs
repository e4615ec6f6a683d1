//! Traffic selector payloads TSi/TSr (RFC 7296 §3.13).
//!
//! Payload:  count(1) reserved(3) selectors
//! Selector: type(1) ip_protocol(1) length(2) start_port(2) end_port(2)
//!           start_addr end_addr (4 bytes each for IPv4, 16 for IPv6)

use super::cursor::{Reader, Reason, count};
use crate::iana::TsType;
use crate::ts::TrafficSelector;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const PAYLOAD_RESERVED: usize = 3;
const SELECTOR_HEADER_LEN: usize = 8;
const V4_SELECTOR_LEN: u16 = 16;
const V6_SELECTOR_LEN: u16 = 40;

/// Selectors of types other than address ranges (e.g. RFC 9478 security labels) are
/// skipped: we cannot represent them, and refusing the whole payload would refuse peers
/// that merely offer them.
pub(super) fn parse(body: &[u8]) -> Result<Vec<TrafficSelector>, Reason> {
    let mut r = Reader::new(body);
    let announced = r.u8()?;
    r.take(PAYLOAD_RESERVED)?;
    let mut selectors = Vec::new();
    for _ in 0..announced {
        let ty = TsType(r.u8()?);
        let ip_protocol = r.u8()?;
        let length = r.u16()?;
        let mut s = r.nested(length, 4)?;
        let start_port = s.u16()?;
        let end_port = s.u16()?;
        let (start_addr, end_addr) = match (ty, length) {
            (TsType::IPV4_ADDR_RANGE, V4_SELECTOR_LEN) => (
                IpAddr::V4(Ipv4Addr::from(s.array::<4>()?)),
                IpAddr::V4(Ipv4Addr::from(s.array::<4>()?)),
            ),
            (TsType::IPV6_ADDR_RANGE, V6_SELECTOR_LEN) => (
                IpAddr::V6(Ipv6Addr::from(s.array::<16>()?)),
                IpAddr::V6(Ipv6Addr::from(s.array::<16>()?)),
            ),
            (TsType::IPV4_ADDR_RANGE | TsType::IPV6_ADDR_RANGE, _) => {
                return Err("selector length does not match its type");
            }
            _ => continue,
        };
        selectors.push(TrafficSelector {
            ip_protocol,
            start_port,
            end_port,
            start_addr,
            end_addr,
        });
    }
    if !r.is_empty() {
        return Err("bytes after the announced selectors");
    }
    Ok(selectors)
}

pub(super) fn emit(selectors: &[TrafficSelector], out: &mut Vec<u8>) -> Result<(), Reason> {
    out.push(count(selectors.len())?);
    out.extend_from_slice(&[0; PAYLOAD_RESERVED]);
    for ts in selectors {
        let (ty, length) = match (ts.start_addr, ts.end_addr) {
            (IpAddr::V4(_), IpAddr::V4(_)) => (TsType::IPV4_ADDR_RANGE, V4_SELECTOR_LEN),
            (IpAddr::V6(_), IpAddr::V6(_)) => (TsType::IPV6_ADDR_RANGE, V6_SELECTOR_LEN),
            _ => return Err("selector mixes address families"),
        };
        let start = out.len();
        out.extend_from_slice(&[ty.0, ts.ip_protocol]);
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(&ts.start_port.to_be_bytes());
        out.extend_from_slice(&ts.end_port.to_be_bytes());
        debug_assert_eq!(out.len() - start, SELECTOR_HEADER_LEN);
        for addr in [ts.start_addr, ts.end_addr] {
            match addr {
                IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
                IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
            }
        }
    }
    Ok(())
}
