//! The kernel backend against this machine's XFRM, each test in a fresh network
//! namespace, over IPv4 and over IPv6 tunnel endpoints. This kernel has XFRM but no ESP,
//! ipip or ip6tnl: policies, ALLOCSPI and ACQUIRE work, NEWSA and link creation must fail
//! cleanly. Needs root.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::fixtures::Family;
use common::netns;
use common::node::{REQID, policy, sa_with_key};
use iiptran_testkit::command::sh;
use iiptran_testkit::netns::Netns;
use iiptran_xfrm::kernel::KernelDataplane;
use iiptran_xfrm::{
    AeadAlg, Dataplane, DataplaneEvent, Direction, Error, InnerFamilies, OWNED_REQIDS,
};

/// A foreign policy's endpoints, and the prefix length of the veth address, per family.
fn foreign(family: Family) -> (&'static str, &'static str, u8) {
    match family {
        Family::V4 => ("198.51.100.1", "198.51.100.2", 24),
        Family::V6 => ("2001:db8:1::1", "2001:db8:1::2", 64),
    }
}

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
    policies_install_dump_delete(Family::V4);
}

#[test]
fn ipv6_policies_install_dump_delete_and_flush_ours_spares_foreign() {
    policies_install_dump_delete(Family::V6);
}

fn policies_install_dump_delete(family: Family) {
    let ns = netns("k");
    let (a, b) = family.endpoints();
    let (fa, fb, _) = foreign(family);
    // A policy someone else installed (foreign reqid and priority).
    sh(
        "ip",
        &[
            "-n",
            ns.name(),
            "xfrm",
            "policy",
            "add",
            "src",
            fa,
            "dst",
            fb,
            "proto",
            "4",
            "dir",
            "out",
            "priority",
            "100",
            "tmpl",
            "src",
            fa,
            "dst",
            fb,
            "proto",
            "esp",
            "reqid",
            "7",
            "mode",
            "transport",
        ],
    );
    let out = policy(Direction::Out, a, b);
    let inp = policy(Direction::In, b, a);
    let (dumped, after_delete, after_flush, dup, gone) = in_ns(&ns, move |dp| async move {
        dp.install_policy(&out).await.unwrap();
        dp.install_policy(&inp).await.unwrap();
        let dup = dp.install_policy(&out).await.unwrap_err();
        let dumped = dp.policies().await.unwrap();
        dp.delete_policy(inp.id()).await.unwrap();
        let after_delete = dp.policies().await.unwrap();
        let gone = dp.delete_policy(inp.id()).await.unwrap_err();
        dp.install_policy(&inp).await.unwrap();
        dp.flush_ours().await.unwrap();
        (
            dumped,
            after_delete,
            dp.policies().await.unwrap(),
            dup,
            gone,
        )
    });
    assert_eq!(dup.errno(), Some(libc::EEXIST), "{dup}");
    // The daemon tells these apart the same way on every backend.
    assert!(dup.is_exists() && !dup.is_not_found(), "{dup}");
    assert!(gone.is_not_found() && !gone.is_exists(), "{gone}");
    assert!(dumped.contains(&out) && dumped.contains(&inp), "{dumped:?}");
    assert_eq!(dumped.len(), 3, "ours and the foreign one: {dumped:?}");
    assert!(after_delete.contains(&out) && !after_delete.contains(&inp));
    assert_eq!(after_flush.len(), 1, "{after_flush:?}");
    assert_eq!(after_flush[0].template.reqid, 7);
    assert!(!after_flush[0].is_ours());
    let listed = sh("ip", &["-n", ns.name(), "xfrm", "policy", "list"]);
    assert!(
        listed.contains(fb) && !listed.contains(&format!("{b}/")),
        "{listed}"
    );
    if family == Family::V6 {
        let sel = dumped.iter().find(|p| **p == out).map(|p| p.selector);
        let lens = sel.map(|s| (s.src.prefix_len(), s.dst.prefix_len(), s.proto));
        assert_eq!(lens, Some((128, 128, Some(4))), "{dumped:?}");
    }
}

#[test]
fn allocspi_gives_distinct_spis_and_flush_removes_them() {
    allocspi(Family::V4);
}

#[test]
fn ipv6_allocspi_gives_distinct_spis_and_flush_removes_them() {
    allocspi(Family::V6);
}

fn allocspi(family: Family) {
    let ns = netns("k");
    let (a, b) = family.endpoints();
    let (s1, s2) = in_ns(&ns, move |dp| async move {
        let s1 = dp.allocate_spi(b, a, REQID).await.unwrap();
        let s2 = dp.allocate_spi(b, a, REQID).await.unwrap();
        (s1, s2)
    });
    assert!(s1 >= 0x100 && s2 >= 0x100 && s1 != s2, "{s1:#x} {s2:#x}");
    let states = sh("ip", &["-n", ns.name(), "xfrm", "state", "list"]);
    assert!(states.contains(&format!("spi {s1:#010x}")), "{states}");
    assert!(
        states.contains(&format!("src {b} dst {a}")),
        "SA placeholder between the endpoints: {states}"
    );
    let gone = in_ns(&ns, move |dp| async move {
        dp.flush_ours().await.unwrap();
        let id = iiptran_xfrm::SaId {
            src: b,
            dst: a,
            spi: s1,
        };
        dp.delete_sa(id).await.unwrap_err()
    });
    assert!(gone.is_not_found(), "deleting a flushed SA: {gone}");
    let states = sh("ip", &["-n", ns.name(), "xfrm", "state", "list"]);
    assert!(states.trim().is_empty(), "{states}");
}

