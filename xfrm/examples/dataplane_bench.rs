//! Throughput of the userspace data plane: iperf3 TCP between two namespaces over one
//! userspace virtual link (ChaCha20-Poly1305), next to the raw single-core speed of this
//! machine's ChaCha20-Poly1305 ESP sealing of 1400-octet packets, measured in the same run.
//! Run as root through `bench/dataplane`; needs iperf3.

use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use iiptran_xfrm::esp::{EspCipher, HEADER_LEN, MAX_TRAILER_LEN};
use iiptran_xfrm::{AeadAlg, KeyMaterial};

mod common;
use common::*;

const PACKET: usize = 1400;

/// Payload Mbit/s of sealing 1400-octet packets on this thread for about `time`.
fn raw_chacha_mbps(time: Duration) -> Res<f64> {
    let cipher = EspCipher::new(
        &KeyMaterial::from_keymat(AeadAlg::ChaCha20Poly1305, &[0x42; 36])?,
        false,
    );
    let mut buf = vec![0u8; HEADER_LEN + PACKET + MAX_TRAILER_LEN];
    let start = Instant::now();
    let mut packets = 0u64;
    while start.elapsed() < time {
        for _ in 0..256 {
            packets += 1;
            cipher.seal(0x100, packets, packets.to_be_bytes(), 4, &mut buf, PACKET)?;
        }
    }
    Ok((packets * PACKET as u64 * 8) as f64 / start.elapsed().as_secs_f64() / 1e6)
}

/// Receiver-side Mbit/s from iperf3's JSON report.
fn iperf_mbps(json: &str) -> Option<f64> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    Some(v["end"]["sum_received"]["bits_per_second"].as_f64()? / 1e6)
}

fn run(seconds: u64) -> Res<()> {
    let raw = raw_chacha_mbps(Duration::from_secs(2))?;
    let ns = Namespaces::new(&format!("iiptran-bench-{}-", std::process::id()))?;
    let (stop_a, ta) = userspace_end(
        ns.a.clone(),
        A.into(),
        B.into(),
        &["10.99.0.1"],
        AeadAlg::ChaCha20Poly1305,
    )?;
    let (stop_b, tb) = userspace_end(
        ns.b.clone(),
        B.into(),
        A.into(),
        &["10.99.0.2"],
        AeadAlg::ChaCha20Poly1305,
    )?;
    if !ping(&ns.a, "10.99.0.2") {
        return Err("no connectivity over the userspace link".into());
    }
    let mut server = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.b,
            "iperf3",
            "-s",
            "-1",
            "-B",
            "10.99.0.2",
        ])
        .stdout(Stdio::null())
        .spawn()?;
    // The server needs a moment to listen; retry the client instead of guessing a delay.
    let deadline = Instant::now() + Duration::from_secs(10);
    let out = loop {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.a,
                "iperf3",
                "-c",
                "10.99.0.2",
                "-t",
                &seconds.to_string(),
                "-J",
            ])
            .output()?;
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = server.kill();
    let _ = server.wait();
    finish(stop_a, ta)?;
    finish(stop_b, tb)?;
    let tunnel =
        iperf_mbps(&String::from_utf8_lossy(&out.stdout)).ok_or("iperf3 gave no result")?;
    println!("raw ChaCha20-Poly1305 ESP seal, 1400-octet packets, one core: {raw:>9.0} Mbit/s");
    println!("iperf3 TCP over the userspace virtual link ({seconds} s):      {tunnel:>9.0} Mbit/s");
    println!(
        "ratio tunnel / raw cipher:                                {:>9.2}",
        tunnel / raw
    );
    Ok(())
}

fn main() -> ExitCode {
    let seconds = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    match run(seconds) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}
