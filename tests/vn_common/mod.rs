//! A VN for the routed end-to-end tests: nodes in network namespaces plugged into one
//! bridge (198.51.100.0/24 underlay), each enrolled with the VN CA, running `iiptrand`
//! (userspace data plane) and BIRD (OSPF on the virtual links, loopback 10.0.0.N/32 as a
//! stub). Everything is torn down when the `Vn` drops: daemons and BIRDs first, then the
//! namespaces, the enrollment server and CA, and the directory.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use iiptran::control::protocol::{Counts, Traffic, UnixTime};

use crate::enroll_common::{EnrollServer, TestCa};
use crate::support::daemon::Daemon;
use crate::support::kernel;
use iiptran_testkit::WorkDir;
use iiptran_testkit::bird::{Bird, DEFAULT_COST, Ospf, Timers};
use iiptran_testkit::iiptrand::{Credentials, Neighbor, NodeConfig, test_dataplane};
use iiptran_testkit::netns::{Netns, Switch, VethEnd};
use iiptran_testkit::wait::{scaled, wait_until};

/// Pings that prove a path: this many, each with this payload, so the bytes they add to
/// the ESP counters stand out from the OSPF hellos on the same links.
const PATH_PINGS: u64 = 5;
const PATH_PAYLOAD: u64 = 1000;
/// How long OSPF may take to compute routes once its adjacencies are Full.
const ROUTES_SETTLE: Duration = Duration::from_secs(15);

/// A virtual link between two nodes. Its /31 is `10.255.0.<2·net>`, `a` taking the even
/// address; the same `net` keeps the same addresses across reconfigurations.
#[derive(Clone, Copy, Debug)]
pub struct Edge {
    pub a: &'static str,
    pub b: &'static str,
    net: u8,
    cost: u32,
}

impl Edge {
    pub const fn new(a: &'static str, b: &'static str, net: u8) -> Self {
        Self {
            a,
            b,
            net,
            cost: DEFAULT_COST,
        }
    }

    /// The OSPF cost of the link, on both ends.
    pub const fn cost(self, cost: u32) -> Self {
        Self { cost, ..self }
    }

    fn peer(&self, node: &str) -> Option<&'static str> {
        if node == self.a {
            Some(self.b)
        } else if node == self.b {
            Some(self.a)
        } else {
            None
        }
    }

    fn address(&self, node: &str) -> String {
        let host = 2 * self.net + u8::from(node == self.b);
        format!("10.255.0.{host}/31")
    }
}

pub fn link_name(peer: &str) -> String {
    format!("vn-{peer}")
}

pub struct Node {
    pub bird: Bird,
    pub daemon: Daemon,
    /// The configuration without neighbors; the edges add them.
    base: NodeConfig,
    pub ns: Netns,
    underlay: VethEnd,
    pub loopback: Ipv4Addr,
}

pub struct Vn {
    nodes: Vec<Node>,
    names: Vec<&'static str>,
    edges: Vec<Edge>,
    switch: Switch,
    server: EnrollServer,
    ca: TestCa,
    dir: WorkDir,
}

fn endpoint(index: usize) -> Result<IpAddr> {
    Ok(IpAddr::from([198, 51, 100, u8::try_from(index + 1)?]))
}

