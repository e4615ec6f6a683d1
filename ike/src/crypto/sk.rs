//! The SK (and SKF) payload transform for one direction (RFC 7296 §3.14, RFC 7383):
//! AEAD ciphers with an explicit 8-octet IV (RFC 7634, RFC 5282), or AES-CBC with a
//! truncated-HMAC ICV (RFC 3602, RFC 4868).

use core::fmt;

use aes::{Aes128, Aes256};
use aes_gcm::{Aes128Gcm, Aes256Gcm};
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use chacha20poly1305::ChaCha20Poly1305;
use chacha20poly1305::aead::{AeadInOut, KeyInit, Nonce, Tag};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::CryptoError;
use super::integ::Integ;
use crate::iana::{EncrId, IntegId};
use crate::secret::Secret;

const SALT_LEN: usize = 4;
const AEAD_IV_LEN: usize = 8;
const AEAD_TAG_LEN: usize = 16;
const AES_BLOCK_LEN: usize = 16;

/// Encrypts or decrypts SK payload bodies under one key (SK_ei/SK_ai or SK_er/SK_ar).
pub struct SkCipher {
    transform: Transform,
    /// Next explicit IV of an AEAD key: a counter never repeats under one key.
    next_iv: u64,
}

enum Transform {
    ChaCha20Poly1305(ChaCha20Poly1305, Zeroizing<[u8; SALT_LEN]>),
    // Boxed: an AES key schedule with its GHASH key is several hundred bytes, and every
    // IKE SA holds two ciphers of whatever suite it negotiated.
    Aes128Gcm(Box<Aes128Gcm>, Zeroizing<[u8; SALT_LEN]>),
    Aes256Gcm(Box<Aes256Gcm>, Zeroizing<[u8; SALT_LEN]>),
    AesCbc {
        key: Secret,
        integ: Integ,
        integ_key: Secret,
    },
}

/// The encryption transforms we implement, resolved from the negotiated attributes.
#[derive(Clone, Copy)]
enum Encr {
    ChaCha20Poly1305,
    AesGcm16 { key_len: usize },
    AesCbc { key_len: usize, integ: Integ },
}

impl Encr {
    fn resolve(encr: EncrId, key_bits: Option<u16>, integ: IntegId) -> Result<Self, CryptoError> {
        let aes_key_len = |bits: Option<u16>| match bits {
            Some(128) => Ok(16),
            Some(256) => Ok(32),
            _ => Err(CryptoError::Unsupported("AES key length")),
        };
        let aead = |resolved: Self| {
            if integ == IntegId::NONE {
                Ok(resolved)
            } else {
                Err(CryptoError::Unsupported(
                    "integrity transform with an AEAD cipher",
                ))
            }
        };
        match encr {
            // RFC 7634 §2: a fixed 256-bit key, no Key Length attribute
            EncrId::CHACHA20_POLY1305 => match key_bits {
                None => aead(Self::ChaCha20Poly1305),
                Some(_) => Err(CryptoError::Unsupported("ChaCha20-Poly1305 key length")),
            },
            EncrId::AES_GCM_16 => aead(Self::AesGcm16 {
                key_len: aes_key_len(key_bits)?,
            }),
            EncrId::AES_CBC => {
                let integ =
                    Integ::from_id(integ).ok_or(CryptoError::Unsupported("integrity transform"))?;
                Ok(Self::AesCbc {
                    key_len: aes_key_len(key_bits)?,
                    integ,
                })
            }
            _ => Err(CryptoError::Unsupported("encryption transform")),
        }
    }

    /// The AEAD salt at the end of the encryption key (RFC 5282 §7.1, RFC 7634 §2).
    fn salt_len(self) -> usize {
        match self {
            Self::AesCbc { .. } => 0,
            _ => SALT_LEN,
        }
    }

    /// (encryption key including salt, integrity key) lengths.
    fn key_lengths(self) -> (usize, usize) {
        match self {
            Self::ChaCha20Poly1305 => (32 + SALT_LEN, 0),
            Self::AesGcm16 { key_len } => (key_len + SALT_LEN, 0),
            Self::AesCbc { key_len, integ } => (key_len, integ.key_len()),
        }
    }
}

