//! The control verbs: the [`ControlHandler`] the control server calls forwards each
//! request to the runtime task, which answers it from the engine and the adjacencies.

use std::time::Instant;

use iiptran_ike::sa::IkeSaId;
use iiptran_policy::adjacency::{Event as AdjEvent, State, Time};
use iiptran_xfrm::Dataplane;
use tokio::sync::{mpsc, oneshot};

use super::runtime::{ControlRequest, Runtime, spis_of};
use super::sa_report::unix_of;
use crate::control::protocol::{
    ActionReport, CertReport, Counts, IkeSaReport, LastError, LinkState, NeighborReport,
    StatusReport, Traffic, TransitionReport,
};
use crate::control::{Body, ControlError, ControlHandler, ErrorKind, Request};

/// Forwards control requests to the runtime task.
pub struct Handler {
    requests: mpsc::Sender<ControlRequest>,
}

impl Handler {
    pub fn new(requests: mpsc::Sender<ControlRequest>) -> Self {
        Self { requests }
    }

    async fn ask<T>(
        &self,
        request: Request,
        unwrap: impl FnOnce(Body) -> Option<T>,
    ) -> Result<T, ControlError> {
        let stopped = || ControlError::new(ErrorKind::Failed, "the daemon is stopping");
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(ControlRequest { request, reply })
            .await
            .map_err(|_| stopped())?;
        let body = answer.await.map_err(|_| stopped())??;
        unwrap(body).ok_or_else(|| ControlError::new(ErrorKind::Failed, "unexpected answer"))
    }

    async fn action(&self, request: Request) -> Result<ActionReport, ControlError> {
        self.ask(request, |b| match b {
            Body::Done(d) => Some(d),
            _ => None,
        })
        .await
    }
}

impl ControlHandler for Handler {
    async fn status(&self) -> Result<StatusReport, ControlError> {
        self.ask(Request::Status, |b| match b {
            Body::Status(s) => Some(s),
            _ => None,
        })
        .await
    }

    async fn list_neighbors(&self) -> Result<Vec<NeighborReport>, ControlError> {
        self.ask(Request::ListNeighbors, |b| match b {
            Body::Neighbors(n) => Some(n),
            _ => None,
        })
        .await
    }

    async fn list_sas(&self) -> Result<Vec<IkeSaReport>, ControlError> {
        self.ask(Request::ListSas, |b| match b {
            Body::Sas(s) => Some(s),
            _ => None,
        })
        .await
    }

    async fn list_certs(&self) -> Result<Vec<CertReport>, ControlError> {
        self.ask(Request::ListCerts, |b| match b {
            Body::Certs(c) => Some(c),
            _ => None,
        })
        .await
    }

    async fn initiate(&self, name: &str) -> Result<ActionReport, ControlError> {
        self.action(Request::Initiate { name: name.into() }).await
    }

    async fn terminate(&self, name: &str) -> Result<ActionReport, ControlError> {
        self.action(Request::Terminate { name: name.into() }).await
    }

    async fn rekey(&self, name: &str, ike: bool) -> Result<ActionReport, ControlError> {
        let name = name.into();
        self.action(Request::Rekey { name, ike }).await
    }

    async fn reload(&self) -> Result<ActionReport, ControlError> {
        self.action(Request::Reload).await
    }

    async fn history(&self, name: &str) -> Result<Vec<TransitionReport>, ControlError> {
        self.ask(Request::History { name: name.into() }, |b| match b {
            Body::History(h) => Some(h),
            _ => None,
        })
        .await
    }
}

fn unix(t: Time) -> u64 {
    t.0 / 1000
}

/// The adjacency states as `list-neighbors` names them.
fn state_name(state: State) -> &'static str {
    match state {
        State::Configured => "configured",
        State::Connecting => "connecting",
        State::Up => "established",
        State::Rekeying => "rekeying",
        State::Down { .. } => "backoff",
        State::Removed => "removed",
    }
}

fn done(message: impl Into<String>) -> Result<Body, ControlError> {
    Ok(Body::Done(ActionReport {
        message: message.into(),
    }))
}

impl<D: Dataplane> Runtime<D> {
    pub(super) async fn answer(&mut self, request: Request) -> Result<Body, ControlError> {
        match request {
            Request::Status => Ok(Body::Status(self.status())),
            Request::ListNeighbors => Ok(Body::Neighbors(self.neighbor_reports().await)),
            Request::ListSas => Ok(Body::Sas(self.sa_reports().await)),
            Request::ListCerts => self.certs().map(Body::Certs),
            Request::Initiate { name } => {
                self.known(&name)?;
                self.feed(&name, AdjEvent::Initiate).await;
                self.drain().await;
                done(format!("initiating {name}"))
            }
            Request::Terminate { name } => {
                self.known(&name)?;
                self.feed(&name, AdjEvent::Terminate).await;
                self.drain().await;
                done(format!("terminated {name}"))
            }
            Request::Rekey { name, ike } => self.rekey(&name, ike).await,
            Request::Reload => self
                .reload()
                .await
                .map(|m| Body::Done(ActionReport { message: m })),
            Request::History { name } => self.history(&name).map(Body::History),
        }
    }

