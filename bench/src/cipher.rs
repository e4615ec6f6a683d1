//! This machine's single-core ChaCha20-Poly1305 speed, the ceiling of a userspace data
//! plane that encrypts on one core.

use std::time::{Duration, Instant};

use anyhow::Result;
use iiptran_xfrm::esp::{EspCipher, HEADER_LEN, MAX_TRAILER_LEN};
use iiptran_xfrm::{AeadAlg, KeyMaterial};

const PACKET: usize = 1400;

/// Payload Mbit/s of ESP-sealing 1400-octet packets on this thread for about `time`.
pub fn raw_chacha_mbps(time: Duration) -> Result<f64> {
    let cipher = EspCipher::new(
        &KeyMaterial::from_keymat(AeadAlg::ChaCha20Poly1305, &[0x42; 36])?,
        false,
    );
    let mut buf = vec![0u8; HEADER_LEN + PACKET + MAX_TRAILER_LEN];
    let start = Instant::now();
    let mut packets = 0u64;
    while start.elapsed() < time {
        for _ in 0..256 {
            packets += 1;
            cipher.seal(0x100, packets, packets.to_be_bytes(), 4, &mut buf, PACKET)?;
        }
    }
    Ok((packets * PACKET as u64 * 8) as f64 / start.elapsed().as_secs_f64() / 1e6)
}
