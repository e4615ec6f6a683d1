//! The virtual network: configuration, the adjacency lifecycle and persistent state.
pub mod store;
