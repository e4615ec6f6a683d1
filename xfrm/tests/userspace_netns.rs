//! The userspace data plane between two network namespaces joined by veth: real TUN
//! devices, real UDP, real ping and TCP through the tunnel, and forged traffic that must
//! be rejected, over IPv4 and over IPv6 tunnel endpoints (IPv4 inner packets). Needs root
//! and `ping` (iputils-ping).

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use common::fixtures::Family;
use common::node::{EndConfig, INNER6_SPI_OFFSET, LINK, UserspaceNode};
use common::{ADDR_A, ADDR_A6, ADDR_B, ADDR_B6, Pair, if_stat};
use iiptran_testkit::command::sh;
use iiptran_testkit::netns::Netns;
use iiptran_testkit::wait::wait_until;
use iiptran_xfrm::{AeadAlg, DataplaneEvent, Error, IpPrefix, Lifetimes, Limits, SaId};

/// How often a waiting test looks again.
const POLL: Duration = Duration::from_millis(20);
const SPI_AB: u32 = 0x0000_0a01;
const SPI_BA: u32 = 0x0000_0b01;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The tunnel endpoints of `a` and `b` in `family`.
fn endpoints(family: Family) -> (IpAddr, IpAddr) {
    match family {
        Family::V4 => (ip(ADDR_A), ip(ADDR_B)),
        Family::V6 => (ip(ADDR_A6), ip(ADDR_B6)),
    }
}

fn ends(alg: AeadAlg, family: Family) -> (EndConfig, EndConfig) {
    let (addr_a, addr_b) = endpoints(family);
    let n = alg.key_len() + 4;
    let k_ab: Vec<u8> = (0..n as u8).collect();
    let k_ba: Vec<u8> = (0..n as u8).map(|b| b ^ 0x5a).collect();
    let a = EndConfig {
        local: addr_a,
        remote: addr_b,
        inner: IpPrefix::new("10.99.0.1".parse().unwrap(), 30).unwrap(),
        inner6: None,
        alg,
        out_spi: SPI_AB,
        out_keymat: k_ab.clone(),
        in_spi: SPI_BA,
        in_keymat: k_ba.clone(),
        with_out_sa: true,
        out_lifetimes: Lifetimes::default(),
    };
    let b = EndConfig {
        local: addr_b,
        remote: addr_a,
        inner: IpPrefix::new("10.99.0.2".parse().unwrap(), 30).unwrap(),
        inner6: None,
        out_spi: SPI_BA,
        out_keymat: k_ba,
        in_spi: SPI_AB,
        in_keymat: k_ab,
        ..a.clone()
    };
    (a, b)
}

fn id(src: IpAddr, dst: IpAddr, spi: u32) -> SaId {
    SaId { src, dst, spi }
}

