//! The data-plane objects of one neighbor, built from its configuration and its child
//! SAs: the virtual link, the two SAs of a pair, and an in/out policy pair per tunnel
//! protocol (4 for IPv4 inner packets, 41 for IPv6 ones).

use std::net::IpAddr;

use iiptran_ike::iana::EncrId;
use iiptran_ike::sa::{ChildSa, ChildSpis};
use iiptran_policy::config::Neighbor;
use iiptran_policy::store::{Direction as StoreDirection, KernelObject};
use iiptran_xfrm::{
    AeadAlg, DEFAULT_PRIORITY, DEFAULT_REPLAY_WINDOW, Direction, Error, InnerFamilies, IpPrefix,
    KeyMaterial, Lifetimes, Limits, LinkSpec, PolicySpec, Replay, SaId, SaSpec, Selector, Template,
    UdpEncap,
};

/// The MTU a link gets when the configuration leaves it open: 1500 less the ESP-in-UDP
/// and IPIP overhead with room to spare.
const DEFAULT_MTU: u16 = 1400;
const IPPROTO_ESP: u8 = 50;

/// What one neighbor's objects are built from.
pub struct NeighborObjects<'a> {
    pub local: IpAddr,
    pub neighbor: &'a Neighbor,
    pub reqid: u32,
}

fn aead(child: &ChildSa) -> Result<AeadAlg, Error> {
    match (child.suite.encr, child.suite.key_bits) {
        (EncrId::CHACHA20_POLY1305, _) => Ok(AeadAlg::ChaCha20Poly1305),
        (EncrId::AES_GCM_16, Some(128)) => Ok(AeadAlg::AesGcm128),
        (EncrId::AES_GCM_16, Some(256)) => Ok(AeadAlg::AesGcm256),
        (encr, bits) => Err(Error::Unsupported(format!(
            "ESP transform {encr} ({bits:?} bits)"
        ))),
    }
}

impl NeighborObjects<'_> {
    fn remote(&self) -> IpAddr {
        self.neighbor.endpoint
    }

    /// The inner families the link carries, as configured; the engine accepts a child SA
    /// only with selectors for exactly their tunnel protocols.
    fn inner(&self) -> InnerFamilies {
        InnerFamilies::of_protocols(self.neighbor.selectors.protocols().iter().map(|p| p.0))
    }

    pub fn link(&self) -> Result<LinkSpec, Error> {
        let link = &self.neighbor.link;
        Ok(LinkSpec {
            name: link.name.to_string(),
            local: self.local,
            remote: self.remote(),
            addresses: link
                .addresses
                .iter()
                .map(|p| IpPrefix::new(p.addr, p.len))
                .collect::<Result<_, _>>()?,
            inner: self.inner(),
            mtu: link.mtu.unwrap_or(DEFAULT_MTU),
        })
    }

    /// Inbound and outbound SA of a negotiated pair.
    pub fn sas(&self, child: &ChildSa) -> Result<[SaSpec; 2], Error> {
        let alg = aead(child)?;
        let (local, remote) = (child.local.ip(), child.remote.ip());
        let encap = child.udp_encap.then_some(UdpEncap {
            src_port: child.local.port(),
            dst_port: child.remote.port(),
        });
        let lifetimes = Lifetimes {
            soft: Limits::default(),
            hard: Limits {
                time: Some(child.hard_lifetime),
                ..Limits::default()
            },
        };
        let replay = Replay {
            window: DEFAULT_REPLAY_WINDOW,
            esn: child.suite.esn,
        };
        let inbound = SaSpec {
            spi: child.spis.inbound,
            direction: Direction::In,
            src: remote,
            dst: local,
            selector: sa_selector(child, remote, local)?,
            key: KeyMaterial::from_keymat(alg, child.inbound.encr.expose())?,
            replay,
            lifetimes,
            encap: encap.map(|e| UdpEncap {
                src_port: e.dst_port,
                dst_port: e.src_port,
            }),
            reqid: self.reqid,
            mark: None,
        };
        let outbound = SaSpec {
            spi: child.spis.outbound,
            direction: Direction::Out,
            src: local,
            dst: remote,
            selector: sa_selector(child, local, remote)?,
            key: KeyMaterial::from_keymat(alg, child.outbound.encr.expose())?,
            replay,
            lifetimes,
            encap,
            reqid: self.reqid,
            mark: None,
        };
        Ok([inbound, outbound])
    }

    /// The SAs of a pair, inbound then outbound, by the endpoints they are installed
    /// between.
    pub fn sa_ids(&self, spis: ChildSpis) -> [SaId; 2] {
        [
            SaId {
                src: self.remote(),
                dst: self.local,
                spi: spis.inbound,
            },
            SaId {
                src: self.local,
                dst: self.remote(),
                spi: spis.outbound,
            },
        ]
    }

    /// An outbound and an inbound policy per tunnel protocol the link carries: that
    /// protocol between the endpoints must use the neighbor's SAs. Nothing else between
    /// them (IKE's UDP among it) is steered into ESP.
    pub fn policies(&self) -> Vec<PolicySpec> {
        let policy = |direction, src, dst, proto| PolicySpec {
            direction,
            selector: Selector::tunnel(src, dst, proto),
            template: Template {
                src,
                dst,
                reqid: self.reqid,
            },
            priority: DEFAULT_PRIORITY,
            mark: None,
        };
        self.inner()
            .protocols()
            .into_iter()
            .flat_map(|proto| {
                [
                    policy(Direction::Out, self.local, self.remote(), proto),
                    policy(Direction::In, self.remote(), self.local, proto),
                ]
            })
            .collect()
    }
}

