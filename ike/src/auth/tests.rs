use super::*;
use crate::identity::Identity;
use crate::secret::Secret;
use hmac::{Hmac, KeyInit, Mac};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber, SignatureAlgorithm, date_time_ymd,
};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A field of a `NAME: hex` test vector file under `testdata/`.
fn vector(file: &str, field: &str) -> Vec<u8> {
    let text =
        std::fs::read_to_string(format!("{}/testdata/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let line = text
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)
                .and_then(|rest| rest.strip_prefix(':'))
        })
        .unwrap_or_else(|| panic!("{field} missing in {file}"));
    hex::decode(line.trim()).unwrap()
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

#[test]
fn signed_octets_is_message_nonce_and_maced_id() {
    let file = "auth_rfc4231_case2.txt";
    let (key, data) = (vector(file, "Key"), vector(file, "Data"));
    let octets = signed_octets(b"message", b"nonce", Prf::HmacSha256, &key, &data);
    let expected = [
        b"message".as_slice(),
        b"nonce",
        &vector(file, "HMAC-SHA-256"),
    ]
    .concat();
    assert_eq!(octets, expected);
}

#[test]
fn psk_auth_is_prf_of_padded_key() {
    let secret = Secret::from_slice(b"vn shared secret");
    let octets = signed_octets(
        b"IKE_SA_INIT",
        b"Nr",
        Prf::HmacSha256,
        b"SK_pi",
        b"\x02\0\0\0a",
    );
    let pad = hmac_sha256(secret.expose(), b"Key Pad for IKEv2");
    let expected = hmac_sha256(&pad, &octets);
    let auth = psk_auth(Prf::HmacSha256, &secret, &octets);
    assert_eq!(auth.expose(), expected.as_slice());
    assert_eq!(psk_auth(Prf::HmacSha512, &secret, &octets).len(), 64);

    assert!(verify_psk(Prf::HmacSha256, &secret, &octets, &expected).is_ok());
    let mut flipped = expected.clone();
    flipped[31] ^= 1;
    let other = Secret::from_slice(b"another secret");
    let rejected: [(&Secret, &[u8], &[u8]); 5] = [
        (&secret, &octets, &flipped),
        (&secret, &octets, &expected[..31]),
        (&secret, &octets, &[]),
        (&other, &octets, &expected),
        (&secret, b"other octets", &expected),
    ];
    for (i, (s, o, received)) in rejected.into_iter().enumerate() {
        assert!(
            matches!(
                verify_psk(Prf::HmacSha256, s, o, received),
                Err(AuthError::Mismatch)
            ),
            "case {i}"
        );
    }
}

#[test]
fn hash_algorithms_notify() {
    assert_eq!(our_hash_algorithms(), [0, 2, 0, 3, 0, 4, 0, 5]);
    let parsed = parse_hash_algorithms(&our_hash_algorithms()).unwrap();
    assert_eq!(
        parsed,
        [
            crate::iana::HashAlgorithm::SHA2_256,
            crate::iana::HashAlgorithm::SHA2_384,
            crate::iana::HashAlgorithm::SHA2_512,
            crate::iana::HashAlgorithm::IDENTITY
        ]
    );
    assert_eq!(parse_hash_algorithms(&[]).unwrap(), []);
    assert_eq!(
        parse_hash_algorithms(&[0xff, 0x01]).unwrap(),
        [crate::iana::HashAlgorithm(0xff01)]
    );
    assert!(matches!(
        parse_hash_algorithms(&[0, 2, 0]),
        Err(AuthError::BadHashAlgorithms)
    ));
    assert!(matches!(
        parse_hash_algorithms(&[0; 130]),
        Err(AuthError::BadHashAlgorithms)
    ));
    assert_eq!(parse_hash_algorithms(&[0; 128]).unwrap().len(), 64);
}

#[test]
fn ed25519_auth_data_matches_rfc8032_vector() {
    let file = "auth_rfc8032_test1.txt";
    let seed = vector(file, "SECRET KEY");
    // RFC 8410 §7 OneAsymmetricKey (v1) wrapping of the seed.
    let pkcs8 = [
        hex::decode("302e020100300506032b657004220420").unwrap(),
        seed,
    ]
    .concat();
    let key = SigningKey::from_pkcs8_der(&pkcs8).unwrap();
    assert_eq!(key.method(), AuthMethod::DIGITAL_SIGNATURE);
    assert_eq!(key.hash_algorithm(), crate::iana::HashAlgorithm::IDENTITY);
    let auth = key.sign(&vector(file, "MESSAGE"));
    let expected = [
        hex::decode("07300506032b6570").unwrap(),
        vector(file, "SIGNATURE"),
    ]
    .concat();
    assert_eq!(auth, expected);
}

