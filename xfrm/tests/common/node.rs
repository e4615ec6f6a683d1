//! A userspace data plane running in its own namespace thread, driven by commands.

use std::net::IpAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use iiptran_xfrm::userspace::{IkeDatagram, UserspaceDataplane};
use iiptran_xfrm::{
    AeadAlg, Dataplane, DataplaneEvent, Direction, IPPROTO_IPIP, IPPROTO_IPV6, InnerFamilies,
    IpPrefix, Lifetimes, LinkSpec, SaId, SaSpec, SaStats,
};
use tokio::sync::{mpsc, oneshot};

use iiptran_testkit::netns::Netns;

pub use super::fixtures::{LINK, REQID, policy, sa_with_key};

pub enum Cmd {
    Stats(SaId, oneshot::Sender<iiptran_xfrm::Result<SaStats>>),
    NextIke(Duration, oneshot::Sender<Option<IkeDatagram>>),
    NextEvent(Duration, oneshot::Sender<Option<DataplaneEvent>>),
    /// Updates the outbound SA (of the IPIP policy) to these lifetimes.
    Relimit(Lifetimes, oneshot::Sender<iiptran_xfrm::Result<()>>),
}

/// How one end is keyed: its endpoint, the peer's, and the SPIs/keys of both directions.
#[derive(Clone)]
pub struct EndConfig {
    pub local: IpAddr,
    pub remote: IpAddr,
    pub inner: IpPrefix,
    /// An IPv6 inner address, carried with SAs of its own (protocol 41).
    pub inner6: Option<IpPrefix>,
    pub alg: AeadAlg,
    pub out_spi: u32,
    pub out_keymat: Vec<u8>,
    pub in_spi: u32,
    pub in_keymat: Vec<u8>,
    /// Whether to install the outbound SA (tests of ACQUIRE leave it out).
    pub with_out_sa: bool,
    pub out_lifetimes: Lifetimes,
}

/// How much the SPIs of the SAs for IPv6 inner packets (protocol 41) exceed the others'.
pub const INNER6_SPI_OFFSET: u32 = 0x10;

/// The SA in direction `dir` for outer protocol `proto`, as [`protect`] installs it.
fn sa(c: &EndConfig, dir: Direction, proto: u8, spi_add: u32, key_xor: u8) -> SaSpec {
    let (src, dst, spi, keymat) = match dir {
        Direction::Out => (c.local, c.remote, c.out_spi, &c.out_keymat),
        _ => (c.remote, c.local, c.in_spi, &c.in_keymat),
    };
    let key: Vec<u8> = keymat.iter().map(|b| b ^ key_xor).collect();
    let mut sa = sa_with_key(dir, src, dst, spi + spi_add, c.alg, &key).expect("SA spec");
    sa.selector.proto = Some(proto);
    if dir == Direction::Out {
        sa.lifetimes = c.out_lifetimes;
    }
    sa
}

/// SAs both ways and policies for outer protocol `proto`; SPIs are offset by `spi_add`
/// and keys XORed with `key_xor`, so no two SAs share a key.
async fn protect(
    dp: &impl Dataplane,
    c: &EndConfig,
    proto: u8,
    spi_add: u32,
    key_xor: u8,
) -> iiptran_xfrm::Result<()> {
    if c.with_out_sa {
        dp.install_sa(&sa(c, Direction::Out, proto, spi_add, key_xor))
            .await?;
    }
    dp.install_sa(&sa(c, Direction::In, proto, spi_add, key_xor))
        .await?;
    for (dir, src, dst) in [
        (Direction::Out, c.local, c.remote),
        (Direction::In, c.remote, c.local),
    ] {
        let mut p = policy(dir, src, dst);
        p.selector.proto = Some(proto);
        dp.install_policy(&p).await?;
    }
    Ok(())
}

