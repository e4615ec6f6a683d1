//! The results of one `bench/run`: kept whole in JSON, summarised as a table.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::failure::FailureRun;
use crate::floor::FloorRun;
use crate::pair::{DataplaneRun, RekeyRun};
use crate::setup_rate::RateRun;
use crate::stats::Spread;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Report {
    pub started_utc: String,
    pub machine: String,
    pub concurrency: u32,
    pub setup: Vec<SizeResult>,
    pub floor: Vec<FloorRun>,
    pub rekey: Vec<RekeyRun>,
    #[serde(default)]
    pub failure: Vec<FailureRun>,
    pub dataplane: Vec<DataplaneRun>,
    /// Runs that failed, and why; they are left out of the figures.
    pub errors: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SizeResult {
    pub count: u32,
    pub iiptrand: Vec<RateRun>,
    pub charon: Vec<RateRun>,
}

fn spread<T>(runs: &[T], f: impl Fn(&T) -> f64) -> Option<Spread> {
    Spread::of(runs.iter().map(f))
}

fn cell(s: Option<Spread>, decimals: usize) -> String {
    s.map_or_else(|| "-".into(), |s| s.show(decimals))
}

fn ratio(a: Option<Spread>, b: Option<Spread>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b.median != 0.0 => format!("{:.2}", a.median / b.median),
        _ => "-".into(),
    }
}

