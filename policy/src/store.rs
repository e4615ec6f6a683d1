//! The daemon's persistent state. Every use of sled in the project is in this module, so
//! the storage engine can be replaced without touching anything else.
//!
//! One [`Store`] is opened per state directory; each part of the daemon gets a typed area
//! of it ([`Store::ca`] for the CA database), backed by its own trees named `<area>/<what>`.
//! Values are JSON, so records stay readable and can gain fields.

use std::path::Path;

use iiptran_certs::store::rules;
use iiptran_certs::{CaStore, IssuedRecord, StoreError, TokenHash, TokenRecord, UnixSecs};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

/// The store could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("opening the state database {path}: {source} (is another process using it?)")]
pub struct OpenError {
    path: String,
    source: sled::Error,
}

/// The persistent state of one node.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
}

impl Store {
    /// Opens (creating if needed) the database at `path`. Only one process may hold it.
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        let db = sled::open(path).map_err(|source| OpenError {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self { db })
    }

    /// The CA database: join tokens, issued certificates and revocations.
    pub fn ca(&self) -> Result<CaDb, StoreError> {
        Ok(CaDb {
            db: self.db.clone(),
            tokens: self.db.open_tree("ca/tokens").map_err(backend)?,
            issued: self.db.open_tree("ca/issued").map_err(backend)?,
        })
    }
}

/// The CA area of the [`Store`]. Every operation is one sled transaction, made durable
/// before it returns.
#[derive(Clone)]
pub struct CaDb {
    db: sled::Db,
    tokens: sled::Tree,
    issued: sled::Tree,
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

impl CaDb {
    /// Runs `f` as one transaction over both trees and flushes it to disk.
    fn transact<T>(
        &self,
        f: impl Fn(&TransactionalTree, &TransactionalTree) -> TxResult<T>,
    ) -> Result<T, StoreError> {
        let result = (&self.tokens, &self.issued)
            .transaction(|(tokens, issued)| f(tokens, issued))
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => backend(e),
            })?;
        self.db.flush().map_err(backend)?;
        Ok(result)
    }
}

impl CaStore for CaDb {
    fn put_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        let key = token.hash.lookup_key();
        self.transact(|tokens, _| {
            if tokens.get(key)?.is_some() {
                return abort(StoreError::DuplicateToken);
            }
            tokens.insert(key.as_slice(), encode(token)?)?;
            Ok(())
        })
    }

    fn token(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        self.tokens
            .get(hash.lookup_key())
            .map_err(backend)?
            .map(|v| decode(&v))
            .transpose()
    }

    fn redeem_token_and_record(
        &self,
        hash: &TokenHash,
        now: UnixSecs,
        record: &IssuedRecord,
    ) -> Result<(), StoreError> {
        let key = hash.lookup_key();
        self.transact(|tokens, issued| {
            let token = tokens
                .get(key)?
                .map(|v| decode(&v))
                .transpose()
                .or_else(abort)?;
            let taken = issued.get(record.serial.as_bytes())?.is_some();
            let token = rules::redeem(token, hash, now, record, taken).or_else(abort)?;
            tokens.insert(key.as_slice(), encode(&token)?)?;
            issued.insert(record.serial.as_bytes(), encode(record)?)?;
            Ok(())
        })
    }

    fn record_issued(&self, record: &IssuedRecord) -> Result<(), StoreError> {
        self.transact(|_, issued| {
            if issued.get(record.serial.as_bytes())?.is_some() {
                return abort(StoreError::DuplicateSerial(record.serial.clone()));
            }
            issued.insert(record.serial.as_bytes(), encode(record)?)?;
            Ok(())
        })
    }

    fn record_reissue(&self, record: &IssuedRecord) -> Result<(), StoreError> {
        self.transact(|_, issued| {
            let old = match &record.renews {
                Some(serial) => issued
                    .get(serial.as_bytes())?
                    .map(|v| decode(&v))
                    .transpose()
                    .or_else(abort)?,
                None => None,
            };
            let taken = issued.get(record.serial.as_bytes())?.is_some();
            rules::reissue(old, record, taken).or_else(abort)?;
            issued.insert(record.serial.as_bytes(), encode(record)?)?;
            Ok(())
        })
    }

    fn revoke(&self, serial: &str, now: UnixSecs) -> Result<IssuedRecord, StoreError> {
        self.transact(|_, issued| {
            let rec = issued
                .get(serial.as_bytes())?
                .map(|v| decode(&v))
                .transpose()
                .or_else(abort)?;
            let rec = rules::revoke(rec, serial, now).or_else(abort)?;
            issued.insert(serial.as_bytes(), encode(&rec)?)?;
            Ok(rec)
        })
    }

    fn issued(&self, serial: &str) -> Result<Option<IssuedRecord>, StoreError> {
        self.issued
            .get(serial.as_bytes())
            .map_err(backend)?
            .map(|v| decode(&v))
            .transpose()
    }

    fn list(&self) -> Result<Vec<IssuedRecord>, StoreError> {
        self.issued
            .iter()
            .values()
            .map(|v| decode(&v.map_err(backend)?))
            .collect()
    }
}

fn abort<T>(e: StoreError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

fn encode<T: Serialize>(value: &T) -> TxResult<Vec<u8>> {
    serde_json::to_vec(value).or_else(|e| abort(StoreError::Backend(e.to_string())))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Backend(format!("corrupt record: {e}")))
}

fn backend(e: sled::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A database directory removed when the test ends, however it ends.
    struct TempDb(std::path::PathBuf);

    impl TempDb {
        fn new() -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            Self(std::env::temp_dir().join(format!("iiptran-store-{}-{n}", std::process::id())))
        }
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn ca_area_conforms() {
        let dirs = std::sync::Mutex::new(Vec::new());
        iiptran_certs::store::conformance::check_all(&|| {
            let dir = TempDb::new();
            let ca = Store::open(&dir.0).unwrap().ca().unwrap();
            dirs.lock().unwrap().push(dir);
            Box::new(ca)
        });
    }

    #[test]
    fn records_survive_reopen_and_lock_is_exclusive() {
        let dir = TempDb::new();
        let store = Store::open(&dir.0).unwrap();
        let record = IssuedRecord {
            serial: "4a".into(),
            identity: "b.vn.example".into(),
            endpoint: None,
            not_before: 1,
            not_after: 2,
            renews: None,
            revoked_at: None,
        };
        store.ca().unwrap().record_issued(&record).unwrap();
        assert!(
            Store::open(&dir.0).is_err(),
            "a second holder must be refused"
        );
        drop(store);
        let reopened = Store::open(&dir.0).unwrap().ca().unwrap();
        assert_eq!(reopened.issued("4a").unwrap(), Some(record));
    }
}
