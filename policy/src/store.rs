//! The daemon's persistent state. Every use of sled in the project is in this module, so
//! the storage engine can be replaced without touching anything else.
//!
//! One [`Store`] is opened per state directory; each part of the daemon gets a typed area
//! of it ([`Store::ca`] for the CA database), backed by its own trees named `<area>/<what>`.
//! Values are JSON, so records stay readable and can gain fields.
//!
//! sled lets one process hold a database at a time. A process that keeps it open for long
//! (the daemon) owns it; short-lived users wait their turn ([`Store::open`] retries for a
//! while), and [`SharedCaDb`] opens it only for the length of each operation, so a
//! standalone enrollment server and `iiptranctl ca` commands can take turns.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// How long an open waits for another process to release the database.
const LOCK_WAIT: Duration = Duration::from_secs(10);
const LOCK_RETRY: Duration = Duration::from_millis(20);

impl Store {
    /// Opens (creating if needed) the database at `path`, waiting up to 10 s while another
    /// process holds it.
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        Self::open_within(path, LOCK_WAIT)
    }

    fn open_within(path: &Path, wait: Duration) -> Result<Self, OpenError> {
        let deadline = Instant::now() + wait;
        loop {
            match sled::open(path) {
                Ok(db) => return Ok(Self { db }),
                // sled reports a held lock only through this message.
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock")
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(LOCK_RETRY);
                }
                Err(source) => {
                    return Err(OpenError {
                        path: path.display().to_string(),
                        source,
                    });
                }
            }
        }
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

/// The CA area of the database at a path, opened for each operation and closed after it.
/// Operations of one `SharedCaDb` run one at a time; other processes get the database
/// between them.
pub struct SharedCaDb {
    path: PathBuf,
    turn: Mutex<()>,
}

impl SharedCaDb {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            turn: Mutex::new(()),
        }
    }

    fn with<T>(&self, op: impl FnOnce(&CaDb) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let _turn = self
            .turn
            .lock()
            .map_err(|_| StoreError::Backend("lock poisoned".into()))?;
        let store = Store::open(&self.path).map_err(|e| StoreError::Backend(e.to_string()))?;
        op(&store.ca()?)
    }
}

impl CaStore for SharedCaDb {
    fn put_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        self.with(|db| db.put_token(token))
    }

    fn token(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        self.with(|db| db.token(hash))
    }

    fn redeem_token_and_record(
        &self,
        hash: &TokenHash,
        now: UnixSecs,
        issued: &IssuedRecord,
    ) -> Result<(), StoreError> {
        self.with(|db| db.redeem_token_and_record(hash, now, issued))
    }

    fn record_issued(&self, issued: &IssuedRecord) -> Result<(), StoreError> {
        self.with(|db| db.record_issued(issued))
    }

    fn record_reissue(&self, issued: &IssuedRecord) -> Result<(), StoreError> {
        self.with(|db| db.record_reissue(issued))
    }

    fn revoke(&self, serial: &str, now: UnixSecs) -> Result<IssuedRecord, StoreError> {
        self.with(|db| db.revoke(serial, now))
    }

    fn issued(&self, serial: &str) -> Result<Option<IssuedRecord>, StoreError> {
        self.with(|db| db.issued(serial))
    }

    fn list(&self) -> Result<Vec<IssuedRecord>, StoreError> {
        self.with(|db| db.list())
    }
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
    fn shared_ca_db_conforms() {
        let dirs = std::sync::Mutex::new(Vec::new());
        iiptran_certs::store::conformance::check_all(&|| {
            let dir = TempDb::new();
            let ca = SharedCaDb::new(&dir.0);
            dirs.lock().unwrap().push(dir);
            Box::new(ca)
        });
    }

    fn server_record(serial: &str) -> IssuedRecord {
        IssuedRecord {
            serial: serial.into(),
            identity: "est.vn.example".into(),
            endpoint: None,
            not_before: 1,
            not_after: 2,
            renews: None,
            revoked_at: None,
        }
    }

    #[test]
    fn shared_ca_db_takes_turns_with_a_holder() {
        let dir = TempDb::new();
        let shared = SharedCaDb::new(&dir.0);
        let record = server_record("5b");
        shared.record_issued(&record).unwrap();
        let holder = Store::open(&dir.0).unwrap();
        let released = std::thread::scope(|s| {
            let waiter = s.spawn(|| shared.issued("5b"));
            // Let the waiter run into the held lock before it is released.
            std::thread::sleep(Duration::from_millis(200));
            drop(holder);
            waiter.join().unwrap()
        });
        assert_eq!(released.unwrap(), Some(record));
    }

    #[test]
    fn records_survive_reopen_and_lock_is_exclusive() {
        let dir = TempDb::new();
        let store = Store::open(&dir.0).unwrap();
        let record = server_record("4a");
        store.ca().unwrap().record_issued(&record).unwrap();
        let second = Store::open_within(&dir.0, Duration::from_millis(100));
        assert!(second.is_err(), "a second holder must be refused");
        drop(store);
        let reopened = Store::open(&dir.0).unwrap().ca().unwrap();
        assert_eq!(reopened.issued("4a").unwrap(), Some(record));
    }
}
