//! strongSwan-style proposal strings (`aes256gcm16-prfsha384-ecp256`) as typed transform
//! lists. Only algorithms the IKE engine implements are accepted, so a configuration that
//! loads can also be negotiated.

use core::fmt;

use iiptran_ike::iana::{DhId, EncrId, EsnId, IntegId, PrfId};

/// An encryption transform with its key length attribute (`None` for ciphers with a fixed
/// key, which carry no Key Length attribute, e.g. ChaCha20-Poly1305 per RFC 7634).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Encr {
    pub id: EncrId,
    pub key_bits: Option<u16>,
}

impl Encr {
    /// Combined-mode ciphers carry their own integrity protection.
    pub fn is_aead(self) -> bool {
        matches!(self.id, EncrId::CHACHA20_POLY1305 | EncrId::AES_GCM_16)
    }
}

/// Which SA a proposal is for: the rules differ (an IKE proposal needs a PRF and a DH
/// group; in ESP a DH group means PFS and PRFs have no place).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Ike,
    Esp,
}

/// One proposal: each list holds the alternatives of one transform type, in preference
/// order. Empty lists mean the transform type is absent (INTEG with AEAD, DH in ESP
/// without PFS, PRF and ESN in IKE).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    pub protocol: Protocol,
    pub encr: Vec<Encr>,
    pub prf: Vec<PrfId>,
    pub integ: Vec<IntegId>,
    pub dh: Vec<DhId>,
    pub esn: Vec<EsnId>,
}

/// A proposal string that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposalError {
    #[error("unknown algorithm {0:?} in proposal")]
    UnknownToken(String),
    #[error("{0:?} has no place in an {1} proposal")]
    Misplaced(String, &'static str),
    #[error("proposal names no encryption algorithm")]
    NoEncryption,
    #[error("proposal mixes combined-mode (AEAD) and plain encryption algorithms")]
    MixedAead,
    #[error("an integrity algorithm is needed with a non-AEAD cipher")]
    NoIntegrity,
    #[error("an integrity algorithm cannot be combined with an AEAD cipher")]
    IntegrityWithAead,
    #[error("an IKE proposal needs a PRF (e.g. prfsha256) with an AEAD cipher")]
    NoPrf,
    #[error("an IKE proposal needs a DH group (e.g. x25519)")]
    NoDh,
}

enum Token {
    Encr(Encr),
    Prf(PrfId),
    Integ(IntegId),
    Dh(DhId),
    Esn(EsnId),
}

fn token(word: &str) -> Option<Token> {
    let encr = |id, key_bits| Some(Token::Encr(Encr { id, key_bits }));
    match word {
        "chacha20poly1305" => encr(EncrId::CHACHA20_POLY1305, None),
        "aes128gcm16" | "aes128gcm" => encr(EncrId::AES_GCM_16, Some(128)),
        "aes256gcm16" | "aes256gcm" => encr(EncrId::AES_GCM_16, Some(256)),
        "aes" | "aes128" => encr(EncrId::AES_CBC, Some(128)),
        "aes256" => encr(EncrId::AES_CBC, Some(256)),
        "sha256" | "sha2_256" => Some(Token::Integ(IntegId::HMAC_SHA2_256_128)),
        "sha384" | "sha2_384" => Some(Token::Integ(IntegId::HMAC_SHA2_384_192)),
        "sha512" | "sha2_512" => Some(Token::Integ(IntegId::HMAC_SHA2_512_256)),
        "prfsha256" => Some(Token::Prf(PrfId::HMAC_SHA2_256)),
        "prfsha384" => Some(Token::Prf(PrfId::HMAC_SHA2_384)),
        "prfsha512" => Some(Token::Prf(PrfId::HMAC_SHA2_512)),
        "x25519" | "curve25519" => Some(Token::Dh(DhId::CURVE25519)),
        "ecp256" => Some(Token::Dh(DhId::ECP_256)),
        "esn" => Some(Token::Esn(EsnId::ESN)),
        "noesn" => Some(Token::Esn(EsnId::NO_ESN)),
        _ => None,
    }
}

