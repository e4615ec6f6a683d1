//! Two real `iiptrand` processes in two network namespaces joined by a veth pair, with
//! the userspace data plane: the adjacency comes up on both, `list-sas` shows the same
//! single IKE SA and transport-mode IPIP child SA pair on both, a ping crosses the
//! virtual link with ESP counters growing, and when one daemon dies the other takes its
//! link down within the liveness bound; once with a pre-shared key, once with
//! certificates from the VN CA through `iiptrand enroll`. Crossing initiations end with
//! one IKE SA and one pair; a refused child SA fails the attempt at once with its reason;
//! a link deleted behind the daemon's back takes the adjacency down and it recovers. A
//! single daemon also shows its readiness (sd_notify) and applies a reload. Needs root
//! and nft.

mod enroll_common;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use iiptran::control::protocol::{
    CertReport, IkeSaReport, LinkState, Mode, NeighborReport, StatusReport, TrafficSelector,
};
use iiptran::control::{Body, Response};
use support::netns::{Netns, veth};
use support::process::Process;
use support::wait::wait_until;
use support::{OrPanic, TempDir, have_root};

const IIPTRAND: &str = env!("CARGO_BIN_EXE_iiptrand");
const IIPTRANCTL: &str = env!("CARGO_BIN_EXE_iiptranctl");
const PSK: &str = "a long pre-shared key for the daemon pair test";
/// Idle time before a liveness check, and the retransmissions after it: 2 s + 3 × 1 s.
const LIVENESS: &str =
    "liveness = \"2s\"\nretransmit_timeout = \"1s\"\nretransmit_base = 1.0\nretransmit_tries = 2\n";
const LIVENESS_BOUND: Duration = Duration::from_secs(20);

/// One node of the pair: its namespace, files and daemon.
struct Node {
    ns: Netns,
    socket: PathBuf,
    config: PathBuf,
}

/// How the two nodes authenticate each other.
enum Auth {
    Psk,
    /// The directory `iiptrand enroll` wrote each node's key.pem, cert.pem and ca.pem to.
    Certificates {
        a: PathBuf,
        b: PathBuf,
    },
}

struct Side<'a> {
    name: &'a str,
    /// The `[auth]` section, or the neighbor's `psk` line.
    credentials: (String, String),
    endpoint: &'a str,
    inner: &'a str,
    peer: &'a str,
    peer_endpoint: &'a str,
}

fn write_config(dir: &Path, side: &Side<'_>) -> Result<(PathBuf, PathBuf)> {
    let state = dir.join(format!("{}-state", side.name));
    let socket = dir.join(format!("{}.sock", side.name));
    let text = format!(
        "[node]\nname = \"{name}\"\nidentity = \"{name}.vn.example\"\nendpoint = \"{endpoint}\"\n\
         dataplane = \"userspace\"\nstate_dir = \"{state}\"\ncontrol_socket = \"{socket}\"\n\n\
         {auth}[ike]\n{LIVENESS}\n\
         [[neighbor]]\nname = \"{peer}\"\nidentity = \"{peer}.vn.example\"\nendpoint = \"{peer_endpoint}\"\n\
         link = {{ name = \"vn-{peer}\", address = \"{inner}\", mtu = 1400 }}\n{psk}",
        auth = side.credentials.0,
        psk = side.credentials.1,
        name = side.name,
        endpoint = side.endpoint,
        state = state.display(),
        socket = socket.display(),
        peer = side.peer,
        peer_endpoint = side.peer_endpoint,
        inner = side.inner,
    );
    let config = dir.join(format!("{}.toml", side.name));
    std::fs::write(&config, text)?;
    Ok((config, socket))
}

/// Starts a daemon; `env` adds to its environment.
fn start(node: &Node, dir: &Path, name: &str, env: &[(&str, &Path)]) -> Result<Process> {
    let mut command = node.ns.command(IIPTRAND);
    command.envs(env.iter().copied());
    command.arg("--config").arg(&node.config);
    command.env("RUST_LOG", "info,iiptran=debug,iiptran_ike=debug");
    Process::spawn(name, command, dir)
}

