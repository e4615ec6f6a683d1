//! Translation between the model and XFRM netlink structures.

use std::net::IpAddr;
use std::time::{Duration, UNIX_EPOCH};

use netlink_packet_xfrm::constants::*;
use netlink_packet_xfrm::{
    Address, AlgAead, EncapTmpl, Id, Lifetime, LifetimeConfig, Mark as XMark, ReplayEsn,
    Selector as XSelector, UserPolicyId, UserPolicyInfo, UserSaId, UserSaInfo, UserTemplate,
    XfrmAttrs,
};

use crate::model::{
    AeadAlg, Direction, IpPrefix, KeyMaterial, Lifetimes, Limits, Mark, PolicySpec, SaId, SaSpec,
    SaStats, Selector, Template,
};

pub const IPPROTO_ESP: u8 = 50;
/// Replay bitmaps above this many bits are refused by the kernel (XFRMA_REPLAY_ESN_MAX).
const REPLAY_ESN_MAX_BITS: u32 = 4096;

pub fn family(ip: IpAddr) -> u16 {
    if ip.is_ipv4() {
        libc::AF_INET as u16
    } else {
        libc::AF_INET6 as u16
    }
}

fn addr(a: &Address, family: u16) -> IpAddr {
    if family == libc::AF_INET6 as u16 {
        IpAddr::V6(a.to_ipv6())
    } else {
        IpAddr::V4(a.to_ipv4())
    }
}

pub fn selector(s: &Selector) -> XSelector {
    let port = |p: Option<u16>| p.map_or((0, 0), |p| (p, 0xffff));
    let (sport, sport_mask) = port(s.src_port);
    let (dport, dport_mask) = port(s.dst_port);
    XSelector {
        daddr: Address::from_ip(&s.dst.addr()),
        saddr: Address::from_ip(&s.src.addr()),
        dport,
        dport_mask,
        sport,
        sport_mask,
        family: family(s.src.addr()),
        prefixlen_d: s.dst.prefix_len(),
        prefixlen_s: s.src.prefix_len(),
        proto: s.proto.unwrap_or(0),
        ifindex: 0,
        user: 0,
    }
}

fn from_selector(s: &XSelector) -> Option<Selector> {
    let port = |p: u16, mask: u16| (mask != 0).then_some(p);
    Some(Selector {
        src: IpPrefix::new(addr(&s.saddr, s.family), s.prefixlen_s).ok()?,
        dst: IpPrefix::new(addr(&s.daddr, s.family), s.prefixlen_d).ok()?,
        proto: (s.proto != 0).then_some(s.proto),
        src_port: port(s.sport, s.sport_mask),
        dst_port: port(s.dport, s.dport_mask),
    })
}

fn limits(l: &Limits) -> (u64, u64, u64) {
    (
        l.bytes.unwrap_or(XFRM_INF),
        l.packets.unwrap_or(XFRM_INF),
        l.time.map_or(0, |t| t.as_secs().max(1)),
    )
}

pub fn lifetime_cfg(l: &Lifetimes) -> LifetimeConfig {
    let (soft_bytes, soft_packets, soft_secs) = limits(&l.soft);
    let (hard_bytes, hard_packets, hard_secs) = limits(&l.hard);
    LifetimeConfig {
        soft_byte_limit: soft_bytes,
        hard_byte_limit: hard_bytes,
        soft_packet_limit: soft_packets,
        hard_packet_limit: hard_packets,
        soft_add_expires_seconds: soft_secs,
        hard_add_expires_seconds: hard_secs,
        soft_use_expires_seconds: 0,
        hard_use_expires_seconds: 0,
    }
}

/// The kernel's AEAD name for a transform.
pub fn aead_name(alg: AeadAlg) -> &'static str {
    match alg {
        AeadAlg::ChaCha20Poly1305 => "rfc7539esp(chacha20,poly1305)",
        AeadAlg::AesGcm128 | AeadAlg::AesGcm256 => "rfc4106(gcm(aes))",
    }
}

/// XFRMA_ALG_AEAD: the key with its salt appended, its length in bits, a 128-bit ICV.
pub fn alg_aead(key: &KeyMaterial) -> AlgAead {
    let mut alg_name = [0u8; 64];
    let name = aead_name(key.alg()).as_bytes();
    alg_name[..name.len()].copy_from_slice(name);
    let mut alg_key = key.key().to_vec();
    alg_key.extend_from_slice(key.salt());
    AlgAead {
        alg_name,
        alg_key_len: (alg_key.len() * 8) as u32,
        alg_icv_len: (crate::model::ICV_LEN * 8) as u32,
        alg_key,
    }
}

