//! Certs-only CMS SignedData (RFC 5652 §5, "degenerate" PKCS#7), the container EST uses to
//! carry certificates (RFC 7030 §4.1.3, §4.2.3).

use rustls_pki_types::CertificateDer;
use yasna::models::ObjectIdentifier;
use yasna::{ASN1Error, ASN1ErrorKind, Tag};

const SIGNED_DATA: &[u64] = &[1, 2, 840, 113_549, 1, 7, 2];
const DATA: &[u64] = &[1, 2, 840, 113_549, 1, 7, 1];

/// A PKCS#7 blob that is not a certs-only SignedData.
#[derive(Debug, thiserror::Error)]
#[error("not a certs-only PKCS#7 SignedData: {0}")]
pub struct Pkcs7Error(String);

/// Encodes `certs` as a DER ContentInfo holding a SignedData with no content and no signers.
pub fn encode_certs_only(certs: &[CertificateDer<'_>]) -> Vec<u8> {
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next()
                .write_oid(&ObjectIdentifier::from_slice(SIGNED_DATA));
            w.next().write_tagged(Tag::context(0), |w| {
                w.write_sequence(|w| {
                    w.next().write_u8(1);
                    w.next().write_set_of(|_| {});
                    w.next().write_sequence(|w| {
                        w.next().write_oid(&ObjectIdentifier::from_slice(DATA));
                    });
                    // A SET OF in DER is sorted; EST readers take the order as given, so
                    // the chain order is kept by writing the certificates in turn.
                    w.next().write_tagged_implicit(Tag::context(0), |w| {
                        w.write_sequence(|w| {
                            for cert in certs {
                                w.next().write_der(cert);
                            }
                        });
                    });
                    w.next().write_set_of(|_| {});
                });
            });
        });
    })
}

/// Decodes the certificates of a certs-only SignedData (BER accepted), in their order.
pub fn decode_certs_only(der: &[u8]) -> Result<Vec<CertificateDer<'static>>, Pkcs7Error> {
    yasna::parse_ber(der, |r| {
        r.read_sequence(|r| {
            let oid = r.next().read_oid()?;
            if oid != ObjectIdentifier::from_slice(SIGNED_DATA) {
                return Err(ASN1Error::new(ASN1ErrorKind::Invalid));
            }
            r.next().read_tagged(Tag::context(0), |r| {
                r.read_sequence(|r| {
                    r.next().read_u8()?;
                    r.next().read_set_of(|r| r.read_der().map(drop))?;
                    r.next().read_sequence(|r| {
                        r.next().read_oid()?;
                        r.read_optional(|r| {
                            r.read_tagged(Tag::context(0), |r| r.read_der().map(drop))
                        })?;
                        Ok(())
                    })?;
                    let certs = r
                        .read_optional(|r| {
                            r.read_tagged_implicit(Tag::context(0), |r| {
                                let mut certs = Vec::new();
                                r.read_sequence_of(|r| {
                                    certs.push(CertificateDer::from(r.read_der()?));
                                    Ok(())
                                })?;
                                Ok(certs)
                            })
                        })?
                        .unwrap_or_default();
                    r.read_optional(|r| {
                        r.read_tagged_implicit(Tag::context(1), |r| {
                            r.read_set_of(|r| r.read_der().map(drop))
                        })
                    })?;
                    r.next().read_set_of(|r| r.read_der().map(drop))?;
                    Ok(certs)
                })
            })
        })
    })
    .map_err(|e| Pkcs7Error(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_order() {
        let a = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x07]);
        let b = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]);
        let der = encode_certs_only(&[a.clone(), b.clone()]);
        assert_eq!(decode_certs_only(&der).unwrap(), vec![a, b]);
    }

    #[test]
    fn rejects_other_content() {
        let der = yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_oid(&ObjectIdentifier::from_slice(DATA));
                w.next()
                    .write_tagged(Tag::context(0), |w| w.write_bytes(b"x"));
            })
        });
        assert!(decode_certs_only(&der).is_err());
        assert!(decode_certs_only(&[0x30, 0x80]).is_err());
        assert!(decode_certs_only(&[]).is_err());
    }
}
