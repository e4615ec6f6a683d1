//! IKE SA keys from charon's file log at `ike = 4`, for tshark's decryption table.
//!
//! charon logs each key as `Sk_ei secret => 32 bytes @ 0x…` followed by hex dump lines
//! `   0: 6D 1B … 16 bytes  ascii` from the same thread; other threads' lines may come in
//! between.

use anyhow::{Context, Result, bail};

use super::IkeSa;

/// The keys of one IKE SA, all in lower-case hex.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IkeKeys {
    pub spi_i: String,
    pub spi_r: String,
    pub sk_ei: String,
    pub sk_er: String,
    pub sk_ai: String,
    pub sk_ar: String,
}

/// The keys of `sa`, which must be the only IKE SA whose keys the log holds.
pub fn ike_keys(log: &str, sa: &IkeSa) -> Result<IkeKeys> {
    let derived = log.matches("Sk_ei secret =>").count();
    if derived != 1 {
        bail!("the log holds the keys of {derived} IKE SAs (ike = 4 needed; one SA only)");
    }
    Ok(IkeKeys {
        spi_i: sa.initiator_spi.clone(),
        spi_r: sa.responder_spi.clone(),
        sk_ei: secret(log, "Sk_ei")?,
        sk_er: secret(log, "Sk_er")?,
        sk_ai: secret(log, "Sk_ai")?,
        sk_ar: secret(log, "Sk_ar")?,
    })
}

/// The hex of one logged secret.
fn secret(log: &str, name: &str) -> Result<String> {
    let marker = format!("{name} secret => ");
    let mut lines = log.lines();
    let header = lines
        .by_ref()
        .find(|l| l.contains(&marker))
        .with_context(|| format!("{name} is not in the log"))?;
    let (prefix, rest) = header.split_once(&marker).unwrap_or_default();
    let thread = prefix
        .split_whitespace()
        .last()
        .unwrap_or_default()
        .to_owned();
    let len: usize = rest
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no length in {header:?}"))?;
    let mut hex = String::with_capacity(2 * len);
    for line in lines.filter(|l| l.split_whitespace().nth(1) == Some(thread.as_str())) {
        let Some((offset, dump)) = line
            .split_once(&thread)
            .map(|(_, d)| d.trim_start())
            .and_then(|d| d.split_once(": "))
        else {
            break;
        };
        if offset.parse::<usize>().ok() != Some(hex.len() / 2) {
            break;
        }
        let bytes = (len - hex.len() / 2).min(16);
        for byte in dump.split_whitespace().take(bytes) {
            if byte.len() != 2 || !byte.chars().all(|c| c.is_ascii_hexdigit()) {
                bail!("{name}: not a hex byte {byte:?} in {line:?}");
            }
            hex.push_str(&byte.to_ascii_lowercase());
        }
        if hex.len() == 2 * len {
            return Ok(hex);
        }
    }
    bail!(
        "{name}: the hex dump ends after {} of {len} bytes",
        hex.len() / 2
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_dump_interleaved_with_another_thread() {
        let log = "02:03:56 05[IKE] Sk_ai secret => 20 bytes @ 0x7fd458003ad0\n\
                   02:03:56 09[NET] received packet\n\
                   02:03:56 05[IKE]    0: 06 88 D9 D1 33 8C FF 0F CE B1 EA 09 A7 70 81 D0  ....3........p..\n\
                   02:03:56 05[IKE]   16: 0B BA 39 27                                      ..9'\n";
        assert_eq!(
            secret(log, "Sk_ai").unwrap(),
            "0688d9d1338cff0fceb1ea09a77081d00bba3927"
        );
        assert!(secret(log, "Sk_ar").is_err());
        let short = log.lines().take(3).collect::<Vec<_>>().join("\n");
        assert!(secret(&short, "Sk_ai").is_err());
    }
}
