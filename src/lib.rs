//! The iiptran daemon runtime: sockets, timers, the control socket, and the wiring of
//! the IKE engine, the policy engine and the data plane.

pub use iiptran_certs as certs;
pub use iiptran_ike as ike;
pub use iiptran_policy as policy;
pub use iiptran_xfrm as xfrm;

pub mod control;
pub mod daemon;
pub mod log_queue;
pub mod notify;
pub mod render;
