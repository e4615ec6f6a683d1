//! The interop harness itself, proven with strongSwan's charon on both sides: namespaces,
//! veth, charon instances with PSK and certificates from `pki`, SA listings and captures.
//! Needs root and `tests/interop/setup`; skipped (with a message) only without root.

mod support;

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use anyhow::Result;
use iiptran_testkit::netns::{Netns, veth};
use iiptran_testkit::pki::{Ca, KeyType};
use iiptran_testkit::strongswan::{
    Auth, Charon, CharonOptions, Connection, IkeSa, Installation, parse_list_sas,
};
use support::OrPanic;
use support::capture::Capture;

const A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
const B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Two namespaces joined by veth (192.0.2.1 and .2) with a charon in each.
struct Pair {
    a: Charon,
    b: Charon,
    ifname: String,
    // Dropped after the charons, which run inside them.
    ns_a: Netns,
    _ns_b: Netns,
}

enum Credentials {
    Psk,
    Certs(KeyType),
}

fn pair(install: &Installation, creds: Credentials, options: &CharonOptions) -> Result<Pair> {
    pair_with(install, creds, options, |conn| conn)
}

/// `pair` with both connections passed through `configure`.
fn pair_with(
    install: &Installation,
    creds: Credentials,
    options: &CharonOptions,
    configure: impl Fn(Connection) -> Connection,
) -> Result<Pair> {
    let ns_a = Netns::new("ssa")?;
    let ns_b = Netns::new("ssb")?;
    let (end_a, _) = veth(&ns_a, A, &ns_b, B, 24)?;
    let ca;
    let (auth_a, auth_b) = match creds {
        Credentials::Psk => {
            let key = b"interop harness pre-shared key!!".to_vec();
            (Auth::Psk(key.clone()), Auth::Psk(key))
        }
        Credentials::Certs(key_type) => {
            ca = Ca::temporary(key_type)?;
            (
                Auth::Pubkey(ca.issue_with("a.vn.test", &A.to_string(), key_type)?),
                Auth::Pubkey(ca.issue_with("b.vn.test", &B.to_string(), key_type)?),
            )
        }
    };
    let conn_a = configure(Connection::iiptran(A, "a.vn.test", B, "b.vn.test", auth_a));
    let conn_b = configure(Connection::iiptran(B, "b.vn.test", A, "a.vn.test", auth_b));
    let a = Charon::start(install, &ns_a, "a", options, &[conn_a])?;
    let b = Charon::start(install, &ns_b, "b", options, &[conn_b])?;
    Ok(Pair {
        a,
        b,
        ifname: end_a.ifname,
        ns_a,
        _ns_b: ns_b,
    })
}

fn established(sas: &[IkeSa]) -> Option<IkeSa> {
    sas.iter().find(|sa| sa.state == "ESTABLISHED").cloned()
}

fn with_installed_child(sas: &[IkeSa]) -> Option<IkeSa> {
    established(sas).filter(|sa| sa.children.iter().any(|c| c.state == "INSTALLED"))
}

