//! The benchmark's machine: namespaces joined as a pair or on one LAN, and what /proc says
//! about a process. Everything created is removed by its guard on drop.

use std::net::IpAddr;

use anyhow::{Context, Result};
use iiptran_testkit::netns::{Switch, address_up, link};

use iiptran_testkit::netns::Netns;

/// Two namespaces `<prefix>a` and `<prefix>b` joined by a veth link `veth0`, with
/// `a_addr` and `b_addr` (/24).
pub struct Pair {
    pub a: Netns,
    pub b: Netns,
}

impl Pair {
    pub fn new(prefix: &str, a_addr: &str, b_addr: &str) -> Result<Self> {
        let a = Netns::named(&format!("{prefix}a"))?;
        let b = Netns::named(&format!("{prefix}b"))?;
        link(&a, "veth0", &b, "veth0")?;
        address_up(&a, "veth0", a_addr.parse()?, 24)?;
        address_up(&b, "veth0", b_addr.parse()?, 24)?;
        Ok(Self { a, b })
    }
}

/// Namespaces `<prefix>0`, `<prefix>1`, … each with `veth0` on one bridge, which lives in
/// a namespace of its own (`<prefix>sw`), and the /24 addresses given.
pub struct Lan {
    pub nodes: Vec<Netns>,
    // Dropped after the nodes; its bridge and the veth peers go with it.
    _switch: Switch,
}

impl Lan {
    pub fn new(prefix: &str, addrs: &[&str]) -> Result<Self> {
        let switch = Switch::within(Netns::named(&format!("{prefix}sw"))?)?;
        let mut nodes = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            let ns = Netns::named(&format!("{prefix}{i}"))?;
            let addr: IpAddr = addr.parse()?;
            switch.plug_as(&ns, "veth0", &format!("p{i}"), addr, 24)?;
            nodes.push(ns);
        }
        Ok(Self {
            nodes,
            _switch: switch,
        })
    }
}

/// A process's CPU time (user + system) and resident set size at one moment.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    pub cpu_seconds: f64,
    pub rss_kib: u64,
}

impl Usage {
    pub fn of(pid: u32) -> Result<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name, which is in parentheses and may hold spaces:
        // state is field 3, utime 14 and stime 15.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .context("malformed stat")?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| -> Result<f64> {
            Ok(fields.get(i).context("short stat")?.parse::<u64>()? as f64)
        };
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let cpu_seconds = (ticks(11)? + ticks(12)?) / hz;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS")?;
        Ok(Self {
            cpu_seconds,
            rss_kib,
        })
    }
}

/// The machine's CPU time so far, all CPUs together, from the first line of /proc/stat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MachineTime {
    /// Time the hypervisor ran something else while this machine's CPUs wanted to run.
    pub steal: u64,
    /// Every state's time: user, nice, system, idle, iowait, irq, softirq, steal.
    pub total: u64,
}

impl MachineTime {
    pub fn now() -> Result<Self> {
        Self::parse(&std::fs::read_to_string("/proc/stat")?).context("no cpu line in /proc/stat")
    }

    fn parse(stat: &str) -> Option<Self> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let ticks: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        let &[.., steal] = <&[u64; 8]>::try_from(ticks.as_slice()).ok()?;
        Some(Self {
            steal,
            total: ticks.iter().sum(),
        })
    }

    /// The share of the machine's CPU time since `earlier` that was stolen, in percent.
    pub fn steal_percent_since(&self, earlier: &Self) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            return 0.0;
        }
        100.0 * self.steal.saturating_sub(earlier.steal) as f64 / total as f64
    }
}

#[cfg(test)]
mod tests {
    use super::MachineTime;

    #[test]
    fn machine_time_reads_the_cpu_line_and_the_stolen_share() {
        let earlier = MachineTime::parse(
            "cpu  100 0 50 800 10 0 20 20 0 0\ncpu0 50 0 25 400 5 0 10 10 0 0\n",
        )
        .unwrap();
        assert_eq!(
            earlier,
            MachineTime {
                steal: 20,
                total: 1000
            }
        );
        let later = MachineTime::parse("cpu  200 0 100 1500 10 0 110 80 0 0\n").unwrap();
        assert_eq!(later.steal_percent_since(&earlier), 6.0);
        assert_eq!(later.steal_percent_since(&later), 0.0);
        assert_eq!(MachineTime::parse("cpu  1 2 3\n"), None);
        assert_eq!(MachineTime::parse("intr 1 2 3 4 5 6 7 8 9\n"), None);
        assert_eq!(MachineTime::parse("cpu  1 2 3 4 5 6 7 x\n"), None);
    }
}
