//! The daemon's persistent state. Every use of sled in the project is in this module, so
//! the storage engine can be replaced without touching anything else.
//!
//! One [`Store`] is opened per state directory; each part of the daemon gets a typed area
//! of it ([`Store::ca`] for the CA database, [`Store::adjacencies`] for adjacency records
//! and history, [`Store::installed`] for the kernel objects the daemon installed), backed
//! by its own trees named `<area>/<what>`.
//! Values are JSON, so records stay readable and can gain fields.
//!
//! sled lets one process hold a database at a time. A process that keeps it open for long
//! (the daemon) owns it; short-lived users wait their turn ([`Store::open`] retries for a
//! while), and [`SharedCaDb`] opens it only for the length of each operation, so a
//! standalone enrollment server and `iiptranctl ca` commands can take turns.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use iiptran_certs::store::rules;
use iiptran_certs::{CaStore, IssuedRecord, StoreError, TokenHash, TokenRecord, UnixSecs};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use crate::adjacency::{AdjacencyRecord, Time};

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
/// The state is small (a record per neighbor and per installed kernel object); sled's
/// default page cache of 1 GiB would let it grow far past that, and where memory is
/// limited below it sled logs an error at every open.
const CACHE_BYTES: u64 = 16 << 20;

impl Store {
    /// Opens (creating if needed) the database at `path`, waiting up to 10 s while another
    /// process holds it.
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        Self::open_within(path, LOCK_WAIT)
    }

    fn open_within(path: &Path, wait: Duration) -> Result<Self, OpenError> {
        let deadline = Instant::now() + wait;
        loop {
            match sled::Config::new()
                .path(path)
                .cache_capacity(CACHE_BYTES)
                .open()
            {
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

/// A read or write of the adjacency or installed-object areas failed.
#[derive(Debug, thiserror::Error)]
#[error("state database: {0}")]
pub struct DbError(String);

impl Store {
    /// Adjacency records and their history, one per neighbor.
    pub fn adjacencies(&self) -> Result<AdjacencyDb, DbError> {
        Area::open(&self.db, "adjacency/records").map(AdjacencyDb)
    }

    /// The kernel objects the daemon installed, so that a restart after a crash can
    /// remove what is stale before it installs anything.
    pub fn installed(&self) -> Result<InstalledDb, DbError> {
        Area::open(&self.db, "installed/objects").map(InstalledDb)
    }
}

/// One tree of JSON records. Every write is atomic.
#[derive(Clone)]
struct Area {
    db: sled::Db,
    tree: sled::Tree,
}

impl Area {
    fn open(db: &sled::Db, name: &str) -> Result<Self, DbError> {
        Ok(Self {
            db: db.clone(),
            tree: db.open_tree(name).map_err(db_error)?,
        })
    }

    /// [`Area::write`], flushed to disk before it returns.
    fn write_durable<K: Serialize, V: Serialize>(
        &self,
        puts: &[(K, &V)],
        deletes: &[K],
    ) -> Result<(), DbError> {
        self.write(puts, deletes)?;
        self.db.flush().map_err(db_error)?;
        Ok(())
    }

    /// Stores each `(key, record)` and deletes each key of `deletes`, all or nothing (one
    /// atomic batch: no transaction is needed, nothing is read); sled flushes it to disk
    /// in the background within half a second.
    fn write<K: Serialize, V: Serialize>(
        &self,
        puts: &[(K, &V)],
        deletes: &[K],
    ) -> Result<(), DbError> {
        let mut batch = sled::Batch::default();
        for (key, value) in puts {
            batch.insert(json(key)?, json(value)?);
        }
        for key in deletes {
            batch.remove(json(key)?);
        }
        self.tree.apply_batch(batch).map_err(db_error)
    }

    /// Stores one record, replacing the key's previous one.
    fn insert<K: Serialize, V: Serialize>(&self, key: &K, value: &V) -> Result<(), DbError> {
        self.tree
            .insert(json(key)?, json(value)?)
            .map(drop)
            .map_err(db_error)
    }

    fn get<K: Serialize, V: DeserializeOwned>(&self, key: &K) -> Result<Option<V>, DbError> {
        self.tree
            .get(json(key)?)
            .map_err(db_error)?
            .map(|v| decode(&v, DbError))
            .transpose()
    }

    fn list<V: DeserializeOwned>(&self) -> Result<Vec<V>, DbError> {
        self.tree
            .iter()
            .values()
            .map(|v| decode(&v.map_err(db_error)?, DbError))
            .collect()
    }
}

fn json<T: Serialize>(value: &T) -> Result<Vec<u8>, DbError> {
    serde_json::to_vec(value).map_err(|e| DbError(e.to_string()))
}

fn db_error(e: sled::Error) -> DbError {
    DbError(e.to_string())
}

/// Adjacency records, keyed by neighbor name.
#[derive(Clone)]
pub struct AdjacencyDb(Area);

impl AdjacencyDb {
    /// Stores the record, replacing its neighbor's previous one. Not flushed at once: sled
    /// writes it out within half a second, and a crash loses at most that of the history
    /// a restarted daemon takes over. One insert, not a batch: records are independent,
    /// and a sled batch of a few records costs two to three times their inserts (each
    /// batch seals the log buffer it is in).
    pub fn put(&self, record: &AdjacencyRecord) -> Result<(), DbError> {
        self.0.insert(&record.neighbor.as_str(), record)
    }

    pub fn get(&self, neighbor: &str) -> Result<Option<AdjacencyRecord>, DbError> {
        self.0.get(&neighbor)
    }

    pub fn list(&self) -> Result<Vec<AdjacencyRecord>, DbError> {
        self.0.list()
    }

    pub fn remove(&self, neighbor: &str) -> Result<(), DbError> {
        self.0.write::<_, ()>(&[], &[neighbor])
    }
}

/// A policy direction in the kernel's SPD.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    In,
    Out,
    Fwd,
}

/// Something the daemon put into the kernel, named by what the kernel identifies it by.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KernelObject {
    /// An XFRM state: (destination, SPI, protocol), and its source, which the kernel
    /// needs to find it again.
    Sa {
        src: IpAddr,
        dst: IpAddr,
        spi: u32,
        protocol: u8,
    },
    /// An XFRM policy: its selector addresses and protocol, and its direction.
    Policy {
        src: IpAddr,
        dst: IpAddr,
        protocol: u8,
        direction: Direction,
    },
    /// A virtual link interface.
    Link { name: String },
}

/// An installed kernel object and the neighbor it serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledObject {
    pub neighbor: String,
    pub object: KernelObject,
    pub installed_at: Time,
}

