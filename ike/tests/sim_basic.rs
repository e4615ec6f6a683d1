//! IKE_SA_INIT + IKE_AUTH with the first child SA, INFORMATIONAL exchanges and
//! retransmission between simulated engines.

mod sim;

use iiptran_ike::config::{Config, EspSuite, IkeSuite, Retransmission, Suites};
use iiptran_ike::iana::{DhId, EncrId, IntegId, IpProtocol, NotifyType, PrfId};
use iiptran_ike::sa::{DownReason, Event};
use iiptran_ike::ts::TrafficSelector;
use sim::{Faults, Net};
use std::sync::Arc;
use std::time::Duration;

fn two(seed: u64, config: Config) -> Net {
    let mut net = Net::new(seed);
    net.add("alice.example", "192.0.2.1", config.clone());
    net.add("bob.example", "192.0.2.2", config);
    net.pair_psk(0, 1);
    net
}

fn established(net: &Net) -> bool {
    net.paired(0, 1)
}

#[test]
fn psk_setup_both_ways() {
    for (a, b) in [(0, 1), (1, 0)] {
        let mut net = two(1, Config::default());
        let id = net.initiate(a, b);
        assert!(net.run_until(Duration::from_secs(1), established));
        let up = |n: usize| {
            net.nodes[n]
                .events
                .iter()
                .find_map(|e| match e {
                    Event::IkeSaUp {
                        peer, we_initiated, ..
                    } => Some((peer.clone(), *we_initiated)),
                    _ => None,
                })
                .expect("IKE SA up")
        };
        assert_eq!(up(a), (net.nodes[b].id(), true));
        assert_eq!(up(b), (net.nodes[a].id(), false));
        assert_eq!(net.nodes[a].engine.ike_sas(), vec![id]);
        let child = &net.nodes[a].active_children()[0];
        assert_eq!(child.ts_local, sim::ipip(net.nodes[a].ip));
        assert_eq!(child.ts_remote, sim::ipip(net.nodes[b].ip));
        assert!(!child.udp_encap);
        assert_eq!(child.inbound.encr.len(), 36);
    }
}

#[test]
fn established_sa_stays_quiet_until_liveness_interval() {
    let mut net = two(2, Config::default());
    net.initiate(0, 1);
    assert!(net.run_until(Duration::from_secs(1), established));
    let sent = net.sent;
    net.run_for(Duration::from_secs(29));
    assert_eq!(net.sent, sent, "no traffic before the liveness interval");
    net.run_for(Duration::from_secs(2));
    assert_eq!(net.sent, sent + 2, "one liveness check and its answer");
    assert!(net.paired(0, 1));
}

fn lossy(tries: u32) -> Config {
    Config {
        retransmission: Retransmission {
            tries,
            ..Retransmission::default()
        },
        ..Config::default()
    }
}

#[test]
fn thirty_percent_loss_still_establishes() {
    for seed in 0..60 {
        let mut net = two(seed, lossy(12));
        net.faults = Faults {
            loss: 0.3,
            ..Faults::default()
        };
        net.initiate(0, 1);
        assert!(
            net.run_until(Duration::from_secs(600), established),
            "seed {seed}"
        );
    }
}

#[test]
fn duplication_and_reordering_give_one_sa() {
    for seed in 0..30 {
        let mut net = two(seed, Config::default());
        net.faults = Faults {
            loss: 0.1,
            duplicate: 0.5,
            jitter: Duration::from_millis(300),
        };
        net.initiate(0, 1);
        assert!(
            net.run_until(Duration::from_secs(300), established),
            "seed {seed}"
        );
        net.run_for(Duration::from_secs(5));
        for n in 0..2 {
            assert_eq!(
                net.nodes[n].count(|e| matches!(e, Event::IkeSaUp { .. })),
                1
            );
            assert_eq!(net.nodes[n].count(|e| matches!(e, Event::ChildSaUp(_))), 1);
        }
    }
}

