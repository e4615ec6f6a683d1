//! Inbound: one task reads the shared UDP socket in batches, hands IKE up, and turns ESP
//! back into inner packets on the virtual link of the neighbor that sent them. A receive
//! buffer may hold several datagrams joined by UDP GRO; each is handled on its own.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use super::batch::{Meta, RecvBatch};
use super::deliver::Delivery;
use super::sad::SaState;
use super::{IkeDatagram, Shared};
use crate::esp::{EspError, EspHeader};
use crate::ipip::Inner;
use crate::model::Direction;

pub async fn run(shared: Arc<Shared>, ike: mpsc::Sender<IkeDatagram>) {
    let mut batch = RecvBatch::new();
    let mut delivery = Delivery::new();
    loop {
        let n = match batch.recv(&shared.socket).await {
            Ok(n) => n,
            Err(e) => {
                // Errors here are per-datagram (e.g. ICMP errors queued on the socket);
                // the socket itself stays usable.
                tracing::debug!(error = %e, "ESP-in-UDP receive");
                continue;
            }
        };
        for i in 0..n {
            let meta = batch.meta(i);
            for datagram in batch.data_mut(i).chunks_mut(meta.segment.max(1)) {
                match datagram {
                    // NAT-keepalive (RFC 3948 §2.3).
                    [0xff] => {}
                    [0, 0, 0, 0, ike_msg @ ..] => {
                        let d = IkeDatagram {
                            from: meta.from,
                            to: meta.to,
                            data: ike_msg.to_vec(),
                        };
                        if ike.try_send(d).is_err() {
                            tracing::debug!(from = %meta.from, "IKE datagram dropped: receiver full or gone");
                        }
                    }
                    esp => receive_esp(&shared, meta, esp, &mut delivery).await,
                }
            }
        }
        delivery.flush().await;
    }
}

async fn receive_esp(shared: &Shared, meta: Meta, packet: &mut [u8], delivery: &mut Delivery) {
    let Ok(hdr) = EspHeader::parse(packet) else {
        return;
    };
    let sa = shared.read_tables().inbound.get(&hdr.spi).cloned();
    let Some(sa) = sa else {
        tracing::trace!(spi = hdr.spi, from = %meta.from, "ESP for unknown SPI");
        return;
    };
    if sa.is_dead() || sa.direction != Direction::In {
        return;
    }
    // Without NAT traversal the outer header is exactly the SA's endpoints.
    let to_ok = meta.to.is_none_or(|to| to == sa.id.dst);
    if !sa.natt() && (meta.from.ip() != sa.id.src || !to_ok) {
        tracing::debug!(spi = hdr.spi, from = %meta.from, "ESP between addresses that are not the SA's");
        return;
    }
    let seq = {
        let window = sa.replay.lock().unwrap_or_else(|e| e.into_inner());
        window.check(hdr.seq)
    };
    let Ok(seq) = seq else {
        sa.replay_drops.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let opened = match sa.cipher.open(packet, seq) {
        Ok(o) => o,
        Err(EspError::Auth) => {
            sa.auth_failures.fetch_add(1, Ordering::Relaxed);
            return;
        }
        Err(e) => {
            tracing::debug!(spi = hdr.spi, error = %e, "bad ESP packet");
            return;
        }
    };
    let accepted = sa
        .replay
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .accept(seq);
    if accepted.is_err() {
        sa.replay_drops.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let Some(inner) = packet.get(opened.payload) else {
        return;
    };
    if !accept_inner(shared, &sa, opened.next_header, inner) {
        return;
    }
    let expiry = sa.account(inner.len());
    let (local, remote) = (sa.id.dst, sa.id.src);
    let dev = shared
        .delivery
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&(local, remote))
        .cloned();
    match dev {
        Some(dev) => delivery.push(&dev, inner).await,
        None => tracing::trace!(%remote, "no virtual link up for this neighbor"),
    }
    shared.expire(&sa, expiry);
}

/// RFC 3884 §4.2.3: the decrypted packet is IP-in-IP from exactly this SA's peer to us, and an
/// inbound policy for that outer header requires exactly this SA.
fn accept_inner(shared: &Shared, sa: &SaState, next_header: u8, inner: &[u8]) -> bool {
    let Some(info) = Inner::classify(inner) else {
        return false;
    };
    if info.proto != next_header || !sa.selector.matches(sa.id.src, sa.id.dst, next_header, None) {
        return false;
    }
    let t = shared.read_tables();
    t.policies
        .lookup(Direction::In, sa.id.src, sa.id.dst, next_header)
        .is_some_and(|p| {
            p.template.reqid == sa.reqid
                && p.template.src == sa.id.src
                && p.template.dst == sa.id.dst
        })
}
