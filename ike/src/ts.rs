//! Traffic selectors (RFC 7296 §3.13.1) and the IIPtran rule for which ones a child SA
//! may have.

use crate::iana::{IpProtocol, NotifyType};
use std::collections::HashSet;
use std::net::IpAddr;

/// One traffic selector: an address range, an IP protocol (0 = any) and a port range.
/// The selector type (IPv4 or IPv6 range) follows from the address family; both ends of
/// the range always have the same family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TrafficSelector {
    pub ip_protocol: u8,
    pub start_port: u16,
    pub end_port: u16,
    pub start_addr: IpAddr,
    pub end_addr: IpAddr,
}

impl TrafficSelector {
    /// The selector for exactly one address and protocol, all ports.
    pub fn exact(addr: IpAddr, protocol: IpProtocol) -> Self {
        Self {
            ip_protocol: protocol.0,
            start_port: 0,
            end_port: u16::MAX,
            start_addr: addr,
            end_addr: addr,
        }
    }

    /// Whether every packet `inner` selects is also selected by `self`. Malformed
    /// selectors (mixed families, reversed ranges) contain nothing.
    pub fn contains(&self, inner: &TrafficSelector) -> bool {
        let same_family = |a: &IpAddr, b: &IpAddr| a.is_ipv4() == b.is_ipv4();
        let well_formed = |ts: &TrafficSelector| {
            same_family(&ts.start_addr, &ts.end_addr)
                && ts.start_addr <= ts.end_addr
                && ts.start_port <= ts.end_port
        };
        well_formed(self)
            && well_formed(inner)
            && same_family(&self.start_addr, &inner.start_addr)
            && (self.ip_protocol == IpProtocol::ANY.0 || self.ip_protocol == inner.ip_protocol)
            && self.start_port <= inner.start_port
            && inner.end_port <= self.end_port
            && self.start_addr <= inner.start_addr
            && inner.end_addr <= self.end_addr
    }
}

/// Why a child SA's selectors or mode are refused.
#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
pub enum TsError {
    #[error("traffic selectors do not cover exactly the IIPtran tunnel between the endpoints")]
    Unacceptable,
    #[error("tunnel mode requested; IIPtran child SAs are transport mode only")]
    TunnelMode,
    #[error("tunnel endpoints {0} and {1} are of different address families")]
    MixedFamilies(IpAddr, IpAddr),
    #[error("no tunnel protocol configured")]
    NoProtocols,
}

impl TsError {
    /// The error notification that refuses the child SA.
    pub fn notify(&self) -> NotifyType {
        match self {
            TsError::TunnelMode => NotifyType::NO_PROPOSAL_CHOSEN,
            _ => NotifyType::TS_UNACCEPTABLE,
        }
    }
}

/// IIPtran's mode rule: a child SA is acceptable only in transport mode, i.e. when the
/// peer's message carried USE_TRANSPORT_MODE (a responder's answer without it means it
/// chose tunnel mode).
pub fn require_transport_mode(use_transport_mode: bool) -> Result<(), TsError> {
    if use_transport_mode {
        Ok(())
    } else {
        Err(TsError::TunnelMode)
    }
}

/// The only selectors an IIPtran child SA may have: the tunnel protocols (IPIP, and IPv6
/// encapsulation when configured) from exactly this node's tunnel endpoint to exactly the
/// peer's, all ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IiptranSelectors {
    local: IpAddr,
    remote: IpAddr,
    protocols: Vec<IpProtocol>,
}

impl IiptranSelectors {
    /// `protocols` are the encapsulations carried (e.g. `[IPIP]` or `[IPIP, IPV6]`);
    /// duplicates are dropped.
    pub fn new(local: IpAddr, remote: IpAddr, protocols: &[IpProtocol]) -> Result<Self, TsError> {
        if local.is_ipv4() != remote.is_ipv4() {
            return Err(TsError::MixedFamilies(local, remote));
        }
        let mut unique: Vec<IpProtocol> = Vec::with_capacity(protocols.len());
        for &p in protocols {
            if p == IpProtocol::ANY {
                return Err(TsError::NoProtocols);
            }
            if !unique.contains(&p) {
                unique.push(p);
            }
        }
        if unique.is_empty() {
            return Err(TsError::NoProtocols);
        }
        Ok(Self {
            local,
            remote,
            protocols: unique,
        })
    }

