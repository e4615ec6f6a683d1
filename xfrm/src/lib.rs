//! The IIPtran data planes: one model of SAs, policies and selectors, one [`Dataplane`]
//! interface, and its backends (Linux XFRM netlink, userspace ESP over UDP).
//!
//! Both backends follow RFC 3884 exactly: a VN packet routed onto a virtual link is
//! IP-in-IP-encapsulated between the two tunnel endpoints, then protected by ESP in
//! transport mode with the SA selected on that outer header (`local/32 -> remote/32` for
//! IPv4 endpoints, `/128` for IPv6 ones; protocol 4 for IPv4 inner packets, 41 for IPv6).

mod dataplane;
pub mod esp;
pub mod ipip;
mod ipv6_off;
pub mod kernel;
mod link_group;
mod model;
pub mod netns;
pub mod replay;
#[cfg(test)]
mod testvectors;
pub mod userspace;

pub use dataplane::{Dataplane, Error, Result};
pub use model::*;
