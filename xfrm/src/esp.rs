//! ESP (RFC 4303) with the AEAD transforms of RFC 7634 and RFC 4106, in place and without
//! allocation, so the userspace data plane can reuse one buffer per direction.
//!
//! Wire layout: `SPI(4) | seq(4) | IV(8) | ciphertext(payload | padding | pad len | next
//! header) | ICV(16)`. The nonce is `salt || IV`; the AAD is `SPI || seq` or, with extended
//! sequence numbers, `SPI || seq-hi || seq-lo`.

use aes_gcm::{Aes128Gcm, Aes256Gcm};
use chacha20poly1305::aead::array::Array;
use chacha20poly1305::{AeadInOut, ChaCha20Poly1305, KeyInit};
use zeroize::Zeroizing;

use crate::model::{AeadAlg, ICV_LEN, KeyMaterial, SALT_LEN};

/// SPI, sequence number and explicit IV.
pub const HEADER_LEN: usize = 16;
const IV_LEN: usize = 8;
/// Payload plus trailer is padded to this (RFC 4303 §2.4 with a stream-like cipher).
const ALIGN: usize = 4;
/// The most the trailer and ICV add after the payload.
pub const MAX_TRAILER_LEN: usize = ALIGN - 1 + 2 + ICV_LEN;

/// Why a packet could not be sealed or opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EspError {
    #[error("packet too short for ESP")]
    Truncated,
    #[error("buffer too small for the sealed packet")]
    NoRoom,
    #[error("ICV check failed")]
    Auth,
    #[error("malformed ESP trailer")]
    BadTrailer,
}

/// The cleartext header of an ESP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspHeader {
    pub spi: u32,
    /// Low 32 bits of the sequence number.
    pub seq: u32,
}

impl EspHeader {
    /// Reads SPI and sequence number; fails when the packet cannot even hold an ICV.
    pub fn parse(packet: &[u8]) -> Result<Self, EspError> {
        if packet.len() < HEADER_LEN + 2 + ICV_LEN {
            return Err(EspError::Truncated);
        }
        let word = |i: usize| {
            packet
                .get(i..i + 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_be_bytes)
                .ok_or(EspError::Truncated)
        };
        Ok(Self {
            spi: word(0)?,
            seq: word(4)?,
        })
    }
}

enum Aead {
    ChaCha(Box<ChaCha20Poly1305>),
    Gcm128(Box<Aes128Gcm>),
    Gcm256(Box<Aes256Gcm>),
}

/// One SA's AEAD state: the expanded key and the salt.
pub struct EspCipher {
    aead: Aead,
    salt: Zeroizing<[u8; SALT_LEN]>,
    esn: bool,
}

/// Where the decrypted payload lies and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub payload: std::ops::Range<usize>,
    pub next_header: u8,
}

impl EspCipher {
    pub fn new(key: &KeyMaterial, esn: bool) -> Self {
        // KeyMaterial guarantees the key length of its algorithm, so these cannot fail;
        // an empty-key fallback would be worse than the impossible panic.
        let aead = match key.alg() {
            AeadAlg::ChaCha20Poly1305 => Aead::ChaCha(Box::new(
                ChaCha20Poly1305::new_from_slice(key.key()).expect("32-byte key"),
            )),
            AeadAlg::AesGcm128 => Aead::Gcm128(Box::new(
                Aes128Gcm::new_from_slice(key.key()).expect("16-byte key"),
            )),
            AeadAlg::AesGcm256 => Aead::Gcm256(Box::new(
                Aes256Gcm::new_from_slice(key.key()).expect("32-byte key"),
            )),
        };
        Self {
            aead,
            salt: Zeroizing::new(*key.salt()),
            esn,
        }
    }

    fn nonce(&self, iv: &[u8; IV_LEN]) -> Array<u8, chacha20poly1305::consts::U12> {
        let mut n = Array::<u8, chacha20poly1305::consts::U12>::default();
        n[..SALT_LEN].copy_from_slice(&self.salt[..]);
        n[SALT_LEN..].copy_from_slice(iv);
        n
    }

