//! The responder's child SA decision, on payloads no engine of ours would send.

use super::*;
use crate::config::EspSuite;
use crate::identity::Identity;
use crate::ts::TrafficSelector;
use std::net::IpAddr;

struct AcceptAll;

impl Policy for AcceptAll {
    fn peer(&self, _: &Identity, _: SocketAddr) -> Option<Arc<PeerConfig>> {
        None
    }

    fn narrow(
        &self,
        _: &PeerConfig,
        tsi: &[TrafficSelector],
        tsr: &[TrafficSelector],
    ) -> Result<(Vec<TrafficSelector>, Vec<TrafficSelector>), NotifyType> {
        Ok((tsi.to_vec(), tsr.to_vec()))
    }

    fn accept_narrowed(
        &self,
        _: &PeerConfig,
        _: &[TrafficSelector],
        _: &[TrafficSelector],
    ) -> Result<(), NotifyType> {
        Ok(())
    }
}

fn ipip(addr: &str) -> Vec<TrafficSelector> {
    let addr: IpAddr = addr.parse().unwrap();
    vec![TrafficSelector::exact(addr, crate::iana::IpProtocol::IPIP)]
}

/// A responder's established IKE SA with made-up keys.
fn responder(now: Instant) -> IkeSa {
    let local: SocketAddr = "192.0.2.2:500".parse().unwrap();
    let remote: SocketAddr = "192.0.2.1:500".parse().unwrap();
    let suite = IkeSuite::CHACHA_X25519;
    let mut sa = IkeSa::blank(IkeSaId(1), false, 1, 2, local, remote, suite, now);
    let shared = Secret::from_slice(&[7; 32]);
    let x = Exchanged {
        shared: &shared,
        ni: &[1; 32],
        nr: &[2; 32],
        spi_i: 1,
        spi_r: 2,
    };
    sa.keys = Some(IkeKeys::derive(&suite, &x, None, false, false).unwrap());
    sa.peer = Some(Arc::new(PeerConfig {
        local_id: Identity::Fqdn("bob.example".into()),
        local_auth: LocalAuth::Psk(Secret::from_slice(b"k")),
        remote_id: Identity::Fqdn("alice.example".into()),
        remote_auth: PeerAuth::Psk(Secret::from_slice(b"k")),
        ts_local: ipip("192.0.2.2").into(),
        ts_remote: ipip("192.0.2.1").into(),
    }));
    sa.phase = Phase::Established;
    sa
}

fn child_request(transport_mode: bool) -> Vec<Payload> {
    let mut payloads = vec![
        Payload::Sa(proposal::esp_proposals(&[EspSuite::CHACHA], 0x1234, None)),
        Payload::TsI(ipip("192.0.2.1")),
        Payload::TsR(ipip("192.0.2.2")),
    ];
    if transport_mode {
        payloads.push(notify(NotifyType::USE_TRANSPORT_MODE, Vec::new()));
    }
    payloads
}

/// Runs `f` on a responder's IKE SA with a context around it.
fn with_responder(f: impl FnOnce(&mut IkeSa, &mut Ctx<'_>)) {
    let now = Instant::now();
    let config = Config::default();
    let (mut transmits, mut events) = (VecDeque::new(), VecDeque::new());
    let mut ctx = Ctx {
        now,
        wall: SystemTime::UNIX_EPOCH,
        config: &config,
        suites: Arc::new(config.suites()),
        others_with_peer: false,
        policy: &AcceptAll,
        transmits: &mut transmits,
        events: &mut events,
        spawned: Vec::new(),
        handovers: Vec::new(),
    };
    f(&mut responder(now), &mut ctx);
}

#[test]
fn tunnel_mode_request_gets_no_child() {
    with_responder(|sa, ctx| {
        let refused = sa.answer_child(ctx, &child_request(false), None, &[1; 32], &[2; 32]);
        assert_eq!(refused.err(), Some(NotifyType::NO_PROPOSAL_CHOSEN));
        let (child, reply) = sa
            .answer_child(ctx, &child_request(true), None, &[1; 32], &[2; 32])
            .unwrap();
        assert_eq!(child.spis.outbound, 0x1234);
        assert_eq!(child.mode, crate::sa::Mode::Transport);
        assert!(has_notify(&reply, NotifyType::USE_TRANSPORT_MODE));
    });
}

#[test]
fn child_request_without_selectors_is_invalid_syntax() {
    with_responder(|sa, ctx| {
        let mut request = child_request(true);
        request.retain(|p| !matches!(p, Payload::TsR(_)));
        let refused = sa.answer_child(ctx, &request, None, &[1; 32], &[2; 32]);
        assert_eq!(refused.err(), Some(NotifyType::INVALID_SYNTAX));
    });
}
