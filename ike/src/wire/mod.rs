//! The IKEv2 wire format (RFC 7296 §3, RFC 7383): plain representations of the header
//! and every payload we speak that parse from and emit to bytes.
//!
//! Parsing never panics, never reads past the datagram and allocates only for bytes that
//! are present. Encryption is left to the caller: [`Datagram::parse`] exposes the
//! associated data and sealed body of an SK/SKF payload, [`parse_chain`] reads the
//! decrypted inner payloads, and [`emit_encrypted`] / [`emit_fragments`] build messages
//! around any `seal(aad, plaintext)` function.

mod config;
mod cursor;
mod encrypted;
mod error;
pub mod fuzz;
mod header;
mod message;
mod notify;
mod payload;
mod reassembly;
mod sa;
mod selectors;
mod simple;

pub use config::{Config, ConfigAttribute};
pub use encrypted::{
    Encrypted, Fragment, FragmentPosition, emit_encrypted, emit_fragments, inner_plaintext,
    seal_encrypted, seal_fragments,
};
pub use error::Error;
pub use header::{HEADER_LEN, Header, HeaderPacket};
pub use message::{Datagram, Message, Protected};
pub use notify::{Delete, Notify};
pub use payload::{Payload, Unknown, emit_chain, parse_chain};
pub use reassembly::{FragmentError, Progress, Reassembly, ReassemblyLimits};
pub use sa::{Attribute, Proposal, Transform};
pub use simple::{Authentication, Certificate, Identification, KeyExchange};