#[test]
fn ecdsa_auth_data_carries_ecdsa_with_sha256() {
    use x509_parser::prelude::{AlgorithmIdentifier, FromDer};
    let key = SigningKey::from_pkcs8_pem(
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .unwrap()
            .serialize_pem()
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(key.hash_algorithm(), crate::iana::HashAlgorithm::SHA2_256);
    let auth = key.sign(b"octets");
    let len = usize::from(auth[0]);
    let (rest, alg) = AlgorithmIdentifier::from_der(&auth[1..1 + len]).unwrap();
    assert!(rest.is_empty());
    assert_eq!(alg.algorithm.to_id_string(), "1.2.840.10045.4.3.2");
    assert!(alg.parameters.is_none());
    // The signature is a DER ECDSA-Sig-Value.
    assert!(p256::ecdsa::Signature::from_der(&auth[1 + len..]).is_ok());
}

#[test]
fn private_keys_that_do_not_load() {
    let cases: [&[u8]; 3] = [
        b"",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    ];
    for pem in cases {
        assert!(SigningKey::from_pkcs8_pem(pem).is_err(), "{pem:?}");
    }
    let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    assert!(matches!(
        SigningKey::from_pkcs8_der(p384.serialized_der()),
        Err(AuthError::BadPrivateKey)
    ));
    let key = SigningKey::from_pkcs8_der(
        KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .unwrap()
            .serialized_der(),
    )
    .unwrap();
    assert_eq!(format!("{key:?}"), "SigningKey::Ed25519(redacted)");
}

// ---- certificates ----

/// A CA made with rcgen; `issue` signs node certificates with it.
struct Ca {
    params: CertificateParams,
    key: KeyPair,
    der: Vec<u8>,
    pem: String,
}

fn validity(params: &mut CertificateParams) {
    params.not_before = date_time_ymd(2026, 1, 1);
    params.not_after = date_time_ymd(2028, 1, 1);
}

/// 2027-01-01, inside every test certificate's validity unless a test says otherwise.
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_798_761_600)
}

impl Ca {
    fn new(name: &str, alg: &'static SignatureAlgorithm) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut params);
        let key = KeyPair::generate_for(alg).unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            der: cert.der().to_vec(),
            pem: cert.pem(),
            params,
            key,
        }
    }

    fn intermediate(&self, name: &str) -> Ca {
        let mut params = self.params.clone();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = params.signed_by(&key, &self.issuer()).unwrap();
        Ca {
            der: cert.der().to_vec(),
            pem: cert.pem(),
            params,
            key,
        }
    }

    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }

    fn issue(&self, key: &KeyPair, edit: impl FnOnce(&mut CertificateParams)) -> Vec<u8> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "a");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "vn");
        params.subject_alt_names = vec![SanType::DnsName("a.vn.example".try_into().unwrap())];
        params.serial_number = Some(SerialNumber::from_slice(&[0x11]));
        validity(&mut params);
        edit(&mut params);
        params
            .signed_by(key, &self.issuer())
            .unwrap()
            .der()
            .to_vec()
    }

    fn crl(&self, revoked_serial: &[u8]) -> Vec<u8> {
        CertificateRevocationListParams {
            this_update: date_time_ymd(2026, 12, 1),
            next_update: date_time_ymd(2027, 2, 1),
            crl_number: SerialNumber::from_slice(&[1]),
            issuing_distribution_point: None,
            revoked_certs: vec![RevokedCertParams {
                serial_number: SerialNumber::from_slice(revoked_serial),
                revocation_time: date_time_ymd(2026, 11, 1),
                reason_code: None,
                invalidity_date: None,
            }],
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.issuer())
        .unwrap()
        .der()
        .to_vec()
    }
}

fn ed25519_key() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap()
}

fn p256_key() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
}

fn anchors(ca: &Ca) -> TrustAnchors {
    TrustAnchors::from_pem(ca.pem.as_bytes()).unwrap()
}

fn chain_error(result: Result<ValidatedPeer, AuthError>) -> webpki::Error {
    match result {
        Err(AuthError::Chain(e)) => e,
        other => panic!("expected a chain error, got {other:?}"),
    }
}

