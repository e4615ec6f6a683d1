//! Outbound: one task per virtual link reads inner packets from its TUN device, adds the
//! IPIP outer header, selects the SA on that header and sends ESP in UDP to the neighbor.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::Shared;
use super::batch::DATAGRAM_MAX;
use super::sad::{Expiry, SaState};
use crate::esp::{HEADER_LEN, MAX_TRAILER_LEN};
use crate::ipip::{self, Inner};
use crate::model::{DataplaneEvent, Direction, LinkSpec};

pub async fn run(shared: Arc<Shared>, dev: Arc<tun_rs::AsyncDevice>, link: LinkSpec) {
    // One buffer for the life of the link: ESP header room, the inner packet, trailer room.
    let mut buf = vec![0u8; HEADER_LEN + DATAGRAM_MAX + MAX_TRAILER_LEN];
    let mut id: u16 = 0;
    loop {
        let n = match dev
            .recv(&mut buf[HEADER_LEN..HEADER_LEN + DATAGRAM_MAX])
            .await
        {
            Ok(n) => n,
            Err(e) => {
                tracing::info!(link = %link.name, error = %e, "virtual link closed");
                shared.emit(DataplaneEvent::LinkDown {
                    name: link.name.clone(),
                });
                return;
            }
        };
        let inner = &buf[HEADER_LEN..HEADER_LEN + n];
        // Link-up chatter (IPv6 MLD/RS) and anything else is filtered by IP version and
        // then by policy like every other packet.
        let Some(info) = Inner::classify(inner) else {
            continue;
        };
        id = id.wrapping_add(1);
        let Some(outer) = ipip::outer_header(link.local, link.remote, info, n, id) else {
            continue;
        };
        let Some(sa) = select_sa(&shared, &outer) else {
            continue;
        };
        let Some(seq) = sa.next_seq() else {
            shared.expire(&sa, Expiry::Hard);
            continue;
        };
        let len = match sa
            .cipher
            .seal(sa.id.spi, seq, seq.to_be_bytes(), outer[9], &mut buf, n)
        {
            Ok(len) => len,
            Err(e) => {
                tracing::debug!(error = %e, "sealing ESP");
                continue;
            }
        };
        let to = SocketAddr::new(sa.id.dst, sa.dst_port());
        if let Err(e) = shared.socket.send_to(&buf[..len], to).await {
            tracing::debug!(%to, error = %e, "sending ESP");
            continue;
        }
        let expiry = sa.account(n);
        shared.expire(&sa, expiry);
    }
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