pub fn sa_id(id: SaId) -> UserSaId {
    UserSaId {
        daddr: Address::from_ip(&id.dst),
        spi: id.spi,
        family: family(id.dst),
        proto: IPPROTO_ESP,
    }
}

/// NEWSA/UPDSA body: transport-mode ESP with the AEAD, replay state and options.
pub fn sa_info(sa: &SaSpec) -> (UserSaInfo, Vec<XfrmAttrs>) {
    let info = UserSaInfo {
        selector: selector(&sa.selector),
        id: Id {
            daddr: Address::from_ip(&sa.dst),
            spi: sa.spi,
            proto: IPPROTO_ESP,
        },
        saddr: Address::from_ip(&sa.src),
        lifetime_cfg: lifetime_cfg(&sa.lifetimes),
        reqid: sa.reqid,
        family: family(sa.dst),
        mode: XFRM_MODE_TRANSPORT,
        // The window travels in XFRMA_REPLAY_ESN_VAL, which allows more than 255 packets.
        replay_window: 0,
        flags: if sa.replay.esn { XFRM_STATE_ESN } else { 0 },
        ..Default::default()
    };
    let mut nlas = vec![XfrmAttrs::EncryptionAlgAead(alg_aead(&sa.key))];
    // ESN needs a non-zero window even on outbound SAs.
    let window = match (sa.replay.window, sa.replay.esn) {
        (0, true) => 32,
        (w, _) => w.min(REPLAY_ESN_MAX_BITS),
    };
    if window > 0 {
        let bmp_len = window.div_ceil(32);
        nlas.push(XfrmAttrs::ReplayStateEsn(ReplayEsn {
            bmp_len,
            replay_window: window,
            bmp: vec![0; bmp_len as usize],
            ..Default::default()
        }));
    }
    if let Some(e) = sa.encap {
        nlas.push(XfrmAttrs::EncapsulationTemplate(EncapTmpl {
            encap_type: UDP_ENCAP_ESPINUDP,
            encap_sport: e.src_port,
            encap_dport: e.dst_port,
            encap_oa: Address::default(),
        }));
    }
    if let Some(m) = sa.mark {
        nlas.push(XfrmAttrs::Mark(XMark {
            value: m.value,
            mask: m.mask,
        }));
    }
    (info, nlas)
}

/// Counters of a GETSA reply.
pub fn stats(info: &UserSaInfo) -> SaStats {
    let cur: &Lifetime = &info.lifetime_cur;
    let at = |secs: u64| (secs != 0).then(|| UNIX_EPOCH + Duration::from_secs(secs));
    SaStats {
        bytes: cur.bytes,
        packets: cur.packets,
        replay_drops: u64::from(info.stats.replay),
        auth_failures: u64::from(info.stats.integrity_failed),
        installed: at(cur.add_time),
        last_used: at(cur.use_time),
    }
}

pub fn sa_id_of(info: &UserSaInfo) -> SaId {
    SaId {
        src: addr(&info.saddr, info.family),
        dst: addr(&info.id.daddr, info.family),
        spi: info.id.spi,
    }
}

fn dir(d: Direction) -> u8 {
    match d {
        Direction::In => XFRM_POLICY_IN,
        Direction::Out => XFRM_POLICY_OUT,
    }
}

fn infinite() -> LifetimeConfig {
    lifetime_cfg(&Lifetimes::default())
}

/// NEWPOLICY body: one transport-mode ESP template, level required.
pub fn policy_info(p: &PolicySpec) -> (UserPolicyInfo, Vec<XfrmAttrs>) {
    let info = UserPolicyInfo {
        selector: selector(&p.selector),
        lifetime_cfg: infinite(),
        lifetime_cur: Lifetime::default(),
        priority: p.priority,
        index: 0,
        direction: dir(p.direction),
        action: XFRM_POLICY_ALLOW,
        flags: 0,
        share: 0,
    };
    let tmpl = UserTemplate {
        id: Id {
            daddr: Address::from_ip(&p.template.dst),
            spi: 0,
            proto: IPPROTO_ESP,
        },
        family: family(p.template.dst),
        saddr: Address::from_ip(&p.template.src),
        reqid: p.template.reqid,
        mode: XFRM_MODE_TRANSPORT,
        share: 0,
        // 0 = required: without an SA the packet is dropped, never passed in clear.
        optional: 0,
        aalgos: u32::MAX,
        ealgos: u32::MAX,
        calgos: u32::MAX,
    };
    let mut nlas = vec![XfrmAttrs::Template(vec![tmpl])];
    if let Some(m) = p.mark {
        nlas.push(XfrmAttrs::Mark(XMark {
            value: m.value,
            mask: m.mask,
        }));
    }
    (info, nlas)
}