fn ping(pair_ns: &Netns, dst: &str) -> bool {
    let out = pair_ns
        .exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", dst])
        .expect("running ping");
    if !out.status.success() {
        eprintln!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.status.success()
}

#[test]
fn ping_and_tcp_cross_the_userspace_tunnel() {
    ping_and_tcp(Family::V4);
}

#[test]
fn ping_and_tcp_cross_the_userspace_tunnel_over_ipv6() {
    ping_and_tcp(Family::V6);
}

fn ping_and_tcp(family: Family) {
    let pair = Pair::new();
    let (addr_a, addr_b) = endpoints(family);
    let (ca, cb) = ends(AeadAlg::ChaCha20Poly1305, family);
    let a = UserspaceNode::start(&pair.a, ca);
    let b = UserspaceNode::start(&pair.b, cb);

    assert!(
        ping(&pair.a, "10.99.0.2"),
        "ping a -> b over the virtual link"
    );
    let ab_out = a.stats(id(addr_a, addr_b, SPI_AB));
    let ab_in = b.stats(id(addr_a, addr_b, SPI_AB));
    let ba_in = a.stats(id(addr_b, addr_a, SPI_BA));
    assert!(
        ab_out.packets >= 3 && ab_in.packets >= 3 && ba_in.packets >= 3,
        "{ab_out:?} {ab_in:?} {ba_in:?}"
    );
    assert_eq!((ab_in.auth_failures, ab_in.replay_drops), (0, 0));
    assert!(ab_in.last_used.is_some());

    // TCP: b echoes, a sends 256 KiB and checks what comes back.
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    let server = iiptran_xfrm::netns::spawn_in(&pair.b.path(), move || async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("10.99.0.2:0").await.unwrap();
        port_tx.send(l.local_addr().unwrap().port()).unwrap();
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            s.write_all(&buf[..n]).await.unwrap();
        }
        s.shutdown().await.unwrap();
    })
    .unwrap();
    let port = port_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("server listening");
    let tun_rx_before = if_stat(&pair.b, LINK, "rx_packets");
    let data: Vec<u8> = (0..256 * 1024u32)
        .map(|i| (i * 7 + i / 251) as u8)
        .collect();
    let sent = data.clone();
    let client = iiptran_xfrm::netns::spawn_in(&pair.a.path(), move || async move {
        let mut s = std::net::TcpStream::connect_timeout(
            &SocketAddr::from(([10, 99, 0, 2], port)),
            Duration::from_secs(10),
        )
        .expect("connect through the tunnel");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut reader = s.try_clone().unwrap();
        let echo = std::thread::spawn(move || {
            let mut back = Vec::new();
            reader.read_to_end(&mut back).map(|_| back)
        });
        s.write_all(&sent).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        echo.join().unwrap()
    })
    .unwrap();
    let back = client.join().unwrap().unwrap().expect("echo read");
    server.join().unwrap().unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "echoed bytes differ");
    let after = b.stats(id(addr_a, addr_b, SPI_AB));
    assert!(after.bytes >= ab_in.bytes + data.len() as u64, "{after:?}");
    // Runs of TCP segments reach b's stack joined: fewer writes to its TUN device than
    // ESP packets opened.
    let tun_writes = if_stat(&pair.b, LINK, "rx_packets") - tun_rx_before;
    let opened = after.packets - ab_in.packets;
    assert!(
        tun_writes < opened,
        "{tun_writes} TUN writes for {opened} packets"
    );
    // Batched sends must neither repeat nor mangle a datagram.
    assert_eq!(
        (after.replay_drops, after.auth_failures),
        (0, 0),
        "{after:?}"
    );
    let back_in = a.stats(id(addr_b, addr_a, SPI_BA));
    assert_eq!(
        (back_in.replay_drops, back_in.auth_failures),
        (0, 0),
        "{back_in:?}"
    );
    // All of it went through links with no qdisc in front of the TUN device.
    for ns in [&pair.a, &pair.b] {
        let out = ns.exec(&["ip", "link", "show", LINK]).expect("ip link");
        let shown = String::from_utf8_lossy(&out.stdout);
        assert!(shown.contains(" qdisc noqueue "), "{shown}");
    }
}

#[test]
fn ipv6_inner_packets_take_their_own_sas_over_ipv4_endpoints() {
    ipv6_inner(Family::V4);
}

#[test]
fn ipv6_inner_packets_take_their_own_sas_over_ipv6_endpoints() {
    ipv6_inner(Family::V6);
}

