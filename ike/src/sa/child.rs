//! Child SAs as handed to the data plane.

use super::event::IkeSaId;
use super::keys::IkeKeys;
use crate::config::EspSuite;
use crate::secret::Secret;
use crate::ts::TrafficSelector;
use std::net::SocketAddr;
use std::time::Duration;

/// A child SA pair is named by its two ESP SPIs: the one we chose (inbound) and the
/// peer's (outbound).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChildSpis {
    pub inbound: u32,
    pub outbound: u32,
}

/// Keys of one direction: the encryption key including any AEAD salt, and the
/// integrity key (empty for AEAD suites).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EspKeys {
    pub encr: Secret,
    pub integ: Secret,
}

/// iiptran only negotiates transport mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Transport,
}

/// An established child SA pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildSa {
    pub ike_sa: IkeSaId,
    pub spis: ChildSpis,
    pub inbound: EspKeys,
    pub outbound: EspKeys,
    /// Selectors from our point of view: `local` covers our side of the traffic.
    pub ts_local: Vec<TrafficSelector>,
    pub ts_remote: Vec<TrafficSelector>,
    pub suite: EspSuite,
    pub mode: Mode,
    /// ESP in UDP on port 4500 (RFC 3948) between these addresses.
    pub udp_encap: bool,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The data plane drops the SA after this long; the engine rekeys it before.
    pub hard_lifetime: Duration,
}

/// What the exchange that creates a child SA settled.
pub(super) struct Negotiated<'a> {
    pub suite: EspSuite,
    pub spis: ChildSpis,
    pub ts_local: Vec<TrafficSelector>,
    pub ts_remote: Vec<TrafficSelector>,
    pub shared: Option<&'a Secret>,
    pub ni: &'a [u8],
    pub nr: &'a [u8],
}

impl ChildSa {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn derive(
        keys: &IkeKeys,
        n: Negotiated<'_>,
        we_are_initiator: bool,
        ike_sa: IkeSaId,
        local: SocketAddr,
        remote: SocketAddr,
        udp_encap: bool,
        hard_lifetime: Duration,
    ) -> Result<Self, super::keys::KeyError> {
        let (i_to_r, r_to_i) = keys.child_keys(&n.suite, n.shared, n.ni, n.nr)?;
        let (outbound, inbound) = if we_are_initiator {
            (i_to_r, r_to_i)
        } else {
            (r_to_i, i_to_r)
        };
        Ok(Self {
            ike_sa,
            spis: n.spis,
            inbound,
            outbound,
            ts_local: n.ts_local,
            ts_remote: n.ts_remote,
            suite: n.suite,
            mode: Mode::Transport,
            udp_encap,
            local,
            remote,
            hard_lifetime,
        })
    }
}
