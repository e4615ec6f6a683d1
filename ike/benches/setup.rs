//! Complete IKE SA + first child SA setups between two engines in one process
//! (x25519, ChaCha20-Poly1305, Ed25519 certificates), over the simulated network
//! without faults, next to the crypto floor of one such setup: everything cryptographic
//! both sides must do, computed with the crate's crypto and auth functions. The
//! difference is the engine's own overhead.
//!
//! Measured on the 2-core development machine while other builds ran (load average
//! about 5), so single runs vary by tens of percent: the interleaved summary line gave
//! 789 µs per setup against a crypto floor of 788 µs, and 791 µs against 734 µs (engine
//! overhead 7 %); criterion's separate groups gave 976 against 848 µs and, in another
//! run, 559 against 795 µs. The engine's overhead is within that noise, under 20 %.

#[path = "../tests/sim/mod.rs"]
mod sim;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use iiptran_ike::auth::{self, SigningKey, TrustAnchors};
use iiptran_ike::config::{Config, EspSuite, IkeSuite};
use iiptran_ike::crypto::{DhGroup, DhPrivate, IkeSaKeys, Prf, SkCipher, child_keymat};
use iiptran_ike::iana::{EncrId, ExchangeType, IntegId};
use iiptran_ike::identity::Identity;
use std::cell::RefCell;
use std::hint::black_box;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Iterations of each side of the summary line.
const ROUNDS: u32 = 300;
/// IKE header, SK payload header, ChaCha20-Poly1305 IV and tag around the SK plaintext.
const SK_OVERHEAD: usize = 28 + 4 + 8 + 16;
/// Offset of the exchange type in the IKE header.
const EXCHANGE_TYPE_OFFSET: usize = 18;

fn network() -> sim::Net {
    let config = Config {
        ike_suites: vec![IkeSuite::CHACHA_X25519],
        esp_suites: vec![EspSuite::CHACHA],
        ..Config::default()
    };
    let mut net = sim::Net::new(1);
    net.add("alice.vn.example", "192.0.2.1", config.clone());
    net.add("bob.vn.example", "192.0.2.2", config);
    net.pair_certs(0, 1, &rcgen::PKCS_ED25519);
    net
}

fn one_setup(net: &mut sim::Net) {
    net.initiate(0, 1);
    assert!(net.run_until(Duration::from_secs(1), |n| n.paired(0, 1)));
}

/// Lengths of the IKE_SA_INIT request and response and the SK plaintext lengths of the
/// IKE_AUTH request and response of one real setup.
fn message_lens() -> ([usize; 2], [usize; 2]) {
    let lens = Rc::new(RefCell::new(Vec::new()));
    let mut net = network();
    let seen = lens.clone();
    net.filter = Some(Box::new(move |_, _, payload| {
        if let Some(&exchange) = payload.get(EXCHANGE_TYPE_OFFSET) {
            seen.borrow_mut()
                .push((ExchangeType(exchange), payload.len()));
        }
        true
    }));
    one_setup(&mut net);
    let lens = lens.borrow();
    let of = |exchange| -> Vec<usize> {
        lens.iter()
            .filter(|(e, _)| *e == exchange)
            .map(|&(_, len)| len)
            .collect()
    };
    let [init_i, init_r] = of(ExchangeType::IKE_SA_INIT)[..] else {
        panic!("one IKE_SA_INIT request and one response");
    };
    let [auth_i, auth_r] = of(ExchangeType::IKE_AUTH)[..] else {
        panic!("one IKE_AUTH request and one response");
    };
    (
        [init_i, init_r],
        [auth_i - SK_OVERHEAD, auth_r - SK_OVERHEAD],
    )
}

/// One end's credentials.
struct End {
    key: SigningKey,
    cert: Vec<u8>,
    id: Identity,
}

/// What both ends hold before a setup, and the sizes of the messages they exchange.
struct Setting {
    anchors: TrustAnchors,
    ends: [End; 2],
    init_lens: [usize; 2],
    auth_lens: [usize; 2],
}

fn setting() -> Setting {
    let ca = sim::Ca::new(&rcgen::PKCS_ED25519);
    let anchors = TrustAnchors::from_der(std::slice::from_ref(&ca.der)).expect("anchor");
    let end = |name: &str| {
        let (key, cert) = ca.issue(name, &rcgen::PKCS_ED25519);
        End {
            key,
            cert,
            id: sim::fqdn(name),
        }
    };
    let (init_lens, auth_lens) = message_lens();
    Setting {
        anchors,
        ends: [end("alice.vn.example"), end("bob.vn.example")],
        init_lens,
        auth_lens,
    }
}

