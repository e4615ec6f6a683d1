//! Kernel data-plane scenarios for a VM whose kernel has esp4, ipip and the AEADs (run by
//! `tests/vm/run`, as root, never on a host whose namespaces it would disturb):
//!
//! 1. kernel <-> kernel: two namespaces, SAs, policies and ipip links all installed
//!    through `KernelDataplane`; ping across; ESP counters read back with GETSA.
//!    Once with ChaCha20-Poly1305 and once with AES-GCM-128.
//! 2. kernel <-> userspace: one namespace on `KernelDataplane` (ESP in UDP 4500),
//!    the other on `UserspaceDataplane`; ping both ways. This shows the two backends
//!    speak the same wire format.
//!
//! Exits 0 when every scenario passed.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;

use iiptran_xfrm::kernel::{KernelDataplane, enable_espinudp};
use iiptran_xfrm::userspace::UserspaceDataplane;
use iiptran_xfrm::{
    AeadAlg, DEFAULT_PRIORITY, Dataplane, Direction, IPPROTO_IPIP, IpPrefix, KeyMaterial, Lifetimes, LinkSpec,
    NAT_T_PORT, OWNED_REQIDS, PolicySpec, Replay, SaId, SaSpec, Selector, Template, UdpEncap,
};

const A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const SPI_AB: u32 = 0xa01;
const SPI_BA: u32 = 0xb01;
const REQID: u32 = *OWNED_REQIDS.start() + 1;
const LINK: &str = "ipt0";

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn ip(args: &[&str]) -> Res<()> {
    let st = Command::new("ip").args(args).status()?;
    if !st.success() {
        return Err(format!("ip {args:?} failed").into());
    }
    Ok(())
}

/// Two namespaces `a` and `b` joined by veth (A and B), removed on drop.
struct Namespaces;

impl Namespaces {
    fn new() -> Res<Self> {
        for ns in ["a", "b"] {
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        ip(&["link", "add", "va", "netns", "a", "type", "veth", "peer", "name", "vb", "netns", "b"])?;
        ip(&["-n", "a", "addr", "add", "192.0.2.1/24", "dev", "va"])?;
        ip(&["-n", "b", "addr", "add", "192.0.2.2/24", "dev", "vb"])?;
        ip(&["-n", "a", "link", "set", "va", "up"])?;
        ip(&["-n", "b", "link", "set", "vb", "up"])?;
        Ok(Self)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in ["a", "b"] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn keymat(alg: AeadAlg, seed: u8) -> Vec<u8> {
    (0..alg.key_len() + 4).map(|i| seed.wrapping_add(i as u8)).collect()
}

fn sa(dir: Direction, src: Ipv4Addr, dst: Ipv4Addr, spi: u32, alg: AeadAlg, encap: bool) -> Res<SaSpec> {
    let (s, d) = (IpAddr::V4(src), IpAddr::V4(dst));
    let seed = if spi == SPI_AB { 0x10 } else { 0x80 };
    Ok(SaSpec {
        spi,
        direction: dir,
        src: s,
        dst: d,
        selector: Selector::tunnel(s, d, IPPROTO_IPIP),
        key: KeyMaterial::from_keymat(alg, &keymat(alg, seed))?,
        replay: Replay::default(),
        lifetimes: Lifetimes::default(),
        encap: encap.then_some(UdpEncap { src_port: NAT_T_PORT, dst_port: NAT_T_PORT }),
        reqid: REQID,
        mark: None,
    })
}

fn policy(dir: Direction, src: Ipv4Addr, dst: Ipv4Addr) -> PolicySpec {
    let (s, d) = (IpAddr::V4(src), IpAddr::V4(dst));
    PolicySpec {
        direction: dir,
        selector: Selector::tunnel(s, d, IPPROTO_IPIP),
        template: Template { src: s, dst: d, reqid: REQID },
        priority: DEFAULT_PRIORITY,
        mark: None,
    }
}

/// SAs both ways, policies, and the virtual link with `inner`, for the end at `local`.
async fn configure(dp: &impl Dataplane, local: Ipv4Addr, remote: Ipv4Addr, inner: &str, alg: AeadAlg, encap: bool) -> Res<()> {
    let (out_spi, in_spi) = if local == A { (SPI_AB, SPI_BA) } else { (SPI_BA, SPI_AB) };
    dp.install_sa(&sa(Direction::Out, local, remote, out_spi, alg, encap)?).await?;
    dp.install_sa(&sa(Direction::In, remote, local, in_spi, alg, encap)?).await?;
    dp.install_policy(&policy(Direction::Out, local, remote)).await?;
    dp.install_policy(&policy(Direction::In, remote, local)).await?;
    let link = LinkSpec {
        name: LINK.into(),
        local,
        remote,
        addresses: vec![IpPrefix::new(inner.parse()?, 30)?],
        mtu: 1400,
    };
    dp.create_link(&link).await?;
    dp.set_link_up(LINK, true).await?;
    Ok(())
}

fn ns_path(ns: &str) -> PathBuf {
    PathBuf::from(format!("/run/netns/{ns}"))
}

fn ping(ns: &str, dst: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-c", "3", "-i", "0.3", "-W", "3", dst])
        .status()
        .is_ok_and(|s| s.success())
}

type Stop = tokio::sync::oneshot::Sender<()>;

/// Runs a configured kernel backend in `ns` until told to stop, reporting the packet
/// counts of the SAs towards and from the peer when it stops.
fn kernel_end(
    ns: &'static str,
    local: Ipv4Addr,
    remote: Ipv4Addr,
    inner: &'static str,
    alg: AeadAlg,
    encap: bool,
) -> Res<(Stop, std::thread::JoinHandle<std::io::Result<Res<(u64, u64)>>>)> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let t = iiptran_xfrm::netns::spawn_in(&ns_path(ns), move || async move {
        let run = async {
            let dp = KernelDataplane::open()?;
            // For ESP in UDP the kernel decapsulates on a socket marked as such.
            let sock = tokio::net::UdpSocket::bind("0.0.0.0:4500").await?;
            if encap {
                enable_espinudp(&sock)?;
            }
            configure(&dp, local, remote, inner, alg, encap).await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((dp, sock))
        };
        let (dp, _sock) = match run.await {
            Ok(v) => {
                let _ = ready_tx.send(Ok(()));
                v
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e.to_string()));
                return Err(e);
            }
        };
        let _ = stop_rx.await;
        let (out_spi, in_spi) = if local == A { (SPI_AB, SPI_BA) } else { (SPI_BA, SPI_AB) };
        let out = dp.sa_stats(SaId { src: local.into(), dst: remote.into(), spi: out_spi }).await?;
        let inp = dp.sa_stats(SaId { src: remote.into(), dst: local.into(), spi: in_spi }).await?;
        println!("  {ns}: out SA {out:?}\n  {ns}: in SA {inp:?}");
        dp.flush_ours().await?;
        dp.delete_link(LINK).await?;
        Ok((out.packets, inp.packets))
    })?;
    ready_rx.recv()?.map_err(|e| format!("{ns}: {e}"))?;
    Ok((stop_tx, t))
}

