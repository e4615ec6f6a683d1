//! What only the root package's integration tests need on top of `iiptran-testkit`:
//! `iiptrand` with its control socket's typed answers, strongSwan peerings, packet
//! captures and the kernel's XFRM state. Each `tests/*.rs` that needs it declares
//! `mod support;`.
// Each test binary uses a different part of this module.
#![allow(dead_code, unused_imports)]

pub mod capture;
pub mod daemon;
pub mod kernel;
pub mod peering;

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
