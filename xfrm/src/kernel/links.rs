//! IPIP virtual links through rtnetlink.

use futures_util::TryStreamExt;
use rtnetlink::{Handle, LinkIpIp, LinkUnspec};

use crate::dataplane::{Error, Result};
use crate::model::LinkSpec;

fn rt_err(op: &'static str) -> impl Fn(rtnetlink::Error) -> Error {
    move |e| match e {
        rtnetlink::Error::NetlinkError(m) => Error::Kernel {
            op,
            source: m.to_io(),
        },
        other => Error::Netlink(format!("{op}: {other}")),
    }
}

/// The rtnetlink side of the kernel backend.
pub struct Links {
    handle: Handle,
}

impl Links {
    /// Opens an rtnetlink socket; its connection task runs on the current runtime.
    pub fn open() -> Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Self { handle })
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

    /// Creates the `ipip` link (path-MTU discovery on, so outer DF is set), its
    /// addresses and MTU; it stays down.
    pub async fn create(&self, spec: &LinkSpec) -> Result<()> {
        let msg = LinkIpIp::new(&spec.name)
            .local(spec.local)
            .remote(spec.remote)
            .pmtudisc(true)
            .mtu(u32::from(spec.mtu))
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(rt_err("RTM_NEWLINK ipip"))?;
        let index = self.index(&spec.name).await?;
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
        let b = LinkUnspec::new_with_index(index);
        let msg = if up { b.up() } else { b.down() }.build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(rt_err("RTM_SETLINK"))
    }

    pub async fn delete(&self, name: &str) -> Result<()> {
        let index = self.index(name).await?;
        self.handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(rt_err("RTM_DELLINK"))
    }
}
