//! Unit tests of the RFC rules the wire format enforces: critical bit, lengths, version,
//! encrypted payload placement, SK/SKF emission and fragment reassembly.

mod wire_common;

use iiptran_ike::iana::{NotifyType, PayloadType};
use iiptran_ike::wire::*;
use std::time::{Duration, Instant};
use wire_common::*;

/// Offset of the first payload's flags byte (critical bit) in a datagram.
const FIRST_PAYLOAD_FLAGS: usize = HEADER_LEN + 1;
const LENGTH_FIELD: std::ops::Range<usize> = 24..28;

fn with_unknown_first(ty: u8) -> Vec<u8> {
    Message {
        header: sa_init_header(),
        payloads: vec![
            Payload::Unknown(Unknown {
                ty: PayloadType(ty),
                body: vec![9; 5],
            }),
            Payload::Nonce(vec![7; 16]),
        ],
    }
    .emit()
    .unwrap()
}

fn set_length(bytes: &mut [u8], length: usize) {
    bytes[LENGTH_FIELD].copy_from_slice(&u32::try_from(length).unwrap().to_be_bytes());
}

#[test]
fn unknown_payload_without_critical_bit_is_kept() {
    let bytes = with_unknown_first(200);
    let message = Message::parse(&bytes).unwrap();
    assert_eq!(
        message.payloads[0],
        Payload::Unknown(Unknown {
            ty: PayloadType(200),
            body: vec![9; 5]
        })
    );
    assert_eq!(message.payloads[1], Payload::Nonce(vec![7; 16]));
}

#[test]
fn unknown_payload_with_critical_bit_is_refused_with_its_type() {
    let mut bytes = with_unknown_first(200);
    bytes[FIRST_PAYLOAD_FLAGS] |= 0x80;
    assert_eq!(
        Message::parse(&bytes),
        Err(Error::UnsupportedCritical(PayloadType(200)))
    );
}

#[test]
fn known_payload_with_critical_bit_is_parsed() {
    let mut bytes = sa_init_request().emit().unwrap();
    bytes[FIRST_PAYLOAD_FLAGS] |= 0x80;
    assert_eq!(Message::parse(&bytes).unwrap(), sa_init_request());
}

#[test]
fn length_field_must_equal_datagram_length() {
    let bytes = sa_init_request().emit().unwrap();
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(
        Message::parse(&longer),
        Err(Error::LengthMismatch {
            field: bytes.len() as u32,
            actual: longer.len()
        })
    );
    let mut wrong_field = bytes.clone();
    set_length(&mut wrong_field, bytes.len() + 1);
    assert!(matches!(
        Message::parse(&wrong_field),
        Err(Error::LengthMismatch { .. })
    ));
    assert_eq!(
        Message::parse(&bytes[..20]),
        Err(Error::TruncatedHeader(20))
    );
}

#[test]
fn payload_lengths_must_fit_and_fill_the_message() {
    let bytes = with_unknown_first(200);
    let first_len = HEADER_LEN + 2..HEADER_LEN + 4;

    let mut too_long = bytes.clone();
    too_long[first_len.clone()].copy_from_slice(&0x0400u16.to_be_bytes());
    assert!(matches!(
        Message::parse(&too_long),
        Err(Error::PayloadLength { length: 0x400, .. })
    ));

    let mut below_header = bytes.clone();
    below_header[first_len].copy_from_slice(&3u16.to_be_bytes());
    assert!(matches!(
        Message::parse(&below_header),
        Err(Error::PayloadLength { length: 3, .. })
    ));

    let mut trailing = bytes.clone();
    trailing.extend_from_slice(&[0; 3]);
    set_length(&mut trailing, bytes.len() + 3);
    assert_eq!(Message::parse(&trailing), Err(Error::TrailingBytes(3)));
}

#[test]
fn other_major_versions_are_refused_with_the_header() {
    let mut bytes = sa_init_request().emit().unwrap();
    bytes[17] = 0x10;
    assert_eq!(
        Message::parse(&bytes),
        Err(Error::UnsupportedVersion {
            major: 1,
            header: sa_init_header()
        })
    );
    bytes[17] = 0x21;
    assert_eq!(Message::parse(&bytes).unwrap(), sa_init_request());
}

#[test]
fn malformed_payload_names_its_type() {
    let message = Message {
        header: sa_init_header(),
        payloads: vec![Payload::Notify(Notify {
            protocol: iiptran_ike::iana::ProtocolId::ESP,
            spi: vec![1, 2, 3, 4],
            kind: NotifyType::REKEY_SA,
            data: Vec::new(),
        })],
    };
    let mut bytes = message.emit().unwrap();
    bytes[HEADER_LEN + 5] = 3; // SPI size
    assert!(matches!(
        Message::parse(&bytes),
        Err(Error::Malformed {
            ty: PayloadType::NOTIFY,
            ..
        })
    ));
}

