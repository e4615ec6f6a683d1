//! BIRD 2 as a child process: one per namespace, running OSPF over the VN's virtual links
//! only and announcing the node's loopback address as a stub network. Its configuration,
//! control socket and pid file live in the caller's directory; `birdc -s SOCKET` asks it.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::command::checked;
use crate::netns::Netns;
use crate::process::Process;
use crate::wait::wait_until;

/// The OSPF cost of a virtual link unless `Ospf::costs` names it.
pub const DEFAULT_COST: u32 = 10;

/// How [`Timers::Default`] shows in a report.
pub const DEFAULT_TIMERS: &str = "hello 10 s, dead 40 s";

/// OSPF's hello and dead intervals and BIRD's scans of devices and kernel routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timers {
    /// Hello 1 s and dead 4 s, so a lost neighbor shows within seconds; the kernel table
    /// scanned every 2 s, devices every 10 s. A restarted iiptrand makes its links anew,
    /// and the kernel drops the routes through the old ones; BIRD notices only when its
    /// kernel protocol scans (its default is 60 s).
    Fast,
    /// BIRD's defaults ([`DEFAULT_TIMERS`]), as an operator would run it.
    Default,
}

/// What one node's BIRD announces and over which links.
#[derive(Clone, Debug)]
pub struct Ospf {
    /// The node's loopback address: the router id and the stub /32 it announces.
    pub loopback: Ipv4Addr,
    /// Virtual links whose cost is not `default_cost`: (interface name, cost).
    pub costs: Vec<(String, u32)>,
    /// The cost of every other virtual link.
    pub default_cost: u32,
    pub timers: Timers,
}

impl Ospf {
    /// Links costing [`DEFAULT_COST`], with `timers`.
    pub fn new(loopback: Ipv4Addr, timers: Timers) -> Self {
        Self {
            loopback,
            costs: Vec::new(),
            default_cost: DEFAULT_COST,
            timers,
        }
    }

    pub fn cost(mut self, link: &str, cost: u32) -> Self {
        self.costs.push((link.to_owned(), cost));
        self
    }

    /// bird.conf: OSPF on the `vn-*` interfaces as point-to-point links, its routes
    /// exported to the kernel's main table.
    pub fn render(&self) -> String {
        let (device, kernel, interface) = match self.timers {
            Timers::Fast => (" scan time 10;", " scan time 2;", " hello 1; dead 4;"),
            Timers::Default => ("", "", ""),
        };
        let mut text = format!(
            "router id {id};\nlog stderr all;\n\
             protocol device {{{device} }}\n\
             protocol kernel {{{kernel} ipv4 {{ import none; export all; }}; }}\n\
             protocol ospf v2 vn {{\n  ipv4 {{ import all; export none; }};\n  area 0 {{\n\
             \x20   stubnet {id}/32;\n",
            id = self.loopback
        );
        // BIRD takes the first interface pattern that matches, so the specific ones first.
        let links = self
            .costs
            .iter()
            .map(|(name, cost)| (name.as_str(), *cost))
            .chain([("vn-*", self.default_cost)]);
        for (pattern, cost) in links {
            let _ = writeln!(
                text,
                "    interface \"{pattern}\" {{ type ptp; cost {cost};{interface} }};"
            );
        }
        text.push_str("  };\n}\n");
        text
    }
}

/// One line of `show ospf neighbors`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OspfNeighbor {
    pub router_id: String,
    /// e.g. `Full/PtP`.
    pub state: String,
    pub interface: String,
}

/// A running `bird -f` inside a namespace, stopped when dropped.
pub struct Bird {
    pub name: String,
    socket: PathBuf,
    pub process: Process,
}

impl Bird {
    /// Writes `<dir>/bird-<name>.conf` and starts BIRD on it inside `ns`; its log goes to
    /// `<dir>/bird-<name>.stderr`.
    pub fn start(ns: &Netns, dir: &Path, name: &str, ospf: &Ospf) -> Result<Self> {
        let config = dir.join(format!("bird-{name}.conf"));
        let socket = dir.join(format!("bird-{name}.ctl"));
        let pid = dir.join(format!("bird-{name}.pid"));
        std::fs::write(&config, ospf.render())?;
        let mut command = ns.command("bird");
        command
            .arg("-f")
            .arg("-c")
            .arg(&config)
            .arg("-s")
            .arg(&socket)
            .arg("-P")
            .arg(&pid);
        let process = Process::spawn(&format!("bird-{name}"), command, dir)?;
        let mut bird = Self {
            name: name.to_owned(),
            socket,
            process,
        };
        wait_until(
            &format!("bird-{name} to answer on its socket"),
            Duration::from_secs(10),
            Duration::from_millis(50),
            || {
                if let Some(status) = bird.process.exited()? {
                    bail!("bird-{name} exited with {status}:\n{}", bird.process.dump());
                }
                Ok(bird.birdc(&["show", "status"]).is_ok())
            },
        )?;
        Ok(bird)
    }