/// Installs SAs, policies and the virtual link for one end through any backend; with
/// `inner6`, a second set of SAs and policies for IPv6 inner packets.
pub async fn configure(dp: &impl Dataplane, c: &EndConfig) -> iiptran_xfrm::Result<()> {
    protect(dp, c, IPPROTO_IPIP, 0, 0).await?;
    if c.inner6.is_some() {
        protect(dp, c, IPPROTO_IPV6, INNER6_SPI_OFFSET, 0x33).await?;
    }
    let link = LinkSpec {
        name: LINK.into(),
        local: c.local,
        remote: c.remote,
        addresses: std::iter::once(c.inner).chain(c.inner6).collect(),
        inner: InnerFamilies {
            ipv4: true,
            ipv6: c.inner6.is_some(),
        },
        mtu: 1400,
    };
    dp.create_link(&link).await?;
    dp.set_link_up(LINK, true).await
}

/// A userspace data plane on a dual-stack UDP socket, port 4500, in namespace `ns`,
/// configured per `cfg`.
pub struct UserspaceNode {
    cmd: Option<mpsc::UnboundedSender<Cmd>>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl UserspaceNode {
    pub fn start(ns: &Netns, cfg: EndConfig) -> Self {
        let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel::<Cmd>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = iiptran_xfrm::netns::spawn_in(&ns.path(), move || async move {
            let socket = Arc::new(
                tokio::net::UdpSocket::bind("[::]:4500")
                    .await
                    .expect("bind 4500"),
            );
            let (dp, mut ike) = UserspaceDataplane::new(socket).expect("data plane");
            let mut events = dp.subscribe();
            let setup = configure(&dp, &cfg).await;
            let _ = ready_tx.send(setup.map_err(|e| e.to_string()));
            while let Some(cmd) = cmd_rx.recv().await {
                match cmd {
                    Cmd::Stats(id, reply) => {
                        let _ = reply.send(dp.sa_stats(id).await);
                    }
                    Cmd::NextIke(t, reply) => {
                        let _ =
                            reply.send(tokio::time::timeout(t, ike.recv()).await.ok().flatten());
                    }
                    Cmd::Relimit(lifetimes, reply) => {
                        let mut out = sa(&cfg, Direction::Out, IPPROTO_IPIP, 0, 0);
                        out.lifetimes = lifetimes;
                        let _ = reply.send(dp.update_sa(&out).await);
                    }
                    Cmd::NextEvent(t, reply) => {
                        let _ = reply.send(
                            tokio::time::timeout(t, events.recv())
                                .await
                                .ok()
                                .and_then(|e| e.ok()),
                        );
                    }
                }
            }
        })
        .expect("namespace thread");
        ready_rx
            .recv()
            .expect("node thread died")
            .expect("configuring the data plane");
        Self {
            cmd: Some(cmd_tx),
            thread: Some(thread),
        }
    }

    fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> oneshot::Receiver<T> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .as_ref()
            .expect("running")
            .send(make(tx))
            .expect("node alive");
        rx
    }

    pub fn stats(&self, id: SaId) -> SaStats {
        self.try_stats(id).expect("SA stats")
    }

    pub fn try_stats(&self, id: SaId) -> iiptran_xfrm::Result<SaStats> {
        self.ask(|r| Cmd::Stats(id, r))
            .blocking_recv()
            .expect("reply")
    }

    /// The next IKE datagram handed up, or `None` after `timeout`.
    pub fn next_ike(&self, timeout: Duration) -> Option<IkeDatagram> {
        self.ask(|r| Cmd::NextIke(timeout, r))
            .blocking_recv()
            .expect("reply")
    }

    pub fn relimit(&self, lifetimes: Lifetimes) {
        self.ask(|r| Cmd::Relimit(lifetimes, r))
            .blocking_recv()
            .expect("reply")
            .expect("updating the SA");
    }

    pub fn next_event(&self, timeout: Duration) -> Option<DataplaneEvent> {
        self.ask(|r| Cmd::NextEvent(timeout, r))
            .blocking_recv()
            .expect("reply")
    }
}

impl Drop for UserspaceNode {
    fn drop(&mut self) {
        // Closing the command channel ends the thread's loop; its runtime then drops the
        // data plane, which stops its tasks and closes the TUN devices.
        self.cmd.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
