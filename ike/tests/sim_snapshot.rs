//! The engine's read-only view of its SAs (`Engine::snapshot`) through setup, a child
//! rekey and on both ends, on a simulated clock.

mod sim;

use iiptran_ike::config::{Config, EspSuite, IkeSuite};
use iiptran_ike::sa::{ChildSaState, IkeSaSnapshot, IkeSaState, Mode, SaCounts};
use sim::Net;
use std::time::Duration;

/// The one IKE SA of node `n`, after checking that the engine's counts agree with it.
fn only(net: &Net, n: usize) -> IkeSaSnapshot {
    let all = net.nodes[n].engine.snapshot();
    assert_eq!(all.len(), 1, "node {n}: {all:?}");
    let sa = all.into_iter().next().unwrap();
    let mut counted = SaCounts::default();
    *match sa.state {
        IkeSaState::Connecting => &mut counted.connecting,
        IkeSaState::HalfOpen => &mut counted.half_open,
        IkeSaState::Established => &mut counted.established,
        IkeSaState::Duplicate => &mut counted.duplicate,
    } = 1;
    counted.installed_children = sa
        .children
        .iter()
        .filter(|c| c.state == ChildSaState::Installed)
        .count();
    assert_eq!(net.nodes[n].engine.counts(), counted, "node {n}");
    sa
}

#[test]
fn snapshot_follows_setup_and_a_child_rekey() {
    let config = Config::default();
    let lifetimes = config.lifetimes;
    let mut net = Net::new(7);
    net.add("alice.example", "192.0.2.1", config.clone());
    net.add("bob.example", "192.0.2.2", config.clone());
    net.pair_psk(0, 1);
    let id = net.initiate(0, 1);

    let connecting = only(&net, 0);
    assert_eq!(connecting.id, id);
    assert_eq!(connecting.state, IkeSaState::Connecting);
    assert!(connecting.initiator);
    assert_eq!(connecting.spi_r, 0);
    assert_eq!(connecting.established, None);
    assert!(connecting.children.is_empty());

    assert!(net.run_until(Duration::from_secs(1), |net| {
        net.nodes[1]
            .engine
            .snapshot()
            .iter()
            .any(|s| s.state == IkeSaState::HalfOpen)
    }));
    let half_open = only(&net, 1);
    assert!(!half_open.initiator);
    // It answered IKE_SA_INIT one latency after node 0 sent it at the start.
    assert_eq!(
        half_open.expire_at,
        Some(net.start + net.latency + config.half_open_timeout)
    );

    assert!(net.run_until(Duration::from_secs(1), |net| net.paired(0, 1)));
    let up_at = net.now;
    let (a, b) = (only(&net, 0), only(&net, 1));
    for (sa, initiator) in [(&a, true), (&b, false)] {
        assert_eq!(sa.state, IkeSaState::Established);
        assert_eq!(sa.initiator, initiator);
        assert_eq!(sa.suite, IkeSuite::CHACHA_X25519);
        assert_eq!(sa.expire_at, None);
        let established = sa.established.expect("established time");
        assert!(established > net.start && established <= up_at);
        let rekey = sa.rekey_at.expect("IKE rekey time") - established;
        let lifetime = lifetimes.ike_rekey.unwrap();
        assert!(rekey <= lifetime && rekey >= lifetime * 9 / 10, "{rekey:?}");
        assert_eq!(sa.children.len(), 1);
        let child = &sa.children[0];
        assert_eq!(child.state, ChildSaState::Installed);
        assert_eq!(child.mode, Mode::Transport);
        assert_eq!(child.suite, EspSuite::CHACHA);
        assert!(!child.udp_encap);
        assert_eq!(child.expire_at, child.established + lifetimes.child_hard);
        let rekey = child.rekey_at.expect("child rekey time") - child.established;
        let lifetime = lifetimes.child_rekey.unwrap();
        assert!(rekey <= lifetime && rekey >= lifetime * 9 / 10, "{rekey:?}");
    }
    assert_eq!((a.spi_i, a.spi_r), (b.spi_i, b.spi_r));
    assert_ne!(a.spi_r, 0);
    assert_eq!(a.local, net.nodes[0].addr());
    assert_eq!(a.remote, net.nodes[1].addr());
    assert_eq!(a.local_id, Some(net.nodes[0].id()));
    assert_eq!(a.remote_id, Some(net.nodes[1].id()));
    assert_eq!(b.remote_id, Some(net.nodes[0].id()));
    let (ca, cb) = (&a.children[0], &b.children[0]);
    assert_eq!(ca.spis.inbound, cb.spis.outbound);
    assert_eq!(ca.spis.outbound, cb.spis.inbound);
    assert_eq!(ca.ts_local, sim::ipip(net.nodes[0].ip));
    assert_eq!(ca.ts_remote, sim::ipip(net.nodes[1].ip));
    assert!(ca.ts_local.iter().all(|ts| ts.ip_protocol == 4));
    assert_eq!(cb.ts_local, ca.ts_remote);

    // Past the first child rekey: one installed child again, newer, with new SPIs.
    let first_rekey = ca.rekey_at.unwrap().min(cb.rekey_at.unwrap());
    let wait = first_rekey - net.now + Duration::from_secs(60);
    net.run_for(wait);
    for n in 0..2 {
        let sa = only(&net, n);
        assert_eq!(sa.spi_i, a.spi_i, "the IKE SA is the same");
        let installed: Vec<_> = sa
            .children
            .iter()
            .filter(|c| c.state == ChildSaState::Installed)
            .collect();
        assert_eq!(installed.len(), 1, "node {n}: {:?}", sa.children);
        assert!(installed[0].established >= first_rekey);
        assert_ne!(installed[0].spis, [ca, cb][n].spis);
    }
}
