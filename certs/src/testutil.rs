//! Fixtures shared by the unit tests.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::{Algorithm, Ca, MemStore, UnixSecs};

/// A directory removed when the test ends, however it ends.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        Self(std::env::temp_dir().join(format!("iiptran-certs-{}-{n}", std::process::id())))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A CA named vn.example in a fresh directory, with an in-memory database.
pub fn new_ca(algorithm: Algorithm, now: UnixSecs) -> (TempDir, Ca) {
    let dir = TempDir::new();
    let validity = Duration::from_secs(3650 * 86_400);
    let ca = Ca::init(
        &dir.0,
        "vn.example",
        algorithm,
        validity,
        now,
        Arc::new(MemStore::default()),
    )
    .expect("CA init");
    (dir, ca)
}
