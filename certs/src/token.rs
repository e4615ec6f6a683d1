//! Single-use join tokens.
//!
//! A token is 256 random bits, shown to the operator once in base64url. The CA keeps only
//! its SHA-256 hash, looked up by the hash's first half and then compared in full in
//! constant time, so neither the database nor the lookup's timing reveals a usable token.

use std::fmt;
use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::UnixSecs;

const TOKEN_LEN: usize = 32;

/// A join token as handed to an operator. The secret is wiped on drop and never shown by
/// `Debug`.
pub struct JoinToken(Zeroizing<[u8; TOKEN_LEN]>);

impl JoinToken {
    /// A fresh random token.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = Zeroizing::new([0u8; TOKEN_LEN]);
        getrandom::fill(bytes.as_mut())?;
        Ok(Self(bytes))
    }

    /// Parses the base64url form; anything else is not a token.
    pub fn parse(text: &str) -> Result<Self, TokenError> {
        let decoded = Zeroizing::new(
            URL_SAFE_NO_PAD
                .decode(text.trim())
                .map_err(|_| TokenError::Malformed)?,
        );
        let bytes: [u8; TOKEN_LEN] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| TokenError::Malformed)?;
        Ok(Self(Zeroizing::new(bytes)))
    }

    /// The base64url text to give to the joining node's operator.
    pub fn reveal(&self) -> Zeroizing<String> {
        Zeroizing::new(URL_SAFE_NO_PAD.encode(self.0.as_ref()))
    }

    /// The hash under which the CA stores this token.
    pub fn hash(&self) -> TokenHash {
        TokenHash(Sha256::digest(self.0.as_ref()).into())
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JoinToken(..)")
    }
}

/// SHA-256 of a token.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// The database key: the first half of the hash. The second half is only ever compared
    /// in constant time (see [`TokenRecord::check`]).
    pub fn lookup_key(&self) -> [u8; 16] {
        let mut key = [0u8; 16];
        key.copy_from_slice(&self.0[..16]);
        key
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

/// What the CA remembers about a token it issued.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub hash: TokenHash,
    /// The only identity the token may enroll.
    pub identity: String,
    /// The tunnel endpoint the issued certificate will carry.
    pub endpoint: IpAddr,
    pub created: UnixSecs,
    /// The token is refused from this second on.
    pub expires: UnixSecs,
    /// When the token was redeemed, and for which serial; `None` while unused.
    pub used: Option<(UnixSecs, String)>,
}

/// Why a token was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a 256-bit base64url value")]
    Malformed,
    #[error("no such token")]
    Unknown,
    #[error("the token has expired")]
    Expired,
    #[error("the token has already been used")]
    Used,
    #[error("the token is bound to another identity or endpoint")]
    Mismatch,
}

impl TokenRecord {
    /// Checks that `hash` is this token's and that it is still usable at `now`. Stores call
    /// this inside the transaction that redeems it.
    pub fn check(&self, hash: &TokenHash, now: UnixSecs) -> Result<(), TokenError> {
        if !bool::from(self.hash.0.ct_eq(&hash.0)) {
            return Err(TokenError::Unknown);
        }
        if self.used.is_some() {
            return Err(TokenError::Used);
        }
        if now >= self.expires {
            return Err(TokenError::Expired);
        }
        Ok(())
    }

    /// Checks, in addition to [`check`](Self::check), that an issued certificate's record
    /// matches the identity and endpoint the token is bound to.
    pub fn check_redeem(
        &self,
        hash: &TokenHash,
        now: UnixSecs,
        issued: &crate::IssuedRecord,
    ) -> Result<(), TokenError> {
        self.check(hash, now)?;
        if issued.identity != self.identity || issued.endpoint != Some(self.endpoint) {
            return Err(TokenError::Mismatch);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(token: &JoinToken) -> TokenRecord {
        TokenRecord {
            hash: token.hash(),
            identity: "b.vn.example".into(),
            endpoint: "192.0.2.2".parse().unwrap(),
            created: 100,
            expires: 200,
            used: None,
        }
    }

    #[test]
    fn round_trip_and_secrecy() {
        let token = JoinToken::generate().unwrap();
        let text = token.reveal();
        assert_eq!(text.len(), 43);
        assert_eq!(JoinToken::parse(&text).unwrap().hash(), token.hash());
        assert!(!format!("{token:?}").contains(text.as_str()));
        assert_ne!(JoinToken::generate().unwrap().hash(), token.hash());
    }

    #[test]
    fn malformed() {
        assert_eq!(
            JoinToken::parse("short").unwrap_err(),
            TokenError::Malformed
        );
        assert_eq!(
            JoinToken::parse(&"A".repeat(44)).unwrap_err(),
            TokenError::Malformed
        );
        assert_eq!(JoinToken::parse("!!!!").unwrap_err(), TokenError::Malformed);
    }

    #[test]
    fn expiry_and_use() {
        let token = JoinToken::generate().unwrap();
        let mut rec = record(&token);
        assert_eq!(rec.check(&token.hash(), 199), Ok(()));
        assert_eq!(rec.check(&token.hash(), 200), Err(TokenError::Expired));
        rec.used = Some((150, "01".into()));
        assert_eq!(rec.check(&token.hash(), 150), Err(TokenError::Used));
    }

    #[test]
    fn same_lookup_key_other_hash_is_refused() {
        // Reaches the full constant-time comparison: the lookup key matches, the rest differs.
        let token = JoinToken::generate().unwrap();
        let rec = record(&token);
        let mut forged = token.hash();
        forged.0[31] ^= 1;
        assert_eq!(forged.lookup_key(), token.hash().lookup_key());
        assert_eq!(rec.check(&forged, 150), Err(TokenError::Unknown));
    }
}
