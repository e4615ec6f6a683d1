//! Two `iiptrand` nodes on the kernel data plane: real XFRM states and policies, real ESP,
//! real `ipip` virtual links. The adjacency comes up, a ping crosses the link with the
//! kernel's ESP counters growing, the SAs are transport mode with protocol-4 selectors and
//! the same pair in both kernels. A daemon killed with SIGKILL leaves its objects in the
//! kernel; restarted, it removes them and the adjacency comes back with one fresh pair. A
//! daemon stopped with SIGTERM leaves nothing behind. A kernel node and a userspace node
//! carry traffic between them (ESP in UDP). Traffic for a neighbor waiting out its back-off
//! brings the pair up at once, through the kernel's acquire.
//!
//! Needs root and a kernel with ESP and IPIP: `tests/vm/run` runs the ignored tests here in
//! its guest. The parser test runs everywhere.

mod support;

use std::time::Duration;

use iiptran::control::protocol::TransitionReport;
use iiptran_testkit::iiptrand::{Credentials, Neighbor, NodeConfig};
use iiptran_testkit::netns::{Netns, veth};
use iiptran_testkit::wait::{scaled, wait_until};
use iiptran_testkit::{WorkDir, have_root};
use support::OrPanic;
use support::daemon::Daemon;
use support::kernel::{
    XfrmState, ipip_selector, links, parse_policies, parse_states, policies, sa_pair, states,
};

const PSK: &str = "a long pre-shared key for the kernel pair test";
const A: &str = "198.51.100.1";
const B: &str = "198.51.100.2";
/// TCG emulation is slow and the first SA install loads the crypto modules.
const SETUP: Duration = Duration::from_secs(90);

/// Node `a` (at A, link 10.255.0.0/31) or `b` (at B, link 10.255.0.1/31), each the
/// other's neighbor, on `dataplane`.
fn node(name: &str, dataplane: &str) -> NodeConfig {
    let (endpoint, peer, peer_endpoint, address) = match name {
        "a" => (A, "b", B, "10.255.0.0/31"),
        _ => (B, "a", A, "10.255.0.1/31"),
    };
    let config = NodeConfig::new(name, endpoint, Credentials::Psk(PSK.to_owned()))
        .neighbor(Neighbor::new(peer, peer_endpoint, address));
    NodeConfig {
        dataplane: dataplane.to_owned(),
        ..config
    }
}

/// Two namespaces joined by veth, A and B, and the name of the veth (the same at both ends).
fn namespaces() -> (Netns, Netns, String) {
    let a_ns = Netns::new("vka").or_panic();
    let b_ns = Netns::new("vkb").or_panic();
    let (a_end, _) = veth(&a_ns, A.parse().unwrap(), &b_ns, B.parse().unwrap(), 24).or_panic();
    (a_ns, b_ns, a_end.ifname)
}

/// Waits until `ns` holds exactly one SA pair between `local` and `remote` that `accept`
/// takes; returns it as (outbound, inbound).
fn wait_pair(
    what: &str,
    ns: &Netns,
    local: &str,
    remote: &str,
    accept: impl Fn(&(XfrmState, XfrmState)) -> bool,
) -> (XfrmState, XfrmState) {
    wait_until(what, SETUP, Duration::from_millis(250), || {
        Ok(sa_pair(ns, local, remote)?.filter(|p| accept(p)))
    })
    .or_panic()
}

/// The pair is the IIPtran one and both kernels hold it, mirrored.
fn check_pair(a: &(XfrmState, XfrmState), b: &(XfrmState, XfrmState)) {
    for (s, src, dst) in [(&a.0, A, B), (&a.1, B, A)] {
        assert_eq!(
            (s.proto.as_str(), s.mode.as_str()),
            ("esp", "transport"),
            "{s:?}"
        );
        assert_eq!(s.selector, ipip_selector(src, dst), "{s:?}");
    }
    assert_eq!(
        (&a.0.spi, &a.1.spi),
        (&b.1.spi, &b.0.spi),
        "the kernels hold different pairs"
    );
}