/// IPv6 inner packets travel with outer protocol 41 under the protocol-41 SAs, never
/// under the protocol-4 ones.
fn ipv6_inner(family: Family) {
    let pair = Pair::new();
    let (addr_a, addr_b) = endpoints(family);
    let (mut ca, mut cb) = ends(AeadAlg::ChaCha20Poly1305, family);
    ca.inner6 = Some(IpPrefix::new("fd00:99::1".parse().unwrap(), 64).unwrap());
    cb.inner6 = Some(IpPrefix::new("fd00:99::2".parse().unwrap(), 64).unwrap());
    let a = UserspaceNode::start(&pair.a, ca);
    let b = UserspaceNode::start(&pair.b, cb);

    assert!(
        ping(&pair.a, "fd00:99::2"),
        "ping -6 a -> b over the virtual link"
    );
    let ab6 = id(addr_a, addr_b, SPI_AB + INNER6_SPI_OFFSET);
    let ba6 = id(addr_b, addr_a, SPI_BA + INNER6_SPI_OFFSET);
    let (out6, in6, back6) = (a.stats(ab6), b.stats(ab6), a.stats(ba6));
    assert!(
        out6.packets >= 3 && in6.packets >= 3 && back6.packets >= 3,
        "{out6:?} {in6:?} {back6:?}"
    );
    assert_eq!((in6.auth_failures, in6.replay_drops), (0, 0));
    let ab4 = b.stats(id(addr_a, addr_b, SPI_AB));
    assert_eq!(
        ab4.packets, 0,
        "IPv6 inner never under the protocol-4 SA: {ab4:?}"
    );
    assert!(ping(&pair.a, "10.99.0.2"), "IPv4 inner still crosses");
    assert!(b.stats(id(addr_a, addr_b, SPI_AB)).packets >= 3);
}

/// Copies the next ESP-in-UDP datagram arriving in the current namespace (a raw socket
/// sees a copy of every UDP packet), returning its UDP payload and, for IPv4, whether its
/// IP header carried DF (an IPv6 raw socket sees no IP header, and IPv6 has no DF).
fn capture_esp(raw: &socket2::Socket, family: Family, spi: u32) -> Option<(Vec<u8>, bool)> {
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 2048];
    loop {
        let n = raw.recv(&mut buf).ok()?;
        // SAFETY: recv initialised the first n octets.
        let pkt: Vec<u8> = buf[..n]
            .iter()
            .map(|b| unsafe { b.assume_init() })
            .collect();
        let (udp_at, df) = match family {
            Family::V4 => (usize::from(pkt[0] & 0x0f) * 4, pkt[6] & 0x40 != 0),
            Family::V6 => (0, false),
        };
        let udp = pkt.get(udp_at..)?;
        let payload = udp.get(8..)?;
        if udp.get(2..4) == Some(&4500u16.to_be_bytes()[..])
            && payload.get(..4) == Some(&spi.to_be_bytes()[..])
        {
            return Some((payload.to_vec(), df));
        }
    }
}

#[test]
fn tampered_replayed_and_unknown_spi_packets_are_rejected() {
    forgeries_rejected(Family::V4);
}

#[test]
fn tampered_replayed_and_unknown_spi_packets_are_rejected_over_ipv6() {
    forgeries_rejected(Family::V6);
}