    /// `birdc -s SOCKET <args>`: its output, or an error if it could not ask.
    pub fn birdc(&self, args: &[&str]) -> Result<String> {
        let mut command = Command::new("birdc");
        command.arg("-s").arg(&self.socket).args(args);
        let out = checked(command)?;
        // birdc exits 0 even when it cannot connect; it says so on stdout.
        if out.contains("Unable to connect") {
            bail!("birdc -s {}: {out}", self.socket.display());
        }
        Ok(out)
    }

    pub fn neighbors(&self) -> Result<Vec<OspfNeighbor>> {
        let out = self.birdc(&["show", "ospf", "neighbors"])?;
        Ok(parse_neighbors(&out))
    }

    /// Waits until the OSPF neighbor on every interface in `links` is Full, and no other.
    pub fn wait_full(&self, links: &[&str], timeout: Duration) -> Result<Vec<OspfNeighbor>> {
        let what = format!("OSPF of {} to be Full on {links:?}", self.name);
        wait_until(&what, timeout, Duration::from_millis(200), || {
            let neighbors = self.neighbors()?;
            let mut full: Vec<&str> = neighbors
                .iter()
                .filter(|n| n.state.starts_with("Full/"))
                .map(|n| n.interface.as_str())
                .collect();
            full.sort_unstable();
            let mut want = links.to_vec();
            want.sort_unstable();
            Ok((full == want).then_some(neighbors))
        })
    }

    /// `show route for ADDR`: BIRD's best route to an address, for failure messages and
    /// the demo's evidence.
    pub fn route_for(&self, addr: Ipv4Addr) -> Result<String> {
        self.birdc(&["show", "route", "for", &addr.to_string()])
    }
}

/// The neighbor lines of `birdc show ospf neighbors`:
/// `10.0.0.2  1  Full/PtP  3.045  vn-b  10.255.0.1` under a header and a protocol name.
pub fn parse_neighbors(out: &str) -> Vec<OspfNeighbor> {
    out.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                [router_id, _pri, state, _dtime, interface, _ip]
                    if router_id.parse::<Ipv4Addr>().is_ok() =>
                {
                    Some(OspfNeighbor {
                        router_id: (*router_id).to_owned(),
                        state: (*state).to_owned(),
                        interface: (*interface).to_owned(),
                    })
                }
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WorkDir;

    /// Needs root and BIRD 2: the running BIRD reports the costs asked for and, with
    /// `Timers::Default`, the timers `DEFAULT_TIMERS` names.
    #[test]
    fn costs_set_and_timers_default() -> Result<()> {
        if !crate::have_root("costs_set_and_timers_default") {
            return Ok(());
        }
        let dir = WorkDir::temp("bird")?;
        let ns = Netns::new("ibird")?;
        ns.ip(&[
            "link", "add", "vn-x", "type", "veth", "peer", "name", "vn-y",
        ])?;
        for (link, addr) in [("vn-x", "10.99.0.0/31"), ("vn-y", "10.99.0.2/31")] {
            ns.ip(&["addr", "add", addr, "dev", link])?;
            ns.ip(&["link", "set", link, "up"])?;
        }
        let ospf = Ospf::new(Ipv4Addr::new(10, 0, 0, 1), Timers::Default).cost("vn-y", 100);
        let bird = Bird::start(&ns, dir.path(), "t", &ospf)?;
        let show = |link: &str| {
            let quoted = format!("\"{link}\"");
            bird.birdc(&["show", "ospf", "interface", "vn", &quoted])
        };
        wait_until(
            "BIRD to run OSPF on both links",
            Duration::from_secs(10),
            Duration::from_millis(50),
            || Ok(show("vn-x")?.contains("Cost:") && show("vn-y")?.contains("Cost:")),
        )?;
        let (x, y) = (show("vn-x")?, show("vn-y")?);
        assert!(x.contains("Cost: 10\n"), "{x}");
        assert!(y.contains("Cost: 100\n"), "{y}");
        for out in [&x, &y] {
            assert!(out.contains("Hello timer: 10\n"), "{out}");
            assert!(out.contains("Dead timer: 40\n"), "{out}");
        }
        Ok(())
    }
}
