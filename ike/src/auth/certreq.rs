//! The Certification Authority field of CERTREQ payloads (RFC 7296 §3.7): SHA-1 hashes of
//! trusted CAs' SubjectPublicKeyInfo, concatenated.

use sha1::{Digest, Sha1};

/// Length of one hash in the Certification Authority field.
pub const CA_HASH_LEN: usize = 20;

/// The hash that names a CA in CERTREQ payloads.
pub fn ca_hash(subject_public_key_info: &[u8]) -> [u8; CA_HASH_LEN] {
    Sha1::digest(subject_public_key_info).into()
}

/// The hashes in a received Certification Authority field, or `None` when its length is
/// not a multiple of the hash length.
pub fn parse_ca_hashes(data: &[u8]) -> Option<Vec<[u8; CA_HASH_LEN]>> {
    let chunks = data.chunks_exact(CA_HASH_LEN);
    if !chunks.remainder().is_empty() {
        return None;
    }
    chunks.map(|c| c.try_into().ok()).collect()
}
