//! Integrity transforms for the SK payload with a non-AEAD cipher (RFC 4868).

use sha2::{Sha256, Sha384, Sha512};

use super::prf::hmac;
use crate::iana::IntegId;

/// A truncated-HMAC integrity transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Integ {
    HmacSha256_128,
    HmacSha384_192,
    HmacSha512_256,
}

impl Integ {
    pub(crate) fn from_id(id: IntegId) -> Option<Self> {
        match id {
            IntegId::HMAC_SHA2_256_128 => Some(Self::HmacSha256_128),
            IntegId::HMAC_SHA2_384_192 => Some(Self::HmacSha384_192),
            IntegId::HMAC_SHA2_512_256 => Some(Self::HmacSha512_256),
            _ => None,
        }
    }

    /// The key length RFC 4868 §2.1.1 requires: the hash output length.
    pub(crate) fn key_len(self) -> usize {
        match self {
            Self::HmacSha256_128 => 32,
            Self::HmacSha384_192 => 48,
            Self::HmacSha512_256 => 64,
        }
    }

    /// ICV length: half the hash output (RFC 4868 §2.1.1).
    pub(crate) fn icv_len(self) -> usize {
        self.key_len() / 2
    }

    /// The truncated HMAC over concatenated parts.
    pub(crate) fn icv(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        let mut mac = match self {
            Self::HmacSha256_128 => hmac::<Sha256>(key, parts),
            Self::HmacSha384_192 => hmac::<Sha384>(key, parts),
            Self::HmacSha512_256 => hmac::<Sha512>(key, parts),
        };
        mac.truncate(self.icv_len());
        mac
    }
}
