//! The virtual network: configuration, the adjacency lifecycle and persistent state.
pub mod adjacency;
pub mod config;
pub mod store;
