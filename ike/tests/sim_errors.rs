//! Error notifications, cookies under a flood, fragmentation, NAT traversal on port 4500
//! and hostile input.

mod sim;

use iiptran_ike::config::Config;
use iiptran_ike::iana::{ExchangeType, NotifyType, PayloadType};
use iiptran_ike::sa::{Engine, Event};
use iiptran_ike::wire::{Header, Message, Payload, Unknown};
use sim::{Net, Rng, TestPolicy};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A fresh IKE_SA_INIT request towards `to`, as a stand-alone initiator would send it.
fn init_request(net: &Net, to: SocketAddr) -> Vec<u8> {
    let mut engine = Engine::new(
        Config::default(),
        TestPolicy {
            peers: Vec::new(),
            refuse_children: false,
            suites: Vec::new(),
        },
        net.now,
        sim::wall_start(),
    )
    .unwrap();
    let peer = Arc::new(net.psk_peer(0, 1, b"x"));
    engine
        .initiate(net.now, "198.18.0.1:500".parse().unwrap(), to, peer)
        .unwrap();
    engine.poll_transmit().unwrap().payload
}

/// Records what node `from` sends to addresses that are not nodes of the network.
/// Datagrams seen on their way: destination and payload.
type Captured = Rc<RefCell<Vec<(SocketAddr, Vec<u8>)>>>;

fn capture_to_strangers(net: &mut Net) -> Captured {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let sink = seen.clone();
    let known: Vec<_> = net.nodes.iter().map(|n| n.ip).collect();
    net.filter = Some(Box::new(move |_, to, payload| {
        if !known.contains(&to.ip()) {
            sink.borrow_mut().push((to, payload.to_vec()));
        }
        true
    }));
    seen
}

