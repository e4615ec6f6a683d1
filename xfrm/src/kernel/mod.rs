//! The Linux kernel data plane: SAs and policies through XFRM netlink, `ipip`, `sit` and
//! `ip6tnl` virtual links through rtnetlink, ACQUIRE and EXPIRE from the XFRM multicast
//! groups.
//!
//! To receive ESP in UDP (NAT-T SAs) the kernel needs the IKE port-4500 socket marked
//! with [`enable_espinudp`]; ESP then never reaches userspace, IKE (non-ESP marker)
//! still does.

mod convert;
mod links;
pub mod netlink;

use std::net::IpAddr;
use std::os::fd::AsRawFd;

use futures_util::StreamExt;
use netlink_packet_core::NetlinkPayload;
use netlink_packet_xfrm::constants::*;
use netlink_packet_xfrm::monitor::{AcquireMessage, ExpireMessage};
use netlink_packet_xfrm::policy::{DelGetMessage as PolicyDelGet, ModifyMessage as PolicyModify};
use netlink_packet_xfrm::state::{
    AllocSpiMessage, DelGetMessage as SaDelGet, GetDumpMessage, ModifyMessage as SaModify,
};
use netlink_packet_xfrm::{Address, Id, UserSaInfo, UserSpiInfo, XfrmAttrs, XfrmMessage};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::dataplane::{Dataplane, Error, Result};
use crate::model::{
    DataplaneEvent, LinkSpec, OWNED_REQIDS, PolicyId, PolicySpec, SaId, SaSpec, SaStats,
};
use convert::IPPROTO_ESP;
use links::Links;
use netlink::{Msg, NetlinkXfrm, Notifications, XfrmSocket};

/// Lowest SPI the kernel may allocate (1-255 are reserved, RFC 4303 §2.1).
const SPI_MIN: u32 = 0x100;

/// Marks a UDP socket as an ESP-in-UDP (RFC 3948) receiver for the kernel.
pub fn enable_espinudp(socket: &impl AsRawFd) -> std::io::Result<()> {
    let kind = libc::c_int::from(UDP_ENCAP_ESPINUDP);
    // SAFETY: setsockopt reads an int from a valid pointer of the given length.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_ENCAP,
            (&kind as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The kernel backend. Must be created inside a tokio runtime, in the network namespace
/// it is to manage.
pub struct KernelDataplane<S: XfrmSocket = NetlinkXfrm> {
    xfrm: S,
    links: Links,
    events: broadcast::Sender<DataplaneEvent>,
    monitor: JoinHandle<()>,
}

impl KernelDataplane<NetlinkXfrm> {
    pub fn open() -> Result<Self> {
        let (xfrm, notifications) = NetlinkXfrm::open()?;
        let (events, _) = broadcast::channel(256);
        let monitor = tokio::spawn(monitor(notifications, events.clone()));
        Ok(Self {
            xfrm,
            links: Links::open(events.clone())?,
            events,
            monitor,
        })
    }
}

impl<S: XfrmSocket> Drop for KernelDataplane<S> {
    fn drop(&mut self) {
        self.monitor.abort();
    }
}

async fn monitor(mut notifications: Notifications, events: broadcast::Sender<DataplaneEvent>) {
    while let Some((msg, _)) = notifications.next().await {
        let NetlinkPayload::InnerMessage(Msg(m)) = msg.payload else {
            continue;
        };
        let event = match m {
            XfrmMessage::Acquire(AcquireMessage { acquire, nlas }) => {
                let reqid = nlas.iter().find_map(|a| match a {
                    XfrmAttrs::Template(t) => t.first().map(|t| t.reqid),
                    _ => None,
                });
                let fam = acquire.policy.selector.family;
                let ip = |a: &Address| {
                    if fam == libc::AF_INET6 as u16 {
                        IpAddr::V6(a.to_ipv6())
                    } else {
                        IpAddr::V4(a.to_ipv4())
                    }
                };
                DataplaneEvent::Acquire {
                    src: ip(&acquire.saddr),
                    dst: ip(&acquire.id.daddr),
                    reqid: reqid.unwrap_or(0),
                }
            }
            XfrmMessage::Expire(ExpireMessage { expire }) => {
                let sa = convert::sa_id_of(&expire.state);
                let reqid = expire.state.reqid;
                if expire.hard != 0 {
                    DataplaneEvent::HardExpire { sa, reqid }
                } else {
                    DataplaneEvent::SoftExpire { sa, reqid }
                }
            }
            _ => continue,
        };
        tracing::debug!(?event, "kernel data-plane event");
        let _ = events.send(event);
    }
}

impl<S: XfrmSocket> KernelDataplane<S> {
    async fn dump_sas(&self) -> Result<Vec<UserSaInfo>> {
        let replies = self
            .xfrm
            .request(
                "GETSA dump",
                XfrmMessage::GetDumpSa(GetDumpMessage::default()),
                true,
            )
            .await?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                XfrmMessage::AddSa(SaModify { user_sa_info, .. }) => Some(user_sa_info),
                _ => None,
            })
            .collect())
    }

    async fn dump_policies(&self) -> Result<Vec<(PolicyModify, Option<PolicySpec>)>> {
        let replies = self
            .xfrm
            .request(
                "GETPOLICY dump",
                XfrmMessage::GetPolicy(PolicyDelGet::default()),
                true,
            )
            .await?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                XfrmMessage::AddPolicy(p) => {
                    let spec = convert::from_policy(&p.user_policy_info, &p.nlas);
                    Some((p, spec))
                }
                _ => None,
            })
            .collect())
    }

    async fn modify_sa(&self, sa: &SaSpec, update: bool) -> Result<()> {
        sa.validate()?;
        let (user_sa_info, nlas) = convert::sa_info(sa);
        let body = SaModify { user_sa_info, nlas };
        let (op, msg) = if update {
            ("UPDSA", XfrmMessage::UpdateSa(body))
        } else {
            ("NEWSA", XfrmMessage::AddSa(body))
        };
        self.xfrm.request(op, msg, false).await.map(drop)
    }
}