impl Vn {
    /// Creates, enrolls and starts every node, with the virtual links of `edges`.
    pub fn new(what: &str, names: &[&'static str], edges: &[Edge]) -> Result<Self> {
        let dir = WorkDir::temp(what)?;
        let ca = TestCa::new();
        let server = ca.serve(&[]);
        let switch = Switch::new()?;
        let mut vn = Self {
            nodes: Vec::new(),
            names: names.to_vec(),
            edges: edges.to_vec(),
            switch,
            server,
            ca,
            dir,
        };
        for (index, name) in names.iter().enumerate() {
            let node = vn.start_node(index, name)?;
            vn.nodes.push(node);
        }
        Ok(vn)
    }

    fn start_node(&self, index: usize, name: &str) -> Result<Node> {
        let ns = Netns::new(&format!("vn{name}"))?;
        let endpoint = endpoint(index)?;
        let underlay = self.switch.plug(&ns, endpoint, 24)?;
        let loopback = Ipv4Addr::new(10, 0, 0, u8::try_from(index + 1)?);
        ns.ip(&["addr", "add", &format!("{loopback}/32"), "dev", "lo"])?;
        // Nodes forward for each other; replies may come back over another link while
        // OSPF reroutes.
        ns.run(
            "sysctl",
            &[
                "-qw",
                "net.ipv4.ip_forward=1",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
            ],
        )?;
        let credentials = self.dir.join(&format!("{name}-credentials"));
        self.ca.enroll(
            &self.server,
            &format!("{name}.vn.example"),
            &endpoint.to_string(),
            &credentials,
        );
        let base = NodeConfig::new(
            name,
            &endpoint.to_string(),
            Credentials::Enrolled(credentials),
        );
        let config = self.config(&base)?;
        let daemon = Daemon::start(&ns, self.dir.path(), &config, &[])?;
        let mut ospf = Ospf::new(loopback, Timers::Fast);
        for edge in &self.edges {
            if let Some(peer) = edge.peer(name)
                && edge.cost != DEFAULT_COST
            {
                ospf = ospf.cost(&link_name(peer), edge.cost);
            }
        }
        let bird = Bird::start(&ns, self.dir.path(), name, &ospf)?;
        Ok(Node {
            bird,
            daemon,
            base,
            ns,
            underlay,
            loopback,
        })
    }

    /// `base` with a neighbor for each of the current edges that touch it.
    fn config(&self, base: &NodeConfig) -> Result<NodeConfig> {
        let mut config = base.clone();
        for edge in &self.edges {
            if let Some(peer) = edge.peer(&base.name) {
                let peer_endpoint = endpoint(self.index(peer)?)?.to_string();
                config = config.neighbor(Neighbor::new(
                    peer,
                    &peer_endpoint,
                    &edge.address(&base.name),
                ));
            }
        }
        Ok(config)
    }

    fn index(&self, name: &str) -> Result<usize> {
        self.names
            .iter()
            .position(|n| *n == name)
            .with_context(|| format!("no node {name}"))
    }

    pub fn node(&self, name: &str) -> &Node {
        let index = self.index(name).unwrap_or_else(|e| panic!("{e}"));
        &self.nodes[index]
    }

    /// The names of `node`'s peers over the current edges.
    pub fn peers(&self, node: &str) -> Vec<&'static str> {
        self.edges.iter().filter_map(|e| e.peer(node)).collect()
    }

    /// Waits until every adjacency is established on both sides and OSPF is Full on
    /// exactly the current virtual links of every node.
    pub fn wait_converged(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let left = || deadline.saturating_duration_since(Instant::now());
        for edge in &self.edges {
            self.node(edge.a).daemon.wait_established(edge.b, left())?;
            self.node(edge.b).daemon.wait_established(edge.a, left())?;
        }
        for name in &self.names {
            let links: Vec<String> = self.peers(name).iter().map(|p| link_name(p)).collect();
            let links: Vec<&str> = links.iter().map(String::as_str).collect();
            self.node(name).bird.wait_full(&links, left())?;
        }
        Ok(())
    }

    fn ping_command(&self, from: &str, to: &str, args: &[&str]) -> std::process::Command {
        let (from, to) = (self.node(from), self.node(to));
        let mut command = from.ns.command("ping");
        command
            .args(["-n", "-I", &from.loopback.to_string()])
            .args(args)
            .arg(to.loopback.to_string());
        command
    }

    /// Waits until a ping from `from`'s loopback to `to`'s is answered.
    pub fn ping(&self, from: &str, to: &str, timeout: Duration) -> Result<()> {
        let what = format!("a ping from {from} to {to}'s loopback to be answered");
        wait_until(&what, timeout, Duration::from_millis(100), || {
            let out = self
                .ping_command(from, to, &["-c", "1", "-W", "1"])
                .output()?;
            Ok(out.status.success())
        })
        .with_context(|| {
            let (f, t) = (self.node(from), self.node(to));
            let route = f.bird.route_for(t.loopback);
            let back = t.bird.route_for(f.loopback);
            let sas = |n: &Node| {
                n.daemon
                    .ctl(&["list-sas"])
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            };
            format!(
                "{from}'s BIRD route: {route:?}\n{to}'s route back: {back:?}\n\
                 {from}'s SAs: {}\n{to}'s SAs: {}",
                sas(f).unwrap_or_default(),
                sas(t).unwrap_or_default()
            )
        })
    }

