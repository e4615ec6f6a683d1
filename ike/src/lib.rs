//! The IKEv2 protocol engine of iiptran.
//!
//! Sans-IO: nothing in this crate opens a socket or reads a clock. Datagrams and the
//! current time are fed in; datagrams to send, deadlines and events come out.

pub mod auth;
pub mod config;
pub mod crypto;
pub mod deadlines;
pub mod iana;
pub mod identity;
pub mod sa;
pub mod secret;
pub mod ts;
pub mod wire;
