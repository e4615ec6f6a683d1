//! The IKE sockets on the node's endpoint: port 500, and port 4500 shared with ESP in
//! UDP.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::UdpSocket;

pub const IKE_PORT: u16 = 500;
pub const NAT_T_PORT: u16 = 4500;

pub struct Sockets {
    pub ike: Arc<UdpSocket>,
    pub nat_t: Arc<UdpSocket>,
}

impl Sockets {
    pub async fn bind(endpoint: IpAddr) -> io::Result<Self> {
        let bind = |port| async move {
            let addr = SocketAddr::new(endpoint, port);
            UdpSocket::bind(addr)
                .await
                .map(Arc::new)
                .map_err(|e| io::Error::new(e.kind(), format!("binding UDP {addr}: {e}")))
        };
        Ok(Self {
            ike: bind(IKE_PORT).await?,
            nat_t: bind(NAT_T_PORT).await?,
        })
    }

    /// The socket a datagram from `local` leaves by.
    pub fn for_local(&self, local: SocketAddr) -> &UdpSocket {
        if local.port() == NAT_T_PORT {
            &self.nat_t
        } else {
            &self.ike
        }
    }
}
