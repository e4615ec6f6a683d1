//! The Encrypted (SK, RFC 7296 §3.14) and Encrypted Fragment (SKF, RFC 7383 §2.5)
//! payloads, and building encrypted messages around any cipher.
//!
//! SK body:  IV || ciphertext || ICV (produced and checked by the crypto module)
//! SKF body: fragment_number(2) total_fragments(2) IV || ciphertext || ICV
//!
//! The associated data that the cipher authenticates is everything in the message before
//! the IV: the IKE header, any payloads before SK/SKF, the SK/SKF generic header and, for
//! SKF, the fragment fields.

use super::cursor::{Reader, Reason};
use super::error::Error;
use super::header::{HEADER_LEN, Header};
use super::payload::{GENERIC_HEADER_LEN, Payload, emit_chain, generic_header};
use crate::iana::PayloadType;

/// Offsets of the SKF fields between the generic header and the sealed body.
mod skf_field {
    use core::ops::Range;
    pub const NUMBER: Range<usize> = 0..2;
    pub const TOTAL: Range<usize> = 2..4;
}
const SKF_FIELDS_LEN: usize = skf_field::TOTAL.end;

/// An SK payload as received: the type of the first inner payload and the sealed body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encrypted {
    pub first: PayloadType,
    pub body: Vec<u8>,
}

/// An SKF payload as received. `first` is the first inner payload's type in fragment 1
/// and NONE in the others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fragment {
    pub first: PayloadType,
    pub position: FragmentPosition,
    pub body: Vec<u8>,
}

/// Fragment `number` (1-based) of `total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FragmentPosition {
    pub number: u16,
    pub total: u16,
}

impl FragmentPosition {
    fn fields(self) -> [u8; SKF_FIELDS_LEN] {
        let mut fields = [0; SKF_FIELDS_LEN];
        fields[skf_field::NUMBER].copy_from_slice(&self.number.to_be_bytes());
        fields[skf_field::TOTAL].copy_from_slice(&self.total.to_be_bytes());
        fields
    }
}

impl Fragment {
    pub(super) fn emit_body(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.position.fields());
        out.extend_from_slice(&self.body);
    }
}

/// Parses an SK/SKF body; returns the payload and where its sealed part starts.
pub(super) fn parse(
    ty: PayloadType,
    first: PayloadType,
    body: &[u8],
) -> Result<(Payload, usize), Reason> {
    if ty == PayloadType::SK {
        let payload = Payload::Encrypted(Encrypted {
            first,
            body: body.to_vec(),
        });
        return Ok((payload, 0));
    }
    let mut r = Reader::new(body);
    let position = FragmentPosition {
        number: r.u16()?,
        total: r.u16()?,
    };
    if position.number == 0 || position.number > position.total {
        return Err("fragment number outside 1..=total");
    }
    let payload = Payload::Fragment(Fragment {
        first,
        position,
        body: r.rest().to_vec(),
    });
    Ok((payload, SKF_FIELDS_LEN))
}

/// The plaintext of an inner payload chain and the type of its first payload: what
/// [`seal_encrypted`] and [`seal_fragments`] take.
pub fn inner_plaintext(inner: &[Payload]) -> Result<(PayloadType, Vec<u8>), Error> {
    if let Some(p) = inner
        .iter()
        .find(|p| matches!(p, Payload::Encrypted(_) | Payload::Fragment(_)))
    {
        return Err(Error::NestedEncrypted(p.kind()));
    }
    let mut plaintext = Vec::new();
    emit_chain(inner, &mut plaintext)?;
    Ok((
        inner.first().map_or(PayloadType::NONE, Payload::kind),
        plaintext,
    ))
}

/// One message whose only payload is SK/SKF with `fields` between the generic header and
/// the sealed body. Lengths are final before `seal` sees the associated data.
fn seal_message(
    header: &Header,
    ty: PayloadType,
    first: PayloadType,
    fields: &[u8],
    plaintext: &[u8],
    body_len: usize,
    seal: impl FnOnce(&[u8], &[u8]) -> Vec<u8>,
) -> Result<Vec<u8>, Error> {
    let payload_len = GENERIC_HEADER_LEN + fields.len() + body_len;
    let total = HEADER_LEN + payload_len;
    let payload_len = u16::try_from(payload_len).map_err(|_| Error::MessageTooLong(total))?;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&header.to_bytes(ty, total)?);
    out.extend_from_slice(&generic_header(first, payload_len));
    out.extend_from_slice(fields);
    let body = seal(&out, plaintext);
    if body.len() != body_len {
        return Err(Error::SealedLength {
            expected: body_len,
            actual: body.len(),
        });
    }
    out.extend_from_slice(&body);
    Ok(out)
}

