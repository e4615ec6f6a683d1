//! Rekeys under load lose nothing: two real `iiptrand` processes in two network
//! namespaces (userspace data plane) carry numbered UDP datagrams at a steady rate in both
//! directions over their virtual link while child SA and IKE SA rekeys, started from
//! either side, replace the SAs; every datagram sent must arrive. Needs root.

mod support;

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Result;
use iiptran::control::protocol::IkeSaReport;
use iiptran_testkit::iiptrand::Credentials;
use iiptran_testkit::netns::Netns;
use iiptran_testkit::wait::wait_until;
use iiptran_testkit::{WorkDir, have_root};
use support::OrPanic;
use support::daemon::{Daemon, TWO_NODES_V4, TwoNodes};

const PSK: &str = "a long pre-shared key for the rekey loss test";
/// Datagrams per second in each direction: fast enough that a rekey which drops what is
/// in flight on the old SAs, or sends on new SAs the peer has not installed yet, loses
/// some, slow enough for two busy cores.
const RATE: u64 = 1_000;
const PORT: u16 = 9_000;

/// Sends numbered datagrams at `RATE` until stopped; returns how many it sent.
fn sender(socket: UdpSocket, to: SocketAddr, stop: Arc<AtomicBool>) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        let start = Instant::now();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            socket
                .send_to(&n.to_be_bytes(), to)
                .or_panic_io("sending a datagram");
            n += 1;
            let due = start + Duration::from_micros(n * 1_000_000 / RATE);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        n
    })
}

