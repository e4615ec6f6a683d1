//! The IIPtran selector and mode rule against strongSwan's charon configured otherwise:
//! as responder iiptrand narrows a broader proposal (any protocol, subnets) to protocol 4
//! between the two endpoints, and refuses tunnel mode (NO_PROPOSAL_CHOSEN) and selectors
//! that do not cover the tunnel (TS_UNACCEPTABLE); as initiator it refuses charon's
//! tunnel-mode answer and an answer narrowed to one port. Each decision is checked in iiptrand's log and `list-neighbors`, and
//! in what charon logs and lists. Needs root and `tests/interop/setup`.

mod support;

use std::time::Duration;

use iiptran::control::protocol::LinkState;
use iiptran_testkit::strongswan::{Connection, Installation};
use iiptran_testkit::wait::wait_until;
use support::OrPanic;
use support::peering::{Keys, NEIGHBOR, OURS, Peering, Plan, SETUP, THEIRS, child};

fn peering(
    iiptran_initiates: bool,
    configure: impl FnOnce(Connection) -> Connection,
) -> (Plan, Peering) {
    let install = Installation::find(&support::capture::TOOLS).or_panic();
    let plan = Plan::new(Keys::Psk, iiptran_initiates).charon_connection(configure);
    let peering = Peering::start(&install, &plan).or_panic();
    (plan, peering)
}

/// charon initiates with `local_ts`/`remote_ts`; iiptrand narrows them to the tunnel.
fn narrowed(local_ts: &str, remote_ts: &str) {
    let (plan, peering) = peering(false, |mut conn| {
        conn.local_ts = local_ts.into();
        conn.remote_ts = remote_ts.into();
        conn
    });
    let sa = peering.establish(&plan).or_panic();
    let child = child(&sa);
    assert_eq!(child.mode, "TRANSPORT");
    assert_eq!(child.local_ts, [format!("{THEIRS}/32[ipencap]")], "{sa:#?}");
    assert_eq!(child.remote_ts, [format!("{OURS}/32[ipencap]")], "{sa:#?}");
    let up = peering.daemon.established(NEIGHBOR).or_panic().unwrap();
    assert_eq!(up.last_error, None);
}

#[test]
fn responder_narrows_dynamic_without_protocol() {
    if !iiptran_testkit::have_root("responder_narrows_dynamic_without_protocol") {
        return;
    }
    narrowed("dynamic", "dynamic");
}

#[test]
fn responder_narrows_subnets() {
    if !iiptran_testkit::have_root("responder_narrows_subnets") {
        return;
    }
    narrowed("192.0.2.0/24", "192.0.2.0/24");
}

/// Waits for iiptrand's log line that refuses a child SA, and returns it.
fn refusal(peering: &Peering) -> String {
    wait_until(
        "iiptrand to refuse the child SA",
        SETUP,
        Duration::from_millis(100),
        || {
            Ok(peering
                .daemon
                .log()
                .lines()
                .find(|l| l.contains("child SA refused"))
                .map(str::to_owned))
        },
    )
    .or_panic()
}

/// IKE_AUTH completed, iiptrand refused the child with `notify` and shows it as the
/// neighbor's last error, charon ends with no child SA, and iiptrand's link stays down. (Whether the childless IKE SA stays is not the
/// rule's business: the adjacency may drop it and try again.)
fn refused(peering: &Peering, notify: &str) {
    let line = refusal(peering);
    assert!(line.contains(notify), "{line}");
    let log = peering.charon.log();
    assert!(log.contains(ESTABLISHED), "charon's IKE SA: {log}");
    peering
        .charon
        .wait_for_sas("charon to hold no child SA", SETUP, |sas| {
            sas.iter().all(|sa| sa.children.is_empty()).then_some(())
        })
        .or_panic();
    let neighbor = peering.daemon.neighbor(NEIGHBOR).or_panic().unwrap();
    assert_eq!(neighbor.link_state, LinkState::Down, "{neighbor:?}");
    assert_ne!(neighbor.adjacency, "established", "{neighbor:?}");
    let error = neighbor.last_error.as_ref().map(|e| e.message.as_str());
    assert_eq!(
        error,
        Some(format!("child SA refused: {notify}").as_str()),
        "the refusal is not the neighbor's last error: {neighbor:?}"
    );
    assert_eq!(
        peering.daemon.status().or_panic().unwrap().counts.child_sas,
        0
    );
}

/// What charon logs when IKE_AUTH completes.
const ESTABLISHED: &str =
    "IKE_SA iiptran[1] established between 192.0.2.2[ss.vn.example]...192.0.2.1[a.vn.example]";

/// charon initiates with this connection; iiptrand must refuse the child with `notify`.
fn responder_refuses(configure: impl FnOnce(Connection) -> Connection, notify: &str) {
    let (_plan, peering) = peering(false, configure);
    let initiated = peering.charon.initiate_child("ipip");
    assert!(initiated.is_err(), "charon got a child: {initiated:?}");
    refused(&peering, notify);
    let log = peering.charon.log();
    assert!(
        log.contains(&format!("received {notify} notify")),
        "charon did not hear {notify}: {log}"
    );
}

#[test]
fn responder_refuses_tunnel_mode() {
    if !iiptran_testkit::have_root("responder_refuses_tunnel_mode") {
        return;
    }
    responder_refuses(
        |mut conn| {
            conn.mode = "tunnel".into();
            conn
        },
        "NO_PROPOSAL_CHOSEN",
    );
}

#[test]
fn responder_refuses_selectors_without_the_tunnel() {
    if !iiptran_testkit::have_root("responder_refuses_selectors_without_the_tunnel") {
        return;
    }
    responder_refuses(
        |mut conn| {
            conn.local_ts = "dynamic[udp]".into();
            conn.remote_ts = "dynamic[udp]".into();
            conn
        },
        "TS_UNACCEPTABLE",
    );
}

/// iiptrand initiates; charon, configured for tunnel mode, answers without
/// USE_TRANSPORT_MODE: iiptrand refuses the answer and deletes the child charon installed
/// (charon would otherwise keep a tunnel-mode SA nobody uses).
#[test]
fn initiator_refuses_a_tunnel_mode_answer() {
    if !iiptran_testkit::have_root("initiator_refuses_a_tunnel_mode_answer") {
        return;
    }
    let (_plan, peering) = peering(true, |mut conn| {
        conn.mode = "tunnel".into();
        conn
    });
    refused(&peering, "NO_PROPOSAL_CHOSEN");
    let log = peering.charon.log();
    assert!(log.contains("CHILD_SA ipip{1} established"), "{log}");
}

/// iiptrand initiates; charon, configured with a port range on protocol 4, narrows
/// iiptrand's selectors to it: iiptrand refuses the answer (TS_UNACCEPTABLE), as an
/// IIPtran SA covers all of protocol 4 between the endpoints, and deletes charon's child.
#[test]
fn initiator_refuses_narrowed_selectors() {
    if !iiptran_testkit::have_root("initiator_refuses_narrowed_selectors") {
        return;
    }
    let (_plan, peering) = peering(true, |mut conn| {
        conn.local_ts = "dynamic[ipencap/1000]".into();
        conn
    });
    refused(&peering, "TS_UNACCEPTABLE");
    let log = peering.charon.log();
    assert!(
        log.contains("TS 192.0.2.2/32[ipencap/1000] === 192.0.2.1/32[ipencap]"),
        "{log}"
    );
}
