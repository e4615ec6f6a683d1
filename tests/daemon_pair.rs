//! Two real `iiptrand` processes in two network namespaces joined by a veth pair, with
//! the userspace data plane: the adjacency comes up on both, a ping crosses the virtual
//! link with ESP counters growing, and when one daemon dies the other takes its link
//! down within the liveness bound; once with a pre-shared key, once with certificates
//! from the VN CA through `iiptrand enroll`. A single daemon also shows its readiness
//! (sd_notify) and applies a reload. Needs root.

mod enroll_common;
mod support;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use support::daemon::{Credentials, Daemon, LIVENESS_BOUND, Neighbor, NodeConfig};
use support::netns::{Netns, veth};
use support::wait::wait_until;
use support::{OrPanic, TempDir, have_root};

const PSK: &str = "a long pre-shared key for the daemon pair test";

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
    let scratch = TempDir::new("daemon-pair-certs").or_panic();
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

fn pair(auth: &Auth, stop: Stop) {
    let dir = TempDir::new("daemon-pair").or_panic();
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
    let a_config = NodeConfig::new("a", &a_ip, credentials(auth, "a")).neighbor(Neighbor::new(
        "b",
        &b_ip,
        "10.255.0.0/31",
    ));
    let b_config = NodeConfig::new("b", &b_ip, credentials(auth, "b")).neighbor(Neighbor::new(
        "a",
        &a_ip,
        "10.255.0.1/31",
    ));
    let a = Daemon::start(&a_ns, dir.path(), &a_config, &[]).or_panic();
    let mut b = Daemon::start(&b_ns, dir.path(), &b_config, &[]).or_panic();

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
    a_ns.run("ping", &["-c", "3", "-W", "2", "-i", "0.2", "10.255.0.1"])
        .or_panic();
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
        let links = b_ns.ip(&["-o", "link", "show"]).or_panic();
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
