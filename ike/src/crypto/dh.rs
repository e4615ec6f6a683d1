//! Diffie-Hellman groups for the KE payload: Curve25519 (RFC 8031) and the 256-bit
//! random ECP group (RFC 5903).

use core::fmt;

use p256::elliptic_curve::sec1::ToSec1Point;
use subtle::ConstantTimeEq;
use x25519_dalek::{PublicKey as X25519Public, StaticSecret};
use zeroize::Zeroizing;

use super::{CryptoError, x25519};
use crate::iana::DhId;
use crate::secret::Secret;

/// A supported key exchange group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DhGroup {
    Curve25519,
    Ecp256,
}

const P256_COORDINATE_LEN: usize = 32;
/// SEC 1 tag of an uncompressed point; RFC 5903 KE data is the point without it.
const SEC1_UNCOMPRESSED: u8 = 0x04;

impl DhGroup {
    pub fn from_id(id: DhId) -> Option<Self> {
        match id {
            DhId::CURVE25519 => Some(Self::Curve25519),
            DhId::ECP_256 => Some(Self::Ecp256),
            _ => None,
        }
    }

    pub fn id(self) -> DhId {
        match self {
            Self::Curve25519 => DhId::CURVE25519,
            Self::Ecp256 => DhId::ECP_256,
        }
    }

    /// Length of the KE payload's key exchange data.
    pub fn public_len(self) -> usize {
        match self {
            Self::Curve25519 => x25519::LEN,
            Self::Ecp256 => 2 * P256_COORDINATE_LEN,
        }
    }

    fn private_len(self) -> usize {
        match self {
            Self::Curve25519 => x25519::LEN,
            Self::Ecp256 => P256_COORDINATE_LEN,
        }
    }
}

/// Our ephemeral private value for one key exchange. Zeroized on drop.
pub struct DhPrivate {
    key: PrivateKey,
}

enum PrivateKey {
    X25519(StaticSecret),
    P256(p256::SecretKey),
}

impl DhPrivate {
    /// A fresh private value from the operating system's random source; an error when
    /// that source fails (no key exchange is safe without it).
    pub fn generate(group: DhGroup) -> Result<Self, CryptoError> {
        loop {
            let mut bytes = Zeroizing::new(vec![0u8; group.private_len()]);
            getrandom::fill(&mut bytes).map_err(|_| CryptoError::Rng)?;
            // only P-256 rejects candidates (zero or >= the group order, p < 2^-32)
            if let Ok(key) = Self::from_private_bytes(group, &bytes) {
                return Ok(key);
            }
        }
    }

    /// A private value from its encoding: an X25519 scalar as in RFC 7748, or a P-256
    /// scalar as a 32-octet big-endian integer in [1, n-1].
    pub(crate) fn from_private_bytes(group: DhGroup, bytes: &[u8]) -> Result<Self, CryptoError> {
        let key = match group {
            DhGroup::Curve25519 => {
                if bytes.len() != x25519::LEN {
                    return Err(key_length("X25519 private", x25519::LEN, bytes.len()));
                }
                let mut scalar = Zeroizing::new([0u8; x25519::LEN]);
                scalar.copy_from_slice(bytes);
                PrivateKey::X25519(StaticSecret::from(*scalar))
            }
            DhGroup::Ecp256 => {
                if bytes.len() != P256_COORDINATE_LEN {
                    return Err(key_length(
                        "P-256 private",
                        P256_COORDINATE_LEN,
                        bytes.len(),
                    ));
                }
                let key = p256::SecretKey::from_slice(bytes)
                    .map_err(|_| CryptoError::Unsupported("P-256 scalar out of range"))?;
                PrivateKey::P256(key)
            }
        };
        Ok(Self { key })
    }

    pub fn group(&self) -> DhGroup {
        match self.key {
            PrivateKey::X25519(_) => DhGroup::Curve25519,
            PrivateKey::P256(_) => DhGroup::Ecp256,
        }
    }

    /// Our KE payload data: the X25519 u-coordinate (32 octets) or the P-256 point as
    /// x | y (64 octets, RFC 5903 §7).
    pub fn public_key(&self) -> Vec<u8> {
        match &self.key {
            PrivateKey::X25519(secret) => X25519Public::from(secret).as_bytes().to_vec(),
            PrivateKey::P256(secret) => {
                let point = secret.public_key().as_affine().to_sec1_point(false);
                // uncompressed SEC 1 form is 04 | x | y
                point.as_bytes()[1..].to_vec()
            }
        }
    }

    /// g^ir from the peer's KE data. Rejects data of the wrong length, P-256 values that
    /// are not points on the curve, and X25519 results that are all zero (RFC 8031 §2.3).
    /// The P-256 shared secret is the x coordinate alone (RFC 5903 §7).
    pub fn shared_secret(&self, peer: &[u8]) -> Result<Secret, CryptoError> {
        if peer.len() != self.group().public_len() {
            return Err(CryptoError::InvalidPublicValue);
        }
        match &self.key {
            PrivateKey::X25519(secret) => {
                let mut u = [0u8; x25519::LEN];
                u.copy_from_slice(peer);
                let shared = x25519::x25519(&Zeroizing::new(secret.to_bytes()), &u);
                if bool::from(shared.ct_eq(&[0u8; x25519::LEN])) {
                    return Err(CryptoError::InvalidPublicValue);
                }
                Ok(Secret::from_slice(&shared[..]))
            }
            PrivateKey::P256(secret) => {
                let mut sec1 = Vec::with_capacity(1 + peer.len());
                sec1.push(SEC1_UNCOMPRESSED);
                sec1.extend_from_slice(peer);
                // from_sec1_bytes checks that the point is on the curve and not identity
                let public = p256::PublicKey::from_sec1_bytes(&sec1)
                    .map_err(|_| CryptoError::InvalidPublicValue)?;
                let shared =
                    p256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), public.as_affine());
                Ok(Secret::from_slice(shared.raw_secret_bytes()))
            }
        }
    }
}

fn key_length(what: &'static str, expected: usize, got: usize) -> CryptoError {
    CryptoError::KeyLength {
        what,
        expected,
        got,
    }
}

impl fmt::Debug for DhPrivate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DhPrivate({:?}, [redacted])", self.group())
    }
}