/// The PRF strongSwan pairs with an integrity algorithm when an IKE proposal names none.
fn implied_prf(integ: IntegId) -> Option<PrfId> {
    match integ {
        IntegId::HMAC_SHA2_256_128 => Some(PrfId::HMAC_SHA2_256),
        IntegId::HMAC_SHA2_384_192 => Some(PrfId::HMAC_SHA2_384),
        IntegId::HMAC_SHA2_512_256 => Some(PrfId::HMAC_SHA2_512),
        _ => None,
    }
}

fn push_unique<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if !list.contains(&item) {
        list.push(item);
    }
}

impl Proposal {
    /// Parses an IKE SA proposal.
    pub fn ike(text: &str) -> Result<Self, ProposalError> {
        Self::parse(text, Protocol::Ike)
    }

    /// Parses an ESP (child SA) proposal.
    pub fn esp(text: &str) -> Result<Self, ProposalError> {
        Self::parse(text, Protocol::Esp)
    }

    fn parse(text: &str, protocol: Protocol) -> Result<Self, ProposalError> {
        let mut p = Proposal {
            protocol,
            encr: Vec::new(),
            prf: Vec::new(),
            integ: Vec::new(),
            dh: Vec::new(),
            esn: Vec::new(),
        };
        for word in text.trim().split('-') {
            let word = word.trim().to_ascii_lowercase();
            let misplaced = || ProposalError::Misplaced(word.clone(), protocol.name());
            match token(&word).ok_or_else(|| ProposalError::UnknownToken(word.clone()))? {
                Token::Encr(e) => push_unique(&mut p.encr, e),
                Token::Integ(i) => push_unique(&mut p.integ, i),
                Token::Dh(d) => push_unique(&mut p.dh, d),
                Token::Prf(_) if protocol == Protocol::Esp => return Err(misplaced()),
                Token::Prf(f) => push_unique(&mut p.prf, f),
                Token::Esn(_) if protocol == Protocol::Ike => return Err(misplaced()),
                Token::Esn(e) => push_unique(&mut p.esn, e),
            }
        }
        p.complete()?;
        Ok(p)
    }

