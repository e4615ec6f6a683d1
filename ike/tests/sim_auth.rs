//! IKE_AUTH with certificates (RFC 7427 signatures, Ed25519 and ECDSA P-256) between
//! simulated engines, and the ways it must fail.

mod sim;

use iiptran_ike::auth::TrustAnchors;
use iiptran_ike::config::Config;
use iiptran_ike::iana::{ExchangeType, PayloadType};
use iiptran_ike::sa::{DownReason, Event, LocalAuth, PeerAuth};
use iiptran_ike::wire::{Header, Message, Payload};
use sim::{Ca, Net};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

fn nodes(seed: u64) -> Net {
    let mut net = Net::new(seed);
    net.add("alice.vn.example", "192.0.2.1", Config::default());
    net.add("bob.vn.example", "192.0.2.2", Config::default());
    net
}

fn auth_failed(net: &Net, n: usize) -> bool {
    net.nodes[n]
        .events
        .iter()
        .any(|e| matches!(e, Event::AuthFailed { .. }))
}

/// Certificates both ways, but node `n` trusts only an unrelated CA.
fn certificates_from_another_ca(seed: u64, n: usize) -> Net {
    let mut net = nodes(seed);
    net.pair_certs(0, 1, &rcgen::PKCS_ED25519);
    let other = Ca::new(&rcgen::PKCS_ED25519);
    let anchors = Arc::new(TrustAnchors::from_der(std::slice::from_ref(&other.der)).unwrap());
    net.edit_peer(n, |c| c.remote_auth = PeerAuth::Certificate(anchors));
    net
}

/// Bob refused Alice with AUTHENTICATION_FAILED and Alice took the refusal.
fn responder_refused(net: &Net) -> bool {
    auth_failed(net, 1) && went_down_auth_failed(net, 0) && net.nodes[1].ike_up().is_empty()
}

fn went_down_auth_failed(net: &Net, n: usize) -> bool {
    net.nodes[n].events.iter().any(|e| {
        matches!(
            e,
            Event::IkeSaDown {
                reason: DownReason::AuthFailed,
                ..
            }
        )
    })
}

#[test]
fn certificates_both_ways() {
    for alg in [&rcgen::PKCS_ED25519, &rcgen::PKCS_ECDSA_P256_SHA256] {
        for (a, b) in [(0, 1), (1, 0)] {
            let mut net = nodes(40);
            net.pair_certs(0, 1, alg);
            net.initiate(a, b);
            assert!(
                net.run_until(Duration::from_secs(1), |n| n.paired(0, 1)),
                "{alg:?} from {a}"
            );
            assert!(!auth_failed(&net, 0) && !auth_failed(&net, 1));
        }
    }
}

#[test]
fn certificate_from_an_unknown_ca_fails() {
    let mut net = certificates_from_another_ca(41, 1);
    net.initiate(0, 1);
    net.run_for(Duration::from_secs(10));
    assert!(responder_refused(&net));
}

#[test]
fn certificate_for_another_identity_fails() {
    let mut net = nodes(42);
    net.pair_certs(0, 1, &rcgen::PKCS_ECDSA_P256_SHA256);
    // Alice presents a valid certificate, but for a name other than her identity.
    let mallory = Ca::new(&rcgen::PKCS_ECDSA_P256_SHA256);
    let (key, der) = mallory.issue("mallory.vn.example", &rcgen::PKCS_ECDSA_P256_SHA256);
    let anchors = Arc::new(TrustAnchors::from_der(std::slice::from_ref(&mallory.der)).unwrap());
    net.edit_peer(0, |c| {
        c.local_auth = LocalAuth::Certificate {
            key: Arc::new(key),
            chain: vec![der].into(),
        }
    });
    net.edit_peer(1, |c| c.remote_auth = PeerAuth::Certificate(anchors));
    net.initiate(0, 1);
    net.run_for(Duration::from_secs(10));
    assert!(auth_failed(&net, 1));
    assert!(net.nodes[0].active_children().is_empty());
}

#[test]
fn psk_peer_against_certificate_peer_fails() {
    let mut net = nodes(43);
    net.pair_certs(0, 1, &rcgen::PKCS_ED25519);
    let psk = Arc::new(net.psk_peer(0, 1, b"secret"));
    net.nodes[0].engine.policy_mut().peers = vec![psk];
    net.initiate(0, 1);
    net.run_for(Duration::from_secs(10));
    assert!(auth_failed(&net, 1));
    assert!(net.nodes[1].ike_up().is_empty());
}

/// The certificate node `n` presents and the anchors it checks its peer against.
fn credentials(net: &Net, n: usize) -> (Vec<u8>, Arc<TrustAnchors>) {
    // pair_certs gives both nodes the same anchors.
    let peer = &net.nodes[n].engine.policy().peers[0];
    let LocalAuth::Certificate { chain, .. } = &peer.local_auth else {
        panic!("certificate configured");
    };
    let PeerAuth::Certificate(anchors) = &peer.remote_auth else {
        panic!("certificate configured");
    };
    (chain[0].clone(), anchors.clone())
}

