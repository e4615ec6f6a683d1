//! Kernel data-plane scenarios for a VM whose kernel has esp4, ipip and the AEADs (run by
//! `tests/vm/run`, as root, never on a host whose namespaces it would disturb):
//!
//! 1. kernel <-> kernel: two namespaces, SAs, policies and virtual links all installed
//!    through `KernelDataplane`; ping across; ESP counters read back with GETSA.
//!    Over IPv4 endpoints (`ipip`) with ChaCha20-Poly1305 and AES-GCM-128, over IPv6
//!    endpoints (`ip6tnl`, IPv4 and IPv6 inner packets under SAs of their own) with
//!    AES-GCM-128.
//! 2. kernel <-> userspace: one namespace on `KernelDataplane` (ESP in UDP 4500),
//!    the other on `UserspaceDataplane`; ping both ways, over IPv4 and over IPv6
//!    endpoints. This shows the two backends speak the same wire format.
//!
//! 3. kernel link-down events: a link the daemon wants up, set down or deleted by
//!    someone else, is reported as `LinkDown`.
//!
//! 4. kernel links deleted as a group: all of them in one request, unless the group holds
//!    a link of someone else's, which stays.
//!
//! Exits 0 when every scenario passed.

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use iiptran_xfrm::kernel::{KernelDataplane, enable_espinudp};
use iiptran_xfrm::{AeadAlg, Dataplane, DataplaneEvent, InnerFamilies, LinkSpec, SaId};

mod common;
use common::*;

/// Runs a configured kernel backend in `ns` until told to stop, reporting the packet
/// counts of the SAs towards and from the peer (summed over the inner families) when it
/// stops.
fn kernel_end(
    ns: String,
    local: IpAddr,
    remote: IpAddr,
    inners: &'static [&'static str],
    alg: AeadAlg,
    encap: bool,
) -> Res<(Stop, EndThread<(u64, u64)>)> {
    let name = ns.clone();
    let any = if local.is_ipv4() {
        Family::V4
    } else {
        Family::V6
    }
    .any();
    let setup = move || async move {
        let dp = KernelDataplane::open()?;
        // For ESP in UDP the kernel decapsulates on a socket marked as such.
        let sock = tokio::net::UdpSocket::bind((any, iiptran_xfrm::NAT_T_PORT)).await?;
        if encap {
            enable_espinudp(&sock)?;
        }
        configure(&dp, local, remote, inners, alg, encap).await?;
        Ok((dp, sock))
    };
    let report = move |(dp, _sock): (KernelDataplane, tokio::net::UdpSocket)| async move {
        let (mut out_packets, mut in_packets) = (0, 0);
        for inner in inners {
            let (_, out_spi, in_spi) = carriage(local, inner.parse()?);
            let stats = |src, dst, spi| dp.sa_stats(SaId { src, dst, spi });
            let out = stats(local, remote, out_spi).await?;
            let inp = stats(remote, local, in_spi).await?;
            println!("  {name}: out SA {out:?}\n  {name}: in SA {inp:?}");
            out_packets += out.packets;
            in_packets += inp.packets;
        }
        dp.flush_ours().await?;
        dp.delete_link(LINK).await?;
        Ok((out_packets, in_packets))
    };
    spawn_end(ns, setup, report)
}

