//! The kernel backend against this machine's XFRM, each test in a fresh network
//! namespace. This kernel has XFRM but no ESP: policies, ALLOCSPI and ACQUIRE work,
//! NEWSA must fail cleanly. Needs root.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::node::{REQID, policy, sa_with_key};
use common::{Netns, sh};
use iiptran_xfrm::kernel::KernelDataplane;
use iiptran_xfrm::{AeadAlg, Dataplane, DataplaneEvent, Direction, Error, OWNED_REQIDS};

const A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

/// Runs `f` with a kernel backend inside `ns`.
fn in_ns<T: Send + 'static, Fut: std::future::Future<Output = T>>(
    ns: &Netns,
    f: impl FnOnce(KernelDataplane) -> Fut + Send + 'static,
) -> T {
    iiptran_xfrm::netns::spawn_in(&ns.path(), move || async move {
        let dp = KernelDataplane::open().expect("kernel data plane");
        f(dp).await
    })
    .unwrap()
    .join()
    .expect("namespace thread")
    .expect("entering the namespace")
}

#[test]
fn policies_install_dump_delete_and_flush_ours_spares_foreign() {
    let ns = Netns::new("k");
    // A policy someone else installed (foreign reqid and priority).
    sh(&[
        "ip",
        "-n",
        &ns.name,
        "xfrm",
        "policy",
        "add",
        "src",
        "198.51.100.1",
        "dst",
        "198.51.100.2",
        "proto",
        "4",
        "dir",
        "out",
        "priority",
        "100",
        "tmpl",
        "src",
        "198.51.100.1",
        "dst",
        "198.51.100.2",
        "proto",
        "esp",
        "reqid",
        "7",
        "mode",
        "transport",
    ]);
    let out = policy(Direction::Out, A, B);
    let inp = policy(Direction::In, B, A);
    let (dumped, after_delete, after_flush, dup) = in_ns(&ns, move |dp| async move {
        dp.install_policy(&out).await.unwrap();
        dp.install_policy(&inp).await.unwrap();
        let dup = dp.install_policy(&out).await.unwrap_err();
        let dumped = dp.policies().await.unwrap();
        dp.delete_policy(inp.id()).await.unwrap();
        let after_delete = dp.policies().await.unwrap();
        dp.install_policy(&inp).await.unwrap();
        dp.flush_ours().await.unwrap();
        (dumped, after_delete, dp.policies().await.unwrap(), dup)
    });
    assert_eq!(dup.errno(), Some(libc::EEXIST), "{dup}");
    assert!(dumped.contains(&out) && dumped.contains(&inp), "{dumped:?}");
    assert_eq!(dumped.len(), 3, "ours and the foreign one: {dumped:?}");
    assert!(after_delete.contains(&out) && !after_delete.contains(&inp));
    assert_eq!(after_flush.len(), 1, "{after_flush:?}");
    assert_eq!(after_flush[0].template.reqid, 7);
    assert!(!after_flush[0].is_ours());
    let listed = sh(&["ip", "-n", &ns.name, "xfrm", "policy", "list"]);
    assert!(
        listed.contains("198.51.100.2") && !listed.contains("192.0.2.2"),
        "{listed}"
    );
}

#[test]
fn allocspi_gives_distinct_spis_and_flush_removes_them() {
    let ns = Netns::new("k");
    let (s1, s2) = in_ns(&ns, |dp| async move {
        let s1 = dp
            .allocate_spi(IpAddr::V4(B), IpAddr::V4(A), REQID)
            .await
            .unwrap();
        let s2 = dp
            .allocate_spi(IpAddr::V4(B), IpAddr::V4(A), REQID)
            .await
            .unwrap();
        (s1, s2)
    });
    assert!(s1 >= 0x100 && s2 >= 0x100 && s1 != s2, "{s1:#x} {s2:#x}");
    let states = sh(&["ip", "-n", &ns.name, "xfrm", "state", "list"]);
    assert!(states.contains(&format!("spi {s1:#010x}")), "{states}");
    in_ns(&ns, |dp| async move { dp.flush_ours().await.unwrap() });
    let states = sh(&["ip", "-n", &ns.name, "xfrm", "state", "list"]);
    assert!(states.trim().is_empty(), "{states}");
}

