//! Two real `iiptrand` processes in two network namespaces joined by a veth pair, with
//! the userspace data plane: the adjacency comes up on both, `list-sas` shows the same
//! single IKE SA and transport-mode IPIP child SA pair on both, a ping crosses the
//! virtual link with ESP counters growing, and when one daemon dies the other takes its
//! link down within the liveness bound; once with a pre-shared key, once with
//! certificates from the VN CA through `iiptrand enroll`. Crossing initiations end with
//! one IKE SA and one pair; a refused child SA fails the attempt at once with its reason;
//! a link deleted behind the daemon's back takes the adjacency down and it recovers; SAs
//! whose rekey goes unanswered expire in the data plane and take it down too. A
//! single daemon also shows its readiness (sd_notify) and applies a reload. Needs root
//! and nft.

mod enroll_common;
mod support;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use iiptran::control::protocol::{IkeSaReport, LinkState, Mode, NeighborReport, TrafficSelector};
use iiptran_testkit::iiptrand::{Credentials, LIVENESS_BOUND, Neighbor, NodeConfig};
use iiptran_testkit::netns::Netns;
use iiptran_testkit::wait::{scaled, wait_until};
use iiptran_testkit::{WorkDir, have_root};
use support::OrPanic;
use support::daemon::{Daemon, TWO_NODES_V4, TwoNodes};

const PSK: &str = "a long pre-shared key for the daemon pair test";

/// A node's `[ike]` lines with the default retransmission schedule (strongSwan's: an
/// unanswered request is retried for ~165 s, long past the 30 s connect timeout) and the
/// tests' short liveness.
const SLOW_RETRANSMITS: &str =
    "liveness = \"2s\"\nretransmit_timeout = \"4s\"\nretransmit_base = 1.8\nretransmit_tries = 5\n";

/// How the two nodes authenticate each other.
enum Auth {
    Psk,
    /// The directory `iiptrand enroll` wrote each node's key.pem, cert.pem and ca.pem to.
    Certificates {
        a: PathBuf,
        b: PathBuf,
    },
}

fn credentials(auth: &Auth, node: &str) -> Credentials {
    match (auth, node) {
        (Auth::Psk, _) => Credentials::Psk(PSK.to_owned()),
        (Auth::Certificates { a, .. }, "a") => Credentials::Enrolled(a.clone()),
        (Auth::Certificates { b, .. }, _) => Credentials::Enrolled(b.clone()),
    }
}

#[test]
fn psk_pair_comes_up_carries_traffic_and_notices_a_dead_peer() {
    if !have_root("psk_pair_comes_up_carries_traffic_and_notices_a_dead_peer") {
        return;
    }
    pair(&Auth::Psk, Stop::Kill);
}

#[test]
fn certificate_pair_comes_up_carries_traffic_and_notices_a_dead_peer() {
    if !have_root("certificate_pair_comes_up_carries_traffic_and_notices_a_dead_peer") {
        return;
    }
    let ca = enroll_common::TestCa::new();
    let server = ca.serve(&[]);
    let scratch = WorkDir::temp("daemon-pair-certs").or_panic();
    let enroll = |name: &str, endpoint: &str| {
        let dir = scratch.join(name);
        ca.enroll(&server, &format!("{name}.vn.example"), endpoint, &dir);
        dir
    };
    let a = enroll("a", "198.51.100.1");
    let b = enroll("b", "198.51.100.2");
    pair(&Auth::Certificates { a, b }, Stop::Terminate);
}

/// How the second daemon is stopped at the end.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// SIGKILL: the first notices by liveness checks.
    Kill,
    /// SIGTERM: the second deletes its SAs with the first before it exits, well before
    /// a liveness check could notice.
    Terminate,
}

fn two_nodes(auth: &Auth) -> TwoNodes {
    TwoNodes::new("dp", TWO_NODES_V4, |node| credentials(auth, node)).or_panic()
}

