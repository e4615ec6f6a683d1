//! The data-plane objects of one neighbor, built from its configuration and its child
//! SAs: the virtual link, the two SAs of a pair, and the two policies.

use std::net::IpAddr;

use iiptran_ike::iana::EncrId;
use iiptran_ike::sa::{ChildSa, ChildSpis};
use iiptran_policy::config::Neighbor;
use iiptran_policy::store::{Direction as StoreDirection, KernelObject};
use iiptran_xfrm::{
    AeadAlg, DEFAULT_PRIORITY, DEFAULT_REPLAY_WINDOW, Direction, Error, IpPrefix, KeyMaterial,
    Lifetimes, Limits, LinkSpec, PolicySpec, Replay, SaId, SaSpec, Selector, Template, UdpEncap,
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

    /// The tunnel protocol the SAs select: IPIP unless the link carries only IPv6.
    fn protocol(&self) -> u8 {
        let protocols = self.neighbor.selectors.protocols();
        protocols
            .iter()
            .find(|p| p.0 == iiptran_xfrm::IPPROTO_IPIP)
            .or(protocols.first())
            .map_or(iiptran_xfrm::IPPROTO_IPIP, |p| p.0)
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
        let proto = self.protocol();
        let inbound = SaSpec {
            spi: child.spis.inbound,
            direction: Direction::In,
            src: remote,
            dst: local,
            selector: Selector::tunnel(remote, local, proto),
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
            selector: Selector::tunnel(local, remote, proto),
            key: KeyMaterial::from_keymat(alg, child.outbound.encr.expose())?,
            replay,
            lifetimes,
            encap,
            reqid: self.reqid,
            mark: None,
        };
        Ok([inbound, outbound])
    }

    /// The SAs of a pair, by the endpoints they are installed between.
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

    /// Outbound and inbound policy: IPIP between the endpoints must use the neighbor's SAs.
    pub fn policies(&self) -> [PolicySpec; 2] {
        let proto = self.protocol();
        let policy = |direction, src, dst| PolicySpec {
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
        [
            policy(Direction::Out, self.local, self.remote()),
            policy(Direction::In, self.remote(), self.local),
        ]
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
