//! Test support for integration tests that need network namespaces, child processes,
//! `iiptrand`, BIRD as a routing daemon and strongSwan's charon as a peer. Each
//! `tests/*.rs` that needs it declares `mod support;`.
//!
//! Everything that creates something outside the test process (namespaces, processes,
//! directories) is a guard that removes it on drop, also when the test fails.
// Each test binary uses a different part of this module.
#![allow(dead_code, unused_imports)]

pub mod bird;
pub mod capture;
pub mod daemon;
pub mod kernel;
pub mod netns;
pub mod peering;
pub mod process;
pub mod strongswan;
pub mod wait;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A per-process counter for unique names: `<pid>-<n>` stays unique across parallel tests
/// and concurrent test binaries.
pub fn unique_suffix() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether the tests that need root may run; prints why they are skipped otherwise.
/// Only a missing root is a reason to skip: missing packages make the tests fail.
pub fn have_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipping {test}: needs root (network namespaces, mounts)");
    }
    root
}

/// Ends a test at the point of failure: the guards still alive then see a panicking
/// thread and print their logs (a test that returns `Err` drops them first, silently).
pub trait OrPanic<T> {
    fn or_panic(self) -> T;
}

impl<T> OrPanic<T> for anyhow::Result<T> {
    #[track_caller]
    fn or_panic(self) -> T {
        self.unwrap_or_else(|e| panic!("{e:#}"))
    }
}

/// A temporary directory, removed on drop unless the test is failing (then its path is
/// printed so logs and captures can be inspected).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(what: &str) -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("iiptran-{what}-{}", unique_suffix()));
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} for inspection", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