/// The IKE SA of a and of b once each has exactly one, established, with exactly one
/// installed child SA pair, and the two describe the same SAs: the IKE SPIs are equal and
/// each child's inbound SPI is the other's outbound. The selectors must be IP-in-IP
/// between the two endpoints, in transport mode.
fn one_pair_on_both(a: &Daemon, b: &Daemon) -> Result<Option<(IkeSaReport, IkeSaReport)>> {
    let single = |sas: Vec<IkeSaReport>| {
        let [sa] = <[IkeSaReport; 1]>::try_from(sas).ok()?;
        (sa.state == "ESTABLISHED"
            && sa.child_sas.len() == 1
            && sa.child_sas[0].state == "INSTALLED")
            .then_some(sa)
    };
    let (Some(x), Some(y)) = (single(a.sas()?), single(b.sas()?)) else {
        return Ok(None);
    };
    // The two views are of two moments (each a call to a busy daemon): a's is only b's
    // contemporary if a still shows that SA once b has answered. Crossing initiations
    // otherwise showed a with the loser still alone (the winner not begun yet) beside b
    // with the winner alone (the loser already gone).
    let spis = |sa: &IkeSaReport| (sa.spi_initiator, sa.spi_responder);
    if single(a.sas()?).as_ref().map(spis) != Some(spis(&x)) {
        return Ok(None);
    }
    assert_eq!((x.name.as_str(), y.name.as_str()), ("b", "a"));
    assert_eq!(
        (x.spi_initiator, x.spi_responder),
        (y.spi_initiator, y.spi_responder)
    );
    assert_ne!(x.spi_initiator.0, 0);
    assert_ne!(x.spi_responder.0, 0);
    assert_ne!(x.initiator, y.initiator);
    assert_eq!(
        (x.local_identity.as_str(), x.remote_identity.as_str()),
        ("a.vn.example", "b.vn.example")
    );
    assert_eq!(x.local_addr.ip(), y.remote_addr.ip());
    assert!(x.established_at.is_some() && x.rekey_at.is_some());
    let (cx, cy) = (&x.child_sas[0], &y.child_sas[0]);
    assert_eq!(cx.inbound.spi, cy.outbound.spi);
    assert_eq!(cx.outbound.spi, cy.inbound.spi);
    for (c, local, remote) in [
        (cx, &x.local_addr, &x.remote_addr),
        (cy, &y.local_addr, &y.remote_addr),
    ] {
        assert_eq!(c.mode, Mode::Transport);
        let ts = |addr: std::net::IpAddr| TrafficSelector {
            addr,
            prefix_len: 32,
            protocol: 4,
        };
        assert_eq!(c.local_ts, [ts(local.ip())]);
        assert_eq!(c.remote_ts, [ts(remote.ip())]);
        assert!(c.rekey_at.is_some() && c.expire_at > c.rekey_at);
    }
    Ok(Some((x, y)))
}

fn wait_one_pair(a: &Daemon, b: &Daemon, within: Duration) -> (IkeSaReport, IkeSaReport) {
    wait_until(
        "one IKE SA with one child SA pair on both",
        within,
        Duration::from_millis(100),
        || one_pair_on_both(a, b),
    )
    .or_panic()
}

