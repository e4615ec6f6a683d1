//! Human-readable rendering of control responses for `iiptranctl`.

use std::fmt::{self, Write};

use crate::control::protocol::{
    Body, CertReport, ChildSaReport, IkeSaReport, NeighborReport, RenewalReport, StatusReport,
    TrafficSelector, TransitionReport, UnixTime,
};

/// How times are shown: relative to `now`, plus the absolute UTC time when `verbose`.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub now: UnixTime,
    pub verbose: bool,
}

impl Clock {
    /// `5m ago` or `in 55m`; with `verbose`, followed by `(2026-11-27 23:30:00Z)`.
    pub fn when(&self, at: UnixTime) -> String {
        let relative = match at.checked_sub(self.now) {
            Some(0) | None => format!("{} ago", span(self.now - at)),
            Some(ahead) => format!("in {}", span(ahead)),
        };
        if self.verbose {
            format!("{relative} ({})", absolute(at))
        } else {
            relative
        }
    }

    fn maybe(&self, at: Option<UnixTime>) -> String {
        at.map_or_else(|| "-".to_owned(), |at| self.when(at))
    }
}

/// The response as the operator reads it.
pub fn body(body: &Body, clock: Clock) -> String {
    match body {
        Body::Status(report) => status(report),
        Body::Neighbors(neighbors) => self::neighbors(neighbors, clock),
        Body::Sas(sas) => self::sas(sas, clock),
        Body::Certs(certs) => self::certs(certs, clock),
        Body::History(transitions) => history(transitions, clock),
        Body::Done(done) => format!("{}\n", done.message),
        Body::Error(error) => format!("error ({}): {}\n", error.kind, error.message),
    }
}

pub fn status(report: &StatusReport) -> String {
    let c = &report.counts;
    let mut table = Table::default();
    table.row(["node:", &report.node]);
    table.row(["identity:", &report.identity]);
    table.row(["endpoint:", &report.endpoint.to_string()]);
    table.row(["data plane:", &report.data_plane.to_string()]);
    table.row(["uptime:", &span(report.uptime_secs)]);
    table.row([
        "adjacencies:",
        &format!("{} up, {} down", c.adjacencies_up, c.adjacencies_down),
    ]);
    table.row([
        "SAs:",
        &format!(
            "{} IKE, {} child, {} half-open",
            c.ike_sas, c.child_sas, c.half_open
        ),
    ]);
    table.to_string()
}

pub fn neighbors(neighbors: &[NeighborReport], clock: Clock) -> String {
    if neighbors.is_empty() {
        return "no neighbors configured\n".to_owned();
    }
    let mut table = Table::default();
    table.row([
        "NEIGHBOR",
        "LINK",
        "STATE",
        "ENDPOINTS",
        "IDENTITY",
        "ADJACENCY",
        "ESTABLISHED",
        "NEXT REKEY",
        "RECEIVED",
        "SENT",
    ]);
    for n in neighbors {
        let t = &n.traffic;
        table.row([
            &n.name,
            &n.link,
            &n.link_state.to_string(),
            &format!("{} -> {}", n.local_endpoint, n.remote_endpoint),
            &n.identity,
            &n.adjacency,
            &clock.maybe(n.last_established),
            &clock.maybe(n.next_rekey),
            &format!("{} ({} pkts)", bytes(t.bytes_in), t.packets_in),
            &format!("{} ({} pkts)", bytes(t.bytes_out), t.packets_out),
        ]);
    }
    let mut out = table.to_string();
    for n in neighbors {
        if let Some(error) = &n.last_error {
            let _ = writeln!(
                out,
                "{}: last error {}: {}",
                n.name,
                clock.when(error.at),
                error.message
            );
        }
    }
    out
}

pub fn history(transitions: &[TransitionReport], clock: Clock) -> String {
    if transitions.is_empty() {
        return "no changes of state recorded\n".to_owned();
    }
    let mut table = Table::default();
    table.row(["WHEN", "FROM", "TO", "CAUSE"]);
    for t in transitions {
        table.row([&clock.when(t.at), &t.from, &t.to, &t.cause]);
    }
    table.to_string()
}

