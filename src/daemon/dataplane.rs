//! Which data plane carries the virtual links.
//!
//! `auto` picks the kernel when it can do IIPtran itself: XFRM is there
//! (`/proc/net/xfrm_stat`), and ESP and IPIP are loaded or built in (`/sys/module/esp4`
//! or `esp6` for the endpoint's family, and `/sys/module/ipip`, which exist for
//! built-in modules too). Anything less and the userspace data plane is used, which needs
//! only a TUN device.

use std::net::IpAddr;
use std::path::Path;

use iiptran_policy::config::Dataplane as Choice;

use crate::control::protocol::DataPlaneKind;

pub fn choose(choice: Choice, endpoint: IpAddr) -> DataPlaneKind {
    match choice {
        Choice::Kernel => DataPlaneKind::Kernel,
        Choice::Userspace => DataPlaneKind::Userspace,
        Choice::Auto if kernel_can_iiptran(endpoint) => DataPlaneKind::Kernel,
        Choice::Auto => DataPlaneKind::Userspace,
    }
}

fn kernel_can_iiptran(endpoint: IpAddr) -> bool {
    let esp = if endpoint.is_ipv4() { "esp4" } else { "esp6" };
    let present = |p: &str| Path::new(p).exists();
    present("/proc/net/xfrm_stat")
        && present(&format!("/sys/module/{esp}"))
        && present("/sys/module/ipip")
}
