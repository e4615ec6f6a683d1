//! What iiptran's integration tests, xfrm's namespace tests and the benchmarks share:
//! unique names, network namespaces and veth links, child processes, waiting with a
//! deadline, a PKI made with strongSwan's `pki`, strongSwan's charon, `iiptrand` and BIRD.
//!
//! Everything that creates something outside the process (namespaces, processes,
//! directories) is a guard that removes it on drop, also when the caller fails. Binaries
//! of the iiptran package are passed in as paths: tests use `env!("CARGO_BIN_EXE_…")`,
//! the benchmarks their release builds.

pub mod bird;
pub mod command;
pub mod datagrams;
pub mod iiptrand;
pub mod netns;
pub mod pki;
pub mod process;
pub mod strongswan;
pub mod wait;
mod work_dir;

use std::sync::atomic::{AtomicUsize, Ordering};

pub use work_dir::WorkDir;

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
