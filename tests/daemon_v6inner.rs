//! IPv4 and IPv6 inner packets over one IIPtran neighbor (`inner = ["ipv4", "ipv6"]`):
//! two real `iiptrand` processes in two network namespaces, the link with an IPv4 and an
//! IPv6 address. The child SA pair lists protocols 4 and 41 in `list-sas`, `ping` and
//! `ping -6` both cross the virtual link and the ESP counters grow by both; once over
//! IPv4 endpoints, once over IPv6 endpoints, and once after a reload that turns an
//! IPv4-only neighbor into a dual-stack one. On the kernel data plane (`tests/vm/run`) the
//! link is `sit` or `ip6tnl` in mode any, the SAs select every protocol between the
//! endpoints and there is an in/out policy pair per protocol. Needs root.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use iiptran::control::protocol::{ChildSaReport, IkeSaReport, TrafficSelector};
use iiptran_testkit::iiptrand::{Credentials, NodeConfig, test_dataplane};
use iiptran_testkit::netns::Netns;
use iiptran_testkit::wait::wait_until;
use iiptran_testkit::{WorkDir, have_root};
use support::daemon::{Daemon, TWO_NODES_V4, TwoNodes};
use support::{OrPanic, kernel};

const PSK: &str = "a long pre-shared key for the dual-stack inner test";
const BOTH: &str = "inner = [\"ipv4\", \"ipv6\"]\n";
/// The IPv6 link addresses of a and b (beside `TwoNodes`'s 10.255.0.0/31).
const A_V6: &str = "fd00:255::/127";
const B_V6_PREFIX: &str = "fd00:255::1/127";
/// b's link addresses, pinged from a.
const B_V4: &str = "10.255.0.1";
const B_V6: &str = "fd00:255::1";

/// a and b over `endpoints`, their links IPv4 only.
fn two_nodes(endpoints: (&str, &str, u8)) -> TwoNodes {
    TwoNodes::new("v6", endpoints, |_| Credentials::Psk(PSK.to_owned())).or_panic()
}

/// The underlay endpoints of a and b.
fn endpoints(nodes: &TwoNodes) -> (IpAddr, IpAddr) {
    let ip = |c: &NodeConfig| c.endpoint.parse().expect("endpoint address");
    (ip(&nodes.a), ip(&nodes.b))
}

/// `config` with its one link also carrying IPv6, with the address `v6`.
fn dual_stack(config: &NodeConfig, v6: &str) -> NodeConfig {
    let mut config = config.clone();
    let link = &mut config.neighbors[0];
    link.more_addresses.push(v6.to_owned());
    link.extra = BOTH.to_owned();
    config
}

/// a's and b's configurations with dual-stack links.
fn dual_stack_configs(nodes: &TwoNodes) -> (NodeConfig, NodeConfig) {
    (
        dual_stack(&nodes.a, A_V6),
        dual_stack(&nodes.b, B_V6_PREFIX),
    )
}

/// The single installed child SA of a daemon's single established IKE SA.
fn single_child(d: &Daemon) -> Result<Option<ChildSaReport>> {
    let Ok([sa]) = <[IkeSaReport; 1]>::try_from(d.sas()?) else {
        return Ok(None);
    };
    Ok(match sa.child_sas.as_slice() {
        [c] if sa.state == "ESTABLISHED" && c.state == "INSTALLED" => Some(c.clone()),
        _ => None,
    })
}

/// The selectors of one endpoint for each of `protocols`.
fn selectors(addr: IpAddr, protocols: &[u8]) -> Vec<TrafficSelector> {
    let prefix_len = if addr.is_ipv4() { 32 } else { 128 };
    protocols
        .iter()
        .map(|&protocol| TrafficSelector {
            addr,
            prefix_len,
            protocol,
        })
        .collect()
}

/// a's and b's child SA once both have exactly one, the same pair, with selectors for
/// exactly `protocols` between the endpoints.
fn wait_pair(nodes: &TwoNodes, a: &Daemon, b: &Daemon, protocols: &[u8]) -> ChildSaReport {
    let sorted = |mut ts: Vec<TrafficSelector>| {
        ts.sort_by_key(|t| t.protocol);
        ts
    };
    let (a_ip, b_ip) = endpoints(nodes);
    wait_until(
        "one child SA pair with the selectors of both families",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || {
            let (Some(x), Some(y)) = (single_child(a)?, single_child(b)?) else {
                return Ok(None);
            };
            let ours = sorted(x.local_ts.clone()) == selectors(a_ip, protocols)
                && sorted(x.remote_ts.clone()) == selectors(b_ip, protocols)
                && sorted(y.local_ts.clone()) == selectors(b_ip, protocols)
                && x.inbound.spi == y.outbound.spi
                && x.outbound.spi == y.inbound.spi;
            Ok(ours.then_some(x))
        },
    )
    .or_panic()
}

