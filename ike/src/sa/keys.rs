//! The key material of an IKE SA and of child SAs (RFC 7296 §2.13, §2.14, §2.17, §2.18),
//! the Diffie-Hellman exchange and the SK payload cipher, behind the few calls the
//! exchanges make.

use crate::config::{EspSuite, IkeSuite};
use crate::iana::{DhId, EncrId, IntegId, PrfId};
use crate::secret::Secret;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};
use hmac::{Hmac, Mac};
use sha2::{Sha256, Sha384, Sha512};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("algorithm {0} is not supported")]
    Unsupported(&'static str),
    #[error("peer's key exchange data is invalid")]
    BadPublicKey,
    #[error("integrity check failed")]
    Integrity,
    #[error("no randomness available")]
    Random,
}

pub(crate) fn random_bytes(len: usize) -> Result<Vec<u8>, KeyError> {
    let mut out = vec![0; len];
    getrandom::fill(&mut out).map_err(|_| KeyError::Random)?;
    Ok(out)
}

pub(crate) fn random_u64() -> Result<u64, KeyError> {
    let mut out = [0; 8];
    getrandom::fill(&mut out).map_err(|_| KeyError::Random)?;
    Ok(u64::from_be_bytes(out))
}

pub(crate) fn random_u32() -> Result<u32, KeyError> {
    let mut out = [0; 4];
    getrandom::fill(&mut out).map_err(|_| KeyError::Random)?;
    Ok(u32::from_be_bytes(out))
}

/// A negotiated pseudorandom function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Prf(PrfId);

impl Prf {
    pub fn new(id: PrfId) -> Result<Self, KeyError> {
        match id {
            PrfId::HMAC_SHA2_256 | PrfId::HMAC_SHA2_384 | PrfId::HMAC_SHA2_512 => Ok(Self(id)),
            _ => Err(KeyError::Unsupported("PRF")),
        }
    }

    pub fn compute(self, key: &[u8], data: &[u8]) -> Secret {
        fn mac<M: Mac + hmac::KeyInit>(key: &[u8], data: &[u8]) -> Secret {
            // HMAC takes keys of any length; the error cannot occur.
            let mut m = <M as hmac::KeyInit>::new_from_slice(key).unwrap_or_else(|_| {
                <M as hmac::KeyInit>::new_from_slice(&[]).expect("empty HMAC key")
            });
            m.update(data);
            Secret::new(m.finalize().into_bytes().to_vec())
        }
        match self.0 {
            PrfId::HMAC_SHA2_384 => mac::<Hmac<Sha384>>(key, data),
            PrfId::HMAC_SHA2_512 => mac::<Hmac<Sha512>>(key, data),
            _ => mac::<Hmac<Sha256>>(key, data),
        }
    }

    /// prf+ (RFC 7296 §2.13), `len` bytes.
    pub fn plus(self, key: &[u8], seed: &[u8], len: usize) -> Secret {
        let mut out = Vec::with_capacity(len);
        let mut t: Vec<u8> = Vec::new();
        let mut counter = 1u8;
        while out.len() < len {
            let mut input = std::mem::take(&mut t);
            input.extend_from_slice(seed);
            input.push(counter);
            t = self.compute(key, &input).expose().to_vec();
            out.extend_from_slice(&t);
            counter = counter.wrapping_add(1);
        }
        out.truncate(len);
        Secret::new(out)
    }
}

/// Our half of a Diffie-Hellman exchange.
pub(crate) enum DhSecret {
    X25519(x25519_dalek::StaticSecret),
    P256(p256::SecretKey),
}

const P256_COORDINATES: usize = 64;

impl DhSecret {
    /// A fresh key pair and the public value as sent in KE.
    pub fn generate(group: DhId) -> Result<(Self, Vec<u8>), KeyError> {
        match group {
            DhId::CURVE25519 => {
                let bytes: [u8; 32] = random_bytes(32)?.try_into().map_err(|_| KeyError::Random)?;
                let secret = x25519_dalek::StaticSecret::from(bytes);
                let public = x25519_dalek::PublicKey::from(&secret).as_bytes().to_vec();
                Ok((DhSecret::X25519(secret), public))
            }
            DhId::ECP_256 => loop {
                if let Ok(secret) = p256::SecretKey::from_slice(&random_bytes(32)?) {
                    // SEC1 uncompressed without the 0x04 prefix (RFC 5903 §7).
                    let sec1 = secret.public_key().to_sec1_bytes();
                    let public = sec1.get(1..).unwrap_or_default().to_vec();
                    return Ok((DhSecret::P256(secret), public));
                }
            },
            _ => Err(KeyError::Unsupported("DH group")),
        }
    }