    /// Checks the combination and fills in what strongSwan implies.
    fn complete(&mut self) -> Result<(), ProposalError> {
        let aead = match self.encr.first() {
            None => return Err(ProposalError::NoEncryption),
            Some(first) => first.is_aead(),
        };
        if self.encr.iter().any(|e| e.is_aead() != aead) {
            return Err(ProposalError::MixedAead);
        }
        match (aead, self.integ.is_empty()) {
            (true, false) => return Err(ProposalError::IntegrityWithAead),
            (false, true) => return Err(ProposalError::NoIntegrity),
            _ => {}
        }
        match self.protocol {
            Protocol::Ike => {
                if self.prf.is_empty() {
                    self.prf = self.integ.iter().filter_map(|&i| implied_prf(i)).collect();
                }
                if self.prf.is_empty() {
                    return Err(ProposalError::NoPrf);
                }
                if self.dh.is_empty() {
                    return Err(ProposalError::NoDh);
                }
            }
            Protocol::Esp => {
                if self.esn.is_empty() {
                    self.esn.push(EsnId::NO_ESN);
                }
            }
        }
        Ok(())
    }
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Ike => "IKE",
            Protocol::Esp => "ESP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHACHA: Encr = Encr {
        id: EncrId::CHACHA20_POLY1305,
        key_bits: None,
    };

    #[test]
    fn default_ike_proposals() {
        let p = Proposal::ike("chacha20poly1305-prfsha256-x25519").unwrap();
        assert_eq!(p.encr, [CHACHA]);
        assert_eq!(p.prf, [PrfId::HMAC_SHA2_256]);
        assert!(p.integ.is_empty());
        assert_eq!(p.dh, [DhId::CURVE25519]);
        assert!(p.esn.is_empty());

        let p = Proposal::ike("aes256gcm16-prfsha384-ecp256").unwrap();
        assert_eq!(
            p.encr,
            [Encr {
                id: EncrId::AES_GCM_16,
                key_bits: Some(256)
            }]
        );
        assert_eq!(p.prf, [PrfId::HMAC_SHA2_384]);
        assert_eq!(p.dh, [DhId::ECP_256]);
    }

    #[test]
    fn aliases_parse_alike() {
        assert_eq!(
            Proposal::ike("aes256gcm-prfsha256-curve25519"),
            Proposal::ike("AES256GCM16-prfsha256-x25519")
        );
    }

    #[test]
    fn cbc_implies_prf_from_integrity() {
        let p = Proposal::ike("aes256-aes128-sha384-sha256-ecp256").unwrap();
        assert_eq!(
            p.encr,
            [
                Encr {
                    id: EncrId::AES_CBC,
                    key_bits: Some(256)
                },
                Encr {
                    id: EncrId::AES_CBC,
                    key_bits: Some(128)
                }
            ]
        );
        assert_eq!(
            p.integ,
            [IntegId::HMAC_SHA2_384_192, IntegId::HMAC_SHA2_256_128]
        );
        assert_eq!(p.prf, [PrfId::HMAC_SHA2_384, PrfId::HMAC_SHA2_256]);

        let explicit = Proposal::ike("aes128-sha512-prfsha256-x25519").unwrap();
        assert_eq!(explicit.prf, [PrfId::HMAC_SHA2_256]);
    }

    #[test]
    fn esp_proposals() {
        let p = Proposal::esp("chacha20poly1305").unwrap();
        assert_eq!(p.encr, [CHACHA]);
        assert!(p.dh.is_empty() && p.prf.is_empty() && p.integ.is_empty());
        assert_eq!(p.esn, [EsnId::NO_ESN]);

        let p = Proposal::esp("aes128-sha256-x25519-esn-noesn").unwrap();
        assert_eq!(p.integ, [IntegId::HMAC_SHA2_256_128]);
        assert_eq!(p.dh, [DhId::CURVE25519]);
        assert!(p.prf.is_empty(), "no PRF is implied for ESP");
        assert_eq!(p.esn, [EsnId::ESN, EsnId::NO_ESN]);
    }

    #[test]
    fn rejects_what_cannot_be_negotiated() {
        let cases: [(&str, Protocol, ProposalError); 10] = [
            (
                "aes256gcm16-3des-x25519",
                Protocol::Ike,
                ProposalError::UnknownToken("3des".into()),
            ),
            ("", Protocol::Esp, ProposalError::UnknownToken("".into())),
            ("sha256-x25519", Protocol::Ike, ProposalError::NoEncryption),
            (
                "chacha20poly1305-aes256-sha256-x25519",
                Protocol::Ike,
                ProposalError::MixedAead,
            ),
            (
                "aes256gcm16-sha256-x25519",
                Protocol::Ike,
                ProposalError::IntegrityWithAead,
            ),
            ("aes256-x25519", Protocol::Ike, ProposalError::NoIntegrity),
            ("aes256gcm16-x25519", Protocol::Ike, ProposalError::NoPrf),
            ("aes256gcm16-prfsha256", Protocol::Ike, ProposalError::NoDh),
            (
                "aes256gcm16-prfsha256",
                Protocol::Esp,
                ProposalError::Misplaced("prfsha256".into(), "ESP"),
            ),
            (
                "aes256gcm16-prfsha256-x25519-esn",
                Protocol::Ike,
                ProposalError::Misplaced("esn".into(), "IKE"),
            ),
        ];
        for (text, protocol, want) in cases {
            assert_eq!(Proposal::parse(text, protocol), Err(want), "{text}");
        }
    }
}