/// Three pings from a to b over the link, IPv4 and IPv6, and a's child SA counters grow by
/// both.
fn ping_both_families(nodes: &TwoNodes, a: &Daemon, b: &Daemon, before: &ChildSaReport) {
    // The SAs are in before the links come up (and a reload makes the links anew).
    a.wait_established("b", Duration::from_secs(30)).or_panic();
    b.wait_established("a", Duration::from_secs(30)).or_panic();
    for (family, dst) in [("-4", B_V4), ("-6", B_V6)] {
        nodes
            .a_ns
            .run("ping", &[family, "-c", "3", "-W", "2", "-i", "0.2", dst])
            .or_panic();
    }
    let after = single_child(a)
        .or_panic()
        .expect("the same child SA after the pings");
    assert_eq!(after.inbound.spi, before.inbound.spi, "the pair changed");
    assert!(
        after.outbound.packets >= before.outbound.packets + 6
            && after.inbound.packets >= before.inbound.packets + 6,
        "the counters did not grow by the six pings: {before:?} -> {after:?}"
    );
}

/// `ip -d -j link show <name>`: the link's kind and its tunnel protocol (`any`, …).
fn link_kind(ns: &Netns, name: &str) -> Result<(String, String)> {
    let text = ns.ip(&["-d", "-j", "link", "show", name])?;
    let json: serde_json::Value = serde_json::from_str(&text).context("ip -j link")?;
    let info = &json[0]["linkinfo"];
    let field = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    Ok((
        field(&info["info_kind"]),
        field(&info["info_data"]["proto"]),
    ))
}

/// On the kernel data plane: the link is `kind` in mode any, both SAs select every
/// protocol between the endpoints, and there is an in and an out policy for protocol 4
/// and for 41.
fn kernel_holds_dual_stack_objects(nodes: &TwoNodes, kind: &str) {
    if test_dataplane() != "kernel" {
        return;
    }
    let (a_ip, b_ip) = endpoints(nodes);
    let (a, b) = (a_ip.to_string(), b_ip.to_string());
    let ns = &nodes.a_ns;
    assert_eq!(
        link_kind(ns, "vn-b").or_panic(),
        (kind.to_owned(), "any".to_owned())
    );
    let (out, inbound) = wait_until(
        "one SA pair in the kernel",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || kernel::sa_pair(ns, &a, &b),
    )
    .or_panic();
    let bits = if endpoints(nodes).0.is_ipv4() {
        32
    } else {
        128
    };
    for (sa, src, dst) in [(&out, &a, &b), (&inbound, &b, &a)] {
        assert_eq!(sa.selector, format!("src {src}/{bits} dst {dst}/{bits}"));
        assert_eq!(sa.mode, "transport");
    }
    let mut policies: Vec<(String, String)> = kernel::policies(ns)
        .or_panic()
        .into_iter()
        .map(|p| {
            let proto = p.selector.split_whitespace().last().unwrap_or_default();
            (p.dir, proto.to_owned())
        })
        .collect();
    policies.sort();
    let expected: Vec<(String, String)> = [
        ("in", "ipencap"),
        ("in", "ipv6"),
        ("out", "ipencap"),
        ("out", "ipv6"),
    ]
    .map(|(d, p)| (d.to_owned(), p.to_owned()))
    .into();
    assert_eq!(policies, expected);
}

fn dual_stack_pair(endpoints: (&str, &str, u8), kind: &str) {
    let dir = WorkDir::temp("daemon-v6inner").or_panic();
    let mut nodes = two_nodes(endpoints);
    (nodes.a, nodes.b) = dual_stack_configs(&nodes);
    let nodes = &nodes;
    let (a, b) = nodes.start(dir.path()).or_panic();
    let before = wait_pair(nodes, &a, &b, &[4, 41]);
    kernel_holds_dual_stack_objects(nodes, kind);
    ping_both_families(nodes, &a, &b, &before);
}

#[test]
fn ipv4_endpoints_carry_ipv4_and_ipv6_inner_packets() {
    if !have_root("ipv4_endpoints_carry_ipv4_and_ipv6_inner_packets") {
        return;
    }
    dual_stack_pair(TWO_NODES_V4, "sit");
}

#[test]
fn ipv6_endpoints_carry_ipv4_and_ipv6_inner_packets() {
    if !have_root("ipv6_endpoints_carry_ipv4_and_ipv6_inner_packets") {
        return;
    }
    dual_stack_pair(("2001:db8:100::1", "2001:db8:100::2", 64), "ip6tnl");
}

#[test]
fn a_reload_turns_an_ipv4_neighbor_into_a_dual_stack_one() {
    if !have_root("a_reload_turns_an_ipv4_neighbor_into_a_dual_stack_one") {
        return;
    }
    let dir = WorkDir::temp("daemon-v6inner-reload").or_panic();
    let nodes = two_nodes(TWO_NODES_V4);
    let (mut a, mut b) = nodes.start(dir.path()).or_panic();
    wait_pair(&nodes, &a, &b, &[4]);
    if test_dataplane() == "kernel" {
        let (kind, _) = link_kind(&nodes.a_ns, "vn-b").or_panic();
        assert_eq!(kind, "ipip");
    }
    let (a_config, b_config) = dual_stack_configs(&nodes);
    for (daemon, config) in [(&mut a, &a_config), (&mut b, &b_config)] {
        daemon.rewrite(config).or_panic();
        let out = daemon.ctl(&["reload"]).or_panic();
        assert!(
            out.status.success(),
            "reload failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let before = wait_pair(&nodes, &a, &b, &[4, 41]);
    kernel_holds_dual_stack_objects(&nodes, "sit");
    ping_both_families(&nodes, &a, &b, &before);
}
