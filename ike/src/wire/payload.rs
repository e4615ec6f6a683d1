//! The generic payload header and payload chains (RFC 7296 §3.2).
//!
//! Generic header: next_payload(1) C|reserved(1) length(2), length counting the header.

use super::config::Config;
use super::cursor::{Reason, patch_u16_len};
use super::encrypted::{self, Encrypted, Fragment, FragmentPosition};
use super::error::Error;
use super::notify::{Delete, Notify};
use super::sa::{self, Proposal};
use super::selectors;
use super::simple::{Authentication, Certificate, Identification, KeyExchange};
use crate::iana::PayloadType;
use crate::ts::TrafficSelector;

mod field {
    use core::ops::Range;
    pub const NEXT_PAYLOAD: usize = 0;
    pub const FLAGS: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
}

pub(super) const GENERIC_HEADER_LEN: usize = field::LENGTH.end;
const CRITICAL: u8 = 0x80;

/// One payload. Known payloads carry their parsed body; anything else is [`Unknown`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    Sa(Vec<Proposal>),
    Ke(KeyExchange),
    IdI(Identification),
    IdR(Identification),
    Cert(Certificate),
    CertReq(Certificate),
    Auth(Authentication),
    Nonce(Vec<u8>),
    Notify(Notify),
    Delete(Delete),
    VendorId(Vec<u8>),
    TsI(Vec<TrafficSelector>),
    TsR(Vec<TrafficSelector>),
    /// SK: must be the last payload of a message.
    Encrypted(Encrypted),
    /// SKF (RFC 7383): must be the last payload of a message.
    Fragment(Fragment),
    Config(Config),
    Unknown(Unknown),
}

/// A payload type we do not speak, sent without the critical bit, so to be ignored
/// (RFC 7296 §2.5). Kept so that a message re-emits as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unknown {
    pub ty: PayloadType,
    pub body: Vec<u8>,
}

impl Payload {
    pub fn kind(&self) -> PayloadType {
        match self {
            Payload::Sa(_) => PayloadType::SA,
            Payload::Ke(_) => PayloadType::KE,
            Payload::IdI(_) => PayloadType::IDI,
            Payload::IdR(_) => PayloadType::IDR,
            Payload::Cert(_) => PayloadType::CERT,
            Payload::CertReq(_) => PayloadType::CERTREQ,
            Payload::Auth(_) => PayloadType::AUTH,
            Payload::Nonce(_) => PayloadType::NONCE,
            Payload::Notify(_) => PayloadType::NOTIFY,
            Payload::Delete(_) => PayloadType::DELETE,
            Payload::VendorId(_) => PayloadType::VENDOR_ID,
            Payload::TsI(_) => PayloadType::TSI,
            Payload::TsR(_) => PayloadType::TSR,
            Payload::Encrypted(_) => PayloadType::SK,
            Payload::Fragment(_) => PayloadType::SKF,
            Payload::Config(_) => PayloadType::CP,
            Payload::Unknown(u) => u.ty,
        }
    }

    fn parse_body(ty: PayloadType, body: &[u8]) -> Result<Option<Self>, Reason> {
        Ok(Some(match ty {
            PayloadType::SA => Payload::Sa(sa::parse(body)?),
            PayloadType::KE => Payload::Ke(KeyExchange::parse(body)?),
            PayloadType::IDI => Payload::IdI(Identification::parse(body)?),
            PayloadType::IDR => Payload::IdR(Identification::parse(body)?),
            PayloadType::CERT => Payload::Cert(Certificate::parse(body)?),
            PayloadType::CERTREQ => Payload::CertReq(Certificate::parse(body)?),
            PayloadType::AUTH => Payload::Auth(Authentication::parse(body)?),
            PayloadType::NONCE => Payload::Nonce(body.to_vec()),
            PayloadType::NOTIFY => Payload::Notify(Notify::parse(body)?),
            PayloadType::DELETE => Payload::Delete(Delete::parse(body)?),
            PayloadType::VENDOR_ID => Payload::VendorId(body.to_vec()),
            PayloadType::TSI => Payload::TsI(selectors::parse(body)?),
            PayloadType::TSR => Payload::TsR(selectors::parse(body)?),
            PayloadType::CP => Payload::Config(Config::parse(body)?),
            _ => return Ok(None),
        }))
    }

    fn emit_body(&self, out: &mut Vec<u8>) -> Result<(), Reason> {
        match self {
            Payload::Sa(proposals) => sa::emit(proposals, out)?,
            Payload::Ke(ke) => ke.emit(out),
            Payload::IdI(id) | Payload::IdR(id) => id.emit(out),
            Payload::Cert(c) | Payload::CertReq(c) => c.emit(out),
            Payload::Auth(a) => a.emit(out),
            Payload::Nonce(data) | Payload::VendorId(data) => out.extend_from_slice(data),
            Payload::Notify(n) => n.emit(out)?,
            Payload::Delete(d) => d.emit(out)?,
            Payload::TsI(ts) | Payload::TsR(ts) => selectors::emit(ts, out)?,
            Payload::Encrypted(e) => out.extend_from_slice(&e.body),
            Payload::Fragment(f) => f.emit_body(out),
            Payload::Config(c) => c.emit(out)?,
            Payload::Unknown(u) => {
                // The parser's own dispatch decides which types are known.
                let known = !matches!(Payload::parse_body(u.ty, &[]), Ok(None));
                if known || is_encrypted(u.ty) || u.ty == PayloadType::NONE {
                    return Err("unknown payload with a known type");
                }
                out.extend_from_slice(&u.body);
            }
        }
        Ok(())
    }
}

