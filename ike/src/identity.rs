//! IKE identities (ID payload contents, RFC 7296 §3.5): parsing and emitting them, the
//! configuration syntax operators know from strongSwan, and matching them against the
//! names a certificate is issued for.

use crate::iana::IdType;
use core::fmt;
use core::str::FromStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate, X509Name};

/// What a peer claims to be, as carried in IDi/IDr.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
    Fqdn(String),
    Email(String),
    /// A DER-encoded X.501 Name.
    Dn(Vec<u8>),
    KeyId(Vec<u8>),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("identity type {0} is not supported")]
    UnsupportedType(IdType),
    #[error("address identity of {0} bytes")]
    AddressLength(usize),
    #[error("empty identity")]
    Empty,
    #[error("name identity contains non-printable or non-ASCII characters")]
    NotPrintable,
    #[error("not a DER-encoded distinguished name")]
    BadDn,
    #[error("unknown attribute {0:?} in distinguished name")]
    UnknownDnAttribute(String),
    #[error("key id is not hexadecimal")]
    BadKeyId,
}

/// Attribute types accepted in the textual DN syntax, with the string type each is
/// encoded as (the choice strongSwan and OpenSSL make).
const DN_ATTRIBUTES: &[(&str, &str, DnString)] = &[
    ("CN", "2.5.4.3", DnString::Utf8),
    ("SN", "2.5.4.5", DnString::Printable),
    ("C", "2.5.4.6", DnString::Printable),
    ("L", "2.5.4.7", DnString::Utf8),
    ("ST", "2.5.4.8", DnString::Utf8),
    ("O", "2.5.4.10", DnString::Utf8),
    ("OU", "2.5.4.11", DnString::Utf8),
    ("E", "1.2.840.113549.1.9.1", DnString::Ia5),
    ("DC", "0.9.2342.19200300.100.1.25", DnString::Ia5),
];

#[derive(Clone, Copy)]
enum DnString {
    Utf8,
    Printable,
    Ia5,
}

impl Identity {
    /// Parses the identification data of an ID payload of type `id_type`.
    pub fn from_wire(id_type: IdType, data: &[u8]) -> Result<Self, IdentityError> {
        match id_type {
            IdType::IPV4_ADDR => <[u8; 4]>::try_from(data)
                .map(|a| Identity::Ipv4(a.into()))
                .map_err(|_| IdentityError::AddressLength(data.len())),
            IdType::IPV6_ADDR => <[u8; 16]>::try_from(data)
                .map(|a| Identity::Ipv6(a.into()))
                .map_err(|_| IdentityError::AddressLength(data.len())),
            IdType::FQDN => printable(data).map(Identity::Fqdn),
            IdType::RFC822_ADDR => printable(data).map(Identity::Email),
            IdType::DER_ASN1_DN => {
                parse_dn(data)?;
                Ok(Identity::Dn(data.to_vec()))
            }
            IdType::KEY_ID if data.is_empty() => Err(IdentityError::Empty),
            IdType::KEY_ID => Ok(Identity::KeyId(data.to_vec())),
            other => Err(IdentityError::UnsupportedType(other)),
        }
    }

    /// The ID type and identification data for an ID payload.
    pub fn to_wire(&self) -> (IdType, Vec<u8>) {
        match self {
            Identity::Ipv4(a) => (IdType::IPV4_ADDR, a.octets().to_vec()),
            Identity::Ipv6(a) => (IdType::IPV6_ADDR, a.octets().to_vec()),
            Identity::Fqdn(s) => (IdType::FQDN, s.as_bytes().to_vec()),
            Identity::Email(s) => (IdType::RFC822_ADDR, s.as_bytes().to_vec()),
            Identity::Dn(d) => (IdType::DER_ASN1_DN, d.clone()),
            Identity::KeyId(k) => (IdType::KEY_ID, k.clone()),
        }
    }
}

fn printable(data: &[u8]) -> Result<String, IdentityError> {
    if data.is_empty() {
        return Err(IdentityError::Empty);
    }
    if !data.iter().all(|b| b.is_ascii_graphic()) {
        return Err(IdentityError::NotPrintable);
    }
    String::from_utf8(data.to_vec()).map_err(|_| IdentityError::NotPrintable)
}

