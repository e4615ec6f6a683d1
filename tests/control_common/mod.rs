//! Shared by the control socket tests: a handler with fixed reports, a server on its own
//! runtime thread and a raw line client.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use iiptran::certs::unix_now;
use iiptran::control::protocol::{
    ActionReport, CertReport, ChildSaReport, Counts, DataPlaneKind, EspSpi, IkeSaReport, IkeSpi,
    IkeSuite, LastError, LinkState, Mode, NeighborReport, SaTraffic, StatusReport, Traffic,
    TrafficSelector, TransitionReport,
};
use iiptran::control::{
    BindError, ControlError, ControlHandler, ControlServer, ErrorKind, Response, ServerConfig,
};
use tokio::sync::oneshot;

pub const IIPTRANCTL: &str = env!("CARGO_BIN_EXE_iiptranctl");

/// The reports the test handler answers with.
#[derive(Clone)]
pub struct Fixture {
    pub status: StatusReport,
    pub neighbors: Vec<NeighborReport>,
    pub sas: Vec<IkeSaReport>,
    pub certs: Vec<CertReport>,
    /// Neighbor n2's.
    pub history: Vec<TransitionReport>,
}

impl Fixture {
    /// Times relative to `now`, at least 30 s away from where their relative rendering
    /// changes, so the tables read the same however long the test takes to look.
    pub fn new(now: u64) -> Self {
        let local: IpAddr = "192.0.2.1".parse().unwrap();
        let remote: IpAddr = "192.0.2.2".parse().unwrap();
        let selector = |addr| TrafficSelector {
            addr,
            prefix_len: 32,
            protocol: 4,
        };
        let status = StatusReport {
            node: "n1".into(),
            identity: "n1.vn.example".into(),
            endpoint: local,
            data_plane: DataPlaneKind::Userspace,
            uptime_secs: 3 * 86_400 + 4 * 3600 + 7,
            counts: Counts {
                adjacencies_up: 1,
                adjacencies_down: 1,
                ike_sas: 1,
                child_sas: 1,
                half_open: 0,
            },
        };
        let neighbors = vec![
            NeighborReport {
                name: "n2".into(),
                link: "iip-n2".into(),
                link_state: LinkState::Up,
                local_endpoint: local,
                remote_endpoint: remote,
                identity: "n2.vn.example".into(),
                adjacency: "established".into(),
                last_established: Some(now - 310),
                next_rekey: Some(now + 3330),
                traffic: Traffic {
                    bytes_in: 1536,
                    bytes_out: 5 * 1024 * 1024,
                    packets_in: 12,
                    packets_out: 4096,
                },
                last_error: None,
            },
            NeighborReport {
                name: "n3-long-name".into(),
                link: "iip-n3".into(),
                link_state: LinkState::Down,
                local_endpoint: local,
                remote_endpoint: "192.0.2.3".parse().unwrap(),
                identity: "n3.vn.example".into(),
                adjacency: "backoff".into(),
                last_established: None,
                next_rekey: None,
                traffic: Traffic::default(),
                last_error: Some(LastError {
                    at: now - 150,
                    message: "AUTHENTICATION_FAILED".into(),
                }),
            },
        ];
        let sas = vec![IkeSaReport {
            name: "n2".into(),
            id: 3,
            state: "ESTABLISHED".into(),
            spi_initiator: IkeSpi(0x1a2b_3c4d_5e6f_7a8b),
            spi_responder: IkeSpi(0x0f0e_0d0c_0b0a_0908),
            initiator: true,
            suite: IkeSuite {
                encr: "CHACHA20_POLY1305".into(),
                prf: "PRF_HMAC_SHA2_256".into(),
                dh: "CURVE25519".into(),
            },
            local_identity: "n1.vn.example".into(),
            remote_identity: "n2.vn.example".into(),
            local_addr: SocketAddr::new(local, 500),
            remote_addr: SocketAddr::new(remote, 500),
            established_at: Some(now - 310),
            rekey_at: Some(now + 3330),
            expire_at: Some(now + 7230),
            child_sas: vec![ChildSaReport {
                reqid: 7,
                state: "INSTALLED".into(),
                mode: Mode::Transport,
                encr: "CHACHA20_POLY1305".into(),
                esn: true,
                local_ts: vec![selector(local)],
                remote_ts: vec![selector(remote)],
                inbound: SaTraffic {
                    spi: EspSpi(0xc1a2_b3c4),
                    bytes: 1536,
                    packets: 12,
                    last_use: Some(now - 610),
                },
                outbound: SaTraffic {
                    spi: EspSpi(0x0000_5e6f),
                    bytes: 5 * 1024 * 1024,
                    packets: 4096,
                    last_use: None,
                },
                installed_at: now - 310,
                rekey_at: Some(now + 2430),
                expire_at: Some(now + 3030),
            }],
        }];
        let certs = vec![CertReport {
            file: "/var/lib/iiptran/cert.pem".into(),
            subject: "CN=n1.vn.example".into(),
            identities: vec!["n1.vn.example".into(), "192.0.2.1".into()],
            issuer: "CN=VN CA".into(),
            serial: "3f2a9c".into(),
            not_before: now - 86_430,
            not_after: now + 29 * 86_400 + 30,
            fingerprint: "ab".repeat(32),
            key_type: "ed25519".into(),
            renewal: None,
            crl: None,
        }];
        let transition = |ago: u64, from: &str, to: &str, cause: &str| TransitionReport {
            at: now - ago,
            from: from.into(),
            to: to.into(),
            cause: cause.into(),
        };
        let history = vec![
            transition(7220, "established", "removed", "daemon stopped"),
            transition(320, "configured", "connecting", "start"),
            transition(
                310,
                "connecting",
                "established",
                "child SAs installed and link up",
            ),
        ];
        Self {
            status,
            neighbors,
            sas,
            certs,
            history,
        }
    }
}

