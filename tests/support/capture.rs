//! Packet captures in a namespace: tcpdump writes a file, tshark dissects it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};

use iiptran_testkit::WorkDir;
use iiptran_testkit::command::run;
use iiptran_testkit::netns::Netns;
use iiptran_testkit::process::Process;
use iiptran_testkit::strongswan::IkeKeys;
use iiptran_testkit::wait::wait_until;

/// The programs the captures need, for `Installation::find`.
pub const TOOLS: [&str; 2] = ["/usr/bin/tshark", "/usr/bin/tcpdump"];

/// tcpdump running on one interface of a namespace, writing every packet to a pcap file
/// as it arrives (`-U --immediate-mode`).
pub struct Capture {
    process: Process,
    file: PathBuf,
    dir: WorkDir,
}

impl Capture {
    /// Starts capturing on `ifname` in `ns` with a pcap `filter` (e.g. `udp port 500 or
    /// udp port 4500`) and waits until tcpdump listens.
    pub fn start(ns: &Netns, ifname: &str, filter: &str) -> Result<Self> {
        let dir = WorkDir::temp("capture")?;
        let file = dir.join("capture.pcap");
        let mut command = ns.command("tcpdump");
        command
            .args([
                "-n",
                "-U",
                "--immediate-mode",
                "-Z",
                "root",
                "-i",
                ifname,
                "-w",
            ])
            .arg(&file)
            .arg(filter);
        let mut process = Process::spawn("tcpdump", command, dir.path())?;
        wait_until(
            "tcpdump to listen",
            Duration::from_secs(10),
            Duration::from_millis(20),
            || {
                if let Some(status) = process.exited()? {
                    bail!("tcpdump exited ({status}): {}", process.dump());
                }
                Ok(process.stderr().contains("listening on"))
            },
        )?;
        Ok(Self { process, file, dir })
    }

    /// Stops tcpdump, so the file holds everything captured; returns the pcap path.
    pub fn stop(&mut self) -> Result<&Path> {
        self.process.stop()?;
        Ok(&self.file)
    }

    /// One summary line per packet that matches the display filter (`""` for all).
    pub fn summary(&self, display_filter: &str) -> Result<String> {
        self.tshark(&[], display_filter)
    }

    /// The full dissection (`tshark -V`) of the packets that match `display_filter`.
    pub fn dissect(&self, display_filter: &str) -> Result<String> {
        self.tshark(&["-V"], display_filter)
    }

    /// `dissect` with IKE SA keys for tshark's `ikev2_decryption_table`, so the encrypted
    /// payloads of that SA (IKE_AUTH onwards) are dissected too.
    pub fn dissect_decrypted(&self, keys: &IkeKeys, display_filter: &str) -> Result<String> {
        let uat = format!("uat:ikev2_decryption_table:{}", uat_record(keys));
        self.tshark(&["-o", &uat, "-V"], display_filter)
    }

    fn tshark(&self, extra: &[&str], display_filter: &str) -> Result<String> {
        let file = self.file.display().to_string();
        let mut args = vec!["-n", "-r", &file];
        args.extend_from_slice(extra);
        if !display_filter.is_empty() {
            args.extend_from_slice(&["-Y", display_filter]);
        }
        run("tshark", &args)
    }

    /// The directory holding the pcap and tcpdump's output (kept if the test fails).
    pub fn dir(&self) -> &WorkDir {
        &self.dir
    }
}

/// One record of tshark's `ikev2_decryption_table` UAT for an IKE SA with AES-CBC-256
/// and HMAC-SHA2-256-128 (the suites tshark 4.0 can decrypt): bytes in bare hex, names
/// quoted.
fn uat_record(keys: &IkeKeys) -> String {
    format!(
        "{},{},{},{},\"AES-CBC-256 [RFC3602]\",{},{},\"HMAC_SHA2_256_128 [RFC4868]\"",
        keys.spi_i, keys.spi_r, keys.sk_ei, keys.sk_er, keys.sk_ai, keys.sk_ar
    )
}