    pub fn group(&self) -> DhId {
        match self {
            DhSecret::X25519(_) => DhId::CURVE25519,
            DhSecret::P256(_) => DhId::ECP_256,
        }
    }

    pub fn agree(&self, peer: &[u8]) -> Result<Secret, KeyError> {
        match self {
            DhSecret::X25519(secret) => {
                let peer: [u8; 32] = peer.try_into().map_err(|_| KeyError::BadPublicKey)?;
                let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(peer));
                if !shared.was_contributory() {
                    return Err(KeyError::BadPublicKey);
                }
                Ok(Secret::from_slice(shared.as_bytes()))
            }
            DhSecret::P256(secret) => {
                if peer.len() != P256_COORDINATES {
                    return Err(KeyError::BadPublicKey);
                }
                let mut sec1 = Vec::with_capacity(1 + P256_COORDINATES);
                sec1.push(4);
                sec1.extend_from_slice(peer);
                let public =
                    p256::PublicKey::from_sec1_bytes(&sec1).map_err(|_| KeyError::BadPublicKey)?;
                let shared =
                    p256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), public.as_affine());
                Ok(Secret::from_slice(shared.raw_secret_bytes()))
            }
        }
    }
}

pub(crate) fn dh_supported(group: DhId) -> bool {
    matches!(group, DhId::CURVE25519 | DhId::ECP_256)
}

const AEAD_SALT_LEN: usize = 4;
const AEAD_IV_LEN: usize = 8;
const AEAD_ICV_LEN: usize = 16;

/// The SK payload cipher of one direction (RFC 7634: ChaCha20-Poly1305 with a 4-byte
/// salt from the key material and an 8-byte explicit IV).
pub(crate) struct SkCipher {
    aead: ChaCha20Poly1305,
    salt: [u8; AEAD_SALT_LEN],
    counter: u64,
}

impl SkCipher {
    fn new(key: &[u8]) -> Result<Self, KeyError> {
        let (key, salt) = key
            .split_at_checked(32)
            .ok_or(KeyError::Unsupported("SK key length"))?;
        Ok(Self {
            aead: ChaCha20Poly1305::new_from_slice(key)
                .map_err(|_| KeyError::Unsupported("SK key length"))?,
            salt: salt
                .try_into()
                .map_err(|_| KeyError::Unsupported("SK salt"))?,
            counter: 0,
        })
    }

    pub fn sealed_len(&self, plaintext: usize) -> usize {
        AEAD_IV_LEN + plaintext + 1 + AEAD_ICV_LEN
    }

    fn nonce(&self, iv: &[u8; AEAD_IV_LEN]) -> Nonce {
        let mut n = [0; 12];
        n[..AEAD_SALT_LEN].copy_from_slice(&self.salt);
        n[AEAD_SALT_LEN..].copy_from_slice(iv);
        Nonce::from(n)
    }

    /// IV || ciphertext(plaintext | pad length 0) || ICV.
    pub fn seal(&mut self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        self.counter = self.counter.wrapping_add(1);
        let iv = self.counter.to_be_bytes();
        let mut buf = plaintext.to_vec();
        buf.push(0);
        let tag = self
            .aead
            .encrypt_inout_detached(&self.nonce(&iv), aad, buf.as_mut_slice().into())
            .expect("ChaCha20-Poly1305 seals any IKE message length");
        let mut out = iv.to_vec();
        out.extend_from_slice(&buf);
        out.extend_from_slice(&tag);
        out
    }

    pub fn open(&self, aad: &[u8], body: &[u8]) -> Result<Vec<u8>, KeyError> {
        let (iv, rest) = body
            .split_at_checked(AEAD_IV_LEN)
            .ok_or(KeyError::Integrity)?;
        let split = rest
            .len()
            .checked_sub(AEAD_ICV_LEN)
            .ok_or(KeyError::Integrity)?;
        let (ciphertext, icv) = rest.split_at(split);
        let iv: [u8; AEAD_IV_LEN] = iv.try_into().map_err(|_| KeyError::Integrity)?;
        let tag = Tag::try_from(icv).map_err(|_| KeyError::Integrity)?;
        let mut buf = ciphertext.to_vec();
        self.aead
            .decrypt_inout_detached(&self.nonce(&iv), aad, buf.as_mut_slice().into(), &tag)
            .map_err(|_| KeyError::Integrity)?;
        let pad = usize::from(*buf.last().ok_or(KeyError::Integrity)?);
        let keep = buf.len().checked_sub(pad + 1).ok_or(KeyError::Integrity)?;
        buf.truncate(keep);
        Ok(buf)
    }
}