impl SkCipher {
    /// Key lengths the suite needs from prf+: (encryption key including the 4-octet AEAD
    /// salt, integrity key). AEAD suites need no integrity key.
    pub fn key_lengths(
        encr: EncrId,
        key_bits: Option<u16>,
        integ: IntegId,
    ) -> Result<(usize, usize), CryptoError> {
        Ok(Encr::resolve(encr, key_bits, integ)?.key_lengths())
    }

    /// A cipher for one direction. For AEAD suites `encr_key` is key | salt (RFC 5282 §7.1,
    /// RFC 7634 §2) and `integ_key` must be empty.
    pub fn new(
        encr: EncrId,
        key_bits: Option<u16>,
        integ: IntegId,
        encr_key: &[u8],
        integ_key: &[u8],
    ) -> Result<Self, CryptoError> {
        let resolved = Encr::resolve(encr, key_bits, integ)?;
        let (encr_len, integ_len) = resolved.key_lengths();
        check_len("encryption", encr_len, encr_key.len())?;
        check_len("integrity", integ_len, integ_key.len())?;
        let (key, salt) = encr_key.split_at(encr_len - resolved.salt_len());
        let salt = || {
            let mut s = Zeroizing::new([0u8; SALT_LEN]);
            s.copy_from_slice(salt);
            s
        };
        let bad_key = |_| CryptoError::KeyLength {
            what: "encryption",
            expected: encr_len,
            got: encr_key.len(),
        };
        let transform = match resolved {
            Encr::ChaCha20Poly1305 => Transform::ChaCha20Poly1305(
                ChaCha20Poly1305::new_from_slice(key).map_err(bad_key)?,
                salt(),
            ),
            Encr::AesGcm16 { key_len: 16 } => Transform::Aes128Gcm(
                Box::new(Aes128Gcm::new_from_slice(key).map_err(bad_key)?),
                salt(),
            ),
            Encr::AesGcm16 { .. } => Transform::Aes256Gcm(
                Box::new(Aes256Gcm::new_from_slice(key).map_err(bad_key)?),
                salt(),
            ),
            Encr::AesCbc { integ, .. } => Transform::AesCbc {
                key: Secret::from_slice(key),
                integ,
                integ_key: Secret::from_slice(integ_key),
            },
        };
        Ok(Self {
            transform,
            next_iv: 0,
        })
    }

    fn iv_len(&self) -> usize {
        match self.transform {
            Transform::AesCbc { .. } => AES_BLOCK_LEN,
            _ => AEAD_IV_LEN,
        }
    }

    fn icv_len(&self) -> usize {
        match &self.transform {
            Transform::AesCbc { integ, .. } => integ.icv_len(),
            _ => AEAD_TAG_LEN,
        }
    }

    fn block_len(&self) -> usize {
        match self.transform {
            Transform::AesCbc { .. } => AES_BLOCK_LEN,
            // AEAD ciphers here are stream-like: no padding is needed (RFC 7634 §3)
            _ => 1,
        }
    }

    /// Length of the SK payload body [`seal`](Self::seal) produces for `plaintext_len`
    /// octets: IV, padded ciphertext with the pad length octet, ICV.
    pub fn sealed_len(&self, plaintext_len: usize) -> usize {
        self.iv_len() + padded_len(plaintext_len, self.block_len()) + self.icv_len()
    }

    /// Encrypts `plaintext` into an SK payload body: IV | ciphertext | ICV.
    ///
    /// `aad` is the message from the IKE header through the SK (or SKF) payload header,
    /// with lengths already set for a body of [`sealed_len`](Self::sealed_len) octets.
    /// AEAD keys take their IV from a counter and refuse to seal once it is used up.
    pub fn seal(&mut self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let iv = match self.transform {
            Transform::AesCbc { .. } => {
                let mut iv = vec![0u8; AES_BLOCK_LEN];
                getrandom::fill(&mut iv).map_err(|_| CryptoError::Rng)?;
                iv
            }
            _ => {
                let iv = self.next_iv;
                self.next_iv = iv.checked_add(1).ok_or(CryptoError::IvExhausted)?;
                iv.to_be_bytes().to_vec()
            }
        };
        self.seal_with_iv(&iv, aad, plaintext)
    }

