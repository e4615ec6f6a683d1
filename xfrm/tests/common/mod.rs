//! Network-namespace fixtures shared by the integration tests (run as root).

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A name unique to this process and call, e.g. `ipt-1234-3-a`.
pub fn unique(tag: &str) -> String {
    format!(
        "ipt{}-{}-{tag}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs a command, failing the test with its output if it fails.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Self {
        let name = unique(tag);
        sh(&["ip", "netns", "add", &name]);
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Self { name }
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// A counter of an interface in this namespace (from sysfs).
    pub fn if_stat(&self, ifname: &str, stat: &str) -> u64 {
        let out = self.exec(&["cat", &format!("/sys/class/net/{ifname}/statistics/{stat}")]);
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Two namespaces joined by a veth pair: `a` has 192.0.2.1/24 and 2001:db8::1/64, `b`
/// 192.0.2.2/24 and 2001:db8::2/64.
pub struct Pair {
    pub a: Netns,
    pub b: Netns,
}

pub const ADDR_A: &str = "192.0.2.1";
pub const ADDR_B: &str = "192.0.2.2";
pub const ADDR_A6: &str = "2001:db8::1";
pub const ADDR_B6: &str = "2001:db8::2";

impl Pair {
    pub fn new() -> Self {
        let a = Netns::new("a");
        let b = Netns::new("b");
        sh(&[
            "ip", "link", "add", "va", "netns", &a.name, "type", "veth", "peer", "name", "vb",
            "netns", &b.name,
        ]);
        sh(&[
            "ip",
            "-n",
            &a.name,
            "addr",
            "add",
            &format!("{ADDR_A}/24"),
            "dev",
            "va",
        ]);
        sh(&[
            "ip",
            "-n",
            &b.name,
            "addr",
            "add",
            &format!("{ADDR_B}/24"),
            "dev",
            "vb",
        ]);
        // No duplicate address detection: the addresses are usable at once.
        for (ns, dev, addr) in [(&a, "va", ADDR_A6), (&b, "vb", ADDR_B6)] {
            sh(&[
                "ip",
                "-n",
                &ns.name,
                "addr",
                "add",
                &format!("{addr}/64"),
                "dev",
                dev,
                "nodad",
            ]);
        }
        sh(&["ip", "-n", &a.name, "link", "set", "va", "up"]);
        sh(&["ip", "-n", &b.name, "link", "set", "vb", "up"]);
        Self { a, b }
    }
}

/// Polls `cond` until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The fixtures the examples use, shared so SAs and policies are built one way.
#[path = "../../examples/common/mod.rs"]
pub mod fixtures;
pub mod node;
