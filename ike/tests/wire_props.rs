//! Property tests: every payload kind and whole messages survive emit → parse, and
//! arbitrary bytes never make a parser panic.

use iiptran_ike::iana::*;
use iiptran_ike::ts::TrafficSelector;
use iiptran_ike::wire::*;
use proptest::collection::vec;
use proptest::prelude::*;
use std::net::IpAddr;

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..max)
}

fn attribute() -> impl Strategy<Value = Attribute> {
    prop_oneof![
        (0..0x8000u16, any::<u16>()).prop_map(|(ty, value)| Attribute::Tv {
            ty: TransformAttrType(ty),
            value
        }),
        (0..0x8000u16, bytes(8)).prop_map(|(ty, value)| Attribute::Tlv {
            ty: TransformAttrType(ty),
            value
        }),
    ]
}

fn transform() -> impl Strategy<Value = Transform> {
    (any::<u8>(), any::<u16>(), vec(attribute(), 0..3)).prop_map(|(kind, id, attributes)| {
        Transform {
            kind: TransformType(kind),
            id,
            attributes,
        }
    })
}

fn proposal() -> impl Strategy<Value = Proposal> {
    let spi = prop_oneof![Just(Vec::new()), vec(any::<u8>(), 4), vec(any::<u8>(), 8)];
    (any::<u8>(), any::<u8>(), spi, vec(transform(), 0..6)).prop_map(
        |(number, protocol, spi, transforms)| Proposal {
            number,
            protocol: ProtocolId(protocol),
            spi,
            transforms,
        },
    )
}

fn selector() -> impl Strategy<Value = TrafficSelector> {
    let v4 =
        (any::<[u8; 4]>(), any::<[u8; 4]>()).prop_map(|(a, b)| (IpAddr::from(a), IpAddr::from(b)));
    let v6 = (any::<[u8; 16]>(), any::<[u8; 16]>())
        .prop_map(|(a, b)| (IpAddr::from(a), IpAddr::from(b)));
    (any::<u8>(), any::<u16>(), any::<u16>(), prop_oneof![v4, v6]).prop_map(
        |(ip_protocol, start_port, end_port, (start_addr, end_addr))| TrafficSelector {
            ip_protocol,
            start_port,
            end_port,
            start_addr,
            end_addr,
        },
    )
}

fn notify() -> impl Strategy<Value = Notify> {
    let spi = prop_oneof![Just(Vec::new()), vec(any::<u8>(), 4), vec(any::<u8>(), 8)];
    (any::<u8>(), spi, any::<u16>(), bytes(32)).prop_map(|(protocol, spi, kind, data)| Notify {
        protocol: ProtocolId(protocol),
        spi,
        kind: NotifyType(kind),
        data,
    })
}

fn config() -> impl Strategy<Value = Config> {
    let attr = (0..0x8000u16, bytes(16)).prop_map(|(ty, value)| ConfigAttribute {
        ty: CfgAttrType(ty),
        value,
    });
    (any::<u8>(), vec(attr, 0..4)).prop_map(|(kind, attributes)| Config {
        kind: CfgType(kind),
        attributes,
    })
}

/// Types the wire module does not parse (EAP among them).
fn unknown() -> impl Strategy<Value = Unknown> {
    let known = |t: &u8| *t == 0 || (33..=47).contains(t) || *t == 53;
    (
        any::<u8>().prop_filter("known type", move |t| !known(t)),
        bytes(32),
    )
        .prop_map(|(ty, body)| Unknown {
            ty: PayloadType(ty),
            body,
        })
}

fn sa() -> impl Strategy<Value = Payload> {
    vec(proposal(), 1..4).prop_map(Payload::Sa)
}

fn ke() -> impl Strategy<Value = Payload> {
    (any::<u16>(), bytes(64)).prop_map(|(g, data)| {
        Payload::Ke(KeyExchange {
            group: DhId(g),
            data,
        })
    })
}

fn id() -> impl Strategy<Value = Identification> {
    (any::<u8>(), bytes(32)).prop_map(|(t, data)| Identification {
        id_type: IdType(t),
        data,
    })
}

fn cert() -> impl Strategy<Value = Certificate> {
    (any::<u8>(), bytes(64)).prop_map(|(e, data)| Certificate {
        encoding: CertEncoding(e),
        data,
    })
}

fn auth() -> impl Strategy<Value = Payload> {
    (any::<u8>(), bytes(64)).prop_map(|(m, data)| {
        Payload::Auth(Authentication {
            method: AuthMethod(m),
            data,
        })
    })
}

fn delete() -> impl Strategy<Value = Payload> {
    (any::<u8>(), vec(any::<u32>(), 0..5)).prop_map(|(p, spis)| {
        Payload::Delete(Delete {
            protocol: ProtocolId(p),
            spis,
        })
    })
}

