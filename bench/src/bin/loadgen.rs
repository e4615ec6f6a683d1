//! `loadgen`: many initiating IIPtran nodes in one process against one responder.
//! Prints one JSON line ([`iiptran_bench::loadgen::Outcome`]) when every setup has ended;
//! with `--hold` it then keeps the SAs alive until its standard input closes.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use iiptran_bench::loadgen::{Loadgen, Plan};

#[derive(Parser)]
#[command(about = "Sets up IIPtran SAs from many initiating nodes against one responder")]
struct Args {
    /// The responder's tunnel endpoint (IKE on port 500).
    #[arg(long)]
    responder: IpAddr,
    /// The responder's identity (FQDN).
    #[arg(long)]
    responder_id: String,
    /// Address of node 0; node i uses first + i (each must be local, e.g. by an AnyIP route).
    #[arg(long)]
    first: Ipv4Addr,
    #[arg(long)]
    count: u32,
    /// Setups in flight at a time.
    #[arg(long, default_value_t = 8)]
    concurrency: u32,
    #[arg(long)]
    ca_cert: PathBuf,
    #[arg(long)]
    ca_key: PathBuf,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// After the report, keep answering until standard input closes.
    #[arg(long)]
    hold: bool,
}

async fn run(args: Args) -> Result<()> {
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
    };
    let plan = Plan {
        responder: args.responder,
        responder_id: args.responder_id,
        first: args.first,
        count: args.count,
        concurrency: args.concurrency.max(1),
        ca_cert_pem: read(&args.ca_cert)?,
        ca_key_pem: read(&args.ca_key)?,
        timeout: Duration::from_secs(args.timeout),
    };
    let prepared = Instant::now();
    let mut loadgen = Loadgen::prepare(plan).await?;
    eprintln!(
        "loadgen: {} nodes prepared in {:.1} s",
        args.count,
        prepared.elapsed().as_secs_f64()
    );
    let outcome = loadgen.run().await?;
    println!("{}", serde_json::to_string(&outcome)?);
    if args.hold {
        let (closed, stdin_closed) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            let _ = closed.send(());
        });
        loadgen
            .hold(async {
                let _ = stdin_closed.await;
            })
            .await;
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