fn parse_dn(der: &[u8]) -> Result<X509Name<'_>, IdentityError> {
    match X509Name::from_der(der) {
        Ok(([], name)) => Ok(name),
        _ => Err(IdentityError::BadDn),
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Ipv4(a) => write!(f, "{a}"),
            Identity::Ipv6(a) => write!(f, "{a}"),
            Identity::Fqdn(s) | Identity::Email(s) => f.write_str(s),
            Identity::Dn(der) => match parse_dn(der) {
                Ok(name) => write_dn(f, &name),
                Err(_) => write!(f, "dn:{}", hex::encode(der)),
            },
            Identity::KeyId(k) => write!(f, "keyid:{}", hex::encode(k)),
        }
    }
}

fn write_dn(f: &mut fmt::Formatter<'_>, name: &X509Name<'_>) -> fmt::Result {
    for (i, attr) in name.iter_attributes().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        let oid = attr.attr_type().to_id_string();
        match DN_ATTRIBUTES.iter().find(|(_, o, _)| *o == oid) {
            Some((short, _, _)) => write!(f, "{short}=")?,
            None => write!(f, "{oid}=")?,
        }
        match attr.as_str() {
            Ok(s) => f.write_str(s)?,
            Err(_) => write!(f, "#{}", hex::encode(attr.as_slice()))?,
        }
    }
    Ok(())
}

/// strongSwan's identity syntax: an IP address, `keyid:<hex>`, a DN (`CN=a, O=vn`, any
/// string with `=`), an e-mail address (`user@host`), otherwise an FQDN (a leading `@`
/// is dropped, as strongSwan does to force FQDN).
impl FromStr for Identity {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(addr) = s.parse::<IpAddr>() {
            return Ok(match addr {
                IpAddr::V4(a) => Identity::Ipv4(a),
                IpAddr::V6(a) => Identity::Ipv6(a),
            });
        }
        if let Some(hex_id) = s.strip_prefix("keyid:") {
            let key_id = hex::decode(hex_id).map_err(|_| IdentityError::BadKeyId)?;
            return Identity::from_wire(IdType::KEY_ID, &key_id);
        }
        if s.contains('=') {
            return encode_dn(s).map(Identity::Dn);
        }
        if let Some(fqdn) = s.strip_prefix('@') {
            return printable(fqdn.as_bytes()).map(Identity::Fqdn);
        }
        if s.contains('@') {
            return printable(s.as_bytes()).map(Identity::Email);
        }
        printable(s.as_bytes()).map(Identity::Fqdn)
    }
}

/// Encodes `CN=a, O=vn` as a DER Name, one attribute per RDN, in the order written.
fn encode_dn(s: &str) -> Result<Vec<u8>, IdentityError> {
    let mut attributes = Vec::new();
    for part in s.split(',') {
        let (key, value) = part.split_once('=').ok_or(IdentityError::BadDn)?;
        let (key, value) = (key.trim(), value.trim());
        let &(_, oid, kind) = DN_ATTRIBUTES
            .iter()
            .find(|(short, _, _)| short.eq_ignore_ascii_case(key))
            .ok_or_else(|| IdentityError::UnknownDnAttribute(key.to_owned()))?;
        let arcs = oid
            .split('.')
            .map(|arc| arc.parse::<u64>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| IdentityError::BadDn)?;
        if value.is_empty() || !dn_string_fits(kind, value) {
            return Err(IdentityError::NotPrintable);
        }
        attributes.push((
            yasna::models::ObjectIdentifier::from_slice(&arcs),
            kind,
            value,
        ));
    }
    Ok(yasna::construct_der(|w| {
        w.write_sequence_of(|w| {
            for (oid, kind, value) in &attributes {
                w.next().write_set_of(|w| {
                    w.next().write_sequence(|w| {
                        w.next().write_oid(oid);
                        match kind {
                            DnString::Utf8 => w.next().write_utf8_string(value),
                            DnString::Printable => w.next().write_printable_string(value),
                            DnString::Ia5 => w.next().write_ia5_string(value),
                        }
                    })
                })
            }
        })
    }))
}

fn dn_string_fits(kind: DnString, value: &str) -> bool {
    match kind {
        DnString::Utf8 => !value.chars().any(char::is_control),
        DnString::Ia5 => value.bytes().all(|b| b.is_ascii_graphic() || b == b' '),
        DnString::Printable => value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b" '()+,-./:=?".contains(&b)),
    }
}