#[test]
fn newsa_without_kernel_esp_is_a_clean_error() {
    let ns = Netns::new("k");
    let errs = in_ns(&ns, |dp| async move {
        let mut errs = Vec::new();
        for alg in [
            AeadAlg::ChaCha20Poly1305,
            AeadAlg::AesGcm128,
            AeadAlg::AesGcm256,
        ] {
            let keymat = vec![9; alg.key_len() + 4];
            let spec = sa_with_key(Direction::Out, A, B, 0xa01, alg, &keymat).unwrap();
            errs.push(dp.install_sa(&spec).await.unwrap_err());
        }
        errs
    });
    for e in errs {
        assert!(matches!(e, Error::Kernel { op: "NEWSA", .. }), "{e}");
        let errno = e.errno().unwrap();
        assert!(
            [libc::ENOSYS, libc::EPROTONOSUPPORT, libc::ENOENT].contains(&errno),
            "{e}"
        );
    }
    // A reqid outside the owned range never reaches the kernel.
    let foreign = in_ns(&ns, |dp| async move {
        let mut spec =
            sa_with_key(Direction::Out, A, B, 0xa01, AeadAlg::AesGcm128, &[1; 20]).unwrap();
        spec.reqid = OWNED_REQIDS.start() - 1;
        dp.install_sa(&spec).await.unwrap_err()
    });
    assert!(matches!(foreign, Error::Invalid(_)), "{foreign}");
}

#[test]
fn traffic_matching_a_policy_without_sa_raises_acquire() {
    let ns = Netns::new("k");
    // A veth pair gives the namespace an address and a route towards B.
    sh(&[
        "ip", "-n", &ns.name, "link", "add", "v0", "type", "veth", "peer", "name", "v1",
    ]);
    sh(&[
        "ip",
        "-n",
        &ns.name,
        "addr",
        "add",
        "192.0.2.1/24",
        "dev",
        "v0",
    ]);
    sh(&["ip", "-n", &ns.name, "link", "set", "v0", "up"]);
    sh(&["ip", "-n", &ns.name, "link", "set", "v1", "up"]);
    let event = in_ns(&ns, |dp| async move {
        let mut events = dp.subscribe();
        dp.install_policy(&policy(Direction::Out, A, B))
            .await
            .unwrap();
        // An IPIP packet A -> B: a raw protocol-4 socket goes through the XFRM lookup.
        let s = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::RAW,
            Some(socket2::Protocol::from(4)),
        )
        .unwrap();
        s.bind(&std::net::SocketAddr::from((A, 0)).into()).unwrap();
        let inner = [0x45u8; 20];
        // The kernel holds or drops the packet until an SA exists; the send result is moot.
        let _ = s.send_to(&inner, &std::net::SocketAddr::from((B, 0)).into());
        let ev = tokio::time::timeout(Duration::from_secs(5), events.recv()).await;
        dp.flush_ours().await.unwrap();
        ev
    });
    let event = event.expect("ACQUIRE within 5 s").expect("event");
    assert_eq!(
        event,
        DataplaneEvent::Acquire {
            src: IpAddr::V4(A),
            dst: IpAddr::V4(B),
            reqid: REQID
        }
    );
}

#[test]
fn ipip_link_without_kernel_support_is_a_clean_error() {
    let ns = Netns::new("k");
    let err = in_ns(&ns, |dp| async move {
        let link = iiptran_xfrm::LinkSpec {
            name: "ipt0".into(),
            local: A,
            remote: B,
            addresses: vec![],
            mtu: 1400,
        };
        dp.create_link(&link).await.unwrap_err()
    });
    // This kernel has no ipip: RTM_NEWLINK is refused, and nothing is left behind.
    assert!(matches!(err, Error::Kernel { .. }), "{err}");
    let links = sh(&["ip", "-n", &ns.name, "link", "show"]);
    assert!(!links.contains("ipt0"), "{links}");
}
