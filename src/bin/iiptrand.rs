//! `iiptrand`: the iiptran IKEv2 key-management daemon.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{CommandFactory, Parser, Subcommand};
use iiptran::daemon::enrollment::bind_server;
use iiptran::log_queue::LogQueue;
use iiptran::notify::{State, notify};
use iiptran_certs::duration::parse_duration;
use iiptran_certs::est::{self, Credentials};
use iiptran_certs::{Algorithm, NodeId};
use iiptran_policy::config::{Config, EnrollServer};
use zeroize::Zeroizing;

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
        /// File holding the single-use join token from `iiptranctl ca token` (mode 0600
        /// or stricter; `-` reads it from standard input).
        #[arg(long, required_unless_present = "token", conflicts_with = "token")]
        token_file: Option<PathBuf>,
        /// The join token itself. Other users can see it in the process list while
        /// enrollment runs: prefer --token-file.
        // Tokens are base64url: one in 64 begins with '-', which is still the value.
        #[arg(long, allow_hyphen_values = true)]
        token: Option<String>,
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

/// Bytes of log lines queued for the writer thread before a logging thread waits.
const LOG_QUEUE_BYTES: usize = 512 << 10;
/// How long log lines gather before they are written together.
const LOG_GATHER: Duration = Duration::from_millis(10);

/// Two settings of glibc's malloc that keep the daemon's idle memory down.
///
/// Large transient blocks stay out of the heap for the daemon's life. Parsing the
/// configuration frees blocks of megabytes (4 MiB with 2,000 neighbors); glibc would then
/// serve every smaller large block from the heap, where each one freed among long-lived
/// allocations stays resident: a daemon with 1,000 neighbors configured idled at 26 MiB
/// instead of 19.
///
/// One arena for all threads: the configuration is parsed on the main thread and the
/// neighbors are set up on a worker, and an arena of its own per thread kept each one's
/// freed memory apart, 97 MiB idle with 10,000 neighbors against 76 with one (CPU per SA
/// setup and data-plane throughput alike). Threads rarely meet on the arena's lock: the
/// packet path allocates nothing, and each thread's cache takes most small blocks.
///
/// Called before any thread starts (an arena is a thread's from its first allocation);
/// whether glibc took both settings.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_malloc() -> bool {
    // glibc's initial threshold, which it would otherwise raise to the largest block freed.
    const MMAP_THRESHOLD: libc::c_int = 128 << 10;
    // SAFETY: mallopt sets one allocator parameter, under the allocator's own lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_ARENA_MAX, 1) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() -> bool {
    false
}

/// The daemon's event loop is a task on the runtime's workers, beside the data plane
/// that hands it IKE datagrams from port 4500: on the main thread (`block_on`, which
/// never drives the IO driver) every datagram cost a wake-up across threads, a sixth of
/// the CPU of an SA setup. One worker per core but one, so a core is left for the
/// kernel's share of the traffic: with a worker on every core, an idle one woke and
/// parked again for each task handed over, a tenth more CPU per setup on two cores.
/// `TOKIO_WORKER_THREADS` still decides when set.
fn daemon_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        builder.worker_threads(cores.saturating_sub(1).max(1));
    }
    builder.enable_all().build()
}

fn main() -> anyhow::Result<()> {
    let malloc_tuned = tune_malloc();
    // `written` writes out what is queued when it goes.
    let (log, written) = LogQueue::start(
        std::io::stderr(),
        LOG_QUEUE_BYTES,
        LOG_GATHER,
        "iiptrand-log",
    )?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(log)
        // Colour codes only for a person at a terminal, never into journald or files.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if !malloc_tuned {
        tracing::debug!("malloc's settings left to its defaults");
    }
    let args = Args::parse();
    est::install_crypto_provider();
    if let Some(path) = args.config {
        let config = match Config::load(&path) {
            Ok(config) => config,
            Err(e) => {
                drop(written);
                eprintln!("{e}");
                std::process::exit(2);
            }
        };
        let event_loop = iiptran::daemon::run(config, path);
        return daemon_runtime()?.block_on(async { tokio::spawn(event_loop).await? });
    }
    let Some(command) = args.command else {
        drop(written);
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
            let config = EnrollServer {
                listen,
                ca_dir,
                names,
                cert_lifetime,
                read_timeout,
            };
            let (server, _) = bind_server(&config).await?;
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
            token_file,
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
            let token = match (token_file, token) {
                (Some(path), _) => read_token(&path)?,
                (None, Some(token)) => Zeroizing::new(token),
                (None, None) => bail!("give --token-file"),
            };
            let credentials = est::enroll(&server, &token, &pin, &identity, algorithm).await?;
            credentials.save(&dir)?;
            println!("enrolled {identity}; credentials in {}", dir.display());
            println!(
                "renewal: add [enroll.client] server = \"{server}\" to the node's configuration"
            );
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

/// The join token from `path` (`-`: standard input), first line, without surrounding
/// blanks. A file others can read is refused: the token would have to be assumed known.
fn read_token(path: &Path) -> anyhow::Result<Zeroizing<String>> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let mut text = Zeroizing::new(String::new());
    if path == Path::new("-") {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the token from standard input")?;
    } else {
        let mut file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mode = file.metadata()?.permissions().mode();
        if mode & 0o077 != 0 {
            bail!(
                "{} is accessible to group or others (mode {:o}); chmod 600 it",
                path.display(),
                mode & 0o777
            );
        }
        file.read_to_string(&mut text)
            .with_context(|| format!("reading {}", path.display()))?;
    }
    let token = text.lines().next().unwrap_or_default().trim();
    if token.is_empty() {
        bail!("{}: no token in it", path.display());
    }
    Ok(Zeroizing::new(token.to_owned()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_that_begins_with_a_hyphen_is_the_tokens_value() {
        let args = Args::try_parse_from([
            "iiptrand",
            "enroll",
            "--server",
            "https://192.0.2.1:8443",
            "--token",
            "-UdKx3",
            "--ca-fingerprint",
            "00",
            "--identity",
            "c.vn.example",
            "--dir",
            "/nonexistent",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let Some(Command::Enroll { token, .. }) = args.command else {
            panic!("enroll parsed as another command");
        };
        assert_eq!(token.as_deref(), Some("-UdKx3"));
    }
}