/// In the layout of `swanctl --list-sas`.
pub fn sas(sas: &[IkeSaReport], clock: Clock) -> String {
    if sas.is_empty() {
        return "no IKE SAs\n".to_owned();
    }
    let mut out = String::new();
    for sa in sas {
        let (mark_i, mark_r) = if sa.initiator { ("*", "") } else { ("", "*") };
        let _ = writeln!(
            out,
            "{}: #{}, {}, IKEv2, {}_i{mark_i} {}_r{mark_r}",
            sa.name, sa.id, sa.state, sa.spi_initiator, sa.spi_responder
        );
        let _ = writeln!(
            out,
            "  local  '{}' @ {} [{}]",
            sa.local_identity,
            sa.local_addr.ip(),
            sa.local_addr.port()
        );
        let _ = writeln!(
            out,
            "  remote '{}' @ {} [{}]",
            sa.remote_identity,
            sa.remote_addr.ip(),
            sa.remote_addr.port()
        );
        let _ = writeln!(out, "  {}/{}/{}", sa.suite.encr, sa.suite.prf, sa.suite.dh);
        let _ = writeln!(
            out,
            "  established {}, rekeying {}, expires {}",
            clock.maybe(sa.established_at),
            clock.maybe(sa.rekey_at),
            clock.maybe(sa.expire_at)
        );
        for child in &sa.child_sas {
            child_sa(&mut out, &sa.name, child, clock);
        }
    }
    out
}

fn child_sa(out: &mut String, name: &str, child: &ChildSaReport, clock: Clock) {
    let _ = writeln!(
        out,
        "  {name}{{{}}}: {}, {}, reqid {}, ESP SPIs: {}_i {}_o",
        child.reqid, child.state, child.mode, child.reqid, child.inbound.spi, child.outbound.spi
    );
    let esn = if child.esn { "/ESN" } else { "" };
    let _ = writeln!(out, "    {}{esn}", child.encr);
    let _ = writeln!(
        out,
        "    installed {}, rekeying {}, expires {}",
        clock.when(child.installed_at),
        clock.maybe(child.rekey_at),
        clock.maybe(child.expire_at)
    );
    let mut traffic = Table::default();
    for (dir, sa) in [("in", &child.inbound), ("out", &child.outbound)] {
        traffic.row([
            &format!("    {dir}"),
            &sa.spi.to_string(),
            &format!("{},", bytes(sa.bytes)),
            &format!("{} packets,", sa.packets),
            &sa.last_use.map_or_else(
                || "unused".to_owned(),
                |at| format!("last {}", clock.when(at)),
            ),
        ]);
    }
    out.push_str(&traffic.to_string());
    let _ = writeln!(
        out,
        "    {} === {}",
        selectors(&child.local_ts),
        selectors(&child.remote_ts)
    );
}

pub fn certs(certs: &[CertReport], clock: Clock) -> String {
    if certs.is_empty() {
        return "no certificates loaded\n".to_owned();
    }
    let mut out = String::new();
    for (i, cert) in certs.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let mut table = Table::default();
        table.row(["file:", &cert.file.display().to_string()]);
        table.row(["subject:", &cert.subject]);
        table.row(["identities:", &cert.identities.join(", ")]);
        table.row(["issuer:", &cert.issuer]);
        table.row(["serial:", &cert.serial]);
        table.row(["valid from:", &clock.when(cert.not_before)]);
        table.row(["valid until:", &clock.when(cert.not_after)]);
        table.row(["key:", &cert.key_type]);
        table.row(["fingerprint:", &cert.fingerprint]);
        if let Some(r) = &cert.renewal {
            table.row(["renewal:", &renewal(r, clock)]);
        }
        if let Some(crl) = &cert.crl {
            let revoked = match crl.revoked.as_slice() {
                [] => "none revoked".to_owned(),
                serials => format!("revoked: {}", serials.join(", ")),
            };
            let from = format!("{}, updated {}", crl.source, clock.when(crl.this_update));
            table.row(["CRL:", &from]);
            table.row(["", &revoked]);
        }
        out.push_str(&table.to_string());
    }
    out
}

/// `at https://ca:8443, next in 20d` or, while it fails, the failures and the error.
fn renewal(r: &RenewalReport, clock: Clock) -> String {
    let mut text = format!("at {}, next {}", r.server, clock.maybe(r.next_attempt));
    if let Some(at) = r.last_renewed {
        let _ = write!(text, ", last renewed {}", clock.when(at));
    }
    if r.failures > 0 {
        let error = r.last_error.as_deref().unwrap_or("unknown error");
        let _ = write!(text, ", {} failed: {error}", r.failures);
    }
    text
}

/// `192.0.2.1/32[ipencap] 192.0.2.3/32[ipencap]`, as strongSwan writes selectors.
fn selectors(selectors: &[TrafficSelector]) -> String {
    let shown: Vec<String> = selectors
        .iter()
        .map(|ts| {
            let protocol = match ts.protocol {
                0 => String::new(),
                1 => "[icmp]".to_owned(),
                4 => "[ipencap]".to_owned(),
                6 => "[tcp]".to_owned(),
                17 => "[udp]".to_owned(),
                41 => "[ipv6]".to_owned(),
                50 => "[esp]".to_owned(),
                other => format!("[{other}]"),
            };
            format!("{}/{}{protocol}", ts.addr, ts.prefix_len)
        })
        .collect();
    shown.join(" ")
}

