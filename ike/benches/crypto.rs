//! Costs of the IKE crypto core: key exchange, key derivation, SK payload protection.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use iiptran_ike::crypto::{DhGroup, DhPrivate, IkeSaKeys, Prf, SkCipher};
use iiptran_ike::iana::{EncrId, IntegId};

fn key_exchange(c: &mut Criterion) {
    for (name, group) in [("x25519", DhGroup::Curve25519), ("p256", DhGroup::Ecp256)] {
        let peer = DhPrivate::generate(group).expect("random").public_key();
        c.bench_function(&format!("dh/{name} keygen+dh"), |b| {
            b.iter(|| {
                let ours = DhPrivate::generate(group).expect("random");
                let public = ours.public_key();
                let shared = ours.shared_secret(black_box(&peer)).expect("valid peer");
                black_box((public, shared))
            })
        });
    }
}

fn key_derivation(c: &mut Criterion) {
    let prf = Prf::HmacSha256;
    let lengths =
        SkCipher::key_lengths(EncrId::CHACHA20_POLY1305, None, IntegId::NONE).expect("suite");
    let (ni, nr, shared) = ([1u8; 32], [2u8; 32], [3u8; 32]);
    c.bench_function("kdf/ike sa keys sha256 chacha20poly1305", |b| {
        b.iter(|| {
            let skeyseed = IkeSaKeys::skeyseed(prf, &ni, &nr, black_box(&shared));
            IkeSaKeys::derive(prf, skeyseed.expose(), &ni, &nr, &[4; 8], &[5; 8], lengths)
                .expect("derive")
        })
    });
}

fn sk_payload(c: &mut Criterion) {
    let suites = [
        (
            "chacha20poly1305",
            EncrId::CHACHA20_POLY1305,
            None,
            IntegId::NONE,
        ),
        ("aes-gcm-256", EncrId::AES_GCM_16, Some(256), IntegId::NONE),
        (
            "aes-cbc-256+hmac-sha256",
            EncrId::AES_CBC,
            Some(256),
            IntegId::HMAC_SHA2_256_128,
        ),
    ];
    let aad = [0u8; 32];
    let plaintext = vec![0x42u8; 1024];
    for (name, encr, bits, integ) in suites {
        let (encr_len, integ_len) = SkCipher::key_lengths(encr, bits, integ).expect("suite");
        let (encr_key, integ_key) = (vec![7u8; encr_len], vec![8u8; integ_len]);
        let mut cipher = SkCipher::new(encr, bits, integ, &encr_key, &integ_key).expect("cipher");
        c.bench_function(&format!("sk/{name} seal 1KiB"), |b| {
            b.iter(|| cipher.seal(&aad, black_box(&plaintext)).expect("seal"))
        });
        let body = cipher.seal(&aad, &plaintext).expect("seal");
        c.bench_function(&format!("sk/{name} open 1KiB"), |b| {
            b.iter(|| cipher.open(&aad, black_box(&body)).expect("open"))
        });
    }
}

criterion_group!(benches, key_exchange, key_derivation, sk_payload);
criterion_main!(benches);
