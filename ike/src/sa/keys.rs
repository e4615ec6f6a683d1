//! The key material of an IKE SA and its child SAs as the exchanges use it, on top of
//! [`crate::crypto`]: which SK cipher goes which way, which SK_p is ours.

use super::child::EspKeys;
use crate::config::{EspSuite, IkeSuite};
use crate::crypto::{CryptoError, DhGroup, DhPrivate, IkeSaKeys, Prf, SkCipher, child_keymat};
use crate::iana::DhId;
use crate::secret::Secret;
use tracing::warn;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error(transparent)]
    Crypto(#[from] CryptoError),
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

/// A fresh, non-zero SPI for a child SA.
pub(crate) fn random_u32() -> Result<u32, KeyError> {
    loop {
        let mut out = [0; 4];
        getrandom::fill(&mut out).map_err(|_| KeyError::Random)?;
        // SPIs 1-255 are reserved by IANA, 0 means none (RFC 4303 §2.1).
        let spi = u32::from_be_bytes(out);
        if spi > 255 {
            return Ok(spi);
        }
    }
}

/// A fresh DH private value and our KE data.
pub(crate) fn dh_generate(group: DhId) -> Result<(DhPrivate, Vec<u8>), KeyError> {
    let group = DhGroup::from_id(group).ok_or(CryptoError::Unsupported("DH group"))?;
    let private = DhPrivate::generate(group)?;
    let public = private.public_key();
    Ok((private, public))
}

pub(crate) fn dh_supported(group: DhId) -> bool {
    DhGroup::from_id(group).is_some()
}

pub(crate) fn ike_suite_supported(suite: &IkeSuite) -> bool {
    SkCipher::key_lengths(suite.encr, suite.key_bits, suite.integ).is_ok()
        && Prf::from_id(suite.prf).is_some()
        && dh_supported(suite.dh)
}

pub(crate) fn esp_suite_supported(suite: &EspSuite) -> bool {
    SkCipher::key_lengths(suite.encr, suite.key_bits, suite.integ).is_ok()
}

/// The keys of an established IKE SA, from our point of view.
pub(crate) struct IkeKeys {
    pub prf: Prf,
    pub sk_d: Secret,
    /// SK_p, for the AUTH payloads of IKE_AUTH alone: gone once the SA is established
    /// (and never kept for one a rekey made), as no later exchange signs with it. Boxed,
    /// so that what is gone leaves no room behind in every established SA.
    pub sk_p: Option<Box<AuthKeys>>,
    pub out: SkCipher,
    pub inb: SkCipher,
}

/// SK_p of our side and of the peer's.
pub(crate) struct AuthKeys {
    pub ours: Secret,
    pub peer: Secret,
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
    /// `SK_d` and PRF. `log_keys` is [`crate::config::Config::log_keys`].
    pub fn derive(
        suite: &IkeSuite,
        x: &Exchanged<'_>,
        rekey_of: Option<(Prf, &Secret)>,
        we_are_initiator: bool,
        log_keys: bool,
    ) -> Result<Self, KeyError> {
        let prf = Prf::from_id(suite.prf).ok_or(CryptoError::Unsupported("PRF"))?;
        let skeyseed = match rekey_of {
            None => IkeSaKeys::skeyseed(prf, x.ni, x.nr, x.shared.expose()),
            Some((old_prf, old_sk_d)) => {
                IkeSaKeys::rekey_skeyseed(old_prf, old_sk_d.expose(), x.shared.expose(), x.ni, x.nr)
            }
        };
        let lengths = SkCipher::key_lengths(suite.encr, suite.key_bits, suite.integ)?;
        let k = IkeSaKeys::derive(
            prf,
            skeyseed.expose(),
            x.ni,
            x.nr,
            &x.spi_i.to_be_bytes(),
            &x.spi_r.to_be_bytes(),
            lengths,
        )?;
        let cipher = |e: &Secret, a: &Secret| {
            SkCipher::new(
                suite.encr,
                suite.key_bits,
                suite.integ,
                e.expose(),
                a.expose(),
            )
        };
        if log_keys {
            let hex = |s: &Secret| hex::encode(s.expose());
            warn!(
                spi_i = %format!("{:016x}", x.spi_i),
                spi_r = %format!("{:016x}", x.spi_r),
                sk_ei = %hex(&k.sk_ei),
                sk_er = %hex(&k.sk_er),
                sk_ai = %hex(&k.sk_ai),
                sk_ar = %hex(&k.sk_ar),
                "IKE SA keys (insecure key logging is on)"
            );
        }
        let ci = cipher(&k.sk_ei, &k.sk_ai)?;
        let cr = cipher(&k.sk_er, &k.sk_ar)?;
        let (out, inb, ours, peer) = if we_are_initiator {
            (ci, cr, k.sk_pi, k.sk_pr)
        } else {
            (cr, ci, k.sk_pr, k.sk_pi)
        };
        Ok(Self {
            prf,
            sk_d: k.sk_d,
            sk_p: rekey_of
                .is_none()
                .then(|| Box::new(AuthKeys { ours, peer })),
            out,
            inb,
        })
    }

    /// KEYMAT for a child SA (§2.17): initiator-to-responder keys first, each direction
    /// the encryption key then the integrity key. Returns (i to r, r to i).
    pub fn child_keys(
        &self,
        suite: &EspSuite,
        shared: Option<&Secret>,
        ni: &[u8],
        nr: &[u8],
    ) -> Result<(EspKeys, EspKeys), KeyError> {
        let (e_len, a_len) = SkCipher::key_lengths(suite.encr, suite.key_bits, suite.integ)?;
        let km = child_keymat(
            self.prf,
            self.sk_d.expose(),
            shared.map(Secret::expose),
            ni,
            nr,
            2 * (e_len + a_len),
        )?;
        let km = km.expose();
        let take = |from: usize, len: usize| {
            Secret::from_slice(km.get(from..from + len).unwrap_or_default())
        };
        let dir = |at: usize| EspKeys {
            encr: take(at, e_len),
            integ: take(at + e_len, a_len),
        };
        Ok((dir(0), dir(e_len + a_len)))
    }
}
