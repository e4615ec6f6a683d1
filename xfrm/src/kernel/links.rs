//! IP-in-IP virtual links (`ipip`, `sit`, `ip6tnl`) through rtnetlink, and the link-down
//! watch.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use futures_util::{StreamExt, TryStreamExt};
use netlink_packet_core::NetlinkPayload;
use rtnetlink::packet_route::IpProtocol;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::{Ip6TunnelFlags, LinkFlags};
use rtnetlink::sys::AsyncSocket;
use rtnetlink::{Handle, LinkIp6Tnl, LinkIpIp, LinkSit, LinkUnspec};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::dataplane::{Error, Result};
use crate::link_group::{self, LINK_GROUP, name_of};
use crate::model::{DataplaneEvent, InnerFamilies, LinkSpec};

/// The links this backend manages, and whether the daemon wants each up.
type Wanted = Arc<Mutex<HashMap<String, bool>>>;

fn rt_err(op: &'static str) -> impl Fn(rtnetlink::Error) -> Error {
    move |e| match e {
        rtnetlink::Error::NetlinkError(m) => Error::Kernel {
            op,
            source: m.to_io(),
        },
        other => Error::Netlink(format!("{op}: {other}")),
    }
}

/// The tunnel protocol a `sit` or `ip6tnl` link is limited to (`IFLA_IPTUN_PROTO`,
/// `IFLA_IPTUN_MODE`): the one of its single family, or IPPROTO_IP (0), mode `any`, for
/// both.
fn tunnel_mode(inner: InnerFamilies) -> Result<IpProtocol> {
    match inner.protocols().as_slice() {
        [only] => Ok(IpProtocol::from(*only)),
        [_, _] => Ok(IpProtocol::Hopopts),
        _ => Err(Error::Invalid("a link carries no inner family".into())),
    }
}

/// The rtnetlink side of the kernel backend.
pub struct Links {
    handle: Handle,
    wanted: Wanted,
    monitor: JoinHandle<()>,
}

impl Drop for Links {
    fn drop(&mut self) {
        self.monitor.abort();
    }
}

fn lock(w: &Wanted) -> std::sync::MutexGuard<'_, HashMap<String, bool>> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reports a managed link that goes down or disappears while the daemon wants it up
/// (or, for deletion, at all): once, until the daemon sets it up again.
async fn watch(
    mut notifications: futures_channel::mpsc::UnboundedReceiver<(
        netlink_packet_core::NetlinkMessage<RouteNetlinkMessage>,
        rtnetlink::sys::SocketAddr,
    )>,
    wanted: Wanted,
    events: broadcast::Sender<DataplaneEvent>,
) {
    while let Some((msg, _)) = notifications.next().await {
        let down = match &msg.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => {
                let Some(name) = name_of(l) else { continue };
                let mut w = lock(&wanted);
                match w.get_mut(name) {
                    Some(up) if *up && !l.header.flags.contains(LinkFlags::Up) => {
                        *up = false;
                        Some(name.to_string())
                    }
                    _ => None,
                }
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(l)) => {
                let Some(name) = name_of(l) else { continue };
                lock(&wanted).remove(name).map(|_| name.to_string())
            }
            _ => None,
        };
        if let Some(name) = down {
            tracing::info!(link = %name, "virtual link went down");
            let _ = events.send(DataplaneEvent::LinkDown { name });
        }
    }
}

impl Links {
    /// Opens an rtnetlink socket listening to link changes; its tasks run on the current
    /// runtime.
    pub fn open(events: broadcast::Sender<DataplaneEvent>) -> Result<Self> {
        let (mut conn, handle, notifications) = rtnetlink::new_connection()?;
        conn.socket_mut()
            .socket_mut()
            .add_membership(libc::RTNLGRP_LINK)?;
        tokio::spawn(conn);
        let wanted = Wanted::default();
        let monitor = tokio::spawn(watch(notifications, wanted.clone(), events));
        Ok(Self {
            handle,
            wanted,
            monitor,
        })
    }