/// With IPv6 endpoints the `ip6tnl` link carries IPv6 inner packets too (protocol 41,
/// their own SAs).
fn kernel_to_kernel(alg: AeadAlg, family: Family) -> Res<()> {
    let ns = Namespaces::new("")?;
    let (a, b) = family.endpoints();
    let (inners_a, inners_b, pings): (&[&str], &[&str], &[&str]) = match family {
        Family::V4 => (&["10.99.0.1"], &["10.99.0.2"], &["10.99.0.2"]),
        Family::V6 => (
            &["10.99.0.1", "fd00:99::1"],
            &["10.99.0.2", "fd00:99::2"],
            &["10.99.0.2", "fd00:99::2"],
        ),
    };
    let (stop_a, ta) = kernel_end(ns.a.clone(), a, b, inners_a, alg, false)?;
    let (stop_b, tb) = kernel_end(ns.b.clone(), b, a, inners_b, alg, false)?;
    let failed: Vec<&str> = pings
        .iter()
        .copied()
        .filter(|dst| !ping(&ns.a, dst))
        .collect();
    let (a_out, a_in) = finish(stop_a, ta)?;
    let (b_out, b_in) = finish(stop_b, tb)?;
    if !failed.is_empty() {
        return Err(format!("ping a -> {failed:?} failed").into());
    }
    let least = 3 * pings.len() as u64;
    if a_out < least || b_in < least || b_out < least || a_in < least {
        return Err(format!(
            "ESP counters below {least}: a out {a_out} in {a_in}, b out {b_out} in {b_in}"
        )
        .into());
    }
    Ok(())
}

fn kernel_to_userspace(alg: AeadAlg, family: Family) -> Res<()> {
    let ns = Namespaces::new("")?;
    let (a, b) = family.endpoints();
    let (stop_a, ta) = kernel_end(ns.a.clone(), a, b, &["10.99.0.1"], alg, true)?;
    let (stop_b, tb) = userspace_end(ns.b.clone(), b, a, &["10.99.0.2"], alg)?;
    let ab = ping(&ns.a, "10.99.0.2");
    let ba = ping(&ns.b, "10.99.0.1");
    let (a_out, a_in) = finish(stop_a, ta)?;
    finish(stop_b, tb)?;
    if !ab || !ba {
        return Err(format!("ping kernel -> userspace {ab}, userspace -> kernel {ba}").into());
    }
    if a_out < 6 || a_in < 6 {
        return Err(format!("kernel ESP counters too low: out {a_out} in {a_in}").into());
    }
    Ok(())
}

async fn expect_link_down(
    events: &mut tokio::sync::broadcast::Receiver<DataplaneEvent>,
    what: &str,
) -> Res<()> {
    match tokio::time::timeout(Duration::from_secs(5), events.recv()).await {
        Ok(Ok(DataplaneEvent::LinkDown { name })) if name == LINK => Ok(()),
        other => Err(format!("{what}: expected LinkDown, got {other:?}").into()),
    }
}

/// A link the daemon set up and someone else takes down or deletes is reported.
fn kernel_link_down_events() -> Res<()> {
    let ns = Namespaces::new("")?;
    let name = ns.a.clone();
    let t = iiptran_xfrm::netns::spawn_in(&ns_path(&ns.a), move || async move {
        let dp = KernelDataplane::open()?;
        let mut events = dp.subscribe();
        let link = LinkSpec {
            name: LINK.into(),
            local: A.into(),
            remote: B.into(),
            addresses: vec![],
            inner: InnerFamilies::IPV4,
            mtu: 1400,
        };
        dp.create_link(&link).await?;
        dp.set_link_up(LINK, true).await?;
        // Our own down/up is not an event.
        dp.set_link_up(LINK, false).await?;
        dp.set_link_up(LINK, true).await?;
        ip(&["-n", &name, "link", "set", LINK, "down"])?;
        expect_link_down(&mut events, "set down by someone else").await?;
        dp.set_link_up(LINK, true).await?;
        ip(&["-n", &name, "link", "del", LINK])?;
        expect_link_down(&mut events, "deleted by someone else").await?;
        Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
    })?;
    t.join().map_err(|_| "namespace thread panicked")??
}

