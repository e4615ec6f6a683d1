//! Payloads that are a small type header followed by opaque data (RFC 7296 §3.4-3.8):
//!
//! KE:         group(2) reserved(2) data
//! IDi/IDr:    id_type(1) reserved(3) data
//! CERT/CERTREQ: encoding(1) data
//! AUTH:       method(1) reserved(3) data

use super::cursor::{Reader, Reason};
use crate::iana::{AuthMethod, CertEncoding, DhId, IdType};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyExchange {
    pub group: DhId,
    pub data: Vec<u8>,
}

/// An identification payload; the meaning of `data` depends on `id_type` and is
/// interpreted outside the wire format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identification {
    pub id_type: IdType,
    pub data: Vec<u8>,
}

/// A CERT payload, or a CERTREQ (whose data are SHA-1 hashes of trusted CA keys).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    pub encoding: CertEncoding,
    pub data: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authentication {
    pub method: AuthMethod,
    pub data: Vec<u8>,
}

const KE_RESERVED: usize = 2;
const ID_RESERVED: usize = 3;
const AUTH_RESERVED: usize = 3;

fn parse_after<'a>(r: &mut Reader<'a>, reserved: usize) -> Result<Vec<u8>, Reason> {
    r.take(reserved)?;
    Ok(r.rest().to_vec())
}

impl KeyExchange {
    pub(super) fn parse(body: &[u8]) -> Result<Self, Reason> {
        let mut r = Reader::new(body);
        let group = DhId(r.u16()?);
        Ok(Self {
            group,
            data: parse_after(&mut r, KE_RESERVED)?,
        })
    }

    pub(super) fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.group.0.to_be_bytes());
        out.extend_from_slice(&[0; KE_RESERVED]);
        out.extend_from_slice(&self.data);
    }
}

impl Identification {
    pub(super) fn parse(body: &[u8]) -> Result<Self, Reason> {
        let mut r = Reader::new(body);
        let id_type = IdType(r.u8()?);
        Ok(Self {
            id_type,
            data: parse_after(&mut r, ID_RESERVED)?,
        })
    }

    pub(super) fn emit(&self, out: &mut Vec<u8>) {
        out.push(self.id_type.0);
        out.extend_from_slice(&[0; ID_RESERVED]);
        out.extend_from_slice(&self.data);
    }
}

impl Certificate {
    pub(super) fn parse(body: &[u8]) -> Result<Self, Reason> {
        let mut r = Reader::new(body);
        let encoding = CertEncoding(r.u8()?);
        Ok(Self {
            encoding,
            data: r.rest().to_vec(),
        })
    }

    pub(super) fn emit(&self, out: &mut Vec<u8>) {
        out.push(self.encoding.0);
        out.extend_from_slice(&self.data);
    }
}

impl Authentication {
    pub(super) fn parse(body: &[u8]) -> Result<Self, Reason> {
        let mut r = Reader::new(body);
        let method = AuthMethod(r.u8()?);
        Ok(Self {
            method,
            data: parse_after(&mut r, AUTH_RESERVED)?,
        })
    }

    pub(super) fn emit(&self, out: &mut Vec<u8>) {
        out.push(self.method.0);
        out.extend_from_slice(&[0; AUTH_RESERVED]);
        out.extend_from_slice(&self.data);
    }
}