    /// Pings between the loopbacks of every ordered pair of nodes.
    pub fn ping_all(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        for from in &self.names {
            for to in self.names.iter().filter(|n| *n != from) {
                self.ping(from, to, deadline.saturating_duration_since(Instant::now()))?;
            }
        }
        Ok(())
    }

    /// The interface of `from`'s route to `to`'s loopback.
    pub fn route_dev(&self, from: &str, to: &str) -> Result<String> {
        let to = self.node(to).loopback.to_string();
        let route = self.node(from).ns.ip(&["route", "get", &to])?;
        let mut words = route.split_whitespace();
        words
            .by_ref()
            .find(|w| *w == "dev")
            .and_then(|_| words.next())
            .map(str::to_owned)
            .with_context(|| format!("no device in {route:?}"))
    }

    fn wait_route_dev(&self, from: &str, to: &str, dev: &str, timeout: Duration) -> Result<()> {
        let what = format!("{from}'s route to {to} to leave through {dev}");
        wait_until(&what, timeout, Duration::from_millis(100), || {
            Ok(self.route_dev(from, to).is_ok_and(|d| d == dev))
        })
    }

    /// The ESP counters of `node`'s established adjacency with `peer`.
    pub fn traffic(&self, node: &str, peer: &str) -> Result<Traffic> {
        let report = self
            .node(node)
            .daemon
            .established(peer)?
            .with_context(|| format!("{node}'s adjacency with {peer} is not established"))?;
        Ok(report.traffic)
    }

    /// Sends large pings from the first node of `path` to the last one's loopback and
    /// checks that they crossed every hop of `path` both ways, on both ends' ESP counters,
    /// and left the first node by no other link.
    pub fn assert_path_carries_pings(&self, path: &[&str]) -> Result<()> {
        let (Some(first), Some(last)) = (path.first(), path.last()) else {
            bail!("empty path");
        };
        let hops: Vec<(&str, &str)> = path.windows(2).map(|w| (w[0], w[1])).collect();
        // OSPF may still be settling on another path (its SPF runs after adjacencies are
        // Full): wait until the routes both ways follow `path`.
        for &(x, y) in &hops {
            self.wait_route_dev(x, last, &link_name(y), scaled(ROUTES_SETTLE))?;
            self.wait_route_dev(y, first, &link_name(x), scaled(ROUTES_SETTLE))?;
        }
        let sample = |pairs: &[(&str, &str)]| -> Result<Vec<Traffic>> {
            pairs.iter().map(|(n, p)| self.traffic(n, p)).collect()
        };
        let mut on_path: Vec<(&str, &str)> = Vec::new();
        for &(x, y) in &hops {
            on_path.extend([(x, y), (y, x)]);
        }
        let off_path: Vec<(&str, &str)> = self
            .peers(first)
            .into_iter()
            .filter(|p| Some(p) != path.get(1))
            .filter(|p| self.traffic(first, p).is_ok())
            .map(|p| (*first, p))
            .collect();
        let (on_before, off_before) = (sample(&on_path)?, sample(&off_path)?);

        let count = PATH_PINGS.to_string();
        let size = PATH_PAYLOAD.to_string();
        let out = self
            .ping_command(
                first,
                last,
                &["-c", &count, "-s", &size, "-i", "0.2", "-w", "5"],
            )
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(
            text.contains(&format!(" {PATH_PINGS} received")),
            "not every ping from {first} to {last} was answered: {text}"
        );

        let floor = PATH_PINGS * PATH_PAYLOAD;
        let (on_after, off_after) = (sample(&on_path)?, sample(&off_path)?);
        for (((node, peer), before), after) in on_path.iter().zip(&on_before).zip(&on_after) {
            ensure!(
                after.bytes_out >= before.bytes_out + floor
                    && after.bytes_in >= before.bytes_in + floor,
                "the pings along {path:?} did not cross {node}'s link to {peer} both ways: \
                 {before:?} -> {after:?}"
            );
        }
        for (((node, peer), before), after) in off_path.iter().zip(&off_before).zip(&off_after) {
            ensure!(
                after.bytes_out < before.bytes_out + floor,
                "the pings along {path:?} also left {node} towards {peer}: {before:?} -> {after:?}"
            );
        }
        Ok(())
    }

