//! Benchmarks of iiptrand against strongSwan's charon on the same machine, in one run.
//! `bench/run` builds everything and runs the `iiptran-bench` binary; `loadgen` is the
//! engine-driven initiator it uses for the setup-rate measurements.

pub mod charon;
pub mod cipher;
pub mod failure;
pub mod floor;
pub mod iiptrand;
pub mod loadgen;
pub mod pair;
pub mod report;
pub mod setup_rate;
pub mod stats;
pub mod system;
