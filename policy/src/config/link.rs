//! The virtual link towards one neighbor: an interface name and its addresses.

use core::fmt;
use core::str::FromStr;
use std::net::IpAddr;

use iiptran_ike::iana::IpProtocol;

/// Linux limits interface names to IFNAMSIZ - 1 bytes.
pub const MAX_LINK_NAME: usize = 15;

/// A valid Linux interface name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkName(String);

impl LinkName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for LinkName {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        if name.is_empty() || name.len() > MAX_LINK_NAME {
            return Err(format!(
                "interface name {name:?} must be 1 to {MAX_LINK_NAME} bytes"
            ));
        }
        if name == "." || name == ".." || name.contains(['/', ':']) || !name.is_ascii() {
            return Err(format!("invalid interface name {name:?}"));
        }
        if name
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(format!("invalid interface name {name:?}"));
        }
        Ok(Self(name.to_owned()))
    }
}

impl fmt::Display for LinkName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An interface address with its prefix length, e.g. `10.255.0.0/31`. Host bits are kept:
/// this is the address the link gets, not a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl FromStr for Prefix {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let invalid = || format!("invalid prefix {text:?}: expected ADDRESS/LENGTH");
        let (addr, len) = text.split_once('/').ok_or_else(invalid)?;
        let addr: IpAddr = addr.parse().map_err(|_| invalid())?;
        let len: u8 = len.parse().map_err(|_| invalid())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(format!("prefix length {len} exceeds {max} in {text:?}"));
        }
        Ok(Self { addr, len })
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// The virtual link of one adjacency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub name: LinkName,
    pub addresses: Vec<Prefix>,
    /// `None` leaves the MTU to the data plane.
    pub mtu: Option<u16>,
}

/// The encapsulation protocol carrying inner packets of a family: IPIP for IPv4,
/// protocol 41 for IPv6.
pub fn inner_protocol(family: &str) -> Option<IpProtocol> {
    match family {
        "ipv4" => Some(IpProtocol::IPIP),
        "ipv6" => Some(IpProtocol::IPV6),
        _ => None,
    }
}

pub fn protocol_of(addr: IpAddr) -> IpProtocol {
    if addr.is_ipv4() {
        IpProtocol::IPIP
    } else {
        IpProtocol::IPV6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names() {
        assert!("vn-b".parse::<LinkName>().is_ok());
        assert!("a23456789012345".parse::<LinkName>().is_ok());
        for bad in ["", "a234567890123456", "a/b", "a b", ".", "..", "vé", "a:1"] {
            assert!(bad.parse::<LinkName>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prefixes() {
        let p: Prefix = "10.255.0.1/31".parse().unwrap();
        assert_eq!(p.addr, "10.255.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(p.len, 31);
        assert_eq!(p.to_string(), "10.255.0.1/31");
        assert_eq!("fd00::1/127".parse::<Prefix>().unwrap().len, 127);
        for bad in [
            "10.0.0.1",
            "10.0.0.1/33",
            "fd00::/129",
            "x/24",
            "10.0.0.1/-1",
        ] {
            assert!(bad.parse::<Prefix>().is_err(), "{bad:?}");
        }
    }
}