#[test]
fn liveness_failure_takes_the_sa_down() {
    let mut net = two(3, Config::default());
    let id = net.initiate(0, 1);
    assert!(net.run_until(Duration::from_secs(1), established));
    net.faults.loss = 1.0;
    let cut = net.now;
    let down = |net: &Net| {
        net.nodes[0].events.contains(&Event::IkeSaDown {
            sa: id,
            reason: DownReason::LivenessFailed,
        })
    };
    assert!(net.run_until(Duration::from_secs(600), down));
    // 30 s idle, then 4 s * (1 + 1.8 + ... + 1.8^5) of retransmissions.
    let schedule: f64 = (0..6).map(|n| 4.0 * 1.8f64.powi(n)).sum();
    let took = (net.now - cut).as_secs_f64();
    assert!((took - 30.0 - schedule).abs() < 1.0, "took {took}");
    assert!(net.nodes[0].live_children().is_empty());
}

#[test]
fn delete_ike_reaches_both_sides() {
    let mut net = two(4, Config::default());
    let id = net.initiate(0, 1);
    assert!(net.run_until(Duration::from_secs(1), established));
    let now = net.now;
    assert!(net.nodes[0].engine.delete_ike(now, id));
    assert!(
        net.run_until(Duration::from_secs(5), |n| n.nodes[0].ike_up().is_empty()
            && n.nodes[1].ike_up().is_empty())
    );
    let reason = |n: usize| {
        net.nodes[n].events.iter().find_map(|e| match e {
            Event::IkeSaDown { reason, .. } => Some(reason.clone()),
            _ => None,
        })
    };
    assert_eq!(reason(0), Some(DownReason::DeletedLocally));
    assert_eq!(reason(1), Some(DownReason::DeletedByPeer));
    assert!(net.nodes[0].live_children().is_empty());
    assert!(net.nodes[1].live_children().is_empty());
    assert!(net.nodes[0].engine.ike_sas().is_empty());
    assert!(net.nodes[1].engine.ike_sas().is_empty());
}

#[test]
fn delete_child_keeps_the_ike_sa() {
    let mut net = two(5, Config::default());
    let id = net.initiate(0, 1);
    assert!(net.run_until(Duration::from_secs(1), established));
    let spis = net.nodes[0].active_children()[0].spis;
    let now = net.now;
    assert!(net.nodes[0].engine.delete_child(now, id, spis));
    assert!(net.run_until(
        Duration::from_secs(5),
        |n| n.nodes[1].live_children().is_empty() && n.nodes[0].live_children().is_empty()
    ));
    assert_eq!(net.nodes[0].ike_up(), vec![id]);
    assert_eq!(net.nodes[1].ike_up().len(), 1);
    let (now, bob_sa) = (net.now, net.nodes[1].ike_up()[0]);
    assert!(net.nodes[1].engine.create_child(now, bob_sa));
    assert!(net.run_until(Duration::from_secs(5), established));
}

#[test]
fn wrong_psk_fails_authentication() {
    let mut net = Net::new(6);
    net.add("alice.example", "192.0.2.1", Config::default());
    net.add("bob.example", "192.0.2.2", Config::default());
    let ab = Arc::new(net.psk_peer(0, 1, b"one secret"));
    let ba = Arc::new(net.psk_peer(1, 0, b"another secret"));
    net.nodes[0].engine.policy_mut().peers.push(ab);
    net.nodes[1].engine.policy_mut().peers.push(ba);
    net.initiate(0, 1);
    net.run_for(Duration::from_secs(60));
    assert_eq!(
        net.nodes[1].count(|e| matches!(e, Event::AuthFailed { .. })),
        1
    );
    assert_eq!(
        net.nodes[1].count(|e| matches!(e, Event::IkeSaUp { .. })),
        0
    );
    assert!(net.nodes[0].events.iter().any(|e| matches!(
        e,
        Event::IkeSaDown {
            reason: DownReason::AuthFailed,
            ..
        }
    )));
    assert!(net.nodes[0].live_children().is_empty());
}

#[test]
fn unknown_peer_identity_fails_authentication() {
    let mut net = two(7, Config::default());
    net.nodes[1].engine.policy_mut().peers.clear();
    net.initiate(0, 1);
    net.run_for(Duration::from_secs(60));
    assert_eq!(
        net.nodes[1].count(|e| matches!(e, Event::AuthFailed { .. })),
        1
    );
    assert!(net.nodes[0].events.iter().any(|e| matches!(
        e,
        Event::IkeSaDown {
            reason: DownReason::AuthFailed,
            ..
        }
    )));
}