fn pair(auth: &Auth, stop: Stop) {
    let dir = WorkDir::temp("daemon-pair").or_panic();
    let nodes = two_nodes(auth);
    let (a, mut b) = nodes.start(dir.path()).or_panic();

    let up_a = a.wait_established("b", Duration::from_secs(30)).or_panic();
    b.wait_established("a", Duration::from_secs(30)).or_panic();

    if let Auth::Certificates { .. } = auth {
        let certs = a.certs().or_panic();
        assert!(
            certs
                .iter()
                .any(|c| c.identities == ["a.vn.example", "198.51.100.1"]
                    && c.issuer == "CN=vn.example"),
            "a's certificate is not listed: {certs:?}"
        );
    }
    let sas_before = wait_one_pair(&a, &b, Duration::from_secs(10));
    nodes
        .a_ns
        .run("ping", &["-c", "3", "-W", "2", "-i", "0.2", "10.255.0.1"])
        .or_panic();
    let sas_after = one_pair_on_both(&a, &b)
        .or_panic()
        .expect("one IKE SA with one child SA pair after the ping");
    assert_eq!(
        sas_before.0.spi_initiator, sas_after.0.spi_initiator,
        "the IKE SA changed"
    );
    let (before, after) = (&sas_before.0.child_sas[0], &sas_after.0.child_sas[0]);
    assert!(
        after.outbound.packets >= before.outbound.packets + 3
            && after.inbound.packets >= before.inbound.packets + 3
            && after.outbound.bytes > before.outbound.bytes
            && after.inbound.last_use.is_some(),
        "list-sas counters did not grow by the three pings: {before:?} -> {after:?}"
    );
    let after = a
        .established("b")
        .or_panic()
        .expect("still up after the ping");
    assert!(
        after.traffic.packets_out >= up_a.traffic.packets_out + 3
            && after.traffic.packets_in >= up_a.traffic.packets_in + 3,
        "ESP counters did not grow by the three pings: {:?} -> {:?}",
        up_a.traffic,
        after.traffic
    );

    let (signal, bound) = match stop {
        Stop::Kill => (libc::SIGKILL, LIVENESS_BOUND),
        Stop::Terminate => (libc::SIGTERM, Duration::from_secs(2)),
    };
    b.process.signal(signal).or_panic();
    let down = a.wait_link_down("b", bound).or_panic();
    let error = down.last_error.map(|e| e.message).unwrap_or_default();
    assert_eq!(
        error.contains("liveness"),
        stop == Stop::Kill,
        "why a's adjacency went down: {error:?}"
    );
    if stop == Stop::Terminate {
        let status = wait_until(
            "b to exit after SIGTERM",
            Duration::from_secs(5),
            Duration::from_millis(50),
            || b.process.exited(),
        )
        .or_panic();
        assert!(status.success(), "b exited with {status}");
        let links = nodes.b_ns.ip(&["-o", "link", "show"]).or_panic();
        assert!(!links.contains("vn-a"), "b left its link behind: {links}");
    }
}

