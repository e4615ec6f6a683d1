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
//! on 4500 whose first four bytes are not zero) to its data plane.

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
mod window;

pub use child::{ChildSa, ChildSpis, EspKeys, Mode};
pub use engine::{Engine, Transmit};
pub use event::{DownReason, Event, IkeSaId};
pub use keys::KeyError;
pub use policy::{LocalAuth, PeerAuth, PeerConfig, Policy};
