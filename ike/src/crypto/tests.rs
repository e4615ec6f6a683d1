//! Known-answer tests from the published vectors in `testdata/`, and the rejections the
//! public API promises.

use std::collections::BTreeMap;

use chacha20poly1305::ChaCha20Poly1305;
use chacha20poly1305::aead::{AeadInOut, KeyInit};

use super::integ::Integ;
use super::*;
use crate::iana::{DhId, EncrId, IntegId, PrfId};

/// One `[name]` section of a vector file: `key = hex` lines.
struct Case {
    name: String,
    fields: BTreeMap<String, String>,
}

impl Case {
    fn hex(&self, key: &str) -> Vec<u8> {
        let text = self
            .fields
            .get(key)
            .unwrap_or_else(|| panic!("{}: no field {key}", self.name));
        let digits: String = text.split_whitespace().collect();
        hex::decode(digits).unwrap_or_else(|e| panic!("{}: {key}: {e}", self.name))
    }

    fn has(&self, key: &str) -> bool {
        self.fields.contains_key(key)
    }

    fn text(&self, key: &str) -> &str {
        &self.fields[key]
    }
}

fn vectors(file: &str) -> Vec<Case> {
    let path = format!("{}/testdata/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut cases: Vec<Case> = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            cases.push(Case {
                name: name.to_owned(),
                fields: BTreeMap::new(),
            });
            continue;
        }
        let (key, value) = line.split_once('=').expect("key = value");
        let case = cases.last_mut().expect("field before the first [section]");
        case.fields
            .insert(key.trim().to_owned(), value.trim().to_owned());
    }
    assert!(!cases.is_empty(), "{path} has no vectors");
    cases
}

fn named(file: &str, name: &str) -> Case {
    vectors(file)
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("{file}: no [{name}]"))
}

#[test]
fn rfc4231_hmac_sha2_through_prf_and_integ() {
    let cases = vectors("rfc4231_hmac_sha2.txt");
    assert_eq!(cases.len(), 21);
    for case in &cases {
        let (prf, integ) = match case.text("prf") {
            "HMAC_SHA2_256" => (PrfId::HMAC_SHA2_256, IntegId::HMAC_SHA2_256_128),
            "HMAC_SHA2_384" => (PrfId::HMAC_SHA2_384, IntegId::HMAC_SHA2_384_192),
            "HMAC_SHA2_512" => (PrfId::HMAC_SHA2_512, IntegId::HMAC_SHA2_512_256),
            other => panic!("{}: unknown prf {other}", case.name),
        };
        let prf = Prf::from_id(prf).expect("supported PRF");
        let integ = Integ::from_id(integ).expect("supported INTEG");
        let (key, data) = (case.hex("key"), case.hex("data"));
        let out = prf.compute(&key, &data);
        let icv = integ.icv(&key, &[&data]);
        assert_eq!(icv.len(), integ.icv_len());
        if case.has("mac") {
            let mac = case.hex("mac");
            assert_eq!(out.expose(), mac.as_slice(), "{}", case.name);
            assert_eq!(out.len(), prf.output_len());
            assert_eq!(icv, mac[..integ.icv_len()], "{}", case.name);
        } else {
            // test case 5: the RFC publishes only the 128-bit truncation
            let truncated = case.hex("truncated");
            assert_eq!(icv[..truncated.len()], truncated, "{}", case.name);
            assert_eq!(out.expose()[..truncated.len()], truncated, "{}", case.name);
        }
    }
}

#[test]
fn rfc7634_appendix_a_esp_aead() {
    let case = named("rfc7634_chacha20poly1305.txt", "appendix A esp");
    let aead = ChaCha20Poly1305::new_from_slice(&case.hex("key")).expect("32-octet key");
    let nonce = [case.hex("salt"), case.hex("iv")].concat();
    let nonce = chacha20poly1305::Nonce::try_from(nonce.as_slice()).expect("12-octet nonce");
    let mut buf = case.hex("plaintext");
    let tag = aead
        .encrypt_inout_detached(&nonce, &case.hex("aad"), buf.as_mut_slice().into())
        .expect("encrypt");
    buf.extend_from_slice(&tag);
    assert_eq!(buf, case.hex("ciphertext"));
}