/// Any payload that may appear inside SK.
fn inner_payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        sa(),
        ke(),
        id().prop_map(Payload::IdI),
        id().prop_map(Payload::IdR),
        cert().prop_map(Payload::Cert),
        cert().prop_map(Payload::CertReq),
        auth(),
        bytes(64).prop_map(Payload::Nonce),
        notify().prop_map(Payload::Notify),
        delete(),
        bytes(32).prop_map(Payload::VendorId),
        vec(selector(), 0..4).prop_map(Payload::TsI),
        vec(selector(), 0..4).prop_map(Payload::TsR),
        config().prop_map(Payload::Config),
        unknown().prop_map(Payload::Unknown),
    ]
}

fn encrypted_payload() -> impl Strategy<Value = Payload> {
    let position = (1..=u16::MAX).prop_flat_map(|total| {
        (1..=total).prop_map(move |number| FragmentPosition { number, total })
    });
    prop_oneof![
        (any::<u8>(), bytes(64)).prop_map(|(first, body)| Payload::Encrypted(Encrypted {
            first: PayloadType(first),
            body
        })),
        (any::<u8>(), position, bytes(64)).prop_map(|(first, position, body)| {
            Payload::Fragment(Fragment {
                first: PayloadType(first),
                position,
                body,
            })
        }),
    ]
}

fn header() -> impl Strategy<Value = Header> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<u8>(),
        any::<bool>(),
        any::<bool>(),
        any::<u32>(),
    )
        .prop_map(
            |(spi_i, spi_r, exchange, initiator, response, message_id)| Header {
                spi_i,
                spi_r,
                exchange: ExchangeType(exchange),
                initiator,
                response,
                message_id,
            },
        )
}

fn message() -> impl Strategy<Value = Message> {
    (
        header(),
        vec(inner_payload(), 0..6),
        proptest::option::of(encrypted_payload()),
    )
        .prop_map(|(header, mut payloads, encrypted)| {
            payloads.extend(encrypted);
            Message { header, payloads }
        })
}

fn chain_round_trip(payload: Payload) -> Result<(), TestCaseError> {
    let mut bytes = Vec::new();
    emit_chain(std::slice::from_ref(&payload), &mut bytes).unwrap();
    let parsed = parse_chain(payload.kind(), &bytes).unwrap();
    prop_assert_eq!(parsed, vec![payload]);
    Ok(())
}

macro_rules! payload_round_trips {
    ($($name:ident: $strategy:expr,)*) => {
        proptest! {
            $(
                #[test]
                fn $name(payload in $strategy) {
                    chain_round_trip(payload)?;
                }
            )*
        }
    };
}

payload_round_trips! {
    sa_round_trips: sa(),
    ke_round_trips: ke(),
    id_i_round_trips: id().prop_map(Payload::IdI),
    id_r_round_trips: id().prop_map(Payload::IdR),
    cert_round_trips: cert().prop_map(Payload::Cert),
    certreq_round_trips: cert().prop_map(Payload::CertReq),
    auth_round_trips: auth(),
    nonce_round_trips: bytes(256).prop_map(Payload::Nonce),
    notify_round_trips: notify().prop_map(Payload::Notify),
    delete_round_trips: delete(),
    vendor_id_round_trips: bytes(32).prop_map(Payload::VendorId),
    ts_i_round_trips: vec(selector(), 0..8).prop_map(Payload::TsI),
    ts_r_round_trips: vec(selector(), 0..8).prop_map(Payload::TsR),
    config_round_trips: config().prop_map(Payload::Config),
    unknown_round_trips: unknown().prop_map(Payload::Unknown),
}

proptest! {
    #[test]
    fn encrypted_payloads_round_trip_as_last_payload(
        header in header(),
        payload in encrypted_payload(),
    ) {
        let message = Message { header, payloads: vec![payload] };
        let bytes = message.emit().unwrap();
        let parsed = Datagram::parse(&bytes).unwrap();
        let protected = parsed.protected.unwrap();
        prop_assert_eq!(protected.aad.len() + protected.body.len(), bytes.len());
        prop_assert_eq!(parsed.message, message);
    }

    #[test]
    fn messages_round_trip(message in message()) {
        let bytes = message.emit().unwrap();
        prop_assert_eq!(Message::parse(&bytes).unwrap(), message);
    }

    #[test]
    fn chains_round_trip(payloads in vec(inner_payload(), 0..8)) {
        let mut bytes = Vec::new();
        emit_chain(&payloads, &mut bytes).unwrap();
        let first = payloads.first().map_or(PayloadType::NONE, Payload::kind);
        prop_assert_eq!(parse_chain(first, &bytes).unwrap(), payloads);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in bytes(600), first in any::<u8>()) {
        let _ = Datagram::parse(&data);
        let _ = parse_chain(PayloadType(first), &data);
        iiptran_ike::wire::fuzz::ike_message(&data);
    }

    /// Random bytes rarely get past the header; a valid message with corrupted bytes
    /// reaches every payload parser.
    #[test]
    fn corrupted_messages_never_panic(
        message in message(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut bytes = message.emit().unwrap();
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        iiptran_ike::wire::fuzz::ike_message(&bytes);
    }
}
