//! `iiptran-bench`: every benchmark of `bench/run` in one process, iiptrand and charon
//! measured alternately in the same run. Prints a table and writes the full results as
//! JSON. Run as root (network namespaces); `bench/run` builds and passes the binaries.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, ValueEnum};
use iiptran_bench::iiptrand::Binaries;
use iiptran_bench::report::{Report, SizeResult};
use iiptran_bench::setup_rate::{self, Responder, Setup};
use iiptran_bench::{failure, floor, pair};
use iiptran_testkit::WorkDir;
use iiptran_testkit::command::run;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Part {
    Setup,
    Charon,
    Floor,
    Rekey,
    Failure,
    Dataplane,
}

#[derive(Parser)]
#[command(about = "Benchmarks iiptrand against strongSwan's charon on this machine")]
struct Args {
    /// Numbers of initiating nodes for the setup-rate runs.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    sizes: Vec<u32>,
    /// Runs of each measurement, except those below.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Runs of each setup-rate measurement with at least 5,000 nodes (minutes each).
    #[arg(long, default_value_t = 3)]
    large_runs: usize,
    /// Runs of the rekey measurement (twice `rekey_seconds` each).
    #[arg(long, default_value_t = 3)]
    rekey_runs: usize,
    /// Setups the load generator keeps in flight.
    #[arg(long, default_value_t = 8)]
    concurrency: u32,
    #[arg(long, default_value_t = 60)]
    rekey_seconds: u64,
    /// Seconds between rekeys (child and IKE in turn).
    #[arg(long, default_value_t = 3)]
    rekey_every: u64,
    #[arg(long, default_value_t = 10)]
    dataplane_seconds: u64,
    /// Parts to leave out.
    #[arg(long, value_delimiter = ',')]
    skip: Vec<Part>,
    #[arg(long, required_unless_present = "table_from")]
    iiptrand: Option<PathBuf>,
    #[arg(long, required_unless_present = "table_from")]
    iiptranctl: Option<PathBuf>,
    #[arg(long, required_unless_present = "table_from")]
    loadgen: Option<PathBuf>,
    /// The repository (for the IKE crate's setup benchmark).
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    #[arg(long, default_value = "bench/results/latest.json")]
    out: PathBuf,
    /// Keep the scratch directory (configurations, logs).
    #[arg(long)]
    keep: bool,
    /// Only print the table of an earlier results file.
    #[arg(long)]
    table_from: Option<PathBuf>,
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = run("uname", &["-r"]).unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("?").to_owned();
    format!("{cpus} CPUs, Linux {}, load {load} at start", kernel.trim())
}

/// Runs `f` and files its result or its error.
fn attempt<T>(report: &mut Report, what: &str, f: impl FnOnce() -> Result<T>) -> Option<T> {
    eprintln!("bench: {what}");
    match f() {
        Ok(v) => Some(v),
        Err(e) => {
            eprintln!("bench: {what} failed: {e:#}");
            report.errors.push(format!("{what}: {e:#}"));
            None
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(file) = &args.table_from {
        let report: Report = serde_json::from_slice(&std::fs::read(file)?)?;
        print!("{}", report.table());
        return Ok(());
    }
    let (Some(iiptrand), Some(iiptranctl), Some(loadgen)) = (
        args.iiptrand.clone(),
        args.iiptranctl.clone(),
        args.loadgen.clone(),
    ) else {
        anyhow::bail!("--iiptrand, --iiptranctl and --loadgen are needed to measure");
    };
    let binaries = Binaries {
        iiptrand,
        iiptranctl,
    };
    let mut work = WorkDir::temp("bench")?;
    work.keep = args.keep;
    let id = std::process::id() % 10_000;
    let mut report = Report {
        started_utc: run("date", &["-u", "+%Y-%m-%d %H:%M UTC"])?
            .trim()
            .to_owned(),
        machine: machine(),
        concurrency: args.concurrency,
        ..Report::default()
    };
    let (ca, cert) = setup_rate::credentials(&work.path)?;
    let wants = |p: Part| !args.skip.contains(&p);

    if wants(Part::Setup) {
        let setup = Setup {
            binaries: binaries.clone(),
            loadgen: loadgen.clone(),
            concurrency: args.concurrency,
            prefix: format!("ibs{id}"),
        };
        for &count in &args.sizes {
            let mut size = SizeResult {
                count,
                iiptrand: Vec::new(),
                charon: Vec::new(),
            };
            let runs = if count >= 5_000 {
                args.large_runs
            } else {
                args.runs
            };
            for r in 0..runs {
                let mut responders = vec![Responder::Iiptrand];
                if wants(Part::Charon) {
                    responders.push(Responder::Charon);
                }
                for responder in responders {
                    let what = format!("setup rate, {responder:?}, N={count}, run {}", r + 1);
                    let result = attempt(&mut report, &what, || {
                        setup_rate::run_once(&setup, &work.path, &ca, &cert, responder, count)
                    });
                    if let Some(result) = result {
                        eprintln!(
                            "bench:   {:.0} setups/s, {:.3} ms CPU/setup, {:.1} KiB/adjacency",
                            result.setups_per_sec,
                            result.responder_cpu_ms_per_setup,
                            result.responder_rss_kib_per_adjacency
                        );
                        match responder {
                            Responder::Iiptrand => size.iiptrand.push(result),
                            Responder::Charon => size.charon.push(result),
                        }
                    }
                }
            }
            report.setup.push(size);
        }
    }
    if wants(Part::Floor) {
        for r in 0..args.runs {
            let what = format!("crypto floor, run {}", r + 1);
            if let Some(f) = attempt(&mut report, &what, || floor::measure(&args.repo)) {
                report.floor.push(f);
            }
        }
    }
    if wants(Part::Rekey) {
        for r in 0..args.rekey_runs {
            let what = format!("rekey under load, run {}", r + 1);
            let prefix = format!("ibk{id}{r}");
            let every = Duration::from_secs(args.rekey_every);
            if let Some(k) = attempt(&mut report, &what, || {
                pair::rekey_under_load(
                    &binaries,
                    &ca,
                    &work.path,
                    &prefix,
                    args.rekey_seconds,
                    10_000,
                    every,
                )
            }) {
                report.rekey.push(k);
            }
        }
    }
    if wants(Part::Failure) {
        // Each run waits out the default liveness timers (about three minutes), so the
        // runs go side by side, each in its own namespaces.
        eprintln!(
            "bench: failure and rerouting, {} runs side by side",
            args.runs
        );
        let results: Vec<Result<failure::FailureRun>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..args.runs)
                .map(|r| {
                    let (binaries, ca, dir) = (&binaries, &ca, &work.path);
                    scope.spawn(move || failure::measure(binaries, ca, dir, &format!("ibf{id}{r}")))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("panicked")))
                })
                .collect()
        });
        for (r, result) in results.into_iter().enumerate() {
            match result {
                Ok(f) => report.failure.push(f),
                Err(e) => report
                    .errors
                    .push(format!("failure and rerouting, run {}: {e:#}", r + 1)),
            }
        }
    }
    if wants(Part::Dataplane) {
        for r in 0..args.runs {
            let what = format!("data plane, run {}", r + 1);
            let prefix = format!("ibd{id}{r}");
            if let Some(d) = attempt(&mut report, &what, || {
                pair::dataplane(&binaries, &ca, &work.path, &prefix, args.dataplane_seconds)
            }) {
                report.dataplane.push(d);
            }
        }
    }

    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)?;
    print!("{}", report.table());
    println!("\nfull results: {}", args.out.display());
    Ok(())
}
