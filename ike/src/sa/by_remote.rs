//! The IKE SAs with each remote address, so that finding an SA's fellows with one peer
//! costs the SAs with that peer, not every SA of the engine.

use std::collections::HashMap;
use std::net::IpAddr;

#[derive(Default)]
pub(super) struct ByRemote(HashMap<IpAddr, Vec<u64>>);

impl ByRemote {
    pub fn add(&mut self, remote: IpAddr, spi: u64) {
        let spis = self.0.entry(remote).or_default();
        if !spis.contains(&spi) {
            spis.push(spi);
        }
    }

    pub fn remove(&mut self, remote: IpAddr, spi: u64) {
        if let Some(spis) = self.0.get_mut(&remote) {
            spis.retain(|s| *s != spi);
            if spis.is_empty() {
                self.0.remove(&remote);
            }
        }
    }

    /// The local SPIs of the IKE SAs with `remote`.
    pub fn get(&self, remote: IpAddr) -> &[u64] {
        self.0.get(&remote).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::ByRemote;
    use std::net::IpAddr;

    #[test]
    fn adds_once_and_forgets_empty_addresses() {
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let mut index = ByRemote::default();
        index.add(a, 1);
        index.add(a, 1);
        index.add(a, 2);
        index.add(b, 3);
        assert_eq!(index.get(a), &[1, 2]);
        index.remove(a, 1);
        index.remove(b, 3);
        assert_eq!(index.get(a), &[2]);
        assert!(index.get(b).is_empty());
        assert!(!index.0.contains_key(&b));
    }
}