fn is_encrypted(ty: PayloadType) -> bool {
    ty == PayloadType::SK || ty == PayloadType::SKF
}

/// Where the encrypted body of a chain's final SK/SKF payload starts.
pub(super) struct EncryptedTail {
    /// Offset of the body within the parsed bytes.
    pub body_at: usize,
    pub first: PayloadType,
    pub fragment: Option<FragmentPosition>,
}

/// Parses a chain starting with a payload of type `first`. An SK/SKF payload ends the
/// chain and must end the bytes; it is refused when `inside_encrypted`.
pub(super) fn parse_payloads(
    first: PayloadType,
    bytes: &[u8],
    inside_encrypted: bool,
) -> Result<(Vec<Payload>, Option<EncryptedTail>), Error> {
    let mut payloads = Vec::new();
    let mut next = first;
    let mut at = 0;
    while next != PayloadType::NONE {
        let ty = next;
        let rest = bytes.get(at..).unwrap_or_default();
        let header: [u8; GENERIC_HEADER_LEN] = rest
            .get(..GENERIC_HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(Error::TruncatedPayload { ty })?;
        let mut length = [0; 2];
        length.copy_from_slice(&header[field::LENGTH]);
        let length = u16::from_be_bytes(length);
        let body =
            rest.get(GENERIC_HEADER_LEN..usize::from(length))
                .ok_or(Error::PayloadLength {
                    ty,
                    length,
                    remaining: rest.len(),
                })?;
        next = PayloadType(header[field::NEXT_PAYLOAD]);
        let malformed = |reason| Error::Malformed { ty, reason };
        if is_encrypted(ty) {
            if inside_encrypted {
                return Err(Error::NestedEncrypted(ty));
            }
            if usize::from(length) != rest.len() {
                return Err(Error::EncryptedNotLast(ty));
            }
            let (payload, body_offset) = encrypted::parse(ty, next, body).map_err(malformed)?;
            let fragment = match &payload {
                Payload::Fragment(f) => Some(f.position),
                _ => None,
            };
            payloads.push(payload);
            let tail = EncryptedTail {
                body_at: at + GENERIC_HEADER_LEN + body_offset,
                first: next,
                fragment,
            };
            return Ok((payloads, Some(tail)));
        }
        match Payload::parse_body(ty, body).map_err(malformed)? {
            Some(payload) => payloads.push(payload),
            None if header[field::FLAGS] & CRITICAL != 0 => {
                return Err(Error::UnsupportedCritical(ty));
            }
            None => payloads.push(Payload::Unknown(Unknown {
                ty,
                body: body.to_vec(),
            })),
        }
        at += usize::from(length);
    }
    match bytes.len().saturating_sub(at) {
        0 => Ok((payloads, None)),
        extra => Err(Error::TrailingBytes(extra)),
    }
}

/// Parses a decrypted inner payload chain (the plaintext of SK, or of reassembled SKF
/// fragments) whose first payload has type `first`.
pub fn parse_chain(first: PayloadType, bytes: &[u8]) -> Result<Vec<Payload>, Error> {
    parse_payloads(first, bytes, true).map(|(payloads, _)| payloads)
}

/// Appends the payloads, each header naming the next payload's type.
pub fn emit_chain(payloads: &[Payload], out: &mut Vec<u8>) -> Result<(), Error> {
    for (i, payload) in payloads.iter().enumerate() {
        let ty = payload.kind();
        let is_last = i + 1 == payloads.len();
        let next = match payload {
            Payload::Encrypted(_) | Payload::Fragment(_) if !is_last => {
                return Err(Error::EncryptedNotLast(ty));
            }
            Payload::Encrypted(e) => e.first,
            Payload::Fragment(f) => f.first,
            _ => payloads.get(i + 1).map_or(PayloadType::NONE, Payload::kind),
        };
        let start = out.len();
        out.extend_from_slice(&generic_header(next, 0));
        payload
            .emit_body(out)
            .and_then(|()| patch_u16_len(out, start, start + field::LENGTH.start))
            .map_err(|reason| Error::Unencodable { ty, reason })?;
    }
    Ok(())
}

/// A generic payload header; the length is patched in once the body is written.
pub(super) fn generic_header(next: PayloadType, length: u16) -> [u8; GENERIC_HEADER_LEN] {
    let mut header = [0; GENERIC_HEADER_LEN];
    header[field::NEXT_PAYLOAD] = next.0;
    header[field::LENGTH].copy_from_slice(&length.to_be_bytes());
    header
}