    fn aad(&self, spi: u32, seq: u64, out: &mut [u8; 12]) -> usize {
        out[..4].copy_from_slice(&spi.to_be_bytes());
        if self.esn {
            out[4..].copy_from_slice(&seq.to_be_bytes());
            12
        } else {
            out[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
            8
        }
    }

    /// Seals `buf[HEADER_LEN..HEADER_LEN + payload_len]` in place and returns the packet
    /// length. `buf` must have room for [`MAX_TRAILER_LEN`] octets after the payload.
    pub fn seal(
        &self,
        spi: u32,
        seq: u64,
        iv: [u8; IV_LEN],
        next_header: u8,
        buf: &mut [u8],
        payload_len: usize,
    ) -> Result<usize, EspError> {
        let pad = (ALIGN - (payload_len + 2) % ALIGN) % ALIGN;
        let ct_end = HEADER_LEN + payload_len + pad + 2;
        let total = ct_end + ICV_LEN;
        if buf.len() < total {
            return Err(EspError::NoRoom);
        }
        buf[..4].copy_from_slice(&spi.to_be_bytes());
        buf[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
        buf[8..HEADER_LEN].copy_from_slice(&iv);
        let trailer = &mut buf[HEADER_LEN + payload_len..ct_end];
        for (i, b) in trailer[..pad].iter_mut().enumerate() {
            // RFC 4303 §2.4: the default padding is 1, 2, 3, ...
            *b = i as u8 + 1;
        }
        trailer[pad] = pad as u8;
        trailer[pad + 1] = next_header;
        let mut aad = [0u8; 12];
        let aad_len = self.aad(spi, seq, &mut aad);
        let nonce = self.nonce(&iv);
        let (body, icv) = buf[HEADER_LEN..total].split_at_mut(ct_end - HEADER_LEN);
        let tag = match &self.aead {
            Aead::ChaCha(c) => c.encrypt_inout_detached(&nonce, &aad[..aad_len], body.into()),
            Aead::Gcm128(c) => c.encrypt_inout_detached(&nonce, &aad[..aad_len], body.into()),
            Aead::Gcm256(c) => c.encrypt_inout_detached(&nonce, &aad[..aad_len], body.into()),
        }
        .map_err(|_| EspError::NoRoom)?;
        icv.copy_from_slice(&tag);
        Ok(total)
    }

    /// Authenticates and decrypts `packet` in place. `seq` is the full sequence number the
    /// replay window inferred (its high half is used only with ESN).
    pub fn open(&self, packet: &mut [u8], seq: u64) -> Result<Opened, EspError> {
        let hdr = EspHeader::parse(packet)?;
        let iv: [u8; IV_LEN] = packet[8..HEADER_LEN]
            .try_into()
            .map_err(|_| EspError::Truncated)?;
        let ct_end = packet.len() - ICV_LEN;
        let mut aad = [0u8; 12];
        let aad_len = self.aad(hdr.spi, seq, &mut aad);
        let nonce = self.nonce(&iv);
        let (head, icv) = packet.split_at_mut(ct_end);
        let body = &mut head[HEADER_LEN..];
        let tag = Array::try_from(&icv[..]).map_err(|_| EspError::Truncated)?;
        match &self.aead {
            Aead::ChaCha(c) => c.decrypt_inout_detached(&nonce, &aad[..aad_len], body.into(), &tag),
            Aead::Gcm128(c) => c.decrypt_inout_detached(&nonce, &aad[..aad_len], body.into(), &tag),
            Aead::Gcm256(c) => c.decrypt_inout_detached(&nonce, &aad[..aad_len], body.into(), &tag),
        }
        .map_err(|_| EspError::Auth)?;
        let [.., pad, next_header] = *body else {
            return Err(EspError::Truncated);
        };
        let payload_len = body
            .len()
            .checked_sub(usize::from(pad) + 2)
            .ok_or(EspError::BadTrailer)?;
        Ok(Opened {
            payload: HEADER_LEN..HEADER_LEN + payload_len,
            next_header,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testvectors::{EspVector, load};

    fn cipher(v: &EspVector) -> EspCipher {
        let mut km = v.key.clone();
        km.extend_from_slice(&v.salt);
        let alg = match v.key.len() {
            16 => AeadAlg::AesGcm128,
            32 if v.chacha => AeadAlg::ChaCha20Poly1305,
            _ => AeadAlg::AesGcm256,
        };
        EspCipher::new(&KeyMaterial::from_keymat(alg, &km).unwrap(), v.esn)
    }

    fn check_vectors(file: &str) -> usize {
        let vectors = load(file);
        for v in &vectors {
            let c = cipher(v);
            // Decode: the published packet opens to the published plaintext.
            let mut pkt = v.packet.clone();
            let hdr = EspHeader::parse(&pkt).unwrap();
            assert_eq!(
                (hdr.spi, u64::from(hdr.seq)),
                (v.spi, v.seq & 0xffff_ffff),
                "{}",
                v.name
            );
            let opened = c.open(&mut pkt, v.seq).unwrap();
            let trailer_len = v.plaintext.len() - opened.payload.len();
            assert_eq!(
                &pkt[opened.payload.clone()],
                &v.plaintext[..v.plaintext.len() - trailer_len]
            );
            assert_eq!(
                opened.next_header,
                *v.plaintext.last().unwrap(),
                "{}",
                v.name
            );
            // Encode: sealing the payload with the same SPI, sequence number and IV gives
            // the published packet byte for byte.
            let payload = &v.plaintext[..opened.payload.len()];
            let mut buf = vec![0u8; HEADER_LEN + payload.len() + MAX_TRAILER_LEN];
            buf[HEADER_LEN..HEADER_LEN + payload.len()].copy_from_slice(payload);
            let iv: [u8; 8] = v.packet[8..16].try_into().unwrap();
            let n = c
                .seal(
                    v.spi,
                    v.seq,
                    iv,
                    opened.next_header,
                    &mut buf,
                    payload.len(),
                )
                .unwrap();
            assert_eq!(hex::encode(&buf[..n]), hex::encode(&v.packet), "{}", v.name);
        }
        vectors.len()
    }

    #[test]
    fn rfc7634_appendix_a_encodes_and_decodes_byte_exact() {
        assert_eq!(check_vectors("rfc7634-appendix-a.txt"), 1);
    }

    #[test]
    fn draft_mcgrew_gcm_test_vectors_encode_and_decode_byte_exact() {
        assert!(check_vectors("draft-mcgrew-gcm-test-01.txt") >= 10);
    }

    #[test]
    fn tampering_anywhere_fails_authentication() {
        let v = &load("rfc7634-appendix-a.txt")[0];
        let c = cipher(v);
        for i in 0..v.packet.len() {
            let mut pkt = v.packet.clone();
            pkt[i] ^= 0x01;
            let seq = if i < 8 {
                u64::from(EspHeader::parse(&pkt).unwrap().seq)
            } else {
                v.seq
            };
            assert_eq!(
                c.open(&mut pkt, seq),
                Err(EspError::Auth),
                "flipped octet {i}"
            );
        }
        // Without ESN the high half of the sequence number is not authenticated; with ESN
        // it is, so a wrong guess of it fails.
        let plain = c.open(&mut v.packet.clone(), v.seq).unwrap();
        assert_eq!(c.open(&mut v.packet.clone(), v.seq | 1 << 32), Ok(plain));
        let esn = EspCipher {
            esn: true,
            ..cipher(v)
        };
        assert_eq!(esn.open(&mut v.packet.clone(), v.seq), Err(EspError::Auth));
    }

    #[test]
    fn short_or_padless_packets_are_rejected_without_panic() {
        let v = &load("rfc7634-appendix-a.txt")[0];
        let c = cipher(v);
        for len in 0..HEADER_LEN + 2 + ICV_LEN {
            let mut pkt = v.packet[..len.min(v.packet.len())].to_vec();
            assert_eq!(
                c.open(&mut pkt, v.seq),
                Err(EspError::Truncated),
                "length {len}"
            );
        }
        // A packet that authenticates but whose pad length points before the payload.
        let mut raw = [0u8; HEADER_LEN + 2 + ICV_LEN];
        raw[HEADER_LEN..HEADER_LEN + 2].copy_from_slice(&[0xff, 4]);
        let sealed = seal_exact(&c, &mut raw);
        assert_eq!(c.open(&mut raw[..sealed], 1), Err(EspError::BadTrailer));
        assert_eq!(
            c.seal(1, 1, [0; 8], 4, &mut [0u8; 20], 4),
            Err(EspError::NoRoom)
        );
    }

    /// Encrypts `buf[HEADER_LEN..len-ICV]` verbatim as the whole ciphertext (no trailer is
    /// added), to forge packets whose decrypted trailer is chosen by the test.
    fn seal_exact(c: &EspCipher, buf: &mut [u8]) -> usize {
        let (spi, seq, iv) = (1u32, 1u64, [0u8; 8]);
        buf[..4].copy_from_slice(&spi.to_be_bytes());
        buf[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
        let mut aad = [0u8; 12];
        let aad_len = c.aad(spi, seq, &mut aad);
        let nonce = c.nonce(&iv);
        let ct_end = buf.len() - ICV_LEN;
        let (head, icv) = buf.split_at_mut(ct_end);
        let Aead::ChaCha(a) = &c.aead else {
            panic!("the forging helper uses ChaCha20-Poly1305")
        };
        let tag = a
            .encrypt_inout_detached(&nonce, &aad[..aad_len], (&mut head[HEADER_LEN..]).into())
            .unwrap();
        icv.copy_from_slice(&tag);
        buf.len()
    }
}
