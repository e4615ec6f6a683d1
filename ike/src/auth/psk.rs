//! Shared key message integrity code (RFC 7296 §2.15, method 2).

use super::AuthError;
use crate::crypto::Prf;
use crate::secret::Secret;
use subtle::ConstantTimeEq;

/// RFC 7296 §2.15: the PSK is first run through the PRF with this fixed string.
const KEY_PAD: &[u8] = b"Key Pad for IKEv2";

/// AUTH = prf(prf(Shared Secret, "Key Pad for IKEv2"), <octets>).
pub fn psk_auth(prf: Prf, shared_secret: &Secret, octets: &[u8]) -> Secret {
    let pad_key = prf.compute(shared_secret.expose(), KEY_PAD);
    prf.compute(pad_key.expose(), octets)
}

/// Checks a received AUTH value in constant time.
pub fn verify_psk(
    prf: Prf,
    shared_secret: &Secret,
    octets: &[u8],
    received: &[u8],
) -> Result<(), AuthError> {
    let expected = psk_auth(prf, shared_secret, octets);
    if bool::from(expected.expose().ct_eq(received)) {
        Ok(())
    } else {
        Err(AuthError::Mismatch)
    }
}