    /// SIGKILL to `name`'s daemon, and waits until it is gone.
    pub fn kill(&mut self, name: &str) -> Result<()> {
        let index = self.index(name)?;
        let process = &mut self.nodes[index].daemon.process;
        process.signal(libc::SIGKILL)?;
        wait_until(
            &format!("{name}'s daemon to die"),
            Duration::from_secs(5),
            Duration::from_millis(20),
            || process.exited(),
        )?;
        Ok(())
    }

    /// Starts `name`'s daemon again on its files.
    pub fn restart(&mut self, name: &str) -> Result<()> {
        let index = self.index(name)?;
        let node = &mut self.nodes[index];
        node.daemon.restart(&node.ns, self.dir.path())
    }

    /// Sets `name`'s underlay interface up or down.
    pub fn set_underlay(&self, name: &str, up: bool) -> Result<()> {
        let node = self.node(name);
        let state = if up { "up" } else { "down" };
        node.ns
            .ip(&["link", "set", &node.underlay.ifname, state])
            .map(drop)
    }

    /// Rewrites the configuration of `nodes` for the new `edges` and has each reload it.
    pub fn reconfigure(&mut self, edges: &[Edge], nodes: &[&str]) -> Result<()> {
        self.edges = edges.to_vec();
        for name in nodes {
            let index = self.index(name)?;
            let config = self.config(&self.nodes[index].base)?;
            let daemon = &mut self.nodes[index].daemon;
            daemon.rewrite(&config)?;
            let out = daemon.ctl(&["reload"])?;
            ensure!(
                out.status.success(),
                "{name}'s reload failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// The names of `name`'s interfaces as `ip -o link` lists them (one entry each time
    /// the kernel lists one).
    fn links(&self, name: &str) -> Result<Vec<String>> {
        let out = self.node(name).ns.ip(&["-o", "link", "show"])?;
        Ok(out
            .lines()
            .filter_map(|line| line.split(':').nth(1))
            .map(|ifname| ifname.trim().split('@').next().unwrap_or("").to_owned())
            .collect())
    }

    pub fn assert_link_gone(&self, node: &str, link: &str) -> Result<()> {
        let links = self.links(node)?;
        ensure!(
            !links.iter().any(|l| l == link),
            "{node} still has {link}: {links:?}"
        );
        Ok(())
    }

    /// After a restart: `name` has exactly one virtual link per neighbor and no other,
    /// nothing in the kernel's SAD or SPD (the userspace data plane keeps its SAs in the
    /// daemon), and the daemon comes to hold one IKE SA and one child SA pair per neighbor
    /// within `timeout` (a crossing initiation may briefly add a second).
    pub fn assert_nothing_stale(&self, name: &str, timeout: Duration) -> Result<()> {
        let mut links: Vec<String> = self
            .links(name)?
            .into_iter()
            .filter(|l| l.starts_with("vn-"))
            .collect();
        links.sort();
        let mut want: Vec<String> = self.peers(name).iter().map(|p| link_name(p)).collect();
        want.sort();
        ensure!(
            links == want,
            "{name}'s virtual links: {links:?}, want {want:?}"
        );
        self.wait_sa_counts(name, timeout)?;
        let what = format!("{name}'s kernel to hold only the SAs and policies in use");
        let mut last = String::new();
        wait_until(&what, timeout, Duration::from_millis(200), || {
            last = self.kernel_leftovers(name)?;
            Ok(last.is_empty())
        })
        .with_context(|| last.clone())
    }

    /// What the kernel of `name` holds that is not in use: with the userspace data plane
    /// any XFRM object at all; with the kernel data plane an ESP SA that is not one of the
    /// daemon's child SAs, or a policy that is not between `name` and a current peer.
    fn kernel_leftovers(&self, name: &str) -> Result<String> {
        let node = self.node(name);
        let states = kernel::states(&node.ns)?;
        let policies = kernel::policies(&node.ns)?;
        if test_dataplane() != "kernel" {
            return Ok(if states.is_empty() && policies.is_empty() {
                String::new()
            } else {
                format!("XFRM states {states:?}, policies {policies:?}")
            });
        }
        let in_use: Vec<u32> = node
            .daemon
            .sas()?
            .iter()
            .flat_map(|ike| &ike.child_sas)
            .flat_map(|c| [c.inbound.spi.0, c.outbound.spi.0])
            .collect();
        let mut leftovers = Vec::new();
        for state in &states {
            if !in_use.contains(&state.spi_value()?) {
                leftovers.push(format!("SA {state:?}"));
            }
        }
        let here = node.underlay.addr.to_string();
        let peers: Vec<String> = self
            .peers(name)
            .into_iter()
            .map(|p| self.node(p).underlay.addr.to_string())
            .collect();
        for policy in &policies {
            let current = peers.iter().any(|peer| {
                [(&here, peer), (peer, &here)].iter().any(|(src, dst)| {
                    policy
                        .selector
                        .starts_with(&format!("src {src}/32 dst {dst}/32"))
                })
            });
            if !current {
                leftovers.push(format!("policy {policy:?}"));
            }
        }
        Ok(leftovers.join("\n"))
    }

    fn counts(&self, name: &str) -> Result<Counts> {
        let status = self
            .node(name)
            .daemon
            .status()?
            .with_context(|| format!("{name}'s daemon does not answer"))?;
        Ok(status.counts)
    }

    /// One established adjacency, IKE SA and child SA pair per neighbor, nothing half-open.
    fn steady_counts(&self, name: &str) -> Counts {
        let n = u32::try_from(self.peers(name).len()).unwrap_or(u32::MAX);
        Counts {
            adjacencies_up: n,
            adjacencies_down: 0,
            ike_sas: n,
            child_sas: n,
            half_open: 0,
        }
    }

    /// Waits until `name`'s daemon holds exactly one IKE SA and child SA pair per neighbor.
    pub fn wait_sa_counts(&self, name: &str, timeout: Duration) -> Result<()> {
        let want = self.steady_counts(name);
        let what = format!("{name} to hold one SA pair per neighbor ({want:?})");
        wait_until(&what, timeout, Duration::from_millis(200), || {
            Ok(self.counts(name)? == want)
        })
    }

    /// Starts watching the ESP counters and establishment time of the given
    /// (node, peer) adjacencies.
    pub fn watch(&self, pairs: &[(&'static str, &'static str)]) -> Result<Watch> {
        let mut watched = Vec::new();
        for &(node, peer) in pairs {
            let report =
                self.node(node).daemon.established(peer)?.with_context(|| {
                    format!("{node}'s adjacency with {peer} is not established")
                })?;
            watched.push(Watched {
                node,
                peer,
                first: report.traffic,
                last: report.traffic,
                established: report.last_established,
            });
        }
        Ok(Watch { watched })
    }
}

struct Watched {
    node: &'static str,
    peer: &'static str,
    first: Traffic,
    last: Traffic,
    established: Option<UnixTime>,
}

/// Adjacencies that must stay undisturbed: the same establishment time, counters that
/// only grow.
pub struct Watch {
    watched: Vec<Watched>,
}

impl Watch {
    /// Checks that every watched adjacency is still established since the same moment and
    /// that none of its counters went back since the last check.
    pub fn check_undisturbed(&mut self, vn: &Vn) -> Result<()> {
        for w in &mut self.watched {
            let report = vn
                .node(w.node)
                .daemon
                .established(w.peer)?
                .with_context(|| format!("{}'s adjacency with {} went down", w.node, w.peer))?;
            ensure!(
                report.last_established == w.established,
                "{}'s adjacency with {} was established anew: {:?} -> {:?}",
                w.node,
                w.peer,
                w.established,
                report.last_established
            );
            let (old, new) = (w.last, report.traffic);
            ensure!(
                new.bytes_in >= old.bytes_in
                    && new.bytes_out >= old.bytes_out
                    && new.packets_in >= old.packets_in
                    && new.packets_out >= old.packets_out,
                "{}'s counters towards {} went back: {old:?} -> {new:?}",
                w.node,
                w.peer
            );
            w.last = new;
        }
        Ok(())
    }

    /// Checks that every watched adjacency carried traffic both ways since watching began.
    pub fn check_grown(&self) -> Result<()> {
        for w in &self.watched {
            ensure!(
                w.last.packets_in > w.first.packets_in && w.last.packets_out > w.first.packets_out,
                "{}'s adjacency with {} carried nothing: {:?} -> {:?}",
                w.node,
                w.peer,
                w.first,
                w.last
            );
        }
        Ok(())
    }

    /// Stops watching these adjacencies (they are about to be removed).
    pub fn forget(&mut self, pairs: &[(&str, &str)]) {
        self.watched.retain(|w| !pairs.contains(&(w.node, w.peer)));
    }
}
