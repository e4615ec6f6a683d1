//! Batched UDP I/O over buffers allocated once. Receive (`recvmmsg`) reports the
//! destination address of each datagram (IP_PKTINFO / IPV6_PKTINFO) and, with UDP GRO, may
//! hand over several equal-sized datagrams of one flow in one buffer. Send (`sendmmsg`)
//! joins runs of equal-sized datagrams to one peer into UDP GSO messages, which cross the
//! local stack as one packet. Addresses come out in canonical form: an IPv4-mapped address
//! (IPv4 on a dual-stack socket) as IPv4.

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Buffers filled per system call.
pub const BATCH: usize = 16;
/// Largest datagram (or run of GRO-joined datagrams) accepted.
pub const DATAGRAM_MAX: usize = 65_536;
const CONTROL_LEN: usize = 128;
/// The kernel's limit on datagrams in one GSO message (UDP_MAX_SEGMENTS).
const GSO_SEGMENTS_MAX: usize = 64;
/// Largest UDP payload of one GSO message: an IPv4 packet's 65,535 octets less the IPv4
/// and UDP headers.
const GSO_BYTES_MAX: usize = 65_535 - 20 - 8;
/// Socket buffer asked for, so bursts from a fast sender wait instead of being dropped.
const SOCKET_BUFFER: usize = 8 << 20;

fn set_int(
    socket: &UdpSocket,
    level: libc::c_int,
    opt: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: setsockopt reads an int from a valid pointer of the given length.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            opt,
            (&value as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Prepares the socket for this data plane: destination addresses reported, UDP GRO and
/// large buffers where the kernel allows them.
pub fn prepare(socket: &UdpSocket) -> io::Result<()> {
    let (level, opt) = match socket.local_addr()? {
        SocketAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_PKTINFO),
        SocketAddr::V6(_) => (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO),
    };
    set_int(socket, level, opt, 1)?;
    // Both are optimisations: without them datagrams arrive one per buffer, or wait less.
    if let Err(e) = set_int(socket, libc::SOL_UDP, libc::UDP_GRO, 1) {
        tracing::debug!(error = %e, "UDP GRO unavailable");
    }
    let size = SOCKET_BUFFER as libc::c_int;
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        // The forcing variants need CAP_NET_ADMIN; the plain ones are capped by sysctl.
        if set_int(socket, libc::SOL_SOCKET, force, size).is_err() {
            let _ = set_int(socket, libc::SOL_SOCKET, plain, size);
        }
    }
    Ok(())
}

/// One receive buffer's metadata; its bytes are `RecvBatch::data_mut(i)`: datagrams of
/// `segment` octets each, the last one possibly shorter.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub from: SocketAddr,
    pub to: Option<IpAddr>,
    pub len: usize,
    pub segment: usize,
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

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

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
            let (to, segment) = control(hdr);
            self.meta.push(Meta {
                from: from.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
                to,
                len,
                segment: segment.filter(|&s| s > 0).unwrap_or(len),
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

/// The destination address (PKTINFO) and the GRO segment size, where reported.
fn control(hdr: &libc::msghdr) -> (Option<IpAddr>, Option<usize>) {
    let (mut to, mut segment) = (None, None);
    // SAFETY: the CMSG macros walk the control buffer the kernel filled, within
    // msg_controllen, and each payload is read only for the matching level/type.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            let (level, ty) = ((*c).cmsg_level, (*c).cmsg_type);
            if level == libc::IPPROTO_IP && ty == libc::IP_PKTINFO {
                let info = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::in_pktinfo>());
                to = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    info.ipi_addr.s_addr,
                ))));
            }
            if level == libc::IPPROTO_IPV6 && ty == libc::IPV6_PKTINFO {
                let info = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::in6_pktinfo>());
                to = Some(IpAddr::V6(info.ipi6_addr.s6_addr.into()).to_canonical());
            }
            if level == libc::SOL_UDP && ty == libc::UDP_GRO {
                let size = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                segment = usize::try_from(size).ok();
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    (to, segment)
}

/// Control data of one GSO message: a UDP_SEGMENT header and its 16-bit size, aligned.
type GsoControl = [u64; 4];

