//! Messages and a toy cipher shared by the wire tests.
#![allow(dead_code)] // each test crate uses a different part

use iiptran_ike::iana::*;
use iiptran_ike::ts::TrafficSelector;
use iiptran_ike::wire::*;
use std::net::{IpAddr, Ipv4Addr};

pub fn sa_init_header() -> Header {
    Header {
        spi_i: 0x0011_2233_4455_6677,
        spi_r: 0,
        exchange: ExchangeType::IKE_SA_INIT,
        initiator: true,
        response: false,
        message_id: 0,
    }
}

pub fn auth_header() -> Header {
    Header {
        spi_r: 0x8899_aabb_ccdd_eeff,
        exchange: ExchangeType::IKE_AUTH,
        message_id: 1,
        ..sa_init_header()
    }
}

/// IKE_SA_INIT request in the shape strongSwan sends it.
pub fn sa_init_request() -> Message {
    let ike_proposal = |number, transforms| Proposal {
        number,
        protocol: ProtocolId::IKE,
        spi: Vec::new(),
        transforms,
    };
    let sig_hash: Vec<u8> = [
        HashAlgorithm::SHA2_256,
        HashAlgorithm::SHA2_384,
        HashAlgorithm::SHA2_512,
        HashAlgorithm::IDENTITY,
    ]
    .iter()
    .flat_map(|h| h.0.to_be_bytes())
    .collect();
    Message {
        header: sa_init_header(),
        payloads: vec![
            Payload::Sa(vec![
                ike_proposal(
                    1,
                    vec![
                        Transform::encr(EncrId::AES_CBC, Some(256)),
                        Transform::integ(IntegId::HMAC_SHA2_256_128),
                        Transform::prf(PrfId::HMAC_SHA2_256),
                        Transform::dh(DhId::CURVE25519),
                    ],
                ),
                ike_proposal(
                    2,
                    vec![
                        Transform::encr(EncrId::AES_GCM_16, Some(256)),
                        Transform::prf(PrfId::HMAC_SHA2_256),
                        Transform::dh(DhId::CURVE25519),
                    ],
                ),
            ]),
            Payload::Ke(KeyExchange {
                group: DhId::CURVE25519,
                data: (1..=32).collect(),
            }),
            Payload::Nonce((0x40..0x60).collect()),
            Payload::Notify(Notify::new(
                NotifyType::NAT_DETECTION_SOURCE_IP,
                vec![0xa1; 20],
            )),
            Payload::Notify(Notify::new(
                NotifyType::NAT_DETECTION_DESTINATION_IP,
                vec![0xb2; 20],
            )),
            Payload::Notify(Notify::new(
                NotifyType::IKEV2_FRAGMENTATION_SUPPORTED,
                Vec::new(),
            )),
            Payload::Notify(Notify::new(NotifyType::SIGNATURE_HASH_ALGORITHMS, sig_hash)),
        ],
    }
}

pub fn host_selector(last_octet: u8) -> TrafficSelector {
    let addr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, last_octet));
    TrafficSelector {
        ip_protocol: 4,
        start_port: 0,
        end_port: 0xffff,
        start_addr: addr,
        end_addr: addr,
    }
}

/// The inner payloads of an IKE_AUTH request creating an IIPtran child SA.
pub fn auth_inner() -> Vec<Payload> {
    vec![
        Payload::IdI(Identification {
            id_type: IdType::FQDN,
            data: b"a.example".to_vec(),
        }),
        Payload::Auth(Authentication {
            method: AuthMethod::DIGITAL_SIGNATURE,
            data: vec![0xaa; 8],
        }),
        Payload::Sa(vec![Proposal {
            number: 1,
            protocol: ProtocolId::ESP,
            spi: vec![0xc0, 0xff, 0xee, 0x01],
            transforms: vec![
                Transform::encr(EncrId::AES_GCM_16, Some(256)),
                Transform::esn(EsnId::NO_ESN),
            ],
        }]),
        Payload::TsI(vec![host_selector(1)]),
        Payload::TsR(vec![host_selector(2)]),
    ]
}

