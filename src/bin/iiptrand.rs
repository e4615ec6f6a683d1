//! `iiptrand`: the iiptran IKEv2 key-management daemon.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{CommandFactory, Parser, Subcommand};
use iiptran::notify::{State, notify};
use iiptran_certs::duration::parse_duration;
use iiptran_certs::est::{self, Credentials, Limits, Server, ServerConfig};
use iiptran_certs::{Algorithm, Ca, NodeId};
use iiptran_policy::config::Config;
use iiptran_policy::store::SharedCaDb;

/// IKEv2 key-management daemon for RFC 3884 (IIPtran) secure virtual networks.
#[derive(Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Args {
    /// Run the daemon with this node configuration (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the VN's EST enrollment service (HTTPS) for the CA in --ca-dir.
    EnrollServer {
        #[arg(long)]
        ca_dir: PathBuf,
        /// Address and port to listen on (port 0 picks a free one; the bound address is
        /// printed as "listening on ADDR").
        #[arg(long)]
        listen: SocketAddr,
        /// DNS name or IP address clients use to reach this server (repeatable); defaults
        /// to the listen address.
        #[arg(long = "name")]
        names: Vec<NodeId>,
        /// Lifetime of issued node certificates.
        #[arg(long, default_value = "30d", value_parser = parse_duration)]
        cert_lifetime: Duration,
        /// Time a client may take for the TLS handshake, the request headers and the body.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        read_timeout: Duration,
    },
    /// Enroll this node: make its key and CSR locally, redeem the join token and write
    /// key.pem, cert.pem and ca.pem into --dir.
    Enroll {
        /// The enrollment service, e.g. https://192.0.2.1:8443
        #[arg(long)]
        server: String,
        /// The single-use join token from `iiptranctl ca token`.
        #[arg(long)]
        token: String,
        /// SHA-256 of the CA certificate (hex, as `iiptranctl ca fingerprint` prints it).
        #[arg(long)]
        ca_fingerprint: String,
        /// This node's identity (FQDN, user@domain or IP address); the token must be for it.
        #[arg(long)]
        identity: NodeId,
        /// State directory for key.pem (mode 0600), cert.pem and ca.pem.
        #[arg(long)]
        dir: PathBuf,
        /// ed25519 or p256.
        #[arg(long, default_value = "ed25519")]
        algorithm: Algorithm,
    },
    /// Renew the certificate in --dir now, over mutual TLS with the current one.
    Reenroll {
        #[arg(long)]
        server: String,
        /// State directory written by `enroll`.
        #[arg(long)]
        dir: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into journald or files.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let args = Args::parse();
    est::install_crypto_provider();
    if let Some(path) = args.config {
        let config = Config::load(&path).unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(2);
        });
        let runtime = tokio::runtime::Runtime::new()?;
        return runtime.block_on(iiptran::daemon::run(config, &path));
    }
    let Some(command) = args.command else {
        Args::command().print_help()?;
        std::process::exit(2);
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run(command))
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::EnrollServer {
            ca_dir,
            listen,
            mut names,
            cert_lifetime,
            read_timeout,
        } => {
            if names.is_empty() {
                if listen.ip().is_unspecified() {
                    bail!("listening on {listen}: give the server's --name(s)");
                }
                names.push(NodeId::Ip(listen.ip()));
            }
            // Opened per operation, so `iiptranctl ca` can work on the database meanwhile.
            let store = SharedCaDb::new(&Ca::db_path(&ca_dir));
            let ca = Ca::open(&ca_dir, Arc::new(store))?;
            let limits = Limits {
                handshake_timeout: read_timeout,
                header_timeout: read_timeout,
                body_timeout: read_timeout,
                ..Limits::default()
            };
            let config = ServerConfig {
                listen,
                names,
                cert_lifetime,
                limits,
            };
            let server = Server::bind(Arc::new(ca), config).await?;
            let addr = server.local_addr()?;
            println!("listening on {addr}");
            let status = format!("enrollment service on {addr}");
            notify(&[State::Ready, State::Status(&status)]);
            server
                .run(async {
                    shutdown_signal().await;
                    notify(&[State::Stopping]);
                })
                .await?;
        }
        Command::Enroll {
            server,
            token,
            ca_fingerprint,
            identity,
            dir,
            algorithm,
        } => {
            let pin: [u8; 32] = hex::decode(ca_fingerprint.replace(':', ""))
                .ok()
                .and_then(|bytes| bytes.try_into().ok())
                .context("--ca-fingerprint must be 64 hex digits (SHA-256)")?;
            let credentials = est::enroll(&server, &token, &pin, &identity, algorithm).await?;
            credentials.save(&dir)?;
            println!("enrolled {identity}; credentials in {}", dir.display());
        }
        Command::Reenroll { server, dir } => {
            let current = Credentials::load(&dir)?;
            let renewed = est::reenroll(&server, &current).await?;
            renewed.save(&dir)?;
            println!("renewed the certificate in {}", dir.display());
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutting down");
}