#[test]
fn node_certificates_validate() {
    let ca = Ca::new("vn ca", &rcgen::PKCS_ED25519);
    let p384_ca = Ca::new("vn ca p384", &rcgen::PKCS_ECDSA_P384_SHA384);
    let ipsec_ike = ExtendedKeyUsagePurpose::Other(vec![1, 3, 6, 1, 5, 5, 7, 3, 17]);
    let ekus = [
        ("no EKU", vec![]),
        ("ipsecIKE", vec![ipsec_ike]),
        ("serverAuth", vec![ExtendedKeyUsagePurpose::ServerAuth]),
        (
            "clientAuth among others",
            vec![
                ExtendedKeyUsagePurpose::CodeSigning,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        ),
    ];
    for (issuer, issuer_name) in [(&ca, "Ed25519 CA"), (&p384_ca, "P-384 CA")] {
        for key in [ed25519_key(), p256_key()] {
            for (name, eku) in &ekus {
                let der = issuer.issue(&key, |p| p.extended_key_usages = eku.clone());
                let peer = anchors(issuer)
                    .validate(&der, &[], now(), &[])
                    .unwrap_or_else(|e| panic!("{issuer_name} {name}: {e}"));
                assert_eq!(peer.cert_der(), der.as_slice());
            }
        }
    }
}

#[test]
fn certificates_that_are_rejected() {
    let ca = Ca::new("vn ca", &rcgen::PKCS_ED25519);
    let other_ca = Ca::new("other ca", &rcgen::PKCS_ED25519);
    let key = p256_key();
    let anchors = anchors(&ca);

    let expired = ca.issue(&key, |p| p.not_after = date_time_ymd(2026, 6, 1));
    assert!(matches!(
        chain_error(anchors.validate(&expired, &[], now(), &[])),
        webpki::Error::CertExpired { .. }
    ));
    let not_yet = ca.issue(&key, |p| p.not_before = date_time_ymd(2027, 6, 1));
    assert!(matches!(
        chain_error(anchors.validate(&not_yet, &[], now(), &[])),
        webpki::Error::CertNotValidYet { .. }
    ));
    let foreign = other_ca.issue(&key, |_| {});
    assert_eq!(
        chain_error(anchors.validate(&foreign, &[], now(), &[])),
        webpki::Error::UnknownIssuer
    );
    let wrong_eku = ca.issue(&key, |p| {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning]
    });
    assert!(matches!(
        chain_error(anchors.validate(&wrong_eku, &[], now(), &[])),
        webpki::Error::RequiredEkuNotFoundContext(_)
    ));
    let ca_as_peer = ca.der.clone();
    assert!(anchors.validate(&ca_as_peer, &[], now(), &[]).is_err());
    assert!(matches!(
        anchors.validate(b"garbage", &[], now(), &[]),
        Err(AuthError::BadCertificate(_))
    ));
    let good = ca.issue(&key, |_| {});
    assert!(matches!(
        anchors.validate(&good, &[], UNIX_EPOCH - Duration::from_secs(1), &[]),
        Err(AuthError::BadTime)
    ));
}

#[test]
fn revocation_against_crls() {
    let ca = Ca::new("vn ca", &rcgen::PKCS_ED25519);
    let other_ca = Ca::new("other ca", &rcgen::PKCS_ED25519);
    let anchors = anchors(&ca);
    let revoked = ca.issue(&ed25519_key(), |p| {
        p.serial_number = Some(SerialNumber::from_slice(&[0x42]))
    });
    let fine = ca.issue(&ed25519_key(), |p| {
        p.serial_number = Some(SerialNumber::from_slice(&[0x43]))
    });
    let crl = ca.crl(&[0x42]);

    assert_eq!(
        chain_error(anchors.validate(&revoked, &[], now(), std::slice::from_ref(&crl))),
        webpki::Error::CertRevoked
    );
    assert!(
        anchors
            .validate(&fine, &[], now(), std::slice::from_ref(&crl))
            .is_ok()
    );
    assert!(
        anchors.validate(&revoked, &[], now(), &[]).is_ok(),
        "no CRL given"
    );
    // A CRL from another issuer says nothing about this certificate.
    let foreign_crl = other_ca.crl(&[0x42]);
    assert!(
        anchors
            .validate(&revoked, &[], now(), &[foreign_crl])
            .is_ok()
    );
    assert!(matches!(
        anchors.validate(&fine, &[], now(), &[b"not a crl".to_vec()]),
        Err(AuthError::BadCrl(_))
    ));
}

