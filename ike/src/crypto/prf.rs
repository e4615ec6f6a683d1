//! The IKEv2 pseudorandom function and prf+ (RFC 7296 §2.13).

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Sha256, Sha384, Sha512};
use zeroize::Zeroizing;

use super::CryptoError;
use crate::iana::PrfId;
use crate::secret::Secret;

/// A negotiated PRF transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prf {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

/// prf+ is not defined beyond 255 iterations of the PRF.
const MAX_PRF_PLUS_BLOCKS: usize = 255;

impl Prf {
    pub fn from_id(id: PrfId) -> Option<Self> {
        match id {
            PrfId::HMAC_SHA2_256 => Some(Self::HmacSha256),
            PrfId::HMAC_SHA2_384 => Some(Self::HmacSha384),
            PrfId::HMAC_SHA2_512 => Some(Self::HmacSha512),
            _ => None,
        }
    }

    pub fn id(self) -> PrfId {
        match self {
            Self::HmacSha256 => PrfId::HMAC_SHA2_256,
            Self::HmacSha384 => PrfId::HMAC_SHA2_384,
            Self::HmacSha512 => PrfId::HMAC_SHA2_512,
        }
    }

    /// Output length in octets, which is also the preferred key length (RFC 7296 §2.14).
    pub fn output_len(self) -> usize {
        match self {
            Self::HmacSha256 => 32,
            Self::HmacSha384 => 48,
            Self::HmacSha512 => 64,
        }
    }

    /// prf(key, data).
    pub fn compute(self, key: &[u8], data: &[u8]) -> Secret {
        self.compute_parts(key, &[data])
    }

    /// prf(key, parts[0] | parts[1] | ...), without copying the concatenation.
    pub(crate) fn compute_parts(self, key: &[u8], parts: &[&[u8]]) -> Secret {
        match self {
            Self::HmacSha256 => Secret::new(hmac::<Sha256>(key, parts)),
            Self::HmacSha384 => Secret::new(hmac::<Sha384>(key, parts)),
            Self::HmacSha512 => Secret::new(hmac::<Sha512>(key, parts)),
        }
    }

    /// prf+(key, seed) truncated to `len` octets (RFC 7296 §2.13):
    /// T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n).
    pub fn plus(self, key: &[u8], seed: &[u8], len: usize) -> Result<Secret, CryptoError> {
        self.plus_parts(key, &[seed], len)
    }

    /// prf+ over a seed given as concatenated parts.
    pub(crate) fn plus_parts(
        self,
        key: &[u8],
        seed: &[&[u8]],
        len: usize,
    ) -> Result<Secret, CryptoError> {
        let max = MAX_PRF_PLUS_BLOCKS * self.output_len();
        if len > max {
            return Err(CryptoError::PrfPlusTooLong {
                requested: len,
                max,
            });
        }
        // capacity for the whole output up front: no reallocation leaves key copies behind
        let mut out = Zeroizing::new(Vec::with_capacity(len + self.output_len()));
        let mut block = Secret::default();
        let mut counter: u8 = 1;
        while out.len() < len {
            let counter_octet = [counter];
            let mut parts: Vec<&[u8]> = Vec::with_capacity(seed.len() + 2);
            parts.push(block.expose());
            parts.extend_from_slice(seed);
            parts.push(&counter_octet);
            block = self.compute_parts(key, &parts);
            out.extend_from_slice(block.expose());
            // cannot wrap: len <= 255 blocks was checked above
            counter = counter.wrapping_add(1);
        }
        out.truncate(len);
        Ok(Secret::new(core::mem::take(&mut *out)))
    }
}

/// HMAC over concatenated parts.
pub(crate) fn hmac<D>(key: &[u8], parts: &[&[u8]]) -> Vec<u8>
where
    D: hmac::EagerHash,
    Hmac<D>: KeyInit + Mac,
{
    // HMAC hashes or pads the key: every key length is valid
    let mut mac = <Hmac<D> as KeyInit>::new_from_slice(key).expect("HMAC accepts any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}
