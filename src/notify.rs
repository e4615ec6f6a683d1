//! systemd's readiness protocol (sd_notify): state lines sent as one datagram to the
//! socket named by `$NOTIFY_SOCKET`. Without that variable every call does nothing, so
//! the daemon runs the same outside systemd.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// One state assignment of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State<'a> {
    /// Start-up is complete (Type=notify services are "active" from here).
    Ready,
    /// A free-form line `systemctl status` shows.
    Status(&'a str),
    /// Shutdown has begun.
    Stopping,
    /// Reloading has begun; `Ready` ends it.
    Reloading,
    /// Keep-alive for `WatchdogSec=`.
    Watchdog,
}

/// The destination of notifications.
#[derive(Debug)]
pub struct Notifier {
    addr: SocketAddr,
}

impl Notifier {
    /// The notifier systemd asked for, or `None` when not started with `$NOTIFY_SOCKET`.
    pub fn from_env() -> io::Result<Option<Self>> {
        std::env::var_os("NOTIFY_SOCKET")
            .map(|socket| Self::new(&socket))
            .transpose()
    }

    /// A notifier for `socket`: a path, or `@name` for the abstract namespace.
    pub fn new(socket: &OsStr) -> io::Result<Self> {
        let bytes = socket.as_bytes();
        let addr = match bytes.split_first() {
            Some((b'@', name)) => SocketAddr::from_abstract_name(name)?,
            Some((b'/', _)) => SocketAddr::from_pathname(socket)?,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "NOTIFY_SOCKET must be an absolute path or start with '@'",
                ));
            }
        };
        Ok(Self { addr })
    }

    /// Sends the states as one datagram.
    pub fn notify(&self, states: &[State<'_>]) -> io::Result<()> {
        let mut message = String::new();
        for state in states {
            match state {
                State::Ready => message.push_str("READY=1\n"),
                State::Stopping => message.push_str("STOPPING=1\n"),
                State::Reloading => message.push_str("RELOADING=1\n"),
                State::Watchdog => message.push_str("WATCHDOG=1\n"),
                // A newline would start a new assignment.
                State::Status(text) => {
                    message.push_str("STATUS=");
                    message.extend(text.chars().map(|c| if c == '\n' { ' ' } else { c }));
                    message.push('\n');
                }
            }
        }
        UnixDatagram::unbound()?.send_to_addr(message.as_bytes(), &self.addr)?;
        Ok(())
    }
}

/// Sends `states` to systemd if it is listening; logs rather than fails, since the
/// daemon works the same without it.
pub fn notify(states: &[State<'_>]) {
    let sent = Notifier::from_env().and_then(|notifier| match notifier {
        Some(notifier) => notifier.notify(states),
        None => Ok(()),
    });
    if let Err(e) = sent {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// How often to send [`State::Watchdog`] — half of `WatchdogSec=` — when systemd
/// expects it from this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse() != Ok(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}
