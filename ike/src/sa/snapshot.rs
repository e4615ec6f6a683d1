//! A read-only view of the engine's IKE SAs and their child SAs, for operators
//! (`iiptranctl list-sas`). Times are instants on the caller's clock, as fed in.

use super::child::{ChildSpis, Mode};
use super::event::IkeSaId;
use crate::config::{EspSuite, IkeSuite};
use crate::identity::Identity;
use crate::ts::TrafficSelector;
use std::net::SocketAddr;
use std::time::Instant;

/// Where an IKE SA is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IkeSaState {
    /// We initiated; IKE_SA_INIT or IKE_AUTH is outstanding.
    Connecting,
    /// We responded to IKE_SA_INIT and wait for IKE_AUTH.
    HalfOpen,
    Established,
    /// Established, but another IKE SA with the same peer is kept: this one is being
    /// deleted (simultaneous initiation).
    Duplicate,
}

/// Where a child SA is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildSaState {
    /// Carries traffic.
    Installed,
    /// Replaced by a rekey; kept for inbound traffic until its DELETE completes.
    Rekeyed,
    /// We sent DELETE for it.
    Deleting,
}

/// How many IKE SAs [`super::Engine::snapshot`] would show in each state, and how many of
/// their child SAs carry traffic: counted without building the snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SaCounts {
    pub connecting: usize,
    pub half_open: usize,
    pub established: usize,
    pub duplicate: usize,
    pub installed_children: usize,
}

/// One IKE SA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IkeSaSnapshot {
    pub id: IkeSaId,
    pub spi_i: u64,
    pub spi_r: u64,
    /// We are the original initiator.
    pub initiator: bool,
    pub state: IkeSaState,
    /// The negotiated suite; while connecting, the one proposed first.
    pub suite: IkeSuite,
    pub local_id: Option<Identity>,
    /// The identity the peer must authenticate as (known once it named itself).
    pub remote_id: Option<Identity>,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub established: Option<Instant>,
    pub rekey_at: Option<Instant>,
    /// IKE SAs are rekeyed, never expired: only a half-open SA has an expiry, when it is
    /// dropped unless IKE_AUTH arrives.
    pub expire_at: Option<Instant>,
    pub children: Vec<ChildSaSnapshot>,
}

/// One child SA pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildSaSnapshot {
    pub spis: ChildSpis,
    pub state: ChildSaState,
    pub suite: EspSuite,
    pub mode: Mode,
    /// Our side's selectors and the peer's.
    pub ts_local: Vec<TrafficSelector>,
    pub ts_remote: Vec<TrafficSelector>,
    pub udp_encap: bool,
    pub established: Instant,
    pub rekey_at: Option<Instant>,
    /// When the data plane drops the SA (its hard lifetime).
    pub expire_at: Instant,
}
