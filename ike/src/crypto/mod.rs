//! IKEv2 cryptography: Diffie-Hellman groups, the PRF and prf+, IKE SA and Child SA key
//! derivation, and the SK/SKF payload transforms.
//!
//! Every key lives in a [`Secret`](crate::secret::Secret) or a zeroizing primitive
//! type, so key material is wiped on drop and never printed.

mod dh;
mod integ;
mod keys;
mod prf;
mod sk;
mod x25519;

#[cfg(test)]
mod tests;

pub use dh::{DhGroup, DhPrivate};
pub use keys::{IkeSaKeys, child_keymat};
pub use prf::Prf;
pub use sk::SkCipher;

/// Why a cryptographic operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// A transform, key length or combination we do not implement.
    #[error("unsupported {0}")]
    Unsupported(&'static str),
    /// A key of the wrong length for the negotiated transform.
    #[error("{what} key is {got} octets, expected {expected}")]
    KeyLength {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// The peer's KE data is not a valid public value of the group.
    #[error("invalid Diffie-Hellman public value")]
    InvalidPublicValue,
    /// prf+ asked for more than 255 PRF blocks (RFC 7296 §2.13).
    #[error("prf+ output of {requested} octets exceeds the maximum of {max}")]
    PrfPlusTooLong { requested: usize, max: usize },
    /// The SK payload body is too short or not a whole number of blocks.
    #[error("malformed encrypted payload")]
    Malformed,
    /// The ICV or AEAD tag did not verify.
    #[error("integrity check failed")]
    Integrity,
    /// The decrypted pad length does not fit in the plaintext.
    #[error("invalid padding")]
    Padding,
    /// The 64-bit IV counter of an AEAD key is used up; the SA must be rekeyed.
    #[error("IV space of this key is exhausted")]
    IvExhausted,
    /// The operating system's random source failed.
    #[error("random number generator failed")]
    Rng,
}
