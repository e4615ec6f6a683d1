//! One engine with many peers: it finds the IKE SAs with a peer by their address pair, so
//! what one peer does (restart, move behind its NAT, delete) touches its SAs only, and
//! SAs that go leave nothing behind.

mod sim;

use iiptran_ike::config::Config;
use iiptran_ike::sa::{DownReason, Event, IkeSaId};
use sim::{Nat, Net};
use std::net::IpAddr;
use std::time::Duration;

const SPOKES: usize = 24;

/// Node 0, the hub, paired with `SPOKES` nodes that each have an IKE SA with it.
fn star(seed: u64, config: Config) -> Net {
    let mut net = Net::new(seed);
    net.add("hub.example", "192.0.2.1", config.clone());
    for i in 1..=SPOKES {
        let n = net.add(
            &format!("spoke{i}.example"),
            &format!("192.0.2.{}", 10 + i),
            config.clone(),
        );
        net.pair_psk(0, n);
    }
    for n in 1..=SPOKES {
        net.initiate(n, 0);
    }
    assert!(net.run_until(Duration::from_secs(5), |n| {
        n.nodes[0].engine.ike_sas().len() == SPOKES
            && n.nodes[0].live_children().len() == SPOKES
            && (1..=SPOKES).all(|i| n.nodes[i].live_children().len() == 1)
    }));
    net
}

/// The IKE SAs node `n` reported up with the peer node `peer`, in order.
fn ups_with(net: &Net, n: usize, peer: usize) -> Vec<IkeSaId> {
    let id = net.nodes[peer].id();
    net.nodes[n]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::IkeSaUp { sa, peer, .. } if *peer == id => Some(*sa),
            _ => None,
        })
        .collect()
}

fn downs(net: &Net, n: usize, why: &DownReason) -> Vec<IkeSaId> {
    net.nodes[n]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::IkeSaDown { sa, reason } if reason == why => Some(*sa),
            _ => None,
        })
        .collect()
}

#[test]
fn a_restarted_peer_ends_its_own_stale_sa_only() {
    let mut net = star(40, Config::default());
    let before = net.nodes[0].engine.ike_sas();
    let spoke = 5;
    let stale = ups_with(&net, 0, spoke);
    assert_eq!(stale.len(), 1);
    net.restart(spoke);
    net.initiate(spoke, 0);
    assert!(net.run_until(Duration::from_secs(1), |n| {
        n.nodes[spoke].live_children().len() == 1
            && !downs(n, 0, &DownReason::PeerRestarted).is_empty()
    }));
    assert_eq!(downs(&net, 0, &DownReason::PeerRestarted), stale);
    let after = net.nodes[0].engine.ike_sas();
    assert_eq!(after.len(), SPOKES);
    assert!(!after.contains(&stale[0]));
    let kept: Vec<&IkeSaId> = before.iter().filter(|id| after.contains(id)).collect();
    assert_eq!(kept.len(), SPOKES - 1, "the other spokes' SAs stay");
    assert_eq!(net.nodes[0].live_children().len(), SPOKES);
}

#[test]
fn a_peer_whose_nat_mapping_moved_is_found_when_it_restarts() {
    let mut net = Net::new(41);
    let alice = net.add("alice.vn.example", "10.0.0.1", Config::default());
    let bob = net.add("bob.vn.example", "192.0.2.2", Config::default());
    net.pair_psk(alice, bob);
    let inside = net.nodes[alice].ip;
    let first: IpAddr = "203.0.113.7".parse().unwrap();
    let moved: IpAddr = "203.0.113.8".parse().unwrap();
    net.nat = Some(Nat {
        inside,
        outside: first,
    });
    let id = net.initiate(alice, bob);
    assert!(net.run_until(Duration::from_secs(1), |n| n.paired(alice, bob)));
    // The NAT maps Alice to another address; Bob learns it from her next request.
    net.nat = Some(Nat {
        inside,
        outside: moved,
    });
    let spis = net.nodes[alice].active_children()[0].spis;
    let now = net.now;
    assert!(net.nodes[alice].engine.rekey_child(now, id, spis));
    assert!(
        net.run_until(Duration::from_secs(5), |n| n.paired(alice, bob)
            && n.nodes[bob].count(|e| matches!(e, Event::ChildSaRekeyed { .. }))
                == 1)
    );
    let remotes: Vec<IpAddr> = net.nodes[bob]
        .engine
        .snapshot()
        .iter()
        .map(|s| s.remote.ip())
        .collect();
    assert_eq!(remotes, vec![moved]);
    let stale = net.nodes[bob].ike_up();
    net.restart(alice);
    net.initiate(alice, bob);
    assert!(
        net.run_until(Duration::from_secs(1), |n| n.paired(alice, bob)
            && n.nodes[bob].engine.ike_sas().len() == 1)
    );
    assert_eq!(downs(&net, bob, &DownReason::PeerRestarted), stale);
}

#[test]
fn deleted_sas_leave_no_timers_behind() {
    let config = Config {
        liveness_interval: None,
        ..Config::default()
    };
    let mut net = star(42, config);
    for n in 1..=SPOKES {
        let (now, id) = (net.now, net.nodes[n].engine.ike_sas()[0]);
        assert!(net.nodes[n].engine.delete_ike(now, id));
    }
    assert!(net.run_until(Duration::from_secs(5), |n| {
        n.nodes[0].engine.ike_sas().is_empty()
            && n.nodes[0].engine.snapshot().is_empty()
            && (1..=SPOKES).all(|i| n.nodes[i].engine.snapshot().is_empty())
    }));
    assert_eq!(
        downs(&net, 0, &DownReason::DeletedByPeer).len(),
        SPOKES,
        "every spoke's SA went"
    );
    for n in &net.nodes {
        assert!(
            n.engine.poll_timeout().is_none(),
            "{} keeps a timer",
            n.name
        );
    }
    // The hub keeps nothing of them: a spoke that comes back starts afresh.
    net.initiate(3, 0);
    assert!(net.run_until(Duration::from_secs(1), |n| n.paired(3, 0)));
    assert!(downs(&net, 0, &DownReason::PeerRestarted).is_empty());
}