/// The selector of a pair's SA from `src` to `dst`: the single tunnel protocol the child
/// SA's traffic selectors name, or every protocol when they name several (one SA pair
/// carries IPv4 and IPv6 inner packets; the policies tell which protocols enter it).
fn sa_selector(child: &ChildSa, src: IpAddr, dst: IpAddr) -> Result<Selector, Error> {
    let mut protocols: Vec<u8> = child.ts_local.iter().map(|ts| ts.ip_protocol).collect();
    protocols.sort_unstable();
    protocols.dedup();
    match protocols.as_slice() {
        [proto] => Ok(Selector::tunnel(src, dst, *proto)),
        [_, _, ..] => Ok(Selector::endpoints(src, dst)),
        [] => Err(Error::Invalid(
            "a child SA without traffic selectors".into(),
        )),
    }
}

/// How the store names an SA.
pub fn sa_object(id: &SaId) -> KernelObject {
    KernelObject::Sa {
        src: id.src,
        dst: id.dst,
        spi: id.spi,
        protocol: IPPROTO_ESP,
    }
}

/// How the store names a policy.
pub fn policy_object(p: &PolicySpec) -> KernelObject {
    KernelObject::Policy {
        src: p.selector.src.addr(),
        dst: p.selector.dst.addr(),
        protocol: p.selector.proto.unwrap_or(0),
        direction: match p.direction {
            Direction::In => StoreDirection::In,
            Direction::Out => StoreDirection::Out,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use iiptran_ike::config::EspSuite;
    use iiptran_ike::iana::IntegId;
    use iiptran_ike::sa::{EspKeys, IkeSaId, Mode};
    use iiptran_ike::secret::Secret;
    use iiptran_ike::ts::TrafficSelector;
    use iiptran_policy::config::Config;
    use iiptran_xfrm::{IPPROTO_IPIP, IPPROTO_IPV6, OWNED_REQIDS};

    use super::*;

    const A: &str = "192.0.2.1";
    const B: &str = "192.0.2.2";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Node a's configuration with neighbor b, the link's address and `inner` line given.
    fn config(address: &str, inner: &str) -> Config {
        let text = format!(
            "[node]\nname = \"a\"\nidentity = \"a.vn.example\"\nendpoint = \"{A}\"\n\
             [[neighbor]]\nname = \"b\"\nidentity = \"b.vn.example\"\nendpoint = \"{B}\"\n\
             psk = \"a pre-shared key long enough for the check\"\n{inner}\n\
             link = {{ name = \"vn-b\", address = \"{address}\" }}\n"
        );
        Config::parse(&text, "a.toml", Path::new(".")).unwrap()
    }

    /// A child SA between a and b whose selectors name `protocols`.
    fn child(protocols: &[u8]) -> ChildSa {
        let ts = |addr: &str| {
            protocols
                .iter()
                .map(|&p| TrafficSelector {
                    ip_protocol: p,
                    start_port: 0,
                    end_port: u16::MAX,
                    start_addr: ip(addr),
                    end_addr: ip(addr),
                })
                .collect()
        };
        let keys = |b: u8| EspKeys {
            encr: Secret::new(vec![b; 20]),
            integ: Secret::new(Vec::new()),
        };
        ChildSa {
            ike_sa: IkeSaId(1),
            spis: ChildSpis {
                inbound: 0xc000_0001,
                outbound: 0xc000_0002,
            },
            inbound: keys(1),
            outbound: keys(2),
            ts_local: ts(A),
            ts_remote: ts(B),
            suite: EspSuite {
                encr: EncrId::AES_GCM_16,
                key_bits: Some(128),
                integ: IntegId::NONE,
                esn: false,
            },
            mode: Mode::Transport,
            udp_encap: false,
            local: (ip(A), 500).into(),
            remote: (ip(B), 500).into(),
            hard_lifetime: Duration::from_secs(3600),
        }
    }

    fn objects(config: &Config) -> NeighborObjects<'_> {
        NeighborObjects {
            local: ip(A),
            neighbor: config.neighbor("b").unwrap(),
            reqid: *OWNED_REQIDS.start(),
        }
    }

    /// Direction, source and protocol of each policy.
    fn policy_summary(o: &NeighborObjects<'_>) -> Vec<(Direction, IpAddr, Option<u8>)> {
        o.policies()
            .iter()
            .map(|p| (p.direction, p.selector.src.addr(), p.selector.proto))
            .collect()
    }

    #[test]
    fn a_dual_stack_neighbor_gets_one_any_protocol_pair_and_policies_per_protocol() {
        let config = config("fd00::/127", "inner = [\"ipv6\", \"ipv4\"]");
        let o = objects(&config);
        let sas = o.sas(&child(&[IPPROTO_IPIP, IPPROTO_IPV6])).unwrap();
        for sa in &sas {
            sa.validate().unwrap();
            assert_eq!(sa.selector, Selector::endpoints(sa.src, sa.dst));
        }
        assert_eq!(
            policy_summary(&o),
            [
                (Direction::Out, ip(A), Some(IPPROTO_IPIP)),
                (Direction::In, ip(B), Some(IPPROTO_IPIP)),
                (Direction::Out, ip(A), Some(IPPROTO_IPV6)),
                (Direction::In, ip(B), Some(IPPROTO_IPV6)),
            ]
        );
        let recorded: Vec<KernelObject> = o.policies().iter().map(policy_object).collect();
        assert_eq!(recorded.len(), 4, "each policy is recorded on its own");
        assert!(
            recorded
                .iter()
                .all(|r| recorded.iter().filter(|o| *o == r).count() == 1)
        );
        assert_eq!(o.link().unwrap().inner, InnerFamilies::BOTH);
    }

    #[test]
    fn an_ipv4_only_neighbor_keeps_protocol_4_everywhere() {
        let config = config("10.255.0.0/31", "");
        let o = objects(&config);
        let sas = o.sas(&child(&[IPPROTO_IPIP])).unwrap();
        assert_eq!(
            sas[0].selector,
            Selector::tunnel(ip(B), ip(A), IPPROTO_IPIP)
        );
        assert_eq!(
            sas[1].selector,
            Selector::tunnel(ip(A), ip(B), IPPROTO_IPIP)
        );
        assert_eq!(
            policy_summary(&o),
            [
                (Direction::Out, ip(A), Some(IPPROTO_IPIP)),
                (Direction::In, ip(B), Some(IPPROTO_IPIP)),
            ]
        );
        assert_eq!(o.link().unwrap().inner, InnerFamilies::IPV4);
        assert!(o.sas(&child(&[])).is_err());
    }
}
