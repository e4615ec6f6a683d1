//! Virtual links set up off the main loop. Bringing a device up takes the kernel's RTNL
//! lock and runs its address routes, queueing discipline and notifications: about a tenth
//! of the main loop's time per adjacency, during which no IKE message is answered, and
//! longer whenever another process (a routing daemon dumping its table) holds the lock.
//!
//! Requests are carried out one at a time in the order they were made, so that a device
//! is never set up after a later change was made to it; a caller about to change a
//! neighbor's link another way first waits for [`LinkSwitch::settled`], which returns at
//! once unless that neighbor has a request outstanding, so a burst of link-ups for others
//! does not hold the change up. Each request has a number, and a completion is of use
//! only while no later request was made for its neighbor: the runtime keeps the number of
//! the latest.

use std::collections::HashMap;
use std::sync::Arc;

use iiptran_xfrm::{Dataplane, Error as DpError};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// A link brought up, or not.
#[derive(Debug)]
pub(super) struct LinkUpDone {
    pub neighbor: String,
    pub seq: u64,
    pub result: Result<(), DpError>,
}

enum Request {
    Up {
        neighbor: String,
        link: String,
        seq: u64,
    },
    Settled(oneshot::Sender<()>),
}

pub(super) struct LinkSwitch {
    requests: Option<mpsc::UnboundedSender<Request>>,
    done: mpsc::UnboundedReceiver<LinkUpDone>,
    /// Per neighbor, requests made whose completion the runtime has not taken.
    in_flight: HashMap<String, usize>,
    task: Option<JoinHandle<()>>,
}

impl LinkSwitch {
    pub fn new<D: Dataplane + 'static>(dataplane: Arc<D>) -> Self {
        let (requests, mut queue) = mpsc::unbounded_channel();
        let (report, done) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Some(request) = queue.recv().await {
                match request {
                    Request::Up {
                        neighbor,
                        link,
                        seq,
                    } => {
                        let result = dataplane.set_link_up(&link, true).await;
                        // The runtime has gone only at shutdown, when nothing waits for it.
                        let _ = report.send(LinkUpDone {
                            neighbor,
                            seq,
                            result,
                        });
                    }
                    Request::Settled(reply) => {
                        let _ = reply.send(());
                    }
                }
            }
        });
        Self {
            requests: Some(requests),
            done,
            in_flight: HashMap::new(),
            task: Some(task),
        }
    }

    /// Asks for `link` to be set up; its completion comes from [`Self::done`] with `seq`.
    pub fn up(&mut self, neighbor: &str, link: &str, seq: u64) {
        let request = Request::Up {
            neighbor: neighbor.to_owned(),
            link: link.to_owned(),
            seq,
        };
        if let Some(requests) = &self.requests
            && requests.send(request).is_ok()
        {
            *self.in_flight.entry(neighbor.to_owned()).or_default() += 1;
        }
    }

    /// Returns once every request made so far for `neighbor` has been carried out.
    pub async fn settled(&self, neighbor: &str) {
        if !self.in_flight.contains_key(neighbor) {
            return;
        }
        let (reply, replied) = oneshot::channel();
        if let Some(requests) = &self.requests
            && requests.send(Request::Settled(reply)).is_ok()
        {
            let _ = replied.await;
        }
    }

    /// The next completion; pending while nothing is in flight.
    pub async fn done(&mut self) -> LinkUpDone {
        match self.done.recv().await {
            Some(done) => {
                if let Some(count) = self.in_flight.get_mut(&done.neighbor) {
                    *count -= 1;
                    if *count == 0 {
                        self.in_flight.remove(&done.neighbor);
                    }
                }
                done
            }
            // The worker ended: at shutdown, or on a panic in the data plane.
            None => std::future::pending().await,
        }
    }

    /// Carries out what was asked and ends the worker; later requests are dropped, and
    /// so are the completions.
    pub async fn close(&mut self) {
        self.requests = None;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iiptran_testkit::netns::Netns;
    use iiptran_xfrm::userspace::UserspaceDataplane;
    use iiptran_xfrm::{InnerFamilies, IpPrefix, LinkSpec};

    const LINK: &str = "lsw0";

    /// Whether `wait` completes without waiting for the worker (which, on a current-thread
    /// runtime, runs only when the test waits).
    fn ready_at_once(wait: impl Future<Output = ()>) -> bool {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        std::pin::pin!(wait).poll(&mut cx).is_ready()
    }

    fn is_up(ns: &Netns) -> bool {
        let shown = ns.ip(&["-o", "link", "show", LINK]).unwrap();
        // `3: lsw0: <POINTOPOINT,MULTICAST,NOARP,UP,LOWER_UP> mtu 1400 ...`
        let flags = shown.split(['<', '>']).nth(1).unwrap();
        flags.split(',').any(|f| f == "UP")
    }

    #[test]
    fn a_link_up_never_lands_after_a_later_change_and_each_reports_how_it_went() {
        let ns = Netns::new("lsw").unwrap();
        ns.enter(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                let (dataplane, _ike) = UserspaceDataplane::new(Arc::new(socket)).unwrap();
                let dataplane = Arc::new(dataplane);
                let link = LinkSpec {
                    name: LINK.into(),
                    local: "127.0.0.1".parse().unwrap(),
                    remote: "127.0.0.2".parse().unwrap(),
                    addresses: vec![IpPrefix::new("10.98.0.1".parse().unwrap(), 30).unwrap()],
                    inner: InnerFamilies {
                        ipv4: true,
                        ipv6: false,
                    },
                    mtu: 1400,
                };
                dataplane.create_link(&link).await.unwrap();
                let mut switch = LinkSwitch::new(dataplane.clone());

                // On this one thread the worker runs only when the caller waits: without
                // `settled`, the link would go down first and then up.
                switch.up("n", LINK, 1);
                switch.settled("n").await;
                dataplane.set_link_up(LINK, false).await.unwrap();
                let done = switch.done().await;
                assert_eq!((done.neighbor.as_str(), done.seq), ("n", 1));
                assert!(done.result.is_ok());
                assert!(!is_up(&ns));

                // Only the neighbor's own requests hold up a change to its link.
                switch.up("n", LINK, 2);
                assert!(ready_at_once(switch.settled("m")));
                assert!(!ready_at_once(switch.settled("n")));
                let done = switch.done().await;
                assert_eq!(done.seq, 2);
                assert!(done.result.is_ok());
                assert!(is_up(&ns));

                switch.up("n", "lsw-nosuch", 3);
                let done = switch.done().await;
                assert_eq!(done.seq, 3);
                assert!(matches!(done.result, Err(DpError::NotFound(_))));

                switch.close().await;
                switch.up("n", LINK, 4);
                switch.settled("n").await;
                assert!(switch.in_flight.is_empty());
            });
        })
        .unwrap();
    }
}