/// `ns` has its two IPIP policies towards and from the peer, transport-mode ESP.
fn check_policies(ns: &Netns, local: &str, remote: &str) {
    let mut found = policies(ns).or_panic();
    found.sort_by(|x, y| x.dir.cmp(&y.dir));
    let summary: Vec<(&str, &str)> = found
        .iter()
        .map(|p| (p.dir.as_str(), p.selector.as_str()))
        .collect();
    let (inbound, outbound) = (ipip_selector(remote, local), ipip_selector(local, remote));
    assert_eq!(
        summary,
        [("in", inbound.as_str()), ("out", outbound.as_str())],
        "policies of {}",
        ns.name()
    );
    for p in &found {
        assert!(
            p.template.starts_with("proto esp") && p.template.ends_with("mode transport"),
            "template of {p:?}"
        );
    }
}

fn ping(ns: &Netns, to: &str) {
    ns.run("ping", &["-c", "3", "-W", "5", "-i", "0.2", to])
        .or_panic();
}

/// Waits until nothing of the daemon's is left in `ns`: no SA, no policy, no `link`.
fn wait_empty(ns: &Netns, link: &str) {
    let what = format!("{} to hold no SA, policy or {link}", ns.name());
    wait_until(
        &what,
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            Ok(states(ns)?.is_empty()
                && policies(ns)?.is_empty()
                && !links(ns)?.iter().any(|l| l == link))
        },
    )
    .or_panic();
}

#[test]
#[ignore = "needs a kernel with ESP and IPIP: tests/vm/run runs it"]
fn kernel_pair_carries_esp_and_leaves_nothing_stale() {
    if !have_root("kernel_pair_carries_esp_and_leaves_nothing_stale") {
        return;
    }
    let dir = WorkDir::temp("vm-kernel-pair").or_panic();
    let (a_ns, b_ns, _) = namespaces();
    let mut a = Daemon::start(&a_ns, dir.path(), &node("a", "kernel"), &[]).or_panic();
    let mut b = Daemon::start(&b_ns, dir.path(), &node("b", "kernel"), &[]).or_panic();
    a.wait_established("b", SETUP).or_panic();
    b.wait_established("a", SETUP).or_panic();

    let a_pair = wait_pair("a's SA pair", &a_ns, A, B, |_| true);
    let b_pair = wait_pair("b's SA pair", &b_ns, B, A, |_| true);
    check_pair(&a_pair, &b_pair);
    check_policies(&a_ns, A, B);
    check_policies(&b_ns, B, A);

    ping(&a_ns, "10.255.0.1");
    let after = sa_pair(&a_ns, A, B).or_panic().expect("a's pair is gone");
    assert!(
        after.0.packets >= a_pair.0.packets + 3 && after.1.packets >= a_pair.1.packets + 3,
        "the kernel's ESP counters did not grow by the three pings: {a_pair:?} -> {after:?}"
    );

    // SIGKILL: the daemon cannot clean up, its SAs, policies and link stay in the kernel.
    a.process.signal(libc::SIGKILL).or_panic();
    a.process.wait_exit(Duration::from_secs(5)).or_panic();
    let stale = sa_pair(&a_ns, A, B)
        .or_panic()
        .expect("the killed daemon's SAs are still in the kernel");
    assert!(links(&a_ns).or_panic().iter().any(|l| l == "vn-b"));

    // Restarted, it removes what it left and comes back with a fresh pair; b drops the
    // pair of the dead IKE SA.
    a.restart(&a_ns, dir.path()).or_panic();
    a.wait_established("b", SETUP).or_panic();
    b.wait_established("a", SETUP).or_panic();
    let fresh = |p: &(XfrmState, XfrmState)| p.0.spi != stale.0.spi && p.1.spi != stale.1.spi;
    let a_pair = wait_pair("a to hold only a fresh pair", &a_ns, A, B, fresh);
    let b_pair = wait_pair("b to hold only the fresh pair", &b_ns, B, A, |p| {
        p.0.spi == a_pair.1.spi && p.1.spi == a_pair.0.spi
    });
    check_pair(&a_pair, &b_pair);
    check_policies(&a_ns, A, B);
    let vn_links = links(&a_ns).or_panic();
    assert_eq!(
        vn_links.iter().filter(|l| l.starts_with("vn-")).count(),
        1,
        "{vn_links:?}"
    );
    ping(&a_ns, "10.255.0.1");
    ping(&b_ns, "10.255.0.0");

    // SIGTERM: b removes everything it installed before it exits.
    b.process.signal(libc::SIGTERM).or_panic();
    let status = b.process.wait_exit(Duration::from_secs(10)).or_panic();
    assert!(status.success(), "b exited with {status}");
    wait_empty(&b_ns, "vn-a");
    // a learns of it from b's DELETE and takes its SAs out.
    a.wait_link_down("b", Duration::from_secs(10)).or_panic();
    wait_until(
        "a to remove the deleted pair",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || Ok(states(&a_ns)?.is_empty()),
    )
    .or_panic();
    a.process.signal(libc::SIGTERM).or_panic();
    let status = a.process.wait_exit(Duration::from_secs(10)).or_panic();
    assert!(status.success(), "a exited with {status}");
    wait_empty(&a_ns, "vn-b");
}