/// The kernel objects the daemon installed, keyed by the object.
#[derive(Clone)]
pub struct InstalledDb(Area);

impl InstalledDb {
    /// Records objects installed together, in one transaction (re-recording one replaces
    /// its entry). Record before installing, so that a crash in between leaves at most a
    /// record of an object that does not exist.
    pub fn record(&self, objects: &[InstalledObject]) -> Result<(), DbError> {
        let puts: Vec<_> = objects.iter().map(|o| (&o.object, o)).collect();
        self.0.write_durable(&puts, &[])
    }

    /// Forgets objects removed from the kernel, in one transaction.
    pub fn forget(&self, objects: &[KernelObject]) -> Result<(), DbError> {
        let deletes: Vec<_> = objects.iter().collect();
        self.0.write_durable::<_, ()>(&[], &deletes)
    }

    pub fn list(&self) -> Result<Vec<InstalledObject>, DbError> {
        self.0.list()
    }

    /// The objects that serve `neighbor`.
    pub fn of(&self, neighbor: &str) -> Result<Vec<InstalledObject>, DbError> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|o| o.neighbor == neighbor)
            .collect())
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
            tokens.insert(key.as_slice(), encode(token, StoreError::Backend)?)?;
            Ok(())
        })
    }

    fn token(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        self.tokens
            .get(hash.lookup_key())
            .map_err(backend)?
            .map(|v| decode(&v, StoreError::Backend))
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
                .map(|v| decode(&v, StoreError::Backend))
                .transpose()
                .or_else(abort)?;
            let taken = issued.get(record.serial.as_bytes())?.is_some();
            let token = rules::redeem(token, hash, now, record, taken).or_else(abort)?;
            tokens.insert(key.as_slice(), encode(&token, StoreError::Backend)?)?;
            issued.insert(
                record.serial.as_bytes(),
                encode(record, StoreError::Backend)?,
            )?;
            Ok(())
        })
    }

    fn record_issued(&self, record: &IssuedRecord) -> Result<(), StoreError> {
        self.transact(|_, issued| {
            if issued.get(record.serial.as_bytes())?.is_some() {
                return abort(StoreError::DuplicateSerial(record.serial.clone()));
            }
            issued.insert(
                record.serial.as_bytes(),
                encode(record, StoreError::Backend)?,
            )?;
            Ok(())
        })
    }

    fn record_reissue(&self, record: &IssuedRecord) -> Result<(), StoreError> {
        self.transact(|_, issued| {
            let old = match &record.renews {
                Some(serial) => issued
                    .get(serial.as_bytes())?
                    .map(|v| decode(&v, StoreError::Backend))
                    .transpose()
                    .or_else(abort)?,
                None => None,
            };
            let taken = issued.get(record.serial.as_bytes())?.is_some();
            rules::reissue(old, record, taken).or_else(abort)?;
            issued.insert(
                record.serial.as_bytes(),
                encode(record, StoreError::Backend)?,
            )?;
            Ok(())
        })
    }

    fn revoke(&self, serial: &str, now: UnixSecs) -> Result<IssuedRecord, StoreError> {
        self.transact(|_, issued| {
            let rec = issued
                .get(serial.as_bytes())?
                .map(|v| decode(&v, StoreError::Backend))
                .transpose()
                .or_else(abort)?;
            let rec = rules::revoke(rec, serial, now).or_else(abort)?;
            issued.insert(serial.as_bytes(), encode(&rec, StoreError::Backend)?)?;
            Ok(rec)
        })
    }

    fn issued(&self, serial: &str) -> Result<Option<IssuedRecord>, StoreError> {
        self.issued
            .get(serial.as_bytes())
            .map_err(backend)?
            .map(|v| decode(&v, StoreError::Backend))
            .transpose()
    }

    fn list(&self) -> Result<Vec<IssuedRecord>, StoreError> {
        self.issued
            .iter()
            .values()
            .map(|v| decode(&v.map_err(backend)?, StoreError::Backend))
            .collect()
    }
}

