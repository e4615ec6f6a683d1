//! Ed25519 verification (RFC 8032, as certificates carry it per RFC 8410) for webpki,
//! backed by ed25519-dalek: its vectorised double-base multiplication verifies in about
//! two thirds of the time of ring's portable code, and a responder verifies two
//! signatures per IKE SA (the peer's certificate and its AUTH payload).

use std::cell::RefCell;
use std::collections::VecDeque;

use ed25519_dalek::{Signature, SignatureError, Verifier as _, VerifyingKey};
use rustls_pki_types::{
    AlgorithmIdentifier, InvalidSignature, SignatureVerificationAlgorithm, alg_id,
};

/// The verifier for certificates, CRLs and RFC 7427 AUTH data signed with Ed25519.
pub static ED25519: &dyn SignatureVerificationAlgorithm = &Ed25519;

/// Cofactorless verification, as RFC 8032 §5.1.7 and ring: a signature whose S is not
/// below the group order, or whose R does not encode the recomputed point, fails.
#[derive(Debug)]
struct Ed25519;

impl SignatureVerificationAlgorithm for Ed25519 {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), InvalidSignature> {
        let key = <&[u8; 32]>::try_from(public_key).map_err(|_| InvalidSignature)?;
        let key = verifying_key(key).map_err(|_| InvalidSignature)?;
        let signature = Signature::from_slice(signature).map_err(|_| InvalidSignature)?;
        key.verify(message, &signature)
            .map_err(|_| InvalidSignature)
    }

    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::ED25519
    }

    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::ED25519
    }

    fn fips(&self) -> bool {
        false
    }
}

/// How many decoded public keys each thread keeps.
const RECENT_KEYS: usize = 4;

thread_local! {
    /// The keys verified with last, the latest first.
    static RECENT: RefCell<VecDeque<VerifyingKey>> =
        RefCell::new(VecDeque::with_capacity(RECENT_KEYS));
}

/// The public key `bytes` encode. Decoding one takes a field exponentiation, about a tenth
/// of a verification, and the key of the CA that signed every peer's certificate comes
/// back with each of them: the few last keys are kept decoded.
fn verifying_key(bytes: &[u8; 32]) -> Result<VerifyingKey, SignatureError> {
    RECENT.with_borrow_mut(|recent| {
        let key = match recent.iter().position(|k| k.as_bytes() == bytes) {
            Some(i) => {
                let key = recent[i];
                recent.remove(i);
                key
            }
            None => VerifyingKey::from_bytes(bytes)?,
        };
        recent.truncate(RECENT_KEYS - 1);
        recent.push_front(key);
        Ok(key)
    })
}

#[cfg(test)]
mod tests {
    use super::ED25519;
    use ed25519_dalek::{Signer as _, SigningKey};
    use proptest::prelude::*;

    fn ring_accepts(key: &[u8], message: &[u8], signature: &[u8]) -> bool {
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key)
            .verify(message, signature)
            .is_ok()
    }

    fn accepts(key: &[u8], message: &[u8], signature: &[u8]) -> bool {
        ED25519.verify_signature(key, message, signature).is_ok()
    }

    /// RFC 8032 §7.1, TEST 2 and TEST 3.
    #[test]
    fn rfc_8032_vectors_verify_and_any_changed_octet_fails() {
        let vectors = [
            (
                "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
                "72",
                "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da\
                 085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
            ),
            (
                "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
                "af82",
                "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac\
                 18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
            ),
        ];
        for (key, message, signature) in vectors {
            let [key, message, signature] =
                [key, message, signature].map(|h| hex::decode(h).unwrap());
            assert!(accepts(&key, &message, &signature));
            for i in 0..signature.len() {
                let mut bad = signature.clone();
                bad[i] ^= 0x01;
                assert!(!accepts(&key, &message, &bad), "octet {i} of the signature");
            }
            let mut bad = message.clone();
            bad[0] ^= 0x80;
            assert!(!accepts(&key, &bad, &signature));
            assert!(!accepts(&key[..31], &message, &signature));
            assert!(!accepts(&key, &message, &signature[..63]));
        }
    }

    #[test]
    fn a_signature_with_s_above_the_group_order_fails_as_in_ring() {
        // S + L verifies under a check that reduces S: RFC 8032 requires S < L.
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let key = SigningKey::from_bytes(&[9; 32]);
        let message = b"iiptran";
        let mut signature = key.sign(message).to_bytes();
        let mut carry = 0u16;
        for (s, l) in signature[32..].iter_mut().zip(L) {
            let sum = u16::from(*s) + u16::from(l) + carry;
            *s = sum as u8;
            carry = sum >> 8;
        }
        let public = key.verifying_key().to_bytes();
        assert!(!ring_accepts(&public, message, &signature));
        assert!(!accepts(&public, message, &signature));
    }

    /// Keys come and go from the recent ones (more keys than it holds, each verified with
    /// several times): a signature verifies under its own key only.
    #[test]
    fn a_signature_verifies_under_its_key_alone_however_keys_recur() {
        let keys: Vec<SigningKey> = (0..super::RECENT_KEYS as u8 + 3)
            .map(|i| SigningKey::from_bytes(&[i + 1; 32]))
            .collect();
        let signed: Vec<_> = keys.iter().map(|k| k.sign(b"message").to_bytes()).collect();
        for round in 0..3 {
            for (i, key) in keys.iter().enumerate() {
                for (j, signature) in signed.iter().enumerate() {
                    let public = key.verifying_key().to_bytes();
                    assert_eq!(
                        accepts(&public, b"message", signature),
                        i == j,
                        "round {round}: key {i}, signature of key {j}"
                    );
                }
            }
        }
    }

    proptest! {
        #[test]
        fn agrees_with_ring(
            seed in any::<[u8; 32]>(),
            message in proptest::collection::vec(any::<u8>(), 0..300),
            flip in proptest::option::of((0usize..96, 0u8..8)),
        ) {
            let key = SigningKey::from_bytes(&seed);
            let mut public = key.verifying_key().to_bytes();
            let mut signature = key.sign(&message).to_bytes();
            if let Some((at, bit)) = flip {
                match at {
                    0..32 => public[at] ^= 1 << bit,
                    _ => signature[at - 32] ^= 1 << bit,
                }
            }
            let ours = accepts(&public, &message, &signature);
            prop_assert_eq!(ours, ring_accepts(&public, &message, &signature));
            prop_assert_eq!(ours, flip.is_none());
        }
    }
}
