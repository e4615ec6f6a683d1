//! Virtual links that carry no IPv6 get no IPv6 at all. Bringing a device up otherwise
//! makes the kernel configure IPv6 on it (a link-local address, its multicast and prefix
//! routes), which costs more than the rest of a link's setup when thousands come up.

use std::path::Path;

use tracing::warn;

use crate::LinkSpec;

/// Turns IPv6 off on the (still down) link of a validated `spec` unless it carries IPv6
/// inner packets (also with link-local addresses only, as OSPFv3 uses; an IPv6 address
/// fails validation without them). A link that keeps IPv6 still works, so a failure is
/// only reported.
pub(crate) fn unless_carried(spec: &LinkSpec) {
    if spec.inner.ipv6 {
        return;
    }
    let ipv6 = Path::new("/proc/sys/net/ipv6");
    if !ipv6.exists() {
        // A kernel without IPv6 has nothing to turn off.
        return;
    }
    let knob = ipv6.join("conf").join(&spec.name).join("disable_ipv6");
    if let Err(e) = std::fs::write(&knob, b"1") {
        warn!(link = spec.name.as_str(), error = %e, "turning IPv6 off");
    }
}