/// Rows of cells printed in left-aligned columns; the last column is not padded.
#[derive(Default)]
struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    fn row<const N: usize>(&mut self, cells: [&str; N]) {
        self.rows
            .push(cells.iter().map(|&c| c.to_owned()).collect());
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut widths: Vec<usize> = Vec::new();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                let width = cell.chars().count();
                match widths.get_mut(i) {
                    Some(w) => *w = (*w).max(width),
                    None => widths.push(width),
                }
            }
        }
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let width = widths.get(i).copied().unwrap_or(0);
                    let _ = write!(line, "{cell:<width$}  ");
                }
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// A duration for people: days and hours, hours and minutes, whole minutes, or seconds
/// (`3d 4h`, `1h 5m`, `5m`, `40s`). Exact values are in `--json`.
pub fn span(secs: u64) -> String {
    match secs {
        86_400.. => two_units(secs, 86_400, "d", 3600, "h"),
        3600.. => two_units(secs, 3600, "h", 60, "m"),
        60.. => format!("{}m", secs / 60),
        _ => format!("{secs}s"),
    }
}

fn two_units(secs: u64, big: u64, big_unit: &str, small: u64, small_unit: &str) -> String {
    match (secs % big) / small {
        0 => format!("{}{big_unit}", secs / big),
        rest => format!("{}{big_unit} {rest}{small_unit}", secs / big),
    }
}

/// A byte count in binary units with one decimal, e.g. `1.5 KiB`, `512 B`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS.get(unit).copied().unwrap_or("EiB"))
}

fn absolute(at: UnixTime) -> String {
    let moment = i64::try_from(at)
        .ok()
        .and_then(|at| time::OffsetDateTime::from_unix_timestamp(at).ok());
    match moment {
        Some(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        None => format!("@{at}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_use_two_largest_units() {
        assert_eq!(span(0), "0s");
        assert_eq!(span(40), "40s");
        assert_eq!(span(300), "5m");
        assert_eq!(span(359), "5m");
        assert_eq!(span(3600 + 120 + 5), "1h 2m");
        assert_eq!(span(3 * 86_400 + 4 * 3600), "3d 4h");
        assert_eq!(span(86_400 + 30), "1d");
    }

    #[test]
    fn bytes_are_binary_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 * 1024 * 1024), "5.0 MiB");
        assert_eq!(bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn times_are_relative_and_absolute_when_verbose() {
        let clock = Clock {
            now: 1_800_000_000,
            verbose: false,
        };
        assert_eq!(clock.when(1_800_000_000 - 300), "5m ago");
        assert_eq!(clock.when(1_800_000_000 + 3300), "in 55m");
        let verbose = Clock {
            verbose: true,
            ..clock
        };
        assert_eq!(verbose.when(1_800_000_000), "0s ago (2027-01-15 08:00:00Z)");
    }

    #[test]
    fn table_aligns_columns() {
        let mut table = Table::default();
        table.row(["A", "BB", "C"]);
        table.row(["LONGER", "X", "last cell"]);
        assert_eq!(table.to_string(), "A       BB  C\nLONGER  X   last cell\n");
    }

    #[test]
    fn certs_show_a_failing_renewal_and_the_crl_in_use() {
        let now = 1_800_000_000;
        let cert = |renewal, crl| CertReport {
            file: "/var/lib/iiptran/cert.pem".into(),
            subject: "CN=n1.vn.example".into(),
            identities: vec!["n1.vn.example".into()],
            issuer: "CN=VN CA".into(),
            serial: "3f2a9c".into(),
            not_before: now - 3600,
            not_after: now + 3600,
            fingerprint: "ab".repeat(32),
            key_type: "Ed25519".into(),
            renewal,
            crl,
        };
        let renewal = RenewalReport {
            server: "https://192.0.2.9:8443".into(),
            next_attempt: Some(now + 60),
            last_renewed: None,
            failures: 2,
            last_error: Some("connecting to 192.0.2.9:8443".into()),
        };
        let crl = crate::control::protocol::CrlReport {
            source: "hosted CA".into(),
            this_update: now - 5,
            revoked: vec!["4f1e".into(), "5a2b".into()],
        };
        let clock = Clock {
            now,
            verbose: false,
        };
        let text = certs(&[cert(Some(renewal), None), cert(None, Some(crl))], clock);
        assert!(
            text.contains(
                "renewal:      at https://192.0.2.9:8443, next in 1m, \
                 2 failed: connecting to 192.0.2.9:8443\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("CRL:          hosted CA, updated 5s ago\n"),
            "{text}"
        );
        assert!(
            text.contains("\n              revoked: 4f1e, 5a2b\n"),
            "{text}"
        );
    }
}
