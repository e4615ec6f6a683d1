//! `iiptrand --config` with a configuration it cannot run: exit status 2 and an error
//! that names the file, the line and the field.

mod support;

use std::process::Command;

use iiptran_testkit::WorkDir;
use support::OrPanic;

#[test]
fn a_bad_configuration_exits_2_naming_file_line_and_field() {
    let dir = WorkDir::temp("daemon-config").or_panic();
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "[node]\nname = \"a\"\nidentity = \"a.vn.example\"\nendpoint = \"not-an-address\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_iiptrand"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("bad.toml:4:") && stderr.contains("endpoint"),
        "the error does not place itself: {stderr}"
    );
}