#[test]
fn crls_of_an_anchor_must_be_signed_by_its_key() {
    for alg in [&rcgen::PKCS_ED25519, &rcgen::PKCS_ECDSA_P256_SHA256] {
        let ca = Ca::new("vn ca", alg);
        let anchors = anchors(&ca);
        let own = ca.crl(&[0x42]);
        assert!(anchors.check_crl(&own).is_ok());
        // Same issuer name, another key.
        let forged = Ca::new("vn ca", alg).crl(&[0x42]);
        assert!(matches!(
            anchors.check_crl(&forged),
            Err(AuthError::CrlSignature)
        ));
        let mut flipped = own.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(
            anchors.check_crl(&flipped),
            Err(AuthError::CrlSignature)
        ));
        // Another issuer's CRL, e.g. an intermediate's, is checked with its chain.
        assert!(
            anchors
                .check_crl(&Ca::new("other ca", alg).crl(&[0x42]))
                .is_ok()
        );
        assert!(matches!(
            anchors.check_crl(b"not a crl"),
            Err(AuthError::BadCrl(_))
        ));

        anchors.set_crls(vec![own.clone()]).unwrap();
        assert!(matches!(
            anchors.set_crls(vec![forged]),
            Err(AuthError::CrlSignature)
        ));
        assert_eq!(*anchors.crls(), [own], "nothing changed");
    }
}

#[test]
fn chains_through_intermediates() {
    let root = Ca::new("vn root", &rcgen::PKCS_ED25519);
    let intermediate = root.intermediate("vn intermediate");
    let leaf = intermediate.issue(&p256_key(), |_| {});
    let anchors = anchors(&root);
    assert!(
        anchors
            .validate(&leaf, std::slice::from_ref(&intermediate.der), now(), &[])
            .is_ok()
    );
    assert_eq!(
        chain_error(anchors.validate(&leaf, &[], now(), &[])),
        webpki::Error::UnknownIssuer
    );
    // Revoking the intermediate at the root's CRL breaks the chain.
    let intermediate_serial = x509_parser::parse_x509_certificate(&intermediate.der)
        .unwrap()
        .1
        .raw_serial()
        .to_vec();
    let crl = root.crl(&intermediate_serial);
    assert_eq!(
        chain_error(anchors.validate(
            &leaf,
            std::slice::from_ref(&intermediate.der),
            now(),
            &[crl]
        )),
        webpki::Error::CertRevoked
    );
}

#[test]
fn a_chain_that_passed_passes_again_while_nothing_it_was_checked_on_changed() {
    let root = Ca::new("vn root", &rcgen::PKCS_ED25519);
    let intermediate = root.intermediate("vn intermediate");
    let leaf = intermediate.issue(&ed25519_key(), |p| {
        p.serial_number = Some(SerialNumber::from_slice(&[0x42]));
        p.not_after = date_time_ymd(2027, 1, 2);
    });
    let chain = std::slice::from_ref(&intermediate.der);
    let anchors = anchors(&root);

    let first = anchors.validate_peer(&leaf, chain, now()).unwrap();
    assert_eq!(first.cert_der(), leaf.as_slice());
    assert_eq!(anchors.remembered(), 1);
    let again = anchors.validate_peer(&leaf, chain, now()).unwrap();
    assert_eq!(again.cert_der(), leaf.as_slice());
    assert_eq!(anchors.remembered(), 1, "the same chain is one entry");

    // The leaf alone is another chain, and it does not lead to the root.
    assert_eq!(
        chain_error(anchors.validate_peer(&leaf, &[], now())),
        webpki::Error::UnknownIssuer
    );
    assert_eq!(anchors.remembered(), 1, "a failed chain is not remembered");

    // Past the leaf's validity the remembered chain no longer passes.
    let later = now() + Duration::from_secs(2 * 86_400);
    assert!(matches!(
        chain_error(anchors.validate_peer(&leaf, chain, later)),
        webpki::Error::CertExpired { .. }
    ));

    // New CRLs: the chain is checked against them, not taken from memory.
    anchors.set_crls(vec![intermediate.crl(&[0x42])]).unwrap();
    assert_eq!(
        chain_error(anchors.validate_peer(&leaf, chain, now())),
        webpki::Error::CertRevoked
    );
    anchors.set_crls(Vec::new()).unwrap();
    assert!(anchors.validate_peer(&leaf, chain, now()).is_ok());
}

