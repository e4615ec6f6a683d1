//! BIRD 2 as a benchmark subject: OSPF v2 over a node's virtual links (`vn-*`) only, with
//! BIRD's default timers, announcing the node's loopback /32 and exporting its routes to
//! the kernel. `birdc -s SOCKET` asks it; it is stopped with SIGTERM on drop.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::system::{Netns, Process, checked, wait_for};

/// What the table says about the timers left at BIRD's defaults.
pub const DEFAULT_TIMERS: &str = "hello 10 s, dead 40 s";

/// bird.conf for router `loopback`: OSPF on `vn-*` as point-to-point links, each costing
/// what `costs` gives its interface name and `default_cost` otherwise.
fn config(loopback: Ipv4Addr, costs: &[(&str, u32)], default_cost: u32) -> String {
    let mut text = format!(
        "router id {loopback};\nlog stderr all;\nprotocol device {{}}\n\
         protocol kernel {{ ipv4 {{ import none; export all; }}; }}\n\
         protocol ospf v2 vn {{\n  ipv4 {{ import all; export none; }};\n  area 0 {{\n\
         \x20   stubnet {loopback}/32;\n"
    );
    // BIRD takes the first interface pattern that matches: the named links first.
    for (pattern, cost) in costs.iter().copied().chain([("vn-*", default_cost)]) {
        let _ = writeln!(
            text,
            "    interface \"{pattern}\" {{ type ptp; cost {cost}; }};"
        );
    }
    text.push_str("  };\n}\n");
    text
}

/// A running `bird -f` in a namespace.
pub struct Bird {
    socket: PathBuf,
    _process: Process,
}

impl Bird {
    /// Writes `<dir>/bird-<name>.conf`, starts BIRD on it in `ns` (log in
    /// `<dir>/bird-<name>.stderr`) and waits until it answers.
    pub fn start(
        ns: &Netns,
        dir: &Path,
        name: &str,
        loopback: Ipv4Addr,
        costs: &[(&str, u32)],
        default_cost: u32,
    ) -> Result<Self> {
        let path = |ext: &str| dir.join(format!("bird-{name}.{ext}"));
        std::fs::write(path("conf"), config(loopback, costs, default_cost))?;
        let mut command = ns.command("bird");
        command.arg("-f").arg("-c").arg(path("conf"));
        command
            .arg("-s")
            .arg(path("ctl"))
            .arg("-P")
            .arg(path("pid"));
        let mut process = Process::spawn(&format!("bird-{name}"), command, dir)?;
        let socket = path("ctl");
        wait_for(
            &format!("bird-{name} to answer"),
            Duration::from_secs(10),
            Duration::from_millis(50),
            || {
                if let Some(status) = process.exited()? {
                    bail!("bird-{name} exited: {status}");
                }
                Ok(birdc(&socket, &["show", "status"]).ok())
            },
        )?;
        Ok(Self {
            socket,
            _process: process,
        })
    }

    /// BIRD's best route to `addr`, for error messages.
    pub fn route_for(&self, addr: Ipv4Addr) -> Result<String> {
        birdc(&self.socket, &["show", "route", "for", &addr.to_string()])
    }
}

fn birdc(socket: &Path, args: &[&str]) -> Result<String> {
    let mut command = Command::new("birdc");
    command.arg("-s").arg(socket).args(args);
    let out = checked(command)?;
    // birdc exits 0 when it cannot connect, and says so.
    if out.contains("Unable to connect") {
        bail!("birdc -s {}: {out}", socket.display());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::WorkDir;

    /// Needs root and BIRD 2: the running BIRD reports the costs asked for and the
    /// timers `DEFAULT_TIMERS` names.
    #[test]
    fn costs_set_and_timers_default() -> Result<()> {
        let name = format!("ibtbird{}", std::process::id());
        let dir = WorkDir::new(std::env::temp_dir().join(&name))?;
        let ns = Netns::new(&name)?;
        ns.ip(&[
            "link", "add", "vn-x", "type", "veth", "peer", "name", "vn-y",
        ])?;
        for (link, addr) in [("vn-x", "10.99.0.0/31"), ("vn-y", "10.99.0.2/31")] {
            ns.ip(&["addr", "add", addr, "dev", link])?;
            ns.ip(&["link", "set", link, "up"])?;
        }
        let loopback = Ipv4Addr::new(10, 0, 0, 1);
        let bird = Bird::start(&ns, &dir.path, "t", loopback, &[("vn-y", 100)], 10)?;
        let show = |link: &str| {
            let quoted = format!("\"{link}\"");
            birdc(&bird.socket, &["show", "ospf", "interface", "vn", &quoted])
        };
        wait_for(
            "BIRD to run OSPF on both links",
            Duration::from_secs(10),
            Duration::from_millis(50),
            || {
                Ok(
                    (show("vn-x")?.contains("Cost:") && show("vn-y")?.contains("Cost:"))
                        .then_some(()),
                )
            },
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
