//! Notify and Delete payloads (RFC 7296 §3.10, §3.11).
//!
//! Notify: protocol(1) spi_size(1) type(2) spi(spi_size) data
//! Delete: protocol(1) spi_size(1) spi_count(2) spis(spi_size * spi_count)

use super::cursor::{Reader, Reason, count};
use crate::iana::{NotifyType, ProtocolId};

/// SPI sizes a Notify may carry: none, an AH/ESP SPI, an IKE SPI.
const NOTIFY_SPI_SIZES: [usize; 3] = [0, 4, 8];
const CHILD_SPI_LEN: u8 = 4;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notify {
    pub protocol: ProtocolId,
    /// Empty, 4 bytes (AH/ESP) or 8 bytes (IKE).
    pub spi: Vec<u8>,
    /// Unknown types are kept: status types we do not know are ignored by the engine,
    /// unknown error types still fail a request.
    pub kind: NotifyType,
    pub data: Vec<u8>,
}

impl Notify {
    /// A notification that concerns no particular SA.
    pub fn new(kind: NotifyType, data: Vec<u8>) -> Self {
        Self {
            protocol: ProtocolId::NONE,
            spi: Vec::new(),
            kind,
            data,
        }
    }

    pub(super) fn parse(body: &[u8]) -> Result<Self, Reason> {
        let mut r = Reader::new(body);
        let protocol = ProtocolId(r.u8()?);
        let spi_size = usize::from(r.u8()?);
        let kind = NotifyType(r.u16()?);
        if !NOTIFY_SPI_SIZES.contains(&spi_size) {
            return Err("SPI size is not 0, 4 or 8");
        }
        let spi = r.take(spi_size)?.to_vec();
        Ok(Self {
            protocol,
            spi,
            kind,
            data: r.rest().to_vec(),
        })
    }

    pub(super) fn emit(&self, out: &mut Vec<u8>) -> Result<(), Reason> {
        if !NOTIFY_SPI_SIZES.contains(&self.spi.len()) {
            return Err("SPI size is not 0, 4 or 8");
        }
        out.push(self.protocol.0);
        out.push(count(self.spi.len())?);
        out.extend_from_slice(&self.kind.0.to_be_bytes());
        out.extend_from_slice(&self.spi);
        out.extend_from_slice(&self.data);
        Ok(())
    }
}

/// Deletion of the IKE SA (protocol IKE, no SPIs: the header names it) or of child SAs by
/// their inbound SPIs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delete {
    pub protocol: ProtocolId,
    pub spis: Vec<u32>,
}

impl Delete {
    pub(super) fn parse(body: &[u8]) -> Result<Self, Reason> {
        let mut r = Reader::new(body);
        let protocol = ProtocolId(r.u8()?);
        let spi_size = r.u8()?;
        let spi_count = r.u16()?;
        let mut spis = Vec::new();
        match spi_size {
            0 if spi_count == 0 => {}
            CHILD_SPI_LEN => {
                for _ in 0..spi_count {
                    spis.push(r.u32()?);
                }
            }
            _ => return Err("SPI size is neither 0 without SPIs nor 4"),
        }
        if !r.is_empty() {
            return Err("bytes after the SPIs");
        }
        Ok(Self { protocol, spis })
    }

    pub(super) fn emit(&self, out: &mut Vec<u8>) -> Result<(), Reason> {
        let spi_size = if self.protocol == ProtocolId::IKE && self.spis.is_empty() {
            0
        } else {
            CHILD_SPI_LEN
        };
        out.push(self.protocol.0);
        out.push(spi_size);
        out.extend_from_slice(&count::<u16>(self.spis.len())?.to_be_bytes());
        for spi in &self.spis {
            out.extend_from_slice(&spi.to_be_bytes());
        }
        Ok(())
    }
}