/// A toy AEAD shape: 8-byte zero "IV", XOR-ed plaintext, 4-byte "ICV" over aad and body.
pub const TOY_OVERHEAD: usize = 12;

pub fn toy_sealed_len(plaintext_len: usize) -> usize {
    plaintext_len + TOY_OVERHEAD
}

fn toy_icv(aad: &[u8], ciphertext: &[u8]) -> [u8; 4] {
    let sum = aad
        .iter()
        .chain(ciphertext)
        .fold(0u32, |acc, &b| acc.rotate_left(5) ^ u32::from(b));
    sum.to_be_bytes()
}

pub fn toy_seal(aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut body = vec![0; 8];
    body.extend(plaintext.iter().map(|b| b ^ 0x5a));
    let icv = toy_icv(aad, &body[8..]);
    body.extend_from_slice(&icv);
    body
}

pub fn toy_open(aad: &[u8], body: &[u8]) -> Option<Vec<u8>> {
    let ciphertext = body.get(8..body.len().checked_sub(4)?)?;
    let icv = body.get(body.len() - 4..)?;
    (toy_icv(aad, ciphertext) == icv).then(|| ciphertext.iter().map(|b| b ^ 0x5a).collect())
}

/// Valid datagrams of every shape, named; their encrypted bodies are left in the clear
/// (identity "cipher") so that fuzzing reaches the inner payload parsers.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let identity = |_: &[u8], plaintext: &[u8]| plaintext.to_vec();
    let informational = Header {
        exchange: ExchangeType::INFORMATIONAL,
        message_id: 2,
        ..auth_header()
    };
    let other_inner = vec![
        Payload::Delete(Delete {
            protocol: ProtocolId::ESP,
            spis: vec![0xc0ff_ee01, 0xc0ff_ee02],
        }),
        Payload::Notify(Notify {
            protocol: ProtocolId::ESP,
            spi: vec![1, 2, 3, 4],
            kind: NotifyType::REKEY_SA,
            data: Vec::new(),
        }),
        Payload::Config(Config {
            kind: CfgType::CFG_REQUEST,
            attributes: vec![ConfigAttribute {
                ty: CfgAttrType::INTERNAL_IP4_ADDRESS,
                value: Vec::new(),
            }],
        }),
        Payload::Cert(Certificate {
            encoding: CertEncoding::X509_SIGNATURE,
            data: vec![0x30, 0x03, 0x02, 0x01, 0x00],
        }),
        Payload::CertReq(Certificate {
            encoding: CertEncoding::X509_SIGNATURE,
            data: vec![0x11; 20],
        }),
        Payload::VendorId(b"iiptran".to_vec()),
        Payload::Unknown(Unknown {
            ty: PayloadType(200),
            body: vec![1, 2, 3],
        }),
        Payload::Delete(Delete {
            protocol: ProtocolId::IKE,
            spis: Vec::new(),
        }),
    ];
    let mut seeds = vec![
        ("sa_init_request", sa_init_request().emit().unwrap()),
        (
            "ike_auth_sk",
            emit_encrypted(&auth_header(), &auth_inner(), |n| n, identity).unwrap(),
        ),
        (
            "informational_sk",
            emit_encrypted(&informational, &other_inner, |n| n, identity).unwrap(),
        ),
        (
            "informational_plain",
            Message {
                header: informational,
                payloads: other_inner,
            }
            .emit()
            .unwrap(),
        ),
    ];
    let fragments = emit_fragments(&auth_header(), &auth_inner(), 90, |n| n, identity).unwrap();
    for (name, datagram) in ["ike_auth_skf_1", "ike_auth_skf_2"]
        .into_iter()
        .zip(fragments)
    {
        seeds.push((name, datagram));
    }
    seeds
}
