//! The enrollment tasks that run beside the IKE engine: the EST service of
//! `[enroll.server]` (the same one `iiptrand enroll-server` runs), the renewal of the
//! `[auth]` certificate with the service of `[enroll.client]`, and the refresh of the
//! CRLs peers are checked against.
//!
//! The CA database is opened for each operation only ([`SharedCaDb`]), so `iiptranctl ca`
//! works on it while the daemon serves the CA.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use iiptran_certs::est::{self, CredentialFiles, Credentials, Limits, RenewalSchedule, Server};
use iiptran_certs::{Ca, unix_now};
use iiptran_policy::config::{CertFiles, Config, EnrollServer};
use iiptran_policy::store::SharedCaDb;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::credentials::{CrlSource, NodeCredentials, read_crl_file};
use crate::control::protocol::RenewalReport;

/// A failure to start the enrollment service.
#[derive(Debug, thiserror::Error)]
pub enum EnrollmentError {
    #[error("the CA in {dir}: {source}")]
    Ca {
        dir: PathBuf,
        source: iiptran_certs::CaError,
    },
    #[error("the enrollment service: {0}")]
    Server(#[from] est::ServerError),
}

/// Opens the CA of `config` and binds its enrollment service.
pub async fn bind_server(config: &EnrollServer) -> Result<(Server, Arc<Ca>), EnrollmentError> {
    let store = SharedCaDb::new(&Ca::db_path(&config.ca_dir));
    let ca = Ca::open(&config.ca_dir, Arc::new(store)).map_err(|source| EnrollmentError::Ca {
        dir: config.ca_dir.clone(),
        source,
    })?;
    let ca = Arc::new(ca);
    let limits = Limits {
        handshake_timeout: config.read_timeout,
        header_timeout: config.read_timeout,
        body_timeout: config.read_timeout,
        ..Limits::default()
    };
    let server_config = est::ServerConfig {
        listen: config.listen,
        names: config.names.clone(),
        cert_lifetime: config.cert_lifetime,
        limits,
    };
    let server = Server::bind(ca.clone(), server_config).await?;
    Ok((server, ca))
}

/// A background task and the way to stop it.
struct Task {
    stop: oneshot::Sender<()>,
    handle: JoinHandle<()>,
}

impl Task {
    fn spawn<F>(work: impl FnOnce(oneshot::Receiver<()>) -> F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel();
        Self {
            stop,
            handle: tokio::spawn(work(stopped)),
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        if let Err(e) = self.handle.await {
            warn!(error = %e, "an enrollment task failed");
        }
    }
}

/// The EST service, renewal and CRL tasks of one configuration.
pub struct Services {
    credentials: Arc<NodeCredentials>,
    server: Option<(Task, Arc<Ca>)>,
    renewal: Option<Task>,
    crls: Option<Task>,
}

impl Services {
    /// Starts what `config` asks for. Failing to bind the enrollment service is an error.
    pub async fn start(
        config: &Config,
        credentials: Arc<NodeCredentials>,
    ) -> Result<Self, EnrollmentError> {
        let mut services = Self {
            credentials,
            server: None,
            renewal: None,
            crls: None,
        };
        services.start_server(config).await?;
        services.start_renewal(config);
        services.start_crls(config);
        Ok(services)
    }

    /// Applies a reload: the enrollment service restarts if its section changed, the
    /// renewal if `[auth]` or `[enroll.client]` did, and the CRLs are refreshed at once.
    pub async fn reconfigure(&mut self, old: &Config, new: &Config) -> Result<(), String> {
        let mut result = Ok(());
        if old.enroll_server != new.enroll_server {
            if let Some((task, _)) = self.server.take() {
                task.stop().await;
                info!("enrollment service stopped");
            }
            if let Err(e) = self.start_server(new).await {
                result = Err(format!("{e}; the enrollment service is not running"));
            }
        }
        if old.auth != new.auth || old.enroll_client != new.enroll_client {
            if let Some(task) = self.renewal.take() {
                task.stop().await;
            }
            self.start_renewal(new);
        }
        if let Some(task) = self.crls.take() {
            task.stop().await;
        }
        self.start_crls(new);
        result
    }