#[test]
fn newsa_without_kernel_esp_is_a_clean_error() {
    newsa_refused(Family::V4);
}

#[test]
fn ipv6_newsa_without_kernel_esp_is_a_clean_error() {
    newsa_refused(Family::V6);
}

fn newsa_refused(family: Family) {
    let ns = netns("k");
    let (a, b) = family.endpoints();
    let errs = in_ns(&ns, move |dp| async move {
        let mut errs = Vec::new();
        for alg in [
            AeadAlg::ChaCha20Poly1305,
            AeadAlg::AesGcm128,
            AeadAlg::AesGcm256,
        ] {
            let keymat = vec![9; alg.key_len() + 4];
            let spec = sa_with_key(Direction::Out, a, b, 0xa01, alg, &keymat).unwrap();
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
    let foreign = in_ns(&ns, move |dp| async move {
        let mut spec =
            sa_with_key(Direction::Out, a, b, 0xa01, AeadAlg::AesGcm128, &[1; 20]).unwrap();
        spec.reqid = OWNED_REQIDS.start() - 1;
        dp.install_sa(&spec).await.unwrap_err()
    });
    assert!(matches!(foreign, Error::Invalid(_)), "{foreign}");
}

#[test]
fn traffic_matching_a_policy_without_sa_raises_acquire() {
    acquire(Family::V4);
}

#[test]
fn ipv6_traffic_matching_a_policy_without_sa_raises_acquire() {
    acquire(Family::V6);
}

fn acquire(family: Family) {
    let ns = netns("k");
    let (a, b) = family.endpoints();
    let (_, _, len) = foreign(family);
    // A veth pair gives the namespace an address and a route towards b.
    sh(
        "ip",
        &[
            "-n",
            ns.name(),
            "link",
            "add",
            "v0",
            "type",
            "veth",
            "peer",
            "name",
            "v1",
        ],
    );
    sh(
        "ip",
        &[
            "-n",
            ns.name(),
            "addr",
            "add",
            &format!("{a}/{len}"),
            "dev",
            "v0",
            "nodad",
        ],
    );
    sh("ip", &["-n", ns.name(), "link", "set", "v0", "up"]);
    sh("ip", &["-n", ns.name(), "link", "set", "v1", "up"]);
    let event = in_ns(&ns, move |dp| async move {
        let mut events = dp.subscribe();
        dp.install_policy(&policy(Direction::Out, a, b))
            .await
            .unwrap();
        // An IPv4-in-IP packet a -> b (next header 4 for IPv6): a raw protocol-4 socket
        // goes through the XFRM lookup.
        let domain = match family {
            Family::V4 => socket2::Domain::IPV4,
            Family::V6 => socket2::Domain::IPV6,
        };
        let s = socket2::Socket::new(domain, socket2::Type::RAW, Some(socket2::Protocol::from(4)))
            .unwrap();
        s.bind(&SocketAddr::from((a, 0)).into()).unwrap();
        let inner = [0x45u8; 20];
        // The kernel holds or drops the packet until an SA exists; the send result is moot.
        let _ = s.send_to(&inner, &SocketAddr::from((b, 0)).into());
        let ev = tokio::time::timeout(Duration::from_secs(5), events.recv()).await;
        dp.flush_ours().await.unwrap();
        ev
    });
    let event = event.expect("ACQUIRE within 5 s").expect("event");
    assert_eq!(
        event,
        DataplaneEvent::Acquire {
            src: a,
            dst: b,
            reqid: REQID
        }
    );
}

#[test]
fn ipip_link_without_kernel_support_is_a_clean_error() {
    link_refused(Family::V4, InnerFamilies::IPV4);
}

#[test]
fn sit_link_without_kernel_support_is_a_clean_error() {
    link_refused(Family::V4, InnerFamilies::BOTH);
}

#[test]
fn ip6tnl_link_without_kernel_support_is_a_clean_error() {
    link_refused(Family::V6, InnerFamilies::BOTH);
}

/// A virtual link `ipt0` without inner addresses.
fn bare_link(local: IpAddr, remote: IpAddr) -> iiptran_xfrm::LinkSpec {
    iiptran_xfrm::LinkSpec {
        name: "ipt0".into(),
        local,
        remote,
        addresses: vec![],
        inner: InnerFamilies::IPV4,
        mtu: 1400,
    }
}

fn link_refused(family: Family, inner: InnerFamilies) {
    let ns = netns("k");
    let (a, b) = family.endpoints();
    let err = in_ns(&ns, move |dp| async move {
        let link = iiptran_xfrm::LinkSpec {
            inner,
            ..bare_link(a, b)
        };
        dp.create_link(&link).await.unwrap_err()
    });
    // This kernel has no ipip, sit or ip6tnl: RTM_NEWLINK is refused, and nothing is
    // left behind.
    assert!(matches!(err, Error::Kernel { .. }), "{err}");
    let links = sh("ip", &["-n", ns.name(), "link", "show"]);
    assert!(!links.contains("ipt0"), "{links}");
}

#[test]
fn mixed_family_specs_never_reach_the_kernel() {
    let ns = netns("k");
    let (a4, _) = Family::V4.endpoints();
    let (_, b6) = Family::V6.endpoints();
    let errs = in_ns(&ns, move |dp| async move {
        let link = bare_link(a4, b6);
        let mut p = policy(Direction::Out, a4, a4);
        p.template.dst = b6;
        (
            dp.create_link(&link).await.unwrap_err(),
            dp.install_policy(&p).await.unwrap_err(),
        )
    });
    assert!(matches!(errs.0, Error::Invalid(_)), "{}", errs.0);
    assert!(matches!(errs.1, Error::Invalid(_)), "{}", errs.1);
}
