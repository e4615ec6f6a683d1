//! `iiptrand --config FILE`: the daemon itself. One task owns the IKE engine and the
//! adjacencies ([`runtime`]); the control server runs beside it and reaches it through a
//! channel ([`handler`]), and a worker brings virtual links up for it ([`link_switch`]).

mod cert_report;
mod credentials;
mod dataplane;
pub mod enrollment;
mod handler;
mod ike_policy;
mod kernel_objects;
mod link_switch;
mod runtime;
mod sa_report;
mod sockets;
mod stale;

use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use anyhow::Context;
use credentials::NodeCredentials;
use enrollment::Services;
use iiptran_ike::sa::Engine;
use iiptran_policy::config::Config;
use iiptran_policy::store::Store;
use iiptran_xfrm::Dataplane;
use iiptran_xfrm::kernel::{KernelDataplane, enable_espinudp};
use iiptran_xfrm::userspace::UserspaceDataplane;
use tokio::sync::{mpsc, oneshot};

use crate::control::protocol::DataPlaneKind;
use crate::control::{ControlServer, ServerConfig};
use crate::notify::{State, notify};
use handler::Handler;
use ike_policy::{VnPolicy, engine_config};
use runtime::{NatT, Runtime};
use sockets::Sockets;

/// What keeps the daemon from starting, beyond the configuration file's own errors.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Config(String),
}

/// With the value `1`, the daemon logs every IKE SA's keys so captures can be decrypted.
/// Insecure: anyone who reads the log can read and forge that SA's messages.
pub const LOG_IKE_KEYS: &str = "IIPTRAN_LOG_IKE_KEYS";

/// Runs the daemon for a loaded configuration until SIGTERM or SIGINT.
pub async fn run(config: Config, config_path: PathBuf) -> anyhow::Result<()> {
    let state_dir = &config.node.state_dir;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let store = Store::open(&state_dir.join("state.db"))?;
    let kind = dataplane::choose(config.node.dataplane, config.node.endpoint);
    tracing::info!(data_plane = %kind, "starting");
    let sockets = Sockets::bind(config.node.endpoint).await?;
    let credentials = Arc::new(NodeCredentials::load(&config)?);
    let policy = VnPolicy::new(&config, credentials.clone())?;
    // The userspace data plane carries ESP only in UDP: the peer must encapsulate too,
    // whatever its data plane, so NAT traversal is forced (RFC 3948 with any peer).
    let mut settings = engine_config(&config.ike, kind == DataPlaneKind::Userspace);
    settings.log_keys = std::env::var_os(LOG_IKE_KEYS).is_some_and(|v| v == "1");
    if settings.log_keys {
        tracing::warn!("{LOG_IKE_KEYS}=1: IKE SA keys go to the log (insecure, debugging only)");
    }
    let engine = Engine::new(settings, policy, Instant::now(), SystemTime::now())
        .context("starting the IKE engine")?;
    let server = ControlServer::bind(ServerConfig::new(&config.node.control_socket))?;
    let services = Services::start(&config, credentials).await?;
    let parts = Parts {
        config,
        config_path,
        engine,
        store,
        server,
        services,
    };
    match kind {
        DataPlaneKind::Userspace => {
            let (dataplane, ike) = UserspaceDataplane::new(sockets.nat_t.clone())?;
            serve(parts, dataplane, kind, sockets, NatT::Userspace(ike)).await
        }
        DataPlaneKind::Kernel => {
            let dataplane = KernelDataplane::open()?;
            enable_espinudp(&*sockets.nat_t).context("enabling ESP in UDP on port 4500")?;
            let nat_t = NatT::Kernel(sockets.nat_t.clone());
            serve(parts, dataplane, kind, sockets, nat_t).await
        }
    }
}

/// What [`run`] sets up before the data plane is chosen.
struct Parts {
    config: Config,
    config_path: PathBuf,
    engine: Engine<VnPolicy>,
    store: Store,
    server: ControlServer,
    services: Services,
}

async fn serve<D: Dataplane + 'static>(
    parts: Parts,
    dataplane: D,
    kind: DataPlaneKind,
    sockets: Sockets,
    nat_t: NatT,
) -> anyhow::Result<()> {
    let mut runtime = Runtime::new(
        parts.config,
        parts.config_path,
        parts.engine,
        dataplane,
        kind,
        sockets,
        parts.store,
        parts.services,
    );
    runtime.start().await;
    let (requests, control) = mpsc::channel(16);
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(parts.server.run(Arc::new(Handler::new(requests)), async {
        // A dropped sender stops the server as well as a sent stop.
        let _ = stopped.await;
    }));
    notify(&[State::Ready, State::Status("running")]);
    tracing::info!("ready");
    let result = runtime.run(nat_t, control).await;
    let _ = stop.send(());
    server.await.context("control server task")??;
    result.context("main loop")
}
