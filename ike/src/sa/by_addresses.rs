//! The IKE SAs on each pair of addresses (ours, the peer's), so that finding an SA's
//! fellows with one peer costs the SAs with that peer, not every SA of the engine. Peers
//! are told apart by both addresses, as [`super::engine`] judges "the same peer": one
//! node that speaks for many (a load generator, a gateway with many local addresses)
//! still gets one short list per address pair.

use std::collections::HashMap;
use std::net::IpAddr;

use smallvec::SmallVec;

/// Our address and the peer's.
pub(super) type Addresses = (IpAddr, IpAddr);

/// Most pairs carry one IKE SA (two across a rekey): its SPI stays in the entry.
#[derive(Default)]
pub(super) struct ByAddresses(HashMap<Addresses, SmallVec<[u64; 1]>>);

impl ByAddresses {
    pub fn add(&mut self, key: Addresses, spi: u64) {
        let spis = self.0.entry(key).or_default();
        if !spis.contains(&spi) {
            spis.push(spi);
        }
    }

    pub fn remove(&mut self, key: Addresses, spi: u64) {
        if let Some(spis) = self.0.get_mut(&key) {
            spis.retain(|s| *s != spi);
            if spis.is_empty() {
                self.0.remove(&key);
            }
        }
    }

    /// The local SPIs of the IKE SAs on these addresses.
    pub fn get(&self, key: Addresses) -> &[u64] {
        self.0.get(&key).map_or(&[], |spis| spis.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::ByAddresses;
    use std::net::IpAddr;

    #[test]
    fn adds_once_and_forgets_empty_pairs() {
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let (us, a, b) = (ip("192.0.2.9"), ip("192.0.2.1"), ip("192.0.2.2"));
        let other_local = ip("192.0.2.8");
        let mut index = ByAddresses::default();
        index.add((us, a), 1);
        index.add((us, a), 1);
        index.add((us, a), 2);
        index.add((us, b), 3);
        index.add((other_local, a), 4);
        assert_eq!(index.get((us, a)), &[1, 2]);
        assert_eq!(index.get((other_local, a)), &[4]);
        index.remove((us, a), 1);
        index.remove((us, b), 3);
        assert_eq!(index.get((us, a)), &[2]);
        assert!(index.get((us, b)).is_empty());
        assert!(!index.0.contains_key(&(us, b)));
    }
}
