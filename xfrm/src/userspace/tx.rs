//! Outbound: one task per virtual link reads inner packets from its TUN device, adds the
//! IPIP outer header, selects the SA on that header and sends ESP in UDP to the neighbor.
//! Packets already queued on the device are drained and sent with one `sendmmsg`.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::Shared;
use super::batch::{BATCH, DATAGRAM_MAX, SendBatch};
use super::sad::{Expiry, SaState};
use crate::esp::{HEADER_LEN, MAX_TRAILER_LEN};
use crate::ipip::{self, Inner};
use crate::model::{DataplaneEvent, Direction, LinkSpec};

/// A sealed datagram waiting in slot `buf` of the batch.
struct Ready {
    buf: usize,
    len: usize,
    inner_len: usize,
    to: SocketAddr,
    sa: Arc<SaState>,
}

pub async fn run(shared: Arc<Shared>, dev: Arc<tun_rs::AsyncDevice>, link: LinkSpec) {
    // Buffers for the life of the link: ESP header room, the inner packet, trailer room.
    let mut bufs: Vec<Vec<u8>> = (0..BATCH)
        .map(|_| vec![0u8; HEADER_LEN + DATAGRAM_MAX + MAX_TRAILER_LEN])
        .collect();
    let mut ready: Vec<Ready> = Vec::with_capacity(BATCH);
    let mut sender = SendBatch::new();
    let mut id: u16 = 0;
    loop {
        let first = dev
            .recv(&mut bufs[0][HEADER_LEN..HEADER_LEN + DATAGRAM_MAX])
            .await;
        let mut read = Some(first);
        let mut slot = 0;
        while let Some(result) = read.take() {
            match result {
                Ok(n) => {
                    id = id.wrapping_add(1);
                    if let Some(r) = seal(&shared, &link, &mut bufs[slot], slot, n, id) {
                        ready.push(r);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::info!(link = %link.name, error = %e, "virtual link closed");
                    shared.emit(DataplaneEvent::LinkDown {
                        name: link.name.clone(),
                    });
                    return;
                }
            }
            slot += 1;
            if slot < BATCH {
                read = Some(dev.try_recv(&mut bufs[slot][HEADER_LEN..HEADER_LEN + DATAGRAM_MAX]));
            }
        }
        if ready.is_empty() {
            continue;
        }
        let datagrams: [(&[u8], SocketAddr); BATCH] = std::array::from_fn(|i| match ready.get(i) {
            Some(r) => (&bufs[r.buf][..r.len], r.to),
            // Entries past the ready ones are never sent.
            None => (&[][..], SocketAddr::from(([0, 0, 0, 0], 0))),
        });
        sender.send(&shared.socket, &datagrams[..ready.len()]).await;
        for r in ready.drain(..) {
            let expiry = r.sa.account(r.inner_len);
            shared.expire(&r.sa, expiry);
        }
    }
}

/// Encapsulates and seals the `n`-octet inner packet at `buf[HEADER_LEN..]` (batch slot
/// `slot`) in place.
fn seal(
    shared: &Shared,
    link: &LinkSpec,
    buf: &mut [u8],
    slot: usize,
    n: usize,
    id: u16,
) -> Option<Ready> {
    let inner = buf.get(HEADER_LEN..HEADER_LEN + n)?;
    // Link-up chatter (IPv6 MLD/RS) and anything else is filtered by IP version and then
    // by policy like every other packet.
    let info = Inner::classify(inner)?;
    let outer = ipip::outer_header(link.local, link.remote, info, n, id)?;
    let sa = select_sa(shared, &outer)?;
    let Some(seq) = sa.next_seq() else {
        shared.expire(&sa, Expiry::Hard);
        return None;
    };
    let len = match sa
        .cipher
        .seal(sa.id.spi, seq, seq.to_be_bytes(), outer[9], buf, n)
    {
        Ok(len) => len,
        Err(e) => {
            tracing::debug!(error = %e, "sealing ESP");
            return None;
        }
    };
    let to = SocketAddr::new(sa.id.dst, sa.dst_port());
    Some(Ready {
        buf: slot,
        len,
        inner_len: n,
        to,
        sa,
    })
}

/// The SA for an outer IPIP header: the winning outbound policy's template names it. A
/// policy without an SA asks the daemon for one; no policy means the packet is dropped.
fn select_sa(shared: &Shared, outer: &[u8; ipip::OUTER_LEN]) -> Option<Arc<SaState>> {
    let src = IpAddr::from([outer[12], outer[13], outer[14], outer[15]]);
    let dst = IpAddr::from([outer[16], outer[17], outer[18], outer[19]]);
    let proto = outer[9];
    let (sa, missing) = {
        let t = shared.read_tables();
        let policy = t.policy(Direction::Out, src, dst, proto)?;
        let tmpl = policy.template;
        match t.outbound_sa(tmpl.src, tmpl.dst, tmpl.reqid) {
            Some(sa) => (Some(sa.clone()), None),
            None => (None, Some(tmpl)),
        }
    };
    if let Some(t) = missing {
        shared.acquire(t.src, t.dst, t.reqid);
    }
    sa
}