/// A initiates the IIPtran child; both sides must list the IKE SA and a transport child
/// SA on protocol 4 between the two endpoints.
fn assert_transport_child_installed(creds: Credentials) {
    let install = Installation::find(&support::capture::TOOLS).or_panic();
    let pair = pair(&install, creds, &CharonOptions::default()).or_panic();
    pair.a.initiate_child("ipip").or_panic();
    let sa_a = pair
        .a
        .wait_for_sas("A's child SA", SETUP_TIMEOUT, with_installed_child)
        .or_panic();
    let sa_b = pair
        .b
        .wait_for_sas("B's child SA", SETUP_TIMEOUT, with_installed_child)
        .or_panic();

    for (sa, local, remote, local_id, remote_id, initiator) in [
        (&sa_a, A, B, "a.vn.test", "b.vn.test", true),
        (&sa_b, B, A, "b.vn.test", "a.vn.test", false),
    ] {
        assert_eq!(sa.name, "iiptran");
        assert_eq!(sa.local_host, local.to_string());
        assert_eq!(sa.remote_host, remote.to_string());
        assert_eq!(sa.local_id, local_id);
        assert_eq!(sa.remote_id, remote_id);
        assert_eq!(sa.initiator, initiator);
        assert_eq!(sa.children.len(), 1, "{sa:#?}");
        let child = &sa.children[0];
        assert_eq!(child.name, "ipip");
        assert_eq!(child.mode, "TRANSPORT");
        assert_eq!(child.protocol, "ESP");
        assert_eq!(child.local_ts, [format!("{local}/32[ipencap]")]);
        assert_eq!(child.remote_ts, [format!("{remote}/32[ipencap]")]);
    }
    assert_eq!(sa_a.initiator_spi, sa_b.initiator_spi);
    assert_eq!(sa_a.responder_spi, sa_b.responder_spi);
    assert_eq!(sa_a.children[0].spi_in, sa_b.children[0].spi_out);
    assert_eq!(sa_a.children[0].spi_out, sa_b.children[0].spi_in);
}

#[test]
fn psk_transport_child_installed_with_fake_kernel() {
    if !iiptran_testkit::have_root("psk_transport_child_installed_with_fake_kernel") {
        return;
    }
    assert_transport_child_installed(Credentials::Psk)
}

#[test]
fn ed25519_certs_transport_child_installed_with_fake_kernel() {
    if !iiptran_testkit::have_root("ed25519_certs_transport_child_installed_with_fake_kernel") {
        return;
    }
    assert_transport_child_installed(Credentials::Certs(KeyType::Ed25519))
}

#[test]
fn ecdsa_p256_certs_transport_child_installed_with_fake_kernel() {
    if !iiptran_testkit::have_root("ecdsa_p256_certs_transport_child_installed_with_fake_kernel") {
        return;
    }
    assert_transport_child_installed(Credentials::Certs(KeyType::EcdsaP256))
}

/// Without the fake kernel, charon tries to install the transport SA through XFRM; this
/// kernel has no ESP, so the IKE SA comes up and the child does not: the responder
/// answers N(NO_PROPOSAL_CHOSEN) in IKE_AUTH and the initiator keeps the IKE SA.
#[test]
fn kernel_netlink_establishes_ike_but_not_the_child() {
    if !iiptran_testkit::have_root("kernel_netlink_establishes_ike_but_not_the_child") {
        return;
    }
    let install = Installation::find(&support::capture::TOOLS).or_panic();
    let options = CharonOptions {
        fake_kernel: false,
        ..CharonOptions::default()
    };
    let pair = pair(&install, Credentials::Psk, &options).or_panic();
    let initiated = pair.a.initiate_child("ipip");
    assert!(
        initiated.is_err(),
        "child initiation succeeded: {initiated:?}"
    );

    let sa_a = pair
        .a
        .wait_for_sas("A's IKE SA", SETUP_TIMEOUT, established)
        .or_panic();
    assert!(sa_a.initiator);
    assert!(sa_a.children.is_empty(), "{sa_a:#?}");
    pair.b
        .wait_for_sas("B's IKE SA", SETUP_TIMEOUT, established)
        .or_panic();
    let log_b = pair.b.log();
    assert!(
        log_b.contains("unable to install inbound and outbound IPsec SA (SAD) in kernel"),
        "{log_b}"
    );
    let response = log_b
        .lines()
        .find(|line| line.contains("generating IKE_AUTH response 1"))
        .unwrap_or_default();
    assert!(response.contains("N(NO_PROP)"), "{log_b}");
    assert!(!response.contains(" SA TSi TSr"), "{log_b}");
    let log_a = pair.a.log();
    assert!(
        log_a.contains("received NO_PROPOSAL_CHOSEN notify"),
        "{log_a}"
    );
}

