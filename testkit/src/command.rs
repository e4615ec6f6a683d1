//! Running host commands that must succeed.

use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// Runs `program` with `args`; its stdout, or an error with its output if it failed.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let mut command = Command::new(program);
    command.args(args);
    checked(command)
}

/// Runs `command` to completion; its stdout if it succeeded, an error with stderr if not.
pub fn checked(mut command: Command) -> Result<String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// [`run`] for tests that end at the first failure: panics with the command's output if
/// it cannot run or fails.
#[track_caller]
pub fn sh(program: &str, args: &[&str]) -> String {
    run(program, args).unwrap_or_else(|e| panic!("{e:#}"))
}