    /// [`seal`](Self::seal) with a caller-chosen IV, for known-answer tests.
    pub(crate) fn seal_with_iv(
        &self,
        iv: &[u8],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        if iv.len() != self.iv_len() {
            return Err(CryptoError::Malformed);
        }
        let mut buf = pad(plaintext, self.block_len());
        let mut body = Vec::with_capacity(self.sealed_len(plaintext.len()));
        body.extend_from_slice(iv);
        match &self.transform {
            Transform::ChaCha20Poly1305(aead, salt) => aead_seal(aead, salt, iv, aad, &mut buf)?,
            Transform::Aes128Gcm(aead, salt) => aead_seal(&**aead, salt, iv, aad, &mut buf)?,
            Transform::Aes256Gcm(aead, salt) => aead_seal(&**aead, salt, iv, aad, &mut buf)?,
            Transform::AesCbc {
                key,
                integ,
                integ_key,
            } => {
                cbc_encrypt(key.expose(), iv, &mut buf)?;
                body.extend_from_slice(&buf);
                body.extend(integ.icv(integ_key.expose(), &[aad, iv, &buf]));
                return Ok(body);
            }
        }
        body.extend_from_slice(&buf);
        Ok(body)
    }

    /// Verifies and decrypts an SK payload body, returning the plaintext without padding.
    /// For AES-CBC the ICV over `aad` | IV | ciphertext is checked, in constant time,
    /// before anything is decrypted.
    pub fn open(&self, aad: &[u8], body: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let (iv_len, icv_len) = (self.iv_len(), self.icv_len());
        // at least one ciphertext block (or octet): the pad length is always present
        if body.len() < iv_len + self.block_len() + icv_len {
            return Err(CryptoError::Malformed);
        }
        let (iv, rest) = body.split_at(iv_len);
        let (ciphertext, icv) = rest.split_at(rest.len() - icv_len);
        if ciphertext.len() % self.block_len() != 0 {
            return Err(CryptoError::Malformed);
        }
        let mut buf = Zeroizing::new(ciphertext.to_vec());
        match &self.transform {
            Transform::ChaCha20Poly1305(aead, salt) => {
                aead_open(aead, salt, iv, aad, &mut buf, icv)?
            }
            Transform::Aes128Gcm(aead, salt) => aead_open(&**aead, salt, iv, aad, &mut buf, icv)?,
            Transform::Aes256Gcm(aead, salt) => aead_open(&**aead, salt, iv, aad, &mut buf, icv)?,
            Transform::AesCbc {
                key,
                integ,
                integ_key,
            } => {
                let expected = integ.icv(integ_key.expose(), &[aad, iv, ciphertext]);
                if !bool::from(expected.ct_eq(icv)) {
                    return Err(CryptoError::Integrity);
                }
                cbc_decrypt(key.expose(), iv, &mut buf)?;
            }
        }
        unpad(&buf)
    }
}

fn check_len(what: &'static str, expected: usize, got: usize) -> Result<(), CryptoError> {
    if expected == got {
        Ok(())
    } else {
        Err(CryptoError::KeyLength {
            what,
            expected,
            got,
        })
    }
}

/// Plaintext, padding and the pad length octet rounded up to whole blocks.
fn padded_len(plaintext_len: usize, block_len: usize) -> usize {
    (plaintext_len + 1).div_ceil(block_len) * block_len
}

