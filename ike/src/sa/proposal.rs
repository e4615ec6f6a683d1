//! SA payload proposals (RFC 7296 §2.7, §3.3): building ours from the configured suites,
//! choosing among the peer's by our own preference, and checking the peer's choice.

use crate::config::{EspSuite, IkeSuite};
use crate::iana::{DhId, EsnId, IntegId, ProtocolId, TransformType};
use crate::wire::{Proposal, Transform};

fn transforms_ike(s: &IkeSuite) -> Vec<Transform> {
    let mut t = vec![Transform::encr(s.encr, s.key_bits)];
    if s.integ != IntegId::NONE {
        t.push(Transform::integ(s.integ));
    }
    t.push(Transform::prf(s.prf));
    t.push(Transform::dh(s.dh));
    t
}

fn transforms_esp(s: &EspSuite, pfs: Option<DhId>) -> Vec<Transform> {
    let mut t = vec![Transform::encr(s.encr, s.key_bits)];
    if s.integ != IntegId::NONE {
        t.push(Transform::integ(s.integ));
    }
    if let Some(group) = pfs {
        t.push(Transform::dh(group));
    }
    t.push(Transform::esn(if s.esn {
        EsnId::ESN
    } else {
        EsnId::NO_ESN
    }));
    t
}

fn numbered(protocol: ProtocolId, spi: &[u8], sets: Vec<Vec<Transform>>) -> Vec<Proposal> {
    (1u8..)
        .zip(sets)
        .map(|(number, transforms)| Proposal {
            number,
            protocol,
            spi: spi.to_vec(),
            transforms,
        })
        .collect()
}

/// Our IKE proposals; `spi` is empty in IKE_SA_INIT and our new SPI in an IKE rekey.
pub fn ike_proposals(suites: &[IkeSuite], spi: &[u8]) -> Vec<Proposal> {
    numbered(
        ProtocolId::IKE,
        spi,
        suites.iter().map(transforms_ike).collect(),
    )
}

pub fn esp_proposals(suites: &[EspSuite], spi: u32, pfs: Option<DhId>) -> Vec<Proposal> {
    numbered(
        ProtocolId::ESP,
        &spi.to_be_bytes(),
        suites.iter().map(|s| transforms_esp(s, pfs)).collect(),
    )
}

/// Whether `offered` holds every transform in `wanted` (same type, id and key length)
/// and, for each type we want, nothing else is required of us.
fn offers(offered: &Proposal, wanted: &[Transform]) -> bool {
    wanted.iter().all(|w| {
        offered
            .transforms
            .iter()
            .any(|o| o.kind == w.kind && o.id == w.id && o.key_length() == w.key_length())
    }) && offered_types_covered(offered, wanted)
}

/// A peer's proposal with a transform type that our suite lacks (say, INTEG next to an
/// AEAD cipher, or DH where we want none) cannot be accepted without that type, except
/// for INTEG NONE and DH NONE which mean the same as their absence.
fn offered_types_covered(offered: &Proposal, wanted: &[Transform]) -> bool {
    offered.transforms.iter().all(|o| {
        wanted.iter().any(|w| w.kind == o.kind)
            || (o.kind == TransformType::INTEG && o.id == IntegId::NONE.0)
            || (o.kind == TransformType::DH && o.id == DhId::NONE.0)
    })
}

/// The chosen proposal as the responder answers it: the peer's number, our transforms.
fn answer(offered: &Proposal, transforms: Vec<Transform>, spi: Vec<u8>) -> Proposal {
    Proposal {
        number: offered.number,
        protocol: offered.protocol,
        spi,
        transforms,
    }
}

/// As responder: the first of our suites (our preference) that one of the peer's IKE
/// proposals offers. Returns the suite and the peer's proposal it came from.
pub fn choose_ike<'a>(
    ours: &[IkeSuite],
    offered: &'a [Proposal],
) -> Option<(IkeSuite, &'a Proposal)> {
    ours.iter().find_map(|s| {
        let wanted = transforms_ike(s);
        offered
            .iter()
            .find(|p| p.protocol == ProtocolId::IKE && offers(p, &wanted))
            .map(|p| (*s, p))
    })
}

/// The answer for a chosen IKE suite, carrying `spi` (empty in IKE_SA_INIT).
pub fn ike_answer(suite: &IkeSuite, offered: &Proposal, spi: Vec<u8>) -> Proposal {
    answer(offered, transforms_ike(suite), spi)
}

