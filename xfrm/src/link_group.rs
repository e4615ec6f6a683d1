//! The device group of the links both backends make, so that at shutdown they go in one
//! request. The kernel unregisters a device with an RCU grace period of its
//! own: closing 1,000 TUN devices one by one took 19 s here, deleting them as a group
//! (`unregister_netdevice_many`) a third of a second.

use std::collections::HashSet;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{Handle, LinkUnspec};

/// The group, "iipt" in ASCII: `ip link show group 0x69697074` lists the links.
pub const LINK_GROUP: u32 = 0x6969_7074;

/// Puts link `index` in [`LINK_GROUP`].
pub async fn join(handle: &Handle, index: u32) -> Result<(), rtnetlink::Error> {
    let message = LinkUnspec::new_with_index(index)
        .link_group(LINK_GROUP)
        .build();
    handle.link().set(message).execute().await
}

/// A link's name, as a dump reports it.
pub(crate) fn name_of(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

fn in_group(link: &LinkMessage) -> bool {
    link.attributes
        .iter()
        .any(|a| matches!(a, LinkAttribute::Group(g) if *g == LINK_GROUP))
}

/// Deletes the links named in `ours`: those in [`LINK_GROUP`] with one request when the
/// group holds nothing else, the rest one by one. One by one goes by request rather than by
/// closing a TUN device, which a process forking at that moment holds open until it execs.
/// A link gone meanwhile is no error.
pub async fn delete_ours(handle: &Handle, ours: &HashSet<&str>) -> Result<(), rtnetlink::Error> {
    let (mut grouped, mut singles, mut foreign) = (Vec::new(), Vec::new(), false);
    let mut links = handle.link().get().execute();
    while let Some(link) = links.try_next().await? {
        let mine = name_of(&link).is_some_and(|n| ours.contains(n));
        match (in_group(&link), mine) {
            (true, true) => grouped.push(link.header.index),
            (true, false) => foreign = true,
            (false, true) => singles.push(link.header.index),
            (false, false) => {}
        }
    }
    if foreign {
        tracing::info!("the links' device group holds another's link: deleted one by one");
        singles.append(&mut grouped);
    } else if !grouped.is_empty() {
        let mut delete = handle.link().del(0);
        delete
            .message_mut()
            .attributes
            .push(LinkAttribute::Group(LINK_GROUP));
        delete.execute().await?;
    }
    let mut first_error = None;
    for index in singles {
        match handle.link().del(index).execute().await {
            Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code().abs() == libc::ENODEV => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
            Ok(()) => {}
        }
    }
    first_error.map_or(Ok(()), Err)
}
