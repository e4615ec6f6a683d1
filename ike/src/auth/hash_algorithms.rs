//! The SIGNATURE_HASH_ALGORITHMS notification (RFC 7427 §4): a list of 2-octet hash
//! algorithm numbers.

use super::AuthError;
use crate::iana::HashAlgorithm;

/// More entries than any peer has a reason to send; longer lists are rejected rather than
/// collected.
const MAX_ENTRIES: usize = 64;

/// What we can verify: SHA2 for ECDSA (RFC 7427) and Identity for Ed25519 (RFC 8420).
const OURS: [HashAlgorithm; 4] = [
    HashAlgorithm::SHA2_256,
    HashAlgorithm::SHA2_384,
    HashAlgorithm::SHA2_512,
    HashAlgorithm::IDENTITY,
];

/// The notification data we send.
pub fn our_hash_algorithms() -> Vec<u8> {
    OURS.iter().flat_map(|h| h.0.to_be_bytes()).collect()
}

/// Parses a peer's notification data, keeping unknown numbers as they are.
pub fn parse_hash_algorithms(data: &[u8]) -> Result<Vec<HashAlgorithm>, AuthError> {
    let (pairs, odd) = data.as_chunks::<2>();
    if !odd.is_empty() || pairs.len() > MAX_ENTRIES {
        return Err(AuthError::BadHashAlgorithms);
    }
    Ok(pairs
        .iter()
        .map(|pair| HashAlgorithm(u16::from_be_bytes(*pair)))
        .collect())
}
