//! Key derivation for IKE SAs and Child SAs (RFC 7296 §2.14, §2.17, §2.18).

use super::{CryptoError, Prf};
use crate::secret::Secret;

/// The seven IKE SA secrets, in the order prf+ produces them.
///
/// SK_d, SK_pi and SK_pr are as long as the PRF output (RFC 7296 §2.14, the PRF's
/// preferred key length for HMAC); SK_a* and SK_e* as long as the suite's integrity and
/// encryption keys (see [`SkCipher::key_lengths`](super::SkCipher::key_lengths)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IkeSaKeys {
    pub sk_d: Secret,
    pub sk_ai: Secret,
    pub sk_ar: Secret,
    pub sk_ei: Secret,
    pub sk_er: Secret,
    pub sk_pi: Secret,
    pub sk_pr: Secret,
}

impl IkeSaKeys {
    /// SKEYSEED of a new IKE SA from IKE_SA_INIT: prf(Ni | Nr, g^ir).
    pub fn skeyseed(prf: Prf, ni: &[u8], nr: &[u8], shared: &[u8]) -> Secret {
        prf.compute(&[ni, nr].concat(), shared)
    }

    /// SKEYSEED of an IKE SA rekeyed by CREATE_CHILD_SA:
    /// prf(SK_d(old), g^ir(new) | Ni | Nr), where `old_prf` and `old_sk_d` belong to the
    /// IKE SA being rekeyed and the nonces are those of the CREATE_CHILD_SA exchange.
    pub fn rekey_skeyseed(
        old_prf: Prf,
        old_sk_d: &[u8],
        shared: &[u8],
        ni: &[u8],
        nr: &[u8],
    ) -> Secret {
        old_prf.compute_parts(old_sk_d, &[shared, ni, nr])
    }

    /// {SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr} =
    /// prf+(SKEYSEED, Ni | Nr | SPIi | SPIr), with `prf` the new SA's PRF.
    /// `key_lengths` is (encryption key including any salt, integrity key), as returned by
    /// [`SkCipher::key_lengths`](super::SkCipher::key_lengths) for the new SA's suite.
    pub fn derive(
        prf: Prf,
        skeyseed: &[u8],
        ni: &[u8],
        nr: &[u8],
        spi_i: &[u8; 8],
        spi_r: &[u8; 8],
        key_lengths: (usize, usize),
    ) -> Result<Self, CryptoError> {
        let (encr_key_len, integ_key_len) = key_lengths;
        let prf_len = prf.output_len();
        let total = 3 * prf_len + 2 * integ_key_len + 2 * encr_key_len;
        let block = prf.plus_parts(skeyseed, &[ni, nr, spi_i, spi_r], total)?;
        let mut rest = block.expose();
        let mut take = |len: usize| {
            let (key, tail) = rest.split_at(len);
            rest = tail;
            Secret::from_slice(key)
        };
        Ok(Self {
            sk_d: take(prf_len),
            sk_ai: take(integ_key_len),
            sk_ar: take(integ_key_len),
            sk_ei: take(encr_key_len),
            sk_er: take(encr_key_len),
            sk_pi: take(prf_len),
            sk_pr: take(prf_len),
        })
    }
}

/// Child SA keying material (RFC 7296 §2.17): KEYMAT = prf+(SK_d, Ni | Nr), or with a
/// CREATE_CHILD_SA key exchange prf+(SK_d, g^ir(new) | Ni | Nr). `len` is the total of
/// all Child SA keys; they are taken from KEYMAT in the order of §2.17.
pub fn child_keymat(
    prf: Prf,
    sk_d: &[u8],
    shared: Option<&[u8]>,
    ni: &[u8],
    nr: &[u8],
    len: usize,
) -> Result<Secret, CryptoError> {
    match shared {
        Some(shared) => prf.plus_parts(sk_d, &[shared, ni, nr], len),
        None => prf.plus_parts(sk_d, &[ni, nr], len),
    }
}