#[test]
fn trust_anchor_inputs() {
    let a = Ca::new("a", &rcgen::PKCS_ED25519);
    let b = Ca::new("b", &rcgen::PKCS_ECDSA_P256_SHA256);
    let bundle = TrustAnchors::from_pem(format!("{}{}", a.pem, b.pem).as_bytes()).unwrap();
    let from_der = TrustAnchors::from_der(&[a.der.clone(), b.der.clone()]).unwrap();
    for anchors in [bundle, from_der] {
        for ca in [&a, &b] {
            let der = ca.issue(&ed25519_key(), |_| {});
            assert!(anchors.validate(&der, &[], now(), &[]).is_ok());
        }
    }
    assert!(matches!(
        TrustAnchors::from_pem(b""),
        Err(AuthError::NoTrustAnchor)
    ));
    assert!(matches!(
        TrustAnchors::from_der(&[]),
        Err(AuthError::NoTrustAnchor)
    ));
    assert!(matches!(
        TrustAnchors::from_der(&[b"junk".to_vec()]),
        Err(AuthError::BadCertificate(_))
    ));
}

#[test]
fn signatures_verify_against_the_certificate_key() {
    let ca = Ca::new("vn ca", &rcgen::PKCS_ED25519);
    let octets = signed_octets(
        b"IKE_SA_INIT response",
        b"Ni",
        Prf::HmacSha256,
        b"SK_pr",
        b"id",
    );
    for rcgen_key in [ed25519_key(), p256_key()] {
        let cert = ca.issue(&rcgen_key, |_| {});
        let key = SigningKey::from_pkcs8_der(rcgen_key.serialized_der()).unwrap();
        let auth = key.sign(&octets);
        verify(&cert, key.method(), &auth, &octets).unwrap();

        assert!(matches!(
            verify(&cert, key.method(), &auth, b"other octets"),
            Err(AuthError::Mismatch)
        ));
        let mut tampered = auth.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(matches!(
            verify(&cert, key.method(), &tampered, &octets),
            Err(AuthError::Mismatch)
        ));
        assert!(key.matches_certificate(&cert));
        let stranger = ca.issue(&p256_key(), |_| {});
        assert!(verify(&stranger, key.method(), &auth, &octets).is_err());
        let stranger_ed = ca.issue(&ed25519_key(), |_| {});
        assert!(verify(&stranger_ed, key.method(), &auth, &octets).is_err());
        assert!(!key.matches_certificate(&stranger) && !key.matches_certificate(&stranger_ed));
    }
}

#[test]
fn algorithm_and_key_mismatches_are_rejected() {
    let ca = Ca::new("vn ca", &rcgen::PKCS_ED25519);
    let ed_cert = ca.issue(&ed25519_key(), |_| {});
    let p256 = p256_key();
    let p256_cert = ca.issue(&p256, |_| {});
    let ecdsa_auth = SigningKey::from_pkcs8_der(p256.serialized_der())
        .unwrap()
        .sign(b"x");
    assert!(matches!(
        verify(&ed_cert, AuthMethod::DIGITAL_SIGNATURE, &ecdsa_auth, b"x"),
        Err(AuthError::KeyMismatch)
    ));
    let ed_auth = SigningKey::from_pkcs8_der(ed25519_key().serialized_der())
        .unwrap()
        .sign(b"x");
    assert!(matches!(
        verify(&p256_cert, AuthMethod::DIGITAL_SIGNATURE, &ed_auth, b"x"),
        Err(AuthError::KeyMismatch)
    ));

    let mut unknown_alg = ed_auth.clone();
    unknown_alg[7] = 0x71; // id-Ed448
    type Expect = fn(&AuthError) -> bool;
    let malformed: [(&[u8], Expect); 5] = [
        (&[], |e| matches!(e, AuthError::MalformedAuthData)),
        (&[12, 0x30, 0x0a], |e| {
            matches!(e, AuthError::MalformedAuthData)
        }),
        (&[0, 1, 2, 3], |e| {
            matches!(e, AuthError::UnsupportedSignatureAlgorithm)
        }),
        (&unknown_alg, |e| {
            matches!(e, AuthError::UnsupportedSignatureAlgorithm)
        }),
        (&[7, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70], |e| {
            matches!(e, AuthError::Mismatch)
        }),
    ];
    for (i, (data, expected)) in malformed.into_iter().enumerate() {
        let err = verify(&ed_cert, AuthMethod::DIGITAL_SIGNATURE, data, b"x").unwrap_err();
        assert!(expected(&err), "case {i}: {err:?}");
    }
    assert!(matches!(
        verify(&ed_cert, AuthMethod::SHARED_KEY, &ed_auth, b"x"),
        Err(AuthError::UnsupportedMethod(AuthMethod::SHARED_KEY))
    ));
    assert!(matches!(
        verify(b"junk", AuthMethod::DIGITAL_SIGNATURE, &ed_auth, b"x"),
        Err(AuthError::BadCertificate(_))
    ));
}

