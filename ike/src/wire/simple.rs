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
const CERT_RESERVED: usize = 0;
const AUTH_RESERVED: usize = 3;

/// Reads the one-byte type, `reserved` bytes and the data of ID, CERT and AUTH.
fn parse_typed(body: &[u8], reserved: usize) -> Result<(u8, Vec<u8>), Reason> {
    let mut r = Reader::new(body);
    let ty = r.u8()?;
    r.take(reserved)?;
    Ok((ty, r.rest().to_vec()))
}

fn emit_typed(ty: u8, reserved: usize, data: &[u8], out: &mut Vec<u8>) {
    out.push(ty);
    out.resize(out.len() + reserved, 0);
    out.extend_from_slice(data);
}

impl KeyExchange {
    pub(super) fn parse(body: &[u8]) -> Result<Self, Reason> {
        let mut r = Reader::new(body);
        let group = DhId(r.u16()?);
        r.take(KE_RESERVED)?;
        Ok(Self {
            group,
            data: r.rest().to_vec(),
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
        let (ty, data) = parse_typed(body, ID_RESERVED)?;
        Ok(Self {
            id_type: IdType(ty),
            data,
        })
    }

    pub(super) fn emit(&self, out: &mut Vec<u8>) {
        emit_typed(self.id_type.0, ID_RESERVED, &self.data, out);
    }
}

impl Certificate {
    pub(super) fn parse(body: &[u8]) -> Result<Self, Reason> {
        let (ty, data) = parse_typed(body, CERT_RESERVED)?;
        Ok(Self {
            encoding: CertEncoding(ty),
            data,
        })
    }

    pub(super) fn emit(&self, out: &mut Vec<u8>) {
        emit_typed(self.encoding.0, CERT_RESERVED, &self.data, out);
    }
}

impl Authentication {
    pub(super) fn parse(body: &[u8]) -> Result<Self, Reason> {
        let (ty, data) = parse_typed(body, AUTH_RESERVED)?;
        Ok(Self {
            method: AuthMethod(ty),
            data,
        })
    }

    pub(super) fn emit(&self, out: &mut Vec<u8>) {
        emit_typed(self.method.0, AUTH_RESERVED, &self.data, out);
    }
}
