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

/// Deletes the links of [`LINK_GROUP`] in one request, provided all of them are among
/// `ours`; returns false, deleting nothing, when the group holds a link of someone else's.
pub async fn delete_ours(handle: &Handle, ours: &HashSet<&str>) -> Result<bool, rtnetlink::Error> {
    let mut links = handle.link().get().execute();
    while let Some(link) = links.try_next().await? {
        if in_group(&link) && !name_of(&link).is_some_and(|n| ours.contains(n)) {
            return Ok(false);
        }
    }
    let mut delete = handle.link().del(0);
    delete
        .message_mut()
        .attributes
        .push(LinkAttribute::Group(LINK_GROUP));
    delete.execute().await?;
    Ok(true)
}