/// The names of the links in the links' device group of namespace `ns`.
fn in_group(ns: &str) -> Res<Vec<String>> {
    let out = std::process::Command::new("ip")
        .args(["-n", ns, "-o", "link", "show", "group", "0x69697074"])
        .output()?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into());
    }
    let mut names: Vec<String> = String::from_utf8(out.stdout)?
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        // `ipip` links show as `name@NONE`.
        .map(|n| n.trim().split('@').next().unwrap_or_default().to_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// At shutdown the links go together, but never with a link of someone else's that was
/// put in their group: then they go one by one and that one stays.
fn kernel_links_go_at_once_but_never_anothers() -> Res<()> {
    let ns = Namespaces::new("")?;
    let name = ns.a.clone();
    let t = iiptran_xfrm::netns::spawn_in(&ns_path(&ns.a), move || async move {
        let dp = KernelDataplane::open()?;
        let ours: Vec<String> = (0..3).map(|i| format!("kgrp{i}")).collect();
        for foreign in [true, false] {
            for (i, link) in ours.iter().enumerate() {
                // Tunnels with the same endpoints would be one tunnel to the kernel.
                let remote = std::net::Ipv4Addr::new(198, 51, 100, i as u8 + 1);
                let spec = LinkSpec {
                    name: link.clone(),
                    local: A.into(),
                    remote: remote.into(),
                    addresses: vec![],
                    inner: InnerFamilies::IPV4,
                    mtu: 1400,
                };
                dp.create_link(&spec).await?;
            }
            dp.set_link_up(&ours[0], true).await?;
            let mut expected = ours.clone();
            if foreign {
                ip(&[
                    "-n",
                    &name,
                    "link",
                    "add",
                    "fgngrp",
                    "group",
                    "0x69697074",
                    "type",
                    "ipip",
                    "local",
                    "192.0.2.1",
                    "remote",
                    "198.51.100.99",
                ])?;
                expected.push("fgngrp".into());
                expected.sort();
            }
            let before = in_group(&name)?;
            if before != expected {
                return Err(format!("in the group before: {before:?}").into());
            }
            dp.delete_links().await?;
            let after = in_group(&name)?;
            let left: Vec<String> = if foreign {
                vec!["fgngrp".into()]
            } else {
                vec![]
            };
            if after != left {
                return Err(format!("foreign link {foreign}: left in the group {after:?}").into());
            }
            if foreign {
                ip(&["-n", &name, "link", "del", "fgngrp"])?;
            }
        }
        Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
    })?;
    t.join().map_err(|_| "namespace thread panicked")??
}

type Scenario = fn() -> Res<()>;

fn main() -> ExitCode {
    let scenarios: [(&str, Scenario); 8] = [
        ("kernel link-down events", kernel_link_down_events),
        (
            "kernel links deleted as a group, never another's",
            kernel_links_go_at_once_but_never_anothers,
        ),
        ("kernel <-> kernel, ChaCha20-Poly1305", || {
            kernel_to_kernel(AeadAlg::ChaCha20Poly1305, Family::V4)
        }),
        ("kernel <-> kernel, AES-GCM-128", || {
            kernel_to_kernel(AeadAlg::AesGcm128, Family::V4)
        }),
        ("kernel <-> kernel over IPv6 (ip6tnl), AES-GCM-128", || {
            kernel_to_kernel(AeadAlg::AesGcm128, Family::V6)
        }),
        ("kernel <-> userspace, ChaCha20-Poly1305", || {
            kernel_to_userspace(AeadAlg::ChaCha20Poly1305, Family::V4)
        }),
        ("kernel <-> userspace, AES-GCM-256", || {
            kernel_to_userspace(AeadAlg::AesGcm256, Family::V4)
        }),
        ("kernel <-> userspace over IPv6, ChaCha20-Poly1305", || {
            kernel_to_userspace(AeadAlg::ChaCha20Poly1305, Family::V6)
        }),
    ];
    let mut failed = 0;
    for (name, run) in scenarios {
        println!("=== {name}");
        match run() {
            Ok(()) => println!("PASS {name}"),
            Err(e) => {
                failed += 1;
                println!("FAIL {name}: {e}");
            }
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
