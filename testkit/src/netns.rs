//! Network namespaces that disappear with their guard, veth links between them, and
//! running commands or closures inside them.

use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, bail};

use crate::command::{checked, run};

/// A named network namespace (`ip netns add`), deleted on drop with everything in it.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `<prefix><pid>-<n>` with `lo` up. The name is kept to 15 characters so it
    /// can also name interfaces; a longer prefix is an error.
    pub fn new(prefix: &str) -> Result<Self> {
        let name = format!("{prefix}{}", crate::unique_suffix());
        if name.len() > 15 {
            bail!("namespace name {name:?} is longer than 15 characters: shorten {prefix:?}");
        }
        Self::named(&name)
    }

    /// Creates the namespace `name` as given, with `lo` up.
    pub fn named(name: &str) -> Result<Self> {
        run("ip", &["netns", "add", name])?;
        let ns = Self { name: name.into() };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's file, for joining it with `setns`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// A command that runs `program` inside the namespace (and, through `ip netns exec`,
    /// in a private mount namespace with /sys remounted for it).
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// Runs `program` inside the namespace and returns its stdout; fails with its stderr.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        let mut command = self.command(program);
        command.args(args);
        checked(command)
    }

    /// Runs `args` inside the namespace to completion, whether it succeeds or not.
    pub fn exec(&self, args: &[&str]) -> Result<std::process::Output> {
        let (program, rest) = args.split_first().context("exec needs a program")?;
        let mut command = self.command(program);
        command.args(rest);
        command
            .output()
            .with_context(|| format!("running {command:?}"))
    }

    /// `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Runs `f` on a new thread that has joined this namespace, so sockets it opens live
    /// here. A panic in `f` is passed on to the caller.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let file =
            File::open(self.path()).with_context(|| format!("opening namespace {}", self.name))?;
        std::thread::scope(|scope| {
            let thread = scope.spawn(|| -> Result<T> {
                // SAFETY: setns on a valid namespace fd only changes this thread's network
                // namespace; the thread ends with the closure.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error()).context("setns");
                }
                Ok(f())
            });
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run("ip", &["netns", "del", &self.name]) {
            eprintln!("deleting namespace {}: {e:#}", self.name);
        }
    }
}

/// One end of a veth link: its namespace-local interface name and address.
#[derive(Clone, Debug)]
pub struct VethEnd {
    pub ifname: String,
    pub addr: IpAddr,
}

/// Joins `a` and `b` with a veth pair, gives each end its address with `prefix_len`, and
/// brings both up. Both ends get the same unique name (they live in different namespaces);
/// the link goes away with either namespace.
pub fn veth(
    a: &Netns,
    a_addr: IpAddr,
    b: &Netns,
    b_addr: IpAddr,
    prefix_len: u8,
) -> Result<(VethEnd, VethEnd)> {
    let ifname = veth_pair(a, b)?;
    for (ns, addr) in [(a, a_addr), (b, b_addr)] {
        address_up(ns, &ifname, addr, prefix_len)?;
    }
    let end = |addr| VethEnd {
        ifname: ifname.clone(),
        addr,
    };
    Ok((end(a_addr), end(b_addr)))
}

/// A veth pair between `a` and `b` whose ends have the same name, unique in this process.
fn veth_pair(a: &Netns, b: &Netns) -> Result<String> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let ifname = format!("veth{}", N.fetch_add(1, Ordering::Relaxed));
    link(a, &ifname, b, &ifname)?;
    Ok(ifname)
}

/// A veth pair: `a_if` in `a`, `b_if` in `b`, both down and without addresses.
pub fn link(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<()> {
    a.ip(&[
        "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
    ])?;
    Ok(())
}

/// Gives `ifname` in `ns` the address `addr/prefix_len` and brings it up.
pub fn address_up(ns: &Netns, ifname: &str, addr: IpAddr, prefix_len: u8) -> Result<()> {
    let cidr = format!("{addr}/{prefix_len}");
    let mut args = vec!["addr", "add", &cidr, "dev", ifname];
    if addr.is_ipv6() {
        // otherwise the address stays tentative while duplicate detection runs
        args.push("nodad");
    }
    ns.ip(&args)?;
    ns.ip(&["link", "set", ifname, "up"])?;
    Ok(())
}

/// A namespace holding one Linux bridge: a shared segment that any number of namespaces
/// plug into, each with its own veth pair.
pub struct Switch {
    ns: Netns,
}

impl Switch {
    /// The bridge in a new namespace `sw<pid>-<n>`.
    pub fn new() -> Result<Self> {
        Self::within(Netns::new("sw")?)
    }

    /// The bridge in `ns`.
    pub fn within(ns: Netns) -> Result<Self> {
        ns.ip(&["link", "add", "br0", "type", "bridge"])?;
        ns.ip(&["link", "set", "br0", "up"])?;
        Ok(Self { ns })
    }

    /// Plugs `node` into the bridge; the node's end gets `addr/prefix_len` and comes up.
    /// Both ends get the same unique name.
    pub fn plug(&self, node: &Netns, addr: IpAddr, prefix_len: u8) -> Result<VethEnd> {
        let ifname = veth_pair(&self.ns, node)?;
        self.attach(&ifname)?;
        address_up(node, &ifname, addr, prefix_len)?;
        Ok(VethEnd { ifname, addr })
    }

    /// [`Switch::plug`] with the names given: `ifname` in the node, `port` at the bridge.
    pub fn plug_as(
        &self,
        node: &Netns,
        ifname: &str,
        port: &str,
        addr: IpAddr,
        prefix_len: u8,
    ) -> Result<VethEnd> {
        link(node, ifname, &self.ns, port)?;
        self.attach(port)?;
        address_up(node, ifname, addr, prefix_len)?;
        Ok(VethEnd {
            ifname: ifname.into(),
            addr,
        })
    }

    fn attach(&self, port: &str) -> Result<()> {
        self.ns.ip(&["link", "set", port, "master", "br0"])?;
        self.ns.ip(&["link", "set", port, "up"])?;
        Ok(())
    }
}