/// Answers with the fixture; records the actions it is asked for. Only neighbor `n2`
/// exists.
pub struct TestHandler {
    pub fixture: Fixture,
    pub actions: Mutex<Vec<String>>,
}

impl TestHandler {
    fn known(name: &str) -> Result<(), ControlError> {
        if name == "n2" {
            Ok(())
        } else {
            Err(ControlError::new(
                ErrorKind::NotFound,
                format!("no neighbor {name:?}"),
            ))
        }
    }

    fn act(&self, action: String, name: &str) -> Result<ActionReport, ControlError> {
        Self::known(name)?;
        self.actions.lock().unwrap().push(action.clone());
        Ok(ActionReport { message: action })
    }
}

impl ControlHandler for TestHandler {
    async fn status(&self) -> Result<StatusReport, ControlError> {
        Ok(self.fixture.status.clone())
    }
    async fn list_neighbors(&self) -> Result<Vec<NeighborReport>, ControlError> {
        Ok(self.fixture.neighbors.clone())
    }
    async fn list_sas(&self) -> Result<Vec<IkeSaReport>, ControlError> {
        Ok(self.fixture.sas.clone())
    }
    async fn list_certs(&self) -> Result<Vec<CertReport>, ControlError> {
        Ok(self.fixture.certs.clone())
    }
    async fn initiate(&self, name: &str) -> Result<ActionReport, ControlError> {
        self.act(format!("initiating {name}"), name)
    }
    async fn terminate(&self, name: &str) -> Result<ActionReport, ControlError> {
        self.act(format!("terminating {name}"), name)
    }
    async fn rekey(&self, name: &str, ike: bool) -> Result<ActionReport, ControlError> {
        let what = if ike { "IKE SA" } else { "child SA" };
        self.act(format!("rekeying the {what} with {name}"), name)
    }
    async fn reload(&self) -> Result<ActionReport, ControlError> {
        self.actions.lock().unwrap().push("reload".into());
        Ok(ActionReport {
            message: "reloaded".into(),
        })
    }
    async fn history(&self, name: &str) -> Result<Vec<TransitionReport>, ControlError> {
        Self::known(name)?;
        Ok(self.fixture.history.clone())
    }
}

/// A control server on its own runtime thread; stopped and joined on drop.
pub struct Server {
    pub handler: Arc<TestHandler>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start(config: ServerConfig) -> Result<Self, BindError> {
        let handler = Arc::new(TestHandler {
            fixture: Fixture::new(unix_now()),
            actions: Mutex::new(Vec::new()),
        });
        let (bound_tx, bound_rx) = mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let served = handler.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                match ControlServer::bind(config) {
                    Ok(server) => {
                        bound_tx.send(Ok(())).unwrap();
                        let shutdown = async {
                            let _ = stopped.await;
                        };
                        server.run(served, shutdown).await.unwrap();
                    }
                    Err(e) => bound_tx.send(Err(e)).unwrap(),
                }
            });
        });
        match bound_rx.recv().unwrap() {
            Ok(()) => Ok(Self {
                handler,
                stop: Some(stop),
                thread: Some(thread),
            }),
            Err(e) => {
                thread.join().unwrap();
                Err(e)
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A client speaking raw lines, to send what `iiptranctl` never would.
pub struct RawClient {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl RawClient {
    pub fn connect(path: &Path) -> Self {
        let stream = UnixStream::connect(path).unwrap();
        // A bound on every read, so a server that never answers fails the test.
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Self { stream, reader }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next response, or `None` when the server closed the connection.
    pub fn response(&mut self) -> Option<Response> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => Some(serde_json::from_str(&line).unwrap()),
            Err(e) => panic!("reading a response: {e}"),
        }
    }

    pub fn ask(&mut self, line: &str) -> Response {
        // A server that refuses answers without reading and closes, which can fail the
        // write; its answer is still there to read.
        let _ = self.stream.write_all(format!("{line}\n").as_bytes());
        self.response()
            .expect("connection closed before a response")
    }
}
