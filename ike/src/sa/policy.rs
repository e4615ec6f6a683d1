//! What the engine asks of its caller: who a peer is, how each side authenticates, and
//! which traffic selectors a child SA may have.

use crate::auth::{SigningKey, TrustAnchors};
use crate::config::Suites;
use crate::iana::NotifyType;
pub use crate::identity::Identity;
use crate::secret::Secret;
use crate::ts::TrafficSelector;
use crate::wire::Identification;
use std::net::SocketAddr;
use std::sync::Arc;

pub(super) fn id_to_wire(id: &Identity) -> Identification {
    let (id_type, data) = id.to_wire();
    Identification { id_type, data }
}

pub(super) fn id_from_wire(id: &Identification) -> Option<Identity> {
    Identity::from_wire(id.id_type, &id.data).ok()
}

/// How we prove who we are.
#[derive(Clone, Debug)]
pub enum LocalAuth {
    /// AUTH method 2.
    Psk(Secret),
    /// AUTH method 14 (RFC 7427) with our key; `chain` is our certificate first, then
    /// any intermediates, DER. Shared: every peer's configuration presents the same one.
    Certificate {
        key: Arc<SigningKey>,
        chain: Arc<[Vec<u8>]>,
    },
}

/// How the peer must prove who it is.
#[derive(Clone, Debug)]
pub enum PeerAuth {
    Psk(Secret),
    /// A certificate chain to one of these anchors, issued for the peer's identity and
    /// not revoked by the anchors' CRLs ([`TrustAnchors::set_crls`]), and an RFC 7427
    /// signature with its key.
    Certificate(Arc<TrustAnchors>),
}

/// Everything peer-specific the engine needs for one IKE SA.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    pub local_id: Identity,
    pub local_auth: LocalAuth,
    /// The identity the peer must authenticate as.
    pub remote_id: Identity,
    pub remote_auth: PeerAuth,
    /// As initiator: TSi (our side) and TSr (the peer's side) of the first child SA.
    /// Shared: a caller building configurations anew keeps one copy.
    pub ts_local: Arc<[TrafficSelector]>,
    pub ts_remote: Arc<[TrafficSelector]>,
}

/// The caller's decisions. Called synchronously from within the engine.
pub trait Policy {
    /// As responder: the configuration for a peer that claims `remote_id` from `remote`,
    /// or `None` to refuse it (AUTHENTICATION_FAILED).
    fn peer(&self, remote_id: &Identity, remote: SocketAddr) -> Option<Arc<PeerConfig>>;

    /// As responder, in IKE_SA_INIT (before the peer has said who it is): the CAs to name
    /// in a CERTREQ for a peer at `remote`, if it is to authenticate with a certificate.
    /// Peers such as strongSwan send their certificate only when asked.
    fn certificate_request(&self, _remote: SocketAddr) -> Option<Arc<TrustAnchors>> {
        None
    }

    /// As responder: the selectors of a child SA the peer proposed (TSi its side, TSr
    /// ours), narrowed to what we accept, or the error notification that refuses it
    /// (TS_UNACCEPTABLE).
    fn narrow(
        &self,
        peer: &PeerConfig,
        tsi: &[TrafficSelector],
        tsr: &[TrafficSelector],
    ) -> Result<(Vec<TrafficSelector>, Vec<TrafficSelector>), NotifyType>;

    /// As initiator: whether the responder's narrowed selectors are acceptable.
    fn accept_narrowed(
        &self,
        peer: &PeerConfig,
        tsi: &[TrafficSelector],
        tsr: &[TrafficSelector],
    ) -> Result<(), NotifyType>;

    /// The suites to offer to and accept from the peer at `remote`, when they are not
    /// those of the engine's [`crate::config::Config`]. Asked by address because the
    /// responder chooses the IKE suite before the peer has named itself.
    fn suites(&self, _remote: SocketAddr) -> Option<Arc<Suites>> {
        None
    }
}