#[test]
fn rfc7634_appendix_b_ikev2_sk_payload() {
    let case = named("rfc7634_chacha20poly1305.txt", "appendix B ikev2");
    let keymat = [case.hex("key"), case.hex("salt")].concat();
    let (encr_len, integ_len) =
        SkCipher::key_lengths(EncrId::CHACHA20_POLY1305, None, IntegId::NONE).expect("suite");
    assert_eq!((encr_len, integ_len), (keymat.len(), 0));
    let cipher = SkCipher::new(EncrId::CHACHA20_POLY1305, None, IntegId::NONE, &keymat, &[])
        .expect("cipher");
    // the vector's plaintext ends with the pad length octet (0): the payload is the rest
    let padded = case.hex("plaintext");
    let (&pad_len, payload) = padded.split_last().expect("non-empty");
    assert_eq!(pad_len, 0);
    let (iv, aad) = (case.hex("iv"), case.hex("aad"));
    let expected = [iv.clone(), case.hex("ciphertext")].concat();
    let body = cipher.seal_with_iv(&iv, &aad, payload).expect("seal");
    assert_eq!(body, expected);
    assert_eq!(cipher.sealed_len(payload.len()), expected.len());
    assert_eq!(cipher.open(&aad, &expected).expect("open"), payload);
}

#[test]
fn x25519_known_answers() {
    for case in vectors("x25519.txt") {
        if case.has("scalar") {
            let private = DhPrivate::from_private_bytes(DhGroup::Curve25519, &case.hex("scalar"))
                .expect("scalar");
            let shared = private.shared_secret(&case.hex("u")).expect(&case.name);
            assert_eq!(shared.expose(), case.hex("output"), "{}", case.name);
        } else {
            check_exchange(DhGroup::Curve25519, &case);
        }
    }
}

#[test]
fn rfc5903_p256_known_answer() {
    for case in vectors("rfc5903_p256.txt") {
        check_exchange(DhGroup::Ecp256, &case);
    }
}

/// Both sides of a published exchange: public values and g^ir from each end.
fn check_exchange(group: DhGroup, case: &Case) {
    let i = DhPrivate::from_private_bytes(group, &case.hex("private_i")).expect(&case.name);
    let r = DhPrivate::from_private_bytes(group, &case.hex("private_r")).expect(&case.name);
    assert_eq!(i.group(), group);
    assert_eq!(i.public_key(), case.hex("public_i"), "{}", case.name);
    assert_eq!(r.public_key(), case.hex("public_r"), "{}", case.name);
    let shared = case.hex("shared");
    assert_eq!(
        i.shared_secret(&case.hex("public_r")).expect("i").expose(),
        shared
    );
    assert_eq!(
        r.shared_secret(&case.hex("public_i")).expect("r").expose(),
        shared
    );
}

