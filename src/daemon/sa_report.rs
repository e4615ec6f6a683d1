//! `list-sas`: the engine's IKE SAs and child SAs, with the traffic the data plane
//! counted for each child SA.

use std::net::IpAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use iiptran_ike::config::{EspSuite, IkeSuite};
use iiptran_ike::sa::{ChildSaSnapshot, ChildSaState, IkeSaSnapshot, IkeSaState};
use iiptran_ike::ts::TrafficSelector;
use iiptran_xfrm::{Dataplane, SaId};

use super::runtime::Runtime;
use crate::control::protocol::{
    ChildSaReport, EspSpi, IkeSaReport, IkeSpi, IkeSuite as SuiteReport, Mode, SaTraffic,
    TrafficSelector as TsReport, UnixTime,
};

/// The Unix time of an instant of the engine's clock.
pub fn unix_of(at: Instant) -> UnixTime {
    let (now, wall) = (Instant::now(), SystemTime::now());
    let then = match at.checked_duration_since(now) {
        Some(ahead) => wall + ahead,
        None => wall - now.duration_since(at),
    };
    unix(then)
}

fn unix(t: SystemTime) -> UnixTime {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn ike_state(state: IkeSaState) -> &'static str {
    match state {
        IkeSaState::Connecting => "CONNECTING",
        IkeSaState::HalfOpen => "HALF_OPEN",
        IkeSaState::Established => "ESTABLISHED",
        IkeSaState::Duplicate => "DELETING",
    }
}

fn child_state(state: ChildSaState) -> &'static str {
    match state {
        ChildSaState::Installed => "INSTALLED",
        ChildSaState::Rekeyed => "REKEYED",
        ChildSaState::Deleting => "DELETING",
    }
}

/// `AES_GCM_16_256`: the transform name, and the key length when the transform has one.
fn encr_name(encr: impl std::fmt::Display, key_bits: Option<u16>) -> String {
    match key_bits {
        Some(bits) => format!("{encr}_{bits}"),
        None => encr.to_string(),
    }
}

fn ike_suite(s: &IkeSuite) -> SuiteReport {
    SuiteReport {
        encr: encr_name(s.encr, s.key_bits),
        prf: format!("PRF_{}", s.prf),
        dh: s.dh.to_string(),
    }
}

fn esp_name(s: &EspSuite) -> String {
    encr_name(s.encr, s.key_bits)
}

fn selectors(list: &[TrafficSelector]) -> Vec<TsReport> {
    list.iter()
        .map(|ts| TsReport {
            addr: ts.start_addr,
            prefix_len: prefix_len(ts.start_addr, ts.end_addr),
            protocol: ts.ip_protocol,
        })
        .collect()
}

/// The prefix length of an address range that is a prefix; IIPtran selectors are single
/// addresses, so any other range is shown by its first address and the full length.
fn prefix_len(start: IpAddr, end: IpAddr) -> u8 {
    let (start, end, bits) = match (start, end) {
        (IpAddr::V4(s), IpAddr::V4(e)) => (u128::from(u32::from(s)), u128::from(u32::from(e)), 32),
        (IpAddr::V6(s), IpAddr::V6(e)) => (u128::from(s), u128::from(e), 128),
        _ => return 0,
    };
    let host = start ^ end;
    let host_bits = 128 - host.leading_zeros();
    let is_prefix = host.count_ones() == host_bits && start & host == 0;
    let len = if is_prefix { bits - host_bits } else { bits };
    u8::try_from(len).unwrap_or(0)
}

impl<D: Dataplane> Runtime<D> {
    /// The neighbor an IKE SA belongs to: as recorded when it came up, else by the
    /// identity or the address of the peer.
    fn neighbor_of_snapshot(&self, sa: &IkeSaSnapshot) -> Option<String> {
        let name = self.neighbor_of_sa(sa.id);
        name.as_deref()
            .or_else(|| {
                self.engine
                    .policy()
                    .neighbor_of_peer(sa.remote_id.as_ref(), sa.remote.ip())
            })
            .map(str::to_owned)
    }

    pub(super) async fn sa_reports(&self) -> Vec<IkeSaReport> {
        let mut reports = Vec::new();
        for sa in self.engine.snapshot() {
            let name = self.neighbor_of_snapshot(&sa);
            let mut children = Vec::with_capacity(sa.children.len());
            for child in &sa.children {
                children.push(self.child_report(name.as_deref(), child).await);
            }
            let identity = |id: &Option<iiptran_ike::identity::Identity>| {
                id.as_ref()
                    .map_or_else(|| "%any".to_owned(), ToString::to_string)
            };
            reports.push(IkeSaReport {
                name: name.unwrap_or_else(|| sa.remote.ip().to_string()),
                id: u32::try_from(sa.id.0).unwrap_or(u32::MAX),
                state: ike_state(sa.state).to_owned(),
                spi_initiator: IkeSpi(sa.spi_i),
                spi_responder: IkeSpi(sa.spi_r),
                initiator: sa.initiator,
                suite: ike_suite(&sa.suite),
                local_identity: identity(&sa.local_id),
                remote_identity: identity(&sa.remote_id),
                local_addr: sa.local,
                remote_addr: sa.remote,
                established_at: sa.established.map(unix_of),
                rekey_at: sa.rekey_at.map(unix_of),
                expire_at: sa.expire_at.map(unix_of),
                child_sas: children,
            });
        }
        reports
    }

    async fn child_report(&self, neighbor: Option<&str>, child: &ChildSaSnapshot) -> ChildSaReport {
        let n = neighbor.and_then(|name| self.neighbors.get(name));
        let [inbound, outbound] = match n {
            Some(n) => self.objects(n).sa_ids(child.spis).map(Some),
            None => [None, None],
        };
        ChildSaReport {
            reqid: n.map_or(0, |n| n.reqid),
            state: child_state(child.state).to_owned(),
            mode: Mode::Transport,
            encr: esp_name(&child.suite),
            esn: child.suite.esn,
            local_ts: selectors(&child.ts_local),
            remote_ts: selectors(&child.ts_remote),
            inbound: self.traffic(inbound, child.spis.inbound).await,
            outbound: self.traffic(outbound, child.spis.outbound).await,
            installed_at: unix_of(child.established),
            rekey_at: child.rekey_at.map(unix_of),
            expire_at: Some(unix_of(child.expire_at)),
        }
    }

    /// What the data plane counted for an SA; nothing for one it does not hold.
    async fn traffic(&self, id: Option<SaId>, spi: u32) -> SaTraffic {
        let stats = match id {
            Some(id) => self.dataplane.sa_stats(id).await.ok(),
            None => None,
        };
        SaTraffic {
            spi: EspSpi(spi),
            bytes: stats.as_ref().map_or(0, |s| s.bytes),
            packets: stats.as_ref().map_or(0, |s| s.packets),
            last_use: stats.and_then(|s| s.last_used).map(unix),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn len(start: &str, end: &str) -> u8 {
        prefix_len(start.parse().unwrap(), end.parse().unwrap())
    }

    #[test]
    fn ranges_that_are_prefixes_show_their_length() {
        assert_eq!(len("192.0.2.1", "192.0.2.1"), 32);
        assert_eq!(len("10.1.0.0", "10.1.255.255"), 16);
        assert_eq!(len("0.0.0.0", "255.255.255.255"), 0);
        assert_eq!(len("2001:db8::", "2001:db8::ffff"), 112);
        assert_eq!(len("10.0.0.1", "10.0.0.254"), 32, "not a prefix");
        assert_eq!(len("10.0.0.0", "10.0.0.2"), 32, "not a prefix");
    }
}