/// Reusable send state for a batch of datagrams (`sendmmsg`, with UDP GSO).
pub struct SendBatch {
    names: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    control: Vec<GsoControl>,
    /// Datagrams carried by each message.
    counts: Vec<usize>,
    /// Cleared when the kernel cannot segment on this path (no checksum offload).
    gso: bool,
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
            control: vec![[0; 4]; capacity],
            counts: vec![0; capacity],
            gso: true,
        }
    }

    /// Sends `datagrams` (at most the capacity), each `(bytes, destination)`, waiting for the
    /// socket as needed. Returns how many were handed to the kernel; a datagram the kernel
    /// refuses is skipped and reported through tracing.
    pub async fn send(&mut self, socket: &UdpSocket, datagrams: &[(&[u8], SocketAddr)]) -> usize {
        let n = datagrams.len().min(self.msgs.len());
        let datagrams = &datagrams[..n];
        let mut next = 0;
        // Datagrams before this index go one per message: their GSO message was refused.
        let mut singles_until = 0;
        let mut sent = 0;
        while next < n {
            let messages = self.build(datagrams, next, singles_until);
            let mut done = 0;
            while done < messages {
                let result = loop {
                    if let Err(e) = socket.writable().await {
                        tracing::debug!(error = %e, "ESP socket");
                        return sent;
                    }
                    match socket.try_io(Interest::WRITABLE, || {
                        self.sendmmsg(socket.as_raw_fd(), done, messages)
                    }) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        other => break other,
                    }
                };
                match result {
                    Ok(k) => {
                        let k = k.max(1);
                        let carried: usize = self.counts[done..done + k].iter().sum();
                        next += carried;
                        sent += carried;
                        done += k;
                    }
                    Err(e) if self.counts[done] > 1 => {
                        // Refused as one GSO message: send its datagrams one by one, and
                        // give up on GSO where the path cannot offload the checksums.
                        tracing::debug!(error = %e, "UDP GSO message refused");
                        if e.raw_os_error() == Some(libc::EIO) {
                            self.gso = false;
                        }
                        singles_until = next + self.counts[done];
                        break;
                    }
                    Err(e) => {
                        // The datagram was refused (e.g. no route): skip it.
                        tracing::debug!(error = %e, "sending ESP");
                        next += 1;
                        done += 1;
                    }
                }
            }
        }
        sent
    }

    /// Fills the message headers for `datagrams[first..]`, joining runs of equal-sized
    /// datagrams to one destination (the last may be shorter) into GSO messages. Returns
    /// the number of messages.
    fn build(
        &mut self,
        datagrams: &[(&[u8], SocketAddr)],
        first: usize,
        singles_until: usize,
    ) -> usize {
        let mut m = 0;
        let mut i = first;
        while i < datagrams.len() {
            let (data, to) = datagrams[i];
            let mut count = 1;
            let mut bytes = data.len();
            if self.gso && i >= singles_until {
                while let Some(&(next, next_to)) = datagrams.get(i + count) {
                    let last_len = datagrams[i + count - 1].0.len();
                    if next_to != to
                        || next.len() > data.len()
                        || last_len < data.len()
                        || count == GSO_SEGMENTS_MAX
                        || bytes + next.len() > GSO_BYTES_MAX
                    {
                        break;
                    }
                    count += 1;
                    bytes += next.len();
                }
            }
            for (j, (d, _)) in datagrams[i..i + count].iter().enumerate() {
                self.iovs[i + j] = libc::iovec {
                    iov_base: d.as_ptr() as *mut libc::c_void,
                    iov_len: d.len(),
                };
            }
            let len = write_sockaddr(&mut self.names[m], to);
            let (control, control_len) = if count > 1 {
                (self.segment_control(m, data.len()), self.control_len())
            } else {
                (std::ptr::null_mut(), 0)
            };
            let h = &mut self.msgs[m].msg_hdr;
            h.msg_name = (&mut self.names[m] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = len;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = count;
            h.msg_control = control;
            h.msg_controllen = control_len;
            h.msg_flags = 0;
            self.counts[m] = count;
            m += 1;
            i += count;
        }
        m
    }

    fn control_len(&self) -> usize {
        // SAFETY: CMSG_SPACE only computes a size.
        unsafe { libc::CMSG_SPACE(mem::size_of::<u16>() as u32) as usize }
    }

    /// Writes a UDP_SEGMENT control message for `segment`-octet datagrams into message
    /// `m`'s control buffer and returns a pointer to it.
    fn segment_control(&mut self, m: usize, segment: usize) -> *mut libc::c_void {
        let len = self.control_len();
        let buf = &mut self.control[m];
        *buf = [0; 4];
        let ptr: *mut libc::c_void = buf.as_mut_ptr().cast();
        // SAFETY: a msghdr over this aligned buffer of CMSG_SPACE(2) <= 32 octets lets
        // CMSG_FIRSTHDR/CMSG_DATA point inside it; the header and the u16 are written
        // within those bounds.
        unsafe {
            let mut h: libc::msghdr = mem::zeroed();
            h.msg_control = ptr;
            h.msg_controllen = len;
            let c = libc::CMSG_FIRSTHDR(&h);
            (*c).cmsg_level = libc::SOL_UDP;
            (*c).cmsg_type = libc::UDP_SEGMENT;
            (*c).cmsg_len = libc::CMSG_LEN(mem::size_of::<u16>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), segment as u16);
        }
        ptr
    }

    fn sendmmsg(&mut self, fd: i32, from: usize, to: usize) -> io::Result<usize> {
        let msgs = &mut self.msgs[from..to];
        // SAFETY: each header points at a sockaddr, iovecs over datagrams the caller of
        // `send` keeps borrowed until it returns, and control data owned by self.
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn receive(
        batch: &mut RecvBatch,
        socket: &UdpSocket,
        want: usize,
    ) -> (Vec<Vec<u8>>, bool) {
        let mut got = Vec::new();
        let mut joined = false;
        while got.len() < want {
            let n = tokio::time::timeout(Duration::from_secs(5), batch.recv(socket))
                .await
                .expect("datagrams arrive")
                .unwrap();
            for i in 0..n {
                let meta = batch.meta(i);
                joined |= meta.segment < meta.len;
                got.extend(batch.data_mut(i).chunks(meta.segment).map(<[u8]>::to_vec));
            }
        }
        (got, joined)
    }

    /// Runs of equal-sized datagrams to one peer leave as GSO messages and arrive joined by
    /// GRO; split again they are byte for byte what was sent, in order, each to its peer.
    #[tokio::test]
    async fn gso_sends_and_gro_receives_keep_every_datagram_in_order() {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        prepare(&a).unwrap();
        prepare(&b).unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (to_a, to_b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let datagram =
            |i: usize, len: usize| -> Vec<u8> { (0..len).map(|j| (i * 31 + j) as u8).collect() };
        // 20 full-sized datagrams and a shorter one to a, 10 to b, 5 more to a.
        let mut plan: Vec<(Vec<u8>, SocketAddr)> = Vec::new();
        for i in 0..20 {
            plan.push((datagram(i, 1200), to_a));
        }
        plan.push((datagram(20, 500), to_a));
        for i in 21..31 {
            plan.push((datagram(i, 1000), to_b));
        }
        for i in 31..36 {
            plan.push((datagram(i, 1000), to_a));
        }
        let datagrams: Vec<(&[u8], SocketAddr)> =
            plan.iter().map(|(d, to)| (&d[..], *to)).collect();
        let mut send = SendBatch::new(64);
        assert_eq!(send.send(&sender, &datagrams).await, plan.len());
        assert!(send.gso, "loopback takes GSO messages");

        let mut batch = RecvBatch::new();
        let expect = |to: SocketAddr| -> Vec<Vec<u8>> {
            plan.iter()
                .filter(|(_, t)| *t == to)
                .map(|(d, _)| d.clone())
                .collect()
        };
        let (got_a, joined_a) = receive(&mut batch, &a, 26).await;
        assert_eq!(got_a, expect(to_a));
        assert!(joined_a, "some datagrams to a arrived joined");
        let (got_b, _) = receive(&mut batch, &b, 10).await;
        assert_eq!(got_b, expect(to_b));
    }
}
