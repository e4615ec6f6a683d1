//! The life of an IIPtran adjacency between iiptrand and strongSwan's charon (fake kernel):
//! child and IKE rekeys started by either side, liveness checks both ways (and each side
//! noticing the other's death), DELETE from either side, and charon restarted under
//! iiptrand (INITIAL_CONTACT). Needs root and `tests/interop/setup`.

mod support;

use std::time::Duration;

use iiptran::control::protocol::LinkState;
use iiptran_testkit::iiptrand::LIVENESS_BOUND;
use iiptran_testkit::strongswan::{IkeSa, Installation};
use iiptran_testkit::wait::wait_until;
use support::OrPanic;
use support::peering::{Keys, NEIGHBOR, Peering, Plan, SETUP, child, installed};

fn start(plan: &Plan) -> (Installation, Peering, IkeSa) {
    let install = Installation::find(&support::capture::TOOLS).or_panic();
    let peering = Peering::start(&install, plan).or_panic();
    let sa = peering.establish(plan).or_panic();
    (install, peering, sa)
}

fn wait_for_log(peering: &Peering, what: &str, found: impl Fn(&str) -> bool) {
    wait_until(
        &format!("iiptrand's log to show {what}"),
        SETUP,
        Duration::from_millis(100),
        || Ok(found(&peering.daemon.log())),
    )
    .or_panic();
}

