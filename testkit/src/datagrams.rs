//! Numbered UDP datagrams at a steady rate, and a receiver that tells which never
//! arrived: loss measured per datagram, so each lost one has the moment it was sent.

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::netns::Netns;
use crate::wait::wait_until;

/// A UDP socket bound in `ns` with a receive buffer big enough for a scheduling hiccup of
/// the receiving thread, so that only the path under test loses datagrams.
pub fn bind(ns: &Netns, addr: SocketAddr) -> Result<UdpSocket> {
    let socket = ns
        .enter(|| UdpSocket::bind(addr))?
        .with_context(|| format!("binding a datagram socket to {addr}"))?;
    let size: libc::c_int = 4 << 20;
    // SAFETY: setsockopt on an open socket with a pointer to a c_int of the given length.
    let rc = unsafe {
        use std::os::fd::AsRawFd;
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const size).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("setting SO_RCVBUFFORCE");
    }
    Ok(socket)
}

/// Sends datagrams of `len` octets (at least 8), numbered from 0 in their first 8, at
/// `rate` a second, each at its own moment: datagram `n` leaves at `started + n / rate`.
pub struct Sender {
    pub started: Instant,
    rate: u64,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<std::io::Result<u64>>>,
}

impl Sender {
    pub fn start(socket: UdpSocket, to: SocketAddr, rate: u64, len: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let mut payload = vec![0u8; len.max(8)];
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    payload[..8].copy_from_slice(&n.to_be_bytes());
                    socket.send_to(&payload, to)?;
                    n += 1;
                    if let Some(wait) = due(started, rate, n).checked_duration_since(Instant::now())
                    {
                        std::thread::sleep(wait);
                    }
                }
                Ok(n)
            }
        });
        Self {
            started,
            rate,
            stop,
            thread: Some(thread),
        }
    }

    /// When datagram `n` was due to leave.
    pub fn sent_at(&self, n: u64) -> Instant {
        due(self.started, self.rate, n)
    }

    /// Stops sending; how many datagrams went.
    pub fn stop(&mut self) -> Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().context("the sender stopped twice")?;
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("the sending thread panicked"))?
            .context("sending a datagram")
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// When datagram `n` of a sender that started at `started` with `rate` a second is due.
fn due(started: Instant, rate: u64, n: u64) -> Instant {
    started + Duration::from_micros(n * 1_000_000 / rate)
}

/// The numbers of the datagrams received on a socket, collected until dropped.
pub struct Receiver {
    seen: Arc<Mutex<HashSet<u64>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    pub fn start(socket: UdpSocket) -> Result<Self> {
        let seen = Arc::new(Mutex::new(HashSet::new()));
        let stop = Arc::new(AtomicBool::new(false));
        // Wakes the thread now and then to look at `stop`.
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let thread = std::thread::spawn({
            let (seen, stop) = (seen.clone(), stop.clone());
            move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    let Ok(n) = socket.recv(&mut buf) else {
                        continue;
                    };
                    if let Some(seq) = buf[..n].first_chunk::<8>() {
                        seen.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(u64::from_be_bytes(*seq));
                    }
                }
            }
        });
        Ok(Self {
            seen,
            stop,
            thread: Some(thread),
        })
    }

    /// Distinct datagrams received so far.
    pub fn count(&self) -> u64 {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).len() as u64
    }

    /// The runs of numbers below `sent` that never arrived, as first and last.
    fn missing(&self, sent: u64) -> Vec<(u64, u64)> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for n in (0..sent).filter(|n| !seen.contains(n)) {
            match runs.last_mut() {
                Some((_, last)) if *last + 1 == n => *last = n,
                _ => runs.push((n, n)),
            }
        }
        runs
    }

    /// Waits up to `within` for all of the first `sent` datagrams (what is still on its way
    /// arrives within moments); the runs still missing after that are lost.
    pub fn lost(&self, sent: u64, within: Duration) -> Vec<(u64, u64)> {
        // Running out of time is the answer here, not an error: what is missing is lost.
        let _ = wait_until("every datagram", within, Duration::from_millis(20), || {
            Ok(self.count() >= sent)
        });
        self.missing(sent)
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
