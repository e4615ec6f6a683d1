//! What the engine tells its caller.

use super::child::{ChildSa, ChildSpis};
use crate::config::IkeSuite;
use crate::iana::NotifyType;
use crate::identity::Identity;
use std::net::SocketAddr;

/// Names an IKE SA for the caller. It stays the same when the IKE SA is rekeyed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IkeSaId(pub u64);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DownReason {
    /// The peer sent DELETE for the IKE SA.
    DeletedByPeer,
    /// We deleted it ([`super::Engine::delete_ike`]).
    DeletedLocally,
    /// The peer stopped answering: a request ran out of retransmissions.
    LivenessFailed,
    /// Authentication failed, on either side.
    AuthFailed,
    /// The peer refused the IKE SA with this error notification.
    Refused(NotifyType),
    /// Half-open for too long.
    Timeout,
    /// Another IKE SA with the same peer was kept (simultaneous initiation).
    Duplicate,
    /// The peer set up a new IKE SA saying it holds no other (INITIAL_CONTACT): it
    /// restarted, and this older one is gone on its side.
    PeerRestarted,
    /// Our own configuration or randomness failed us.
    Local(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    IkeSaUp {
        sa: IkeSaId,
        peer: Identity,
        local: SocketAddr,
        remote: SocketAddr,
        suite: IkeSuite,
        we_initiated: bool,
    },
    /// Install both directions. The outbound one is the one to use.
    ChildSaUp(ChildSa),
    /// A rekey made `new` the child SA that replaces `old`, which stays installed until
    /// [`Event::ChildSaRetired`] names it. The initiator of the exchange that created `new`
    /// (`initiated`) sends on it at once. Its responder installs only the new inbound SA
    /// and keeps sending on the old one until the old one is retired (the initiator
    /// deletes it after installing `new`): the initiator has no new inbound SA before it
    /// has the response.
    ChildSaRekeyed {
        old: ChildSpis,
        new: ChildSa,
        initiated: bool,
    },
    /// The old SA of a rekey is deleted on both sides and can be removed.
    ChildSaRetired {
        ike_sa: IkeSaId,
        spis: ChildSpis,
    },
    /// A child SA went away (not by rekeying): deleted by either side or with its IKE SA.
    ChildSaDeleted {
        ike_sa: IkeSaId,
        spis: ChildSpis,
    },
    /// A child SA could not be created; the IKE SA stays up.
    ChildSaFailed {
        ike_sa: IkeSaId,
        notify: NotifyType,
    },
    IkeSaDown {
        sa: IkeSaId,
        reason: DownReason,
    },
    /// A peer failed to authenticate (as responder) or rejected our authentication.
    AuthFailed {
        sa: IkeSaId,
        remote: SocketAddr,
        peer: Option<Identity>,
        /// Why, for the operator's log and status (the peer only ever learns
        /// AUTHENTICATION_FAILED).
        reason: String,
    },
}