#[test]
fn rfc4754_raw_ecdsa_verifies() {
    use p256::ecdsa::signature::Signer;
    let ca = Ca::new("vn ca", &rcgen::PKCS_ED25519);
    let rcgen_key = p256_key();
    let cert = ca.issue(&rcgen_key, |_| {});
    let key = {
        use p256::pkcs8::DecodePrivateKey;
        p256::ecdsa::SigningKey::from_pkcs8_der(rcgen_key.serialized_der()).unwrap()
    };
    let signature: p256::ecdsa::Signature = key.sign(b"octets");
    let raw = signature.to_bytes();
    assert_eq!(raw.len(), 64);
    verify(&cert, AuthMethod::ECDSA_SHA256_P256, &raw, b"octets").unwrap();
    assert!(matches!(
        verify(&cert, AuthMethod::ECDSA_SHA256_P256, &raw, b"other"),
        Err(AuthError::Mismatch)
    ));
    assert!(matches!(
        verify(&cert, AuthMethod::ECDSA_SHA256_P256, &raw[..63], b"octets"),
        Err(AuthError::MalformedAuthData)
    ));
    let der = signature.to_der();
    assert!(
        verify(
            &cert,
            AuthMethod::ECDSA_SHA256_P256,
            der.as_bytes(),
            b"octets"
        )
        .is_err()
    );
    let ed_cert = ca.issue(&ed25519_key(), |_| {});
    assert!(matches!(
        verify(&ed_cert, AuthMethod::ECDSA_SHA256_P256, &raw, b"octets"),
        Err(AuthError::KeyMismatch)
    ));
}

/// The whole responder-side check of an initiator: chain, identity, AUTH.
#[test]
fn peer_authentication_end_to_end() {
    let ca = Ca::new("vn ca", &rcgen::PKCS_ED25519);
    let rcgen_key = ed25519_key();
    let cert = ca.issue(&rcgen_key, |p| {
        p.subject_alt_names = vec![
            SanType::DnsName("b.vn.example".try_into().unwrap()),
            SanType::IpAddress("192.0.2.2".parse().unwrap()),
        ]
    });
    let key = SigningKey::from_pkcs8_der(rcgen_key.serialized_der()).unwrap();
    let claimed: Identity = "b.vn.example".parse().unwrap();
    let (id_type, id_data) = claimed.to_wire();
    let id_body = [&[id_type.0, 0, 0, 0][..], &id_data].concat();
    let octets = signed_octets(b"first message", b"Nr", Prf::HmacSha384, b"SK_pi", &id_body);
    let auth = key.sign(&octets);

    let peer = anchors(&ca).validate(&cert, &[], now(), &[]).unwrap();
    assert!(peer.matches(&claimed));
    assert!(peer.matches(&"192.0.2.2".parse().unwrap()));
    assert!(
        !peer.matches(&"c.vn.example".parse().unwrap()),
        "identity mismatch"
    );
    verify(peer.cert_der(), key.method(), &auth, &octets).unwrap();
    assert_eq!(AuthError::NOTIFY, NotifyType::AUTHENTICATION_FAILED);
}

#[test]
fn certreq_names_each_anchor_by_the_sha1_of_its_public_key() {
    let (a, b) = (
        Ca::new("a", &rcgen::PKCS_ED25519),
        Ca::new("b", &rcgen::PKCS_ECDSA_P256_SHA256),
    );
    let anchors = TrustAnchors::from_der(&[a.der.clone(), b.der.clone()]).unwrap();
    let expected: Vec<u8> = [&a, &b]
        .iter()
        .flat_map(|ca| {
            use sha1::Digest as _;
            sha1::Sha1::digest(rcgen::PublicKeyData::subject_public_key_info(&ca.key)).to_vec()
        })
        .collect();
    assert_eq!(anchors.certreq_data(), expected);
    assert_eq!(
        crate::auth::parse_ca_hashes(&expected).unwrap().concat(),
        expected
    );
    assert!(crate::auth::parse_ca_hashes(&expected[1..]).is_none());
    assert_eq!(crate::auth::parse_ca_hashes(&[]), Some(Vec::new()));
}