/// The userspace data plane speaks ESP in UDP only; its node forces NAT traversal, so the
/// kernel node encapsulates too.
#[test]
#[ignore = "needs a kernel with ESP and IPIP: tests/vm/run runs it"]
fn kernel_node_and_userspace_node_carry_traffic_both_ways() {
    if !have_root("kernel_node_and_userspace_node_carry_traffic_both_ways") {
        return;
    }
    let dir = WorkDir::temp("vm-kernel-userspace").or_panic();
    let (a_ns, b_ns, _) = namespaces();
    let a = Daemon::start(&a_ns, dir.path(), &node("a", "kernel"), &[]).or_panic();
    let b = Daemon::start(&b_ns, dir.path(), &node("b", "userspace"), &[]).or_panic();
    a.wait_established("b", SETUP).or_panic();
    b.wait_established("a", SETUP).or_panic();
    let (out, inbound) = wait_pair("a's SA pair", &a_ns, A, B, |_| true);
    ping(&a_ns, "10.255.0.1");
    ping(&b_ns, "10.255.0.0");
    let after = sa_pair(&a_ns, A, B).or_panic().expect("a's pair is gone");
    assert!(
        after.0.packets >= out.packets + 6 && after.1.packets >= inbound.packets + 6,
        "the kernel's ESP counters did not grow by the pings both ways: {out:?} -> {after:?}"
    );
    let encap = a_ns.ip(&["xfrm", "state"]).or_panic();
    assert!(
        encap
            .matches("encap type espinudp sport 4500 dport 4500")
            .count()
            == 2,
        "a's SAs are not ESP in UDP: {encap}"
    );
}

/// Traffic for a neighbor whose adjacency waits out its back-off: the out policy, which
/// outlives the pairs, finds no SA, the kernel asks for one (an XFRM acquire), and the
/// daemon connects at once rather than when the back-off ends.
#[test]
#[ignore = "needs a kernel with ESP and IPIP: tests/vm/run runs it"]
fn traffic_for_a_backed_off_neighbor_connects_at_once() {
    if !have_root("traffic_for_a_backed_off_neighbor_connects_at_once") {
        return;
    }
    let dir = WorkDir::temp("vm-kernel-acquire").or_panic();
    let (a_ns, b_ns, veth) = namespaces();
    let a = Daemon::start(&a_ns, dir.path(), &node("a", "kernel"), &[]).or_panic();
    // b only answers: a's adjacency comes back through a's own attempts alone.
    let mut b_node = node("b", "kernel");
    b_node.neighbors[0].passive = true;
    let _b = Daemon::start(&b_ns, dir.path(), &b_node, &[]).or_panic();
    a.wait_established("b", SETUP).or_panic();

    // Nothing reaches b: a's liveness check fails, then every attempt (each once its
    // IKE_SA_INIT goes unanswered). After the fourth failure a waits 4 to 8 s before the
    // next.
    b_ns.ip(&["link", "set", &veth, "down"]).or_panic();
    wait_until(
        "a's fourth failure, and a waiting out its back-off",
        Duration::from_secs(240),
        Duration::from_millis(100),
        || {
            let failures = a.history("b")?.iter().filter(|t| t.to == "backoff").count();
            let waiting = a.neighbor("b")?.is_some_and(|n| n.adjacency == "backoff");
            Ok((failures >= 4 && waiting).then_some(()))
        },
    )
    .or_panic();
    b_ns.ip(&["link", "set", &veth, "up"]).or_panic();
    send_ipip(&a_ns, B);
    let by_traffic = |t: &TransitionReport| {
        t.from == "backoff" && t.to == "connecting" && t.cause == "traffic waits for SAs"
    };
    wait_until(
        "a to connect for the traffic",
        scaled(Duration::from_secs(5)),
        Duration::from_millis(100),
        || Ok(a.history("b")?.iter().any(by_traffic).then_some(())),
    )
    .or_panic();
    a.wait_established("b", SETUP).or_panic();
    ping(&a_ns, "10.255.0.1");
}