/// Rekeying and terminating through the guard: the configured rekey times are in effect, a
/// rekeyed child replaces the old one with new SPIs, a rekeyed IKE SA gets new SPIs, and
/// termination removes the SAs on both sides.
#[test]
fn rekey_and_terminate() {
    if !iiptran_testkit::have_root("rekey_and_terminate") {
        return;
    }
    let install = Installation::find(&support::capture::TOOLS).or_panic();
    let configure = |conn: Connection| conn.rekey(Some("1h"), Some("30m")).dpd("30s");
    let options = CharonOptions::default();
    let pair = pair_with(&install, Credentials::Psk, &options, configure).or_panic();
    pair.a.initiate_child("ipip").or_panic();
    let before = pair
        .a
        .wait_for_sas("A's child SA", SETUP_TIMEOUT, with_installed_child)
        .or_panic();
    // charon schedules rekeying a random time before the configured one (defaults 4h/1h)
    let seconds = |fields: &std::collections::BTreeMap<String, String>| -> u32 {
        fields["rekey-time"].parse().unwrap()
    };
    assert!(seconds(&before.fields) <= 3600, "{before:#?}");
    assert!(seconds(&before.children[0].fields) <= 1800, "{before:#?}");
    let old_spi = before.children[0].spi_in.clone();

    pair.a.rekey_child("ipip").or_panic();
    let rekeyed = pair
        .b
        .wait_for_sas("B's rekeyed child SA", SETUP_TIMEOUT, |sas| {
            with_installed_child(sas)
                .filter(|sa| sa.children.len() == 1 && sa.children[0].spi_out != old_spi)
        })
        .or_panic();
    assert_eq!(rekeyed.children[0].state, "INSTALLED");

    pair.a.rekey_ike("iiptran").or_panic();
    let new_ike = pair
        .a
        .wait_for_sas("A's rekeyed IKE SA", SETUP_TIMEOUT, |sas| {
            established(sas).filter(|sa| sa.initiator_spi != before.initiator_spi)
        })
        .or_panic();
    assert_eq!(
        new_ike.children.len(),
        1,
        "the child moves to the new IKE SA"
    );

    pair.a.terminate_ike("iiptran").or_panic();
    for charon in [&pair.a, &pair.b] {
        charon
            .wait_for_sas("no SAs", SETUP_TIMEOUT, |sas| sas.is_empty().then_some(()))
            .or_panic();
    }
}

/// `Netns::enter` runs its closure in that namespace (and only there), and sockets it opens
/// stay there: a datagram from A's namespace reaches B's over the veth.
#[test]
fn enter_opens_sockets_in_the_namespace() {
    if !iiptran_testkit::have_root("enter_opens_sockets_in_the_namespace") {
        return;
    }
    let ns_a = Netns::new("ena").or_panic();
    let ns_b = Netns::new("enb").or_panic();
    veth(&ns_a, A, &ns_b, B, 24).or_panic();
    let inode = |path: &str| std::fs::metadata(path).map(|m| m.ino()).unwrap();
    let netns_b = format!("/run/netns/{}", ns_b.name());
    let (inside, target) = ns_b
        .enter(|| (inode("/proc/thread-self/ns/net"), inode(&netns_b)))
        .or_panic();
    assert_eq!(inside, target, "the thread is in B's namespace");
    assert_ne!(
        inode("/proc/thread-self/ns/net"),
        target,
        "the caller is not"
    );

    let receiver = ns_b.enter(|| UdpSocket::bind((B, 0))).or_panic().unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let to = receiver.local_addr().unwrap();
    ns_a.enter(|| UdpSocket::bind((A, 0))?.send_to(b"over veth", to))
        .or_panic()
        .unwrap();
    let mut buf = [0u8; 16];
    let (n, from) = receiver.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"over veth");
    assert_eq!(from.ip(), A);
}

