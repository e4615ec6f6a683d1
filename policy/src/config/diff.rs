//! What a reload changes: the neighbors to add, remove or re-establish, and the node-wide
//! sections that changed, so that a reload touches nothing else.

use std::collections::HashMap;

use super::{Config, Neighbor};

/// The difference between two configurations. Neighbors are matched by name; a neighbor
/// is `changed` when anything that affects its adjacency differs, including inherited
/// IKE settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    /// Node-wide sections that differ: `node`, `auth`, `ike`, `enroll.server`,
    /// `enroll.client`.
    pub sections: Vec<&'static str>,
}

impl ConfigDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.sections.is_empty()
    }
}

pub fn diff(old: &Config, new: &Config) -> ConfigDiff {
    // By name, not by a scan per neighbor: thousands of neighbors make that quadratic.
    let (olds, news) = (by_name(old), by_name(new));
    let mut d = ConfigDiff::default();
    for n in &new.neighbors {
        match olds.get(n.name.as_str()) {
            None => d.added.push(n.name.clone()),
            Some(&o) if o != &**n => d.changed.push(n.name.clone()),
            Some(_) => {}
        }
    }
    d.removed = old
        .neighbors
        .iter()
        .filter(|o| !news.contains_key(o.name.as_str()))
        .map(|o| o.name.clone())
        .collect();
    let sections = [
        ("node", old.node != new.node),
        ("auth", old.auth != new.auth),
        ("ike", old.ike != new.ike),
        ("enroll.server", old.enroll_server != new.enroll_server),
        ("enroll.client", old.enroll_client != new.enroll_client),
    ];
    d.sections = sections
        .into_iter()
        .filter_map(|(name, differs)| differs.then_some(name))
        .collect();
    d
}

fn by_name(config: &Config) -> HashMap<&str, &Neighbor> {
    config
        .neighbors
        .iter()
        .map(|n| (n.name.as_str(), &**n))
        .collect()
}