    fn history(&self, name: &str) -> Result<Vec<TransitionReport>, ControlError> {
        self.known(name)?;
        let transitions = self
            .neighbors
            .get(name)
            .into_iter()
            .flat_map(|n| &n.adjacency.history().transitions);
        Ok(transitions
            .map(|t| TransitionReport {
                at: unix(t.at),
                from: state_name(t.from).to_owned(),
                to: state_name(t.to).to_owned(),
                cause: t.cause.clone(),
            })
            .collect())
    }

    /// The node's certificate chain and its CA, as configured in `[auth]`, with the
    /// renewal of the node's certificate and the CRLs in use.
    fn certs(&self) -> Result<Vec<CertReport>, ControlError> {
        let Some(files) = &self.config.auth else {
            return Ok(Vec::new());
        };
        let credentials = self.engine.policy().credentials();
        let reports = |path| {
            super::cert_report::reports(path, credentials)
                .map_err(|e| ControlError::new(ErrorKind::Failed, e))
        };
        let mut all = reports(&files.cert)?;
        if let Some(own) = all.first_mut() {
            own.renewal = credentials.renewal();
        }
        all.extend(reports(&files.ca)?);
        Ok(all)
    }

    fn known(&self, name: &str) -> Result<(), ControlError> {
        if self.neighbors.contains_key(name) {
            Ok(())
        } else {
            Err(ControlError::new(
                ErrorKind::NotFound,
                format!("no neighbor {name:?}"),
            ))
        }
    }

    async fn rekey(&mut self, name: &str, ike: bool) -> Result<Body, ControlError> {
        self.known(name)?;
        let Some(pair) = self.neighbors[name].adjacency.current() else {
            return Err(ControlError::new(
                ErrorKind::Failed,
                format!("{name} has no child SAs to rekey"),
            ));
        };
        let now = Instant::now();
        let sa = IkeSaId(pair.ike_sa);
        let started = if ike {
            self.engine.rekey_ike(now, sa)
        } else {
            self.engine.rekey_child(now, sa, spis_of(&pair))
        };
        if !started {
            return Err(ControlError::new(
                ErrorKind::Failed,
                "the SA cannot be rekeyed now",
            ));
        }
        if !ike {
            self.feed(name, AdjEvent::RekeyStarted).await;
        }
        self.drain().await;
        done(format!("rekeying {name}"))
    }

    fn status(&self) -> StatusReport {
        let up = self
            .neighbors
            .values()
            .filter(|n| matches!(n.adjacency.state(), State::Up | State::Rekeying))
            .count();
        let sas = self.engine.counts();
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        StatusReport {
            node: self.config.node.name.clone(),
            identity: self.config.node.identity.to_string(),
            endpoint: self.config.node.endpoint,
            data_plane: self.kind,
            uptime_secs: self.started.elapsed().as_secs(),
            counts: Counts {
                adjacencies_up: count(up),
                adjacencies_down: count(self.neighbors.len() - up),
                ike_sas: count(sas.established + sas.duplicate),
                child_sas: count(sas.installed_children),
                half_open: count(sas.connecting + sas.half_open),
            },
        }
    }

    async fn neighbor_reports(&self) -> Vec<NeighborReport> {
        let sas = self.engine.snapshot();
        let mut reports = Vec::with_capacity(self.neighbors.len());
        for (name, n) in &self.neighbors {
            let mut traffic = Traffic::default();
            let mut next_rekey = None;
            if let Some(pair) = n.adjacency.current() {
                let spis = spis_of(&pair);
                next_rekey = sas
                    .iter()
                    .filter(|s| s.id == IkeSaId(pair.ike_sa))
                    .flat_map(|s| &s.children)
                    .find(|c| c.spis == spis)
                    .and_then(|c| c.rekey_at)
                    .map(unix_of);
                let [inbound, outbound] = self.objects(n).sa_ids(spis);
                if let Ok(s) = self.dataplane.sa_stats(inbound).await {
                    traffic.bytes_in = s.bytes;
                    traffic.packets_in = s.packets;
                }
                if let Ok(s) = self.dataplane.sa_stats(outbound).await {
                    traffic.bytes_out = s.bytes;
                    traffic.packets_out = s.packets;
                }
            }
            let history = n.adjacency.history();
            reports.push(NeighborReport {
                name: name.to_string(),
                link: n.config.link.name.to_string(),
                link_state: if n.adjacency.link_up() {
                    LinkState::Up
                } else {
                    LinkState::Down
                },
                local_endpoint: self.config.node.endpoint,
                remote_endpoint: n.config.endpoint,
                identity: n.config.identity.to_string(),
                adjacency: state_name(n.adjacency.state()).to_owned(),
                last_established: history.last_established.map(unix),
                next_rekey,
                traffic,
                last_error: history.last_error.as_ref().map(|(at, message)| LastError {
                    at: unix(*at),
                    message: message.clone(),
                }),
            });
        }
        reports
    }
}