/// Whether the certificate `cert_der` is issued for `identity`: a subjectAltName of the
/// matching kind (dNSName case-insensitively, rfc822Name, iPAddress), the subject DN for a
/// DN identity, the subjectKeyIdentifier for a key id. An unparsable certificate matches
/// nothing.
pub fn cert_matches_identity(cert_der: &[u8], identity: &Identity) -> bool {
    let Ok((_, cert)) = X509Certificate::from_der(cert_der) else {
        return false;
    };
    match identity {
        Identity::Dn(der) => parse_dn(der).is_ok_and(|name| dn_equal(&name, cert.subject())),
        Identity::KeyId(id) => cert.extensions().iter().any(|ext| {
            matches!(ext.parsed_extension(),
                ParsedExtension::SubjectKeyIdentifier(ski) if ski.0 == id.as_slice())
        }),
        _ => subject_alt_names(&cert).any(|name| san_matches(&name, identity)),
    }
}

fn subject_alt_names<'a>(
    cert: &'a X509Certificate<'_>,
) -> impl Iterator<Item = GeneralName<'a>> + 'a {
    cert.extensions()
        .iter()
        .filter_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => Some(san.general_names.iter()),
            _ => None,
        })
        .flatten()
        .cloned()
}

fn san_matches(name: &GeneralName<'_>, identity: &Identity) -> bool {
    match (name, identity) {
        (GeneralName::DNSName(n), Identity::Fqdn(f)) => n.eq_ignore_ascii_case(f),
        (GeneralName::RFC822Name(n), Identity::Email(e)) => n.eq_ignore_ascii_case(e),
        (GeneralName::IPAddress(ip), Identity::Ipv4(a)) => *ip == a.octets().as_slice(),
        (GeneralName::IPAddress(ip), Identity::Ipv6(a)) => *ip == a.octets().as_slice(),
        _ => false,
    }
}