fn ctl_ok(peering: &Peering, args: &[&str]) {
    let out = peering.daemon.ctl(args).or_panic();
    assert!(
        out.status.success(),
        "iiptranctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until charon lists one installed child whose SPIs differ from `before`'s, and
/// checks that iiptrand's adjacency stayed up.
fn child_replaced(peering: &Peering, before: &IkeSa, who: &str) -> IkeSa {
    let old = child(before).spi_in.clone();
    let after = peering
        .charon
        .wait_for_sas(&format!("the child rekeyed by {who}"), SETUP, |sas| {
            installed(sas).filter(|sa| child(sa).spi_in != old)
        })
        .or_panic();
    assert_eq!(after.initiator_spi, before.initiator_spi, "same IKE SA");
    let rekeys = |log: &str| log.matches("event=ChildSaRekeyed").count();
    let seen = rekeys(&peering.daemon.log());
    assert!(seen > 0, "iiptrand saw no child rekey by {who}");
    peering
        .daemon
        .established(NEIGHBOR)
        .or_panic()
        .unwrap_or_else(|| panic!("iiptrand's adjacency went down in the rekey by {who}"));
    after
}

/// Waits until charon lists the IKE SA with new SPIs and the same installed child.
fn ike_replaced(peering: &Peering, before: &IkeSa, who: &str) -> IkeSa {
    let after = peering
        .charon
        .wait_for_sas(&format!("the IKE SA rekeyed by {who}"), SETUP, |sas| {
            installed(sas).filter(|sa| sa.initiator_spi != before.initiator_spi)
        })
        .or_panic();
    assert_eq!(
        child(&after).spi_in,
        child(before).spi_in,
        "the child moves to the new IKE SA"
    );
    let sas = peering.charon.list_sas().or_panic();
    assert_eq!(sas.len(), 1, "the old IKE SA is gone: {sas:#?}");
    peering
        .daemon
        .established(NEIGHBOR)
        .or_panic()
        .unwrap_or_else(|| panic!("iiptrand's adjacency went down in the IKE rekey by {who}"));
    after
}

/// Child rekey by charon, by iiptran, then IKE rekey by charon, by iiptran: each time the
/// adjacency stays up and charon ends with one IKE SA and one installed child. With `pfs`
/// (iiptrand's default) both rekey children with a fresh X25519 exchange; charon requires
/// the group in its ESP proposal then, as it refuses a KE it was not configured for.
fn rekeys(iiptran_initiates: bool, pfs: bool) {
    let esp = if pfs {
        "chacha20poly1305-x25519"
    } else {
        "chacha20poly1305"
    };
    let mut plan = Plan::new(Keys::Psk, iiptran_initiates)
        .charon_connection(|conn| conn.proposals("chacha20poly1305-prfsha256-x25519", esp));
    plan.ike = format!("pfs = {pfs}\n");
    let (_install, peering, sa) = start(&plan);
    peering.charon.rekey_child("ipip").or_panic();
    let sa = child_replaced(&peering, &sa, "charon");
    ctl_ok(&peering, &["rekey", NEIGHBOR]);
    let sa = child_replaced(&peering, &sa, "iiptran");
    peering.charon.rekey_ike("iiptran").or_panic();
    let sa = ike_replaced(&peering, &sa, "charon");
    ctl_ok(&peering, &["rekey", NEIGHBOR, "--ike"]);
    let sa = ike_replaced(&peering, &sa, "iiptran");
    // The rekeyed IKE SA still carries the child: one more child rekey over it.
    ctl_ok(&peering, &["rekey", NEIGHBOR]);
    child_replaced(&peering, &sa, "iiptran over the new IKE SA");
}

#[test]
fn rekeys_by_either_side_with_pfs_iiptran_initiated() {
    if !iiptran_testkit::have_root("rekeys_by_either_side_with_pfs_iiptran_initiated") {
        return;
    }
    rekeys(true, true);
}

#[test]
fn rekeys_by_either_side_without_pfs_charon_initiated() {
    if !iiptran_testkit::have_root("rekeys_by_either_side_without_pfs_charon_initiated") {
        return;
    }
    rekeys(false, false);
}

/// Fast retransmissions for charon, so it gives up on a dead peer within seconds.
const CHARON_FAST_RETRANSMIT: &str =
    "    retransmit_timeout = 1\n    retransmit_base = 1\n    retransmit_tries = 2\n";

fn liveness_plan() -> Plan {
    let mut plan = Plan::new(Keys::Psk, true).charon_connection(|conn| conn.dpd("2s"));
    plan.charon.settings = CHARON_FAST_RETRANSMIT.into();
    plan
}

/// Whoever checks first resets the other's idle time, so each direction has its own test.
/// iiptrand checks after 2 s idle and charon, without DPD of its own, answers.
#[test]
fn iiptran_liveness_checks_are_answered() {
    if !iiptran_testkit::have_root("iiptran_liveness_checks_are_answered") {
        return;
    }
    let mut plan = Plan::new(Keys::Psk, true);
    plan.charon.settings = CHARON_FAST_RETRANSMIT.into();
    liveness_answered(
        &plan,
        "charon to answer iiptrand's liveness checks",
        &[
            "parsed INFORMATIONAL request",
            "generating INFORMATIONAL response",
        ],
    );
}

/// charon's DPD every 2 s is answered by iiptrand, whose own checks wait an hour.
#[test]
fn charon_dpd_is_answered() {
    if !iiptran_testkit::have_root("charon_dpd_is_answered") {
        return;
    }
    let mut plan = liveness_plan();
    plan.liveness = "liveness = \"1h\"\n".into();
    liveness_answered(
        &plan,
        "iiptrand to answer charon's DPD",
        &["sending DPD request", "parsed INFORMATIONAL response"],
    );
}

/// Waits until charon's log shows every one of `lines`, then checks that both SAs are
/// still the ones set up first.
fn liveness_answered(plan: &Plan, what: &str, lines: &[&str]) {
    let (_install, peering, sa) = start(plan);
    wait_until(what, SETUP, Duration::from_millis(200), || {
        let log = peering.charon.log();
        Ok(lines.iter().all(|l| log.contains(l)))
    })
    .or_panic();
    let now = installed(&peering.charon.list_sas().or_panic()).expect("charon's SA is up");
    assert_eq!(now.initiator_spi, sa.initiator_spi);
    peering
        .daemon
        .established(NEIGHBOR)
        .or_panic()
        .expect("iiptrand's adjacency stays up");
}

/// charon killed (no DELETE): iiptrand's liveness check fails and takes the link down.
#[test]
fn iiptran_notices_charon_killed() {
    if !iiptran_testkit::have_root("iiptran_notices_charon_killed") {
        return;
    }
    let (_install, mut peering, _) = start(&liveness_plan());
    peering.charon.signal(libc::SIGKILL).or_panic();
    let down = peering
        .daemon
        .wait_link_down(NEIGHBOR, LIVENESS_BOUND)
        .or_panic();
    let error = down.last_error.map(|e| e.message).unwrap_or_default();
    assert!(
        error.contains("liveness"),
        "why the link went down: {error:?}"
    );
}

/// iiptrand killed (no DELETE): charon's DPD gives up and clears the SA.
#[test]
fn charon_dpd_notices_iiptran_killed() {
    if !iiptran_testkit::have_root("charon_dpd_notices_iiptran_killed") {
        return;
    }
    let (_install, mut peering, _) = start(&liveness_plan());
    peering.daemon.process.signal(libc::SIGKILL).or_panic();
    peering
        .charon
        .wait_for_sas("charon to clear the SA", LIVENESS_BOUND, |sas| {
            sas.is_empty().then_some(())
        })
        .or_panic();
    let log = peering.charon.log();
    assert!(log.contains("sending DPD request"), "{log}");
    assert!(log.contains("giving up after 2 retransmits"), "{log}");
}

/// `swanctl --terminate --child`: iiptrand removes the pair and takes its link down.
#[test]
fn charon_deletes_the_child() {
    if !iiptran_testkit::have_root("charon_deletes_the_child") {
        return;
    }
    let (_install, peering, _) = start(&Plan::new(Keys::Psk, false));
    peering.charon.terminate_child("ipip").or_panic();
    let down = peering.daemon.wait_link_down(NEIGHBOR, SETUP).or_panic();
    assert_ne!(down.adjacency, "established");
    wait_for_log(&peering, "the pair deleted", |log| {
        log.contains("child SAs deleted or expired")
    });
}

/// `swanctl --terminate --ike`: iiptrand sees the IKE SA deleted by its peer and takes the
/// link down.
#[test]
fn charon_deletes_the_ike_sa() {
    if !iiptran_testkit::have_root("charon_deletes_the_ike_sa") {
        return;
    }
    let (_install, peering, _) = start(&Plan::new(Keys::Psk, false));
    peering.charon.terminate_ike("iiptran").or_panic();
    let down = peering.daemon.wait_link_down(NEIGHBOR, SETUP).or_panic();
    assert_ne!(down.adjacency, "established");
    wait_for_log(&peering, "the IKE SA deleted by the peer", |log| {
        log.lines()
            .any(|l| l.contains("IKE SA down") && l.contains("DeletedByPeer"))
    });
}

/// `iiptranctl terminate`: charon hears the DELETE and lists no SAs.
#[test]
fn iiptran_terminates() {
    if !iiptran_testkit::have_root("iiptran_terminates") {
        return;
    }
    let (_install, peering, _) = start(&Plan::new(Keys::Psk, true));
    ctl_ok(&peering, &["terminate", NEIGHBOR]);
    peering
        .charon
        .wait_for_sas("charon to list no SAs", SETUP, |sas| {
            sas.is_empty().then_some(())
        })
        .or_panic();
    let log = peering.charon.log();
    assert!(log.contains("received DELETE for IKE_SA iiptran"), "{log}");
    let neighbor = peering.daemon.neighbor(NEIGHBOR).or_panic().unwrap();
    assert_eq!(neighbor.link_state, LinkState::Down);
}

/// charon restarts (SIGKILL, start, initiate): its new IKE SA carries INITIAL_CONTACT, on
/// which iiptrand ends the IKE SAs it had with charon before that one began, at once and
/// without waiting for a liveness check, and the adjacency moves to the new SA within
/// seconds without going down. (The load-tester's restarted SPI counter gives the new outbound SA the
/// old one's SPI: the old SA must be gone from the data plane first.)
#[test]
fn charon_restarted_initial_contact() {
    if !iiptran_testkit::have_root("charon_restarted_initial_contact") {
        return;
    }
    let plan = Plan::new(Keys::Psk, false);
    let (install, mut peering, old) = start(&plan);
    let before = peering.daemon.neighbor(NEIGHBOR).or_panic().unwrap();
    peering.charon.signal(libc::SIGKILL).or_panic();
    peering
        .charon
        .restart(&install, &peering.theirs, &plan.charon)
        .or_panic();
    let restarted = std::time::Instant::now();
    peering.charon.initiate_child("ipip").or_panic();
    let new = peering
        .charon
        .wait_for_sas("charon's new SA", SETUP, installed)
        .or_panic();
    assert_ne!(new.initiator_spi, old.initiator_spi);
    let log = peering.charon.log();
    assert!(log.contains("N(INIT_CONTACT)"), "{log}");
    wait_for_log(&peering, "the old IKE SA ended for the restart", |log| {
        log.lines()
            .any(|l| l.contains("IKE SA down") && l.contains("PeerRestarted"))
    });
    assert!(
        restarted.elapsed() < Duration::from_secs(6),
        "the old IKE SA went only after {:?}",
        restarted.elapsed()
    );
    peering
        .daemon
        .wait_established(NEIGHBOR, Duration::from_secs(6))
        .or_panic();
    assert_eq!(
        peering.daemon.status().or_panic().unwrap().counts.ike_sas,
        1
    );
    let sas = peering.charon.list_sas().or_panic();
    assert_eq!(
        installed(&sas).map(|sa| sa.initiator_spi),
        Some(new.initiator_spi)
    );
    // A restart replaces the pair: the link stays up, routing sees no flap.
    let after = peering.daemon.neighbor(NEIGHBOR).or_panic().unwrap();
    assert_eq!(
        (after.last_established, after.last_error.as_ref()),
        (before.last_established, None)
    );
}
