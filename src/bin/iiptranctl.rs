//! `iiptranctl`: the operator's tool for a running `iiptrand`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use iiptran_certs::duration::parse_duration;
use iiptran_certs::{Algorithm, Ca, NodeId, unix_now};
use iiptran_policy::store::Store;

/// Inspect and control a running iiptrand over its control socket.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manage the VN certificate authority (works beside a running `iiptrand enroll-server`).
    #[command(subcommand)]
    Ca(CaCommand),
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create the CA key (ca.key, mode 0600), certificate (ca.pem) and database in DIR.
    Init {
        #[arg(long)]
        name: String,
        #[arg(long)]
        dir: PathBuf,
        /// ed25519 or p256.
        #[arg(long, default_value = "ed25519")]
        algorithm: Algorithm,
        /// How long the CA certificate is valid.
        #[arg(long, default_value = "3650d", value_parser = parse_duration)]
        validity: Duration,
    },
    /// Print a single-use join token for IDENTITY at tunnel endpoint ENDPOINT.
    Token {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        identity: NodeId,
        #[arg(long)]
        endpoint: IpAddr,
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        ttl: Duration,
    },
    /// List the issued certificates.
    List {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Revoke a certificate by serial number (hex, as `ca list` shows it).
    Revoke {
        #[arg(long)]
        dir: PathBuf,
        serial: String,
    },
    /// Write the current CRL (PEM) to --out, or print it.
    Crl {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the SHA-256 fingerprint of the CA certificate (for `iiptrand enroll`).
    Fingerprint {
        #[arg(long)]
        dir: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Ca(command) => ca(command),
    }
}

fn ca(command: CaCommand) -> anyhow::Result<()> {
    match command {
        CaCommand::Init {
            name,
            dir,
            algorithm,
            validity,
        } => {
            let store = Store::open(&Ca::db_path(&dir))?;
            let ca = Ca::init(
                &dir,
                &name,
                algorithm,
                validity,
                unix_now(),
                Arc::new(store.ca()?),
            )?;
            println!("CA {name:?} created in {}", dir.display());
            println!("fingerprint {}", hex::encode(ca.fingerprint()));
        }
        CaCommand::Token {
            dir,
            identity,
            endpoint,
            ttl,
        } => {
            let token = open(&dir)?.create_token(&identity, endpoint, ttl, unix_now())?;
            println!("{}", token.reveal().as_str());
        }
        CaCommand::List { dir } => {
            let now = unix_now();
            println!(
                "{:<32}  {:<28}  {:<15}  {:<10}  STATUS",
                "SERIAL", "IDENTITY", "ENDPOINT", "EXPIRES"
            );
            for rec in open(&dir)?.store().list()? {
                let endpoint = rec
                    .endpoint
                    .map_or_else(|| "-".to_owned(), |ip| ip.to_string());
                let expires = match rec.not_after.checked_sub(now) {
                    Some(left) if left > 0 => format!("in {}", span(left)),
                    _ => format!("{} ago", span(now - rec.not_after)),
                };
                let status = match rec.revoked_at {
                    Some(_) => "revoked",
                    None if rec.not_after <= now => "expired",
                    None => "valid",
                };
                println!(
                    "{:<32}  {:<28}  {:<15}  {:<10}  {status}",
                    rec.serial, rec.identity, endpoint, expires
                );
            }
        }
        CaCommand::Revoke { dir, serial } => {
            let rec = open(&dir)?.revoke(&serial, unix_now())?;
            println!("revoked {} ({})", rec.serial, rec.identity);
        }
        CaCommand::Crl { dir, out } => {
            let crl = open(&dir)?.crl(unix_now())?;
            let pem = iiptran_certs::to_pem("X509 CRL", &crl);
            match out {
                Some(path) => iiptran_certs::write_atomic(&path, pem.as_bytes(), 0o644)
                    .with_context(|| path.display().to_string())?,
                None => print!("{pem}"),
            }
        }
        CaCommand::Fingerprint { dir } => println!("{}", hex::encode(open(&dir)?.fingerprint())),
    }
    Ok(())
}

/// A number of seconds in its largest whole unit, e.g. `29d`, `5h`, `40s`.
fn span(secs: u64) -> String {
    match secs {
        86_400.. => format!("{}d", secs / 86_400),
        3600.. => format!("{}h", secs / 3600),
        60.. => format!("{}m", secs / 60),
        _ => format!("{secs}s"),
    }
}

fn open(dir: &Path) -> anyhow::Result<Ca> {
    let store = Store::open(&Ca::db_path(dir))?;
    Ok(Ca::open(dir, Arc::new(store.ca()?))?)
}
