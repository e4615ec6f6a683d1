//! What the engine is configured with: algorithm suites in order of preference, timers
//! and limits. Everything peer-specific comes from the caller's [`crate::sa::Policy`].

use crate::iana::{DhId, EncrId, IntegId, PrfId};
use std::time::Duration;

/// One IKE SA algorithm suite: a proposal with a single transform of each type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IkeSuite {
    pub encr: EncrId,
    /// KEY_LENGTH attribute in bits, for ciphers that need one (AES).
    pub key_bits: Option<u16>,
    /// `IntegId::NONE` for AEAD ciphers; then no INTEG transform is sent.
    pub integ: IntegId,
    pub prf: PrfId,
    pub dh: DhId,
}

/// One ESP algorithm suite for child SAs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EspSuite {
    pub encr: EncrId,
    pub key_bits: Option<u16>,
    pub integ: IntegId,
    pub esn: bool,
}

impl IkeSuite {
    /// x25519, ChaCha20-Poly1305, HMAC-SHA2-256: the suite iiptran prefers.
    pub const CHACHA_X25519: IkeSuite = IkeSuite {
        encr: EncrId::CHACHA20_POLY1305,
        key_bits: None,
        integ: IntegId::NONE,
        prf: PrfId::HMAC_SHA2_256,
        dh: DhId::CURVE25519,
    };
    /// P-256, ChaCha20-Poly1305, HMAC-SHA2-256.
    pub const CHACHA_P256: IkeSuite = IkeSuite {
        dh: DhId::ECP_256,
        ..IkeSuite::CHACHA_X25519
    };
}

impl EspSuite {
    pub const CHACHA: EspSuite = EspSuite {
        encr: EncrId::CHACHA20_POLY1305,
        key_bits: None,
        integ: IntegId::NONE,
        esn: false,
    };
    pub const AES256_GCM16: EspSuite = EspSuite {
        encr: EncrId::AES_GCM_16,
        key_bits: Some(256),
        integ: IntegId::NONE,
        esn: false,
    };
}

/// The algorithms offered and accepted: node-wide from [`Config::suites`], or for one
/// peer from [`crate::sa::Policy::suites`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suites {
    /// IKE suites, most preferred first; the first one's group is sent in KE.
    pub ike: Vec<IkeSuite>,
    pub esp: Vec<EspSuite>,
    /// Send KE in CREATE_CHILD_SA for child SAs (perfect forward secrecy) with this group.
    pub child_pfs: Option<DhId>,
}

/// Retransmission of requests (RFC 7296 §2.1). The n-th retransmission (n from 0) waits
/// `timeout * base^n`; after `tries` retransmissions and one more wait the peer is dead.
/// The defaults are strongSwan's: 4 s, 1.8, 5.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Retransmission {
    pub timeout: Duration,
    pub base: f64,
    pub tries: u32,
}

impl Default for Retransmission {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(4),
            base: 1.8,
            tries: 5,
        }
    }
}

impl Retransmission {
    /// How long a request is retransmitted before the peer counts as dead: the longest a
    /// peer may still send a request we once answered.
    pub fn give_up_after(&self) -> Duration {
        (0..=self.tries).map(|n| self.wait(n)).sum()
    }

    /// How long to wait after sending attempt `n` (0 = the first transmission).
    pub fn wait(&self, n: u32) -> Duration {
        let factor = self.base.powi(i32::try_from(n).unwrap_or(i32::MAX));
        self.timeout.mul_f64(factor.min(1e6))
    }
}

/// When SAs are renewed. Child SAs are rekeyed at `child_rekey`, IKE SAs at `ike_rekey`;
/// `child_hard` is the lifetime handed to the data plane, after which the kernel drops the
/// SA if no rekey happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetimes {
    pub child_rekey: Option<Duration>,
    pub child_hard: Duration,
    pub ike_rekey: Option<Duration>,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            child_rekey: Some(Duration::from_secs(3600)),
            child_hard: Duration::from_secs(3600 + 600),
            ike_rekey: Some(Duration::from_secs(4 * 3600)),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    /// Our IKE suites, most preferred first; the first one's group is sent in KE.
    pub ike_suites: Vec<IkeSuite>,
    pub esp_suites: Vec<EspSuite>,
    /// Send KE in CREATE_CHILD_SA for child SAs (perfect forward secrecy) with this group.
    pub child_pfs: Option<DhId>,
    pub retransmission: Retransmission,
    /// An idle IKE SA sends an empty INFORMATIONAL after this long without traffic.
    pub liveness_interval: Option<Duration>,
    pub lifetimes: Lifetimes,
    /// Half-open responder SAs from which on IKE_SA_INIT requests must carry a cookie.
    pub cookie_threshold: usize,
    /// Half-open responder SAs beyond which new requests are dropped.
    pub half_open_limit: usize,
    /// Encrypted messages above this many bytes are fragmented (RFC 7383) when the peer
    /// supports it. Counts the IKE message, without UDP/IP headers or the non-ESP marker.
    pub fragment_size: usize,
    pub max_fragments: u16,
    /// The largest message we reassemble.
    pub max_message: usize,
    /// Half-open SAs and unfinished reassemblies are dropped after this long.
    pub half_open_timeout: Duration,
    /// Move to port 4500 for IKE_AUTH even without NAT.
    pub force_nat_t: bool,
    /// INSECURE, for debugging only: log every IKE SA's SPIs and SK_e/SK_a keys (hex, at
    /// WARN level), so captures of its messages can be decrypted (e.g. by Wireshark).
    pub log_keys: bool,
}

impl Config {
    /// The node-wide suites, for peers the policy has none of their own for.
    pub fn suites(&self) -> Suites {
        Suites {
            ike: self.ike_suites.clone(),
            esp: self.esp_suites.clone(),
            child_pfs: self.child_pfs,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ike_suites: vec![IkeSuite::CHACHA_X25519, IkeSuite::CHACHA_P256],
            esp_suites: vec![EspSuite::CHACHA, EspSuite::AES256_GCM16],
            child_pfs: None,
            retransmission: Retransmission::default(),
            liveness_interval: Some(Duration::from_secs(30)),
            lifetimes: Lifetimes::default(),
            cookie_threshold: 10,
            half_open_limit: 5000,
            fragment_size: 1280,
            max_fragments: 32,
            max_message: 64 * 1024,
            half_open_timeout: Duration::from_secs(30),
            force_nat_t: false,
            log_keys: false,
        }
    }
}
