//! Stateless cookies (RFC 7296 §2.6): a responder under load answers IKE_SA_INIT with a
//! COOKIE it can recompute, and only keeps state for requests that return it.
//!
//! Cookie = <generation (4 octets)> | HMAC-SHA256(secret of that generation, Ni | IPi |
//! port | SPIi). The secret rotates every `ROTATION`; cookies of the previous generation
//! stay valid so that a rotation does not refuse an initiator in mid-retry.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

const ROTATION: Duration = Duration::from_secs(120);
const GENERATION_LEN: usize = 4;

pub(super) struct Cookies {
    started: Instant,
    generation: u32,
    current: Zeroizing<[u8; 32]>,
    previous: Zeroizing<[u8; 32]>,
}

impl Cookies {
    pub fn new(now: Instant) -> Result<Self, super::keys::KeyError> {
        Ok(Self {
            started: now,
            generation: 0,
            current: fresh()?,
            previous: fresh()?,
        })
    }

    fn rotate(&mut self, now: Instant) -> Result<(), super::keys::KeyError> {
        while now.saturating_duration_since(self.started) >= ROTATION {
            self.started += ROTATION;
            self.generation = self.generation.wrapping_add(1);
            self.previous = std::mem::replace(&mut self.current, fresh()?);
        }
        Ok(())
    }

    pub fn make(
        &mut self,
        now: Instant,
        ni: &[u8],
        remote: SocketAddr,
        spi_i: u64,
    ) -> Result<Vec<u8>, super::keys::KeyError> {
        self.rotate(now)?;
        let mut cookie = self.generation.to_be_bytes().to_vec();
        cookie.extend_from_slice(&mac(&self.current, ni, remote, spi_i));
        Ok(cookie)
    }

    pub fn check(
        &mut self,
        now: Instant,
        cookie: &[u8],
        ni: &[u8],
        remote: SocketAddr,
        spi_i: u64,
    ) -> bool {
        if self.rotate(now).is_err() {
            return false;
        }
        let Some((generation, tag)) = cookie.split_at_checked(GENERATION_LEN) else {
            return false;
        };
        let secret = if generation == self.generation.to_be_bytes() {
            &self.current
        } else if generation == self.generation.wrapping_sub(1).to_be_bytes() {
            &self.previous
        } else {
            return false;
        };
        bool::from(mac(secret, ni, remote, spi_i).ct_eq(tag))
    }
}

fn fresh() -> Result<Zeroizing<[u8; 32]>, super::keys::KeyError> {
    let mut secret = Zeroizing::new([0; 32]);
    getrandom::fill(secret.as_mut_slice()).map_err(|_| super::keys::KeyError::Random)?;
    Ok(secret)
}

fn mac(secret: &[u8; 32], ni: &[u8], remote: SocketAddr, spi_i: u64) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes 32-byte keys");
    m.update(ni);
    m.update(remote.ip().to_string().as_bytes());
    m.update(&remote.port().to_be_bytes());
    m.update(&spi_i.to_be_bytes());
    m.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_survive_one_rotation_only() {
        let t0 = Instant::now();
        let addr: SocketAddr = "192.0.2.1:500".parse().unwrap();
        let mut c = Cookies::new(t0).unwrap();
        let cookie = c.make(t0, b"nonce", addr, 7).unwrap();
        assert!(c.check(t0, &cookie, b"nonce", addr, 7));
        assert!(!c.check(t0, &cookie, b"nonce", addr, 8));
        assert!(!c.check(t0, &cookie, b"other", addr, 7));
        assert!(!c.check(t0, &cookie, b"nonce", "192.0.2.2:500".parse().unwrap(), 7));
        assert!(c.check(t0 + ROTATION, &cookie, b"nonce", addr, 7));
        assert!(!c.check(t0 + 2 * ROTATION, &cookie, b"nonce", addr, 7));
        assert!(!c.check(t0, &cookie[..3], b"nonce", addr, 7));
    }
}