fn sk_key_len(suite: &IkeSuite) -> Result<usize, KeyError> {
    match (suite.encr, suite.integ) {
        (EncrId::CHACHA20_POLY1305, IntegId::NONE) => Ok(32 + AEAD_SALT_LEN),
        _ => Err(KeyError::Unsupported("IKE cipher")),
    }
}

pub(crate) fn ike_suite_supported(suite: &IkeSuite) -> bool {
    sk_key_len(suite).is_ok() && Prf::new(suite.prf).is_ok() && dh_supported(suite.dh)
}

pub(crate) fn esp_suite_supported(suite: &EspSuite) -> bool {
    esp_key_len(suite).is_ok()
}

fn esp_key_len(suite: &EspSuite) -> Result<usize, KeyError> {
    match (suite.encr, suite.key_bits, suite.integ) {
        (EncrId::CHACHA20_POLY1305, None, IntegId::NONE) => Ok(32 + AEAD_SALT_LEN),
        (EncrId::AES_GCM_16, Some(bits @ (128 | 256)), IntegId::NONE) => {
            Ok(usize::from(bits / 8) + AEAD_SALT_LEN)
        }
        _ => Err(KeyError::Unsupported("ESP cipher")),
    }
}

/// The keys of an established IKE SA, from our point of view.
pub(crate) struct IkeKeys {
    pub prf: Prf,
    pub sk_d: Secret,
    /// SK_p of our side and of the peer's (for the AUTH payloads).
    pub sk_p_ours: Secret,
    pub sk_p_peer: Secret,
    pub out: SkCipher,
    pub inb: SkCipher,
}

/// Material of one IKE SA key derivation.
pub(crate) struct Exchanged<'a> {
    pub shared: &'a Secret,
    pub ni: &'a [u8],
    pub nr: &'a [u8],
    pub spi_i: u64,
    pub spi_r: u64,
}

impl IkeKeys {
    /// Derives the keys (RFC 7296 §2.14), or for a rekey (§2.18) from the old SA's
    /// `SK_d` and PRF.
    pub fn derive(
        suite: &IkeSuite,
        x: &Exchanged<'_>,
        rekey_of: Option<(Prf, &Secret)>,
        we_are_initiator: bool,
    ) -> Result<Self, KeyError> {
        let prf = Prf::new(suite.prf)?;
        let nonces = [x.ni, x.nr].concat();
        let skeyseed = match rekey_of {
            None => prf.compute(&nonces, x.shared.expose()),
            Some((old_prf, old_sk_d)) => {
                old_prf.compute(old_sk_d.expose(), &[x.shared.expose(), &nonces].concat())
            }
        };
        let prf_len = prf.compute(&[], &[]).len();
        let e_len = sk_key_len(suite)?;
        let mut seed = nonces;
        seed.extend_from_slice(&x.spi_i.to_be_bytes());
        seed.extend_from_slice(&x.spi_r.to_be_bytes());
        let total = 3 * prf_len + 2 * e_len;
        let km = prf.plus(skeyseed.expose(), &seed, total);
        let km = km.expose();
        let mut at = 0;
        let mut take = |n: usize| {
            let s = Secret::from_slice(km.get(at..at + n).unwrap_or_default());
            at += n;
            s
        };
        let sk_d = take(prf_len);
        let sk_ei = take(e_len);
        let sk_er = take(e_len);
        let sk_pi = take(prf_len);
        let sk_pr = take(prf_len);
        let (out, inb, ours, peer) = if we_are_initiator {
            (sk_ei, sk_er, sk_pi, sk_pr)
        } else {
            (sk_er, sk_ei, sk_pr, sk_pi)
        };
        Ok(Self {
            prf,
            sk_d,
            sk_p_ours: ours,
            sk_p_peer: peer,
            out: SkCipher::new(out.expose())?,
            inb: SkCipher::new(inb.expose())?,
        })
    }

    /// KEYMAT for a child SA (§2.17): the initiator-to-responder key first.
    /// Returns (initiator to responder, responder to initiator).
    pub fn child_keymat(
        &self,
        suite: &EspSuite,
        shared: Option<&Secret>,
        ni: &[u8],
        nr: &[u8],
    ) -> Result<(Secret, Secret), KeyError> {
        let len = esp_key_len(suite)?;
        let mut seed = shared.map(|s| s.expose().to_vec()).unwrap_or_default();
        seed.extend_from_slice(ni);
        seed.extend_from_slice(nr);
        let km = self.prf.plus(self.sk_d.expose(), &seed, 2 * len);
        let (a, b) = km.expose().split_at(len);
        Ok((Secret::from_slice(a), Secret::from_slice(b)))
    }
}
