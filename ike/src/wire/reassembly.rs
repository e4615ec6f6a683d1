//! Reassembly of SKF fragments (RFC 7383 §2.6.2), bounded so that a peer cannot make us
//! hold more than the configured fragments and bytes.
//!
//! Fragments are fed in after their integrity was verified and they were decrypted: each
//! SKF payload is sealed on its own.

use super::encrypted::FragmentPosition;
use crate::iana::PayloadType;
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReassemblyLimits {
    pub max_fragments: u16,
    /// Sum of the fragments' plaintext lengths.
    pub max_bytes: usize,
}

/// What one accepted fragment did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    Incomplete,
    /// A fragment already held; ignored.
    Duplicate,
    /// The whole inner chain: parse it with `parse_chain(first, &plaintext)`.
    Complete {
        first: PayloadType,
        plaintext: Vec<u8>,
    },
}

/// Why a fragment was discarded. The reassembly is unchanged unless noted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FragmentError {
    #[error("fragment {number} of {total} is out of range")]
    Position { number: u16, total: u16 },
    #[error("{0} fragments exceed the limit")]
    TooManyFragments(u16),
    /// RFC 7383: fewer total fragments than already announced means a stale fragment.
    #[error("fragment announces {total} fragments, fewer than the {current} already seen")]
    Stale { total: u16, current: u16 },
    #[error("fragments exceed {0} bytes")]
    TooLarge(usize),
}

/// The fragments of one message, owned by the engine alongside the exchange.
#[derive(Clone, Debug)]
pub struct Reassembly {
    limits: ReassemblyLimits,
    started: Instant,
    first: PayloadType,
    pieces: Vec<Option<Vec<u8>>>,
    bytes: usize,
}

impl Reassembly {
    pub fn new(limits: ReassemblyLimits, now: Instant) -> Self {
        Self {
            limits,
            started: now,
            first: PayloadType::NONE,
            pieces: Vec::new(),
            bytes: 0,
        }
    }

    /// When the first fragment arrived, for the engine's reassembly timeout.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Adds a decrypted fragment; `first` is the SKF's next-payload field (meaningful in
    /// fragment 1 only). After `Complete` the reassembly is spent and should be dropped.
    pub fn insert(
        &mut self,
        position: FragmentPosition,
        first: PayloadType,
        plaintext: Vec<u8>,
    ) -> Result<Progress, FragmentError> {
        let FragmentPosition { number, total } = position;
        if number == 0 || number > total {
            return Err(FragmentError::Position { number, total });
        }
        if total > self.limits.max_fragments {
            return Err(FragmentError::TooManyFragments(total));
        }
        let current = self.pieces.len();
        if usize::from(total) < current {
            return Err(FragmentError::Stale {
                total,
                current: u16::try_from(current).unwrap_or(u16::MAX),
            });
        }
        if usize::from(total) > current {
            // RFC 7383: the sender re-fragmented (e.g. smaller after PMTU trouble);
            // start over with this fragment.
            self.pieces = vec![None; usize::from(total)];
            self.bytes = 0;
            self.first = PayloadType::NONE;
        }
        let Some(slot) = self.pieces.get_mut(usize::from(number) - 1) else {
            return Err(FragmentError::Position { number, total });
        };
        if slot.is_some() {
            return Ok(Progress::Duplicate);
        }
        let bytes = self.bytes.saturating_add(plaintext.len());
        if bytes > self.limits.max_bytes {
            return Err(FragmentError::TooLarge(self.limits.max_bytes));
        }
        self.bytes = bytes;
        *slot = Some(plaintext);
        if number == 1 {
            self.first = first;
        }
        if self.pieces.iter().any(Option::is_none) {
            return Ok(Progress::Incomplete);
        }
        let plaintext = std::mem::take(&mut self.pieces)
            .into_iter()
            .flatten()
            .flatten()
            .collect();
        Ok(Progress::Complete {
            first: self.first,
            plaintext,
        })
    }
}