/// tcpdump in A's namespace records the exchange; tshark dissects IKE_SA_INIT request and
/// response with the payloads charon sends, and nothing is malformed.
#[test]
fn capture_dissects_ike_sa_init() {
    if !iiptran_testkit::have_root("capture_dissects_ike_sa_init") {
        return;
    }
    let install = Installation::find(&support::capture::TOOLS).or_panic();
    let pair = pair(&install, Credentials::Psk, &CharonOptions::default()).or_panic();
    let mut capture =
        Capture::start(&pair.ns_a, &pair.ifname, "udp port 500 or udp port 4500").or_panic();
    pair.a.initiate_child("ipip").or_panic();
    pair.b
        .wait_for_sas("B's child SA", SETUP_TIMEOUT, with_installed_child)
        .or_panic();
    capture.stop().or_panic();

    let init = capture.dissect("isakmp.exchangetype == 34").or_panic();
    assert!(!init.contains("Malformed"), "{init}");
    assert_eq!(
        init.matches("Exchange type: IKE_SA_INIT (34)").count(),
        2,
        "{init}"
    );
    // request and response each carry these
    for field in [
        "Payload: Security Association (33)",
        "Payload: Key Exchange (34)",
        "Payload: Nonce (40)",
        "Notify Message Type: NAT_DETECTION_SOURCE_IP (16388)",
        "Notify Message Type: SIGNATURE_HASH_ALGORITHMS (16431)",
        "Transform ID (ENCR): ENCR_CHACHA20_POLY1305 (28)",
        "Transform ID (D-H): Curve25519 (31)",
    ] {
        assert_eq!(init.matches(field).count(), 2, "{field:?} in\n{init}");
    }
    let all = capture.summary("").or_panic();
    assert!(!all.contains("Malformed"), "{all}");
    assert_eq!(all.lines().count(), 4, "IKE_SA_INIT and IKE_AUTH:\n{all}");
}

/// The listing parser on charon's raw output (recorded from charon 5.9.8).
#[test]
fn parses_swanctl_raw_listing() -> Result<()> {
    let raw = "list-sa event {iiptran {uniqueid=1 version=2 state=ESTABLISHED \
        local-host=192.0.2.1 local-port=4500 local-id=a.vn.test remote-host=192.0.2.2 \
        remote-port=4500 remote-id=b.vn.test initiator=yes initiator-spi=4f0f3558ba763b1b \
        responder-spi=7d835297a47c8259 encr-alg=CHACHA20_POLY1305 child-sas {ipip-1 \
        {name=ipip uniqueid=1 reqid=1 state=INSTALLED mode=TRANSPORT protocol=ESP \
        spi-in=01000000 spi-out=02000000 local-ts=[192.0.2.1/32[ipencap]] \
        remote-ts=[192.0.2.2/32[ipencap] 10.0.0.0/8]}}}}\nlist-sas reply {}\n";
    let sas = parse_list_sas(raw).or_panic();
    assert_eq!(sas.len(), 1);
    let sa = &sas[0];
    assert_eq!(
        (sa.name.as_str(), sa.state.as_str(), sa.initiator),
        ("iiptran", "ESTABLISHED", true)
    );
    assert_eq!(sa.remote_id, "b.vn.test");
    assert_eq!(sa.responder_spi, "7d835297a47c8259");
    assert_eq!(sa.fields["encr-alg"], "CHACHA20_POLY1305");
    let child = &sa.children[0];
    assert_eq!(
        (child.name.as_str(), child.mode.as_str()),
        ("ipip", "TRANSPORT")
    );
    assert_eq!(
        (child.spi_in.as_str(), child.spi_out.as_str()),
        ("01000000", "02000000")
    );
    assert_eq!(child.local_ts, ["192.0.2.1/32[ipencap]"]);
    assert_eq!(child.remote_ts, ["192.0.2.2/32[ipencap]", "10.0.0.0/8"]);
    assert!(parse_list_sas("list-sa event {iiptran {state=ESTABLISHED").is_err());
    assert!(parse_list_sas("list-sa event {x {ts=[1.2.3.4").is_err());
    Ok(())
}