#[test]
fn ikev2_kdf_known_answers() {
    let prf = Prf::from_id(PrfId::HMAC_SHA2_256).expect("PRF");
    for case in vectors("ikev2_kdf.txt") {
        let (ni, nr, gir, gir_new) = (
            case.hex("ni"),
            case.hex("nr"),
            case.hex("gir"),
            case.hex("gir_new"),
        );
        let spi_i: [u8; 8] = case.hex("spi_i").try_into().expect("8-octet SPI");
        let spi_r: [u8; 8] = case.hex("spi_r").try_into().expect("8-octet SPI");

        let skeyseed = IkeSaKeys::skeyseed(prf, &ni, &nr, &gir);
        assert_eq!(skeyseed.expose(), case.hex("skeyseed"), "{}", case.name);

        let dkm = case.hex("dkm");
        let seed = [ni.as_slice(), &nr, &spi_i, &spi_r].concat();
        assert_eq!(
            prf.plus(skeyseed.expose(), &seed, dkm.len())
                .expect("prf+")
                .expose(),
            dkm
        );

        // lengths chosen so that the seven keys cover the whole published DKM
        let integ_len = 16;
        let encr_len = (dkm.len() - 3 * prf.output_len() - 2 * integ_len) / 2;
        let keys = IkeSaKeys::derive(
            prf,
            skeyseed.expose(),
            &ni,
            &nr,
            &spi_i,
            &spi_r,
            (encr_len, integ_len),
        )
        .expect("derive");
        let joined: Vec<u8> = [
            &keys.sk_d,
            &keys.sk_ai,
            &keys.sk_ar,
            &keys.sk_ei,
            &keys.sk_er,
            &keys.sk_pi,
            &keys.sk_pr,
        ]
        .iter()
        .flat_map(|k| k.expose().to_vec())
        .collect();
        assert_eq!(joined, dkm, "{}", case.name);
        assert_eq!(keys.sk_ei.len(), encr_len);

        let rekeyed = IkeSaKeys::rekey_skeyseed(prf, keys.sk_d.expose(), &gir_new, &ni, &nr);
        assert_eq!(
            rekeyed.expose(),
            case.hex("skeyseed_rekey"),
            "{}",
            case.name
        );

        if case.has("dkm_child") {
            let child = case.hex("dkm_child");
            let keymat = child_keymat(prf, keys.sk_d.expose(), None, &ni, &nr, child.len());
            assert_eq!(keymat.expect("keymat").expose(), child, "{}", case.name);
            let child_dh = case.hex("dkm_child_dh");
            let keymat = child_keymat(
                prf,
                keys.sk_d.expose(),
                Some(&gir_new),
                &ni,
                &nr,
                child_dh.len(),
            );
            assert_eq!(keymat.expect("keymat").expose(), child_dh, "{}", case.name);
        }
    }
}

#[test]
fn prf_plus_stops_at_255_blocks() {
    for prf in [Prf::HmacSha256, Prf::HmacSha384, Prf::HmacSha512] {
        assert_eq!(Prf::from_id(prf.id()), Some(prf));
        let max = 255 * prf.output_len();
        assert_eq!(prf.plus(b"k", b"s", max).expect("max").len(), max);
        assert_eq!(
            prf.plus(b"k", b"s", max + 1),
            Err(CryptoError::PrfPlusTooLong {
                requested: max + 1,
                max
            })
        );
    }
    assert_eq!(Prf::from_id(PrfId::HMAC_SHA1), None);
}

#[test]
fn dh_rejects_invalid_public_values() {
    let x = DhPrivate::generate(DhGroup::Curve25519).expect("random");
    assert_eq!(x.public_key().len(), 32);
    for bad in [&[9u8; 31][..], &[9u8; 33], &[]] {
        assert_eq!(x.shared_secret(bad), Err(CryptoError::InvalidPublicValue));
    }
    // u = 0 and u = 1 are low-order points: the result is all zero (RFC 8031 §2.3)
    let mut one = [0u8; 32];
    one[0] = 1;
    for low_order in [[0u8; 32], one] {
        assert_eq!(
            x.shared_secret(&low_order),
            Err(CryptoError::InvalidPublicValue)
        );
    }

    let p = DhPrivate::generate(DhGroup::Ecp256).expect("random");
    let good = DhPrivate::generate(DhGroup::Ecp256)
        .expect("random")
        .public_key();
    assert_eq!(good.len(), 64);
    assert!(p.shared_secret(&good).is_ok());
    let mut off_curve = good.clone();
    off_curve[63] ^= 1;
    for bad in [
        &off_curve[..],
        &[0u8; 64],
        &good[..63],
        &[good.clone(), vec![0]].concat(),
    ] {
        assert_eq!(p.shared_secret(bad), Err(CryptoError::InvalidPublicValue));
    }
    // a Curve25519 value is not a P-256 value, even when lengths are mixed up
    assert_eq!(
        p.shared_secret(&x.public_key()),
        Err(CryptoError::InvalidPublicValue)
    );
}