    pub fn local(&self) -> IpAddr {
        self.local
    }

    pub fn remote(&self) -> IpAddr {
        self.remote
    }

    pub fn protocols(&self) -> &[IpProtocol] {
        &self.protocols
    }

    fn exact_for(&self, addr: IpAddr) -> Vec<TrafficSelector> {
        self.protocols
            .iter()
            .map(|&p| TrafficSelector::exact(addr, p))
            .collect()
    }

    /// The (TSi, TSr) pair describing this tunnel from the point of view of the party in
    /// the given role: as initiator we are TSi.
    pub fn proposal(&self, we_are_initiator: bool) -> (Vec<TrafficSelector>, Vec<TrafficSelector>) {
        let (ours, theirs) = (self.exact_for(self.local), self.exact_for(self.remote));
        if we_are_initiator {
            (ours, theirs)
        } else {
            (theirs, ours)
        }
    }

    /// As responder (the peer initiated, so TSi is the peer's side): accepts when, for
    /// every tunnel protocol, some TSi entry contains the exact remote selector and some
    /// TSr entry contains the exact local one, and answers with exactly those. Containment
    /// per entry also handles RFC 7296 §2.9's leading packet selector: it is either one of
    /// the exact selectors or irrelevant.
    pub fn narrow_as_responder(
        &self,
        tsi: &[TrafficSelector],
        tsr: &[TrafficSelector],
    ) -> Result<(Vec<TrafficSelector>, Vec<TrafficSelector>), TsError> {
        let (want_i, want_r) = self.proposal(false);
        let covered = |offered: &[TrafficSelector], wanted: &[TrafficSelector]| {
            wanted.iter().all(|w| offered.iter().any(|o| o.contains(w)))
        };
        if covered(tsi, &want_i) && covered(tsr, &want_r) {
            Ok((want_i, want_r))
        } else {
            Err(TsError::Unacceptable)
        }
    }

