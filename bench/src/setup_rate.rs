//! Setup rate and cost: the load generator's nodes against one responder, iiptrand or
//! charon, in two namespaces. The responder's CPU time and RSS are read from /proc before
//! the first setup and once it reports every adjacency up, each time once its RSS has
//! held still (see [`settled_usage`]).

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::charon::{self, Charon};
use crate::iiptrand::{self, Binaries, Daemon};
use crate::loadgen::{Outcome, node_addr, node_identity};
use iiptran_testkit::WorkDir;
use iiptran_testkit::iiptrand::{Neighbor, NodeConfig};
use iiptran_testkit::netns::Netns;
use iiptran_testkit::pki::{Ca, NodeCert};
use iiptran_testkit::process::Process;
use iiptran_testkit::wait::wait_until;

use crate::system::{MachineTime, Pair, Usage};

const LOADGEN_ADDR: &str = "10.200.0.1";
const RESPONDER_ADDR: &str = "10.200.0.2";
const RESPONDER_ID: &str = "responder.vn.example";
/// The nodes' addresses: an AnyIP route makes all of them local in the load generator's
/// namespace, and the responder reaches them through its veth peer.
const NODES_NET: &str = "172.17.0.0/16";
const FIRST_NODE: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);
pub const MAX_NODES: u32 = 65_000;
/// The virtual links' addresses: a /31 per neighbor.
const LINKS_BASE: Ipv4Addr = Ipv4Addr::new(10, 64, 0, 0);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Responder {
    Iiptrand,
    Charon,
}

/// What the setup-rate runs need.
#[derive(Clone, Debug)]
pub struct Setup {
    pub binaries: Binaries,
    pub loadgen: PathBuf,
    pub concurrency: u32,
    /// Namespace names start with this (short: interface names derive from it).
    pub prefix: String,
}

/// One run against one responder.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RateRun {
    pub responder: Responder,
    pub count: u32,
    pub setups_per_sec: f64,
    pub responder_cpu_ms_per_setup: f64,
    pub responder_rss_kib_per_adjacency: f64,
    /// The responder's RSS with `count` peers configured, before the first setup.
    #[serde(default)]
    pub responder_rss_kib_configured: u64,
    /// From the first setup until the responder reported all adjacencies up.
    pub responder_confirmed_after_s: f64,
    /// Starting the responder with `count` peers configured until it answered.
    pub responder_start_s: f64,
    /// The share of the machine's CPU time the hypervisor took from the first setup until
    /// the responder reported all up, in percent: how much the host's other guests
    /// weighed on this run (not the VN's neighbors).
    #[serde(default)]
    pub steal_percent: Option<f64>,
    pub loadgen: Outcome,
}

fn responder_node(ca: &Ca, cert: &NodeCert, count: u32) -> NodeConfig {
    // Charon checks no liveness by default (dpd_delay = 0); iiptrand's default of 10 s
    // idle would, with 10,000 neighbors, run 1,000 liveness exchanges a second during the
    // measurement. Both responders are measured without them.
    let mut config = iiptrand::node(ca, cert, ("responder", RESPONDER_ADDR), "liveness = \"1h\"");
    config.neighbors = (0..count)
        .map(|i| {
            let address = format!("{}/31", Ipv4Addr::from(u32::from(LINKS_BASE) + 2 * i));
            let mut n = Neighbor::new(
                &format!("n{i}"),
                &node_addr(FIRST_NODE, i).to_string(),
                &address,
            );
            n.identity = node_identity(i);
            n.link = format!("l{i}");
            n.passive = true;
            n
        })
        .collect();
    config
}

/// A responder under test.
enum Subject {
    Iiptrand(Daemon),
    Charon(Charon),
}

impl Subject {
    fn usage(&self) -> Result<Usage> {
        match self {
            Self::Iiptrand(d) => d.usage(),
            Self::Charon(c) => c.usage(),
        }
    }

    /// Whether the responder reports `count` adjacencies up.
    fn all_up(&self, count: u32) -> Result<bool> {
        Ok(match self {
            Self::Iiptrand(d) => d.adjacencies_up()? >= u64::from(count),
            Self::Charon(c) => c.ike_sas()? == (u64::from(count), 0),
        })
    }
}

/// The load generator, holding its SAs until dropped.
struct Load {
    process: Process,
    outcome: Outcome,
}

fn start_load(setup: &Setup, ns: &Netns, dir: &Path, ca: &Ca, count: u32) -> Result<Load> {
    let mut command = ns.command(&setup.loadgen.display().to_string());
    command
        .args([
            "--responder",
            RESPONDER_ADDR,
            "--responder-id",
            RESPONDER_ID,
        ])
        .args([
            "--first",
            &FIRST_NODE.to_string(),
            "--count",
            &count.to_string(),
        ])
        .args(["--concurrency", &setup.concurrency.to_string(), "--hold"])
        .arg("--ca-cert")
        .arg(&ca.cert)
        .arg("--ca-key")
        .arg(&ca.key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("loadgen.stderr"))?);
    let mut process = Process::spawn_as_is("loadgen", command)?;
    let stdout = process.child.stdout.take().context("loadgen stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    if line.trim().is_empty() {
        let log = std::fs::read_to_string(dir.join("loadgen.stderr")).unwrap_or_default();
        bail!("loadgen ended without a result: {log}");
    }
    let outcome: Outcome =
        serde_json::from_str(&line).with_context(|| format!("loadgen said {line:?}"))?;
    Ok(Load { process, outcome })
}

