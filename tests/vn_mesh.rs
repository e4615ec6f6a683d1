//! Routed VNs end to end: one `iiptrand` per node in its own network namespace, all
//! namespaces plugged into one bridge (the underlay), certificates enrolled from the VN CA
//! with `iiptrand enroll`, the userspace data plane, and BIRD 2 running OSPF over the
//! virtual links only, announcing each node's loopback /32. A triangle and a square with
//! one diagonal come up and route every loopback to every other (two hops on the square);
//! a node that dies is routed around and comes back by itself; a daemon killed with
//! SIGKILL and restarted leaves nothing stale; a reload adds and removes neighbors without
//! disturbing the others. Needs root and Debian's bird2.

mod enroll_common;
mod support;

mod vn_common;

use std::time::{Duration, Instant};

use iiptran_testkit::bird::{OspfNeighbor, parse_neighbors};
use iiptran_testkit::have_root;
use iiptran_testkit::iiptrand::LIVENESS_BOUND;
use iiptran_testkit::wait::scaled;
use support::OrPanic;
use vn_common::{Edge, Vn};

/// How long a VN may take to converge (stretched in the VM, whose CPUs are emulated).
fn up() -> Duration {
    scaled(Duration::from_secs(30))
}

const TRIANGLE: [Edge; 3] = [
    Edge::new("a", "b", 0),
    Edge::new("b", "c", 1),
    Edge::new("a", "c", 2),
];

/// a-b-c-d-a with the diagonal b-d, so a and c are two hops apart. The links around d
/// cost more, so a reaches c through b while b is there and through d when it is not.
const SQUARE: [Edge; 5] = [
    Edge::new("a", "b", 0),
    Edge::new("b", "c", 1),
    Edge::new("c", "d", 2).cost(15),
    Edge::new("d", "a", 3).cost(15),
    Edge::new("b", "d", 4),
];

#[test]
fn birdc_neighbor_lines_are_parsed_and_headers_skipped() {
    let out = "BIRD 2.0.12 ready.\nvn:\n\
               Router ID   \tPri\t     State     \tDTime\tInterface  Router IP\n\
               10.0.0.2    \t  1\tFull/PtP  \t 3.045\tvn-b       10.255.0.1\n\
               10.0.0.3    \t  1\tInit/PtP  \t 2.001\tvn-c       10.255.0.3\n";
    let neighbor = |router_id: &str, state: &str, interface: &str| OspfNeighbor {
        router_id: router_id.into(),
        state: state.into(),
        interface: interface.into(),
    };
    assert_eq!(
        parse_neighbors(out),
        [
            neighbor("10.0.0.2", "Full/PtP", "vn-b"),
            neighbor("10.0.0.3", "Init/PtP", "vn-c"),
        ]
    );
}

#[test]
fn triangle_converges_and_a_daemon_killed_and_restarted_leaves_nothing_stale() {
    if !have_root("triangle_converges_and_a_daemon_killed_and_restarted_leaves_nothing_stale") {
        return;
    }
    let mut vn = Vn::new("vn-triangle", &["a", "b", "c"], &TRIANGLE).or_panic();
    vn.wait_converged(up()).or_panic();
    vn.ping_all(up()).or_panic();
    vn.assert_path_carries_pings(&["a", "b"]).or_panic();

    vn.kill("c").or_panic();
    vn.restart("c").or_panic();
    vn.wait_converged(up()).or_panic();
    vn.assert_nothing_stale("c", up()).or_panic();
    // The peers replaced the SAs they had with the killed daemon and keep one pair each.
    for peer in ["a", "b"] {
        vn.wait_sa_counts(peer, up()).or_panic();
    }
    vn.ping_all(up()).or_panic();
    vn.assert_path_carries_pings(&["c", "a"]).or_panic();
}

#[test]
fn square_routes_two_hops_and_reroutes_around_a_dead_node() {
    if !have_root("square_routes_two_hops_and_reroutes_around_a_dead_node") {
        return;
    }
    let mut vn = Vn::new("vn-square", &["a", "b", "c", "d"], &SQUARE).or_panic();
    vn.wait_converged(up()).or_panic();
    vn.ping_all(up()).or_panic();
    vn.assert_path_carries_pings(&["a", "b", "c"]).or_panic();

    let killed = Instant::now();
    vn.kill("b").or_panic();
    vn.set_underlay("b", false).or_panic();
    for peer in ["a", "c", "d"] {
        let left = scaled(LIVENESS_BOUND).saturating_sub(killed.elapsed());
        vn.node(peer).daemon.wait_link_down("b", left).or_panic();
    }
    for (from, to) in [("a", "c"), ("c", "a"), ("a", "d"), ("d", "c")] {
        vn.ping(from, to, up()).or_panic();
    }
    vn.assert_path_carries_pings(&["a", "d", "c"]).or_panic();

    vn.set_underlay("b", true).or_panic();
    vn.restart("b").or_panic();
    vn.wait_converged(up()).or_panic();
    vn.ping_all(up()).or_panic();
    vn.assert_path_carries_pings(&["a", "b", "c"]).or_panic();
}

#[test]
fn reload_adds_and_removes_neighbors_without_disturbing_the_others() {
    if !have_root("reload_adds_and_removes_neighbors_without_disturbing_the_others") {
        return;
    }
    let [ab, bc, ac] = TRIANGLE;
    let mut vn = Vn::new("vn-reload", &["a", "b", "c"], &[ab, bc]).or_panic();
    vn.wait_converged(up()).or_panic();
    vn.ping_all(up()).or_panic();
    let mut watch = vn
        .watch(&[("a", "b"), ("b", "a"), ("b", "c"), ("c", "b")])
        .or_panic();

    vn.reconfigure(&[ab, bc, ac], &["a", "c"]).or_panic();
    vn.wait_converged(up()).or_panic();
    vn.ping("a", "c", up()).or_panic();
    watch.check_undisturbed(&vn).or_panic();

    watch.forget(&[("b", "c"), ("c", "b")]);
    vn.reconfigure(&[ab, ac], &["b", "c"]).or_panic();
    vn.wait_converged(up()).or_panic();
    vn.assert_link_gone("b", "vn-c").or_panic();
    vn.assert_link_gone("c", "vn-b").or_panic();
    vn.ping_all(up()).or_panic();
    watch.check_undisturbed(&vn).or_panic();
    watch.check_grown().or_panic();
}
