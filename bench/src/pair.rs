//! Two iiptrand nodes joined by one virtual link (userspace data plane), and what is
//! measured over it: packet loss across rekeys under load and throughput.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use iiptran_testkit::command::checked;
use iiptran_testkit::datagrams;
use iiptran_testkit::pki::Ca;

use crate::iiptrand::{self, Binaries, Daemon};
use iiptran_testkit::WorkDir;
use iiptran_testkit::process::Process;

use crate::system::Pair;

const A_ADDR: &str = "10.201.0.1";
const B_ADDR: &str = "10.201.0.2";
/// The ends of the virtual link; iperf3 listens on b's.
const A_LINK: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 0);
const B_LINK: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);

/// Two established nodes: `a` has neighbor `b` on link `vn-b` and the other way round.
pub struct Nodes {
    pub a: Daemon,
    pub b: Daemon,
    pub pair: Pair,
    // Dropped last: the daemons write into it.
    _dir: WorkDir,
}

impl Nodes {
    /// Starts both nodes with the `[ike]` lines `ike` and waits until both links are up.
    pub fn start(bin: &Binaries, ca: &Ca, dir: &Path, prefix: &str, ike: &str) -> Result<Self> {
        let pair = Pair::new(prefix, A_ADDR, B_ADDR)?;
        let dir = WorkDir::new(dir.join(prefix))?;
        let a = iiptrand::issued(ca, ("a", A_ADDR), ike, &[("b", B_ADDR, "10.99.0.0/31")])?;
        let b = iiptrand::issued(ca, ("b", B_ADDR), ike, &[("a", A_ADDR, "10.99.0.1/31")])?;
        let ready = Duration::from_secs(30);
        let a = Daemon::start(bin, &pair.a, &dir.path, &a, ready)?;
        let b = Daemon::start(bin, &pair.b, &dir.path, &b, ready)?;
        for (d, peer) in [(&a, "b"), (&b, "a")] {
            d.wait_link(peer, "up", Duration::from_secs(60))?;
        }
        Ok(Self {
            a,
            b,
            pair,
            _dir: dir,
        })
    }
}