    /// Stops every task.
    pub async fn stop(&mut self) {
        let tasks = [
            self.server.take().map(|(task, _)| task),
            self.renewal.take(),
            self.crls.take(),
        ];
        for task in tasks.into_iter().flatten() {
            task.stop().await;
        }
    }

    async fn start_server(&mut self, config: &Config) -> Result<(), EnrollmentError> {
        let Some(settings) = &config.enroll_server else {
            return Ok(());
        };
        let (server, ca) = bind_server(settings).await?;
        let addr = server.local_addr().unwrap_or(settings.listen);
        info!(%addr, ca = %settings.ca_dir.display(), "enrollment service listening");
        let task = Task::spawn(|stopped| async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = server.run(shutdown).await {
                warn!(error = %e, "the enrollment service stopped");
            }
        });
        self.server = Some((task, ca));
        Ok(())
    }

    fn start_renewal(&mut self, config: &Config) {
        self.credentials.set_renewal(None);
        let (Some(client), Some(files)) = (&config.enroll_client, &config.auth) else {
            return;
        };
        let renewal = Renewal {
            credentials: self.credentials.clone(),
            files: files.clone(),
            server: client.server.clone(),
        };
        self.renewal = Some(Task::spawn(|stopped| renewal.run(stopped)));
    }

