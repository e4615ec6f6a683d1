//! iiptrand against strongSwan's charon (load-tester fake kernel, so charon reports its
//! transport-mode child SA installed on a kernel without ESP): the IIPtran adjacency comes
//! up with iiptran as initiator and as responder, with a pre-shared key and with Ed25519
//! and ECDSA P-256 certificates from strongSwan's `pki` and from the VN CA; and with
//! charon's kernel-netlink interface, which fails to install the child on this kernel.
//! Needs root and `tests/interop/setup`.

mod enroll_common;
mod support;

use std::time::Duration;

use iiptran::control::protocol::LinkState;
use iiptran_testkit::pki::{Ca, KeyType, NodeCert};
use iiptran_testkit::strongswan::{IkeSa, Installation};
use iiptran_testkit::wait::wait_until;
use support::OrPanic;
use support::peering::{
    CHARON_ID, Keys, NEIGHBOR, OUR_ID, OURS, Peering, Plan, SETUP, THEIRS, child,
};

/// What charon must list for an IIPtran adjacency with iiptrand.
fn assert_iiptran_sa(sa: &IkeSa, charon_initiated: bool) {
    assert_eq!(sa.name, "iiptran");
    assert_eq!(sa.local_host, THEIRS.to_string());
    assert_eq!(sa.remote_host, OURS.to_string());
    assert_eq!(sa.local_id, CHARON_ID);
    assert_eq!(sa.remote_id, OUR_ID);
    assert_eq!(sa.initiator, charon_initiated, "{sa:#?}");
    let child = child(sa);
    assert_eq!(child.name, "ipip");
    assert_eq!(child.mode, "TRANSPORT", "{sa:#?}");
    assert_eq!(child.protocol, "ESP");
    assert_eq!(child.local_ts, [format!("{THEIRS}/32[ipencap]")]);
    assert_eq!(child.remote_ts, [format!("{OURS}/32[ipencap]")]);
}

fn adjacency(keys: Keys, iiptran_initiates: bool) {
    let install = Installation::find(&support::capture::TOOLS).or_panic();
    let plan = Plan::new(keys, iiptran_initiates);
    let peering = Peering::start(&install, &plan).or_panic();
    let sa = peering.establish(&plan).or_panic();
    assert_iiptran_sa(&sa, !iiptran_initiates);
    let ours = peering.daemon.established(NEIGHBOR).or_panic().unwrap();
    assert_eq!(ours.identity, CHARON_ID);
    assert_eq!(ours.last_error, None);
}

fn pki(key_type: KeyType, scratch: &iiptran_testkit::WorkDir) -> (Ca, Keys) {
    let ca = Ca::temporary(key_type).or_panic();
    let ours = ca
        .issue_with(OUR_ID, &OURS.to_string(), key_type)
        .or_panic();
    let theirs = ca
        .issue_with(CHARON_ID, &THEIRS.to_string(), key_type)
        .or_panic();
    let dir = scratch.join("ours");
    ours.export_for_iiptrand(&dir).or_panic();
    (ca, Keys::Certificates { ours: dir, theirs })
}

/// Both nodes enrolled with the VN CA (`iiptranctl ca`, `iiptrand enroll-server`,
/// `iiptrand enroll`); charon uses the files enrollment wrote for it.
fn vn_ca(scratch: &iiptran_testkit::WorkDir) -> (enroll_common::TestCa, Keys) {
    let ca = enroll_common::TestCa::new();
    let server = ca.serve(&[]);
    let enroll = |identity: &str, endpoint: std::net::IpAddr| {
        let dir = scratch.join(identity);
        ca.enroll(&server, identity, &endpoint.to_string(), &dir);
        dir
    };
    let ours = enroll(OUR_ID, OURS);
    let theirs = enroll(CHARON_ID, THEIRS);
    let theirs = NodeCert {
        id: CHARON_ID.into(),
        cert: theirs.join("cert.pem"),
        key: theirs.join("key.pem"),
        ca: theirs.join("ca.pem"),
    };
    (ca, Keys::Certificates { ours, theirs })
}

macro_rules! both_directions {
    ($($initiator:ident, $responder:ident: $keys:expr;)*) => {$(
        #[test]
        fn $initiator() {
            if !iiptran_testkit::have_root(stringify!($initiator)) {
                return;
            }
            let scratch = iiptran_testkit::WorkDir::temp("interop-keys").or_panic();
            let (_ca, keys) = $keys(&scratch);
            adjacency(keys, true);
        }

        #[test]
        fn $responder() {
            if !iiptran_testkit::have_root(stringify!($responder)) {
                return;
            }
            let scratch = iiptran_testkit::WorkDir::temp("interop-keys").or_panic();
            let (_ca, keys) = $keys(&scratch);
            adjacency(keys, false);
        }
    )*};
}