/// The answer of `iiptranctl --json VERB`, or `None` while the daemon does not answer.
fn ask(socket: &Path, verb: &str) -> Result<Option<Body>> {
    let out = Command::new(IIPTRANCTL)
        .arg("--socket")
        .arg(socket)
        .args(["--json", verb])
        .output()
        .context("running iiptranctl")?;
    if !out.status.success() {
        return Ok(None);
    }
    let response: Response = serde_json::from_slice(&out.stdout)?;
    Ok(Some(response.body))
}

fn neighbors(socket: &Path) -> Result<Vec<NeighborReport>> {
    match ask(socket, "list-neighbors")? {
        None => Ok(Vec::new()),
        Some(Body::Neighbors(n)) => Ok(n),
        Some(other) => bail!("unexpected answer {other:?}"),
    }
}

fn list_certs(socket: &Path) -> Result<Vec<CertReport>> {
    match ask(socket, "list-certs")? {
        Some(Body::Certs(c)) => Ok(c),
        other => bail!("unexpected answer {other:?}"),
    }
}

/// The IKE SAs, none while the daemon does not answer.
fn list_sas(socket: &Path) -> Result<Vec<IkeSaReport>> {
    match ask(socket, "list-sas")? {
        None => Ok(Vec::new()),
        Some(Body::Sas(s)) => Ok(s),
        Some(other) => bail!("unexpected answer {other:?}"),
    }
}

fn status(socket: &Path) -> Result<Option<StatusReport>> {
    match ask(socket, "status")? {
        None => Ok(None),
        Some(Body::Status(s)) => Ok(Some(s)),
        Some(other) => bail!("unexpected answer {other:?}"),
    }
}