    fn start_crls(&mut self, config: &Config) {
        let Some(auth) = &config.auth else {
            for source in [CrlSource::File, CrlSource::HostedCa, CrlSource::Server] {
                self.credentials.drop_crl(source);
            }
            return;
        };
        let refresh = CrlRefresh {
            credentials: self.credentials.clone(),
            file: auth.crl.clone(),
            ca: self.server.as_ref().map(|(_, ca)| ca.clone()),
            server: config
                .enroll_client
                .as_ref()
                .map(|c| (c.server.clone(), auth.ca.clone())),
            every: auth.crl_refresh,
            failing: BTreeMap::new(),
        };
        refresh.forget_unconfigured();
        self.crls = Some(Task::spawn(|stopped| refresh.run(stopped)));
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Waits until `at` (by the wall clock, re-checked at least every minute so that clock
/// steps are noticed); false when stopped first.
async fn wait_until(at: SystemTime, stopped: &mut oneshot::Receiver<()>) -> bool {
    const RECHECK: Duration = Duration::from_secs(60);
    loop {
        let left = at.duration_since(SystemTime::now()).unwrap_or_default();
        if left.is_zero() {
            return true;
        }
        tokio::select! {
            () = tokio::time::sleep(left.min(RECHECK)) => {}
            _ = &mut *stopped => return false,
        }
    }
}

/// Renews the `[auth]` certificate at two thirds of its lifetime, over mutual TLS with the
/// current one, and retries with back-off when that fails.
struct Renewal {
    credentials: Arc<NodeCredentials>,
    files: CertFiles,
    server: String,
}

/// How long to wait before reading credential files that could not be read.
const UNREADABLE_RETRY: Duration = Duration::from_secs(60);

impl Renewal {
    fn files(&self) -> CredentialFiles {
        CredentialFiles {
            key: self.files.key.clone(),
            cert: self.files.cert.clone(),
            ca: self.files.ca.clone(),
        }
    }

    async fn run(self, mut stopped: oneshot::Receiver<()>) {
        let mut report = RenewalReport {
            server: self.server.clone(),
            ..RenewalReport::default()
        };
        loop {
            let current = Credentials::load_from(&self.files())
                .and_then(|c| RenewalSchedule::of(&c.cert).map(|s| (c, s)));
            let next = match &current {
                Ok((_, schedule)) => schedule.next_attempt(SystemTime::now(), report.failures),
                Err(e) => {
                    report.failures += 1;
                    report.last_error = Some(e.to_string());
                    warn!(error = %e, "cannot read the certificate to renew");
                    SystemTime::now() + UNREADABLE_RETRY
                }
            };
            report.next_attempt = Some(unix(next));
            self.credentials.set_renewal(Some(report.clone()));
            if !wait_until(next, &mut stopped).await {
                return;
            }
            let Ok((current, _)) = current else {
                continue;
            };
            match self.renew(&current).await {
                Ok(serial) => {
                    info!(serial, server = self.server, "certificate renewed");
                    report.failures = 0;
                    report.last_error = None;
                    report.last_renewed = Some(unix_now());
                }
                Err(error) => {
                    report.failures += 1;
                    warn!(
                        error,
                        failures = report.failures,
                        server = self.server,
                        "certificate renewal failed"
                    );
                    report.last_error = Some(error);
                }
            }
        }
    }

    /// One renewal: the new certificate is written and put to use; returns its serial.
    async fn renew(&self, current: &Credentials) -> Result<String, String> {
        let renewed = est::reenroll(&self.server, current)
            .await
            .map_err(|e| e.to_string())?;
        renewed.save_to(&self.files()).map_err(|e| e.to_string())?;
        self.credentials
            .renewed(&self.files)
            .map_err(|e| format!("loading the renewed certificate: {e}"))?;
        let serial = x509_parser::parse_x509_certificate(&renewed.cert)
            .map(|(_, c)| hex::encode(c.raw_serial()))
            .unwrap_or_default();
        Ok(serial)
    }
}

/// Keeps the CRLs of the configured sources current.
struct CrlRefresh {
    credentials: Arc<NodeCredentials>,
    file: Option<PathBuf>,
    ca: Option<Arc<Ca>>,
    /// The enrollment server and the CA file that anchors its TLS.
    server: Option<(String, PathBuf)>,
    every: Duration,
    /// The last failure of each source, logged once until it changes.
    failing: BTreeMap<CrlSource, String>,
}

/// How often the CRL file is looked at, at most.
const FILE_POLL: Duration = Duration::from_secs(5);

impl CrlRefresh {
    fn forget_unconfigured(&self) {
        let configured = [
            (CrlSource::File, self.file.is_some()),
            (CrlSource::HostedCa, self.ca.is_some()),
            (CrlSource::Server, self.server.is_some()),
        ];
        for (source, present) in configured {
            if !present {
                self.credentials.drop_crl(source);
            }
        }
    }

    async fn run(mut self, mut stopped: oneshot::Receiver<()>) {
        let tick = self.every.min(FILE_POLL);
        let mut remote_due = SystemTime::now();
        loop {
            if let Some(path) = self.file.clone() {
                let from = path.display().to_string();
                self.set(CrlSource::File, read_crl_file(&path), &from);
            }
            if SystemTime::now() >= remote_due {
                remote_due = SystemTime::now() + self.every;
                if let Some(ca) = self.ca.clone() {
                    let crl = tokio::task::spawn_blocking(move || ca.crl(unix_now()))
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r.map(|der| der.to_vec()).map_err(|e| e.to_string()));
                    self.set(CrlSource::HostedCa, crl, "hosted CA");
                }
                if let Some((server, ca_file)) = self.server.clone() {
                    let crl = fetch_crl(&server, &ca_file).await;
                    self.set(CrlSource::Server, crl, &server);
                }
            }
            tokio::select! {
                () = tokio::time::sleep(tick) => {}
                _ = &mut stopped => return,
            }
        }
    }

    fn set(&mut self, source: CrlSource, crl: Result<Vec<u8>, String>, from: &str) {
        match crl.and_then(|der| self.credentials.set_crl(source, der, from)) {
            Ok(changed) => {
                if changed {
                    info!(from, "CRL updated");
                }
                if self.failing.remove(&source).is_some() {
                    info!(from, "the CRL can be refreshed again");
                }
            }
            Err(error) => {
                if self.failing.get(&source) != Some(&error) {
                    warn!(
                        from,
                        error, "cannot refresh the CRL; the last one stays in use"
                    );
                    self.failing.insert(source, error);
                }
            }
        }
    }
}

async fn fetch_crl(server: &str, ca_file: &std::path::Path) -> Result<Vec<u8>, String> {
    let chain = CertificateDer::pem_file_iter(ca_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", ca_file.display()))?;
    est::fetch_crl(server, &chain)
        .await
        .map_err(|e| e.to_string())
}