/// DN equality: the same encoding, or the same attribute types and string values in the
/// same order whatever string type each side chose (configured DNs are encoded by us,
/// certificate DNs by whichever CA issued them).
fn dn_equal(a: &X509Name<'_>, b: &X509Name<'_>) -> bool {
    if a.as_raw() == b.as_raw() {
        return true;
    }
    let (mut left, mut right) = (a.iter_attributes(), b.iter_attributes());
    loop {
        match (left.next(), right.next()) {
            (None, None) => return true,
            (Some(x), Some(y)) => {
                let same_type = x.attr_type() == y.attr_type();
                let same_value = match (x.as_str(), y.as_str()) {
                    (Ok(s), Ok(t)) => s == t,
                    _ => x.attr_value().as_bytes() == y.attr_value().as_bytes(),
                };
                if !(same_type && same_value) {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, IsCa, KeyPair, SanType};

    #[test]
    fn wire_round_trip() {
        let ids = [
            "192.0.2.1",
            "2001:db8::1",
            "a.vn.example",
            "user@example.org",
            "CN=a, O=vn",
            "keyid:0a0b0c",
        ];
        for text in ids {
            let id: Identity = text.parse().unwrap();
            let (ty, data) = id.to_wire();
            assert_eq!(Identity::from_wire(ty, &data).unwrap(), id, "{text}");
            assert_eq!(id.to_string(), text);
        }
    }

    #[test]
    fn from_str_kinds() {
        let cases = [
            ("192.0.2.1", IdType::IPV4_ADDR),
            ("2001:db8::1", IdType::IPV6_ADDR),
            ("a.vn.example", IdType::FQDN),
            ("@a.vn.example", IdType::FQDN),
            ("user@example.org", IdType::RFC822_ADDR),
            ("C=NL, CN=a", IdType::DER_ASN1_DN),
            ("keyid:00ff", IdType::KEY_ID),
        ];
        for (text, ty) in cases {
            assert_eq!(text.parse::<Identity>().unwrap().to_wire().0, ty, "{text}");
        }
        assert_eq!(
            "@a.b".parse::<Identity>().unwrap(),
            Identity::Fqdn("a.b".into())
        );
    }

    #[test]
    fn from_str_rejects() {
        let cases = [
            ("", IdentityError::Empty),
            ("two words", IdentityError::NotPrintable),
            ("keyid:xyz", IdentityError::BadKeyId),
            ("keyid:", IdentityError::Empty),
            ("XX=a", IdentityError::UnknownDnAttribute("XX".into())),
            ("CN=a, O", IdentityError::BadDn),
            ("CN=", IdentityError::NotPrintable),
            ("C=N*L", IdentityError::NotPrintable),
        ];
        for (text, err) in cases {
            assert_eq!(text.parse::<Identity>(), Err(err), "{text:?}");
        }
    }

    #[test]
    fn dn_encoding_is_the_expected_der() {
        // SEQUENCE { SET { SEQUENCE { OID 2.5.4.3, UTF8String "a" } } }
        let expected = [
            0x30, 0x0c, 0x31, 0x0a, 0x30, 0x08, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x01, b'a',
        ];
        assert_eq!(
            "CN=a".parse::<Identity>().unwrap(),
            Identity::Dn(expected.to_vec())
        );
    }

    #[test]
    fn from_wire_validates() {
        let cases: [(IdType, &[u8], IdentityError); 8] = [
            (
                IdType::IPV4_ADDR,
                &[192, 0, 2],
                IdentityError::AddressLength(3),
            ),
            (
                IdType::IPV4_ADDR,
                &[0; 16],
                IdentityError::AddressLength(16),
            ),
            (IdType::IPV6_ADDR, &[0; 4], IdentityError::AddressLength(4)),
            (IdType::FQDN, b"", IdentityError::Empty),
            (IdType::FQDN, b"a\x00b", IdentityError::NotPrintable),
            (
                IdType::RFC822_ADDR,
                "ü@x".as_bytes(),
                IdentityError::NotPrintable,
            ),
            (
                IdType::DER_ASN1_DN,
                &[0x30, 0x05, 0x31],
                IdentityError::BadDn,
            ),
            (
                IdType::DER_ASN1_GN,
                &[0x30, 0x00],
                IdentityError::UnsupportedType(IdType::DER_ASN1_GN),
            ),
        ];
        for (ty, data, err) in cases {
            assert_eq!(Identity::from_wire(ty, data), Err(err), "{ty} {data:?}");
        }
        let trailing = [0x30, 0x00, 0x00];
        assert_eq!(
            Identity::from_wire(IdType::DER_ASN1_DN, &trailing),
            Err(IdentityError::BadDn)
        );
    }

    fn cert(sans: Vec<SanType>, cn: &str) -> Vec<u8> {
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        // rcgen writes a subjectKeyIdentifier along with basicConstraints.
        params.is_ca = IsCa::ExplicitNoCa;
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "vn");
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn certificate_matching() {
        let der = cert(
            vec![
                SanType::DnsName("A.VN.example".try_into().unwrap()),
                SanType::Rfc822Name("node@vn.example".try_into().unwrap()),
                SanType::IpAddress("192.0.2.1".parse().unwrap()),
                SanType::IpAddress("2001:db8::1".parse().unwrap()),
            ],
            "a",
        );
        let cases = [
            ("a.vn.example", true),
            ("a.VN.EXAMPLE", true),
            ("b.vn.example", false),
            ("node@vn.example", true),
            ("other@vn.example", false),
            ("192.0.2.1", true),
            ("192.0.2.2", false),
            ("2001:db8::1", true),
            ("2001:db8::2", false),
            ("CN=a, O=vn", true),
            ("CN=a", false),
            ("O=vn, CN=a", false),
            ("CN=b, O=vn", false),
            ("keyid:0102", false),
        ];
        for (text, expected) in cases {
            let id: Identity = text.parse().unwrap();
            assert_eq!(cert_matches_identity(&der, &id), expected, "{text}");
        }
        let ski = x509_parser::parse_x509_certificate(&der)
            .unwrap()
            .1
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
                _ => None,
            })
            .expect("rcgen writes a subjectKeyIdentifier");
        assert!(cert_matches_identity(&der, &Identity::KeyId(ski.clone())));
        let mut other = ski;
        other[0] ^= 1;
        assert!(!cert_matches_identity(&der, &Identity::KeyId(other)));
        // The FQDN in the CN is not a dNSName.
        let no_san = cert(vec![], "a.vn.example");
        assert!(!cert_matches_identity(
            &no_san,
            &"a.vn.example".parse().unwrap()
        ));
        assert!(!cert_matches_identity(
            b"not a certificate",
            &"CN=a".parse().unwrap()
        ));
    }
}
