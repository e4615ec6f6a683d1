//! The control socket: newline-delimited JSON between `iiptranctl` and `iiptrand`.

pub mod client;
pub mod protocol;
pub mod server;

pub use protocol::{Body, ControlError, ErrorKind, Request, Response};
pub use server::{BindError, ControlHandler, ControlServer, DEFAULT_SOCKET, ServerConfig};