#[test]
fn responder_that_fails_to_authenticate_is_refused() {
    let mut net = Net::new(8);
    net.add("alice.example", "192.0.2.1", Config::default());
    net.add("bob.example", "192.0.2.2", Config::default());
    let mut ab = net.psk_peer(0, 1, b"secret");
    // Alice expects Bob's AUTH under another key than Bob uses.
    ab.remote_auth = iiptran_ike::sa::PeerAuth::Psk(b"not bob's".to_vec().into());
    let ba = net.psk_peer(1, 0, b"secret");
    net.nodes[0].engine.policy_mut().peers.push(Arc::new(ab));
    net.nodes[1].engine.policy_mut().peers.push(Arc::new(ba));
    net.initiate(0, 1);
    net.run_for(Duration::from_secs(60));
    assert_eq!(
        net.nodes[0].count(|e| matches!(e, Event::AuthFailed { .. })),
        1
    );
    assert!(net.nodes[0].active_children().is_empty());
    // Bob had accepted Alice: her AUTHENTICATION_FAILED takes his SAs down at once.
    assert!(net.nodes[1].ike_up().is_empty());
    assert!(net.nodes[1].active_children().is_empty());
    assert_eq!(
        net.nodes[1].count(|e| matches!(
            e,
            Event::IkeSaDown {
                reason: DownReason::AuthFailed,
                ..
            }
        )),
        1
    );
}

#[test]
fn no_common_ike_suite_is_no_proposal_chosen() {
    let mut net = Net::new(9);
    net.add(
        "alice.example",
        "192.0.2.1",
        Config {
            ike_suites: vec![IkeSuite::CHACHA_X25519],
            ..Config::default()
        },
    );
    net.add(
        "bob.example",
        "192.0.2.2",
        Config {
            ike_suites: vec![IkeSuite {
                prf: iiptran_ike::iana::PrfId::HMAC_SHA2_512,
                ..IkeSuite::CHACHA_X25519
            }],
            ..Config::default()
        },
    );
    net.pair_psk(0, 1);
    net.initiate(0, 1);
    net.run_for(Duration::from_secs(5));
    assert!(net.nodes[0].events.contains(&Event::IkeSaDown {
        sa: iiptran_ike::sa::IkeSaId(1),
        reason: DownReason::Refused(NotifyType::NO_PROPOSAL_CHOSEN),
    }));
    assert!(net.nodes[1].events.is_empty());
}

#[test]
fn invalid_ke_payload_retries_with_the_responders_group() {
    let mut net = Net::new(10);
    net.add("alice.example", "192.0.2.1", Config::default());
    net.add(
        "bob.example",
        "192.0.2.2",
        Config {
            ike_suites: vec![IkeSuite::CHACHA_P256],
            ..Config::default()
        },
    );
    net.pair_psk(0, 1);
    net.initiate(0, 1);
    assert!(net.run_until(Duration::from_secs(1), established));
    let suite = net.nodes[0].events.iter().find_map(|e| match e {
        Event::IkeSaUp { suite, .. } => Some(*suite),
        _ => None,
    });
    assert_eq!(suite.map(|s| s.dh), Some(DhId::ECP_256));
}

#[test]
fn refused_selectors_keep_the_ike_sa_without_child() {
    let mut net = two(11, Config::default());
    net.nodes[1].engine.policy_mut().refuse_children = true;
    net.initiate(0, 1);
    net.run_for(Duration::from_secs(5));
    assert_eq!(net.nodes[0].ike_up().len(), 1);
    assert_eq!(net.nodes[1].ike_up().len(), 1);
    assert!(net.nodes[0].events.iter().any(|e| matches!(
        e,
        Event::ChildSaFailed {
            notify: NotifyType::TS_UNACCEPTABLE,
            ..
        }
    )));
    assert!(net.nodes[0].live_children().is_empty());
    assert!(net.nodes[1].live_children().is_empty());
}