fn abort<T>(e: StoreError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

/// Serializes a record; `fail` makes the area's error.
fn encode<T: Serialize, E>(
    value: &T,
    fail: fn(String) -> E,
) -> Result<Vec<u8>, ConflictableTransactionError<E>> {
    serde_json::to_vec(value).map_err(|e| ConflictableTransactionError::Abort(fail(e.to_string())))
}

fn decode<T: DeserializeOwned, E>(bytes: &[u8], fail: fn(String) -> E) -> Result<T, E> {
    serde_json::from_slice(bytes).map_err(|e| fail(format!("corrupt record: {e}")))
}

fn backend(e: sled::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::adjacency::{ChildPair, History, State, Transition};

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

    fn adjacency_record(neighbor: &str, state: State) -> AdjacencyRecord {
        let mut history = History {
            last_established: Some(Time(1_000)),
            last_error: Some((Time(2_000), "liveness check failed".into())),
            ..History::default()
        };
        history.transitions.push_back(Transition {
            at: Time(2_000),
            from: State::Up,
            to: state,
            cause: "liveness check failed".into(),
        });
        AdjacencyRecord {
            neighbor: neighbor.into(),
            state,
            current: Some(ChildPair {
                ike_sa: 0x1122_3344_5566_7788,
                spi_in: 0xc000_0001,
                spi_out: 0xc000_0002,
            }),
            history,
        }
    }

    #[test]
    fn adjacency_records_replace_list_remove_and_survive_reopen() {
        let dir = TempDb::new();
        let store = Store::open(&dir.0).unwrap();
        let db = store.adjacencies().unwrap();
        assert_eq!(db.get("b").unwrap(), None);
        let down = State::Down {
            retry_at: Time(4_000),
        };
        db.put(&adjacency_record("b", State::Connecting)).unwrap();
        db.put(&adjacency_record("b", down)).unwrap();
        db.put(&adjacency_record("c", State::Up)).unwrap();
        assert_eq!(db.get("b").unwrap(), Some(adjacency_record("b", down)));
        let mut names: Vec<_> = db.list().unwrap().into_iter().map(|r| r.neighbor).collect();
        names.sort();
        assert_eq!(names, ["b", "c"]);
        db.remove("c").unwrap();
        assert_eq!(db.get("c").unwrap(), None);
        drop((db, store));

        let reopened = Store::open(&dir.0).unwrap().adjacencies().unwrap();
        assert_eq!(reopened.list().unwrap(), [adjacency_record("b", down)]);
    }

    #[test]
    fn areas_do_not_see_each_other() {
        let dir = TempDb::new();
        let store = Store::open(&dir.0).unwrap();
        store
            .adjacencies()
            .unwrap()
            .put(&adjacency_record("b", State::Up))
            .unwrap();
        assert!(store.installed().unwrap().list().unwrap().is_empty());
        assert!(store.ca().unwrap().list().unwrap().is_empty());
    }

    fn objects(neighbor: &str, spi: u32) -> Vec<InstalledObject> {
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        [
            KernelObject::Sa {
                src: b,
                dst: a,
                spi,
                protocol: 50,
            },
            KernelObject::Sa {
                src: a,
                dst: b,
                spi: spi + 1,
                protocol: 50,
            },
            KernelObject::Policy {
                src: a,
                dst: b,
                protocol: 4,
                direction: Direction::Out,
            },
            KernelObject::Link {
                name: format!("vn-{neighbor}"),
            },
        ]
        .into_iter()
        .map(|object| InstalledObject {
            neighbor: neighbor.into(),
            object,
            installed_at: Time(9),
        })
        .collect()
    }

    #[test]
    fn installed_objects_are_recorded_and_forgotten_together() {
        let dir = TempDb::new();
        let store = Store::open(&dir.0).unwrap();
        let db = store.installed().unwrap();
        let b = objects("b", 0x100);
        let c = objects("c", 0x200);
        db.record(&b).unwrap();
        db.record(&c).unwrap();
        assert_eq!(
            db.list().unwrap().len(),
            7,
            "the shared policy is recorded once"
        );
        assert_eq!(db.of("b").unwrap().len(), 3);
        // Re-recording an object replaces its entry.
        db.record(&b).unwrap();
        assert_eq!(db.list().unwrap().len(), 7);
        let sas: Vec<_> = c.iter().take(2).map(|o| o.object.clone()).collect();
        db.forget(&sas).unwrap();
        let left = db.list().unwrap();
        assert_eq!(left.len(), 5);
        assert!(left.iter().all(|o| !sas.contains(&o.object)));
        drop((db, store));

        // What a restart after kill -9 finds.
        let reopened = Store::open(&dir.0).unwrap().installed().unwrap();
        let mut found = reopened.list().unwrap();
        found.sort_by_key(|o| serde_json::to_string(&o.object).unwrap());
        let mut want: Vec<_> = b.iter().chain(c.iter().skip(2)).cloned().collect();
        want.sort_by_key(|o| serde_json::to_string(&o.object).unwrap());
        want.dedup_by(|x, y| x.object == y.object);
        assert_eq!(found, want);
    }

    #[test]
    fn corrupt_records_are_errors_not_panics() {
        let dir = TempDb::new();
        let store = Store::open(&dir.0).unwrap();
        let db = store.adjacencies().unwrap();
        db.0.tree.insert(br#""b""#, b"not json".as_slice()).unwrap();
        let err = db.get("b").unwrap_err();
        assert!(err.to_string().contains("corrupt record"), "{err}");
        assert!(db.list().is_err());
    }
}