/// plaintext | zero padding | pad length (RFC 7296 §3.14).
fn pad(plaintext: &[u8], block_len: usize) -> Zeroizing<Vec<u8>> {
    let total = padded_len(plaintext.len(), block_len);
    let pad_len = total - plaintext.len() - 1;
    let mut buf = Zeroizing::new(Vec::with_capacity(total));
    buf.extend_from_slice(plaintext);
    buf.resize(total - 1, 0);
    // block_len <= 16 keeps the pad length below 256
    buf.push(pad_len as u8);
    buf
}

/// Strips padding and the pad length octet.
fn unpad(decrypted: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let (&pad_len, padded) = decrypted.split_last().ok_or(CryptoError::Padding)?;
    let len = padded
        .len()
        .checked_sub(usize::from(pad_len))
        .ok_or(CryptoError::Padding)?;
    padded
        .get(..len)
        .map(<[u8]>::to_vec)
        .ok_or(CryptoError::Padding)
}

fn aead_nonce<A: AeadInOut>(salt: &[u8; SALT_LEN], iv: &[u8]) -> Result<Nonce<A>, CryptoError> {
    let nonce: Vec<u8> = [salt.as_slice(), iv].concat();
    Nonce::<A>::try_from(nonce.as_slice()).map_err(|_| CryptoError::Malformed)
}

fn aead_seal<A: AeadInOut>(
    aead: &A,
    salt: &[u8; SALT_LEN],
    iv: &[u8],
    aad: &[u8],
    buf: &mut Zeroizing<Vec<u8>>,
) -> Result<(), CryptoError> {
    let nonce = aead_nonce::<A>(salt, iv)?;
    let tag = aead
        .encrypt_inout_detached(&nonce, aad, buf.as_mut_slice().into())
        .map_err(|_| CryptoError::Malformed)?;
    buf.extend_from_slice(&tag);
    Ok(())
}

fn aead_open<A: AeadInOut>(
    aead: &A,
    salt: &[u8; SALT_LEN],
    iv: &[u8],
    aad: &[u8],
    buf: &mut [u8],
    tag: &[u8],
) -> Result<(), CryptoError> {
    let nonce = aead_nonce::<A>(salt, iv)?;
    let tag = Tag::<A>::try_from(tag).map_err(|_| CryptoError::Malformed)?;
    aead.decrypt_inout_detached(&nonce, aad, buf.into(), &tag)
        .map_err(|_| CryptoError::Integrity)
}

fn cbc_encrypt(key: &[u8], iv: &[u8], buf: &mut [u8]) -> Result<(), CryptoError> {
    let len = buf.len();
    let done = match key.len() {
        16 => cbc::Encryptor::<Aes128>::new_from_slices(key, iv)
            .map_err(|_| CryptoError::Malformed)?
            .encrypt_padded::<NoPadding>(buf, len)
            .is_ok(),
        _ => cbc::Encryptor::<Aes256>::new_from_slices(key, iv)
            .map_err(|_| CryptoError::Malformed)?
            .encrypt_padded::<NoPadding>(buf, len)
            .is_ok(),
    };
    done.then_some(()).ok_or(CryptoError::Malformed)
}

fn cbc_decrypt(key: &[u8], iv: &[u8], buf: &mut [u8]) -> Result<(), CryptoError> {
    let done = match key.len() {
        16 => cbc::Decryptor::<Aes128>::new_from_slices(key, iv)
            .map_err(|_| CryptoError::Malformed)?
            .decrypt_padded::<NoPadding>(buf)
            .is_ok(),
        _ => cbc::Decryptor::<Aes256>::new_from_slices(key, iv)
            .map_err(|_| CryptoError::Malformed)?
            .decrypt_padded::<NoPadding>(buf)
            .is_ok(),
    };
    done.then_some(()).ok_or(CryptoError::Malformed)
}

