//! Setting a virtual link up or down over one socket kept for it. tun-rs opens a socket
//! and asks the device for its name at every call, which were a tenth of the system
//! calls of bringing an adjacency up.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub(super) struct LinkFlags {
    socket: OwnedFd,
}

impl LinkFlags {
    /// Interface requests act in the network namespace the socket is opened in: the
    /// caller's, as for the TUN devices.
    pub(super) fn open() -> io::Result<Self> {
        // SAFETY: socket(2) takes no pointers.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor nothing else owns.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { socket })
    }

    pub(super) fn set_up(&self, name: &str, up: bool) -> io::Result<()> {
        let mut req = request(name)?;
        self.ioctl(libc::SIOCGIFFLAGS, &mut req)?;
        // SAFETY: SIOCGIFFLAGS filled in the flags member of the union.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        let iff_up = libc::IFF_UP as libc::c_short;
        req.ifr_ifru.ifru_flags = if up { flags | iff_up } else { flags & !iff_up };
        self.ioctl(libc::SIOCSIFFLAGS, &mut req)
    }

    fn ioctl(&self, request: libc::Ioctl, req: &mut libc::ifreq) -> io::Result<()> {
        // SAFETY: both requests read and write one `ifreq`, which `req` is.
        let rc = unsafe { libc::ioctl(self.socket.as_raw_fd(), request, req as *mut libc::ifreq) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

fn request(name: &str) -> io::Result<libc::ifreq> {
    // SAFETY: `ifreq` is plain data, for which all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    // The name must leave room for its terminating NUL.
    if name.len() >= req.ifr_name.len() || name.bytes().any(|b| b == 0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    for (to, from) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *to = from as libc::c_char;
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_do_not_fit_an_ifreq_are_refused() {
        assert!(request("sixteen-chars-xx").is_err());
        assert!(request("a\0b").is_err());
        assert!(request("fifteen-chars-x").is_ok());
    }
}