    /// As initiator: the responder's answer must be exactly what we proposed, as sets.
    pub fn check_initiator_answer(
        &self,
        tsi: &[TrafficSelector],
        tsr: &[TrafficSelector],
    ) -> Result<(), TsError> {
        let (want_i, want_r) = self.proposal(true);
        let same = |got: &[TrafficSelector], want: &[TrafficSelector]| {
            got.iter().collect::<HashSet<_>>() == want.iter().collect::<HashSet<_>>()
        };
        if same(tsi, &want_i) && same(tsr, &want_r) {
            Ok(())
        } else {
            Err(TsError::Unacceptable)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L4: &str = "192.0.2.1";
    const R4: &str = "198.51.100.7";
    const L6: &str = "2001:db8::1";
    const R6: &str = "2001:db8:1::7";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn ts(proto: u8, ports: (u16, u16), start: &str, end: &str) -> TrafficSelector {
        TrafficSelector {
            ip_protocol: proto,
            start_port: ports.0,
            end_port: ports.1,
            start_addr: ip(start),
            end_addr: ip(end),
        }
    }

    fn host(proto: u8, addr: &str) -> TrafficSelector {
        ts(proto, (0, 65535), addr, addr)
    }

    fn ipip(local: &str, remote: &str) -> IiptranSelectors {
        IiptranSelectors::new(ip(local), ip(remote), &[IpProtocol::IPIP]).unwrap()
    }

    #[test]
    fn contains_table() {
        let exact = host(4, L4);
        let cases = [
            ("itself", host(4, L4), true),
            ("any protocol", host(0, L4), true),
            (
                "wider subnet",
                ts(4, (0, 65535), "192.0.2.0", "192.0.2.255"),
                true,
            ),
            (
                "everything v4",
                ts(0, (0, 65535), "0.0.0.0", "255.255.255.255"),
                true,
            ),
            ("other protocol", host(41, L4), false),
            ("other address", host(4, R4), false),
            (
                "range beside it",
                ts(4, (0, 65535), "192.0.2.2", "192.0.2.9"),
                false,
            ),
            ("ports restricted", ts(4, (0, 1023), L4, L4), false),
            ("ports from 1", ts(4, (1, 65535), L4, L4), false),
            ("opaque ports", ts(4, (65535, 0), L4, L4), false),
            (
                "reversed range",
                ts(4, (0, 65535), "192.0.2.255", "192.0.2.0"),
                false,
            ),
            (
                "v6 everything",
                ts(
                    0,
                    (0, 65535),
                    "::",
                    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                ),
                false,
            ),
            (
                "mixed family range",
                ts(0, (0, 65535), "0.0.0.0", "ffff::"),
                false,
            ),
        ];
        for (name, outer, expected) in cases {
            assert_eq!(outer.contains(&exact), expected, "{name}");
        }
    }

    #[test]
    fn proposal_puts_our_endpoint_on_our_side() {
        let sel =
            IiptranSelectors::new(ip(L4), ip(R4), &[IpProtocol::IPIP, IpProtocol::IPV6]).unwrap();
        let ours = vec![host(4, L4), host(41, L4)];
        let theirs = vec![host(4, R4), host(41, R4)];
        assert_eq!(sel.proposal(true), (ours.clone(), theirs.clone()));
        assert_eq!(sel.proposal(false), (theirs, ours));
    }

    #[test]
    fn new_rejects_bad_configurations() {
        assert_eq!(
            IiptranSelectors::new(ip(L4), ip(R6), &[IpProtocol::IPIP]),
            Err(TsError::MixedFamilies(ip(L4), ip(R6)))
        );
        assert_eq!(
            IiptranSelectors::new(ip(L4), ip(R4), &[]),
            Err(TsError::NoProtocols)
        );
        assert_eq!(
            IiptranSelectors::new(ip(L4), ip(R4), &[IpProtocol::ANY]),
            Err(TsError::NoProtocols)
        );
        let dup =
            IiptranSelectors::new(ip(L4), ip(R4), &[IpProtocol::IPIP, IpProtocol::IPIP]).unwrap();
        assert_eq!(dup.protocols(), [IpProtocol::IPIP]);
        assert_eq!((dup.local(), dup.remote()), (ip(L4), ip(R4)));
        assert_eq!(dup.proposal(true).0.len(), 1);
    }

    #[test]
    fn responder_narrowing_table() {
        // We are L4, the initiator is R4: TSi describes R4, TSr describes L4.
        let sel = ipip(L4, R4);
        let accept = Ok((vec![host(4, R4)], vec![host(4, L4)]));
        let reject = Err(TsError::Unacceptable);
        let net = |a: &str, b: &str| ts(0, (0, 65535), a, b);
        let cases: Vec<(&str, Vec<TrafficSelector>, Vec<TrafficSelector>, _)> = vec![
            (
                "exact",
                vec![host(4, R4)],
                vec![host(4, L4)],
                accept.clone(),
            ),
            (
                "any protocol",
                vec![host(0, R4)],
                vec![host(0, L4)],
                accept.clone(),
            ),
            (
                "wider subnets",
                vec![net("198.51.100.0", "198.51.100.255")],
                vec![net("192.0.2.0", "192.0.2.255")],
                accept.clone(),
            ),
            (
                "packet selector first, then the range",
                vec![ts(4, (0, 0), R4, R4), net("198.51.100.0", "198.51.100.255")],
                vec![ts(4, (0, 0), L4, L4), net("192.0.2.0", "192.0.2.255")],
                accept.clone(),
            ),
            (
                "several entries, one fits",
                vec![host(17, R4), host(4, "203.0.113.1"), host(4, R4)],
                vec![host(6, L4), host(4, L4)],
                accept.clone(),
            ),
            (
                "wrong protocol",
                vec![host(41, R4)],
                vec![host(41, L4)],
                reject.clone(),
            ),
            (
                "wrong protocol one side",
                vec![host(4, R4)],
                vec![host(17, L4)],
                reject.clone(),
            ),
            (
                "sides swapped",
                vec![host(4, L4)],
                vec![host(4, R4)],
                reject.clone(),
            ),
            (
                "wrong remote",
                vec![host(4, "198.51.100.8")],
                vec![host(4, L4)],
                reject.clone(),
            ),
            (
                "wrong local",
                vec![host(4, R4)],
                vec![host(4, "192.0.2.2")],
                reject.clone(),
            ),
            (
                "port restricted",
                vec![ts(4, (0, 1023), R4, R4)],
                vec![host(4, L4)],
                reject.clone(),
            ),
            ("empty TSi", vec![], vec![host(4, L4)], reject.clone()),
            ("empty TSr", vec![host(4, R4)], vec![], reject.clone()),
            (
                "IPv6 selectors for IPv4 tunnel",
                vec![host(4, R6)],
                vec![host(4, L6)],
                reject,
            ),
        ];
        for (name, tsi, tsr, expected) in cases {
            assert_eq!(sel.narrow_as_responder(&tsi, &tsr), expected, "{name}");
        }
    }

    #[test]
    fn responder_narrowing_ipv6_and_two_protocols() {
        let sel =
            IiptranSelectors::new(ip(L6), ip(R6), &[IpProtocol::IPIP, IpProtocol::IPV6]).unwrap();
        let want = (
            vec![host(4, R6), host(41, R6)],
            vec![host(4, L6), host(41, L6)],
        );
        let any6 = ts(
            0,
            (0, 65535),
            "::",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        );
        assert_eq!(sel.narrow_as_responder(&[any6], &[any6]), Ok(want.clone()));
        assert_eq!(
            sel.narrow_as_responder(&want.0, &want.1),
            Ok(want.clone()),
            "exact selectors"
        );
        assert_eq!(
            sel.narrow_as_responder(&[host(4, R6)], &[host(4, L6)]),
            Err(TsError::Unacceptable),
            "IPv6 encapsulation missing"
        );
        let any4 = ts(0, (0, 65535), "0.0.0.0", "255.255.255.255");
        assert_eq!(
            sel.narrow_as_responder(&[any4, host(4, R6), host(41, R6)], &[host(0, L6), any4]),
            Ok(want),
            "mixed families, the IPv6 entries fit"
        );
    }

    #[test]
    fn initiator_answer_table() {
        let sel =
            IiptranSelectors::new(ip(L4), ip(R4), &[IpProtocol::IPIP, IpProtocol::IPV6]).unwrap();
        let (i, r) = sel.proposal(true);
        let reversed = |v: &[TrafficSelector]| v.iter().rev().copied().collect::<Vec<_>>();
        let cases: Vec<(&str, Vec<TrafficSelector>, Vec<TrafficSelector>, bool)> = vec![
            ("as proposed", i.clone(), r.clone(), true),
            ("other order", reversed(&i), reversed(&r), true),
            ("one protocol missing", vec![host(4, L4)], r.clone(), false),
            ("wider TSr", i.clone(), vec![host(0, R4)], false),
            (
                "extra entry",
                [i.clone(), vec![host(17, L4)]].concat(),
                r.clone(),
                false,
            ),
            ("sides swapped", r.clone(), i.clone(), false),
            ("empty", vec![], vec![], false),
            (
                "port restricted",
                i.clone(),
                vec![ts(4, (0, 1), R4, R4), host(41, R4)],
                false,
            ),
        ];
        for (name, tsi, tsr, ok) in cases {
            let expected = if ok {
                Ok(())
            } else {
                Err(TsError::Unacceptable)
            };
            assert_eq!(sel.check_initiator_answer(&tsi, &tsr), expected, "{name}");
        }
    }

    #[test]
    fn tunnel_mode_is_refused_with_no_proposal_chosen() {
        assert_eq!(require_transport_mode(true), Ok(()));
        let err = require_transport_mode(false).unwrap_err();
        assert_eq!(err, TsError::TunnelMode);
        assert_eq!(err.notify(), NotifyType::NO_PROPOSAL_CHOSEN);
        assert_eq!(TsError::Unacceptable.notify(), NotifyType::TS_UNACCEPTABLE);
    }
}