impl Report {
    pub fn table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "iiptran benchmarks, {} — {}\nmedian (min–max, runs); the machine is shared and noisy: compare within a row\n",
            self.started_utc, self.machine
        );
        let _ = writeln!(
            t,
            "Setup rate and cost: N initiating nodes (one IKE SA + one IIPtran transport child each,\n\
             Ed25519 certificates, x25519, ChaCha20-Poly1305), {} setups in flight, one responder;\n\
             CPU and RSS growth from the first setup until the responder reports all N up;\n\
             RSS idle: with the N peers configured, before the first setup; each RSS once it held still 2 s",
            self.concurrency
        );
        let _ = writeln!(
            t,
            "{:>6}  {:<10} {:>26} {:>26} {:>26} {:>24}",
            "N", "responder", "setups/s", "CPU ms/setup", "RSS KiB/adjacency", "RSS MiB idle"
        );
        for s in &self.setup {
            let figures = |runs: &[RateRun]| {
                [
                    spread(runs, |r| r.setups_per_sec),
                    spread(runs, |r| r.responder_cpu_ms_per_setup),
                    spread(runs, |r| r.responder_rss_kib_per_adjacency),
                    spread(runs, |r| r.responder_rss_kib_configured as f64 / 1024.0),
                ]
            };
            let (i, c) = (figures(&s.iiptrand), figures(&s.charon));
            for (name, f) in [("iiptrand", i), ("charon", c)] {
                let _ = writeln!(
                    t,
                    "{:>6}  {:<10} {:>26} {:>26} {:>26} {:>24}",
                    s.count,
                    name,
                    cell(f[0], 0),
                    cell(f[1], 3),
                    cell(f[2], 1),
                    cell(f[3], 1)
                );
            }
            let _ = writeln!(
                t,
                "{:>6}  {:<10} {:>26} {:>26} {:>26} {:>24}",
                s.count,
                "iip/charon",
                ratio(i[0], c[0]),
                ratio(i[1], c[1]),
                ratio(i[2], c[2]),
                ratio(i[3], c[3])
            );
            let steal = |runs: &[RateRun]| Spread::of(runs.iter().filter_map(|r| r.steal_percent));
            if let (Some(i), c) = (steal(&s.iiptrand), steal(&s.charon)) {
                let charon = c.map_or_else(String::new, |c| format!(", charon's {} %", c.show(0)));
                let _ = writeln!(
                    t,
                    "{:>6}  CPU time the hypervisor took meanwhile: iiptrand's runs {} %{charon}",
                    "",
                    i.show(0)
                );
            }
        }
        if let Some(floor) = spread(&self.floor, |f| f.crypto_both_us) {
            let engine = spread(&self.floor, |f| f.engine_setup_us);
            let _ = writeln!(
                t,
                "\nCrypto floor of one setup (ike/benches/setup.rs): both ends {} µs, so {:.0} µs per end;\n\
                 the same setup through two engines in one process: {} µs",
                floor.show(0),
                floor.median / 2.0,
                cell(engine, 0)
            );
            for s in &self.setup {
                if let Some(cpu) = spread(&s.iiptrand, |r| r.responder_cpu_ms_per_setup) {
                    let _ = writeln!(
                        t,
                        "crypto share of iiptrand's responder CPU per setup at N={}: {:.0} %",
                        s.count,
                        100.0 * floor.median / 2.0 / 1000.0 / cpu.median
                    );
                }
            }
        }
        if !self.rekey.is_empty() {
            let r = &self.rekey[0];
            let _ = writeln!(
                t,
                "\nRekey under load: {} pkt/s of numbered 64-byte UDP datagrams over the virtual link for {} s, child and IKE rekeys in turn",
                r.packets_per_sec_offered, r.seconds
            );
            for r in &self.rekey {
                let with = format!(
                    "with rekeys (child {}, IKE {}):",
                    r.child_rekeys, r.ike_rekeys
                );
                let _ = writeln!(
                    t,
                    "  {with:<31} sent {:>7}  lost {:>5}, {} of them sent within {} s after a rekey began\n  \
                     {:<31} sent {:>7}  lost {:>5}",
                    r.packets_sent,
                    r.packets_lost,
                    r.packets_lost_near_rekeys,
                    crate::pair::NEAR_REKEY.as_secs(),
                    "without, just before:",
                    r.baseline_packets_sent,
                    r.baseline_packets_lost
                );
            }
        }
        if !self.failure.is_empty() {
            let f = &self.failure;
            let _ = writeln!(
                t,
                "\nFailure of a node, seen from its neighbor: VN a–b–c, OSPF costs a–b and b–c 10, a–c 100;\n\
                 b's iiptrand SIGKILLed; iiptrand's default liveness, BIRD 2's default OSPF timers ({}):\n\
                 \x20 a's link to b down after                           {:>22} s\n\
                 \x20 a's kernel route to c's loopback via a–c after     {:>22} s\n\
                 \x20 pings between a's and c's loopbacks again after    {:>22} s",
                iiptran_testkit::bird::DEFAULT_TIMERS,
                cell(spread(f, |r| r.link_down_s), 1),
                cell(spread(f, |r| r.rerouted_s), 1),
                cell(spread(f, |r| r.ping_back_s), 1),
            );
        }
        if !self.dataplane.is_empty() {
            let d = &self.dataplane;
            let raw = spread(d, |r| r.raw_chacha_mbps);
            let tcp = spread(d, |r| r.tcp_mbps);
            let _ = writeln!(
                t,
                "\nData plane (userspace, one virtual link, iperf3):\n\
                 \x20 raw ChaCha20-Poly1305 seal, one core, 1400 B  {:>22} Mbit/s\n\
                 \x20 TCP                                          {:>22} Mbit/s  ({} of raw)\n\
                 \x20 UDP 1400 B, unlimited, received              {:>22} Mbit/s  (loss {} %)\n\
                 \x20 UDP 64 B, unlimited, received                {:>22} pkt/s   (loss {} %)",
                cell(raw, 0),
                cell(tcp, 0),
                ratio(tcp, raw),
                cell(spread(d, |r| r.udp_1400_received_mbps), 0),
                cell(spread(d, |r| r.udp_1400_loss_percent), 1),
                cell(spread(d, |r| r.udp_64_received_pps), 0),
                cell(spread(d, |r| r.udp_64_loss_percent), 1),
            );
        }
        for e in &self.errors {
            let _ = writeln!(t, "\nfailed: {e}");
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::{Report, SizeResult};
    use crate::loadgen::Outcome;
    use crate::setup_rate::{RateRun, Responder};

    fn run(responder: Responder, steal_percent: Option<f64>) -> RateRun {
        RateRun {
            responder,
            count: 1000,
            setups_per_sec: 1000.0,
            responder_cpu_ms_per_setup: 1.0,
            responder_rss_kib_per_adjacency: 4.0,
            responder_rss_kib_configured: 20_000,
            responder_confirmed_after_s: 1.0,
            responder_start_s: 1.0,
            steal_percent,
            loadgen: Outcome {
                count: 1000,
                up: 1000,
                failed: 0,
                concurrency: 8,
                seconds: 1.0,
                setups_per_sec: 1000.0,
                cpu_seconds: 0.2,
                first_failure: None,
            },
        }
    }

    fn table(iiptrand: Vec<RateRun>, charon: Vec<RateRun>) -> String {
        Report {
            setup: vec![SizeResult {
                count: 1000,
                iiptrand,
                charon,
            }],
            ..Report::default()
        }
        .table()
    }

    #[test]
    fn the_table_says_how_much_cpu_time_was_stolen_when_the_runs_know() {
        let (i, c) = (Responder::Iiptrand, Responder::Charon);
        let both = table(
            vec![run(i, Some(12.0)), run(i, Some(30.0)), run(i, Some(2.0))],
            vec![run(c, Some(5.0))],
        );
        assert!(
            both.contains("took meanwhile: iiptrand's runs 12 (2–30, 3) %, charon's 5 (1) %"),
            "{both}"
        );
        let ours = table(vec![run(i, Some(7.4))], Vec::new());
        assert!(ours.contains("iiptrand's runs 7 (1) %\n"), "{ours}");
        // Results written before runs measured it say nothing of it.
        let old = table(vec![run(i, None)], vec![run(c, None)]);
        assert!(!old.contains("hypervisor"), "{old}");
    }
}
