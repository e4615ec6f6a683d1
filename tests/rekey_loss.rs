//! Rekeys under load lose nothing: two real `iiptrand` processes in two network
//! namespaces (userspace data plane) carry numbered UDP datagrams at a steady rate in both
//! directions over their virtual link while child SA and IKE SA rekeys, started from
//! either side, replace the SAs; every datagram sent must arrive. Needs root.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use iiptran::control::protocol::IkeSaReport;
use iiptran_testkit::datagrams::{Receiver, Sender, bind};
use iiptran_testkit::iiptrand::Credentials;
use iiptran_testkit::wait::wait_until;
use iiptran_testkit::{WorkDir, have_root};
use support::OrPanic;
use support::daemon::{Daemon, TWO_NODES_V4, TwoNodes};

const PSK: &str = "a long pre-shared key for the rekey loss test";
/// Datagrams per second in each direction: fast enough that a rekey which drops what is
/// in flight on the old SAs, or sends on new SAs the peer has not installed yet, loses
/// some, slow enough for two busy cores.
const RATE: u64 = 1_000;
const PORT: u16 = 9_000;

/// The IKE SPIs (initiator's, responder's) and the child SPIs (inbound, outbound) in use.
type InUse = (u64, u64, u32, u32);

/// The SAs in use on a node once it has exactly one established IKE SA with exactly one
/// installed child pair (a rekey is over only when the old SAs are gone).
fn settled(d: &Daemon) -> Result<Option<InUse>> {
    let Ok([sa]) = <[IkeSaReport; 1]>::try_from(d.sas()?) else {
        return Ok(None);
    };
    let one = sa.state == "ESTABLISHED"
        && sa.child_sas.len() == 1
        && sa.child_sas[0].state == "INSTALLED";
    Ok(one.then(|| {
        let c = &sa.child_sas[0];
        (
            sa.spi_initiator.0,
            sa.spi_responder.0,
            c.inbound.spi.0,
            c.outbound.spi.0,
        )
    }))
}

#[test]
fn child_and_ike_rekeys_under_load_lose_no_datagram() {
    if !have_root("child_and_ike_rekeys_under_load_lose_no_datagram") {
        return;
    }
    let dir = WorkDir::temp("rekey-loss").or_panic();
    let psk = |_: &str| Credentials::Psk(PSK.to_owned());
    let nodes = TwoNodes::new("rl", TWO_NODES_V4, psk).or_panic();
    let (a, b) = nodes.start(dir.path()).or_panic();
    a.wait_established("b", Duration::from_secs(30)).or_panic();
    b.wait_established("a", Duration::from_secs(30)).or_panic();
    let both_settled = || -> Result<Option<(InUse, InUse)>> { Ok(settled(&a)?.zip(settled(&b)?)) };
    let mut sas = wait_until(
        "one IKE SA with one child pair on both",
        Duration::from_secs(10),
        Duration::from_millis(50),
        both_settled,
    )
    .or_panic()
    .0;

    let a_addr: SocketAddr = (std::net::Ipv4Addr::new(10, 255, 0, 0), PORT).into();
    let b_addr: SocketAddr = (std::net::Ipv4Addr::new(10, 255, 0, 1), PORT).into();
    let a_socket = bind(&nodes.a_ns, a_addr).or_panic();
    let b_socket = bind(&nodes.b_ns, b_addr).or_panic();
    let clone = |s: &std::net::UdpSocket| s.try_clone().map_err(anyhow::Error::from).or_panic();
    let at_b = Receiver::start(clone(&b_socket)).or_panic();
    let at_a = Receiver::start(clone(&a_socket)).or_panic();
    let mut a_to_b = Sender::start(a_socket, b_addr, RATE, 8);
    let mut b_to_a = Sender::start(b_socket, a_addr, RATE, 8);
    wait_until(
        "datagrams flowing both ways",
        Duration::from_secs(5),
        Duration::from_millis(10),
        || Ok(at_a.count() > 100 && at_b.count() > 100),
    )
    .or_panic();

    let mut rekeys = 0;
    for round in 0..3 {
        for (node, ike) in [(&a, false), (&b, false), (&a, true), (&b, true)] {
            let peer = if std::ptr::eq(node, &a) { "b" } else { "a" };
            let mut args = vec!["rekey", peer];
            if ike {
                args.push("--ike");
            }
            let out = node.ctl(&args).or_panic();
            assert!(
                out.status.success(),
                "rekey {args:?} in round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let before = sas;
            sas = wait_until(
                "the rekey to finish with the old SAs gone",
                Duration::from_secs(10),
                Duration::from_millis(20),
                || {
                    Ok(both_settled()?.and_then(|(x, _)| {
                        let changed = if ike {
                            (x.0, x.1) != (before.0, before.1)
                        } else {
                            (x.2, x.3) != (before.2, before.3)
                        };
                        changed.then_some(x)
                    }))
                },
            )
            .or_panic();
            rekeys += 1;
            // Traffic on the new SAs both ways before the next rekey begins.
            let (from_a, from_b) = (at_b.count(), at_a.count());
            wait_until(
                "datagrams after the rekey",
                Duration::from_secs(5),
                Duration::from_millis(10),
                || Ok(at_b.count() > from_a + 200 && at_a.count() > from_b + 200),
            )
            .or_panic();
        }
    }

    let sent_a = a_to_b.stop().or_panic();
    let sent_b = b_to_a.stop().or_panic();
    let within = Duration::from_secs(3);
    let (lost_at_b, lost_at_a) = (at_b.lost(sent_a, within), at_a.lost(sent_b, within));
    assert!(
        lost_at_b.is_empty() && lost_at_a.is_empty(),
        "datagrams lost across {rekeys} rekeys: a->b of {sent_a}: {lost_at_b:?}, \
         b->a of {sent_b}: {lost_at_a:?}",
    );
}
