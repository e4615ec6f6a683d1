//! Security Association payload: proposals, transforms, attributes (RFC 7296 §3.3).
//!
//! Proposal:  last(1) reserved(1) length(2) number(1) protocol(1) spi_size(1)
//!            transform_count(1) spi(spi_size) transforms
//! Transform: last(1) reserved(1) length(2) type(1) reserved(1) id(2) attributes
//! Attribute: AF|type(2) then value(2) if AF, else length(2) value(length)

use super::cursor::{Reader, Reason, count, patch_u16_len};
use crate::iana::{
    DhId, EncrId, EsnId, IntegId, PrfId, ProtocolId, TransformAttrType, TransformType,
};

const PROPOSAL_HEADER_LEN: usize = 8;
const TRANSFORM_HEADER_LEN: usize = 8;
/// Offset of the length field in both substructure headers.
const SUBSTRUCTURE_LENGTH_AT: usize = 2;
const MORE_PROPOSALS: u8 = 2;
const MORE_TRANSFORMS: u8 = 3;
const LAST: u8 = 0;
const ATTR_FORMAT_TV: u16 = 0x8000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    pub number: u8,
    pub protocol: ProtocolId,
    /// Empty in IKE SA proposals of IKE_SA_INIT, the 8-byte IKE SPI when rekeying an IKE
    /// SA, the 4-byte SPI for AH/ESP.
    pub spi: Vec<u8>,
    pub transforms: Vec<Transform>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transform {
    pub kind: TransformType,
    /// Interpreted through the registry of `kind` (EncrId, PrfId, ...).
    pub id: u16,
    pub attributes: Vec<Attribute>,
}

/// A transform attribute, in the format it arrived in so unknown ones survive re-emission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attribute {
    /// Type/value (AF = 1), e.g. KEY_LENGTH.
    Tv { ty: TransformAttrType, value: u16 },
    /// Type/length/value (AF = 0).
    Tlv {
        ty: TransformAttrType,
        value: Vec<u8>,
    },
}

impl Transform {
    fn new(kind: TransformType, id: u16) -> Self {
        Self {
            kind,
            id,
            attributes: Vec::new(),
        }
    }

    /// An encryption transform; `key_bits` adds the KEY_LENGTH attribute (AES needs it).
    pub fn encr(id: EncrId, key_bits: Option<u16>) -> Self {
        let mut t = Self::new(TransformType::ENCR, id.0);
        if let Some(bits) = key_bits {
            t.attributes.push(Attribute::Tv {
                ty: TransformAttrType::KEY_LENGTH,
                value: bits,
            });
        }
        t
    }

    pub fn prf(id: PrfId) -> Self {
        Self::new(TransformType::PRF, id.0)
    }

    pub fn integ(id: IntegId) -> Self {
        Self::new(TransformType::INTEG, id.0)
    }

    pub fn dh(id: DhId) -> Self {
        Self::new(TransformType::DH, id.0)
    }

    pub fn esn(id: EsnId) -> Self {
        Self::new(TransformType::ESN, id.0)
    }

    /// The KEY_LENGTH attribute in bits, if present.
    pub fn key_length(&self) -> Option<u16> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::Tv { ty, value } if *ty == TransformAttrType::KEY_LENGTH => Some(*value),
            _ => None,
        })
    }
}

pub(super) fn parse(body: &[u8]) -> Result<Vec<Proposal>, Reason> {
    let mut r = Reader::new(body);
    let mut proposals = Vec::new();
    // The length fields delimit the substructures; the "last" markers add nothing.
    while !r.is_empty() {
        let _last = r.u8()?;
        let _reserved = r.u8()?;
        let length = r.u16()?;
        let mut p = r.nested(length, 4)?;
        let number = p.u8()?;
        let protocol = ProtocolId(p.u8()?);
        let spi_size = p.u8()?;
        let transform_count = p.u8()?;
        let spi = p.take(usize::from(spi_size))?.to_vec();
        let mut transforms = Vec::new();
        while !p.is_empty() {
            transforms.push(parse_transform(&mut p)?);
        }
        if transforms.len() != usize::from(transform_count) {
            return Err("transform count does not match the transforms present");
        }
        proposals.push(Proposal {
            number,
            protocol,
            spi,
            transforms,
        });
    }
    if proposals.is_empty() {
        return Err("no proposals");
    }
    Ok(proposals)
}

fn parse_transform(r: &mut Reader<'_>) -> Result<Transform, Reason> {
    let _last = r.u8()?;
    let _reserved = r.u8()?;
    let length = r.u16()?;
    let mut t = r.nested(length, 4)?;
    let kind = TransformType(t.u8()?);
    let _reserved = t.u8()?;
    let id = t.u16()?;
    let mut attributes = Vec::new();
    while !t.is_empty() {
        let word = t.u16()?;
        let ty = TransformAttrType(word & !ATTR_FORMAT_TV);
        attributes.push(if word & ATTR_FORMAT_TV != 0 {
            Attribute::Tv {
                ty,
                value: t.u16()?,
            }
        } else {
            let len = t.u16()?;
            Attribute::Tlv {
                ty,
                value: t.take(usize::from(len))?.to_vec(),
            }
        });
    }
    Ok(Transform {
        kind,
        id,
        attributes,
    })
}

pub(super) fn emit(proposals: &[Proposal], out: &mut Vec<u8>) -> Result<(), Reason> {
    if proposals.is_empty() {
        return Err("no proposals");
    }
    for (i, p) in proposals.iter().enumerate() {
        let start = out.len();
        let last = if i + 1 == proposals.len() {
            LAST
        } else {
            MORE_PROPOSALS
        };
        out.extend_from_slice(&[last, 0, 0, 0, p.number, p.protocol.0]);
        out.push(count(p.spi.len())?);
        out.push(count(p.transforms.len())?);
        out.extend_from_slice(&p.spi);
        debug_assert_eq!(out.len() - start, PROPOSAL_HEADER_LEN + p.spi.len());
        for (j, t) in p.transforms.iter().enumerate() {
            let last = if j + 1 == p.transforms.len() {
                LAST
            } else {
                MORE_TRANSFORMS
            };
            emit_transform(t, last, out)?;
        }
        patch_u16_len(out, start, start + SUBSTRUCTURE_LENGTH_AT)?;
    }
    Ok(())
}

fn emit_transform(t: &Transform, last: u8, out: &mut Vec<u8>) -> Result<(), Reason> {
    let start = out.len();
    out.extend_from_slice(&[last, 0, 0, 0, t.kind.0, 0]);
    out.extend_from_slice(&t.id.to_be_bytes());
    debug_assert_eq!(out.len() - start, TRANSFORM_HEADER_LEN);
    for a in &t.attributes {
        let (Attribute::Tv { ty, .. } | Attribute::Tlv { ty, .. }) = a;
        if ty.0 & ATTR_FORMAT_TV != 0 {
            return Err("attribute type above 15 bits");
        }
        match a {
            Attribute::Tv { ty, value } => {
                out.extend_from_slice(&(ty.0 | ATTR_FORMAT_TV).to_be_bytes());
                out.extend_from_slice(&value.to_be_bytes());
            }
            Attribute::Tlv { ty, value } => {
                out.extend_from_slice(&ty.0.to_be_bytes());
                out.extend_from_slice(&count::<u16>(value.len())?.to_be_bytes());
                out.extend_from_slice(value);
            }
        }
    }
    patch_u16_len(out, start, start + SUBSTRUCTURE_LENGTH_AT)
}
