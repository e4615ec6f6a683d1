//! Outbound: one task per virtual link reads inner packets from its TUN device, adds the
//! IP-in-IP outer header, selects the SA on that header and sends ESP in UDP to the neighbor.
//! The device runs with segmentation offload: one read can yield dozens of packets, and
//! everything queued is drained and sent with one `sendmmsg`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::Shared;
use super::batch::SendBatch;
use super::sad::{Expiry, SaState};
use crate::esp::{HEADER_LEN, MAX_TRAILER_LEN};
use crate::ipip::{Inner, Outer};
use crate::model::{DataplaneEvent, Direction, LinkSpec};

/// A sealed datagram waiting in slot `buf` of the batch.
struct Ready {
    buf: usize,
    len: usize,
    inner_len: usize,
    to: SocketAddr,
    sa: Arc<SaState>,
}

/// Inner packets handled per batch (tun-rs's recommended batch for offload reads).
const SLOTS: usize = tun_rs::IDEAL_BATCH_SIZE;
/// Largest TCP segmentation-offload packet the kernel hands the TUN device.
const GSO_MAX: usize = 65_535;

/// Why reading the device failed: the device is gone, or one packet could not be split.
fn device_gone(e: &io::Error) -> bool {
    e.raw_os_error().is_some()
}

/// A link idle this long gives its buffers back until packets come again.
const IDLE: Duration = Duration::from_secs(10);

/// What one batch is read into, sealed in and sent from.
struct Buffers {
    /// One offload packet as the kernel hands it over.
    original: Vec<u8>,
    /// One MTU-sized packet per slot, after room for the ESP header and followed by room
    /// for the trailer.
    bufs: Vec<Vec<u8>>,
    sizes: [usize; SLOTS],
    ready: Vec<Ready>,
    sender: SendBatch,
}

impl Buffers {
    fn new(mtu: u16) -> Self {
        let slot_len = HEADER_LEN + usize::from(mtu) + MAX_TRAILER_LEN;
        Self {
            original: vec![0u8; tun_rs::VIRTIO_NET_HDR_LEN + GSO_MAX],
            bufs: (0..SLOTS).map(|_| vec![0u8; slot_len]).collect(),
            sizes: [0; SLOTS],
            ready: Vec::with_capacity(SLOTS),
            sender: SendBatch::new(SLOTS),
        }
    }
}

pub async fn run(shared: Arc<Shared>, dev: Arc<tun_rs::AsyncDevice>, link: LinkSpec) {
    // With offload the kernel hands over TCP packets of up to 64 KiB that tun-rs splits
    // into MTU-sized packets: the buffers for a batch are large, and most configured
    // links are idle most of the time. They are taken when packets come and kept while
    // traffic flows.
    let per_read = GSO_MAX.div_ceil(usize::from(link.mtu)) + 1;
    // Boxed: the task of every configured link lives as long as the link, idle or not.
    let mut held: Option<Box<Buffers>> = None;
    let mut id: u16 = 0;
    loop {
        let readable = match held {
            None => dev.readable().await,
            Some(_) => match tokio::time::timeout(IDLE, dev.readable()).await {
                Ok(readable) => readable,
                Err(_) => {
                    held = None;
                    continue;
                }
            },
        };
        if let Err(e) = readable {
            return closed(&shared, &link, &e);
        }
        let b = held.get_or_insert_with(|| Box::new(Buffers::new(link.mtu)));
        let mut used = 0;
        loop {
            let read = dev.try_recv_multiple(
                &mut b.original,
                &mut b.bufs[used..],
                &mut b.sizes[used..],
                HEADER_LEN,
            );
            match read {
                Ok(count) => {
                    for slot in used..used + count {
                        id = id.wrapping_add(1);
                        if let Some(r) =
                            seal(&shared, &link, &mut b.bufs[slot], slot, b.sizes[slot], id)
                        {
                            b.ready.push(r);
                        }
                    }
                    used += count;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if device_gone(&e) => {
                    return closed(&shared, &link, &e);
                }
                Err(e) => {
                    tracing::debug!(link = %link.name, error = %e, "unreadable packet dropped")
                }
            }
            // Drain what is already queued while a whole offload packet still fits.
            if SLOTS - used < per_read {
                break;
            }
        }
        if b.ready.is_empty() {
            continue;
        }
        // Collected per batch: an array would sit in this task's state for the link's life.
        let datagrams: Vec<(&[u8], SocketAddr)> = b
            .ready
            .iter()
            .map(|r| (&b.bufs[r.buf][..r.len], r.to))
            .collect();
        b.sender.send(&shared.socket, &datagrams).await;
        for r in b.ready.drain(..) {
            let expiry = r.sa.account(r.inner_len);
            shared.expire(&r.sa, expiry);
        }
    }
}

fn closed(shared: &Shared, link: &LinkSpec, e: &io::Error) {
    tracing::info!(link = %link.name, error = %e, "virtual link closed");
    shared.emit(DataplaneEvent::LinkDown {
        name: link.name.clone(),
    });
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
    let outer = Outer::new(link.local, link.remote, info, n, id)?;
    let sa = select_sa(shared, &outer)?;
    let Some(seq) = sa.next_seq() else {
        shared.expire(&sa, Expiry::Hard);
        return None;
    };
    let len = match sa
        .cipher
        .seal(sa.id.spi, seq, seq.to_be_bytes(), outer.proto(), buf, n)
    {
        Ok(len) => len,
        Err(e) => {
            tracing::debug!(error = %e, "sealing ESP");
            return None;
        }
    };
    let to = shared.peer(sa.id.dst, sa.dst_port());
    Some(Ready {
        buf: slot,
        len,
        inner_len: n,
        to,
        sa,
    })
}

/// The SA for an outer header: the winning outbound policy's template names it. A
/// policy without an SA asks the daemon for one; no policy means the packet is dropped.
fn select_sa(shared: &Shared, outer: &Outer) -> Option<Arc<SaState>> {
    let (sa, missing) = {
        let t = shared.read_tables();
        let policy = t
            .policies
            .lookup(Direction::Out, outer.src(), outer.dst(), outer.proto())?;
        let tmpl = policy.template;
        match t.outbound_sa(tmpl.src, tmpl.dst, tmpl.reqid, outer.proto()) {
            Some(sa) => (Some(sa.clone()), None),
            None => (None, Some(tmpl)),
        }
    };
    if let Some(t) = missing {
        shared.acquire(t.src, t.dst, t.reqid);
    }
    sa
}
