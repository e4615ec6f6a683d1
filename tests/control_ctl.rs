//! `iiptranctl`, the real binary, against a control server with fixed reports: tables,
//! `--json`, action verbs, exit codes, and the refusal of non-root peers.

mod control_common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Output};

use control_common::{IIPTRANCTL, Server};
use iiptran::control::{Body, ErrorKind, Response, ServerConfig};
use iiptran_testkit::WorkDir;

fn ctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(IIPTRANCTL)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn json(output: &Output) -> Response {
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The character offset of each header's column must be where that column's cell starts.
fn assert_aligned(header: &str, row: &str, cells: &[&str]) {
    for cell in cells {
        let start = row
            .find(cell)
            .unwrap_or_else(|| panic!("{cell:?} not in {row:?}"));
        assert!(
            start == 0 || row.as_bytes()[start - 1] == b' ',
            "{cell:?} does not start a column in {row:?}"
        );
        let above = header.get(start..).unwrap_or("");
        assert!(
            start == 0 || header.as_bytes()[start - 1] == b' ' && !above.starts_with(' '),
            "{cell:?} at {start} is not under a header in {header:?}"
        );
    }
}

#[test]
fn tables_show_the_reports() {
    let tmp = WorkDir::temp("control-tables").unwrap();
    let path = tmp.path.join("control.sock");
    let _server = Server::start(ServerConfig::new(&path)).unwrap();

    let status = stdout(&ctl(&path, &["status"]));
    for line in [
        "node:         n1",
        "identity:     n1.vn.example",
        "endpoint:     192.0.2.1",
        "data plane:   userspace",
        "uptime:       3d 4h",
        "adjacencies:  1 up, 1 down",
        "SAs:          1 IKE, 1 child, 0 half-open",
    ] {
        assert!(
            status.lines().any(|l| l == line),
            "{line:?} not in\n{status}"
        );
    }

    let neighbors = stdout(&ctl(&path, &["list-neighbors"]));
    let lines: Vec<&str> = neighbors.lines().collect();
    assert!(lines[0].starts_with("NEIGHBOR"), "{neighbors}");
    assert_aligned(
        lines[0],
        lines[1],
        &[
            "n2",
            "iip-n2",
            "up",
            "192.0.2.1 -> 192.0.2.2",
            "n2.vn.example",
            "established",
        ],
    );
    assert!(lines[1].contains("5m ago"), "{}", lines[1]);
    assert!(lines[1].contains("in 55m"), "{}", lines[1]);
    assert!(lines[1].contains("1.5 KiB (12 pkts)"), "{}", lines[1]);
    assert!(lines[1].contains("5.0 MiB (4096 pkts)"), "{}", lines[1]);
    assert_aligned(
        lines[0],
        lines[2],
        &["n3-long-name", "iip-n3", "down", "backoff"],
    );
    assert_eq!(
        lines[3], "n3-long-name: last error 2m ago: AUTHENTICATION_FAILED",
        "{neighbors}"
    );

    let sas = stdout(&ctl(&path, &["list-sas"]));
    for expected in [
        "n2: #3, ESTABLISHED, IKEv2, 1a2b3c4d5e6f7a8b_i* 0f0e0d0c0b0a0908_r",
        "  local  'n1.vn.example' @ 192.0.2.1 [500]",
        "  CHACHA20_POLY1305/PRF_HMAC_SHA2_256/CURVE25519",
        "  established 5m ago, rekeying in 55m, expires in 2h",
        "    installed 5m ago, rekeying in 40m, expires in 50m",
        "  n2{7}: INSTALLED, TRANSPORT, reqid 7, ESP SPIs: c1a2b3c4_i 00005e6f_o",
        "    CHACHA20_POLY1305/ESN",
        "    in   c1a2b3c4  1.5 KiB,  12 packets,    last 10m ago",
        "    out  00005e6f  5.0 MiB,  4096 packets,  unused",
        "    192.0.2.1/32[ipencap] === 192.0.2.2/32[ipencap]",
    ] {
        assert!(
            sas.lines().any(|l| l == expected),
            "{expected:?} not in\n{sas}"
        );
    }

    let history = stdout(&ctl(&path, &["history", "n2"]));
    let lines: Vec<&str> = history.lines().collect();
    assert_eq!(lines.len(), 4, "{history}");
    assert_aligned(
        lines[0],
        lines[1],
        &["2h ago", "established", "removed", "daemon stopped"],
    );
    assert_aligned(
        lines[0],
        lines[3],
        &[
            "5m ago",
            "connecting",
            "established",
            "child SAs installed and link up",
        ],
    );
    let output = ctl(&path, &["history", "n9"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "error (not-found): no neighbor \"n9\"\n"
    );

    let certs = stdout(&ctl(&path, &["list-certs", "--verbose"]));
    assert!(
        certs.contains("file:         /var/lib/iiptran/cert.pem\n"),
        "{certs}"
    );
    assert!(
        certs.contains("identities:   n1.vn.example, 192.0.2.1\n"),
        "{certs}"
    );
    assert!(certs.contains("valid until:  in 29d ("), "{certs}");
    assert!(
        certs.contains(&format!("fingerprint:  {}\n", "ab".repeat(32))),
        "{certs}"
    );
}

#[test]
fn json_parses_back_to_the_reports() {
    let tmp = WorkDir::temp("control-json").unwrap();
    let path = tmp.path.join("control.sock");
    let server = Server::start(ServerConfig::new(&path)).unwrap();
    let fixture = &server.handler.fixture;

    let cases = [
        ("status", Body::Status(fixture.status.clone())),
        ("list-neighbors", Body::Neighbors(fixture.neighbors.clone())),
        ("list-sas", Body::Sas(fixture.sas.clone())),
        ("list-certs", Body::Certs(fixture.certs.clone())),
    ];
    for (verb, expected) in cases {
        // --json before and after the verb.
        for args in [[verb, "--json"], ["--json", verb]] {
            let output = ctl(&path, &args);
            stdout(&output);
            let response = json(&output);
            assert_eq!(response.version, 1);
            assert_eq!(response.body, expected, "{verb}");
        }
    }

    let output = ctl(&path, &["history", "n2", "--json"]);
    assert_eq!(json(&output).body, Body::History(fixture.history.clone()));

    // The documented field names, so scripts can rely on them.
    let raw: serde_json::Value =
        serde_json::from_slice(&ctl(&path, &["list-sas", "--json"]).stdout).unwrap();
    assert_eq!(raw["version"], 1);
    assert_eq!(raw["sas"][0]["spi_initiator"], "1a2b3c4d5e6f7a8b");
    assert_eq!(raw["sas"][0]["child_sas"][0]["mode"], "TRANSPORT");
    assert_eq!(raw["sas"][0]["child_sas"][0]["inbound"]["spi"], "c1a2b3c4");
}

#[test]
fn actions_reach_the_handler_and_errors_exit_1() {
    let tmp = WorkDir::temp("control-actions").unwrap();
    let path = tmp.path.join("control.sock");
    let server = Server::start(ServerConfig::new(&path)).unwrap();

    assert_eq!(stdout(&ctl(&path, &["initiate", "n2"])), "initiating n2\n");
    assert_eq!(
        stdout(&ctl(&path, &["terminate", "n2"])),
        "terminating n2\n"
    );
    assert_eq!(
        stdout(&ctl(&path, &["rekey", "n2", "--ike"])),
        "rekeying the IKE SA with n2\n"
    );
    assert_eq!(
        stdout(&ctl(&path, &["rekey", "n2"])),
        "rekeying the child SA with n2\n"
    );
    assert_eq!(stdout(&ctl(&path, &["reload"])), "reloaded\n");
    assert_eq!(
        *server.handler.actions.lock().unwrap(),
        [
            "initiating n2",
            "terminating n2",
            "rekeying the IKE SA with n2",
            "rekeying the child SA with n2",
            "reload"
        ]
    );

    let output = ctl(&path, &["initiate", "n9"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "error (not-found): no neighbor \"n9\"\n"
    );

    let output = ctl(&path, &["terminate", "n9", "--json"]);
    assert_eq!(output.status.code(), Some(1));
    match json(&output).body {
        Body::Error(error) => assert_eq!(error.kind, ErrorKind::NotFound),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn unreachable_daemon_exits_3() {
    let tmp = WorkDir::temp("control-absent").unwrap();
    let path = tmp.path.join("control.sock");
    let output = ctl(&path, &["status"]);
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot reach iiptrand at {}", path.display())),
        "{stderr}"
    );
    assert!(stderr.contains("is iiptrand running?"), "{stderr}");

    // A stale socket file: nobody listening.
    drop(UnixListener::bind(&path).unwrap());
    let output = ctl(&path, &["list-sas", "--json"]);
    assert_eq!(output.status.code(), Some(3));
    assert!(output.stdout.is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("is iiptrand running?"));
}

#[test]
fn usage_errors_exit_2() {
    let tmp = WorkDir::temp("control-usage").unwrap();
    let path = tmp.path.join("control.sock");
    for args in [
        &[][..],
        &["frobnicate"],
        &["initiate"],
        &["status", "--bogus"],
    ] {
        let output = ctl(&path, args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn non_root_peer_is_refused() {
    let tmp = WorkDir::temp("control-nonroot").unwrap();
    let dir = tmp.path.join("run");
    let path = dir.join("control.sock");
    let _server = Server::start(ServerConfig::new(&path)).unwrap();
    fs::set_permissions(&tmp.path, fs::Permissions::from_mode(0o755)).unwrap();
    let as_nobody = |path: &Path| {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                IIPTRANCTL,
            ])
            .arg("--socket")
            .arg(path)
            .arg("status")
            .output()
            .unwrap()
    };

    // The 0700 directory and the 0600 socket stop the peer first.
    let output = as_nobody(&path);
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Permission denied"), "{stderr}");
    assert!(stderr.contains("run as root"), "{stderr}");

    // With the file modes opened up, the peer credential check still refuses.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
    let output = as_nobody(&path);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "error (forbidden): only root may use iiptran's control socket\n"
    );
}

#[test]
fn documented_examples_parse() {
    let doc = include_str!("../docs/control.md");
    let mut requests = 0;
    let mut responses = 0;
    for block in doc.split("```json\n").skip(1) {
        let json = block.split("```").next().unwrap();
        if json.contains("\"verb\"") {
            let request = iiptran::control::Request::parse(json.trim().as_bytes());
            assert!(request.is_ok(), "{json}: {request:?}");
            requests += 1;
        } else {
            let response: Response =
                serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
            assert_eq!(response.version, 1);
            responses += 1;
        }
    }
    assert_eq!((requests, responses), (9, 7));
}
