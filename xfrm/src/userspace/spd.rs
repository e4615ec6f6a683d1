//! The userspace SPD. Every packet looks up its policy, so the policies whose selectors
//! name single hosts on both sides (all that the daemon installs: one pair per neighbor
//! and protocol) are found by their address pair; only the others are scanned. Both
//! directions between two hosts share one entry: a neighbor's policies cost one.

use std::net::IpAddr;

use rustc_hash::FxHashMap as HashMap;

use crate::model::{Direction, IpPrefix, PolicyId, PolicySpec};

/// Two hosts, the lower address first.
type HostPair = (IpAddr, IpAddr);

#[derive(Default)]
pub struct Spd {
    by_hosts: HashMap<HostPair, Vec<PolicySpec>>,
    others: Vec<PolicySpec>,
}

fn host_pair(a: IpAddr, b: IpAddr) -> HostPair {
    if a <= b { (a, b) } else { (b, a) }
}

/// The host pair of a selector naming one host on each side.
fn hosts_of(id: &PolicyId) -> Option<HostPair> {
    let host = |prefix: IpPrefix| {
        let bits = if prefix.addr().is_ipv4() { 32 } else { 128 };
        (prefix.prefix_len() == bits).then(|| prefix.addr())
    };
    Some(host_pair(host(id.selector.src)?, host(id.selector.dst)?))
}

impl Spd {
    fn bucket_mut(&mut self, key: Option<HostPair>) -> &mut Vec<PolicySpec> {
        match key {
            Some(key) => self.by_hosts.entry(key).or_default(),
            None => &mut self.others,
        }
    }

    /// Adds a policy; false if one with the same identity is there already.
    pub fn insert(&mut self, policy: PolicySpec) -> bool {
        let id = policy.id();
        let bucket = self.bucket_mut(hosts_of(&id));
        if bucket.iter().any(|p| p.id() == id) {
            return false;
        }
        // A host pair has one policy per direction, rarely more: the default growth to
        // four would leave half of every bucket empty, once per neighbor.
        bucket.reserve_exact(1);
        bucket.push(policy);
        true
    }

    /// Removes the policy `id`; false if there is none.
    pub fn remove(&mut self, id: &PolicyId) -> bool {
        let key = hosts_of(id);
        let bucket = self.bucket_mut(key);
        let found = bucket.iter().position(|p| p.id() == *id);
        if let Some(i) = found {
            bucket.remove(i);
        }
        if let Some(key) = key
            && self.by_hosts.get(&key).is_some_and(Vec::is_empty)
        {
            self.by_hosts.remove(&key);
        }
        found.is_some()
    }

    /// The winning policy for a packet: lowest priority value among the matches.
    pub fn lookup(
        &self,
        dir: Direction,
        src: IpAddr,
        dst: IpAddr,
        proto: u8,
    ) -> Option<&PolicySpec> {
        self.by_hosts
            .get(&host_pair(src, dst))
            .into_iter()
            .flatten()
            .chain(&self.others)
            .filter(|p| p.direction == dir && p.selector.matches(src, dst, proto, None))
            .min_by_key(|p| p.priority)
    }

    pub fn all(&self) -> Vec<PolicySpec> {
        self.by_hosts
            .values()
            .flatten()
            .chain(&self.others)
            .copied()
            .collect()
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&PolicySpec) -> bool) {
        for bucket in self.by_hosts.values_mut() {
            bucket.retain(&mut keep);
        }
        self.by_hosts.retain(|_, b| !b.is_empty());
        self.others.retain(keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DEFAULT_PRIORITY, IPPROTO_IPIP, OWNED_REQIDS, Selector, Template};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn policy(selector: Selector, priority: u32) -> PolicySpec {
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        PolicySpec {
            direction: Direction::Out,
            selector,
            template: Template {
                src: a,
                dst: b,
                reqid: *OWNED_REQIDS.start(),
            },
            priority,
            mark: None,
        }
    }

    /// Host-pair policies and broader ones compete on priority alike; identities are
    /// unique; removal finds either kind.
    #[test]
    fn indexed_and_scanned_policies_compete_on_priority() {
        let (a, b, c) = (ip("192.0.2.1"), ip("192.0.2.2"), ip("192.0.2.3"));
        let host = policy(Selector::tunnel(a, b, IPPROTO_IPIP), DEFAULT_PRIORITY);
        let mut broad_selector = Selector::tunnel(a, b, IPPROTO_IPIP);
        broad_selector.dst = IpPrefix::new(ip("192.0.2.0"), 24).unwrap();
        let broad = policy(broad_selector, DEFAULT_PRIORITY - 1);
        let mut spd = Spd::default();
        assert!(spd.insert(host));
        assert!(!spd.insert(host), "same identity twice");
        let found = |spd: &Spd, dst| spd.lookup(Direction::Out, a, dst, IPPROTO_IPIP).copied();
        assert_eq!(found(&spd, b), Some(host));
        assert_eq!(found(&spd, c), None);
        assert!(spd.lookup(Direction::In, a, b, IPPROTO_IPIP).is_none());
        assert!(spd.insert(broad));
        assert_eq!(found(&spd, b), Some(broad), "lower priority value wins");
        assert_eq!(found(&spd, c), Some(broad));
        assert_eq!(spd.all().len(), 2);
        assert!(spd.remove(&broad.id()));
        assert!(!spd.remove(&broad.id()));
        assert_eq!(found(&spd, b), Some(host));
        spd.retain(|p| p.id() != host.id());
        assert!(spd.all().is_empty() && found(&spd, b).is_none());
    }

    /// A neighbor's inbound and outbound policies share one entry and are told apart by
    /// direction.
    #[test]
    fn both_directions_of_a_host_pair_share_an_entry() {
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        let out = policy(Selector::tunnel(a, b, IPPROTO_IPIP), DEFAULT_PRIORITY);
        let mut inbound = policy(Selector::tunnel(b, a, IPPROTO_IPIP), DEFAULT_PRIORITY);
        inbound.direction = Direction::In;
        let mut spd = Spd::default();
        assert!(spd.insert(out) && spd.insert(inbound));
        assert_eq!(spd.by_hosts.len(), 1);
        assert_eq!(spd.lookup(Direction::Out, a, b, IPPROTO_IPIP), Some(&out));
        assert_eq!(
            spd.lookup(Direction::In, b, a, IPPROTO_IPIP),
            Some(&inbound)
        );
        assert!(spd.lookup(Direction::In, a, b, IPPROTO_IPIP).is_none());
        assert!(spd.lookup(Direction::Out, b, a, IPPROTO_IPIP).is_none());
        assert!(spd.remove(&out.id()));
        assert_eq!(
            spd.lookup(Direction::In, b, a, IPPROTO_IPIP),
            Some(&inbound)
        );
        assert!(spd.remove(&inbound.id()));
        assert!(spd.by_hosts.is_empty());
    }
}
