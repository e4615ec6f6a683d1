//! The VN certificate authority and EST-style (RFC 7030) enrollment.
//!
//! A VN has one CA ([`Ca`]). A node makes its key pair and a CSR locally and proves it may
//! join with a single-use [`JoinToken`] bound to its identity and tunnel endpoint; the
//! enrollment service ([`est::Server`]) answers with a certificate that takes identity and
//! endpoint from the token. Renewal ([`est::reenroll`]) authenticates with the node's current
//! certificate over mutual TLS. The CA's database sits behind [`CaStore`], whose methods are
//! each one atomic operation.
//!
//! On disk, a CA directory holds `ca.key` (PKCS#8, mode 0600), `ca.pem` and the database
//! under `db/` ([`Ca::db_path`]); a node's state directory holds `key.pem` (0600),
//! `cert.pem` and `ca.pem` ([`est::Credentials`]). Issued certificates carry the identity
//! (dNSName, rfc822Name or iPAddress SAN, and the subject CN) and the tunnel endpoint
//! (iPAddress SAN), with extended key usages id-kp-ipsecIKE and clientAuth.

mod ca;
pub mod duration;
pub mod est;
mod files;
mod identity;
mod keys;
mod pem;
pub mod pkcs7;
pub mod store;
#[cfg(test)]
mod testutil;
mod token;

pub use ca::{Algorithm, Ca, CaError, IssueError, fingerprint};
pub use files::write_atomic;
pub use identity::{IdentityError, NodeId};
pub use keys::key_pem;
pub use pem::to_pem;
pub use store::{CaStore, IssuedRecord, MemStore, StoreError};
pub use token::{JoinToken, TokenError, TokenHash, TokenRecord};

/// Seconds since the Unix epoch: the time unit of the CA database.
pub type UnixSecs = u64;

/// The current time in [`UnixSecs`].
pub fn unix_now() -> UnixSecs {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