impl fmt::Debug for SkCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match &self.transform {
            Transform::ChaCha20Poly1305(..) => "ChaCha20Poly1305",
            Transform::Aes128Gcm(..) => "AesGcm16_128",
            Transform::Aes256Gcm(..) => "AesGcm16_256",
            Transform::AesCbc { .. } => "AesCbc",
        };
        f.debug_struct("SkCipher")
            .field("transform", &name)
            .field("next_iv", &self.next_iv)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every suite we implement, with keys of the right length.
    fn suites() -> Vec<(&'static str, SkCipher)> {
        let make = |encr, bits, integ| {
            let (encr_len, integ_len) = SkCipher::key_lengths(encr, bits, integ).expect("suite");
            SkCipher::new(
                encr,
                bits,
                integ,
                &vec![0x5a; encr_len],
                &vec![0xa5; integ_len],
            )
            .expect("cipher")
        };
        vec![
            (
                "chacha20poly1305",
                make(EncrId::CHACHA20_POLY1305, None, IntegId::NONE),
            ),
            (
                "aes-gcm-128",
                make(EncrId::AES_GCM_16, Some(128), IntegId::NONE),
            ),
            (
                "aes-gcm-256",
                make(EncrId::AES_GCM_16, Some(256), IntegId::NONE),
            ),
            (
                "aes-cbc-128/sha256",
                make(EncrId::AES_CBC, Some(128), IntegId::HMAC_SHA2_256_128),
            ),
            (
                "aes-cbc-256/sha384",
                make(EncrId::AES_CBC, Some(256), IntegId::HMAC_SHA2_384_192),
            ),
            (
                "aes-cbc-256/sha512",
                make(EncrId::AES_CBC, Some(256), IntegId::HMAC_SHA2_512_256),
            ),
        ]
    }

    #[test]
    fn key_lengths_per_suite() {
        let lengths = |encr, bits, integ| SkCipher::key_lengths(encr, bits, integ);
        assert_eq!(
            lengths(EncrId::CHACHA20_POLY1305, None, IntegId::NONE),
            Ok((36, 0))
        );
        assert_eq!(
            lengths(EncrId::AES_GCM_16, Some(128), IntegId::NONE),
            Ok((20, 0))
        );
        assert_eq!(
            lengths(EncrId::AES_GCM_16, Some(256), IntegId::NONE),
            Ok((36, 0))
        );
        let cbc = |bits, integ| lengths(EncrId::AES_CBC, Some(bits), integ);
        assert_eq!(cbc(128, IntegId::HMAC_SHA2_256_128), Ok((16, 32)));
        assert_eq!(cbc(256, IntegId::HMAC_SHA2_384_192), Ok((32, 48)));
        assert_eq!(cbc(256, IntegId::HMAC_SHA2_512_256), Ok((32, 64)));
    }

    #[test]
    fn unsupported_combinations_are_refused() {
        let refused = |encr, bits, integ| {
            matches!(
                SkCipher::key_lengths(encr, bits, integ),
                Err(CryptoError::Unsupported(_))
            )
        };
        assert!(refused(EncrId::AES_GCM_16, None, IntegId::NONE));
        assert!(refused(EncrId::AES_GCM_16, Some(192), IntegId::NONE));
        assert!(refused(
            EncrId::AES_GCM_16,
            Some(128),
            IntegId::HMAC_SHA2_256_128
        ));
        assert!(refused(EncrId::CHACHA20_POLY1305, Some(256), IntegId::NONE));
        assert!(refused(
            EncrId::CHACHA20_POLY1305,
            None,
            IntegId::HMAC_SHA2_256_128
        ));
        assert!(refused(EncrId::AES_CBC, Some(128), IntegId::NONE));
        assert!(refused(EncrId::AES_CBC, Some(128), IntegId::HMAC_SHA1_96));
        assert!(refused(EncrId::AES_CBC, None, IntegId::HMAC_SHA2_256_128));
        assert!(refused(EncrId::AES_GCM_8, Some(128), IntegId::NONE));
    }

    #[test]
    fn wrong_key_lengths_are_refused() {
        let chacha = (EncrId::CHACHA20_POLY1305, None, IntegId::NONE);
        let gcm = (EncrId::AES_GCM_16, Some(128), IntegId::NONE);
        let cbc = (EncrId::AES_CBC, Some(256), IntegId::HMAC_SHA2_256_128);
        // (suite, given encryption and integrity key lengths, what, expected, got)
        let cases = [
            (chacha, (32, 0), "encryption", 36, 32),
            (chacha, (36, 16), "integrity", 0, 16),
            (gcm, (36, 0), "encryption", 20, 36),
            (cbc, (16, 32), "encryption", 32, 16),
            (cbc, (32, 20), "integrity", 32, 20),
        ];
        for ((encr, bits, integ), (encr_len, integ_len), what, expected, got) in cases {
            let result = SkCipher::new(encr, bits, integ, &vec![1; encr_len], &vec![2; integ_len]);
            let expected = CryptoError::KeyLength {
                what,
                expected,
                got,
            };
            assert_eq!(result.err(), Some(expected));
        }
    }

    #[test]
    fn round_trip_every_suite_and_length() {
        let aad = b"IKE header through the SK payload header";
        for (name, mut cipher) in suites() {
            for len in 0..70 {
                let plaintext: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let body = cipher.seal(aad, &plaintext).expect(name);
                assert_eq!(body.len(), cipher.sealed_len(len), "{name} {len}");
                assert_eq!(
                    cipher.open(aad, &body).expect(name),
                    plaintext,
                    "{name} {len}"
                );
            }
        }
    }

    #[test]
    fn tampering_is_detected() {
        let aad = b"header";
        let plaintext = b"IDi AUTH SA TSi TSr";
        for (name, mut cipher) in suites() {
            let body = cipher.seal(aad, plaintext).expect(name);
            // IV, ciphertext and ICV: every octet is covered
            for i in 0..body.len() {
                let mut bad = body.clone();
                bad[i] ^= 0x80;
                assert_eq!(
                    cipher.open(aad, &bad),
                    Err(CryptoError::Integrity),
                    "{name} {i}"
                );
            }
            assert_eq!(
                cipher.open(b"headeR", &body),
                Err(CryptoError::Integrity),
                "{name}"
            );
            assert_eq!(
                cipher.open(b"", &body),
                Err(CryptoError::Integrity),
                "{name}"
            );
            // a body cut short or extended no longer verifies, or does not parse
            for bad in [&body[..body.len() - 1], &[body.as_slice(), &[0]].concat()] {
                assert!(
                    matches!(
                        cipher.open(aad, bad),
                        Err(CryptoError::Integrity | CryptoError::Malformed)
                    ),
                    "{name}"
                );
            }
            assert_eq!(
                cipher.open(aad, &body[..8]),
                Err(CryptoError::Malformed),
                "{name}"
            );
            assert_eq!(cipher.open(aad, &[]), Err(CryptoError::Malformed), "{name}");
        }
    }

    #[test]
    fn each_direction_needs_its_own_key() {
        let (encr_len, _) =
            SkCipher::key_lengths(EncrId::AES_GCM_16, Some(256), IntegId::NONE).expect("suite");
        let mut ours = SkCipher::new(
            EncrId::AES_GCM_16,
            Some(256),
            IntegId::NONE,
            &vec![1; encr_len],
            &[],
        )
        .expect("cipher");
        let other = SkCipher::new(
            EncrId::AES_GCM_16,
            Some(256),
            IntegId::NONE,
            &vec![2; encr_len],
            &[],
        )
        .expect("cipher");
        let body = ours.seal(b"aad", b"secret").expect("seal");
        assert_eq!(other.open(b"aad", &body), Err(CryptoError::Integrity));
    }

    #[test]
    fn aead_ivs_count_up_and_stop_before_wrapping() {
        let (_, mut cipher) = suites().remove(0);
        let first = cipher.seal(b"", b"x").expect("seal");
        let second = cipher.seal(b"", b"x").expect("seal");
        assert_eq!(first[..AEAD_IV_LEN], 0u64.to_be_bytes());
        assert_eq!(second[..AEAD_IV_LEN], 1u64.to_be_bytes());
        assert_ne!(first, second);
        cipher.next_iv = u64::MAX - 1;
        let last = cipher.seal(b"", b"x").expect("last IV");
        assert_eq!(last[..AEAD_IV_LEN], (u64::MAX - 1).to_be_bytes());
        assert_eq!(cipher.seal(b"", b"x"), Err(CryptoError::IvExhausted));
        assert_eq!(cipher.seal(b"", b"x"), Err(CryptoError::IvExhausted));
    }

    #[test]
    fn cbc_ivs_are_random() {
        let (_, mut cipher) = suites().remove(3);
        let a = cipher.seal(b"", b"same").expect("seal");
        let b = cipher.seal(b"", b"same").expect("seal");
        assert_ne!(a[..AES_BLOCK_LEN], b[..AES_BLOCK_LEN]);
    }

    /// A CBC body whose decrypted last octet is `pad_len`, with a valid ICV.
    fn cbc_body_with_pad_length(cipher: &SkCipher, aad: &[u8], pad_len: u8) -> Vec<u8> {
        let Transform::AesCbc {
            key,
            integ,
            integ_key,
        } = &cipher.transform
        else {
            panic!("not a CBC cipher");
        };
        let iv = [3u8; AES_BLOCK_LEN];
        let mut buf = [0u8; 2 * AES_BLOCK_LEN];
        buf[2 * AES_BLOCK_LEN - 1] = pad_len;
        cbc_encrypt(key.expose(), &iv, &mut buf).expect("encrypt");
        let icv = integ.icv(integ_key.expose(), &[aad, &iv, &buf]);
        [&iv[..], &buf, &icv].concat()
    }

    #[test]
    fn bad_cbc_padding_is_rejected() {
        let (_, cipher) = suites().remove(4);
        // 32 decrypted octets: pad length 31 leaves an empty payload, 32 or more cannot fit
        let ok = cbc_body_with_pad_length(&cipher, b"aad", 31);
        assert_eq!(cipher.open(b"aad", &ok), Ok(Vec::new()));
        let fits = cbc_body_with_pad_length(&cipher, b"aad", 3);
        assert_eq!(cipher.open(b"aad", &fits).expect("open").len(), 28);
        for pad_len in [32, 33, 255] {
            let bad = cbc_body_with_pad_length(&cipher, b"aad", pad_len);
            assert_eq!(
                cipher.open(b"aad", &bad),
                Err(CryptoError::Padding),
                "{pad_len}"
            );
        }
    }

    #[test]
    fn bad_aead_padding_is_rejected() {
        let (_, cipher) = suites().remove(1);
        let Transform::Aes128Gcm(aead, salt) = &cipher.transform else {
            panic!("not AES-GCM");
        };
        let iv = [0u8; AEAD_IV_LEN];
        for (decrypted, expected) in [
            (vec![1u8, 2, 0], Ok(vec![1, 2])),
            (vec![1u8, 2, 2], Ok(Vec::new())),
            (vec![1u8, 2, 3], Err(CryptoError::Padding)),
            (vec![200u8], Err(CryptoError::Padding)),
        ] {
            let mut buf = Zeroizing::new(decrypted);
            aead_seal(&**aead, salt, &iv, b"aad", &mut buf).expect("seal");
            let body = [&iv[..], &buf].concat();
            assert_eq!(cipher.open(b"aad", &body), expected);
        }
    }

    #[test]
    fn cbc_body_must_be_whole_blocks() {
        let (_, cipher) = suites().remove(3);
        let good = cbc_body_with_pad_length(&cipher, b"", 0);
        let icv_len = cipher.icv_len();
        let (head, icv) = good.split_at(good.len() - icv_len);
        let uneven = [&head[..head.len() - 1], icv].concat();
        assert_eq!(cipher.open(b"", &uneven), Err(CryptoError::Malformed));
    }

    #[test]
    fn debug_shows_no_key() {
        for (name, cipher) in suites() {
            let printed = format!("{cipher:?}");
            // the keys are 0x5a and 0xa5 octets: neither hex nor decimal forms may appear
            for key in ["5a5a", "a5a5", "90, 90", "165, 165"] {
                assert!(!printed.contains(key), "{name}: {printed}");
            }
        }
    }
}