fn chacha(key: &[u8]) -> SkCipher {
    SkCipher::new(EncrId::CHACHA20_POLY1305, None, IntegId::NONE, key, &[]).expect("cipher")
}

/// The cryptographic work of one setup, both sides: key exchange, IKE SA and child SA
/// keys, SK protection of the IKE_AUTH messages, AUTH octets, signatures, chains and
/// identities.
fn crypto_floor(s: &Setting) {
    let prf = Prf::HmacSha256;
    let nonces = [[1u8; 32], [2u8; 32]];
    let (spi_i, spi_r) = ([3u8; 8], [4u8; 8]);
    let lengths =
        SkCipher::key_lengths(EncrId::CHACHA20_POLY1305, None, IntegId::NONE).expect("suite");
    let dh = [
        DhPrivate::generate(DhGroup::Curve25519).expect("random"),
        DhPrivate::generate(DhGroup::Curve25519).expect("random"),
    ];
    let publics = [dh[0].public_key(), dh[1].public_key()];
    let keys = [0, 1].map(|n| {
        let shared = dh[n].shared_secret(&publics[1 - n]).expect("x25519");
        let (ni, nr) = (&nonces[0], &nonces[1]);
        let skeyseed = IkeSaKeys::skeyseed(prf, ni, nr, shared.expose());
        let sa = IkeSaKeys::derive(prf, skeyseed.expose(), ni, nr, &spi_i, &spi_r, lengths)
            .expect("derive");
        black_box(child_keymat(prf, sa.sk_d.expose(), None, ni, nr, 2 * 36).expect("keymat"));
        sa
    });
    let aad = [0u8; 32];
    for n in 0..2 {
        let (ours, theirs) = (&s.ends[n], &s.ends[1 - n]);
        let (sk_e, sk_p) = if n == 0 {
            (&keys[0].sk_ei, &keys[0].sk_pi)
        } else {
            (&keys[1].sk_er, &keys[1].sk_pr)
        };
        let peer_keys = &keys[1 - n];
        let peer_sk_p = if n == 0 {
            &peer_keys.sk_pi
        } else {
            &peer_keys.sk_pr
        };
        let first_message = vec![0u8; s.init_lens[n]];
        let id = ours.id.to_wire().1;
        let octets = auth::signed_octets(&first_message, &nonces[1 - n], prf, sk_p.expose(), &id);
        let signature = ours.key.sign(&octets);
        let body = chacha(sk_e.expose())
            .seal(&aad, &vec![0u8; s.auth_lens[n]])
            .expect("seal");
        black_box(chacha(sk_e.expose()).open(&aad, &body).expect("open"));
        let expected =
            auth::signed_octets(&first_message, &nonces[1 - n], prf, peer_sk_p.expose(), &id);
        let validated = s
            .anchors
            .validate(&ours.cert, &[], sim::wall_start(), &[])
            .expect("chain");
        assert!(validated.matches(&ours.id));
        assert!(!validated.matches(&theirs.id));
        auth::verify(
            validated.cert_der(),
            ours.key.method(),
            &signature,
            &expected,
        )
        .expect("signature");
    }
}

fn setup(c: &mut Criterion) {
    let mut group = c.benchmark_group("ike_setup");
    group.throughput(Throughput::Elements(1));
    group.bench_function("ed25519_x25519_chacha20poly1305", |b| {
        b.iter_batched(
            network,
            |mut net| one_setup(&mut net),
            criterion::BatchSize::SmallInput,
        )
    });
    let setting = setting();
    group.bench_function("crypto_floor", |b| b.iter(|| crypto_floor(&setting)));
    group.finish();

    // Interleaved, so that load from other processes weighs on both alike.
    let (mut setup, mut floor) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..ROUNDS {
        let mut net = network();
        let started = Instant::now();
        one_setup(&mut net);
        setup += started.elapsed();
        let started = Instant::now();
        crypto_floor(&setting);
        floor += started.elapsed();
    }
    let (setup, floor) = (setup / ROUNDS, floor / ROUNDS);
    let share = floor.as_secs_f64() / setup.as_secs_f64();
    println!(
        "setup: {} µs/setup ({:.0} setups/s); crypto floor: {} µs ({:.0} %); engine overhead: {:.0} %",
        setup.as_micros(),
        1.0 / setup.as_secs_f64(),
        floor.as_micros(),
        100.0 * share,
        100.0 * (1.0 - share),
    );
}

criterion_group!(benches, setup);
criterion_main!(benches);