/// The sequence numbers received on a socket, collected until stopped.
struct Receiver {
    seen: Arc<Mutex<HashSet<u64>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    fn start(socket: UdpSocket) -> Self {
        let seen = Arc::new(Mutex::new(HashSet::new()));
        let stop = Arc::new(AtomicBool::new(false));
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .or_panic_io("setting a read timeout");
        let thread = std::thread::spawn({
            let (seen, stop) = (seen.clone(), stop.clone());
            move || {
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    let Ok(n) = socket.recv(&mut buf) else {
                        continue;
                    };
                    if let Ok(seq) = <[u8; 8]>::try_from(&buf[..n]) {
                        seen.lock().unwrap().insert(u64::from_be_bytes(seq));
                    }
                }
            }
        });
        Self {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn count(&self) -> u64 {
        self.seen.lock().unwrap().len() as u64
    }

    /// The runs of numbers below `sent` that never arrived, as first and last.
    fn missing(&self, sent: u64) -> Vec<(u64, u64)> {
        let seen = self.seen.lock().unwrap();
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for n in (0..sent).filter(|n| !seen.contains(n)) {
            match runs.last_mut() {
                Some((_, last)) if *last + 1 == n => *last = n,
                _ => runs.push((n, n)),
            }
        }
        runs
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

trait OrPanicIo<T> {
    fn or_panic_io(self, what: &str) -> T;
}

impl<T> OrPanicIo<T> for std::io::Result<T> {
    #[track_caller]
    fn or_panic_io(self, what: &str) -> T {
        self.unwrap_or_else(|e| panic!("{what}: {e}"))
    }
}

fn bind(ns: &Netns, addr: SocketAddr) -> UdpSocket {
    let socket = ns
        .enter(|| UdpSocket::bind(addr))
        .or_panic()
        .or_panic_io("binding the datagram socket");
    // Room for a scheduling hiccup of the receiving thread, so only the data plane can
    // lose datagrams.
    let size: libc::c_int = 4 << 20;
    // SAFETY: setsockopt on an open socket with a pointer to a c_int of the given length.
    unsafe {
        use std::os::fd::AsRawFd;
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const size).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    socket
}

/// The IKE SPIs (initiator's, responder's) and the child SPIs (inbound, outbound) in use.
type InUse = (u64, u64, u32, u32);

/// The SAs in use on a node once it has exactly one established IKE SA with exactly one
/// installed child pair (a rekey is over only when the old SAs are gone).
fn settled(d: &Daemon) -> Result<Option<InUse>> {
    let Ok([sa]) = <[IkeSaReport; 1]>::try_from(d.sas()?) else {
        return Ok(None);
    };
    let one = sa.state == "ESTABLISHED"
        && sa.child_sas.len() == 1
        && sa.child_sas[0].state == "INSTALLED";
    Ok(one.then(|| {
        let c = &sa.child_sas[0];
        (
            sa.spi_initiator.0,
            sa.spi_responder.0,
            c.inbound.spi.0,
            c.outbound.spi.0,
        )
    }))
}

#[test]
fn child_and_ike_rekeys_under_load_lose_no_datagram() {
    if !have_root("child_and_ike_rekeys_under_load_lose_no_datagram") {
        return;
    }
    let dir = WorkDir::temp("rekey-loss").or_panic();
    let psk = |_: &str| Credentials::Psk(PSK.to_owned());
    let nodes = TwoNodes::new("rl", TWO_NODES_V4, psk).or_panic();
    let (a, b) = nodes.start(dir.path()).or_panic();
    a.wait_established("b", Duration::from_secs(30)).or_panic();
    b.wait_established("a", Duration::from_secs(30)).or_panic();
    let both_settled = || -> Result<Option<(InUse, InUse)>> { Ok(settled(&a)?.zip(settled(&b)?)) };
    let mut sas = wait_until(
        "one IKE SA with one child pair on both",
        Duration::from_secs(10),
        Duration::from_millis(50),
        both_settled,
    )
    .or_panic()
    .0;

    let a_addr: SocketAddr = (std::net::Ipv4Addr::new(10, 255, 0, 0), PORT).into();
    let b_addr: SocketAddr = (std::net::Ipv4Addr::new(10, 255, 0, 1), PORT).into();
    let a_socket = bind(&nodes.a_ns, a_addr);
    let b_socket = bind(&nodes.b_ns, b_addr);
    let at_b = Receiver::start(b_socket.try_clone().or_panic_io("cloning"));
    let at_a = Receiver::start(a_socket.try_clone().or_panic_io("cloning"));
    let stop = Arc::new(AtomicBool::new(false));
    let a_to_b = sender(a_socket, b_addr, stop.clone());
    let b_to_a = sender(b_socket, a_addr, stop.clone());
    wait_until(
        "datagrams flowing both ways",
        Duration::from_secs(5),
        Duration::from_millis(10),
        || Ok(at_a.count() > 100 && at_b.count() > 100),
    )
    .or_panic();

    let mut rekeys = 0;
    for round in 0..3 {
        for (node, ike) in [(&a, false), (&b, false), (&a, true), (&b, true)] {
            let peer = if std::ptr::eq(node, &a) { "b" } else { "a" };
            let mut args = vec!["rekey", peer];
            if ike {
                args.push("--ike");
            }
            let out = node.ctl(&args).or_panic();
            assert!(
                out.status.success(),
                "rekey {args:?} in round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let before = sas;
            sas = wait_until(
                "the rekey to finish with the old SAs gone",
                Duration::from_secs(10),
                Duration::from_millis(20),
                || {
                    Ok(both_settled()?.and_then(|(x, _)| {
                        let changed = if ike {
                            (x.0, x.1) != (before.0, before.1)
                        } else {
                            (x.2, x.3) != (before.2, before.3)
                        };
                        changed.then_some(x)
                    }))
                },
            )
            .or_panic();
            rekeys += 1;
            // Traffic on the new SAs both ways before the next rekey begins.
            let (from_a, from_b) = (at_b.count(), at_a.count());
            wait_until(
                "datagrams after the rekey",
                Duration::from_secs(5),
                Duration::from_millis(10),
                || Ok(at_b.count() > from_a + 200 && at_a.count() > from_b + 200),
            )
            .or_panic();
        }
    }

    stop.store(true, Ordering::Relaxed);
    let sent_a = a_to_b.join().unwrap();
    let sent_b = b_to_a.join().unwrap();
    // What is still on its way arrives within moments; what is missing after that is lost.
    let arrived = wait_until(
        "every datagram to arrive",
        Duration::from_secs(3),
        Duration::from_millis(20),
        || Ok(at_b.count() >= sent_a && at_a.count() >= sent_b),
    );
    if arrived.is_err() {
        let (lost_at_b, lost_at_a) = (at_b.missing(sent_a), at_a.missing(sent_b));
        panic!(
            "datagrams lost across {} rekeys: a->b of {sent_a}: {lost_at_b:?}, \
             b->a of {sent_b}: {lost_at_a:?}",
            rekeys,
        );
    }
}
