//! `iiptranctl`: the operator's tool for a running `iiptrand`.

use std::io::ErrorKind as IoErrorKind;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use iiptran::control::client::{self, ClientError};
use iiptran::control::{Body, DEFAULT_SOCKET, Request};
use iiptran::render::{self, Clock, span};
use iiptran_certs::duration::parse_duration;
use iiptran_certs::{Algorithm, Ca, NodeId, unix_now};
use iiptran_policy::store::Store;

/// Inspect and control a running iiptrand over its control socket.
///
/// Exit status: 0 success, 1 the daemon reported an error, 2 usage, 3 the daemon cannot
/// be reached.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// The daemon's control socket.
    #[arg(long, global = true, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print the daemon's response as one JSON document.
    #[arg(long, global = true)]
    json: bool,
    /// Show absolute times beside relative ones.
    #[arg(long, short, global = true)]
    verbose: bool,
    /// How long to wait for the daemon.
    #[arg(long, global = true, default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// This node, its data plane and counts of adjacencies and SAs.
    Status,
    /// Each neighbor: its link, adjacency, rekey time and traffic.
    ListNeighbors,
    /// The IKE SAs and their child SAs.
    ListSas,
    /// The certificates the daemon has loaded.
    ListCerts,
    /// Bring the adjacency with a neighbor up now.
    Initiate { name: String },
    /// Delete the SAs with a neighbor and take its link down.
    Terminate { name: String },
    /// Rekey the child SA with a neighbor (or its IKE SA with --ike).
    Rekey {
        name: String,
        #[arg(long)]
        ike: bool,
    },
    /// Re-read the configuration and certificates.
    Reload,
    /// The recent changes of state of the adjacency with a neighbor, and why.
    History { name: String },
    /// Manage the VN certificate authority (works beside a running enrollment service).
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

fn main() -> ExitCode {
    let args = Args::parse();
    let request = match args.command {
        Command::Ca(command) => {
            return match ca(command) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("Error: {e:?}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Status => Request::Status,
        Command::ListNeighbors => Request::ListNeighbors,
        Command::ListSas => Request::ListSas,
        Command::ListCerts => Request::ListCerts,
        Command::Initiate { name } => Request::Initiate { name },
        Command::Terminate { name } => Request::Terminate { name },
        Command::Rekey { name, ike } => Request::Rekey { name, ike },
        Command::Reload => Request::Reload,
        Command::History { name } => Request::History { name },
    };
    let response = match client::request(&args.socket, &request, args.timeout) {
        Ok(response) => response,
        Err(e) => {
            eprintln!("iiptranctl: {e}{}", hint(&e));
            return ExitCode::from(3);
        }
    };
    let failed = matches!(response.body, Body::Error(_));
    if args.json {
        match serde_json::to_string_pretty(&response) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("iiptranctl: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        let clock = Clock {
            now: unix_now(),
            verbose: args.verbose,
        };
        let text = render::body(&response.body, clock);
        if failed {
            eprint!("{text}");
        } else {
            print!("{text}");
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// What the operator can do about a socket that cannot be reached.
fn hint(error: &ClientError) -> &'static str {
    match error {
        ClientError::Connect { source, .. } => match source.kind() {
            IoErrorKind::NotFound | IoErrorKind::ConnectionRefused => {
                "\nis iiptrand running? (systemctl status iiptrand; or pass --socket)"
            }
            IoErrorKind::PermissionDenied => "\nthe control socket is for root only: run as root",
            _ => "",
        },
        ClientError::Io { .. } | ClientError::Protocol { .. } => {
            "\nis the daemon at that socket an iiptrand of the same version?"
        }
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

fn open(dir: &Path) -> anyhow::Result<Ca> {
    let store = Store::open(&Ca::db_path(dir))?;
    Ok(Ca::open(dir, Arc::new(store.ca()?))?)
}
