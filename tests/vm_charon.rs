//! `iiptrand` on the kernel data plane against strongSwan's charon with kernel-netlink:
//! both install real transport-mode SAs in their kernels, and ping crosses the `ipip` link
//! under ESP in both directions, once with iiptrand initiating and once with charon
//! initiating. `swanctl --list-sas` shows the child installed with the SPIs our kernel
//! holds.
//!
//! Needs root, `tests/interop/setup` and a kernel with ESP and IPIP: `tests/vm/run` runs
//! these in its guest.

mod support;

use std::time::Duration;

use iiptran_testkit::iiptrand::{Credentials, Neighbor, NodeConfig};
use iiptran_testkit::netns::{Netns, veth};
use iiptran_testkit::strongswan::{Auth, Charon, CharonOptions, ChildSa, Connection, Installation};
use iiptran_testkit::wait::wait_until;
use iiptran_testkit::{WorkDir, have_root};
use support::OrPanic;
use support::daemon::Daemon;
use support::kernel::{XfrmState, ipip_selector, sa_pair};

const PSK: &str = "a long pre-shared key for iiptrand and charon";
/// iiptrand's node.
const A: &str = "198.51.100.1";
/// charon's node.
const B: &str = "198.51.100.2";
/// TCG emulation is slow, and charon's first start in a fresh guest takes ~20 s.
const SETUP: Duration = Duration::from_secs(90);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Initiator {
    Iiptrand,
    Charon,
}

#[test]
#[ignore = "needs a kernel with ESP and IPIP: tests/vm/run runs it"]
fn iiptrand_initiates_to_charon_with_real_esp() {
    if have_root("iiptrand_initiates_to_charon_with_real_esp") {
        pair(Initiator::Iiptrand);
    }
}

#[test]
#[ignore = "needs a kernel with ESP and IPIP: tests/vm/run runs it"]
fn charon_initiates_to_iiptrand_with_real_esp() {
    if have_root("charon_initiates_to_iiptrand_with_real_esp") {
        pair(Initiator::Charon);
    }
}

fn spi(hex: &str) -> u32 {
    u32::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("SPI {hex:?}: {e}"))
}

fn installed_child(charon: &Charon) -> ChildSa {
    charon
        .wait_for_sas("charon's child SA to be installed", SETUP, |sas| {
            sas.iter()
                .filter(|sa| sa.state == "ESTABLISHED")
                .flat_map(|sa| &sa.children)
                .find(|c| c.state == "INSTALLED")
                .cloned()
        })
        .or_panic()
}

fn ping(ns: &Netns, to: &str) {
    ns.run("ping", &["-c", "3", "-W", "5", "-i", "0.2", to])
        .or_panic();
}

fn pair(initiator: Initiator) {
    let install = Installation::find(&support::capture::TOOLS).or_panic();
    let dir = WorkDir::temp("vm-charon").or_panic();
    let a_ns = Netns::new("vca").or_panic();
    let b_ns = Netns::new("vcb").or_panic();
    veth(&a_ns, A.parse().unwrap(), &b_ns, B.parse().unwrap(), 24).or_panic();
    // charon keys the link but does not make it: b's side of the virtual link is made here.
    b_ns.ip(&[
        "link", "add", "vn-a", "type", "ipip", "local", B, "remote", A,
    ])
    .or_panic();
    b_ns.ip(&["addr", "add", "10.255.0.1/31", "dev", "vn-a"])
        .or_panic();
    b_ns.ip(&["link", "set", "vn-a", "up"]).or_panic();

    let connection = Connection::iiptran(
        B.parse().unwrap(),
        "b.vn.example",
        A.parse().unwrap(),
        "a.vn.example",
        Auth::Psk(PSK.as_bytes().to_vec()),
    );
    let options = CharonOptions {
        fake_kernel: false,
        ..CharonOptions::default()
    };
    let charon = Charon::start(&install, &b_ns, "b", &options, &[connection]).or_panic();

    let mut neighbor = Neighbor::new("b", B, "10.255.0.0/31");
    if initiator == Initiator::Charon {
        neighbor.passive = true;
    }
    let config = NodeConfig {
        dataplane: "kernel".to_owned(),
        ..NodeConfig::new("a", A, Credentials::Psk(PSK.to_owned())).neighbor(neighbor)
    };
    let a = Daemon::start(&a_ns, dir.path(), &config, &[]).or_panic();
    if initiator == Initiator::Charon {
        // The first SA of an algorithm in a fresh guest takes the kernel ~20 s to set up
        // under emulation, longer than `initiate_child` waits.
        charon
            .swanctl(&["--initiate", "--child", "ipip", "--timeout", "90"])
            .or_panic();
    }
    a.wait_established("b", SETUP).or_panic();
    let child = installed_child(&charon);
    assert_eq!(
        (child.mode.as_str(), child.protocol.as_str()),
        ("TRANSPORT", "ESP"),
        "{child:?}"
    );
    assert_eq!(child.local_ts, [format!("{B}/32[ipencap]")], "{child:?}");
    assert_eq!(child.remote_ts, [format!("{A}/32[ipencap]")], "{child:?}");

    // Our kernel holds the pair charon negotiated, and so does charon's.
    let ours = wait_until(
        "iiptrand's SA pair in the kernel",
        SETUP,
        Duration::from_millis(250),
        || sa_pair(&a_ns, A, B),
    )
    .or_panic();
    let theirs = sa_pair(&b_ns, B, A)
        .or_panic()
        .expect("charon's kernel holds one SA pair");
    for (s, src, dst) in [(&ours.0, A, B), (&ours.1, B, A)] {
        assert_eq!(s.mode, "transport", "{s:?}");
        assert_eq!(s.selector, ipip_selector(src, dst), "{s:?}");
    }
    let value = |s: &XfrmState| s.spi_value().or_panic();
    assert_eq!(
        (spi(&child.spi_in), spi(&child.spi_out)),
        (value(&ours.0), value(&ours.1)),
        "charon's SPIs are not the ones in our kernel: {child:?} {ours:?}"
    );
    assert_eq!(
        (value(&theirs.0), value(&theirs.1)),
        (value(&ours.1), value(&ours.0))
    );

    ping(&a_ns, "10.255.0.1");
    ping(&b_ns, "10.255.0.0");
    let after = sa_pair(&a_ns, A, B).or_panic().expect("our pair is gone");
    assert!(
        after.0.packets >= ours.0.packets + 6 && after.1.packets >= ours.1.packets + 6,
        "our kernel's ESP counters did not grow by the pings both ways: {ours:?} -> {after:?}"
    );
    let theirs_after = sa_pair(&b_ns, B, A)
        .or_panic()
        .expect("charon's pair is gone");
    assert!(
        theirs_after.0.packets >= theirs.0.packets + 6,
        "charon's kernel's ESP counters did not grow: {theirs:?} -> {theirs_after:?}"
    );
}
