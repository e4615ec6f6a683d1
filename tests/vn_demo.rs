//! `scripts/demo`, the README's first command, with the debug binaries and without
//! `scripts/setup`: the four-node VN converges, shows a node's neighbors and a ping and a
//! traceroute across two hops, stays up with `--stay`, and on Ctrl-C (SIGINT) removes its
//! namespaces, processes and files. Needs root and Debian's bird2.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use iiptran_testkit::process::Process;
use iiptran_testkit::wait::wait_until;
use iiptran_testkit::{WorkDir, have_root};
use support::OrPanic;
use support::daemon::IIPTRAND;

#[test]
fn demo_converges_pings_across_two_hops_and_cleans_up_on_ctrl_c() {
    if !have_root("demo_converges_pings_across_two_hops_and_cleans_up_on_ctrl_c") {
        return;
    }
    let dir = WorkDir::temp("vn-demo").or_panic();
    let bin_dir = Path::new(IIPTRAND)
        .parent()
        .expect("the binaries' directory");
    let mut command = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/demo"));
    command
        .arg("--stay")
        .env("IIPTRAN_DEMO_SKIP_SETUP", "1")
        .env("IIPTRAN_DEMO_BIN_DIR", bin_dir);
    let mut demo = Process::spawn("demo", command, dir.path()).or_panic();
    let tag = format!("iiptran-demo-{}", demo.pid());

    let out = wait_until(
        "the demo to converge and wait for Ctrl-C",
        Duration::from_secs(90),
        Duration::from_millis(200),
        || {
            if let Some(status) = demo.exited()? {
                anyhow::bail!("the demo ended with {status}:\n{}", demo.dump());
            }
            let out = demo.stdout();
            Ok(out.contains("Ctrl-C ends it").then_some(out))
        },
    )
    .or_panic();
    let namespaces = iiptran_testkit::command::run("ip", &["netns", "list"]).or_panic();
    assert_eq!(
        namespaces.matches(&tag).count(),
        5,
        "four nodes and a switch: {namespaces}"
    );
    // a reaches c through b: the first hop is b's end of the a-b link.
    assert!(out.contains(" 1  10.255.0.1 "), "traceroute: {out}");
    assert!(out.contains(" 2  10.0.0.3 "), "traceroute: {out}");
    assert!(
        out.contains("3 packets transmitted, 3 received"),
        "ping: {out}"
    );
    for (neighbor, link) in [("b", "vn-b"), ("d", "vn-d")] {
        assert!(
            out.lines().any(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                words.starts_with(&[neighbor, link, "up"]) && words.contains(&"established")
            }),
            "a's neighbor {neighbor} in list-neighbors: {out}"
        );
    }

    demo.signal(libc::SIGINT).or_panic();
    let status = wait_until(
        "the demo to end after SIGINT",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || demo.exited(),
    )
    .or_panic();
    assert_eq!(status.code(), Some(130), "{}", demo.dump());
    assert!(demo.stdout().contains("removed the namespaces"));
    let namespaces = iiptran_testkit::command::run("ip", &["netns", "list"]).or_panic();
    assert!(!namespaces.contains(&tag), "left behind: {namespaces}");
    let work_prefix = format!("{tag}.");
    let left: Vec<String> = std::fs::read_dir("/proc")
        .expect("reading /proc")
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&work_prefix))
        .collect();
    assert!(left.is_empty(), "processes left behind: {left:?}");
    // The demo keeps its files in /tmp/<tag>.XXXXXX.
    let tmp = std::fs::read_dir("/tmp").expect("reading /tmp");
    let dirs: Vec<_> = tmp
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(&work_prefix))
        .collect();
    assert!(dirs.is_empty(), "directories left behind: {dirs:?}");
}