#[test]
fn revoked_certificate_fails_and_unrevoked_one_passes() {
    let mut net = nodes(45);
    let ca = net.pair_certs(0, 1, &rcgen::PKCS_ED25519);
    let (_, carol_cert) = ca.issue("carol.vn.example", &rcgen::PKCS_ED25519);
    let (_, anchors) = credentials(&net, 1);
    anchors
        .set_crls(vec![ca.crl(&[carol_cert.as_slice()])])
        .unwrap();
    net.initiate(0, 1);
    assert!(net.run_until(Duration::from_secs(1), |n| n.paired(0, 1)));
    assert!(!auth_failed(&net, 0) && !auth_failed(&net, 1));

    let mut net = nodes(46);
    let ca = net.pair_certs(0, 1, &rcgen::PKCS_ED25519);
    let (alice_cert, _) = credentials(&net, 0);
    let (_, bob_anchors) = credentials(&net, 1);
    bob_anchors
        .set_crls(vec![ca.crl(&[alice_cert.as_slice()])])
        .unwrap();
    net.initiate(0, 1);
    net.run_for(Duration::from_secs(10));
    assert!(responder_refused(&net));
}

/// RFC 7296 §2.21.2: an initiator that cannot authenticate the responder says so in an
/// INFORMATIONAL request, which the responder can open (it answers it).
/// The payload types of the IKE_SA_INIT response Bob sends, when Alice initiates.
fn init_response_payloads(net: &mut Net) -> Vec<PayloadType> {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let sink = seen.clone();
    let bob = net.nodes[1].addr();
    net.filter = Some(Box::new(move |from, _, payload| {
        if let Ok(message) = Message::parse(payload)
            && from == bob
            && message.header.exchange == ExchangeType::IKE_SA_INIT
        {
            sink.borrow_mut()
                .extend(message.payloads.iter().map(Payload::kind));
        }
        true
    }));
    net.initiate(0, 1);
    net.run_for(Duration::from_secs(5));
    seen.take()
}

/// Peers such as strongSwan send their certificate only when asked: a responder that
/// authenticates its peer by certificate asks in IKE_SA_INIT, one with a PSK does not.
#[test]
fn responder_requests_a_certificate_in_ike_sa_init() {
    let mut net = nodes(48);
    net.pair_certs(0, 1, &rcgen::PKCS_ED25519);
    let payloads = init_response_payloads(&mut net);
    assert!(payloads.contains(&PayloadType::CERTREQ), "{payloads:?}");
    assert!(!net.nodes[1].ike_up().is_empty());

    let mut net = nodes(49);
    net.pair_psk(0, 1);
    let payloads = init_response_payloads(&mut net);
    assert!(payloads.contains(&PayloadType::NONCE), "{payloads:?}");
    assert!(!payloads.contains(&PayloadType::CERTREQ), "{payloads:?}");
}

#[test]
fn initiator_refusing_the_responder_tells_it() {
    let mut net = certificates_from_another_ca(47, 0);
    let informational = Rc::new(RefCell::new(Vec::new()));
    let seen = informational.clone();
    let alice = net.nodes[0].addr();
    net.filter = Some(Box::new(move |from, _, payload| {
        if let Ok((header, _)) = Header::parse(payload)
            && header.exchange == ExchangeType::INFORMATIONAL
        {
            seen.borrow_mut().push((from == alice, header.response));
        }
        true
    }));
    net.initiate(0, 1);
    net.run_for(Duration::from_secs(10));
    assert!(auth_failed(&net, 0));
    assert!(!auth_failed(&net, 1));
    assert!(went_down_auth_failed(&net, 0));
    assert!(net.nodes[0].ike_up().is_empty());
    let informational = informational.borrow();
    assert_eq!(
        informational.first(),
        Some(&(true, false)),
        "alice's request"
    );
    assert!(informational.contains(&(false, true)), "bob's answer");
}

/// A lost IKE_AUTH response goes again when the request does: sealed anew from what the
/// responder kept, its certificate, which it holds by reference, put back. Whole, and in
/// fragments (RFC 7383).
#[test]
fn a_lost_ike_auth_response_is_sealed_again() {
    for fragment_size in [1280, 300] {
        let config = Config {
            fragment_size,
            ..Config::default()
        };
        let mut net = Net::new(50);
        net.add("alice.vn.example", "192.0.2.1", config.clone());
        net.add("bob.vn.example", "192.0.2.2", config);
        net.pair_certs(0, 1, &rcgen::PKCS_ED25519);
        let bob = net.nodes[1].addr();
        let responses = Rc::new(RefCell::new(0));
        let passing = Rc::new(RefCell::new(false));
        let (count, open) = (responses.clone(), passing.clone());
        net.filter = Some(Box::new(move |from, _, payload| {
            let auth_response = from == bob
                && Header::parse(payload)
                    .is_ok_and(|(h, _)| h.exchange == ExchangeType::IKE_AUTH && h.response);
            if auth_response {
                *count.borrow_mut() += 1;
            }
            !auth_response || *open.borrow()
        }));
        net.initiate(0, 1);
        let bob_up = |net: &Net| !net.nodes[1].ike_up().is_empty();
        assert!(net.run_until(Duration::from_secs(1), bob_up));
        let dropped = *responses.borrow();
        assert!(dropped >= 1 && net.nodes[0].ike_up().is_empty());
        *passing.borrow_mut() = true;
        let alice_up = |net: &Net| net.paired(0, 1);
        assert!(
            net.run_until(Duration::from_secs(10), alice_up),
            "fragment size {fragment_size}"
        );
        let resent = *responses.borrow() - dropped;
        assert_eq!(
            resent, dropped,
            "the same message again, fragment size {fragment_size}"
        );
        if fragment_size == 300 {
            assert!(dropped > 1, "the response went in fragments");
        }
    }
}