fn notifies(datagram: &[u8]) -> Vec<NotifyType> {
    Message::parse(datagram)
        .map(|m| {
            m.payloads
                .iter()
                .filter_map(|p| match p {
                    Payload::Notify(n) => Some(n.kind),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn cookies_under_a_flood_of_spoofed_requests() {
    let mut net = Net::psk_pair(
        50,
        Config {
            cookie_threshold: 5,
            ..Config::default()
        },
    );
    let seen = capture_to_strangers(&mut net);
    let bob = net.nodes[1].addr();
    for i in 0..300u32 {
        let from = SocketAddr::new(std::net::Ipv4Addr::from(0xc612_0000 + i + 10).into(), 500);
        let request = init_request(&net, bob);
        net.inject(from, bob, request);
    }
    net.initiate(0, 1);
    assert!(net.run_until(Duration::from_secs(30), |n| n.paired(0, 1)));
    let answers = seen.borrow();
    let cookies = answers
        .iter()
        .filter(|(_, d)| notifies(d) == vec![NotifyType::COOKIE])
        .count();
    assert_eq!(answers.len(), 300, "every spoofed request is answered once");
    assert_eq!(cookies, 295, "all but the first five get only a cookie");
    assert_eq!(
        net.nodes[1].count(|e| matches!(e, Event::IkeSaUp { .. })),
        1
    );
}

#[test]
fn spoofed_half_open_sas_expire() {
    let mut net = Net::psk_pair(51, Config::default());
    let bob = net.nodes[1].addr();
    for i in 0..3u32 {
        let from = SocketAddr::new(std::net::Ipv4Addr::from(0xc612_0100 + i).into(), 500);
        let request = init_request(&net, bob);
        net.inject(from, bob, request);
    }
    net.run_for(Duration::from_secs(60));
    assert!(
        net.nodes[1].engine.poll_timeout().is_none(),
        "nothing left to time out"
    );
    assert!(net.nodes[1].events.is_empty());
}

#[test]
fn invalid_major_version_is_answered() {
    let mut net = Net::psk_pair(52, Config::default());
    let seen = capture_to_strangers(&mut net);
    let bob = net.nodes[1].addr();
    let mut request = init_request(&net, bob);
    request[17] = 0x30;
    let from: SocketAddr = "198.18.1.1:500".parse().unwrap();
    net.inject(from, bob, request);
    net.run_for(Duration::from_secs(1));
    let answers = seen.borrow();
    assert_eq!(answers.len(), 1);
    // The answer itself is version 2.
    let reply = Message::parse(&answers[0].1).unwrap();
    assert!(reply.header.response);
    assert_eq!(
        notifies(&answers[0].1),
        vec![NotifyType::INVALID_MAJOR_VERSION]
    );
}

#[test]
fn unsupported_critical_payload_is_answered() {
    let mut net = Net::psk_pair(53, Config::default());
    let seen = capture_to_strangers(&mut net);
    let bob = net.nodes[1].addr();
    let mut message = Message::parse(&init_request(&net, bob)).unwrap();
    message.payloads.push(Payload::Unknown(Unknown {
        ty: PayloadType(200),
        body: Vec::new(),
    }));
    let mut request = message.emit().unwrap();
    // The unknown payload is the last four bytes: set its critical bit.
    let at = request.len() - 3;
    request[at] = 0x80;
    let from: SocketAddr = "198.18.1.2:500".parse().unwrap();
    net.inject(from, bob, request);
    net.run_for(Duration::from_secs(1));
    let answers = seen.borrow();
    assert_eq!(answers.len(), 1);
    assert_eq!(
        notifies(&answers[0].1),
        vec![NotifyType::UNSUPPORTED_CRITICAL_PAYLOAD]
    );
    let Payload::Notify(n) = &Message::parse(&answers[0].1).unwrap().payloads[0] else {
        panic!("notify expected");
    };
    assert_eq!(n.data, vec![200]);
}

#[test]
fn init_request_without_ke_is_invalid_syntax() {
    let mut net = Net::psk_pair(54, Config::default());
    let seen = capture_to_strangers(&mut net);
    let bob = net.nodes[1].addr();
    let mut message = Message::parse(&init_request(&net, bob)).unwrap();
    message.payloads.retain(|p| !matches!(p, Payload::Ke(_)));
    let from: SocketAddr = "198.18.1.3:500".parse().unwrap();
    net.inject(from, bob, message.emit().unwrap());
    net.run_for(Duration::from_secs(1));
    let answers = seen.borrow();
    assert_eq!(answers.len(), 1);
    assert_eq!(notifies(&answers[0].1), vec![NotifyType::INVALID_SYNTAX]);
    assert!(
        net.nodes[1].engine.poll_timeout().is_none(),
        "no state kept"
    );
}

fn is_fragment(payload: &[u8]) -> bool {
    payload.get(16) == Some(&PayloadType::SKF.0)
}

#[test]
fn fragmented_ike_auth_with_loss() {
    for seed in 0..20 {
        let config = Config {
            fragment_size: 300,
            retransmission: iiptran_ike::config::Retransmission {
                tries: 12,
                ..Default::default()
            },
            ..Config::default()
        };
        let mut net = Net::new(60 + seed);
        net.add("alice.vn.example", "192.0.2.1", config.clone());
        net.add("bob.vn.example", "192.0.2.2", config);
        net.pair_certs(0, 1, &rcgen::PKCS_ECDSA_P256_SHA256);
        let fragments = Rc::new(RefCell::new(0usize));
        let count = fragments.clone();
        net.filter = Some(Box::new(move |_, _, payload| {
            if is_fragment(payload) {
                assert!(payload.len() <= 300);
                *count.borrow_mut() += 1;
            }
            true
        }));
        net.faults.loss = 0.2;
        net.initiate(0, 1);
        assert!(
            net.run_until(Duration::from_secs(600), |n| n.paired(0, 1)),
            "seed {seed}"
        );
        assert!(
            *fragments.borrow() >= 4,
            "seed {seed}: IKE_AUTH went in fragments"
        );
    }
}

#[test]
fn forced_nat_traversal_moves_to_port_4500() {
    let mut net = Net::psk_pair(
        70,
        Config {
            force_nat_t: true,
            ..Config::default()
        },
    );
    let ports = Rc::new(RefCell::new(Vec::new()));
    let sink = ports.clone();
    net.filter = Some(Box::new(move |from, to, payload| {
        let exchange = if from.port() == 4500 {
            assert_eq!(&payload[..4], &[0; 4], "non-ESP marker");
            payload[4 + 18]
        } else {
            payload[18]
        };
        sink.borrow_mut().push((from.port(), to.port(), exchange));
        true
    }));
    net.initiate(0, 1);
    assert!(net.run_until(Duration::from_secs(1), |n| n.paired(0, 1)));
    for (from, to, exchange) in ports.borrow().iter() {
        let expected = if *exchange == ExchangeType::IKE_SA_INIT.0 {
            500
        } else {
            4500
        };
        assert_eq!((*from, *to), (expected, expected));
    }
    for n in 0..2 {
        let child = &net.nodes[n].active_children()[0];
        assert!(child.udp_encap);
        assert_eq!(child.remote.port(), 4500);
    }
    // Liveness and deletes keep working on 4500.
    net.run_for(Duration::from_secs(100));
    assert!(net.paired(0, 1));
}

#[test]
fn moving_to_port_4500_without_a_nat_keeps_esp_plain() {
    let mut net = Net::psk_pair(73, Config::default());
    // Alice's first IKE_AUTH request is held back and then sent from and to port 4500,
    // as strongSwan does (it moves for MOBIKE whether or not there is a NAT).
    let held = Rc::new(RefCell::new(Vec::new()));
    let sink = held.clone();
    net.filter = Some(Box::new(move |from, to, payload| {
        let auth = from.port() == 500 && payload.get(18) == Some(&ExchangeType::IKE_AUTH.0);
        if auth {
            sink.borrow_mut().push((from, to, payload.to_vec()));
        }
        !auth
    }));
    net.initiate(0, 1);
    let waiting = held.clone();
    assert!(net.run_until(Duration::from_secs(1), move |_| {
        !waiting.borrow().is_empty()
    }));
    net.filter = None;
    let (from, to, payload) = held.borrow()[0].clone();
    let moved = |a: SocketAddr| SocketAddr::new(a.ip(), 4500);
    net.inject(moved(from), moved(to), [&[0u8; 4][..], &payload].concat());
    assert!(net.run_until(Duration::from_secs(1), |n| n.paired(0, 1)));
    for n in 0..2 {
        let child = &net.nodes[n].active_children()[0];
        assert_eq!(child.remote.port(), 4500, "IKE follows to 4500");
        assert!(!child.udp_encap, "node {n} encapsulates ESP without a NAT");
    }
}

#[test]
fn esp_on_port_4500_is_not_taken_for_ike() {
    let mut net = Net::psk_pair(71, Config::default());
    let bob = SocketAddr::new(net.nodes[1].ip, 4500);
    net.inject(
        "198.18.2.1:4500".parse().unwrap(),
        bob,
        vec![0x12, 0x34, 0x56, 0x78, 0, 0, 0, 1],
    );
    net.run_for(Duration::from_secs(1));
    assert!(net.nodes[1].events.is_empty());
    assert_eq!(net.sent, 0);
}

#[test]
fn hostile_datagrams_do_not_disturb_an_established_sa() {
    let mut net = Net::psk_pair(80, Config::default());
    let seen = Rc::new(RefCell::new(Vec::new()));
    let sink = seen.clone();
    net.filter = Some(Box::new(move |from, to, payload| {
        sink.borrow_mut().push((from, to, payload.to_vec()));
        true
    }));
    net.initiate(0, 1);
    assert!(net.run_until(Duration::from_secs(1), |n| n.paired(0, 1)));
    let captured = seen.borrow().clone();
    let mut rng = Rng::new(81);
    let started = Instant::now();
    for round in 0..4000 {
        let (from, to, original) = &captured[round % captured.len()];
        let mut d = original.clone();
        match rng.next_u64() % 4 {
            0 => {
                let at = (rng.next_u64() as usize) % d.len();
                d[at] ^= 1 << (rng.next_u64() % 8);
            }
            1 => d.truncate((rng.next_u64() as usize) % d.len()),
            2 => {
                for b in d.iter_mut().skip(28) {
                    *b = rng.next_u64() as u8;
                }
            }
            _ => {
                let at = 20 + (rng.next_u64() as usize) % 8;
                d[at] = rng.next_u64() as u8;
            }
        }
        net.inject(*from, *to, d);
        net.run_for(Duration::from_millis(1));
    }
    assert!(started.elapsed() < Duration::from_secs(120));
    assert!(net.paired(0, 1));
    for n in 0..2 {
        assert_eq!(
            net.nodes[n].count(|e| matches!(e, Event::IkeSaDown { .. })),
            0
        );
        assert_eq!(net.nodes[n].count(|e| matches!(e, Event::ChildSaUp(_))), 1);
    }
    // The SA still works: a liveness check round trip and a rekey.
    net.run_for(Duration::from_secs(60));
    let (now, id) = (net.now, net.nodes[0].engine.ike_sas()[0]);
    let spis = net.nodes[0].active_children()[0].spis;
    assert!(net.nodes[0].engine.rekey_child(now, id, spis));
    assert!(net.run_until(Duration::from_secs(10), |n| n.paired(0, 1)
        && n.nodes[0].count(|e| matches!(e, Event::ChildSaRekeyed { .. })) == 1));
}

#[test]
fn nat_detection_moves_both_to_port_4500() {
    let mut net = Net::new(72);
    net.add("alice.vn.example", "10.0.0.1", Config::default());
    net.add("bob.vn.example", "192.0.2.2", Config::default());
    net.pair_psk(0, 1);
    let outside: std::net::IpAddr = "203.0.113.7".parse().unwrap();
    net.nat = Some(sim::Nat {
        inside: net.nodes[0].ip,
        outside,
    });
    // Bob knows Alice by identity; the selectors are the tunnel endpoints as configured.
    net.initiate(0, 1);
    assert!(net.run_until(Duration::from_secs(1), |n| n.paired(0, 1)));
    let alice = &net.nodes[0].active_children()[0];
    let bob = &net.nodes[1].active_children()[0];
    assert!(alice.udp_encap && bob.udp_encap);
    assert_eq!(alice.local.port(), 4500);
    assert_eq!(alice.remote, SocketAddr::new(net.nodes[1].ip, 4500));
    assert_eq!(
        bob.remote,
        SocketAddr::new(outside, 4500 + sim::Nat::PORT_SHIFT)
    );
    // Liveness checks and a rekey keep working through the NAT.
    net.run_for(Duration::from_secs(100));
    let (now, id) = (net.now, net.nodes[1].engine.ike_sas()[0]);
    let spis = net.nodes[1].active_children()[0].spis;
    assert!(net.nodes[1].engine.rekey_child(now, id, spis));
    assert!(net.run_until(Duration::from_secs(10), |n| n.paired(0, 1)
        && n.nodes[0].count(|e| matches!(e, Event::ChildSaRekeyed { .. })) == 1));
}

#[test]
fn unknown_ike_spis_are_answered_with_invalid_ike_spi_at_a_limited_rate() {
    let mut net = Net::psk_pair(60, Config::default());
    let seen = capture_to_strangers(&mut net);
    let bob = net.nodes[1].addr();
    let message = |response: bool| {
        Message {
            header: Header {
                spi_i: 0x1111,
                spi_r: 0x2222,
                exchange: ExchangeType::INFORMATIONAL,
                initiator: true,
                response,
                message_id: 7,
            },
            payloads: Vec::new(),
        }
        .emit()
        .unwrap()
    };
    let from: SocketAddr = "198.18.2.1:500".parse().unwrap();
    let other: SocketAddr = "198.18.2.2:500".parse().unwrap();
    net.inject(from, bob, message(false));
    // Within the interval: not answered again.
    net.inject(from, bob, message(false));
    // Responses are never answered.
    net.inject(other, bob, message(true));
    net.run_for(Duration::from_millis(100));
    {
        let answers = seen.borrow();
        assert_eq!(answers.len(), 1);
        let (to, datagram) = &answers[0];
        assert_eq!(*to, from);
        let reply = Message::parse(datagram).unwrap().header;
        assert!(reply.response);
        assert_eq!(
            (reply.spi_i, reply.spi_r, reply.message_id, reply.exchange),
            (0x1111, 0x2222, 7, ExchangeType::INFORMATIONAL)
        );
        assert_eq!(notifies(datagram), vec![NotifyType::INVALID_IKE_SPI]);
    }
    // Nothing is scheduled, so the clock is moved by hand.
    net.now += Duration::from_secs(1);
    net.inject(from, bob, message(false));
    net.run_for(Duration::from_millis(100));
    assert_eq!(seen.borrow().len(), 2);
}
