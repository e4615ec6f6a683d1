//! What this node left in the data plane: the objects its store records as installed.
//! After a crash they are removed one by one before anything is set up again, and on
//! shutdown whatever the adjacencies did not remove goes the same way. Only recorded
//! objects are touched, so another daemon's SAs, policies and links in the same namespace
//! survive even though they carry the same ownership tags.

use iiptran_policy::store::{Direction as StoreDirection, KernelObject, Store};
use iiptran_xfrm::{Dataplane, Direction, Error as DpError, PolicyId, SaId, Selector};
use tracing::{info, warn};

/// Removal of something already gone is not a failure; the kernel says so with ESRCH
/// (states) or ENOENT (policies).
pub fn gone_ok(result: Result<(), DpError>) -> Result<(), DpError> {
    match result {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

/// The order of removal: links first, so that nothing is routed into the link while its
/// SAs and policies go; policies last, so that no packet leaves unprotected meanwhile.
fn rank(object: &KernelObject) -> u8 {
    match object {
        KernelObject::Link { .. } => 0,
        KernelObject::Sa { .. } => 1,
        KernelObject::Policy { .. } => 2,
    }
}

async fn remove<D: Dataplane>(dataplane: &D, object: &KernelObject) -> Result<(), DpError> {
    let result = match object {
        KernelObject::Link { name } => dataplane.delete_link(name).await,
        KernelObject::Sa { src, dst, spi, .. } => {
            let id = SaId {
                src: *src,
                dst: *dst,
                spi: *spi,
            };
            dataplane.delete_sa(id).await
        }
        KernelObject::Policy {
            src,
            dst,
            protocol,
            direction,
        } => {
            let direction = match direction {
                StoreDirection::In => Direction::In,
                StoreDirection::Out => Direction::Out,
                // The daemon installs no forward policies.
                StoreDirection::Fwd => return Ok(()),
            };
            let id = PolicyId {
                direction,
                selector: Selector::tunnel(*src, *dst, *protocol),
                mark: None,
            };
            dataplane.delete_policy(id).await
        }
    };
    gone_ok(result)
}

/// Removes every object the store records and forgets those that are gone; one that
/// cannot be removed stays recorded for the next attempt.
pub async fn remove_recorded<D: Dataplane>(store: &Store, dataplane: &D) {
    let mut installed = match store.installed().and_then(|db| db.list()) {
        Ok(list) => list,
        Err(e) => {
            warn!(error = %e, "reading the installed objects");
            return;
        }
    };
    installed.sort_by_key(|o| rank(&o.object));
    let mut gone = Vec::with_capacity(installed.len());
    for o in installed {
        match remove(dataplane, &o.object).await {
            Ok(()) => gone.push(o.object),
            Err(e) => warn!(neighbor = o.neighbor, object = ?o.object, error = %e, "removing"),
        }
    }
    if !gone.is_empty() {
        info!(
            objects = gone.len(),
            "removed what an earlier run installed"
        );
    }
    if let Err(e) = store.installed().and_then(|db| db.forget(&gone)) {
        warn!(error = %e, "forgetting removed objects");
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::atomic::{AtomicU32, Ordering};

    use iiptran_policy::adjacency::Time;
    use iiptran_policy::store::InstalledObject;
    use iiptran_xfrm::kernel::KernelDataplane;
    use iiptran_xfrm::{DEFAULT_PRIORITY, OWNED_REQIDS, PolicySpec, Template};

    use super::*;
    use crate::daemon::kernel_objects::policy_object;

    static COUNTER: AtomicU32 = AtomicU32::new(0);

    /// A network namespace and a state directory, both removed on drop.
    struct Scratch {
        netns: String,
        dir: PathBuf,
    }

    impl Scratch {
        fn new() -> Self {
            let tag = format!(
                "iiptran-stale-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            );
            let ok = Command::new("ip")
                .args(["netns", "add", &tag])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "cannot create network namespace {tag}");
            let dir = std::env::temp_dir().join(&tag);
            std::fs::create_dir_all(&dir).unwrap();
            Self { netns: tag, dir }
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = Command::new("ip")
                .args(["netns", "delete", &self.netns])
                .status();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The policies of a node at `local` for its dual-stack neighbor at `remote`: out and
    /// in for protocol 4 and for 41.
    fn policies(local: &str, remote: &str, reqid: u32) -> Vec<PolicySpec> {
        let policy = |direction, src, dst, proto| PolicySpec {
            direction,
            selector: Selector::tunnel(src, dst, proto),
            template: Template { src, dst, reqid },
            priority: DEFAULT_PRIORITY,
            mark: None,
        };
        [iiptran_xfrm::IPPROTO_IPIP, iiptran_xfrm::IPPROTO_IPV6]
            .into_iter()
            .flat_map(|proto| {
                [
                    policy(Direction::Out, ip(local), ip(remote), proto),
                    policy(Direction::In, ip(remote), ip(local), proto),
                ]
            })
            .collect()
    }

    /// Two nodes' policies in one namespace, both with the daemon's ownership tags; the
    /// store of node 1 records its own (and an SA and a link that are already gone).
    /// Removing what node 1 recorded leaves node 3's policies in place.
    #[test]
    fn only_this_nodes_recorded_objects_are_removed() {
        // SAFETY: geteuid only reads the process's credentials.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("only_this_nodes_recorded_objects_are_removed: needs root, skipped");
            return;
        }
        let scratch = Scratch::new();
        let store = Store::open(&scratch.dir.join("state.db")).unwrap();
        let ours = policies("192.0.2.1", "192.0.2.2", *OWNED_REQIDS.start() + 1);
        let theirs = policies("192.0.2.3", "192.0.2.2", *OWNED_REQIDS.start() + 1);
        let mut recorded: Vec<KernelObject> = ours.iter().map(policy_object).collect();
        recorded.push(KernelObject::Sa {
            src: ip("192.0.2.1"),
            dst: ip("192.0.2.2"),
            spi: 0xc000_0001,
            protocol: 50,
        });
        recorded.push(KernelObject::Link {
            name: "vn-gone".into(),
        });
        let list: Vec<InstalledObject> = recorded
            .into_iter()
            .map(|object| InstalledObject {
                neighbor: "b".into(),
                object,
                installed_at: Time(1),
            })
            .collect();
        store.installed().unwrap().record(&list).unwrap();

        let ns = Path::new("/run/netns").join(&scratch.netns);
        let db = store.clone();
        let installed: Vec<PolicySpec> = ours.iter().chain(&theirs).copied().collect();
        let left = iiptran_xfrm::netns::spawn_in(&ns, move || async move {
            let dataplane = KernelDataplane::open()?;
            for p in &installed {
                dataplane.install_policy(p).await?;
            }
            remove_recorded(&db, &dataplane).await;
            dataplane.policies().await
        })
        .unwrap()
        .join()
        .unwrap()
        .unwrap()
        .unwrap();

        let mut left: Vec<PolicyId> = left.iter().map(PolicySpec::id).collect();
        left.sort_by_key(|p| format!("{p:?}"));
        let mut expected: Vec<PolicyId> = theirs.iter().map(PolicySpec::id).collect();
        expected.sort_by_key(|p| format!("{p:?}"));
        assert_eq!(
            left, expected,
            "node 3's policies must survive, node 1's go"
        );
        assert!(
            store.installed().unwrap().list().unwrap().is_empty(),
            "what is gone is forgotten"
        );
    }
}