fn finish(stop: Stop, t: std::thread::JoinHandle<std::io::Result<Res<(u64, u64)>>>) -> Res<(u64, u64)> {
    let _ = stop.send(());
    t.join().map_err(|_| "namespace thread panicked")??
}

fn kernel_to_kernel(alg: AeadAlg) -> Res<()> {
    let _ns = Namespaces::new()?;
    let (stop_a, ta) = kernel_end("a", A, B, "10.99.0.1", alg, false)?;
    let (stop_b, tb) = kernel_end("b", B, A, "10.99.0.2", alg, false)?;
    let pinged = ping("a", "10.99.0.2");
    let (a_out, a_in) = finish(stop_a, ta)?;
    let (b_out, b_in) = finish(stop_b, tb)?;
    if !pinged {
        return Err("ping a -> b failed".into());
    }
    if a_out < 3 || b_in < 3 || b_out < 3 || a_in < 3 {
        return Err(format!("ESP counters too low: a out {a_out} in {a_in}, b out {b_out} in {b_in}").into());
    }
    Ok(())
}

fn kernel_to_userspace(alg: AeadAlg) -> Res<()> {
    let _ns = Namespaces::new()?;
    let (stop_a, ta) = kernel_end("a", A, B, "10.99.0.1", alg, true)?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let tb = iiptran_xfrm::netns::spawn_in(&ns_path("b"), move || async move {
        let run = async {
            let sock = Arc::new(tokio::net::UdpSocket::bind("0.0.0.0:4500").await?);
            let (dp, _ike) = UserspaceDataplane::new(sock)?;
            configure(&dp, B, A, "10.99.0.2", alg, false).await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((dp, _ike))
        };
        match run.await {
            Ok(dp) => {
                let _ = ready_tx.send(Ok(()));
                let _ = stop_rx.await;
                drop(dp);
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e.to_string()));
            }
        }
    })?;
    ready_rx.recv()?.map_err(|e| format!("b: {e}"))?;
    let ab = ping("a", "10.99.0.2");
    let ba = ping("b", "10.99.0.1");
    let (a_out, a_in) = finish(stop_a, ta)?;
    let _ = stop_tx.send(());
    tb.join().map_err(|_| "namespace thread panicked")??;
    if !ab || !ba {
        return Err(format!("ping kernel -> userspace {ab}, userspace -> kernel {ba}").into());
    }
    if a_out < 6 || a_in < 6 {
        return Err(format!("kernel ESP counters too low: out {a_out} in {a_in}").into());
    }
    Ok(())
}

fn main() -> ExitCode {
    let scenarios: [(&str, fn() -> Res<()>); 4] = [
        ("kernel <-> kernel, ChaCha20-Poly1305", || kernel_to_kernel(AeadAlg::ChaCha20Poly1305)),
        ("kernel <-> kernel, AES-GCM-128", || kernel_to_kernel(AeadAlg::AesGcm128)),
        ("kernel <-> userspace, ChaCha20-Poly1305", || kernel_to_userspace(AeadAlg::ChaCha20Poly1305)),
        ("kernel <-> userspace, AES-GCM-256", || kernel_to_userspace(AeadAlg::AesGcm256)),
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
    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