/// As responder: the first of our ESP suites the peer offers, with the given PFS group
/// (which the peer must offer too). Returns the suite and the peer's proposal.
pub fn choose_esp<'a>(
    ours: &[EspSuite],
    pfs: Option<DhId>,
    offered: &'a [Proposal],
) -> Option<(EspSuite, &'a Proposal)> {
    ours.iter().find_map(|s| {
        let wanted = transforms_esp(s, pfs);
        offered
            .iter()
            .find(|p| p.protocol == ProtocolId::ESP && p.spi.len() == 4 && offers(p, &wanted))
            .map(|p| (*s, p))
    })
}

pub fn esp_answer(suite: &EspSuite, pfs: Option<DhId>, offered: &Proposal, spi: u32) -> Proposal {
    answer(
        offered,
        transforms_esp(suite, pfs),
        spi.to_be_bytes().to_vec(),
    )
}

/// As initiator: the responder's single proposal must be exactly one of our suites.
pub fn accepted_ike(ours: &[IkeSuite], answer: &[Proposal]) -> Option<IkeSuite> {
    let [p] = answer else { return None };
    ours.iter()
        .find(|s| p.protocol == ProtocolId::IKE && same(&p.transforms, &transforms_ike(s)))
        .copied()
}

/// As initiator: the ESP suite the responder chose, and its SPI.
pub fn accepted_esp(
    ours: &[EspSuite],
    pfs: Option<DhId>,
    answer: &[Proposal],
) -> Option<(EspSuite, u32)> {
    let [p] = answer else { return None };
    let spi = u32::from_be_bytes(p.spi.as_slice().try_into().ok()?);
    ours.iter()
        .find(|s| p.protocol == ProtocolId::ESP && same(&p.transforms, &transforms_esp(s, pfs)))
        .map(|s| (*s, spi))
}

fn same(got: &[Transform], want: &[Transform]) -> bool {
    got.len() == want.len()
        && want.iter().all(|w| {
            got.iter()
                .any(|g| g.kind == w.kind && g.id == w.id && g.key_length() == w.key_length())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iana::{EncrId, PrfId};

    const AES: IkeSuite = IkeSuite {
        encr: EncrId::AES_GCM_16,
        key_bits: Some(256),
        integ: IntegId::NONE,
        prf: PrfId::HMAC_SHA2_256,
        dh: DhId::ECP_256,
    };

    #[test]
    fn responder_picks_by_its_own_preference() {
        let offered = ike_proposals(&[AES, IkeSuite::CHACHA_X25519], &[]);
        let (suite, p) = choose_ike(&[IkeSuite::CHACHA_X25519, AES], &offered).unwrap();
        assert_eq!(suite, IkeSuite::CHACHA_X25519);
        assert_eq!(p.number, 2);
        let reply = ike_answer(&suite, p, Vec::new());
        assert_eq!(
            accepted_ike(&[AES, IkeSuite::CHACHA_X25519], &[reply]),
            Some(suite)
        );
    }

    #[test]
    fn key_length_and_extra_types_must_match() {
        let aes128 = IkeSuite {
            key_bits: Some(128),
            ..AES
        };
        assert!(choose_ike(&[AES], &ike_proposals(&[aes128], &[])).is_none());
        let with_integ = IkeSuite {
            integ: IntegId::HMAC_SHA2_256_128,
            ..AES
        };
        assert!(choose_ike(&[AES], &ike_proposals(&[with_integ], &[])).is_none());
    }

    #[test]
    fn esp_with_pfs_needs_the_group_on_both_sides() {
        let offered = esp_proposals(&[EspSuite::CHACHA], 7, Some(DhId::CURVE25519));
        assert!(choose_esp(&[EspSuite::CHACHA], None, &offered).is_none());
        let (s, p) = choose_esp(&[EspSuite::CHACHA], Some(DhId::CURVE25519), &offered).unwrap();
        let reply = esp_answer(&s, Some(DhId::CURVE25519), p, 9);
        assert_eq!(
            accepted_esp(&[EspSuite::CHACHA], Some(DhId::CURVE25519), &[reply]),
            Some((EspSuite::CHACHA, 9))
        );
    }

    #[test]
    fn an_answer_that_is_not_ours_is_refused() {
        let reply = ike_answer(&AES, &ike_proposals(&[AES], &[])[0], Vec::new());
        assert_eq!(accepted_ike(&[IkeSuite::CHACHA_X25519], &[reply]), None);
    }
}
