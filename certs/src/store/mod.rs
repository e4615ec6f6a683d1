//! The CA database interface: every method is one atomic operation, so a failure or a
//! concurrent request can never leave a token used without its certificate recorded, or
//! the other way round.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::UnixSecs;
use crate::token::{TokenError, TokenHash, TokenRecord};

/// A certificate the CA issued.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedRecord {
    /// Serial number, lowercase hex.
    pub serial: String,
    pub identity: String,
    /// The tunnel endpoint in the certificate; `None` for the enrollment server's own.
    pub endpoint: Option<IpAddr>,
    pub not_before: UnixSecs,
    pub not_after: UnixSecs,
    /// The serial this certificate renewed, if it came from a re-enrollment.
    pub renews: Option<String>,
    pub revoked_at: Option<UnixSecs>,
}

/// Why a database operation did not happen. Nothing was changed when one is returned.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("no certificate with serial {0}")]
    UnknownSerial(String),
    #[error("certificate {0} is revoked")]
    Revoked(String),
    #[error("serial {0} is already recorded")]
    DuplicateSerial(String),
    #[error("token already stored")]
    DuplicateToken,
    #[error("CA database: {0}")]
    Backend(String),
}

/// The CA's persistent state. Implementations make each method atomic.
pub trait CaStore: Send + Sync {
    /// Stores a new, unused token.
    fn put_token(&self, token: &TokenRecord) -> Result<(), StoreError>;

    /// The token stored under `hash`'s lookup key, if any (not yet checked against `hash`).
    fn token(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, StoreError>;

    /// In one transaction: checks the token with [`TokenRecord::check_redeem`], marks it
    /// used and records `issued`.
    fn redeem_token_and_record(
        &self,
        hash: &TokenHash,
        now: UnixSecs,
        issued: &IssuedRecord,
    ) -> Result<(), StoreError>;

    /// Records a certificate issued without a token (the enrollment server's own).
    fn record_issued(&self, issued: &IssuedRecord) -> Result<(), StoreError>;

    /// In one transaction: checks that `issued.renews` names a known, unrevoked certificate
    /// and records `issued`.
    fn record_reissue(&self, issued: &IssuedRecord) -> Result<(), StoreError>;

    /// Marks a certificate revoked at `now` (idempotent) and returns its record.
    fn revoke(&self, serial: &str, now: UnixSecs) -> Result<IssuedRecord, StoreError>;

    /// The record of one certificate.
    fn issued(&self, serial: &str) -> Result<Option<IssuedRecord>, StoreError>;

    /// All issued certificates, ordered by serial.
    fn list(&self) -> Result<Vec<IssuedRecord>, StoreError>;

    /// Whether the certificate is revoked; unknown serials count as revoked.
    fn is_revoked(&self, serial: &str) -> Result<bool, StoreError> {
        Ok(self
            .issued(serial)?
            .is_none_or(|rec| rec.revoked_at.is_some()))
    }
}

/// The rules shared by every store, applied to the records an operation touches.
pub mod rules {
    use super::*;

    /// Validates a redemption and returns the token as it must be written back.
    pub fn redeem(
        token: Option<TokenRecord>,
        hash: &TokenHash,
        now: UnixSecs,
        issued: &IssuedRecord,
        serial_taken: bool,
    ) -> Result<TokenRecord, StoreError> {
        let mut token = token.ok_or(TokenError::Unknown)?;
        token.check_redeem(hash, now, issued)?;
        if serial_taken {
            return Err(StoreError::DuplicateSerial(issued.serial.clone()));
        }
        token.used = Some((now, issued.serial.clone()));
        Ok(token)
    }

