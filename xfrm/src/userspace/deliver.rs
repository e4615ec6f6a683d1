//! Decrypted inner packets on their way to a virtual link. They are collected per device
//! and written with tun-rs's GRO: consecutive TCP segments (and UDP datagrams where the
//! kernel takes UDP offload) of one flow become one large packet, so the kernel's stack
//! runs once per run of segments instead of once per segment. tun-rs joins only packets
//! whose checksums verify, and the joined packet leaves the checksum to the kernel.

use std::sync::Arc;

use tun_rs::{AsyncDevice, GROTable, VIRTIO_NET_HDR_LEN};

/// Packets collected before they are written.
const PENDING_MAX: usize = 64;
/// Room for the largest packet GRO builds, with the space tun-rs reserves around it.
const PACKET_CAPACITY: usize = 2 * VIRTIO_NET_HDR_LEN + 65_535;

/// Packets waiting for one device, in arrival order.
pub struct Delivery {
    dev: Option<Arc<AsyncDevice>>,
    /// Each packet after room for its virtio-net header; the first `pending` are in use.
    packets: Vec<Vec<u8>>,
    pending: usize,
    gro: GROTable,
}

impl Delivery {
    pub fn new() -> Self {
        Self {
            dev: None,
            packets: Vec::new(),
            pending: 0,
            gro: GROTable::new(),
        }
    }

    /// Queues `packet` for `dev`, writing out first what waits for another device.
    pub async fn push(&mut self, dev: &Arc<AsyncDevice>, packet: &[u8]) {
        if self.dev.as_ref().is_some_and(|d| !Arc::ptr_eq(d, dev)) {
            self.flush().await;
        }
        if self.dev.is_none() {
            self.dev = Some(dev.clone());
        }
        if self.pending == self.packets.len() {
            self.packets.push(Vec::with_capacity(PACKET_CAPACITY));
        }
        let buf = &mut self.packets[self.pending];
        buf.clear();
        buf.resize(VIRTIO_NET_HDR_LEN, 0);
        buf.extend_from_slice(packet);
        self.pending += 1;
        if self.pending == PENDING_MAX {
            self.flush().await;
        }
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) {
        let Some(dev) = self.dev.take() else {
            return;
        };
        let pending = std::mem::take(&mut self.pending);
        let packets = &mut self.packets[..pending];
        if let Err(e) = dev
            .send_multiple(&mut self.gro, packets, VIRTIO_NET_HDR_LEN)
            .await
        {
            tracing::debug!(error = %e, "writing to virtual link");
        }
    }
}
