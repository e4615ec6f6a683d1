//! A TUN device's root qdisc. The kernel gives a TUN device the default qdisc (pfifo_fast
//! unless `net.core.default_qdisc` says otherwise), built afresh each time the link goes
//! up: three rings of 500 slots, over a quarter of the kernel's work to bring a link up
//! among 10,000 links. It holds nothing back: the TUN driver never stops its queue but
//! drops once its own ring is full, so every packet only passes one more lock. `noqueue`
//! set while the link is down stays through every up and down, as WireGuard's device
//! has it.

use futures_util::StreamExt;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use rtnetlink::Handle;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::tc::{TcAttribute, TcHandle, TcMessage};

/// Makes `noqueue` the root qdisc of link `index` (`tc qdisc replace dev … root noqueue`).
pub(super) async fn attach(handle: &Handle, index: u32) -> Result<(), rtnetlink::Error> {
    // The kernel's link indexes are positive `int`s.
    let index = i32::try_from(index).map_err(|_| rtnetlink::Error::RequestFailed)?;
    let mut qdisc = TcMessage::with_index(index);
    qdisc.header.parent = TcHandle::ROOT;
    qdisc.attributes.push(TcAttribute::Kind("noqueue".into()));
    let mut request = NetlinkMessage::from(RouteNetlinkMessage::NewQueueDiscipline(qdisc));
    request.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
    let mut answers = handle.clone().request(request)?;
    while let Some(answer) = answers.next().await {
        if let NetlinkPayload::Error(e) = answer.payload {
            return Err(rtnetlink::Error::NetlinkError(e));
        }
    }
    Ok(())
}
