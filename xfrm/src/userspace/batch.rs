//! Batched UDP receive (`recvmmsg`) with the destination address of each datagram
//! (IP_PKTINFO / IPV6_PKTINFO), over buffers allocated once. Addresses come out in
//! canonical form: an IPv4-mapped address (IPv4 on a dual-stack socket) as IPv4.

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams fetched per system call.
pub const BATCH: usize = 16;
/// Largest datagram accepted.
pub const DATAGRAM_MAX: usize = 65_536;
const CONTROL_LEN: usize = 64;

/// Asks the kernel to report each datagram's destination address.
pub fn enable_pktinfo(socket: &UdpSocket) -> io::Result<()> {
    let on: libc::c_int = 1;
    let (level, opt) = match socket.local_addr()? {
        SocketAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_PKTINFO),
        SocketAddr::V6(_) => (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO),
    };
    // SAFETY: setsockopt reads an int from a valid pointer of the given length.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            opt,
            (&on as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One received datagram's metadata; its bytes are `RecvBatch::data(i)`.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub from: SocketAddr,
    pub to: Option<IpAddr>,
    pub len: usize,
}

/// Reusable receive buffers.
pub struct RecvBatch {
    bufs: Vec<Box<[u8]>>,
    names: Vec<libc::sockaddr_storage>,
    control: Vec<[u8; CONTROL_LEN]>,
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    meta: Vec<Meta>,
}

// SAFETY: the raw pointers in iovs/msgs point only into this struct's own heap buffers and
// are rebuilt before every use.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    pub fn new() -> Self {
        // SAFETY: all-zero is a valid value for these plain C structs.
        let zero_name: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let zero_msg: libc::mmsghdr = unsafe { mem::zeroed() };
        Self {
            bufs: (0..BATCH)
                .map(|_| vec![0u8; DATAGRAM_MAX].into_boxed_slice())
                .collect(),
            names: vec![zero_name; BATCH],
            control: vec![[0u8; CONTROL_LEN]; BATCH],
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                BATCH
            ],
            msgs: vec![zero_msg; BATCH],
            meta: Vec::with_capacity(BATCH),
        }
    }

    /// Waits for and receives up to [`BATCH`] datagrams; returns how many.
    pub async fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        loop {
            socket.readable().await?;
            match socket.try_io(Interest::READABLE, || self.recvmmsg(socket.as_raw_fd())) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }

    fn recvmmsg(&mut self, fd: i32) -> io::Result<usize> {
        for i in 0..BATCH {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: DATAGRAM_MAX,
            };
            let h = &mut self.msgs[i].msg_hdr;
            h.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = self.control[i].as_mut_ptr().cast();
            h.msg_controllen = CONTROL_LEN;
            h.msg_flags = 0;
            self.msgs[i].msg_len = 0;
        }
        // SAFETY: every header points at live buffers of the stated sizes owned by self.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        self.meta.clear();
        for i in 0..n {
            let hdr = &self.msgs[i].msg_hdr;
            let truncated = hdr.msg_flags & libc::MSG_TRUNC != 0;
            let from = sockaddr_to_std(&self.names[i]);
            let len = if truncated {
                0
            } else {
                self.msgs[i].msg_len as usize
            };
            let to = pktinfo_dst(hdr);
            self.meta.push(Meta {
                from: from.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
                to,
                len,
            });
        }
        Ok(n)
    }

    pub fn meta(&self, i: usize) -> Meta {
        self.meta[i]
    }

    pub fn data_mut(&mut self, i: usize) -> &mut [u8] {
        let len = self.meta[i].len;
        &mut self.bufs[i][..len]
    }
}

fn sockaddr_to_std(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let a: &libc::sockaddr_in = unsafe { &*(ss as *const libc::sockaddr_storage).cast() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let a: &libc::sockaddr_in6 = unsafe { &*(ss as *const libc::sockaddr_storage).cast() };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            let port = u16::from_be(a.sin6_port);
            Some(match ip.to_ipv4_mapped() {
                Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
                None => SocketAddr::V6(SocketAddrV6::new(ip, port, 0, a.sin6_scope_id)),
            })
        }
        _ => None,
    }
}

