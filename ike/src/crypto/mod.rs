//! Pseudo-random functions used by IKE authentication.

use crate::secret::Secret;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Sha256, Sha384, Sha512};

/// The negotiated IKE PRF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prf {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

impl Prf {
    pub fn compute(self, key: &[u8], data: &[u8]) -> Secret {
        match self {
            Prf::HmacSha256 => hmac::<Sha256>(key, data),
            Prf::HmacSha384 => hmac::<Sha384>(key, data),
            Prf::HmacSha512 => hmac::<Sha512>(key, data),
        }
    }

    pub fn output_len(self) -> usize {
        match self {
            Prf::HmacSha256 => 32,
            Prf::HmacSha384 => 48,
            Prf::HmacSha512 => 64,
        }
    }
}

fn hmac<D>(key: &[u8], data: &[u8]) -> Secret
where
    D: hmac::EagerHash,
    Hmac<D>: KeyInit + Mac,
{
    let mut mac = <Hmac<D> as KeyInit>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(data);
    Secret::new(mac.finalize().into_bytes().to_vec())
}
