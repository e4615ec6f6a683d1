//! Two iiptrand nodes joined by one virtual link (userspace data plane), and what is
//! measured over it: packet loss across rekeys under load and throughput.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use iiptran_testkit::command::checked;
use iiptran_testkit::pki::Ca;

use crate::iiptrand::{self, Binaries, Daemon};
use iiptran_testkit::WorkDir;
use iiptran_testkit::process::Process;

use crate::system::Pair;

const A_ADDR: &str = "10.201.0.1";
const B_ADDR: &str = "10.201.0.2";
/// B's end of the virtual link, where iperf3 listens.
const B_LINK: &str = "10.99.0.1";

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
    server.args(["-s", "-1", "-B", B_LINK]);
    server.stdout(std::process::Stdio::null());
    let _server = Process::spawn_as_is("iperf3-server", server)?;
    // The server needs a moment to listen: retry the client rather than guess a delay.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut client = nodes.pair.a.command("iperf3");
        client.args(["-c", B_LINK, "-J"]).args(args);
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
    /// The same traffic for the same time just before, without rekeys: what the machine
    /// loses anyway.
    pub baseline_packets_sent: u64,
    pub baseline_packets_lost: u64,
    pub child_rekeys: u32,
    pub ike_rekeys: u32,
}

/// Sends `pps` 64-byte UDP datagrams a second over the link for `seconds` while `a` rekeys
/// its child SA and its IKE SA in turn every `every`; counts what iperf3 lost.
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
    let rate = (pps * 64 * 8).to_string();
    let traffic_args = ["-u", "-b", &rate, "-l", "64", "-t", &seconds.to_string()];
    let (baseline_packets_sent, baseline_packets_lost, _) =
        udp_counts(&iperf(&nodes, &traffic_args)?)?;
    let (child_rekeys, ike_rekeys, report) = std::thread::scope(|scope| {
        let traffic = scope.spawn(|| iperf(&nodes, &traffic_args));
        let (mut child, mut ike) = (0u32, 0u32);
        // Rekeys start once traffic flows and end before it does, so each one is under load.
        let end = Instant::now() + Duration::from_secs(seconds.saturating_sub(2));
        std::thread::sleep(every.min(Duration::from_secs(2)));
        while Instant::now() + every < end && !traffic.is_finished() {
            let ike_turn = (child + ike) % 2 == 1;
            let args: &[&str] = if ike_turn {
                &["rekey", "b", "--ike"]
            } else {
                &["rekey", "b"]
            };
            nodes.a.ctl(args)?;
            if ike_turn {
                ike += 1;
            } else {
                child += 1;
            }
            std::thread::sleep(every);
        }
        let report = traffic
            .join()
            .map_err(|_| anyhow::anyhow!("iperf3 thread panicked"))??;
        Ok::<_, anyhow::Error>((child, ike, report))
    })?;
    let (packets_sent, packets_lost, _) = udp_counts(&report)?;
    if nodes.a.link_state("b")?.as_deref() != Some("up") {
        bail!("the link went down during the rekeys");
    }
    Ok(RekeyRun {
        seconds,
        packets_per_sec_offered: pps,
        packets_sent,
        packets_lost,
        baseline_packets_sent,
        baseline_packets_lost,
        child_rekeys,
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