fn pktinfo_dst(hdr: &libc::msghdr) -> Option<IpAddr> {
    // SAFETY: the CMSG macros walk the control buffer the kernel filled, within
    // msg_controllen, and each payload is read only for the matching level/type.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            let (level, ty) = ((*c).cmsg_level, (*c).cmsg_type);
            if level == libc::IPPROTO_IP && ty == libc::IP_PKTINFO {
                let info = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::in_pktinfo>());
                return Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    info.ipi_addr.s_addr,
                ))));
            }
            if level == libc::IPPROTO_IPV6 && ty == libc::IPV6_PKTINFO {
                let info = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::in6_pktinfo>());
                return Some(IpAddr::V6(info.ipi6_addr.s6_addr.into()).to_canonical());
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    None
}

/// Reusable send state for a batch of datagrams (`sendmmsg`).
pub struct SendBatch {
    names: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

// SAFETY: as for RecvBatch, the raw pointers are rebuilt before each use and point only at
// buffers borrowed for the duration of that call.
unsafe impl Send for SendBatch {}

impl SendBatch {
    pub fn new(capacity: usize) -> Self {
        // SAFETY: all-zero is a valid value for these plain C structs.
        let zero_name: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let zero_msg: libc::mmsghdr = unsafe { mem::zeroed() };
        Self {
            names: vec![zero_name; capacity],
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                capacity
            ],
            msgs: vec![zero_msg; capacity],
        }
    }

    /// Sends `datagrams` (at most the capacity), each `(bytes, destination)`, waiting for the
    /// socket as needed. Returns how many were handed to the kernel; a datagram the kernel
    /// refuses is skipped and reported through tracing.
    pub async fn send(&mut self, socket: &UdpSocket, datagrams: &[(&[u8], SocketAddr)]) -> usize {
        let n = datagrams.len().min(self.msgs.len());
        for (i, (data, to)) in datagrams[..n].iter().enumerate() {
            let len = write_sockaddr(&mut self.names[i], *to);
            self.iovs[i] = libc::iovec {
                iov_base: data.as_ptr() as *mut libc::c_void,
                iov_len: data.len(),
            };
            let h = &mut self.msgs[i].msg_hdr;
            h.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = len;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
        }
        let mut done = 0;
        while done < n {
            let sent = loop {
                if let Err(e) = socket.writable().await {
                    tracing::debug!(error = %e, "ESP socket");
                    return done;
                }
                match socket.try_io(Interest::WRITABLE, || {
                    self.sendmmsg(socket.as_raw_fd(), done, n)
                }) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    other => break other,
                }
            };
            match sent {
                Ok(k) => done += k.max(1),
                Err(e) => {
                    // The first datagram was refused (e.g. no route): skip it.
                    tracing::debug!(error = %e, "sending ESP");
                    done += 1;
                }
            }
        }
        n
    }

    fn sendmmsg(&mut self, fd: i32, from: usize, to: usize) -> io::Result<usize> {
        let msgs = &mut self.msgs[from..to];
        // SAFETY: each header points at a sockaddr and an iovec over a datagram the caller
        // of `send` keeps borrowed until it returns.
        let r =
            unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), msgs.len() as u32, libc::MSG_DONTWAIT) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r as usize)
        }
    }
}

fn write_sockaddr(ss: &mut libc::sockaddr_storage, addr: SocketAddr) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin: &mut libc::sockaddr_in =
                unsafe { &mut *(ss as *mut libc::sockaddr_storage).cast() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            };
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            let sin6: &mut libc::sockaddr_in6 =
                unsafe { &mut *(ss as *mut libc::sockaddr_storage).cast() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            sin6.sin6_flowinfo = 0;
            sin6.sin6_scope_id = a.scope_id();
            mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}