/// The responder accepts and narrows; the initiator finds the answer is not what its
/// policy wants (here: it asked for the responder's whole /24) and refuses it, and deletes
/// the child the responder made, so neither keeps an SA the other does not use.
#[test]
fn refused_answer_deletes_the_responders_child() {
    let mut net = two(13, Config::default());
    net.edit_peer(0, |peer| {
        peer.ts_remote = [TrafficSelector {
            ip_protocol: IpProtocol::IPIP.0,
            start_port: 0,
            end_port: u16::MAX,
            start_addr: "192.0.2.0".parse().unwrap(),
            end_addr: "192.0.2.255".parse().unwrap(),
        }]
        .into();
    });
    net.initiate(0, 1);
    assert!(net.run_until(Duration::from_secs(10), |n| {
        n.nodes[1].count(|e| matches!(e, Event::ChildSaDeleted { .. })) == 1
    }));
    assert!(net.nodes[0].events.iter().any(|e| matches!(
        e,
        Event::ChildSaFailed {
            notify: NotifyType::TS_UNACCEPTABLE,
            ..
        }
    )));
    assert_eq!(
        net.nodes[1].count(|e| matches!(e, Event::ChildSaUp(_))),
        1,
        "the responder made the child"
    );
    assert!(net.nodes[0].live_children().is_empty());
    assert!(net.nodes[1].live_children().is_empty());
    assert_eq!(net.nodes[0].ike_up().len(), 1);
    assert_eq!(net.nodes[1].ike_up().len(), 1);
}

#[test]
fn unreachable_responder_times_out() {
    let mut net = two(12, Config::default());
    net.faults.loss = 1.0;
    net.initiate(0, 1);
    net.run_for(Duration::from_secs(600));
    assert!(net.nodes[0].events.iter().any(|e| matches!(
        e,
        Event::IkeSaDown {
            reason: DownReason::Timeout,
            ..
        }
    )));
    assert!(net.nodes[0].engine.poll_timeout().is_none());
}

#[test]
fn peer_restart_leaves_one_sa() {
    for seed in 0..6 {
        let mut net = two(90 + seed, Config::default());
        // Half the runs had Bob initiate the SA that goes stale.
        if seed % 2 == 0 {
            net.initiate(0, 1);
        } else {
            net.initiate(1, 0);
        }
        assert!(net.run_until(Duration::from_secs(1), established));
        net.run_for(Duration::from_secs(5));
        net.restart(0);
        net.initiate(0, 1);
        // At once, not after a liveness check: the new SA says the old ones are gone.
        assert!(
            net.run_until(Duration::from_secs(1), |n| n.paired(0, 1)
                && n.nodes[1].engine.ike_sas().len() == 1
                && n.nodes[1].live_children().len() == 1),
            "seed {seed}"
        );
        assert_eq!(net.nodes[0].engine.ike_sas().len(), 1);
        assert_eq!(
            net.nodes[1].count(|e| matches!(
                e,
                Event::IkeSaDown {
                    reason: DownReason::PeerRestarted,
                    ..
                }
            )),
            1,
            "seed {seed}: the stale SA is gone"
        );
        let (a, b) = (
            &net.nodes[0].live_children()[0],
            &net.nodes[1].live_children()[0],
        );
        assert_eq!(
            a.spis.inbound, b.spis.outbound,
            "seed {seed}: one pair, the new one"
        );
    }
}

#[test]
fn ipv6_endpoints_with_loss_and_a_child_rekey() {
    for seed in 0..10 {
        let mut net = Net::new(seed);
        net.add("alice.example", "2001:db8::1", Config::default());
        net.add("bob.example", "2001:db8::2", Config::default());
        net.pair_psk(0, 1);
        net.faults = Faults {
            loss: 0.2,
            ..Faults::default()
        };
        let id = net.initiate(0, 1);
        assert!(
            net.run_until(Duration::from_secs(120), established),
            "seed {seed}: no IKE SA over IPv6"
        );
        let child = net.nodes[0].active_children()[0].clone();
        assert_eq!(child.ts_local, sim::ipip("2001:db8::1".parse().unwrap()));
        assert_eq!(child.ts_remote, sim::ipip("2001:db8::2".parse().unwrap()));
        assert!(child.local.is_ipv6() && child.remote.is_ipv6());
        assert!(net.nodes[0].engine.rekey_child(net.now, id, child.spis));
        assert!(
            net.run_until(Duration::from_secs(120), |n| {
                n.nodes[0].active_children().len() == 1
                    && n.nodes[0].active_children()[0].spis != child.spis
                    && n.paired(0, 1)
            }),
            "seed {seed}: child rekey over IPv6 did not complete"
        );
    }
}

