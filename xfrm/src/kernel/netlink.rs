//! The XFRM netlink socket behind a small seam: one request in, the replies out, kernel
//! errors as [`Error::Kernel`]. Messages from the kernel are length-checked before
//! netlink-packet-xfrm parses them, because its parsers slice without checking.

use std::fmt;

use futures_util::StreamExt;
use netlink_packet_core::{
    DecodeError, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkDeserializable, NetlinkHeader,
    NetlinkMessage, NetlinkPayload, NetlinkSerializable,
};
use netlink_packet_xfrm::constants::*;
use netlink_packet_xfrm::*;
use netlink_sys::{AsyncSocket, SocketAddr};

use crate::dataplane::{Error, Result};

/// An XFRM message whose kernel-side parse was guarded.
#[derive(Clone, PartialEq, Eq)]
pub struct Msg(pub XfrmMessage);

impl fmt::Debug for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SA messages carry keys: print the message type only.
        write!(f, "XfrmMessage(type {})", self.0.message_type())
    }
}

/// The fixed-size header each message type starts with.
fn min_len(message_type: u16) -> usize {
    match message_type {
        XFRM_MSG_NEWSA | XFRM_MSG_UPDSA => XFRM_USER_SA_INFO_LEN,
        XFRM_MSG_DELSA | XFRM_MSG_GETSA => XFRM_USER_SA_ID_LEN,
        XFRM_MSG_NEWPOLICY | XFRM_MSG_UPDPOLICY => XFRM_USER_POLICY_INFO_LEN,
        XFRM_MSG_DELPOLICY | XFRM_MSG_GETPOLICY | XFRM_MSG_MIGRATE => XFRM_USER_POLICY_ID_LEN,
        XFRM_MSG_ALLOCSPI => XFRM_USER_SPI_INFO_LEN,
        XFRM_MSG_ACQUIRE => XFRM_USER_ACQUIRE_LEN,
        XFRM_MSG_EXPIRE => XFRM_USER_EXPIRE_LEN,
        XFRM_MSG_POLEXPIRE => XFRM_USER_POLICY_EXPIRE_LEN,
        XFRM_MSG_REPORT => XFRM_USER_REPORT_LEN,
        XFRM_MSG_MAPPING => XFRM_USER_MAPPING_LEN,
        XFRM_MSG_NEWAE | XFRM_MSG_GETAE => XFRM_ASYNC_EVENT_ID_LEN,
        XFRM_MSG_GETSADINFO | XFRM_MSG_NEWSADINFO | XFRM_MSG_GETSPDINFO | XFRM_MSG_NEWSPDINFO => 4,
        XFRM_MSG_GETDEFAULT | XFRM_MSG_SETDEFAULT => XFRM_USER_POLICY_DEFAULT_LEN,
        XFRM_MSG_FLUSHSA => 1,
        _ => 0,
    }
}

impl NetlinkSerializable for Msg {
    fn message_type(&self) -> u16 {
        self.0.message_type()
    }

    fn buffer_len(&self) -> usize {
        NetlinkSerializable::buffer_len(&self.0)
    }

    fn serialize(&self, buffer: &mut [u8]) {
        self.0.serialize(buffer)
    }
}

impl NetlinkDeserializable for Msg {
    type Error = DecodeError;

    fn deserialize(
        header: &NetlinkHeader,
        payload: &[u8],
    ) -> std::result::Result<Self, DecodeError> {
        if payload.len() < min_len(header.message_type) {
            return Err(DecodeError::from(format!(
                "XFRM message type {} truncated to {} octets",
                header.message_type,
                payload.len()
            )));
        }
        XfrmMessage::deserialize(header, payload).map(Msg)
    }
}

/// The seam the kernel backend talks through.
pub trait XfrmSocket: Send + Sync {
    /// Sends one request (a dump when `dump`) and collects the replies; an error reply
    /// becomes [`Error::Kernel`] tagged with `op`.
    fn request(
        &self,
        op: &'static str,
        msg: XfrmMessage,
        dump: bool,
    ) -> impl std::future::Future<Output = Result<Vec<XfrmMessage>>> + Send;
}

/// [`XfrmSocket`] over a netlink-proto connection.
pub struct NetlinkXfrm {
    handle: netlink_proto::ConnectionHandle<Msg>,
}

/// The multicast messages (ACQUIRE, EXPIRE) the kernel pushes.
pub type Notifications =
    futures_channel::mpsc::UnboundedReceiver<(NetlinkMessage<Msg>, SocketAddr)>;

impl NetlinkXfrm {
    /// Opens the socket, joins the ACQUIRE and EXPIRE groups and spawns the connection
    /// task on the current runtime.
    pub fn open() -> Result<(Self, Notifications)> {
        let (mut conn, handle, notifications) =
            netlink_proto::new_connection::<Msg>(netlink_sys::protocols::NETLINK_XFRM)?;
        for group in [XFRMNLGRP_ACQUIRE, XFRMNLGRP_EXPIRE] {
            conn.socket_mut().socket_mut().add_membership(group)?;
        }
        tokio::spawn(conn);
        Ok((Self { handle }, notifications))
    }
}

impl XfrmSocket for NetlinkXfrm {
    async fn request(
        &self,
        op: &'static str,
        msg: XfrmMessage,
        dump: bool,
    ) -> Result<Vec<XfrmMessage>> {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { NLM_F_ACK };
        let mut req = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(Msg(msg)));
        req.finalize();
        let mut replies = self
            .handle
            .request(req, SocketAddr::new(0, 0))
            .map_err(|e| Error::Netlink(format!("{op}: {e}")))?;
        let mut out = Vec::new();
        while let Some(reply) = replies.next().await {
            match reply.payload {
                NetlinkPayload::InnerMessage(Msg(m)) => out.push(m),
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    return Err(Error::Kernel {
                        op,
                        source: e.to_io(),
                    });
                }
                NetlinkPayload::Error(_) | NetlinkPayload::Done(_) | NetlinkPayload::Noop => {}
                NetlinkPayload::Overrun(_) => return Err(Error::Netlink(format!("{op}: overrun"))),
                _ => {}
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_kernel_messages_are_errors_not_panics() {
        for ty in [
            XFRM_MSG_NEWSA,
            XFRM_MSG_NEWPOLICY,
            XFRM_MSG_ACQUIRE,
            XFRM_MSG_EXPIRE,
            XFRM_MSG_ALLOCSPI,
            XFRM_MSG_GETSA,
            XFRM_MSG_DELPOLICY,
            XFRM_MSG_POLEXPIRE,
        ] {
            let mut h = NetlinkHeader::default();
            h.message_type = ty;
            for len in [0, 1, 16, min_len(ty) - 1] {
                assert!(
                    Msg::deserialize(&h, &vec![0u8; len]).is_err(),
                    "type {ty}, {len} octets"
                );
            }
        }
    }
}