impl<S: XfrmSocket> Dataplane for KernelDataplane<S> {
    fn outlives_process(&self) -> bool {
        true
    }

    async fn allocate_spi(&self, src: IpAddr, dst: IpAddr, reqid: u32) -> Result<u32> {
        let info = UserSaInfo {
            id: Id {
                daddr: Address::from_ip(&dst),
                spi: 0,
                proto: IPPROTO_ESP,
            },
            saddr: Address::from_ip(&src),
            family: convert::family(dst),
            reqid,
            mode: XFRM_MODE_TRANSPORT,
            lifetime_cfg: convert::lifetime_cfg(&Default::default()),
            ..Default::default()
        };
        let msg = AllocSpiMessage {
            spi_info: UserSpiInfo {
                info,
                min: SPI_MIN,
                max: u32::MAX,
            },
            nlas: vec![],
        };
        let replies = self
            .xfrm
            .request("ALLOCSPI", XfrmMessage::AllocSpi(msg), false)
            .await?;
        replies
            .iter()
            .find_map(|m| match m {
                XfrmMessage::AddSa(s) => Some(s.user_sa_info.id.spi),
                _ => None,
            })
            .ok_or_else(|| Error::Netlink("ALLOCSPI: no SA in the reply".into()))
    }

    async fn install_sa(&self, sa: &SaSpec) -> Result<()> {
        self.modify_sa(sa, false).await
    }

    async fn update_sa(&self, sa: &SaSpec) -> Result<()> {
        self.modify_sa(sa, true).await
    }

    async fn delete_sa(&self, id: SaId) -> Result<()> {
        let msg = SaDelGet {
            user_sa_id: convert::sa_id(id),
            nlas: vec![XfrmAttrs::SrcAddr(Address::from_ip(&id.src))],
        };
        self.xfrm
            .request("DELSA", XfrmMessage::DeleteSa(msg), false)
            .await
            .map(drop)
    }

    async fn sa_stats(&self, id: SaId) -> Result<SaStats> {
        let msg = SaDelGet {
            user_sa_id: convert::sa_id(id),
            nlas: vec![XfrmAttrs::SrcAddr(Address::from_ip(&id.src))],
        };
        let replies = self
            .xfrm
            .request("GETSA", XfrmMessage::GetSa(msg), false)
            .await?;
        replies
            .iter()
            .find_map(|m| match m {
                XfrmMessage::AddSa(s) => Some(convert::stats(&s.user_sa_info)),
                _ => None,
            })
            .ok_or_else(|| Error::NotFound(format!("SA {id:?}")))
    }

    async fn install_policy(&self, policy: &PolicySpec) -> Result<()> {
        policy.validate()?;
        let (user_policy_info, nlas) = convert::policy_info(policy);
        let msg = XfrmMessage::AddPolicy(PolicyModify {
            user_policy_info,
            nlas,
        });
        self.xfrm.request("NEWPOLICY", msg, false).await.map(drop)
    }

    async fn delete_policy(&self, id: PolicyId) -> Result<()> {
        let (user_policy_id, nlas) = convert::policy_id(&id);
        let msg = XfrmMessage::DeletePolicy(PolicyDelGet {
            user_policy_id,
            nlas,
        });
        self.xfrm.request("DELPOLICY", msg, false).await.map(drop)
    }

    async fn policies(&self) -> Result<Vec<PolicySpec>> {
        Ok(self
            .dump_policies()
            .await?
            .into_iter()
            .filter_map(|(_, s)| s)
            .collect())
    }

    async fn create_link(&self, link: &LinkSpec) -> Result<()> {
        link.validate()?;
        self.links.create(link).await
    }

    async fn set_link_up(&self, name: &str, up: bool) -> Result<()> {
        self.links.set_up(name, up).await
    }

    async fn delete_link(&self, name: &str) -> Result<()> {
        self.links.delete(name).await
    }

    async fn delete_links(&self) -> Result<()> {
        self.links.delete_all().await
    }

    fn subscribe(&self) -> broadcast::Receiver<DataplaneEvent> {
        self.events.subscribe()
    }

    async fn flush_ours(&self) -> Result<()> {
        for (_, spec) in self.dump_policies().await? {
            if let Some(p) = spec.filter(PolicySpec::is_ours) {
                match self.delete_policy(p.id()).await {
                    // Gone already (expired or removed concurrently) is what we wanted.
                    Err(e) if !e.is_not_found() => return Err(e),
                    _ => {}
                }
            }
        }
        for sa in self.dump_sas().await? {
            if sa.id.proto == IPPROTO_ESP && OWNED_REQIDS.contains(&sa.reqid) {
                match self.delete_sa(convert::sa_id_of(&sa)).await {
                    Err(e) if !e.is_not_found() => return Err(e),
                    _ => {}
                }
            }
        }
        Ok(())
    }
}
