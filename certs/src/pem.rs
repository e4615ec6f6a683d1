//! Base64 and PEM text forms of DER objects.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Base64 with 64-character lines, as in RFC 7030's examples and in PEM.
pub(crate) fn base64_lines(der: &[u8]) -> String {
    let text = STANDARD.encode(der);
    let mut out = String::with_capacity(text.len() + text.len() / 64 + 1);
    for chunk in text.as_bytes().chunks(64) {
        out.extend(chunk.iter().map(|&b| char::from(b)));
        out.push('\n');
    }
    out
}

/// Decodes base64 that may be broken into lines.
pub(crate) fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    let compact: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    STANDARD.decode(compact).ok()
}

/// PEM with the given label (`CERTIFICATE`, `X509 CRL`, ...).
pub fn to_pem(label: &str, der: &[u8]) -> String {
    format!(
        "-----BEGIN {label}-----\n{}-----END {label}-----\n",
        base64_lines(der)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let der: Vec<u8> = (0..=255).collect();
        let text = base64_lines(&der);
        assert!(text.lines().all(|l| l.len() <= 64));
        assert_eq!(base64_decode(text.as_bytes()).unwrap(), der);
        assert_eq!(base64_decode(b"not base64!"), None);
        assert!(to_pem("X509 CRL", &der).starts_with("-----BEGIN X509 CRL-----\n"));
    }
}