    /// Validates a re-issue against the certificate it renews.
    pub fn reissue(
        old: Option<IssuedRecord>,
        issued: &IssuedRecord,
        serial_taken: bool,
    ) -> Result<(), StoreError> {
        let old_serial = issued.renews.clone().unwrap_or_default();
        let old = old.ok_or_else(|| StoreError::UnknownSerial(old_serial.clone()))?;
        if old.revoked_at.is_some() {
            return Err(StoreError::Revoked(old_serial));
        }
        if serial_taken {
            return Err(StoreError::DuplicateSerial(issued.serial.clone()));
        }
        Ok(())
    }

    /// The record as it is after revocation; the first revocation time is kept.
    pub fn revoke(
        rec: Option<IssuedRecord>,
        serial: &str,
        now: UnixSecs,
    ) -> Result<IssuedRecord, StoreError> {
        let mut rec = rec.ok_or_else(|| StoreError::UnknownSerial(serial.to_owned()))?;
        rec.revoked_at.get_or_insert(now);
        Ok(rec)
    }
}

/// An in-memory store for tests and throwaway CAs.
#[derive(Default)]
pub struct MemStore(Mutex<MemState>);

#[derive(Default)]
struct MemState {
    tokens: BTreeMap<[u8; 16], TokenRecord>,
    issued: BTreeMap<String, IssuedRecord>,
}

impl MemStore {
    fn state(&self) -> Result<std::sync::MutexGuard<'_, MemState>, StoreError> {
        self.0
            .lock()
            .map_err(|_| StoreError::Backend("lock poisoned".into()))
    }
}

impl CaStore for MemStore {
    fn put_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        let mut state = self.state()?;
        let key = token.hash.lookup_key();
        if state.tokens.contains_key(&key) {
            return Err(StoreError::DuplicateToken);
        }
        state.tokens.insert(key, token.clone());
        Ok(())
    }

    fn token(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self.state()?.tokens.get(&hash.lookup_key()).cloned())
    }

    fn redeem_token_and_record(
        &self,
        hash: &TokenHash,
        now: UnixSecs,
        issued: &IssuedRecord,
    ) -> Result<(), StoreError> {
        let mut state = self.state()?;
        let key = hash.lookup_key();
        let taken = state.issued.contains_key(&issued.serial);
        let token = rules::redeem(state.tokens.get(&key).cloned(), hash, now, issued, taken)?;
        state.tokens.insert(key, token);
        state.issued.insert(issued.serial.clone(), issued.clone());
        Ok(())
    }

    fn record_issued(&self, issued: &IssuedRecord) -> Result<(), StoreError> {
        let mut state = self.state()?;
        if state.issued.contains_key(&issued.serial) {
            return Err(StoreError::DuplicateSerial(issued.serial.clone()));
        }
        state.issued.insert(issued.serial.clone(), issued.clone());
        Ok(())
    }

    fn record_reissue(&self, issued: &IssuedRecord) -> Result<(), StoreError> {
        let mut state = self.state()?;
        let old = issued
            .renews
            .as_ref()
            .and_then(|s| state.issued.get(s).cloned());
        rules::reissue(old, issued, state.issued.contains_key(&issued.serial))?;
        state.issued.insert(issued.serial.clone(), issued.clone());
        Ok(())
    }

    fn revoke(&self, serial: &str, now: UnixSecs) -> Result<IssuedRecord, StoreError> {
        let mut state = self.state()?;
        let rec = rules::revoke(state.issued.get(serial).cloned(), serial, now)?;
        state.issued.insert(serial.to_owned(), rec.clone());
        Ok(rec)
    }

    fn issued(&self, serial: &str) -> Result<Option<IssuedRecord>, StoreError> {
        Ok(self.state()?.issued.get(serial).cloned())
    }

    fn list(&self) -> Result<Vec<IssuedRecord>, StoreError> {
        Ok(self.state()?.issued.values().cloned().collect())
    }
}

#[cfg(any(test, feature = "test-support"))]
pub mod conformance;

#[cfg(test)]
mod tests {
    #[test]
    fn mem_store_conforms() {
        super::conformance::check_all(&|| Box::new(super::MemStore::default()));
    }
}