/// The IKE SA of a and of b once each has exactly one, established, with exactly one
/// installed child SA pair, and the two describe the same SAs: the IKE SPIs are equal and
/// each child's inbound SPI is the other's outbound. The selectors must be IP-in-IP
/// between the two endpoints, in transport mode.
fn one_pair_on_both(a: &Node, b: &Node) -> Result<Option<(IkeSaReport, IkeSaReport)>> {
    let single = |sas: Vec<IkeSaReport>| {
        let [sa] = <[IkeSaReport; 1]>::try_from(sas).ok()?;
        (sa.state == "ESTABLISHED"
            && sa.child_sas.len() == 1
            && sa.child_sas[0].state == "INSTALLED")
            .then_some(sa)
    };
    let (Some(x), Some(y)) = (single(list_sas(&a.socket)?), single(list_sas(&b.socket)?)) else {
        return Ok(None);
    };
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

fn established(socket: &Path) -> Result<Option<NeighborReport>> {
    Ok(neighbors(socket)?
        .into_iter()
        .find(|n| n.adjacency == "established" && n.link_state == LinkState::Up))
}

fn credentials(auth: &Auth, node: &str) -> (String, String) {
    let dir = match (auth, node) {
        (Auth::Psk, _) => return (String::new(), format!("psk = \"{PSK}\"\n")),
        (Auth::Certificates { a, .. }, "a") => a,
        (Auth::Certificates { b, .. }, _) => b,
    };
    let file = |name: &str| dir.join(name).display().to_string();
    let section = format!(
        "[auth]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n\n",
        file("ca.pem"),
        file("cert.pem"),
        file("key.pem")
    );
    (section, String::new())
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
    let scratch = TempDir::new("daemon-pair-certs").or_panic();
    let enroll = |name: &str, endpoint: &str| {
        let identity = format!("{name}.vn.example");
        let token = ca.token(&identity, endpoint, "1h");
        let dir = scratch.join(name);
        enroll_common::ok(
            IIPTRAND,
            &[
                "enroll",
                "--server",
                &server.url(""),
                // A token may begin with '-'.
                &format!("--token={token}"),
                "--ca-fingerprint",
                &ca.fingerprint,
                "--identity",
                &identity,
                "--dir",
                enroll_common::path_str(&dir),
            ],
        );
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

/// Two namespaces joined by a veth pair, each with its node's configuration.
fn two_nodes(dir: &Path, auth: &Auth) -> (Node, Node) {
    let a_ns = Netns::new("dpa").or_panic();
    let b_ns = Netns::new("dpb").or_panic();
    let (a_end, b_end) = veth(
        &a_ns,
        "198.51.100.1".parse().unwrap(),
        &b_ns,
        "198.51.100.2".parse().unwrap(),
        24,
    )
    .or_panic();
    let (a_ip, b_ip) = (a_end.addr.to_string(), b_end.addr.to_string());
    let (a_config, a_socket) = write_config(
        dir,
        &Side {
            name: "a",
            credentials: credentials(auth, "a"),
            endpoint: &a_ip,
            inner: "10.255.0.0/31",
            peer: "b",
            peer_endpoint: &b_ip,
        },
    )
    .or_panic();
    let (b_config, b_socket) = write_config(
        dir,
        &Side {
            name: "b",
            credentials: credentials(auth, "b"),
            endpoint: &b_ip,
            inner: "10.255.0.1/31",
            peer: "a",
            peer_endpoint: &a_ip,
        },
    )
    .or_panic();
    let a = Node {
        ns: a_ns,
        socket: a_socket,
        config: a_config,
    };
    let b = Node {
        ns: b_ns,
        socket: b_socket,
        config: b_config,
    };
    (a, b)
}

fn pair(auth: &Auth, stop: Stop) {
    let dir = TempDir::new("daemon-pair").or_panic();
    let (a, b) = two_nodes(dir.path(), auth);
    let _a_daemon = start(&a, dir.path(), "iiptrand-a", &[]).or_panic();
    let mut b_daemon = start(&b, dir.path(), "iiptrand-b", &[]).or_panic();

    let up_a = wait_until(
        "the adjacency up on a",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || established(&a.socket),
    )
    .or_panic();
    wait_until(
        "the adjacency up on b",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || established(&b.socket),
    )
    .or_panic();

    if let Auth::Certificates { .. } = auth {
        let certs = list_certs(&a.socket).or_panic();
        assert!(
            certs
                .iter()
                .any(|c| c.identities == ["a.vn.example", "198.51.100.1"]
                    && c.issuer == "CN=vn.example"),
            "a's certificate is not listed: {certs:?}"
        );
    }
    let sas_before = wait_until(
        "one IKE SA with one child SA pair on both",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || one_pair_on_both(&a, &b),
    )
    .or_panic();
    a.ns.run("ping", &["-c", "3", "-W", "2", "-i", "0.2", "10.255.0.1"])
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
    let after = established(&a.socket)
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
    b_daemon.signal(signal).or_panic();
    let down = wait_until(
        "a's link to go down after b stopped",
        bound,
        Duration::from_millis(100),
        || {
            let n = neighbors(&a.socket)?;
            Ok(n.into_iter()
                .find(|n| n.name == "b" && n.link_state == LinkState::Down))
        },
    )
    .or_panic();
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
            || b_daemon.exited(),
        )
        .or_panic();
        assert!(status.success(), "b exited with {status}");
        let links = b.ns.ip(&["-o", "link", "show"]).or_panic();
        assert!(!links.contains("vn-a"), "b left its link behind: {links}");
    }
}

#[test]
fn ready_then_reload_replaces_a_removed_neighbor_with_an_added_one() {
    if !have_root("ready_then_reload_replaces_a_removed_neighbor_with_an_added_one") {
        return;
    }
    let dir = TempDir::new("daemon-reload").or_panic();
    let ns = Netns::new("drl").or_panic();
    ns.ip(&["addr", "add", "198.51.100.1/24", "dev", "lo"])
        .or_panic();
    let side = |peer: &'static str, peer_endpoint: &'static str| Side {
        name: "a",
        credentials: credentials(&Auth::Psk, "a"),
        endpoint: "198.51.100.1",
        inner: "10.255.0.0/31",
        peer,
        peer_endpoint,
    };
    let (config, socket) = write_config(dir.path(), &side("b", "198.51.100.2")).or_panic();
    let node = Node { ns, socket, config };
    let notify_path = dir.join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let _daemon = start(
        &node,
        dir.path(),
        "iiptrand-a",
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
    let names = |socket: &Path| -> Result<Option<Vec<String>>> {
        let n = neighbors(socket)?;
        Ok((!n.is_empty()).then(|| n.into_iter().map(|n| n.name).collect()))
    };
    let before = wait_until(
        "the daemon to answer",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || names(&node.socket),
    )
    .or_panic();
    assert_eq!(before, ["b"]);
    assert!(node.ns.ip(&["link", "show", "vn-b"]).is_ok());

    write_config(dir.path(), &side("c", "198.51.100.3")).or_panic();
    let out = Command::new(IIPTRANCTL)
        .arg("--socket")
        .arg(&node.socket)
        .arg("reload")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "reload failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(names(&node.socket).or_panic().unwrap_or_default(), ["c"]);
    assert!(node.ns.ip(&["link", "show", "vn-c"]).is_ok());
    assert!(
        node.ns.ip(&["link", "show", "vn-b"]).is_err(),
        "the removed neighbor's link is still there"
    );
}

#[test]
fn crossing_initiations_leave_one_ike_sa_and_one_pair() {
    if !have_root("crossing_initiations_leave_one_ike_sa_and_one_pair") {
        return;
    }
    let dir = TempDir::new("daemon-crossing").or_panic();
    let (a, b) = two_nodes(dir.path(), &Auth::Psk);
    // IKE is held back in both namespaces until both daemons have initiated, so that
    // their IKE_SA_INIT requests (retransmitted a second later) cross.
    let hold = dir.join("hold.nft");
    std::fs::write(
        &hold,
        "add table inet hold\n\
         add chain inet hold out { type filter hook output priority 0; }\n\
         add rule inet hold out udp dport 500 drop\n",
    )
    .unwrap();
    for node in [&a, &b] {
        node.ns
            .run("nft", &["-f", hold.to_str().unwrap()])
            .or_panic();
    }
    let a_daemon = start(&a, dir.path(), "iiptrand-a", &[]).or_panic();
    let b_daemon = start(&b, dir.path(), "iiptrand-b", &[]).or_panic();
    for node in [&a, &b] {
        wait_until(
            "both daemons to initiate",
            Duration::from_secs(5),
            Duration::from_millis(50),
            || Ok(status(&node.socket)?.filter(|s| s.counts.half_open >= 1)),
        )
        .or_panic();
    }
    for node in [&a, &b] {
        node.ns
            .run("nft", &["delete", "table", "inet", "hold"])
            .or_panic();
    }
    let (x, y) = wait_until(
        "one IKE SA with one child SA pair on both",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || one_pair_on_both(&a, &b),
    )
    .or_panic();
    for (node, sa) in [(&a, &x), (&b, &y)] {
        let s = status(&node.socket).or_panic().expect("status");
        assert_eq!(
            (s.counts.ike_sas, s.counts.child_sas, s.counts.half_open),
            (1, 1, 0),
            "{s:?}"
        );
        let n = established(&node.socket).or_panic().expect("adjacency up");
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
    for daemon in [&a_daemon, &b_daemon] {
        assert!(
            daemon
                .stderr()
                .lines()
                .any(|l| l.contains("IKE SA down") && l.contains("Duplicate")),
            "the initiations did not cross: {}",
            daemon.dump()
        );
    }
}

/// a's report of its neighbor b once `accept` takes it, within `within`.
fn wait_for_b(
    a: &Node,
    what: &str,
    within: Duration,
    accept: impl Fn(&NeighborReport) -> bool,
) -> NeighborReport {
    wait_until(what, within, Duration::from_millis(100), || {
        Ok(neighbors(&a.socket)?
            .into_iter()
            .find(|n| n.name == "b" && accept(n)))
    })
    .or_panic()
}

fn last_error(n: &NeighborReport) -> &str {
    n.last_error.as_ref().map_or("", |e| e.message.as_str())
}

#[test]
fn a_refused_child_sa_fails_the_attempt_at_once_and_says_why() {
    if !have_root("a_refused_child_sa_fails_the_attempt_at_once_and_says_why") {
        return;
    }
    let dir = TempDir::new("daemon-refused").or_panic();
    let (a, b) = two_nodes(dir.path(), &Auth::Psk);
    // b carries only IPv6 over its link to a, so it accepts only protocol 41 selectors
    // where a proposes protocol 4.
    let text = std::fs::read_to_string(&b.config).unwrap();
    let text = text.replace("10.255.0.1/31", "fd00:255::1/127");
    std::fs::write(&b.config, text).unwrap();
    let _a_daemon = start(&a, dir.path(), "iiptrand-a", &[]).or_panic();
    let _b_daemon = start(&b, dir.path(), "iiptrand-b", &[]).or_panic();
    // Well within the 30 s connect timeout: the refusal itself fails the attempt.
    let n = wait_for_b(
        &a,
        "a to record the refusal",
        Duration::from_secs(10),
        |n| last_error(n) == "child SA refused: TS_UNACCEPTABLE",
    );
    assert_ne!(n.adjacency, "established");
    assert_eq!(n.link_state, LinkState::Down);
}

#[test]
fn a_lost_link_takes_the_adjacency_down_and_it_recovers() {
    if !have_root("a_lost_link_takes_the_adjacency_down_and_it_recovers") {
        return;
    }
    let dir = TempDir::new("daemon-link-lost").or_panic();
    let (a, b) = two_nodes(dir.path(), &Auth::Psk);
    let _a_daemon = start(&a, dir.path(), "iiptrand-a", &[]).or_panic();
    let _b_daemon = start(&b, dir.path(), "iiptrand-b", &[]).or_panic();
    wait_for_b(&a, "a up", Duration::from_secs(30), |n| {
        n.adjacency == "established" && n.link_state == LinkState::Up
    });
    a.ns.ip(&["link", "delete", "vn-b"]).or_panic();
    wait_for_b(
        &a,
        "a to notice the lost link",
        Duration::from_secs(5),
        |n| last_error(n) == "virtual link lost",
    );
    // The failure is recorded, so the adjacency went down: up again is a recovery.
    let again = wait_for_b(&a, "a up again", Duration::from_secs(30), |n| {
        n.adjacency == "established" && n.link_state == LinkState::Up
    });
    assert_eq!(last_error(&again), "virtual link lost");
    assert!(
        a.ns.ip(&["link", "show", "vn-b"]).is_ok(),
        "the link was not made again"
    );
    a.ns.run("ping", &["-c", "2", "-W", "2", "-i", "0.2", "10.255.0.1"])
        .or_panic();
}

#[test]
fn a_daemon_killed_and_restarted_replaces_its_stale_sas_at_once() {
    if !have_root("a_daemon_killed_and_restarted_replaces_its_stale_sas_at_once") {
        return;
    }
    let dir = TempDir::new("daemon-restart").or_panic();
    let (a, b) = two_nodes(dir.path(), &Auth::Psk);
    let mut a_daemon = start(&a, dir.path(), "iiptrand-a", &[]).or_panic();
    let b_daemon = start(&b, dir.path(), "iiptrand-b", &[]).or_panic();
    let (before, _) = wait_until(
        "one IKE SA with one child SA pair on both",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || one_pair_on_both(&a, &b),
    )
    .or_panic();
    a_daemon.signal(libc::SIGKILL).or_panic();
    wait_until(
        "a to die",
        Duration::from_secs(5),
        Duration::from_millis(50),
        || a_daemon.exited(),
    )
    .or_panic();
    let _a_again = start(&a, dir.path(), "iiptrand-a-again", &[]).or_panic();
    // Sooner than b's liveness check could notice: a's INITIAL_CONTACT tells b.
    let (after, _) = wait_until(
        "one new IKE SA with one pair on both",
        Duration::from_secs(3),
        Duration::from_millis(50),
        || Ok(one_pair_on_both(&a, &b)?.filter(|(x, _)| x.spi_initiator != before.spi_initiator)),
    )
    .or_panic();
    assert_ne!(
        after.child_sas[0].inbound.spi,
        before.child_sas[0].inbound.spi
    );
    assert!(
        b_daemon
            .stderr()
            .lines()
            .any(|l| l.contains("IKE SA down") && l.contains("PeerRestarted")),
        "b did not end the stale IKE SA: {}",
        b_daemon.dump()
    );
    a.ns.run("ping", &["-c", "2", "-W", "2", "-i", "0.2", "10.255.0.1"])
        .or_panic();
}