/// One measurement of `responder` with `count` peers; `dir` holds the CA and logs.
pub fn run_once(
    setup: &Setup,
    dir: &Path,
    ca: &Ca,
    cert: &NodeCert,
    responder: Responder,
    count: u32,
) -> Result<RateRun> {
    if count == 0 || count > MAX_NODES {
        bail!("count must be 1..={MAX_NODES}");
    }
    let pair = Pair::new(&setup.prefix, LOADGEN_ADDR, RESPONDER_ADDR)?;
    pair.a
        .ip(&["route", "add", "local", NODES_NET, "dev", "lo"])?;
    pair.b
        .ip(&["route", "add", NODES_NET, "via", LOADGEN_ADDR])?;
    let mut run_dir =
        WorkDir::new(dir.join(format!("{responder:?}-{count}-{}", std::process::id())))?;
    let run = measure(setup, &pair, &run_dir, ca, cert, responder, count);
    // The logs of a failed run are what explains it.
    run_dir.keep |= run.is_err();
    run
}

fn measure(
    setup: &Setup,
    pair: &Pair,
    run_dir: &WorkDir,
    ca: &Ca,
    cert: &NodeCert,
    responder: Responder,
    count: u32,
) -> Result<RateRun> {
    let started = Instant::now();
    let subject = match responder {
        Responder::Iiptrand => Subject::Iiptrand(Daemon::start(
            &setup.binaries,
            &pair.b,
            &run_dir.path,
            &responder_node(ca, cert, count),
            Duration::from_secs(900),
        )?),
        Responder::Charon => {
            let peers: Vec<charon::Peer> = (0..count)
                .map(|i| charon::Peer {
                    identity: node_identity(i),
                    endpoint: node_addr(FIRST_NODE, i).to_string(),
                })
                .collect();
            Subject::Charon(Charon::start(
                &pair.b,
                &run_dir.join("charon"),
                cert,
                &ca.cert,
                RESPONDER_ADDR,
                &peers,
            )?)
        }
    };
    let responder_start_s = started.elapsed().as_secs_f64();
    let before = settled_usage(&subject)?;
    let machine_before = MachineTime::now()?;
    let load_started = Instant::now();
    let load = start_load(setup, &pair.a, &run_dir.path, ca, count)?;
    if load.outcome.up != count {
        bail!(
            "{responder:?}: {} of {count} setups up; first failure: {:?}",
            load.outcome.up,
            load.outcome.first_failure
        );
    }
    wait_until(
        "the responder to report every adjacency up",
        Duration::from_secs(300),
        Duration::from_millis(250),
        // A responder busy with setups may not answer every poll in time: ask again.
        || Ok(subject.all_up(count).unwrap_or(false).then_some(())),
    )?;
    let confirmed = load_started.elapsed().as_secs_f64();
    let steal_percent = MachineTime::now()?.steal_percent_since(&machine_before);
    let after = settled_usage(&subject)?;
    drop(load.process);
    let n = f64::from(count);
    Ok(RateRun {
        responder,
        count,
        setups_per_sec: load.outcome.setups_per_sec,
        responder_cpu_ms_per_setup: (after.cpu_seconds - before.cpu_seconds) * 1000.0 / n,
        responder_rss_kib_per_adjacency: (after.rss_kib as f64 - before.rss_kib as f64) / n,
        responder_rss_kib_configured: before.rss_kib,
        responder_confirmed_after_s: confirmed,
        responder_start_s,
        steal_percent: Some(steal_percent),
        loadgen: load.outcome,
    })
}

/// How long the responder's RSS must hold still to count as settled.
const SETTLE_QUIET: Duration = Duration::from_secs(2);
/// A responder whose RSS still changes after this long is measured as it is then.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);

/// The responder's usage once its RSS has held still for [`SETTLE_QUIET`]: just started, or
/// just done with the setups, a responder is still finishing work (flushing its store,
/// bringing links up, timers), and a snapshot in the middle of that put a varying part of
/// it into the figure per adjacency. Both responders are measured the same way.
fn settled_usage(subject: &Subject) -> Result<Usage> {
    let mut last = subject.usage()?;
    let mut still_since = Instant::now();
    let settled = wait_until(
        "the responder's RSS to hold still",
        SETTLE_LIMIT,
        Duration::from_millis(250),
        || {
            let now = subject.usage()?;
            if now.rss_kib != last.rss_kib {
                still_since = Instant::now();
            }
            last = now;
            Ok((still_since.elapsed() >= SETTLE_QUIET).then_some(now))
        },
    );
    Ok(settled.unwrap_or_else(|e| {
        eprintln!("bench: {e}; measured as it is");
        last
    }))
}

/// The CA and the responder's certificate (SANs: its identity and endpoint).
pub fn credentials(dir: &Path) -> Result<(Ca, NodeCert)> {
    let ca = Ca::new(&dir.join("pki"))?;
    let cert = ca.issue(RESPONDER_ID, RESPONDER_ADDR)?;
    Ok((ca, cert))
}
