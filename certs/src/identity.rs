//! Node identities and how they appear in certificates.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use rcgen::{DnType, DnValue, SanType};

/// A node's identity in the VN: the name its peers authenticate it by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NodeId {
    /// A fully qualified domain name: a dNSName SAN.
    Fqdn(String),
    /// An e-mail style identity (`user@domain`): an rfc822Name SAN.
    Email(String),
    /// An IP address identity: an iPAddress SAN.
    Ip(IpAddr),
}

/// A string that is not a usable node identity.
#[derive(Debug, thiserror::Error)]
#[error("invalid identity {0:?}: expected an FQDN, user@domain or an IP address")]
pub struct IdentityError(String);

impl FromStr for NodeId {
    type Err = IdentityError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Self::Ip(ip));
        }
        let err = || IdentityError(text.to_owned());
        match text.split_once('@') {
            Some((user, domain)) => {
                let user_ok = !user.is_empty()
                    && user
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && !b"@<>()[]\\,;:\"".contains(&b));
                if user_ok && valid_fqdn(domain) {
                    Ok(Self::Email(text.to_ascii_lowercase()))
                } else {
                    Err(err())
                }
            }
            None if valid_fqdn(text) => Ok(Self::Fqdn(text.to_ascii_lowercase())),
            None => Err(err()),
        }
    }
}

fn valid_fqdn(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fqdn(name) | Self::Email(name) => f.write_str(name),
            Self::Ip(ip) => ip.fmt(f),
        }
    }
}

impl NodeId {
    /// The subjectAltName entry that carries this identity.
    pub fn san(&self) -> Result<SanType, IdentityError> {
        let ia5 = |name: &str| {
            rcgen::string::Ia5String::try_from(name).map_err(|_| IdentityError(name.to_owned()))
        };
        Ok(match self {
            Self::Fqdn(name) => SanType::DnsName(ia5(name)?),
            Self::Email(name) => SanType::Rfc822Name(ia5(name)?),
            Self::Ip(ip) => SanType::IpAddress(*ip),
        })
    }

    /// Certificate (or CSR) parameters naming this identity: subject CN and the SAN.
    pub fn cert_params(&self) -> Result<rcgen::CertificateParams, IdentityError> {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, self.to_string());
        params.subject_alt_names = vec![self.san()?];
        Ok(params)
    }

    /// Whether a CSR's subject CN or one of its SANs names this identity.
    pub fn requested_by(&self, csr: &rcgen::CertificateParams) -> bool {
        let in_cn = csr
            .distinguished_name
            .iter()
            .filter(|(ty, _)| **ty == DnType::CommonName)
            .any(|(_, value)| dn_text(value).is_some_and(|cn| self.matches_text(&cn)));
        let in_san = csr.subject_alt_names.iter().any(|san| match (self, san) {
            (Self::Fqdn(name), SanType::DnsName(dns)) => dns.as_str().eq_ignore_ascii_case(name),
            (Self::Email(name), SanType::Rfc822Name(mail)) => {
                mail.as_str().eq_ignore_ascii_case(name)
            }
            (Self::Ip(ip), SanType::IpAddress(addr)) => ip == addr,
            _ => false,
        });
        in_cn || in_san
    }

    fn matches_text(&self, text: &str) -> bool {
        text.parse::<NodeId>().is_ok_and(|id| id == *self)
    }
}

fn dn_text(value: &DnValue) -> Option<String> {
    match value {
        DnValue::Utf8String(s) => Some(s.clone()),
        DnValue::PrintableString(s) => Some(s.as_str().to_owned()),
        DnValue::Ia5String(s) => Some(s.as_str().to_owned()),
        DnValue::TeletexString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(
            "B.vn.Example".parse::<NodeId>().unwrap(),
            NodeId::Fqdn("b.vn.example".into())
        );
        assert_eq!(
            "ops@vn.example".parse::<NodeId>().unwrap(),
            NodeId::Email("ops@vn.example".into())
        );
        assert_eq!(
            "192.0.2.7".parse::<NodeId>().unwrap(),
            NodeId::Ip("192.0.2.7".parse().unwrap())
        );
        assert_eq!(
            "2001:db8::1".parse::<NodeId>().unwrap().to_string(),
            "2001:db8::1"
        );
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            "",
            "a..b",
            "-a.example",
            "a b",
            "@x.example",
            "u@",
            "é.example",
            "a@b@c",
        ] {
            assert!(bad.parse::<NodeId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn csr_match_by_cn_or_san() {
        let id: NodeId = "b.vn.example".parse().unwrap();
        let mut by_cn = rcgen::CertificateParams::default();
        by_cn.distinguished_name = rcgen::DistinguishedName::new();
        by_cn
            .distinguished_name
            .push(DnType::CommonName, "b.vn.example");
        assert!(id.requested_by(&by_cn));
        let mut by_san = rcgen::CertificateParams::new(vec!["B.VN.EXAMPLE".to_owned()]).unwrap();
        by_san.distinguished_name = rcgen::DistinguishedName::new();
        assert!(id.requested_by(&by_san));
        let other = rcgen::CertificateParams::new(vec!["c.vn.example".to_owned()]).unwrap();
        assert!(!id.requested_by(&other));
    }
}
