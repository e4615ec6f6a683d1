//! A child process that is stopped and reaped when its guard drops.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::wait::wait_until;

/// How long a process may take to exit after SIGTERM before it gets SIGKILL, unless
/// [`Process::set_grace`] says otherwise.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// A running child, usually with its stdout and stderr in `<dir>/<name>.stdout` /
/// `.stderr`. On drop it gets SIGTERM, then SIGKILL after the grace period, and is reaped;
/// if the thread is panicking its output is printed.
pub struct Process {
    name: String,
    /// The child itself, e.g. to take a pipe the caller asked for.
    pub child: Child,
    /// stdout and stderr files, unless the caller set up the child's stdio.
    logs: Option<(PathBuf, PathBuf)>,
    grace: Duration,
    status: Option<ExitStatus>,
}

impl Process {
    /// Starts `command` with no stdin and its output in files under `dir`.
    pub fn spawn(name: &str, mut command: Command, dir: &Path) -> Result<Self> {
        let stdout = dir.join(format!("{name}.stdout"));
        let stderr = dir.join(format!("{name}.stderr"));
        command
            .stdin(Stdio::null())
            .stdout(File::create(&stdout)?)
            .stderr(File::create(&stderr)?);
        let mut process = Self::spawn_as_is(name, command)?;
        process.logs = Some((stdout, stderr));
        Ok(process)
    }

    /// Starts `command` with the stdio the caller set up.
    pub fn spawn_as_is(name: &str, mut command: Command) -> Result<Self> {
        // A shell without job control starts background commands with SIGINT and SIGQUIT
        // ignored, and an ignored signal stays so across exec: a test suite started that
        // way would hand its processes a Ctrl-C that a shell script cannot even trap.
        // SAFETY: only signal(2), which is async-signal-safe, runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                for signal in [libc::SIGINT, libc::SIGQUIT] {
                    libc::signal(signal, libc::SIG_DFL);
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {name}: {command:?}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            logs: None,
            grace: DEFAULT_GRACE,
            status: None,
        })
    }

    /// Gives the process `grace` to exit after SIGTERM.
    pub fn set_grace(&mut self, grace: Duration) {
        self.grace = grace;
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if it has exited (reaping it), `None` while it runs.
    pub fn exited(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
        }
        Ok(self.status)
    }

    /// Its stdout so far (empty if the caller set up its stdio).
    pub fn stdout(&self) -> String {
        self.log(|(stdout, _)| stdout)
    }

    /// Its stderr so far (empty if the caller set up its stdio).
    pub fn stderr(&self) -> String {
        self.log(|(_, stderr)| stderr)
    }

    fn log(&self, which: impl Fn(&(PathBuf, PathBuf)) -> &PathBuf) -> String {
        self.logs
            .as_ref()
            .and_then(|logs| std::fs::read_to_string(which(logs)).ok())
            .unwrap_or_default()
    }

    /// Both outputs, labelled, for failure messages.
    pub fn dump(&self) -> String {
        format!(
            "--- {name} stdout\n{}--- {name} stderr\n{}",
            self.stdout(),
            self.stderr(),
            name = self.name
        )
    }

    /// Sends `signal` to the process if it still runs.
    pub fn signal(&mut self, signal: libc::c_int) -> Result<()> {
        if self.exited()?.is_none() {
            let pid = libc::pid_t::try_from(self.pid())?;
            // SAFETY: the child is not reaped yet, so the pid still names it.
            if unsafe { libc::kill(pid, signal) } != 0 {
                return Err(std::io::Error::last_os_error().into());
            }
        }
        Ok(())
    }

    /// Waits up to `timeout` for the process to exit on its own; its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let what = format!("{} to exit", self.name);
        wait_until(&what, timeout, Duration::from_millis(20), || self.exited())
    }

    /// SIGTERM, then SIGKILL if it has not exited within the grace period; returns its status.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        self.signal(libc::SIGTERM)?;
        if let Ok(status) = self.wait_exit(self.grace) {
            return Ok(status);
        }
        self.child.kill()?;
        let status = self.child.wait()?;
        self.status = Some(status);
        Ok(status)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("stopping {}: {e:#}", self.name);
        }
        if std::thread::panicking() {
            eprintln!("{}", self.dump());
        }
    }
}