both_directions! {
    psk_iiptran_initiates, psk_charon_initiates:
        |_: &iiptran_testkit::WorkDir| ((), Keys::Psk);
    pki_ed25519_iiptran_initiates, pki_ed25519_charon_initiates:
        |s: &iiptran_testkit::WorkDir| pki(KeyType::Ed25519, s);
    pki_p256_iiptran_initiates, pki_p256_charon_initiates:
        |s: &iiptran_testkit::WorkDir| pki(KeyType::EcdsaP256, s);
    vn_ca_ed25519_iiptran_initiates, vn_ca_ed25519_charon_initiates: vn_ca;
}

fn kernel_netlink_plan(iiptran_initiates: bool) -> Plan {
    let mut plan = Plan::new(Keys::Psk, iiptran_initiates);
    plan.charon.fake_kernel = false;
    plan
}

/// charon with its kernel-netlink interface on this kernel (no ESP): IKE_SA_INIT and
/// IKE_AUTH complete with iiptrand as initiator, and charon refuses the child because it
/// cannot install it: N(NO_PROPOSAL_CHOSEN) in its IKE_AUTH response. iiptrand logs the
/// refusal and leaves its link down.
#[test]
fn kernel_netlink_charon_responds_ike_up_child_refused() {
    if !iiptran_testkit::have_root("kernel_netlink_charon_responds_ike_up_child_refused") {
        return;
    }
    let install = Installation::find(&support::capture::TOOLS).or_panic();
    let plan = kernel_netlink_plan(true);
    let peering = Peering::start(&install, &plan).or_panic();
    wait_for_log(&peering, "IKE SA up");
    wait_for_log(&peering, "child SA refused");
    let log = peering.charon.log();
    assert!(log.contains(ESTABLISHED), "{log}");
    assert!(
        log.contains("unable to install inbound and outbound IPsec SA (SAD) in kernel"),
        "{log}"
    );
    assert!(
        log.contains("generating IKE_AUTH response 1 [ IDr AUTH N(NO_PROP) ]"),
        "{log}"
    );
    let ours = peering.daemon.log();
    let refusal = ours
        .lines()
        .find(|l| l.contains("child SA refused"))
        .unwrap();
    assert!(refusal.contains("NO_PROPOSAL_CHOSEN"), "{refusal}");
    let neighbor = peering.daemon.neighbor(NEIGHBOR).or_panic().unwrap();
    assert_eq!(neighbor.link_state, LinkState::Down, "{neighbor:?}");
    assert_ne!(neighbor.adjacency, "established");
}

/// charon with kernel-netlink as initiator: iiptrand accepts the child and installs it in
/// its userspace data plane; charon cannot install its side, keeps the IKE SA alone and
/// sends DELETE for the child, which takes iiptrand's link down again.
#[test]
fn kernel_netlink_charon_initiates_ike_up_child_not_installed() {
    if !iiptran_testkit::have_root("kernel_netlink_charon_initiates_ike_up_child_not_installed") {
        return;
    }
    let install = Installation::find(&support::capture::TOOLS).or_panic();
    let plan = kernel_netlink_plan(false);
    let peering = Peering::start(&install, &plan).or_panic();
    let initiated = peering.charon.initiate_child("ipip");
    assert!(
        initiated.is_err(),
        "charon installed a child: {initiated:?}"
    );
    let log = peering.charon.log();
    assert!(log.contains(ESTABLISHED), "{log}");
    assert!(
        log.contains("failed to establish CHILD_SA, keeping IKE_SA"),
        "{log}"
    );
    assert!(
        log.contains("unable to install inbound and outbound IPsec SA (SAD) in kernel"),
        "{log}"
    );
    assert!(
        log.contains("sending DELETE for ESP CHILD_SA"),
        "charon keeps the child: {log}"
    );
    wait_for_log(&peering, "child SAs deleted or expired");
    let neighbor = peering.daemon.wait_link_down(NEIGHBOR, SETUP).or_panic();
    assert_ne!(neighbor.adjacency, "established", "{neighbor:?}");
}

/// What charon logs when IKE_AUTH completes.
const ESTABLISHED: &str =
    "IKE_SA iiptran[1] established between 192.0.2.2[ss.vn.example]...192.0.2.1[a.vn.example]";

fn wait_for_log(peering: &Peering, needle: &str) {
    wait_until(
        &format!("iiptrand to log {needle:?}"),
        SETUP,
        Duration::from_millis(100),
        || Ok(peering.daemon.log().contains(needle)),
    )
    .or_panic();
}