#[test]
fn encrypted_payload_must_be_last() {
    let inner = Payload::Encrypted(Encrypted {
        first: PayloadType::IDI,
        body: vec![1; 10],
    });
    let message = Message {
        header: auth_header(),
        payloads: vec![inner.clone(), Payload::Nonce(vec![2; 16])],
    };
    assert_eq!(
        message.emit(),
        Err(Error::EncryptedNotLast(PayloadType::SK))
    );
    // Shorten the SK length so that bytes remain after it.
    let mut bytes = Message {
        header: auth_header(),
        payloads: vec![inner],
    }
    .emit()
    .unwrap();
    bytes[HEADER_LEN + 3] -= 4;
    assert_eq!(
        Message::parse(&bytes),
        Err(Error::EncryptedNotLast(PayloadType::SK))
    );
}

#[test]
fn inner_chain_refuses_nested_encryption() {
    let mut bytes = Vec::new();
    emit_chain(
        &[Payload::Encrypted(Encrypted {
            first: PayloadType::NONE,
            body: vec![0; 4],
        })],
        &mut bytes,
    )
    .unwrap();
    assert_eq!(
        parse_chain(PayloadType::SK, &bytes),
        Err(Error::NestedEncrypted(PayloadType::SK))
    );
}

#[test]
fn encrypted_message_seals_final_lengths_and_opens() {
    let mut seen_aad = Vec::new();
    let bytes = emit_encrypted(&auth_header(), &auth_inner(), toy_sealed_len, |aad, pt| {
        seen_aad = aad.to_vec();
        toy_seal(aad, pt)
    })
    .unwrap();
    // The AAD the cipher saw is the datagram's prefix, with final lengths in it.
    assert_eq!(&bytes[..seen_aad.len()], &seen_aad[..]);
    assert_eq!(seen_aad.len(), HEADER_LEN + 4);
    let parsed = Datagram::parse(&bytes).unwrap();
    let protected = parsed.protected.unwrap();
    assert_eq!(protected.aad, &seen_aad[..]);
    assert_eq!(protected.first, PayloadType::IDI);
    assert_eq!(protected.fragment, None);
    assert_eq!(parsed.message.header, auth_header());
    let plaintext = toy_open(protected.aad, protected.body).unwrap();
    assert_eq!(
        parse_chain(protected.first, &plaintext).unwrap(),
        auth_inner()
    );

    let mut tampered = bytes.clone();
    tampered[20] ^= 1; // the message id is part of the associated data
    let protected = Datagram::parse(&tampered).unwrap().protected.unwrap();
    assert_eq!(toy_open(protected.aad, protected.body), None);
}

#[test]
fn sealed_body_must_have_the_announced_length() {
    let result = emit_encrypted(&auth_header(), &auth_inner(), toy_sealed_len, |_, pt| {
        pt.to_vec()
    });
    let plaintext_len = {
        let mut v = Vec::new();
        emit_chain(&auth_inner(), &mut v).unwrap();
        v.len()
    };
    assert_eq!(
        result,
        Err(Error::SealedLength {
            expected: plaintext_len + TOY_OVERHEAD,
            actual: plaintext_len
        })
    );
}

const LIMITS: ReassemblyLimits = ReassemblyLimits {
    max_fragments: 16,
    max_bytes: 4096,
};

struct Opened {
    position: FragmentPosition,
    first: PayloadType,
    plaintext: Vec<u8>,
}

fn fragments(max_datagram: usize) -> Vec<Opened> {
    let datagrams = emit_fragments(
        &auth_header(),
        &auth_inner(),
        max_datagram,
        toy_sealed_len,
        toy_seal,
    )
    .unwrap();
    datagrams
        .iter()
        .map(|d| {
            assert!(d.len() <= max_datagram, "{} > {max_datagram}", d.len());
            let parsed = Datagram::parse(d).unwrap();
            assert_eq!(parsed.message.header, auth_header());
            let p = parsed.protected.unwrap();
            Opened {
                position: p.fragment.unwrap(),
                first: p.first,
                plaintext: toy_open(p.aad, p.body).unwrap(),
            }
        })
        .collect()
}

fn inner_plaintext() -> Vec<u8> {
    let mut v = Vec::new();
    emit_chain(&auth_inner(), &mut v).unwrap();
    v
}

#[test]
fn fragments_fit_the_datagram_and_carry_positions() {
    let frags = fragments(80);
    let total = u16::try_from(frags.len()).unwrap();
    assert!(total > 3);
    for (i, f) in frags.iter().enumerate() {
        let number = u16::try_from(i + 1).unwrap();
        assert_eq!(f.position, FragmentPosition { number, total });
        let expected_first = if number == 1 {
            PayloadType::IDI
        } else {
            PayloadType::NONE
        };
        assert_eq!(f.first, expected_first);
    }
    let joined: Vec<u8> = frags.iter().flat_map(|f| f.plaintext.clone()).collect();
    assert_eq!(joined, inner_plaintext());
}

#[test]
fn too_small_datagram_cannot_carry_a_fragment() {
    let overhead = HEADER_LEN + 8 + TOY_OVERHEAD;
    let result = emit_fragments(
        &auth_header(),
        &auth_inner(),
        overhead,
        toy_sealed_len,
        toy_seal,
    );
    assert_eq!(result, Err(Error::NoRoomForFragment(overhead)));
    assert!(
        emit_fragments(
            &auth_header(),
            &auth_inner(),
            overhead + 1,
            toy_sealed_len,
            toy_seal
        )
        .is_ok()
    );
}

