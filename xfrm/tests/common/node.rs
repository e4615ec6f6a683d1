//! A userspace data plane running in its own namespace thread, driven by commands.

use std::net::IpAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use iiptran_xfrm::userspace::{IkeDatagram, UserspaceDataplane};
use iiptran_xfrm::{
    AeadAlg, Dataplane, DataplaneEvent, Direction, IpPrefix, Lifetimes, LinkSpec, SaId, SaStats,
};
use tokio::sync::{mpsc, oneshot};

use super::Netns;

pub use super::fixtures::{LINK, REQID, policy, sa_with_key};

pub enum Cmd {
    Stats(SaId, oneshot::Sender<iiptran_xfrm::Result<SaStats>>),
    NextIke(Duration, oneshot::Sender<Option<IkeDatagram>>),
    NextEvent(Duration, oneshot::Sender<Option<DataplaneEvent>>),
}

/// How one end is keyed: its endpoint, the peer's, and the SPIs/keys of both directions.
#[derive(Clone)]
pub struct EndConfig {
    pub local: IpAddr,
    pub remote: IpAddr,
    pub inner: IpPrefix,
    pub alg: AeadAlg,
    pub out_spi: u32,
    pub out_keymat: Vec<u8>,
    pub in_spi: u32,
    pub in_keymat: Vec<u8>,
    /// Whether to install the outbound SA (tests of ACQUIRE leave it out).
    pub with_out_sa: bool,
    pub out_lifetimes: Lifetimes,
}

/// Installs SAs, policies and the virtual link for one end through any backend.
pub async fn configure(dp: &impl Dataplane, c: &EndConfig) -> iiptran_xfrm::Result<()> {
    if c.with_out_sa {
        let mut out = sa_with_key(
            Direction::Out,
            c.local,
            c.remote,
            c.out_spi,
            c.alg,
            &c.out_keymat,
        )
        .expect("SA spec");
        out.lifetimes = c.out_lifetimes;
        dp.install_sa(&out).await?;
    }
    dp.install_sa(
        &sa_with_key(
            Direction::In,
            c.remote,
            c.local,
            c.in_spi,
            c.alg,
            &c.in_keymat,
        )
        .expect("SA spec"),
    )
    .await?;
    dp.install_policy(&policy(Direction::Out, c.local, c.remote))
        .await?;
    dp.install_policy(&policy(Direction::In, c.remote, c.local))
        .await?;
    let link = LinkSpec {
        name: LINK.into(),
        local: c.local,
        remote: c.remote,
        addresses: vec![c.inner],
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