    async fn index(&self, name: &str) -> Result<u32> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(Some(msg)) => Ok(msg.header.index),
            Ok(None) => Err(Error::NotFound(format!("link {name}"))),
            Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code().abs() == libc::ENODEV => {
                Err(Error::NotFound(format!("link {name}")))
            }
            Err(e) => Err(rt_err("RTM_GETLINK")(e)),
        }
    }

    /// Creates the link, its addresses and MTU; it stays down. IPv4 endpoints get an
    /// `ipip` link when only IPv4 inner packets cross it, else a `sit` link (mode `any`
    /// with both families, `ip6ip` with IPv6 alone), both with path-MTU discovery on
    /// (outer DF set). IPv6 endpoints get an `ip6tnl` link in the mode of its families
    /// (`any`, `ipip6` or `ip6ip6`) without the tunnel encapsulation limit option, so the
    /// outer header is exactly the IPv6 header the SA selector names. A link never sends a
    /// family it does not carry, so nothing leaves unprotected for want of a policy.
    pub async fn create(&self, spec: &LinkSpec) -> Result<()> {
        let mode = tunnel_mode(spec.inner)?;
        let (msg, op) = match (spec.local, spec.remote) {
            (IpAddr::V4(local), IpAddr::V4(remote)) if !spec.inner.ipv6 => (
                LinkIpIp::new(&spec.name)
                    .local(local)
                    .remote(remote)
                    .pmtudisc(true)
                    .mtu(u32::from(spec.mtu))
                    .link_group(LINK_GROUP)
                    .build(),
                "RTM_NEWLINK ipip",
            ),
            (IpAddr::V4(local), IpAddr::V4(remote)) => (
                LinkSit::new(&spec.name)
                    .local(local)
                    .remote(remote)
                    .protocol(mode)
                    .pmtudisc(true)
                    .mtu(u32::from(spec.mtu))
                    .link_group(LINK_GROUP)
                    .build(),
                "RTM_NEWLINK sit",
            ),
            (IpAddr::V6(local), IpAddr::V6(remote)) => (
                LinkIp6Tnl::new(&spec.name)
                    .local(local)
                    .remote(remote)
                    .mode(mode)
                    .set_flag(Ip6TunnelFlags::IgnEncapLimit, true)
                    .mtu(u32::from(spec.mtu))
                    .link_group(LINK_GROUP)
                    .build(),
                "RTM_NEWLINK ip6tnl",
            ),
            (l, r) => {
                return Err(Error::Invalid(format!(
                    "link endpoints {l} and {r} of different families"
                )));
            }
        };
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(rt_err(op))?;
        let index = self.index(&spec.name).await?;
        lock(&self.wanted).insert(spec.name.clone(), false);
        crate::ipv6_off::unless_carried(spec);
        for p in &spec.addresses {
            let added = self
                .handle
                .address()
                .add(index, p.addr(), p.prefix_len())
                .execute()
                .await;
            if let Err(e) = added {
                // Leave nothing half-made behind.
                let _ = self.delete(&spec.name).await;
                return Err(rt_err("RTM_NEWADDR")(e));
            }
        }
        Ok(())
    }

    pub async fn set_up(&self, name: &str, up: bool) -> Result<()> {
        let index = self.index(name).await?;
        // Recorded first, so the notification of our own change is not reported.
        lock(&self.wanted).insert(name.to_string(), up);
        let b = LinkUnspec::new_with_index(index);
        let msg = if up { b.up() } else { b.down() }.build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(rt_err("RTM_SETLINK"))
    }

    /// Deletes every link of this backend: in one request when the links' group holds
    /// nothing else (one by one, the kernel takes a grace period per device).
    pub async fn delete_all(&self) -> Result<()> {
        // Out of the wanted set first, so that their going is not reported as a loss.
        let names: Vec<String> = lock(&self.wanted).drain().map(|(name, _)| name).collect();
        let ours: HashSet<&str> = names.iter().map(String::as_str).collect();
        link_group::delete_ours(&self.handle, &ours)
            .await
            .map_err(rt_err("RTM_DELLINK"))
    }

    pub async fn delete(&self, name: &str) -> Result<()> {
        let index = self.index(name).await?;
        lock(&self.wanted).remove(name);
        self.handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(rt_err("RTM_DELLINK"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_is_limited_to_the_tunnel_protocols_of_its_families() {
        let mode = |inner| tunnel_mode(inner).map(u8::from);
        assert_eq!(mode(InnerFamilies::BOTH).unwrap(), 0, "mode any");
        assert_eq!(mode(InnerFamilies::IPV4).unwrap(), 4);
        assert_eq!(mode(InnerFamilies::IPV6).unwrap(), 41);
        assert!(mode(InnerFamilies::of_protocols([])).is_err());
    }
}
