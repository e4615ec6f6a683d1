//! A node's death in a routed VN, seen from its neighbor: three nodes a, b and c on one
//! underlay, each running iiptrand (userspace data plane, default liveness) and BIRD
//! (OSPF over the virtual links with BIRD's default timers, the node's loopback /32 as a
//! stub). Links a–b and b–c cost 10, a–c 100, so a reaches c through b until b's daemon is
//! SIGKILLed; then a's link to b goes down, OSPF moves a's route to c onto the direct link
//! and pings between the loopbacks get through again, each at its own time.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use serde::{Deserialize, Serialize};

use iiptran_testkit::bird::{Bird, Ospf, Timers};
use iiptran_testkit::command::checked;
use iiptran_testkit::pki::Ca;
use iiptran_testkit::wait::wait_until;

use crate::iiptrand::{self, Binaries, Daemon};
use iiptran_testkit::WorkDir;
use iiptran_testkit::netns::Netns;

use crate::system::Lan;

const NAMES: [&str; 3] = ["a", "b", "c"];
const ENDPOINTS: [&str; 3] = ["10.202.0.1", "10.202.0.2", "10.202.0.3"];
/// The OSPF cost of every virtual link but those `EDGES` name otherwise.
const COST: u32 = 10;
/// Virtual links as (node, node, OSPF cost); link `i` is `10.99.0.<2i>/31`, the first
/// node taking the even address.
const EDGES: [(usize, usize, u32); 3] = [(0, 1, COST), (1, 2, COST), (0, 2, 100)];
/// Long enough for the default liveness (under three minutes) on a loaded machine.
const DETECTION_LIMIT: Duration = Duration::from_secs(600);

fn loopback(node: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, node as u8 + 1)
}

/// Seconds from the SIGKILL of b's iiptrand, as seen from a.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FailureRun {
    /// Until a reports its link to b down.
    pub link_down_s: f64,
    /// Until a's kernel route to c's loopback leaves through a's link to c (`ip route
    /// get`, every 100 ms).
    pub rerouted_s: f64,
    /// Until a ping from a's loopback to c's is answered (one at a time, each given
    /// 0.5 s, 100 ms apart).
    pub ping_back_s: f64,
}

/// The three nodes; dropped in field order: BIRDs, daemons, namespaces, directory.
struct Vn {
    birds: Vec<Bird>,
    daemons: Vec<Daemon>,
    lan: Lan,
    dir: WorkDir,
}

impl Vn {
    /// Starts every daemon, waits until every link is up, then starts every BIRD.
    fn start(bin: &Binaries, ca: &Ca, dir: &Path, prefix: &str) -> Result<Self> {
        let dir = WorkDir::new(dir.join(prefix))?;
        let lan = Lan::new(prefix, &ENDPOINTS)?;
        let mut vn = Self {
            birds: Vec::new(),
            daemons: Vec::new(),
            lan,
            dir,
        };
        for (me, ns) in vn.lan.nodes.iter().enumerate() {
            ns.ip(&["addr", "add", &format!("{}/32", loopback(me)), "dev", "lo"])?;
            // b forwards between a and c.
            let mut sysctl = ns.command("sysctl");
            sysctl.args([
                "-qw",
                "net.ipv4.ip_forward=1",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
            ]);
            checked(sysctl)?;
            let peers: Vec<(&str, &str, String)> = EDGES
                .iter()
                .enumerate()
                .filter_map(|(i, &(x, y, _))| {
                    let (peer, host) = if me == x {
                        (y, 2 * i)
                    } else if me == y {
                        (x, 2 * i + 1)
                    } else {
                        return None;
                    };
                    Some((NAMES[peer], ENDPOINTS[peer], format!("10.99.0.{host}/31")))
                })
                .collect();
            let peers: Vec<(&str, &str, &str)> =
                peers.iter().map(|(n, e, a)| (*n, *e, a.as_str())).collect();
            let node = iiptrand::issued(ca, (NAMES[me], ENDPOINTS[me]), "", &peers)?;
            let daemon = Daemon::start(bin, ns, &vn.dir.path, &node, Duration::from_secs(30))?;
            vn.daemons.push(daemon);
        }
        for &(x, y, _) in &EDGES {
            for (me, peer) in [(x, y), (y, x)] {
                vn.daemons[me].wait_link(NAMES[peer], "up", Duration::from_secs(60))?;
            }
        }
        for (me, ns) in vn.lan.nodes.iter().enumerate() {
            let mut ospf = Ospf::new(loopback(me), Timers::Default);
            ospf.default_cost = COST;
            ospf.costs = EDGES
                .iter()
                .filter(|&&(x, y, cost)| (me == x || me == y) && cost != COST)
                .map(|&(x, y, cost)| (format!("vn-{}", NAMES[x + y - me]), cost))
                .collect();
            let bird = Bird::start(ns, &vn.dir.path, NAMES[me], &ospf)?;
            vn.birds.push(bird);
        }
        Ok(vn)
    }

