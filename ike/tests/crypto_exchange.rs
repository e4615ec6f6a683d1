//! Both ends of an IKE SA derive the same keys through the public crypto API and can
//! read each other's SK payloads; a rekeyed SA gets fresh keys.

use iiptran_ike::crypto::{DhGroup, DhPrivate, IkeSaKeys, Prf, SkCipher, child_keymat};
use iiptran_ike::iana::{EncrId, IntegId};

struct Suite {
    prf: Prf,
    group: DhGroup,
    encr: EncrId,
    key_bits: Option<u16>,
    integ: IntegId,
}

const SUITES: [Suite; 3] = [
    Suite {
        prf: Prf::HmacSha256,
        group: DhGroup::Curve25519,
        encr: EncrId::CHACHA20_POLY1305,
        key_bits: None,
        integ: IntegId::NONE,
    },
    Suite {
        prf: Prf::HmacSha384,
        group: DhGroup::Ecp256,
        encr: EncrId::AES_GCM_16,
        key_bits: Some(256),
        integ: IntegId::NONE,
    },
    Suite {
        prf: Prf::HmacSha512,
        group: DhGroup::Curve25519,
        encr: EncrId::AES_CBC,
        key_bits: Some(128),
        integ: IntegId::HMAC_SHA2_512_256,
    },
];

/// One end's view of a finished IKE_SA_INIT.
fn derive(suite: &Suite, ours: &DhPrivate, peer_public: &[u8], ni: &[u8], nr: &[u8]) -> IkeSaKeys {
    let shared = ours.shared_secret(peer_public).expect("valid peer value");
    let skeyseed = IkeSaKeys::skeyseed(suite.prf, ni, nr, shared.expose());
    let lengths = SkCipher::key_lengths(suite.encr, suite.key_bits, suite.integ).expect("suite");
    IkeSaKeys::derive(
        suite.prf,
        skeyseed.expose(),
        ni,
        nr,
        &[1; 8],
        &[2; 8],
        lengths,
    )
    .expect("derive")
}

fn cipher(suite: &Suite, encr_key: &[u8], integ_key: &[u8]) -> SkCipher {
    SkCipher::new(suite.encr, suite.key_bits, suite.integ, encr_key, integ_key).expect("cipher")
}

#[test]
fn initiator_and_responder_agree() {
    for suite in &SUITES {
        let (ni, nr) = ([0x11u8; 32], [0x22u8; 32]);
        let i = DhPrivate::generate(suite.group).expect("random");
        let r = DhPrivate::generate(suite.group).expect("random");
        let at_i = derive(suite, &i, &r.public_key(), &ni, &nr);
        let at_r = derive(suite, &r, &i.public_key(), &ni, &nr);
        assert_eq!(at_i, at_r);
        assert_eq!(at_i.sk_d.len(), suite.prf.output_len());
        assert_ne!(at_i.sk_ei, at_i.sk_er);

        let mut i_out = cipher(suite, at_i.sk_ei.expose(), at_i.sk_ai.expose());
        let r_in = cipher(suite, at_r.sk_ei.expose(), at_r.sk_ai.expose());
        let aad = b"IKE header | SK header";
        let body = i_out
            .seal(aad, b"IDi | AUTH | SAi2 | TSi | TSr")
            .expect("seal");
        assert_eq!(
            r_in.open(aad, &body).expect("open"),
            b"IDi | AUTH | SAi2 | TSi | TSr"
        );
        // the responder's own direction uses the other key and cannot read it
        let r_out = cipher(suite, at_r.sk_er.expose(), at_r.sk_ar.expose());
        assert!(r_out.open(aad, &body).is_err());

        // CREATE_CHILD_SA: fresh nonces and a new exchange give a new SKEYSEED and KEYMAT
        let (ni2, nr2) = ([0x33u8; 32], [0x44u8; 32]);
        let (i2, r2) = (
            DhPrivate::generate(suite.group).expect("random"),
            DhPrivate::generate(suite.group).expect("random"),
        );
        let g_ir_i = i2.shared_secret(&r2.public_key()).expect("i2");
        let g_ir_r = r2.shared_secret(&i2.public_key()).expect("r2");
        let rekeyed_i =
            IkeSaKeys::rekey_skeyseed(suite.prf, at_i.sk_d.expose(), g_ir_i.expose(), &ni2, &nr2);
        let rekeyed_r =
            IkeSaKeys::rekey_skeyseed(suite.prf, at_r.sk_d.expose(), g_ir_r.expose(), &ni2, &nr2);
        assert_eq!(rekeyed_i, rekeyed_r);
        let old_skeyseed = IkeSaKeys::skeyseed(suite.prf, &ni, &nr, g_ir_i.expose());
        assert_ne!(rekeyed_i, old_skeyseed);

        let keymat_i = child_keymat(suite.prf, at_i.sk_d.expose(), None, &ni2, &nr2, 72);
        let keymat_r = child_keymat(suite.prf, at_r.sk_d.expose(), None, &ni2, &nr2, 72);
        assert_eq!(keymat_i.expect("keymat i"), keymat_r.expect("keymat r"));
        let pfs = child_keymat(
            suite.prf,
            at_i.sk_d.expose(),
            Some(g_ir_i.expose()),
            &ni2,
            &nr2,
            72,
        );
        let no_pfs = child_keymat(suite.prf, at_i.sk_d.expose(), None, &ni2, &nr2, 72);
        assert_ne!(pfs.expect("pfs"), no_pfs.expect("no pfs"));
    }
}
