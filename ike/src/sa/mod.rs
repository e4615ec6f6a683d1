//! IKE SA and child SA exchanges (RFC 7296) as a sans-IO engine.
//!
//! The caller feeds [`Engine::handle`] with each datagram received on its IKE sockets
//! and calls [`Engine::handle_timeout`] when [`Engine::poll_timeout`] has passed; it sends
//! what [`Engine::poll_transmit`] returns and acts on [`Engine::poll_event`]. Time is
//! only ever the `now` passed in.
//!
//! Port 4500: the engine adds the four-byte non-ESP marker to every datagram it sends
//! from or to port 4500 and expects it on every datagram received there, so the caller
//! passes UDP payloads through unchanged and only has to divert ESP-in-UDP (a datagram
//! on 4500 whose first four bytes are not zero) to its data plane. The initiator moves
//! to 4500 for IKE_AUTH when NAT detection finds a NAT or `Config::force_nat_t` is set;
//! the responder follows. Child SAs carry ESP in UDP (`ChildSa::udp_encap`) only when
//! NAT detection, on either side, finds a NAT or `force_nat_t` is set: a peer that moves
//! to 4500 without a NAT (strongSwan does so for MOBIKE) still gets plain ESP.
//!
//! Rules the engine applies on its own:
//! - Rekeys are make-before-break: [`Event::ChildSaRekeyed`] names the new pair when it
//!   is up; the old one stays installed until [`Event::ChildSaRetired`]. A rekey is
//!   never reported as a deletion or as the IKE SA going down, and an IKE SA keeps its
//!   [`IkeSaId`] across rekeys.
//! - Rekey collisions (RFC 7296 §2.8.1, §2.8.2): the exchange with the lowest of the four
//!   nonces made the redundant SA, and its initiator deletes that SA; the initiator of
//!   the other exchange deletes the old one. Requests that would cross an IKE SA rekey
//!   are answered with TEMPORARY_FAILURE (§2.25) and retried by their sender.
//! - Simultaneous initiation: once two IKE SAs with the same peer identity are up, both
//!   ends keep the one carrying a child SA, of two such the one whose lower nonce (of Ni,
//!   Nr) is higher; whoever initiated the
//!   other deletes it ([`DownReason::Duplicate`]); [`Engine::is_duplicate`] tells the
//!   caller not to use the other's child SAs meanwhile. Should the kept one go first
//!   while the peer still holds the other, the other is kept after all and its child SAs
//!   are reported up again ([`Event::ChildSaUp`]).
//! - Peer restart: a new IKE SA with INITIAL_CONTACT ends every IKE SA with that peer
//!   established before it began ([`DownReason::PeerRestarted`]).
//! - A child SA request without USE_TRANSPORT_MODE is refused with NO_PROPOSAL_CHOSEN
//!   and the IKE SA is kept; selectors are the caller's decision ([`Policy`]).

mod by_addresses;
mod cached_response;
mod child;
mod cookie;
mod engine;
mod event;
mod exchange;
mod ike_sa;
mod keys;
mod nat;
mod policy;
mod proposal;
mod snapshot;
mod window;

pub use child::{ChildSa, ChildSpis, EspKeys, Mode};
pub use engine::{Engine, Transmit};
pub use event::{DownReason, Event, IkeSaId};
pub use keys::KeyError;
pub use policy::{LocalAuth, PeerAuth, PeerConfig, Policy};
pub use snapshot::{ChildSaSnapshot, ChildSaState, IkeSaSnapshot, IkeSaState, SaCounts};
