//! Helpers the exchanges share: finding payloads, building notifications, and the
//! datagrams of plain and encrypted messages.

use crate::crypto::SkCipher;
use crate::iana::{NotifyType, PayloadType, ProtocolId};
use crate::wire::{self, Header, Message, Notify, Payload};
use std::cell::RefCell;
use std::net::SocketAddr;

const GENERIC_HEADER_LEN: usize = 4;

/// The four zero bytes before IKE messages on port 4500 (RFC 3948 §2.2).
pub(super) const NON_ESP_MARKER: [u8; 4] = [0; 4];
pub(super) const NAT_T_PORT: u16 = 4500;

/// A datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The UDP payload, including the non-ESP marker on port 4500.
    pub payload: Vec<u8>,
}

pub(super) fn on_nat_t_port(local: SocketAddr, remote: SocketAddr) -> bool {
    local.port() == NAT_T_PORT || remote.port() == NAT_T_PORT
}

pub(super) fn with_marker(nat_t: bool, datagram: Vec<u8>) -> Vec<u8> {
    if nat_t {
        [NON_ESP_MARKER.as_slice(), &datagram].concat()
    } else {
        datagram
    }
}

/// The first payload of a variant, e.g. `find_payload!(payloads, Payload::Nonce)`.
macro_rules! find_payload {
    ($payloads:expr, $variant:path) => {
        $payloads.iter().find_map(|p| match p {
            $variant(inner) => Some(inner),
            _ => None,
        })
    };
}
pub(super) use find_payload;

pub(super) fn notify(kind: NotifyType, data: Vec<u8>) -> Payload {
    Payload::Notify(Notify::new(kind, data))
}

pub(super) fn esp_notify(kind: NotifyType, spi: u32) -> Payload {
    Payload::Notify(Notify {
        protocol: ProtocolId::ESP,
        spi: spi.to_be_bytes().to_vec(),
        kind,
        data: Vec::new(),
    })
}

pub(super) fn find_notify(payloads: &[Payload], kind: NotifyType) -> Option<&Notify> {
    payloads.iter().find_map(|p| match p {
        Payload::Notify(n) if n.kind == kind => Some(n),
        _ => None,
    })
}

pub(super) fn has_notify(payloads: &[Payload], kind: NotifyType) -> bool {
    find_notify(payloads, kind).is_some()
}

/// The first error notification, which decides the fate of a request.
pub(super) fn error_notify(payloads: &[Payload]) -> Option<NotifyType> {
    payloads.iter().find_map(|p| match p {
        Payload::Notify(n) if n.kind.is_error() => Some(n.kind),
        _ => None,
    })
}

/// The body of a plain message (IKE_SA_INIT) or `None` if it cannot be encoded.
pub(super) fn plain(header: Header, payloads: Vec<Payload>) -> Option<Vec<u8>> {
    Message { header, payloads }.emit().ok()
}

/// Encrypts the inner payload chain `plaintext`, whose first payload is of type `first`,
/// into one SK message, or into SKF fragments of at most `fragment_size` bytes when that
/// is allowed and needed.
pub(super) fn encrypted(
    header: &Header,
    first: PayloadType,
    plaintext: &[u8],
    cipher: &mut SkCipher,
    fragment_size: Option<usize>,
) -> Result<Vec<Vec<u8>>, wire::Error> {
    // The wire builders take the length function and the sealer separately; both are
    // the same cipher, used one after the other.
    let cipher = RefCell::new(cipher);
    let sealed_len = |n: usize| cipher.borrow().sealed_len(n);
    // A failed seal (an exhausted IV space) yields a body of the wrong length, which
    // the builders refuse.
    let seal = |aad: &[u8], pt: &[u8]| cipher.borrow_mut().seal(aad, pt).unwrap_or_default();
    let whole = wire::HEADER_LEN + GENERIC_HEADER_LEN + sealed_len(plaintext.len());
    match fragment_size {
        Some(max) if whole > max => {
            wire::seal_fragments(header, first, plaintext, max, sealed_len, seal)
        }
        _ => wire::seal_encrypted(header, first, plaintext, sealed_len, seal).map(|d| vec![d]),
    }
}
