//! The crypto floor of one setup, from the IKE crate's setup benchmark
//! (`ike/benches/setup.rs`): its summary line times whole in-process setups between two
//! engines and, interleaved with them, only the cryptography both ends must do.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use iiptran_testkit::command::checked;

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct FloorRun {
    /// One complete setup, both ends, in one process (µs).
    pub engine_setup_us: f64,
    /// The cryptography of that setup, both ends (µs).
    pub crypto_both_us: f64,
}

/// One run of the benchmark's summary (criterion's own groups are filtered out).
pub fn measure(repo: &Path) -> Result<FloorRun> {
    let mut command = Command::new("cargo");
    command.current_dir(repo).args([
        "bench",
        "-q",
        "-p",
        "iiptran-ike",
        "--bench",
        "setup",
        "--",
        "--exact",
        "summary-only",
    ]);
    let out = checked(command)?;
    parse(&out).with_context(|| format!("no summary line in {out:?}"))
}

/// `setup: 789 µs/setup (1267 setups/s); crypto floor: 788 µs (100 %); …`
fn parse(out: &str) -> Option<FloorRun> {
    let line = out.lines().find(|l| l.starts_with("setup: "))?;
    let number_after = |key: &str| -> Option<f64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.split_whitespace().next()?.parse().ok()
    };
    Some(FloorRun {
        engine_setup_us: number_after("setup: ")?,
        crypto_both_us: number_after("crypto floor: ")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_summary_line() {
        let out = "noise\nsetup: 789 µs/setup (1267 setups/s); crypto floor: 734 µs (93 %); engine overhead: 7 %\n";
        let run = parse(out).expect("parsed");
        assert_eq!(run.engine_setup_us, 789.0);
        assert_eq!(run.crypto_both_us, 734.0);
        assert!(parse("setup failed").is_none());
    }
}
