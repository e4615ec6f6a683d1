//! Traffic selectors (RFC 7296 §3.13.1) and the IIPtran rule for which ones a child SA
//! may have.

use std::net::IpAddr;

/// One traffic selector: an address range, an IP protocol (0 = any) and a port range.
/// The selector type (IPv4 or IPv6 range) follows from the address family; both ends of
/// the range always have the same family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TrafficSelector {
    pub ip_protocol: u8,
    pub start_port: u16,
    pub end_port: u16,
    pub start_addr: IpAddr,
    pub end_addr: IpAddr,
}