#[test]
fn dh_groups_and_private_values() {
    for group in [DhGroup::Curve25519, DhGroup::Ecp256] {
        assert_eq!(DhGroup::from_id(group.id()), Some(group));
        let a = DhPrivate::generate(group).expect("random");
        let b = DhPrivate::generate(group).expect("random");
        assert_eq!(a.public_key().len(), group.public_len());
        assert_ne!(a.public_key(), b.public_key());
        let ab = a.shared_secret(&b.public_key()).expect("ab");
        let ba = b.shared_secret(&a.public_key()).expect("ba");
        assert_eq!(ab, ba);
        assert!(!format!("{a:?}").contains(&hex::encode(&ab.expose()[..4])));
    }
    assert_eq!(DhGroup::from_id(DhId::MODP_2048), None);
    // zero and the group order are not P-256 private values
    assert!(DhPrivate::from_private_bytes(DhGroup::Ecp256, &[0u8; 32]).is_err());
    assert!(DhPrivate::from_private_bytes(DhGroup::Curve25519, &[1u8; 31]).is_err());
}

#[test]
fn keys_never_print() {
    let keys = IkeSaKeys::derive(
        Prf::HmacSha256,
        &[7; 32],
        b"ni",
        b"nr",
        &[1; 8],
        &[2; 8],
        (36, 0),
    )
    .expect("derive");
    let printed = format!("{keys:?}");
    assert!(printed.contains("redacted"));
    assert!(!printed.contains(&hex::encode(&keys.sk_d.expose()[..4])));
}

/// Wycheproof's edge cases through the SK payload transform: the 12-octet nonce is
/// salt | IV, the decrypted data must carry a valid pad length octet.
#[test]
fn wycheproof_chacha20_poly1305_through_sk_payload() {
    let (mut valid, mut invalid, mut unpadded) = (0, 0, 0);
    for case in vectors("wycheproof_chacha20_poly1305.txt") {
        let nonce = case.hex("nonce");
        let (salt, iv) = nonce.split_at(4);
        let keymat = [case.hex("key").as_slice(), salt].concat();
        let cipher = SkCipher::new(EncrId::CHACHA20_POLY1305, None, IntegId::NONE, &keymat, &[])
            .expect(&case.name);
        let (aad, ciphertext) = (case.hex("aad"), case.hex("ciphertext"));
        let body = [iv, &ciphertext].concat();
        let opened = cipher.open(&aad, &body);
        // no ciphertext octet at all: not even a pad length
        let empty = ciphertext.len() == 16;
        if case.text("result") == "invalid" {
            invalid += 1;
            let expected = if empty {
                CryptoError::Malformed
            } else {
                CryptoError::Integrity
            };
            assert_eq!(opened, Err(expected), "{}", case.name);
            continue;
        }
        valid += 1;
        let plaintext = case.hex("plaintext");
        let Some((&pad_len, padded)) = plaintext.split_last() else {
            assert_eq!(opened, Err(CryptoError::Malformed), "{}", case.name);
            continue;
        };
        match padded.len().checked_sub(usize::from(pad_len)) {
            Some(len) => {
                unpadded += 1;
                assert_eq!(opened.as_deref(), Ok(&padded[..len]), "{}", case.name);
            }
            None => assert_eq!(opened, Err(CryptoError::Padding), "{}", case.name),
        }
    }
    assert_eq!((valid, invalid), (233, 60));
    // both outcomes of the pad length check are exercised
    assert!(unpadded > 0 && unpadded < valid, "{unpadded} of {valid}");
}

/// Twist points give the RFC 7748 result; an all-zero result is refused.
#[test]
fn wycheproof_x25519_edge_cases() {
    let (mut computed, mut refused) = (0, 0);
    for case in vectors("wycheproof_x25519.txt") {
        let private = DhPrivate::from_private_bytes(DhGroup::Curve25519, &case.hex("private"))
            .expect(&case.name);
        let result = private.shared_secret(&case.hex("public"));
        if case.text("flags").contains("ZeroSharedSecret") {
            refused += 1;
            assert_eq!(
                result,
                Err(CryptoError::InvalidPublicValue),
                "{}",
                case.name
            );
        } else {
            computed += 1;
            assert_eq!(
                result.expect(&case.name).expose(),
                case.hex("shared"),
                "{}",
                case.name
            );
        }
    }
    assert_eq!((computed, refused), (12, 2));
}
