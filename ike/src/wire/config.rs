//! Configuration payload CP (RFC 7296 §3.15).
//!
//! Payload:   cfg_type(1) reserved(3) attributes
//! Attribute: R|type(2) length(2) value(length)

use super::cursor::{Reader, Reason, count};
use crate::iana::{CfgAttrType, CfgType};

const PAYLOAD_RESERVED: usize = 3;
const ATTR_TYPE_MASK: u16 = 0x7fff;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub kind: CfgType,
    pub attributes: Vec<ConfigAttribute>,
}

/// One attribute; an empty value in a request asks for any value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigAttribute {
    pub ty: CfgAttrType,
    pub value: Vec<u8>,
}

impl Config {
    pub(super) fn parse(body: &[u8]) -> Result<Self, Reason> {
        let mut r = Reader::new(body);
        let kind = CfgType(r.u8()?);
        r.take(PAYLOAD_RESERVED)?;
        let mut attributes = Vec::new();
        while !r.is_empty() {
            let ty = CfgAttrType(r.u16()? & ATTR_TYPE_MASK);
            let len = r.u16()?;
            attributes.push(ConfigAttribute {
                ty,
                value: r.take(usize::from(len))?.to_vec(),
            });
        }
        Ok(Self { kind, attributes })
    }

    pub(super) fn emit(&self, out: &mut Vec<u8>) -> Result<(), Reason> {
        out.push(self.kind.0);
        out.extend_from_slice(&[0; PAYLOAD_RESERVED]);
        for a in &self.attributes {
            if a.ty.0 & !ATTR_TYPE_MASK != 0 {
                return Err("attribute type above 15 bits");
            }
            out.extend_from_slice(&a.ty.0.to_be_bytes());
            out.extend_from_slice(&count::<u16>(a.value.len())?.to_be_bytes());
            out.extend_from_slice(&a.value);
        }
        Ok(())
    }
}
