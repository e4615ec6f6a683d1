//! Network-namespace fixtures shared by the integration tests (run as root), on top of
//! the namespaces of `iiptran-testkit`.

#![allow(dead_code)]

use iiptran_testkit::netns::{Netns, address_up, link};

/// A namespace `ipt<tag><pid>-<n>`, deleted on drop.
pub fn netns(tag: &str) -> Netns {
    Netns::new(&format!("ipt{tag}")).expect("creating a network namespace")
}

/// A counter of an interface in `ns` (from sysfs).
pub fn if_stat(ns: &Netns, ifname: &str, stat: &str) -> u64 {
    let path = format!("/sys/class/net/{ifname}/statistics/{stat}");
    let out = ns
        .exec(&["cat", &path])
        .expect("reading an interface counter");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// Two namespaces joined by a veth pair: `a` has 192.0.2.1/24 and 2001:db8::1/64 on `va`,
/// `b` 192.0.2.2/24 and 2001:db8::2/64 on `vb`.
pub struct Pair {
    pub a: Netns,
    pub b: Netns,
}

pub const ADDR_A: &str = "192.0.2.1";
pub const ADDR_B: &str = "192.0.2.2";
pub const ADDR_A6: &str = "2001:db8::1";
pub const ADDR_B6: &str = "2001:db8::2";

impl Pair {
    pub fn new() -> Self {
        let a = netns("a");
        let b = netns("b");
        link(&a, "va", &b, "vb").expect("creating the veth pair");
        for (ns, dev, addrs) in [
            (&a, "va", [(ADDR_A, 24), (ADDR_A6, 64)]),
            (&b, "vb", [(ADDR_B, 24), (ADDR_B6, 64)]),
        ] {
            for (addr, prefix_len) in addrs {
                let addr = addr.parse().expect("an address");
                address_up(ns, dev, addr, prefix_len).expect("addressing the veth pair");
            }
        }
        Self { a, b }
    }
}

/// The fixtures the examples use, shared so SAs and policies are built one way.
#[path = "../../examples/common/mod.rs"]
pub mod fixtures;
pub mod node;