fn insert(r: &mut Reassembly, f: &Opened) -> Result<Progress, FragmentError> {
    r.insert(f.position, f.first, f.plaintext.clone())
}

#[test]
fn reassembly_out_of_order_with_duplicates() {
    let frags = fragments(80);
    let now = Instant::now();
    let mut r = Reassembly::new(LIMITS, now);
    let mut order: Vec<usize> = (0..frags.len()).rev().collect();
    order.rotate_left(1); // last fragment is fragment 1: completes last
    let (last, rest) = order.split_last().unwrap();
    for &i in rest {
        assert_eq!(insert(&mut r, &frags[i]), Ok(Progress::Incomplete));
        assert_eq!(insert(&mut r, &frags[i]), Ok(Progress::Duplicate));
    }
    assert_eq!(r.started(), now);
    assert_eq!(
        insert(&mut r, &frags[*last]),
        Ok(Progress::Complete {
            first: PayloadType::IDI,
            plaintext: inner_plaintext()
        })
    );
}

#[test]
fn reassembly_waits_for_a_lost_fragment() {
    let frags = fragments(80);
    let mut r = Reassembly::new(LIMITS, Instant::now());
    for f in frags.iter().skip(1) {
        assert_eq!(insert(&mut r, f), Ok(Progress::Incomplete));
    }
    // The retransmission of the lost fragment completes the message.
    assert!(matches!(
        insert(&mut r, &frags[0]),
        Ok(Progress::Complete { .. })
    ));
}

#[test]
fn reassembly_restarts_on_more_fragments_and_drops_stale_ones() {
    let coarse = fragments(120);
    let fine = fragments(80);
    assert!(fine.len() > coarse.len());
    let mut r = Reassembly::new(LIMITS, Instant::now() + Duration::from_secs(1));
    assert_eq!(insert(&mut r, &coarse[0]), Ok(Progress::Incomplete));
    // The sender re-fragmented smaller: everything held so far is discarded.
    for f in fine.iter().skip(1) {
        assert_eq!(insert(&mut r, f), Ok(Progress::Incomplete));
    }
    let current = fine[0].position.total;
    assert_eq!(
        insert(&mut r, &coarse[1]),
        Err(FragmentError::Stale {
            total: coarse[1].position.total,
            current
        })
    );
    assert_eq!(
        insert(&mut r, &fine[0]),
        Ok(Progress::Complete {
            first: PayloadType::IDI,
            plaintext: inner_plaintext()
        })
    );
}

#[test]
fn reassembly_enforces_limits() {
    let mut r = Reassembly::new(LIMITS, Instant::now());
    let pos = |number, total| FragmentPosition { number, total };
    assert_eq!(
        r.insert(pos(0, 2), PayloadType::NONE, vec![1]),
        Err(FragmentError::Position {
            number: 0,
            total: 2
        })
    );
    assert_eq!(
        r.insert(pos(3, 2), PayloadType::NONE, vec![1]),
        Err(FragmentError::Position {
            number: 3,
            total: 2
        })
    );
    assert_eq!(
        r.insert(pos(1, 17), PayloadType::NONE, vec![1]),
        Err(FragmentError::TooManyFragments(17))
    );
    assert_eq!(
        r.insert(pos(1, 3), PayloadType::IDI, vec![0; 4000]),
        Ok(Progress::Incomplete)
    );
    assert_eq!(
        r.insert(pos(2, 3), PayloadType::NONE, vec![0; 97]),
        Err(FragmentError::TooLarge(4096))
    );
    assert_eq!(
        r.insert(pos(2, 3), PayloadType::NONE, vec![0; 96]),
        Ok(Progress::Incomplete)
    );
}

#[test]
fn unknown_payload_may_not_claim_a_type_we_parse() {
    for ty in [PayloadType::NONE, PayloadType::NONCE, PayloadType::SK] {
        let mut out = Vec::new();
        let unknown = Payload::Unknown(Unknown { ty, body: vec![1] });
        assert!(
            matches!(
                emit_chain(&[unknown], &mut out),
                Err(Error::Unencodable { ty: t, .. }) if t == ty
            ),
            "{ty}"
        );
    }
}

#[test]
fn associated_data_covers_payloads_before_sk() {
    let message = Message {
        header: auth_header(),
        payloads: vec![
            Payload::VendorId(b"iiptran".to_vec()),
            Payload::Encrypted(Encrypted {
                first: PayloadType::IDI,
                body: vec![0xee; 24],
            }),
        ],
    };
    let bytes = message.emit().unwrap();
    let protected = Datagram::parse(&bytes).unwrap().protected.unwrap();
    let vendor_id_len = 4 + b"iiptran".len();
    assert_eq!(protected.aad, &bytes[..HEADER_LEN + vendor_id_len + 4]);
    assert_eq!(protected.body, &[0xee; 24][..]);
    assert_eq!(protected.first, PayloadType::IDI);
}
