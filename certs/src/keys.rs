//! Private keys as files other tools read too.

use rcgen::KeyPair;
use yasna::Tag;
use yasna::models::ObjectIdentifier;
use zeroize::Zeroizing;

/// id-Ed25519 (RFC 8410).
const ED25519: &[u64] = &[1, 3, 101, 112];

/// The key as PKCS#8 PEM. ring writes Ed25519 keys as PKCS#8 v2 with a public-key field
/// that OpenSSL (and so strongSwan and openssl-based tooling) refuses; those are written as
/// the RFC 8410 v1 form instead, which ring and rcgen read as well. Other keys are unchanged.
pub fn key_pem(key: &KeyPair) -> Zeroizing<String> {
    let der = Zeroizing::new(key.serialize_der());
    let v1 = (key.algorithm() == &rcgen::PKCS_ED25519)
        .then(|| ed25519_v1(&der))
        .flatten();
    let body = v1.unwrap_or(der);
    Zeroizing::new(crate::to_pem("PRIVATE KEY", &body))
}

fn ed25519_v1(v2: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let private = yasna::parse_der(v2, |r| {
        r.read_sequence(|r| {
            r.next().read_u8()?;
            r.next().read_sequence(|r| r.next().read_oid())?;
            let private = Zeroizing::new(r.next().read_bytes()?);
            r.read_optional(|r| {
                r.read_tagged_implicit(Tag::context(1), |r| r.read_bitvec_bytes())
            })?;
            Ok(private)
        })
    })
    .ok()?;
    Some(Zeroizing::new(yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_u8(0);
            w.next()
                .write_sequence(|w| w.next().write_oid(&ObjectIdentifier::from_slice(ED25519)));
            w.next().write_bytes(&private);
        })
    })))
}

#[cfg(test)]
mod tests {
    use rcgen::PublicKeyData;

    use super::*;
    use crate::Algorithm;

    #[test]
    fn ed25519_is_written_as_v1_and_reads_back() {
        for algorithm in [Algorithm::Ed25519, Algorithm::P256] {
            let key = algorithm.generate().unwrap();
            let pem = key_pem(&key);
            let back = KeyPair::from_pem(&pem).unwrap();
            assert_eq!(
                back.subject_public_key_info(),
                key.subject_public_key_info()
            );
            if algorithm == Algorithm::Ed25519 {
                // SEQUENCE, INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING(32) }: 48 bytes.
                let der = crate::pem::base64_decode(
                    pem.lines()
                        .filter(|l| !l.starts_with("-----"))
                        .collect::<String>()
                        .as_bytes(),
                )
                .unwrap();
                assert_eq!(der.len(), 48);
                assert_eq!(&der[..5], &[0x30, 0x2e, 0x02, 0x01, 0x00]);
            }
        }
    }
}
