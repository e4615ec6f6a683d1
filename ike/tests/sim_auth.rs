//! IKE_AUTH with certificates (RFC 7427 signatures, Ed25519 and ECDSA P-256) between
//! simulated engines, and the ways it must fail.

mod sim;

use iiptran_ike::auth::TrustAnchors;
use iiptran_ike::config::Config;
use iiptran_ike::sa::{DownReason, Event, LocalAuth, PeerAuth};
use sim::{Ca, Net};
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
    let mut net = nodes(41);
    net.pair_certs(0, 1, &rcgen::PKCS_ED25519);
    let other = Ca::new(&rcgen::PKCS_ED25519);
    let anchors = Arc::new(TrustAnchors::from_der(std::slice::from_ref(&other.der)).unwrap());
    net.edit_peer(1, |c| c.remote_auth = PeerAuth::Certificate(anchors));
    net.initiate(0, 1);
    net.run_for(Duration::from_secs(10));
    assert!(auth_failed(&net, 1));
    assert!(net.nodes[0].events.iter().any(|e| matches!(
        e,
        Event::IkeSaDown {
            reason: DownReason::AuthFailed,
            ..
        }
    )));
    assert!(net.nodes[1].ike_up().is_empty());
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
            chain: vec![der],
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