/// Builds a message whose payloads are `inner`, encrypted in one SK payload.
///
/// `sealed_len(n)` is the body length the cipher produces for `n` bytes of plaintext
/// (IV, padding and ICV included); `seal(aad, plaintext)` returns that body.
pub fn emit_encrypted(
    header: &Header,
    inner: &[Payload],
    sealed_len: impl Fn(usize) -> usize,
    seal: impl FnOnce(&[u8], &[u8]) -> Vec<u8>,
) -> Result<Vec<u8>, Error> {
    let (first, plaintext) = inner_plaintext(inner)?;
    seal_encrypted(header, first, &plaintext, sealed_len, seal)
}

/// [`emit_encrypted`] of a payload chain already emitted ([`inner_plaintext`]).
pub fn seal_encrypted(
    header: &Header,
    first: PayloadType,
    plaintext: &[u8],
    sealed_len: impl Fn(usize) -> usize,
    seal: impl FnOnce(&[u8], &[u8]) -> Vec<u8>,
) -> Result<Vec<u8>, Error> {
    let body_len = sealed_len(plaintext.len());
    seal_message(
        header,
        PayloadType::SK,
        first,
        &[],
        plaintext,
        body_len,
        seal,
    )
}

/// Builds the SKF fragments (RFC 7383 §2.5) of a message whose payloads are `inner`, none
/// longer than `max_datagram` bytes (the IKE message; the caller subtracts the non-ESP
/// marker on port 4500). Every fragment is sealed on its own with the same header.
/// `sealed_len` must not decrease as the plaintext grows.
pub fn emit_fragments(
    header: &Header,
    inner: &[Payload],
    max_datagram: usize,
    sealed_len: impl Fn(usize) -> usize,
    seal: impl FnMut(&[u8], &[u8]) -> Vec<u8>,
) -> Result<Vec<Vec<u8>>, Error> {
    let (first, plaintext) = inner_plaintext(inner)?;
    seal_fragments(header, first, &plaintext, max_datagram, sealed_len, seal)
}

/// [`emit_fragments`] of a payload chain already emitted ([`inner_plaintext`]).
pub fn seal_fragments(
    header: &Header,
    first: PayloadType,
    plaintext: &[u8],
    max_datagram: usize,
    sealed_len: impl Fn(usize) -> usize,
    mut seal: impl FnMut(&[u8], &[u8]) -> Vec<u8>,
) -> Result<Vec<Vec<u8>>, Error> {
    let no_room = Error::NoRoomForFragment(max_datagram);
    let budget = max_datagram
        .checked_sub(HEADER_LEN + GENERIC_HEADER_LEN + SKF_FIELDS_LEN)
        .ok_or(no_room.clone())?;
    let chunk_len = largest_fitting(budget, &sealed_len).ok_or(no_room)?;
    let chunks: Vec<&[u8]> = if plaintext.is_empty() {
        vec![&[]]
    } else {
        plaintext.chunks(chunk_len).collect()
    };
    let total = u16::try_from(chunks.len()).map_err(|_| Error::MessageTooLong(plaintext.len()))?;
    (1..=total)
        .zip(chunks)
        .map(|(number, chunk)| {
            let first = if number == 1 {
                first
            } else {
                PayloadType::NONE
            };
            let fields = FragmentPosition { number, total }.fields();
            let body_len = sealed_len(chunk.len());
            seal_message(
                header,
                PayloadType::SKF,
                first,
                &fields,
                chunk,
                body_len,
                &mut seal,
            )
        })
        .collect()
}

/// The largest non-zero plaintext length whose sealed body fits `budget`.
fn largest_fitting(budget: usize, sealed_len: impl Fn(usize) -> usize) -> Option<usize> {
    let (mut lo, mut hi) = (0, budget);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if sealed_len(mid) <= budget {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    (lo > 0).then_some(lo)
}