fn forgeries_rejected(family: Family) {
    let pair = Pair::new();
    let (addr_a, addr_b) = endpoints(family);
    let (ca, cb) = ends(AeadAlg::AesGcm128, family);
    let _a = UserspaceNode::start(&pair.a, ca);
    let b = UserspaceNode::start(&pair.b, cb);

    // Capture, inside b, one genuine datagram a sends.
    let raw = iiptran_xfrm::netns::spawn_in(&pair.b.path(), move || async move {
        let domain = match family {
            Family::V4 => socket2::Domain::IPV4,
            Family::V6 => socket2::Domain::IPV6,
        };
        let s =
            socket2::Socket::new(domain, socket2::Type::RAW, Some(socket2::Protocol::UDP)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    })
    .unwrap()
    .join()
    .unwrap()
    .unwrap();
    assert!(ping(&pair.a, "10.99.0.2"));
    let (genuine, df) = capture_esp(&raw, family, SPI_AB).expect("captured a's ESP datagram");
    // ping sends with DF; an IPv4 outer header must not lose it.
    assert!(
        df || family == Family::V6,
        "outer DF set for a DF inner packet"
    );
    let in_id = id(addr_a, addr_b, SPI_AB);
    let before = b.stats(in_id);
    let tun_before = if_stat(&pair.b, LINK, "rx_packets");
    assert_eq!((before.auth_failures, before.replay_drops), (0, 0));

    // Inject from a's address, as a forger on the path would.
    let inject = |payloads: Vec<Vec<u8>>| {
        iiptran_xfrm::netns::spawn_in(&pair.a.path(), move || async move {
            let s = UdpSocket::bind((addr_a, 0)).unwrap();
            for p in payloads {
                s.send_to(&p, (addr_b, 4500)).unwrap();
            }
        })
        .unwrap()
        .join()
        .unwrap()
        .unwrap();
    };

    // Replay: the captured datagram again, verbatim.
    inject(vec![genuine.clone(), genuine.clone()]);
    assert!(
        wait_until("replay drops", Duration::from_secs(5), POLL, || Ok(b
            .stats(in_id)
            .replay_drops
            >= 2))
        .is_ok(),
        "replays counted: {:?}",
        b.stats(in_id)
    );

    // Tampered: a fresh sequence number (so the window lets it through to the ICV check)
    // and one ciphertext bit flipped.
    let mut tampered = genuine.clone();
    tampered[4..8].copy_from_slice(&1000u32.to_be_bytes());
    tampered[20] ^= 0x04;
    // Only the ciphertext bit flipped, sequence number fresh too: still an ICV failure.
    let mut flipped_only = genuine.clone();
    flipped_only[4..8].copy_from_slice(&1001u32.to_be_bytes());
    let last = flipped_only.len() - 20;
    flipped_only[last] ^= 0x80;
    inject(vec![tampered, flipped_only]);
    assert!(
        wait_until(
            "authentication failures",
            Duration::from_secs(5),
            POLL,
            || Ok(b.stats(in_id).auth_failures >= 2)
        )
        .is_ok(),
        "auth failures counted: {:?}",
        b.stats(in_id)
    );

    // Unknown SPI: nothing to decrypt with, nothing delivered.
    let mut wrong_spi = genuine.clone();
    wrong_spi[..4].copy_from_slice(&0x0bad_0bad_u32.to_be_bytes());
    inject(vec![wrong_spi]);

    // A genuine packet still gets through afterwards, so the forgeries above were
    // processed before it (one socket, in order) and none was delivered.
    assert!(ping(&pair.a, "10.99.0.2"));
    let after = b.stats(in_id);
    assert_eq!(
        after.packets,
        before.packets + 3,
        "only the 3 new pings were accepted: {after:?}"
    );
    assert_eq!((after.replay_drops, after.auth_failures), (2, 2));
    assert_eq!(
        if_stat(&pair.b, LINK, "rx_packets"),
        tun_before + 3,
        "nothing forged reached b's TUN"
    );
}

#[test]
fn ike_is_handed_up_and_missing_sa_raises_acquire() {
    ike_and_acquire(Family::V4);
}

#[test]
fn ike_is_handed_up_and_missing_sa_raises_acquire_over_ipv6() {
    ike_and_acquire(Family::V6);
}

fn ike_and_acquire(family: Family) {
    let pair = Pair::new();
    let (addr_a, addr_b) = endpoints(family);
    let (mut ca, cb) = ends(AeadAlg::ChaCha20Poly1305, family);
    ca.with_out_sa = false;
    let a = UserspaceNode::start(&pair.a, ca);
    let b = UserspaceNode::start(&pair.b, cb);

    // IKE on the shared port: non-ESP marker, then the message.
    iiptran_xfrm::netns::spawn_in(&pair.a.path(), move || async move {
        let s = UdpSocket::bind((addr_a, 0)).unwrap();
        s.send_to(&[0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef], (addr_b, 4500))
            .unwrap();
        s.local_addr().unwrap()
    })
    .unwrap()
    .join()
    .unwrap()
    .unwrap();
    let d = b
        .next_ike(Duration::from_secs(5))
        .expect("IKE datagram handed up");
    assert_eq!(d.data, vec![0xde, 0xad, 0xbe, 0xef]);
    // The dual-stack socket reports IPv4 peers as IPv4, not IPv4-mapped.
    assert_eq!(d.from.ip(), addr_a);
    assert_eq!(d.to, Some(addr_b));

    // a has the policy but no outbound SA: traffic on the link asks for one.
    pair.a
        .exec(&["ping", "-c", "1", "-W", "1", "10.99.0.2"])
        .expect("running ping");
    let ev = a.next_event(Duration::from_secs(5)).expect("ACQUIRE");
    assert_eq!(
        ev,
        DataplaneEvent::Acquire {
            src: addr_a,
            dst: addr_b,
            reqid: common::node::REQID
        }
    );
}

#[test]
fn packet_limits_raise_soft_then_hard_expire_and_remove_the_sa() {
    let pair = Pair::new();
    let (mut ca, cb) = ends(AeadAlg::ChaCha20Poly1305, Family::V4);
    ca.out_lifetimes = Lifetimes {
        soft: Limits {
            packets: Some(2),
            ..Limits::default()
        },
        hard: Limits {
            packets: Some(4),
            ..Limits::default()
        },
    };
    let a = UserspaceNode::start(&pair.a, ca);
    let _b = UserspaceNode::start(&pair.b, cb);
    let out = id(ip(ADDR_A), ip(ADDR_B), SPI_AB);
    let reqid = common::node::REQID;

    // Six echo requests: the 2nd crosses the soft limit, the 4th the hard one, the 5th
    // finds no SA left under the policy.
    pair.a
        .exec(&["ping", "-c", "6", "-i", "0.2", "-W", "1", "10.99.0.2"])
        .expect("running ping");
    assert_soft_then_hard_expire(&a, out, Duration::from_secs(5));
    assert_eq!(
        a.next_event(Duration::from_secs(5)),
        Some(DataplaneEvent::Acquire {
            src: ip(ADDR_A),
            dst: ip(ADDR_B),
            reqid
        })
    );
    assert!(matches!(a.try_stats(out), Err(Error::NotFound(_))));
}

#[test]
fn virtual_link_deleted_behind_our_back_is_reported() {
    let pair = Pair::new();
    let (ca, _) = ends(AeadAlg::ChaCha20Poly1305, Family::V4);
    let a = UserspaceNode::start(&pair.a, ca);
    sh("ip", &["-n", pair.a.name(), "link", "del", LINK]);
    assert_eq!(
        a.next_event(Duration::from_secs(5)),
        Some(DataplaneEvent::LinkDown { name: LINK.into() })
    );
}

#[test]
fn time_limits_expire_an_idle_sa() {
    let pair = Pair::new();
    let (mut ca, _) = ends(AeadAlg::AesGcm256, Family::V4);
    ca.out_lifetimes = time_limits(1, 2);
    let a = UserspaceNode::start(&pair.a, ca);
    let out = id(ip(ADDR_A), ip(ADDR_B), SPI_AB);
    let reqid = common::node::REQID;
    let t = Duration::from_secs(4);
    assert_eq!(
        a.next_event(t),
        Some(DataplaneEvent::SoftExpire { sa: out, reqid })
    );
    assert!(
        a.try_stats(out).is_ok(),
        "still usable after the soft limit"
    );
    assert_eq!(
        a.next_event(t),
        Some(DataplaneEvent::HardExpire { sa: out, reqid })
    );
    assert!(matches!(a.try_stats(out), Err(Error::NotFound(_))));
}

#[test]
fn an_update_that_shortens_the_time_limits_expires_the_sa_by_them() {
    let pair = Pair::new();
    let (mut ca, _) = ends(AeadAlg::ChaCha20Poly1305, Family::V4);
    ca.out_lifetimes = time_limits(3600, 7200);
    let a = UserspaceNode::start(&pair.a, ca);
    let out = id(ip(ADDR_A), ip(ADDR_B), SPI_AB);
    a.relimit(time_limits(1, 2));
    assert_soft_then_hard_expire(&a, out, Duration::from_secs(4));
    assert!(matches!(a.try_stats(out), Err(Error::NotFound(_))));
}

fn time_limits(soft_secs: u64, hard_secs: u64) -> Lifetimes {
    let limit = |secs| Limits {
        time: Some(Duration::from_secs(secs)),
        ..Limits::default()
    };
    Lifetimes {
        soft: limit(soft_secs),
        hard: limit(hard_secs),
    }
}

/// The next two events of `node` are `sa`'s soft expiry, then its hard one, each within `t`.
fn assert_soft_then_hard_expire(node: &UserspaceNode, sa: SaId, t: Duration) {
    let reqid = common::node::REQID;
    assert_eq!(
        node.next_event(t),
        Some(DataplaneEvent::SoftExpire { sa, reqid })
    );
    assert_eq!(
        node.next_event(t),
        Some(DataplaneEvent::HardExpire { sa, reqid })
    );
}

/// What `/proc` says of IPv6 on the virtual link in `ns`: whether it is turned off, and
/// the link's IPv6 addresses.
fn link_ipv6(ns: &Netns) -> (String, String) {
    let knob = ns
        .exec(&[
            "cat",
            &format!("/proc/sys/net/ipv6/conf/{LINK}/disable_ipv6"),
        ])
        .expect("reading the IPv6 switch");
    let addrs = ns
        .exec(&["ip", "-6", "-o", "addr", "show", "dev", LINK])
        .expect("listing IPv6 addresses");
    (
        String::from_utf8_lossy(&knob.stdout).trim().to_owned(),
        String::from_utf8_lossy(&addrs.stdout).into_owned(),
    )
}

#[test]
fn a_link_without_ipv6_addresses_comes_up_with_ipv6_off() {
    let pair = Pair::new();
    let (ca, mut cb) = ends(AeadAlg::ChaCha20Poly1305, Family::V4);
    cb.inner6 = Some(IpPrefix::new("fd00:99::2".parse().unwrap(), 64).unwrap());
    let _a = UserspaceNode::start(&pair.a, ca);
    let _b = UserspaceNode::start(&pair.b, cb);
    let (off, addrs) = link_ipv6(&pair.a);
    assert_eq!(off, "1");
    assert!(addrs.is_empty(), "no link-local address: {addrs}");
    let (off, addrs) = link_ipv6(&pair.b);
    assert_eq!(off, "0");
    assert!(addrs.contains("fd00:99::2/64"), "{addrs}");
    assert!(ping(&pair.a, "10.99.0.2"), "IPv4 still crosses the link");
}

/// A deleted link is gone when `delete_link` returns: a link of the same name can be made
/// at once (a reload that changes a neighbor does exactly that), again and again.
#[test]
fn a_deleted_link_can_be_made_again_at_once() {
    use iiptran_xfrm::userspace::UserspaceDataplane;
    use iiptran_xfrm::{Dataplane, InnerFamilies, LinkSpec};
    let pair = Pair::new();
    let link = LinkSpec {
        name: LINK.into(),
        local: ip(ADDR_A),
        remote: ip(ADDR_B),
        addresses: vec![IpPrefix::new(ip("10.99.0.1"), 31).unwrap()],
        inner: InnerFamilies {
            ipv4: true,
            ipv6: false,
        },
        mtu: 1400,
    };
    let worker = iiptran_xfrm::netns::spawn_in(&pair.a.path(), move || async move {
        let socket = std::sync::Arc::new(tokio::net::UdpSocket::bind("0.0.0.0:4500").await?);
        let (dp, _ike) = UserspaceDataplane::new(socket).map_err(std::io::Error::other)?;
        for round in 0..20 {
            let made: iiptran_xfrm::Result<()> = async {
                dp.create_link(&link).await?;
                dp.set_link_up(LINK, true).await?;
                dp.delete_link(LINK).await
            }
            .await;
            made.map_err(|e| std::io::Error::other(format!("round {round}: {e}")))?;
        }
        Ok::<(), std::io::Error>(())
    })
    .expect("namespace thread");
    worker
        .join()
        .expect("no panic")
        .expect("namespace entered")
        .expect("every round");
    let links = sh("ip", &["-n", pair.a.name(), "-o", "link", "show"]);
    assert!(!links.contains(LINK), "the link is gone: {links}");
}

/// At shutdown the links go together (one request for their device group), and a link of
/// someone else's that shares the group is left alone: then they go one by one.
#[test]
fn all_links_go_at_once_but_never_anothers() {
    use iiptran_xfrm::userspace::UserspaceDataplane;
    use iiptran_xfrm::{Dataplane, InnerFamilies, LinkSpec};
    const GROUP: &str = "0x69697074";
    let pair = Pair::new();
    let ns = pair.a.name().to_owned();
    let spec = |i: u8| LinkSpec {
        name: format!("iipgrp{i}"),
        local: ip(ADDR_A),
        remote: ip(ADDR_B),
        addresses: vec![IpPrefix::new(ip(&format!("10.98.{i}.1")), 31).unwrap()],
        inner: InnerFamilies {
            ipv4: true,
            ipv6: false,
        },
        mtu: 1400,
    };
    let in_group = |ns: &str| sh("ip", &["-n", ns, "-o", "link", "show", "group", GROUP]);
    let ns_worker = ns.clone();
    let worker = iiptran_xfrm::netns::spawn_in(&pair.a.path(), move || async move {
        let fail = |e: iiptran_xfrm::Error| std::io::Error::other(e.to_string());
        let socket = std::sync::Arc::new(tokio::net::UdpSocket::bind("0.0.0.0:4500").await?);
        let (dp, _ike) = UserspaceDataplane::new(socket).map_err(fail)?;
        let mut seen = Vec::new();
        for foreign in [true, false] {
            for i in 0..3 {
                dp.create_link(&spec(i)).await.map_err(fail)?;
            }
            dp.set_link_up("iipgrp0", true).await.map_err(fail)?;
            if foreign {
                sh(
                    "ip",
                    &[
                        "-n", &ns_worker, "tuntap", "add", "dev", "fgngrp", "mode", "tun",
                    ],
                );
                sh(
                    "ip",
                    &["-n", &ns_worker, "link", "set", "fgngrp", "group", GROUP],
                );
            }
            seen.push(in_group(&ns_worker));
            dp.delete_links().await.map_err(fail)?;
            seen.push(in_group(&ns_worker));
            if foreign {
                sh("ip", &["-n", &ns_worker, "link", "del", "fgngrp"]);
            }
        }
        Ok::<Vec<String>, std::io::Error>(seen)
    })
    .expect("namespace thread");
    let seen = worker
        .join()
        .expect("no panic")
        .expect("namespace entered")
        .expect("links made and deleted");
    let names = |listing: &str| -> Vec<String> {
        let mut n: Vec<String> = listing
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().to_owned())
            .collect();
        n.sort();
        n
    };
    let ours = ["iipgrp0", "iipgrp1", "iipgrp2"].map(String::from).to_vec();
    let mut with_foreign = ours.clone();
    with_foreign.insert(0, "fgngrp".into());
    assert_eq!(names(&seen[0]), with_foreign, "made in the group");
    assert_eq!(names(&seen[1]), ["fgngrp"], "ours gone, the other's left");
    assert_eq!(names(&seen[2]), ours, "made again in the group");
    assert_eq!(names(&seen[3]), Vec::<String>::new(), "all gone at once");
    let links = sh("ip", &["-n", &ns, "-o", "link", "show"]);
    assert!(!links.contains("iipgrp"), "{links}");
}