#[test]
fn ready_then_reload_replaces_a_removed_neighbor_with_an_added_one() {
    if !have_root("ready_then_reload_replaces_a_removed_neighbor_with_an_added_one") {
        return;
    }
    let dir = WorkDir::temp("daemon-reload").or_panic();
    let ns = Netns::new("drl").or_panic();
    ns.ip(&["addr", "add", "198.51.100.1/24", "dev", "lo"])
        .or_panic();
    let config =
        |peer: &str, peer_endpoint: &str| {
            NodeConfig::new("a", "198.51.100.1", credentials(&Auth::Psk, "a"))
                .neighbor(Neighbor::new(peer, peer_endpoint, "10.255.0.0/31"))
        };
    let notify_path = dir.join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut daemon = Daemon::start(
        &ns,
        dir.path(),
        &config("b", "198.51.100.2"),
        &[("NOTIFY_SOCKET", &notify_path)],
    )
    .or_panic();
    let mut datagram = [0u8; 512];
    let n = notify.recv(&mut datagram).expect("no sd_notify datagram");
    let message = String::from_utf8_lossy(&datagram[..n]);
    assert!(
        message.lines().any(|l| l == "READY=1"),
        "not ready: {message:?}"
    );
    let names = |daemon: &Daemon| -> Result<Option<Vec<String>>> {
        let n = daemon.neighbors()?;
        Ok((!n.is_empty()).then(|| n.into_iter().map(|n| n.name).collect()))
    };
    let before = wait_until(
        "the daemon to answer",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || names(&daemon),
    )
    .or_panic();
    assert_eq!(before, ["b"]);
    assert!(ns.ip(&["link", "show", "vn-b"]).is_ok());

    daemon.rewrite(&config("c", "198.51.100.3")).or_panic();
    let out = daemon.ctl(&["reload"]).unwrap();
    assert!(
        out.status.success(),
        "reload failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(names(&daemon).or_panic().unwrap_or_default(), ["c"]);
    assert!(ns.ip(&["link", "show", "vn-c"]).is_ok());
    assert!(
        ns.ip(&["link", "show", "vn-b"]).is_err(),
        "the removed neighbor's link is still there"
    );
}

#[test]
fn crossing_initiations_leave_one_ike_sa_and_one_pair() {
    if !have_root("crossing_initiations_leave_one_ike_sa_and_one_pair") {
        return;
    }
    let dir = WorkDir::temp("daemon-crossing").or_panic();
    let mut nodes = two_nodes(&Auth::Psk);
    // IKE is held back in both namespaces until both daemons have initiated, so that
    // their IKE_SA_INIT requests (retransmitted every second) cross. Ten of them outlast
    // the hold however slowly the test lifts it.
    for node in [&mut nodes.a, &mut nodes.b] {
        node.ike = node
            .ike
            .replace("retransmit_tries = 2", "retransmit_tries = 10");
        assert!(node.ike.contains("retransmit_tries = 10"), "{}", node.ike);
    }
    let hold = dir.join("hold.nft");
    std::fs::write(
        &hold,
        "add table inet hold\n\
         add chain inet hold out { type filter hook output priority 0; }\n\
         add rule inet hold out udp dport 500 drop\n",
    )
    .unwrap();
    for ns in [&nodes.a_ns, &nodes.b_ns] {
        ns.run("nft", &["-f", hold.to_str().unwrap()]).or_panic();
    }
    let (a, b) = nodes.start(dir.path()).or_panic();
    for daemon in [&a, &b] {
        wait_until(
            "both daemons to initiate",
            scaled(Duration::from_secs(5)),
            Duration::from_millis(50),
            || Ok(daemon.status()?.filter(|s| s.counts.half_open >= 1)),
        )
        .or_panic();
    }
    for ns in [&nodes.a_ns, &nodes.b_ns] {
        ns.run("nft", &["delete", "table", "inet", "hold"])
            .or_panic();
    }
    let (x, y) = wait_one_pair(&a, &b, scaled(Duration::from_secs(20)));
    for (daemon, sa, peer) in [(&a, &x, "b"), (&b, &y, "a")] {
        let s = daemon.status().or_panic().expect("status");
        assert_eq!(
            (s.counts.ike_sas, s.counts.child_sas, s.counts.half_open),
            (1, 1, 0),
            "{s:?}"
        );
        let n = daemon.established(peer).or_panic().expect("adjacency up");
        assert!(
            n.next_rekey
                .is_some_and(|t| Some(t) == sa.child_sas[0].rekey_at)
        );
    }
    // Nothing else settles later: the same single pair a while on.
    std::thread::sleep(Duration::from_secs(3));
    let (x2, y2) = one_pair_on_both(&a, &b)
        .or_panic()
        .expect("still one IKE SA with one pair");
    assert_eq!(x2.child_sas[0].inbound.spi, x.child_sas[0].inbound.spi);
    assert_eq!(y2.child_sas[0].inbound.spi, y.child_sas[0].inbound.spi);
    for daemon in [&a, &b] {
        assert!(
            daemon
                .log()
                .lines()
                .any(|l| l.contains("IKE SA down") && l.contains("Duplicate")),
            "the initiations did not cross: {}",
            daemon.process.dump()
        );
    }
}

/// a's report of its neighbor b once `accept` takes it, within `within`.
fn wait_for_b(
    a: &Daemon,
    what: &str,
    within: Duration,
    accept: impl Fn(&NeighborReport) -> bool,
) -> NeighborReport {
    wait_until(what, within, Duration::from_millis(100), || {
        Ok(a.neighbor("b")?.filter(|n| accept(n)))
    })
    .or_panic()
}

/// Two pings from a to b's end of the virtual link, answered.
fn ping_b(nodes: &TwoNodes) {
    nodes
        .a_ns
        .run("ping", &["-c", "2", "-W", "2", "-i", "0.2", "10.255.0.1"])
        .or_panic();
}

fn last_error(n: &NeighborReport) -> &str {
    n.last_error.as_ref().map_or("", |e| e.message.as_str())
}

/// b refuses what a proposes (`refuse` sets the two nodes up so), and a's attempt fails
/// with `error` well within the 30 s connect timeout: the refusal itself fails it.
fn a_refusal_fails_the_attempt_at_once(
    test: &str,
    refuse: impl FnOnce(&mut TwoNodes),
    error: &str,
) {
    if !have_root(test) {
        return;
    }
    let dir = WorkDir::temp("daemon-refused").or_panic();
    let mut nodes = two_nodes(&Auth::Psk);
    refuse(&mut nodes);
    let (a, _b) = nodes.start(dir.path()).or_panic();
    let n = wait_for_b(
        &a,
        "a to record the refusal",
        Duration::from_secs(10),
        |n| last_error(n) == error,
    );
    assert_ne!(n.adjacency, "established");
    assert_eq!(n.link_state, LinkState::Down);
}

#[test]
fn a_refused_child_sa_fails_the_attempt_at_once_and_says_why() {
    a_refusal_fails_the_attempt_at_once(
        "a_refused_child_sa_fails_the_attempt_at_once_and_says_why",
        // b carries only IPv6 over its link to a, so it accepts only protocol 41
        // selectors where a proposes protocol 4.
        |nodes| nodes.b.neighbors[0].address = "fd00:255::1/127".to_owned(),
        "child SA refused: TS_UNACCEPTABLE",
    );
}

#[test]
fn a_refused_ike_sa_fails_the_attempt_at_once_and_says_why() {
    a_refusal_fails_the_attempt_at_once(
        "a_refused_ike_sa_fails_the_attempt_at_once_and_says_why",
        // No IKE suite in common: each answers the other's IKE_SA_INIT with
        // NO_PROPOSAL_CHOSEN.
        |nodes| {
            nodes.a.ike += "proposals = [\"aes256gcm16-prfsha384-ecp256\"]\n";
            nodes.b.ike += "proposals = [\"chacha20poly1305-prfsha256-x25519\"]\n";
        },
        "IKE SA refused: NO_PROPOSAL_CHOSEN",
    );
}

#[test]
fn a_lost_link_takes_the_adjacency_down_and_it_recovers() {
    if !have_root("a_lost_link_takes_the_adjacency_down_and_it_recovers") {
        return;
    }
    let dir = WorkDir::temp("daemon-link-lost").or_panic();
    let nodes = two_nodes(&Auth::Psk);
    let (a, _b) = nodes.start(dir.path()).or_panic();
    wait_for_b(&a, "a up", Duration::from_secs(30), |n| {
        n.adjacency == "established" && n.link_state == LinkState::Up
    });
    nodes.a_ns.ip(&["link", "delete", "vn-b"]).or_panic();
    wait_for_b(
        &a,
        "a to notice the lost link",
        scaled(Duration::from_secs(5)),
        |n| last_error(n) == "virtual link lost",
    );
    // The failure is recorded, so the adjacency went down: up again is a recovery.
    let again = wait_for_b(&a, "a up again", Duration::from_secs(30), |n| {
        n.adjacency == "established" && n.link_state == LinkState::Up
    });
    assert_eq!(last_error(&again), "virtual link lost");
    assert!(
        nodes.a_ns.ip(&["link", "show", "vn-b"]).is_ok(),
        "the link was not made again"
    );
    ping_b(&nodes);
}

#[test]
fn a_daemon_killed_and_restarted_replaces_its_stale_sas_at_once() {
    if !have_root("a_daemon_killed_and_restarted_replaces_its_stale_sas_at_once") {
        return;
    }
    let dir = WorkDir::temp("daemon-restart").or_panic();
    let mut nodes = two_nodes(&Auth::Psk);
    // b's liveness checks wait longer than the test runs: only a's INITIAL_CONTACT can
    // tell b that a restarted, however slowly a starts again.
    nodes.b.ike = "liveness = \"1h\"\n".to_owned();
    let (mut a, b) = nodes.start(dir.path()).or_panic();
    let (before, _) = wait_one_pair(&a, &b, Duration::from_secs(30));
    let b_before = b.neighbor("a").or_panic().expect("b lists a");
    a.process.signal(libc::SIGKILL).or_panic();
    wait_until(
        "a to die",
        Duration::from_secs(5),
        Duration::from_millis(50),
        || a.process.exited(),
    )
    .or_panic();
    a.restart(&nodes.a_ns, dir.path()).or_panic();
    // At once: a's INITIAL_CONTACT tells b.
    let (after, _) = wait_until(
        "one new IKE SA with one pair on both",
        scaled(Duration::from_secs(3)),
        Duration::from_millis(50),
        || Ok(one_pair_on_both(&a, &b)?.filter(|(x, _)| x.spi_initiator != before.spi_initiator)),
    )
    .or_panic();
    assert_ne!(
        after.child_sas[0].inbound.spi,
        before.child_sas[0].inbound.spi
    );
    assert!(
        b.log()
            .lines()
            .any(|l| l.contains("IKE SA down") && l.contains("PeerRestarted")),
        "b did not end the stale IKE SA: {}",
        b.process.dump()
    );
    // For b the restart replaced a pair: its link stayed up, so routing saw no flap.
    let b_after = b.neighbor("a").or_panic().expect("b lists a");
    assert_eq!(
        (b_after.last_established, b_after.last_error.as_ref()),
        (b_before.last_established, None),
        "b's adjacency went down across a's restart: {}",
        b.process.dump()
    );
    ping_b(&nodes);
}

/// SAs reach their hard lifetime when their rekey goes unanswered: the data plane drops
/// them and reports it, and the adjacency goes down at once (long before the rekey's
/// retransmissions run out or a liveness check could fail); once the peer answers again,
/// the pair is negotiated anew.
#[test]
fn sas_outliving_an_unanswered_rekey_expire_and_the_pair_recovers() {
    if !have_root("sas_outliving_an_unanswered_rekey_expire_and_the_pair_recovers") {
        return;
    }
    let dir = WorkDir::temp("daemon-expire").or_panic();
    let mut nodes = two_nodes(&Auth::Psk);
    // a rekeys its pair after ~6 s and hands the data plane a hard lifetime of 7.2 s;
    // its retransmissions would give up after ~80 s. b rekeys nothing while the test runs.
    nodes.a.ike = "child_rekey_time = \"6s\"\nliveness = \"1h\"\nretransmit_timeout = \"2s\"\n\
                   retransmit_base = 1.8\nretransmit_tries = 5\n"
        .to_owned();
    nodes.b.ike = "liveness = \"1h\"\nretransmit_timeout = \"2s\"\n".to_owned();
    let (a, mut b) = nodes.start(dir.path()).or_panic();
    let up = |n: &NeighborReport| n.adjacency == "established" && n.link_state == LinkState::Up;
    wait_for_b(&a, "a up", Duration::from_secs(30), up);
    // Whichever pair a has now (the first, or its replacement if a rekey came first),
    // its next rekey goes unanswered.
    b.process.signal(libc::SIGSTOP).or_panic();
    let expired = wait_for_b(
        &a,
        "a's SAs to expire",
        scaled(Duration::from_secs(20)),
        |n| n.last_error.is_some(),
    );
    b.process.signal(libc::SIGCONT).or_panic();
    assert_eq!(
        last_error(&expired),
        "child SAs deleted or expired",
        "{}",
        a.process.dump()
    );
    assert_ne!(expired.link_state, LinkState::Up);
    // The cause is the data plane's hard expiry (the log is written on its own thread).
    wait_until(
        "a's log to show the data plane's hard expiry",
        scaled(Duration::from_secs(5)),
        Duration::from_millis(50),
        || Ok(a.log().contains("HardExpire").then_some(())),
    )
    .or_panic();
    // The failure is recorded, so the adjacency went down: up again is a recovery.
    wait_for_b(&a, "a up again", Duration::from_secs(30), up);
    ping_b(&nodes);
}

/// An attempt whose IKE_SA_INIT goes unanswered outlives its connect timeout (the
/// retransmissions go on for minutes); the next attempt drops it, so a peer that is gone
/// has one half-open IKE SA of ours at a time, not one per attempt.
#[test]
fn a_new_attempt_drops_the_one_it_supersedes() {
    if !have_root("a_new_attempt_drops_the_one_it_supersedes") {
        return;
    }
    let dir = WorkDir::temp("daemon-superseded").or_panic();
    let mut nodes = two_nodes(&Auth::Psk);
    nodes.a.ike = SLOW_RETRANSMITS.to_owned();
    let (a, mut b) = nodes.start(dir.path()).or_panic();
    wait_one_pair(&a, &b, Duration::from_secs(30));
    b.process.stop().or_panic();
    // b's DELETE fails a; its first attempt after that ends at the connect timeout, and
    // the second starts after the back-off.
    wait_until(
        "a's second attempt since b went",
        Duration::from_secs(90),
        Duration::from_millis(200),
        || {
            let attempts = a
                .history("b")?
                .iter()
                .filter(|t| t.from == "backoff" && t.to == "connecting")
                .count();
            Ok((attempts >= 2).then_some(()))
        },
    )
    .or_panic();
    let sas = a.sas().or_panic();
    assert_eq!(
        sas.iter().map(|sa| sa.state.as_str()).collect::<Vec<_>>(),
        ["CONNECTING"],
        "{sas:#?}"
    );
}

/// A daemon stopped and started again still shows its neighbor's past: the history kept
/// in the adjacency records outlives the process.
#[test]
fn a_restarted_daemon_shows_its_neighbors_past() {
    if !have_root("a_restarted_daemon_shows_its_neighbors_past") {
        return;
    }
    let dir = WorkDir::temp("daemon-history").or_panic();
    let mut nodes = two_nodes(&Auth::Psk);
    // a's attempts after b has gone stay unanswered beyond the test, so its last error
    // stays the one recorded before the restart.
    nodes.a.ike = SLOW_RETRANSMITS.to_owned();
    let (mut a, mut b) = nodes.start(dir.path()).or_panic();
    wait_one_pair(&a, &b, Duration::from_secs(30));
    let up = a.neighbor("b").or_panic().expect("a lists b");
    assert!(up.last_established.is_some());
    // b goes for good, deleting its SAs: a's adjacency fails and stays down.
    b.process.stop().or_panic();
    let failed = wait_for_b(&a, "a to see b go", scaled(Duration::from_secs(10)), |n| {
        n.last_error.is_some()
    });
    a.restart(&nodes.a_ns, dir.path()).or_panic();
    let after = wait_for_b(
        &a,
        "a to answer again",
        scaled(Duration::from_secs(10)),
        |_| true,
    );
    assert_eq!(
        (after.last_established, last_error(&after)),
        (up.last_established, last_error(&failed)),
        "{}",
        a.process.dump()
    );
    assert_ne!(after.adjacency, "up");
    // The transitions before the restart are there, the stop among them, then the new
    // start.
    let history = a.history("b").or_panic();
    let at = |to: &str, cause: &str| {
        history
            .iter()
            .position(|t| t.to == to && t.cause == cause)
            .unwrap_or_else(|| panic!("no change to {to} ({cause}) in {history:#?}"))
    };
    let established = at("established", "child SAs installed and link up");
    let stopped = at("removed", "daemon stopped");
    let started = history
        .iter()
        .rposition(|t| t.from == "configured" && t.to == "connecting")
        .unwrap_or_else(|| panic!("no start in {history:#?}"));
    assert!(established < stopped && stopped < started, "{history:#?}");
}