    /// Waits until node `from`'s kernel route to node `to`'s loopback leaves through the
    /// link to `via`.
    fn wait_route(&self, from: usize, to: usize, via: usize, timeout: Duration) -> Result<()> {
        let link = format!("vn-{}", NAMES[via]);
        let what = format!(
            "{}'s route to {}'s loopback to use {link}",
            NAMES[from], NAMES[to]
        );
        let ns = &self.lan.nodes[from];
        wait_until(&what, timeout, Duration::from_millis(100), || {
            Ok(route_dev(ns, loopback(to))
                .is_ok_and(|dev| dev == link)
                .then_some(()))
        })
        .with_context(|| format!("BIRD: {:?}", self.birds[from].route_for(loopback(to))))
    }

    /// Waits until a ping from node `from`'s loopback to node `to`'s is answered.
    fn wait_ping(&self, from: usize, to: usize, timeout: Duration) -> Result<()> {
        let what = format!("a ping from {} to {}", NAMES[from], NAMES[to]);
        let mut last = None;
        wait_until(&what, timeout, Duration::from_millis(100), || {
            let mut ping = self.lan.nodes[from].command("ping");
            ping.args(["-n", "-q", "-c", "1", "-W", "0.5", "-I"])
                .arg(loopback(from).to_string())
                .arg(loopback(to).to_string());
            last = checked(ping).err();
            Ok(last.is_none().then_some(()))
        })
        .with_context(|| format!("the last ping: {last:?}"))
    }
}

/// The device of the kernel's route from `ns` to `addr`.
fn route_dev(ns: &Netns, addr: Ipv4Addr) -> Result<String> {
    let out = ns.ip(&["-j", "route", "get", &addr.to_string()])?;
    let routes: serde_json::Value = serde_json::from_str(&out)?;
    routes[0]["dev"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no device in {out:?}"))
}

/// One run: converge, SIGKILL b's iiptrand, time what a sees.
pub fn measure(bin: &Binaries, ca: &Ca, dir: &Path, prefix: &str) -> Result<FailureRun> {
    let (a, b, c) = (0, 1, 2);
    let mut vn = Vn::start(bin, ca, dir, prefix)?;
    let converge = Duration::from_secs(180);
    vn.wait_route(a, c, b, converge)?;
    vn.wait_route(c, a, b, converge)?;
    vn.wait_ping(a, c, converge)?;
    let victim = vn.daemons[b].process();
    victim.signal(libc::SIGKILL)?;
    let killed = Instant::now();
    victim.stop()?;
    let vn = &vn;
    let since = |waited: Result<()>| waited.map(|()| killed.elapsed().as_secs_f64());
    let (link_down_s, rerouted_s, ping_back_s) = std::thread::scope(|scope| {
        let link = scope.spawn(|| since(vn.daemons[a].wait_link("b", "down", DETECTION_LIMIT)));
        let route = scope.spawn(|| since(vn.wait_route(a, c, c, DETECTION_LIMIT)));
        let ping = scope.spawn(|| since(vn.wait_ping(a, c, DETECTION_LIMIT)));
        let join = |h: std::thread::ScopedJoinHandle<'_, Result<f64>>| {
            h.join()
                .map_err(|_| anyhow!("a measuring thread panicked"))?
        };
        (join(link), join(route), join(ping))
    });
    Ok(FailureRun {
        link_down_s: link_down_s?,
        rerouted_s: rerouted_s?,
        ping_back_s: ping_back_s?,
    })
}