#[test]
fn per_peer_suites_replace_the_node_wide_ones() {
    // Bob offers and accepts only AES-GCM and P-256 with Alice, though his engine's
    // configuration prefers ChaCha20-Poly1305 and x25519, as Alice's does.
    let aes = IkeSuite {
        encr: EncrId::AES_GCM_16,
        key_bits: Some(256),
        integ: IntegId::NONE,
        prf: PrfId::HMAC_SHA2_384,
        dh: DhId::ECP_256,
    };
    let mut alice_config = Config::default();
    alice_config.ike_suites.push(aes);
    let only_aes = Arc::new(Suites {
        ike: vec![aes],
        esp: vec![EspSuite::AES256_GCM16],
        child_pfs: None,
    });
    for initiator in [0, 1] {
        let mut net = Net::new(30 + initiator as u64);
        net.add("alice.example", "192.0.2.1", alice_config.clone());
        net.add("bob.example", "192.0.2.2", Config::default());
        net.pair_psk(0, 1);
        let alice = net.nodes[0].ip;
        net.nodes[1]
            .engine
            .policy_mut()
            .suites
            .push((alice, only_aes.clone()));
        net.initiate(initiator, 1 - initiator);
        assert!(
            net.run_until(Duration::from_secs(2), established),
            "{initiator}"
        );
        for n in 0..2 {
            let sas = net.nodes[n].engine.snapshot();
            assert_eq!(sas[0].suite, aes, "node {n}, {initiator} initiating");
            assert_eq!(sas[0].children[0].suite, EspSuite::AES256_GCM16);
        }
    }
    // Without the per-peer suites the two agree on the engines' first choice.
    let mut net = two(32, Config::default());
    net.initiate(0, 1);
    assert!(net.run_until(Duration::from_secs(2), established));
    assert_eq!(
        net.nodes[1].engine.snapshot()[0].suite,
        IkeSuite::CHACHA_X25519
    );
}

/// Timers are kept per IKE SA: with a thousand IKE SAs at one responder, set up at
/// staggered times, every one of them fails its own liveness check once the network
/// goes silent, at both ends.
#[test]
fn each_of_many_ike_sas_fires_its_own_timers() {
    const PEERS: usize = 1000;
    let mut net = Net::new(4);
    let hub = net.add("hub.example", "192.0.2.1", Config::default());
    for i in 0..PEERS {
        let ip = format!("10.0.{}.{}", i / 250, i % 250 + 1);
        let peer = net.add(&format!("peer{i}.example"), &ip, Config::default());
        net.pair_psk(hub, peer);
        net.initiate(peer, hub);
        net.run_for(Duration::from_millis(20));
    }
    let up = |net: &Net| net.nodes[hub].count(|e| matches!(e, Event::IkeSaUp { .. }));
    assert!(net.run_until(Duration::from_secs(5), |net| up(net) == PEERS));
    assert_eq!(net.nodes[hub].engine.ike_sas().len(), PEERS);
    net.faults.loss = 1.0;
    let failed = |node: &sim::Node| {
        node.count(|e| {
            matches!(
                e,
                Event::IkeSaDown {
                    reason: DownReason::LivenessFailed,
                    ..
                }
            )
        })
    };
    assert!(net.run_until(Duration::from_secs(600), |net| {
        net.nodes.iter().map(failed).sum::<usize>() == 2 * PEERS
    }));
    assert!(net.nodes[hub].engine.ike_sas().is_empty());
    assert_eq!(net.nodes[hub].engine.poll_timeout(), None);
    for peer in &net.nodes[1..] {
        assert_eq!(failed(peer), 1, "{}", peer.name);
        assert_eq!(peer.engine.poll_timeout(), None, "{}", peer.name);
    }
}
