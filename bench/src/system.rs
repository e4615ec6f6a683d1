//! The pieces of the machine a benchmark touches: network namespaces, child processes and
//! what /proc says about them. Everything created is removed by its guard on drop.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Runs a command that must succeed; returns its stdout.
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

pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let mut command = Command::new(program);
    command.args(args);
    checked(command)
}

/// A network namespace with `lo` up, deleted on drop with everything in it.
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn new(name: &str) -> Result<Self> {
        run("ip", &["netns", "add", name])?;
        let ns = Self { name: name.into() };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `program` inside the namespace (`ip netns exec` execs it: the pid is the program's).
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        run("ip", &full)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run("ip", &["netns", "del", &self.name]) {
            eprintln!("deleting namespace {}: {e:#}", self.name);
        }
    }
}

/// Two namespaces joined by a veth link `veth0`, with `a_addr` and `b_addr` (/24).
pub struct Pair {
    pub a: Netns,
    pub b: Netns,
}

impl Pair {
    pub fn new(prefix: &str, a_addr: &str, b_addr: &str) -> Result<Self> {
        let a = Netns::new(&format!("{prefix}a"))?;
        let b = Netns::new(&format!("{prefix}b"))?;
        a.ip(&[
            "link", "add", "veth0", "type", "veth", "peer", "name", "veth0", "netns", &b.name,
        ])?;
        for (ns, addr) in [(&a, a_addr), (&b, b_addr)] {
            ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "veth0"])?;
            ns.ip(&["link", "set", "veth0", "up"])?;
        }
        Ok(Self { a, b })
    }
}

/// Namespaces `<prefix>0`, `<prefix>1`, … each with `veth0` on one bridge, which lives in
/// a namespace of its own (`<prefix>sw`), and the /24 addresses given.
pub struct Lan {
    pub nodes: Vec<Netns>,
    // Dropped after the nodes; its bridge and the veth peers go with it.
    switch: Netns,
}

impl Lan {
    pub fn new(prefix: &str, addrs: &[&str]) -> Result<Self> {
        let switch = Netns::new(&format!("{prefix}sw"))?;
        switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        switch.ip(&["link", "set", "br0", "up"])?;
        let mut lan = Self {
            nodes: Vec::new(),
            switch,
        };
        for (i, addr) in addrs.iter().enumerate() {
            let ns = Netns::new(&format!("{prefix}{i}"))?;
            let port = format!("p{i}");
            ns.ip(&[
                "link",
                "add",
                "veth0",
                "type",
                "veth",
                "peer",
                "name",
                &port,
                "netns",
                &lan.switch.name,
            ])?;
            lan.switch
                .ip(&["link", "set", &port, "master", "br0", "up"])?;
            ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "veth0"])?;
            ns.ip(&["link", "set", "veth0", "up"])?;
            lan.nodes.push(ns);
        }
        Ok(lan)
    }
}

/// A child process, stopped (SIGTERM, then SIGKILL) on drop. Its output goes to
/// `<dir>/<name>.stdout|stderr` unless the caller asked for a pipe.
pub struct Process {
    pub name: String,
    pub child: Child,
}

impl Process {
    pub fn spawn(name: &str, mut command: Command, dir: &Path) -> Result<Self> {
        command
            .stdout(File::create(dir.join(format!("{name}.stdout")))?)
            .stderr(File::create(dir.join(format!("{name}.stderr")))?);
        Self::spawn_as_is(name, command)
    }

    /// Spawns `command` with the stdio the caller set up.
    pub fn spawn_as_is(name: &str, mut command: Command) -> Result<Self> {
        let child = command
            .spawn()
            .with_context(|| format!("starting {name}: {command:?}"))?;
        Ok(Self {
            name: name.into(),
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill has no memory effects; the pid is our own child's (not yet reaped).
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, signal);
        }
    }

    pub fn exited(&mut self) -> Result<Option<std::process::ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Stops the process: SIGTERM, and SIGKILL if it has not ended after 10 s.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// CPU time and resident set size from /proc.
    pub fn usage(&self) -> Result<Usage> {
        Usage::of(self.pid())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A process's CPU time (user + system) and resident set size at one moment.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    pub cpu_seconds: f64,
    pub rss_kib: u64,
}

impl Usage {
    pub fn of(pid: u32) -> Result<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name, which is in parentheses and may hold spaces:
        // state is field 3, utime 14 and stime 15.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .context("malformed stat")?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| -> Result<f64> {
            Ok(fields.get(i).context("short stat")?.parse::<u64>()? as f64)
        };
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let cpu_seconds = (ticks(11)? + ticks(12)?) / hz;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS")?;
        Ok(Self {
            cpu_seconds,
            rss_kib,
        })
    }
}

/// Polls `probe` every `every` until it yields a value; fails after `timeout` naming `what`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe()? {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(every);
    }
}

/// A scratch directory, removed on drop unless `keep` is set.
pub struct WorkDir {
    pub path: PathBuf,
    pub keep: bool,
}

impl WorkDir {
    pub fn new(path: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&path)?;
        Ok(Self { path, keep: false })
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.keep || std::thread::panicking() {
            eprintln!("kept {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
