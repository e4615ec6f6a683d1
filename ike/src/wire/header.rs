//! The IKE header (RFC 7296 §3.1).

use super::error::Error;
use crate::iana::{ExchangeType, PayloadType};

/// Field offsets of the fixed 28-byte header.
mod field {
    use core::ops::Range;
    pub const SPI_I: Range<usize> = 0..8;
    pub const SPI_R: Range<usize> = 8..16;
    pub const NEXT_PAYLOAD: usize = 16;
    pub const VERSION: usize = 17;
    pub const EXCHANGE: usize = 18;
    pub const FLAGS: usize = 19;
    pub const MESSAGE_ID: Range<usize> = 20..24;
    pub const LENGTH: Range<usize> = 24..28;
}

pub const HEADER_LEN: usize = field::LENGTH.end;

const MAJOR_VERSION: u8 = 2;
/// Version 2.0: major in the high nibble, minor (ignored on receipt) in the low.
const VERSION_BYTE: u8 = MAJOR_VERSION << 4;
const FLAG_INITIATOR: u8 = 0x08;
const FLAG_RESPONSE: u8 = 0x20;

/// A checked view of the header at the start of a datagram.
#[derive(Clone, Copy, Debug)]
pub struct HeaderPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> HeaderPacket<T> {
    /// Fails if the buffer cannot hold a header; the accessors then never go out of bounds.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let len = buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::TruncatedHeader(len));
        }
        Ok(Self { buffer })
    }

    fn bytes<const N: usize>(&self, range: core::ops::Range<usize>) -> [u8; N] {
        let mut out = [0; N];
        out.copy_from_slice(&self.buffer.as_ref()[range]);
        out
    }

    fn byte(&self, at: usize) -> u8 {
        self.buffer.as_ref()[at]
    }

    pub fn spi_i(&self) -> u64 {
        u64::from_be_bytes(self.bytes(field::SPI_I))
    }

    pub fn spi_r(&self) -> u64 {
        u64::from_be_bytes(self.bytes(field::SPI_R))
    }

    pub fn next_payload(&self) -> PayloadType {
        PayloadType(self.byte(field::NEXT_PAYLOAD))
    }

    pub fn major_version(&self) -> u8 {
        self.byte(field::VERSION) >> 4
    }

    pub fn exchange(&self) -> ExchangeType {
        ExchangeType(self.byte(field::EXCHANGE))
    }

    pub fn flags(&self) -> u8 {
        self.byte(field::FLAGS)
    }

    pub fn message_id(&self) -> u32 {
        u32::from_be_bytes(self.bytes(field::MESSAGE_ID))
    }

    pub fn length(&self) -> u32 {
        u32::from_be_bytes(self.bytes(field::LENGTH))
    }
}

/// The header fields a message carries. Next payload and length follow from the payloads
/// and are filled in on emission; the V flag and minor version are always sent as zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    pub spi_i: u64,
    pub spi_r: u64,
    pub exchange: ExchangeType,
    /// I flag: sent by the original initiator of the IKE SA.
    pub initiator: bool,
    /// R flag: this message is a response.
    pub response: bool,
    pub message_id: u32,
}

impl Header {
    /// Reads the header of a datagram (any length field), rejecting major versions other
    /// than 2. Returns the header and the type of the first payload.
    pub fn parse(datagram: &[u8]) -> Result<(Header, PayloadType), Error> {
        let packet = HeaderPacket::new_checked(datagram)?;
        let flags = packet.flags();
        let header = Header {
            spi_i: packet.spi_i(),
            spi_r: packet.spi_r(),
            exchange: packet.exchange(),
            initiator: flags & FLAG_INITIATOR != 0,
            response: flags & FLAG_RESPONSE != 0,
            message_id: packet.message_id(),
        };
        if packet.major_version() != MAJOR_VERSION {
            return Err(Error::UnsupportedVersion {
                major: packet.major_version(),
                header,
            });
        }
        Ok((header, packet.next_payload()))
    }

    /// The 28 header bytes for a message of `length` bytes whose first payload is `next`.
    pub fn to_bytes(&self, next: PayloadType, length: usize) -> Result<[u8; HEADER_LEN], Error> {
        let length = u32::try_from(length).map_err(|_| Error::MessageTooLong(length))?;
        let mut out = [0; HEADER_LEN];
        out[field::SPI_I].copy_from_slice(&self.spi_i.to_be_bytes());
        out[field::SPI_R].copy_from_slice(&self.spi_r.to_be_bytes());
        out[field::NEXT_PAYLOAD] = next.0;
        out[field::VERSION] = VERSION_BYTE;
        out[field::EXCHANGE] = self.exchange.0;
        out[field::FLAGS] = if self.initiator { FLAG_INITIATOR } else { 0 }
            | if self.response { FLAG_RESPONSE } else { 0 };
        out[field::MESSAGE_ID].copy_from_slice(&self.message_id.to_be_bytes());
        out[field::LENGTH].copy_from_slice(&length.to_be_bytes());
        Ok(out)
    }
}
