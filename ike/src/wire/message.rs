//! Whole IKE messages: header plus payload chain.

use super::encrypted::FragmentPosition;
use super::error::Error;
use super::header::{HEADER_LEN, Header, HeaderPacket};
use super::payload::{Payload, emit_chain, parse_payloads};
use crate::iana::PayloadType;

/// A message as a header and its payloads in order. An encrypted message ends with an
/// [`Payload::Encrypted`] or [`Payload::Fragment`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub header: Header,
    pub payloads: Vec<Payload>,
}

/// A parsed datagram with, for an encrypted message, the parts the cipher needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram<'a> {
    pub message: Message,
    pub protected: Option<Protected<'a>>,
}

/// The encrypted part of a received message, as the bytes that arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Protected<'a> {
    /// Type of the first inner payload (NONE in SKF fragments other than the first).
    pub first: PayloadType,
    /// Set for an SKF payload.
    pub fragment: Option<FragmentPosition>,
    /// Associated data: the datagram up to the sealed body.
    pub aad: &'a [u8],
    /// IV || ciphertext || ICV.
    pub body: &'a [u8],
}

impl<'a> Datagram<'a> {
    /// Parses a datagram whose IKE length field must equal its length.
    pub fn parse(datagram: &'a [u8]) -> Result<Self, Error> {
        let (header, first) = Header::parse(datagram)?;
        let length = HeaderPacket::new_checked(datagram)?.length();
        if usize::try_from(length) != Ok(datagram.len()) {
            return Err(Error::LengthMismatch {
                field: length,
                actual: datagram.len(),
            });
        }
        let payload_bytes = datagram.get(HEADER_LEN..).unwrap_or_default();
        let (payloads, tail) = parse_payloads(first, payload_bytes, false)?;
        let protected = tail.and_then(|tail| {
            let (aad, body) = datagram.split_at_checked(HEADER_LEN + tail.body_at)?;
            Some(Protected {
                first: tail.first,
                fragment: tail.fragment,
                aad,
                body,
            })
        });
        Ok(Self {
            message: Message { header, payloads },
            protected,
        })
    }
}

impl Message {
    pub fn parse(datagram: &[u8]) -> Result<Self, Error> {
        Datagram::parse(datagram).map(|d| d.message)
    }

    /// The datagram, with next-payload and length fields filled in.
    pub fn emit(&self) -> Result<Vec<u8>, Error> {
        let mut out = vec![0; HEADER_LEN];
        emit_chain(&self.payloads, &mut out)?;
        let first = self
            .payloads
            .first()
            .map_or(PayloadType::NONE, Payload::kind);
        let header = self.header.to_bytes(first, out.len())?;
        out.splice(..HEADER_LEN, header);
        Ok(out)
    }
}
