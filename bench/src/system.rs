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