pub fn policy_id(id: &crate::model::PolicyId) -> (UserPolicyId, Vec<XfrmAttrs>) {
    let pid = UserPolicyId {
        selector: selector(&id.selector),
        index: 0,
        direction: dir(id.direction),
    };
    let nlas = id
        .mark
        .map(|m| {
            XfrmAttrs::Mark(XMark {
                value: m.value,
                mask: m.mask,
            })
        })
        .into_iter()
        .collect();
    (pid, nlas)
}

/// A dumped policy, if the model can express it (in/out, one ESP transport template).
pub fn from_policy(info: &UserPolicyInfo, nlas: &[XfrmAttrs]) -> Option<PolicySpec> {
    let direction = match info.direction {
        XFRM_POLICY_IN => Direction::In,
        XFRM_POLICY_OUT => Direction::Out,
        _ => return None,
    };
    let tmpl = nlas.iter().find_map(|a| match a {
        XfrmAttrs::Template(t) if t.len() == 1 => t.first(),
        _ => None,
    })?;
    if tmpl.id.proto != IPPROTO_ESP || tmpl.mode != XFRM_MODE_TRANSPORT {
        return None;
    }
    let mark = nlas.iter().find_map(|a| match a {
        XfrmAttrs::Mark(m) => Some(Mark {
            value: m.value,
            mask: m.mask,
        }),
        _ => None,
    });
    Some(PolicySpec {
        direction,
        selector: from_selector(&info.selector)?,
        template: Template {
            src: addr(&tmpl.saddr, tmpl.family),
            dst: addr(&tmpl.id.daddr, tmpl.family),
            reqid: tmpl.reqid,
        },
        priority: info.priority,
        mark,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{IPPROTO_IPIP, OWNED_REQIDS, Replay, UdpEncap};

    fn spec(alg: AeadAlg, esn: bool) -> SaSpec {
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        SaSpec {
            spi: 0xa01,
            direction: Direction::Out,
            src: a,
            dst: b,
            selector: Selector::tunnel(a, b, IPPROTO_IPIP),
            key: KeyMaterial::from_keymat(alg, &vec![7; alg.key_len() + 4]).unwrap(),
            replay: Replay { window: 1024, esn },
            lifetimes: Lifetimes {
                soft: Limits {
                    time: Some(Duration::from_secs(3000)),
                    bytes: None,
                    packets: Some(1 << 20),
                },
                hard: Limits {
                    time: Some(Duration::from_secs(3600)),
                    bytes: None,
                    packets: None,
                },
            },
            encap: Some(UdpEncap {
                src_port: 4500,
                dst_port: 4500,
            }),
            reqid: *OWNED_REQIDS.start(),
            mark: None,
        }
    }

    #[test]
    fn sa_message_carries_transport_mode_ipip_selector_and_aead_in_bits() {
        let (info, nlas) = sa_info(&spec(AeadAlg::ChaCha20Poly1305, true));
        assert_eq!(info.mode, XFRM_MODE_TRANSPORT);
        assert_eq!(
            (
                info.selector.proto,
                info.selector.prefixlen_s,
                info.selector.prefixlen_d
            ),
            (4, 32, 32)
        );
        assert_eq!(
            (info.id.spi, info.id.proto, info.family),
            (0xa01, 50, libc::AF_INET as u16)
        );
        assert_eq!(info.flags & XFRM_STATE_ESN, XFRM_STATE_ESN);
        assert_eq!(info.lifetime_cfg.soft_add_expires_seconds, 3000);
        assert_eq!(info.lifetime_cfg.hard_byte_limit, XFRM_INF);
        assert_eq!(info.lifetime_cfg.soft_packet_limit, 1 << 20);
        let aead = nlas.iter().find_map(|a| {
            if let XfrmAttrs::EncryptionAlgAead(x) = a {
                Some(x)
            } else {
                None
            }
        });
        let aead = aead.unwrap();
        assert!(
            aead.alg_name
                .starts_with(b"rfc7539esp(chacha20,poly1305)\0")
        );
        assert_eq!(
            (aead.alg_key_len, aead.alg_icv_len, aead.alg_key.len()),
            (288, 128, 36)
        );
        let esn = nlas.iter().find_map(|a| {
            if let XfrmAttrs::ReplayStateEsn(r) = a {
                Some(r)
            } else {
                None
            }
        });
        assert_eq!(esn.map(|r| (r.replay_window, r.bmp_len)), Some((1024, 32)));
        assert!(
            nlas.iter()
                .any(|a| matches!(a, XfrmAttrs::EncapsulationTemplate(e)
            if e.encap_type == UDP_ENCAP_ESPINUDP && e.encap_dport == 4500))
        );
        let (_, gcm) = sa_info(&spec(AeadAlg::AesGcm128, false));
        let Some(XfrmAttrs::EncryptionAlgAead(g)) = gcm.first() else {
            panic!("AEAD first")
        };
        assert!(g.alg_name.starts_with(b"rfc4106(gcm(aes))\0"));
        assert_eq!(g.alg_key_len, 160);
    }

    #[test]
    fn policy_round_trips_through_the_kernel_structures() {
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let p = PolicySpec {
            direction: Direction::In,
            selector: Selector::tunnel(b, a, IPPROTO_IPIP),
            template: Template {
                src: b,
                dst: a,
                reqid: *OWNED_REQIDS.start(),
            },
            priority: crate::model::DEFAULT_PRIORITY,
            mark: Some(Mark {
                value: 7,
                mask: 0xff,
            }),
        };
        let (info, nlas) = policy_info(&p);
        let Some(XfrmAttrs::Template(t)) = nlas.first() else {
            panic!("template first")
        };
        assert_eq!(
            (t[0].mode, t[0].optional, t[0].id.proto),
            (XFRM_MODE_TRANSPORT, 0, 50)
        );
        assert_eq!(from_policy(&info, &nlas), Some(p));
    }

    #[test]
    fn ipv6_endpoints_fill_every_address_with_family_inet6() {
        let (a, b): (IpAddr, IpAddr) = (
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        );
        let sa = SaSpec {
            src: a,
            dst: b,
            selector: Selector::tunnel(a, b, IPPROTO_IPIP),
            ..spec(AeadAlg::AesGcm128, false)
        };
        let (info, _) = sa_info(&sa);
        let inet6 = libc::AF_INET6 as u16;
        assert_eq!((info.family, info.selector.family), (inet6, inet6));
        assert_eq!(
            (
                info.selector.prefixlen_s,
                info.selector.prefixlen_d,
                info.selector.proto
            ),
            (128, 128, 4)
        );
        assert_eq!(info.saddr, Address::from_ip(&a));
        assert_eq!(
            info.id.daddr.to_ipv6(),
            "2001:db8::2".parse::<std::net::Ipv6Addr>().unwrap()
        );
        assert_eq!(sa_id_of(&info), sa.id());
        assert_eq!(sa_id(sa.id()).family, inet6);
        let p = PolicySpec {
            direction: Direction::Out,
            selector: Selector::tunnel(a, b, crate::model::IPPROTO_IPV6),
            template: Template {
                src: a,
                dst: b,
                reqid: *OWNED_REQIDS.start(),
            },
            priority: crate::model::DEFAULT_PRIORITY,
            mark: None,
        };
        let (pinfo, nlas) = policy_info(&p);
        let Some(XfrmAttrs::Template(t)) = nlas.first() else {
            panic!("template first")
        };
        assert_eq!((pinfo.selector.family, t[0].family), (inet6, inet6));
        assert_eq!(from_policy(&pinfo, &nlas), Some(p));
    }

    #[test]
    fn an_sa_carrying_both_families_has_the_any_protocol_selector() {
        let base = spec(AeadAlg::AesGcm128, false);
        let sa = SaSpec {
            selector: Selector::endpoints(base.src, base.dst),
            ..base
        };
        let (info, _) = sa_info(&sa);
        assert_eq!(
            (
                info.selector.proto,
                info.selector.prefixlen_s,
                info.selector.prefixlen_d
            ),
            (0, 32, 32)
        );
        assert_eq!(from_selector(&info.selector), Some(sa.selector));
    }
}