/// iperf3's JSON report from a client in `a` against a one-shot server on B's link end.
fn iperf(nodes: &Nodes, args: &[&str]) -> Result<Value> {
    let mut server = nodes.pair.b.command("iperf3");
    server.args(["-s", "-1", "-B", &B_LINK.to_string()]);
    server.stdout(std::process::Stdio::null());
    let _server = Process::spawn_as_is("iperf3-server", server)?;
    // The server needs a moment to listen: retry the client rather than guess a delay.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut client = nodes.pair.a.command("iperf3");
        client.args(["-c", &B_LINK.to_string(), "-J"]).args(args);
        let report = checked(client).and_then(|out| Ok(serde_json::from_str::<Value>(&out)?));
        match report {
            Ok(r) if r.get("error").is_none() => return Ok(r),
            Ok(r) if Instant::now() > deadline => bail!("iperf3: {}", r["error"]),
            Err(e) if Instant::now() > deadline => return Err(e),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Packets sent and lost in a UDP test, from the client's report of the server's count.
fn udp_counts(report: &Value) -> Result<(u64, u64, f64)> {
    let sum = &report["end"]["sum"];
    let Some(packets) = sum["packets"].as_u64() else {
        bail!("iperf3 reported no packet counts: {}", report["error"]);
    };
    let lost = sum["lost_packets"]
        .as_u64()
        .context("no end.sum.lost_packets")?;
    let seconds = sum["seconds"].as_f64().context("no end.sum.seconds")?;
    Ok((packets, lost, seconds))
}

/// One run of rekeys under load.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RekeyRun {
    pub seconds: u64,
    pub packets_per_sec_offered: u64,
    pub packets_sent: u64,
    pub packets_lost: u64,
    /// Of those lost, the ones sent within [`NEAR_REKEY`] after a rekey began: what the
    /// rekeys lost, where the rest is what the machine loses anyway.
    #[serde(default)]
    pub packets_lost_near_rekeys: u64,
    /// The same traffic for the same time just before, without rekeys: what the machine
    /// loses anyway.
    pub baseline_packets_sent: u64,
    pub baseline_packets_lost: u64,
    pub child_rekeys: u32,
    pub ike_rekeys: u32,
}

/// How long after a rekey begins a lost datagram counts against it: the exchanges and the
/// change of SAs take milliseconds.
pub const NEAR_REKEY: Duration = Duration::from_secs(1);
const TRAFFIC_PORT: u16 = 9_000;
const DATAGRAM_LEN: usize = 64;

/// Numbered datagrams from a to b at `pps` a second for `seconds`, while `during` runs
/// (given when the traffic ends); how many were sent, and when each lost one was sent.
fn numbered_traffic<T>(
    nodes: &Nodes,
    pps: u64,
    seconds: u64,
    during: impl FnOnce(Instant) -> Result<T>,
) -> Result<(T, u64, Vec<Instant>)> {
    let from = datagrams::bind(&nodes.pair.a, (A_LINK, 0).into())?;
    let to: SocketAddr = (B_LINK, TRAFFIC_PORT).into();
    let receiver = datagrams::Receiver::start(datagrams::bind(&nodes.pair.b, to)?)?;
    let mut sender = datagrams::Sender::start(from, to, pps, DATAGRAM_LEN);
    let end = sender.started + Duration::from_secs(seconds);
    let value = during(end)?;
    if let Some(rest) = end.checked_duration_since(Instant::now()) {
        std::thread::sleep(rest);
    }
    let sent = sender.stop()?;
    let lost = receiver
        .lost(sent, Duration::from_secs(3))
        .into_iter()
        .flat_map(|(first, last)| first..=last)
        .map(|n| sender.sent_at(n))
        .collect();
    Ok((value, sent, lost))
}

/// Sends `pps` 64-byte UDP datagrams a second over the link for `seconds` while `a` rekeys
/// its child SA and its IKE SA in turn every `every`; counts what never arrived, and
/// which of it was sent soon after a rekey began.
pub fn rekey_under_load(
    bin: &Binaries,
    ca: &Ca,
    dir: &Path,
    prefix: &str,
    seconds: u64,
    pps: u64,
    every: Duration,
) -> Result<RekeyRun> {
    let nodes = Nodes::start(bin, ca, dir, prefix, "")?;
    let ((), baseline_packets_sent, baseline_lost) =
        numbered_traffic(&nodes, pps, seconds, |_| Ok(()))?;
    let (rekeys, packets_sent, lost) = numbered_traffic(&nodes, pps, seconds, |end| {
        let mut rekeys: Vec<(Instant, bool)> = Vec::new();
        // Rekeys start once traffic flows and end before it does, so each one is under load.
        std::thread::sleep(every.min(Duration::from_secs(2)));
        while Instant::now() + every + Duration::from_secs(2) < end {
            let ike = rekeys.len() % 2 == 1;
            let args: &[&str] = if ike {
                &["rekey", "b", "--ike"]
            } else {
                &["rekey", "b"]
            };
            rekeys.push((Instant::now(), ike));
            nodes.a.ctl(args)?;
            std::thread::sleep(every);
        }
        Ok(rekeys)
    })?;
    if nodes.a.link_state("b")?.as_deref() != Some("up") {
        bail!("the link went down during the rekeys");
    }
    let near = |t: &Instant| rekeys.iter().any(|(r, _)| *t >= *r && *t - *r < NEAR_REKEY);
    let ike_rekeys = rekeys.iter().filter(|(_, ike)| *ike).count() as u32;
    Ok(RekeyRun {
        seconds,
        packets_per_sec_offered: pps,
        packets_sent,
        packets_lost: lost.len() as u64,
        packets_lost_near_rekeys: lost.iter().filter(|t| near(t)).count() as u64,
        baseline_packets_sent,
        baseline_packets_lost: baseline_lost.len() as u64,
        child_rekeys: rekeys.len() as u32 - ike_rekeys,
        ike_rekeys,
    })
}

/// Throughput over the link in one run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DataplaneRun {
    pub raw_chacha_mbps: f64,
    pub tcp_mbps: f64,
    pub udp_1400_received_mbps: f64,
    pub udp_1400_loss_percent: f64,
    pub udp_64_received_pps: f64,
    pub udp_64_loss_percent: f64,
}

fn received(report: &Value, len: u64) -> Result<(f64, f64, f64)> {
    let (packets, lost, seconds) = udp_counts(report)?;
    let delivered = packets.saturating_sub(lost) as f64;
    let loss = if packets == 0 {
        0.0
    } else {
        100.0 * lost as f64 / packets as f64
    };
    Ok((
        delivered * (len * 8) as f64 / seconds / 1e6,
        delivered / seconds,
        loss,
    ))
}

pub fn dataplane(
    bin: &Binaries,
    ca: &Ca,
    dir: &Path,
    prefix: &str,
    seconds: u64,
) -> Result<DataplaneRun> {
    let raw_chacha_mbps = crate::cipher::raw_chacha_mbps(Duration::from_secs(2))?;
    let nodes = Nodes::start(bin, ca, dir, prefix, "")?;
    let t = seconds.to_string();
    let tcp = iperf(&nodes, &["-t", &t])?;
    let tcp_mbps = tcp["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("no end.sum_received.bits_per_second")?
        / 1e6;
    let big = iperf(&nodes, &["-u", "-b", "0", "-l", "1400", "-t", &t])?;
    let (udp_1400_received_mbps, _, udp_1400_loss_percent) = received(&big, 1400)?;
    let small = iperf(&nodes, &["-u", "-b", "0", "-l", "64", "-t", &t])?;
    let (_, udp_64_received_pps, udp_64_loss_percent) = received(&small, 64)?;
    Ok(DataplaneRun {
        raw_chacha_mbps,
        tcp_mbps,
        udp_1400_received_mbps,
        udp_1400_loss_percent,
        udp_64_received_pps,
        udp_64_loss_percent,
    })
}