/// Sends one IPIP packet from `ns` to `to`, as a virtual link would: the inner packet is
/// a bare IPv4 header, which no one reads (with no SA the kernel drops the packet).
fn send_ipip(ns: &Netns, to: &str) {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let to: std::net::SocketAddr = format!("{to}:0").parse().unwrap();
    let inner: [u8; 20] = [
        0x45, 0, 0, 20, 0, 0, 0, 0, 64, 1, 0, 0, 10, 255, 0, 0, 10, 255, 0, 1,
    ];
    ns.enter(|| {
        let socket = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(libc::IPPROTO_IPIP)),
        )
        .unwrap_or_else(|e| panic!("opening a raw IPIP socket: {e}"));
        // The acquire is what counts; without an SA the packet itself goes nowhere, and
        // the kernel may say so.
        match socket.send_to(&inner, &SockAddr::from(to)) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("sending an IPIP packet to {to}: {e}"),
        }
    })
    .or_panic();
}

#[test]
fn xfrm_listings_parse_as_iproute2_prints_them() {
    let state = "src 192.0.2.1 dst 192.0.2.2\n\tproto esp spi 0x00000a01(2561) reqid 948174849(0x38840001) mode transport\n\
                 \treplay-window 0 \n\taead rfc7539esp(chacha20,poly1305) 0x00 128\n\
                 \tsel src 192.0.2.1/32 dst 192.0.2.2/32 proto ipencap uid 0\n\tlifetime config:\n\
                 \t  limit: soft (INF)(bytes), hard (INF)(bytes)\n\tlifetime current:\n\
                 \t  252(bytes), 3(packets)\n\t  add 2026-01-01 00:00:00 use 2026-01-01 00:00:01\n";
    let states = parse_states(state).unwrap();
    assert_eq!(states.len(), 1);
    let s = &states[0];
    assert!(s.between("192.0.2.1", "192.0.2.2"));
    assert_eq!((s.proto.as_str(), s.mode.as_str()), ("esp", "transport"));
    assert_eq!(s.spi_value().unwrap(), 0xa01);
    assert_eq!(s.reqid, 948_174_849);
    assert_eq!(s.selector, ipip_selector("192.0.2.1", "192.0.2.2"));
    assert_eq!((s.bytes, s.packets), (252, 3));

    let policy = "src 192.0.2.1/32 dst 192.0.2.2/32 proto ipencap \n\tdir out priority 948174976 \n\
                  \ttmpl src 192.0.2.1 dst 192.0.2.2\n\t\tproto esp reqid 948174849 mode transport\n";
    let policies = parse_policies(policy);
    assert_eq!(policies.len(), 1);
    assert_eq!(policies[0].dir, "out");
    assert_eq!(
        policies[0].selector,
        ipip_selector("192.0.2.1", "192.0.2.2")
    );
    assert_eq!(
        policies[0].template,
        "proto esp reqid 948174849 mode transport"
    );
}
