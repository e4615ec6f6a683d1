//! Fixtures shared by the examples: two namespaces joined by veth, hand-keyed SAs,
//! IIPtran policies and one virtual link per end, configured through any backend.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;

use iiptran_xfrm::userspace::UserspaceDataplane;

use iiptran_xfrm::{
    AeadAlg, DEFAULT_PRIORITY, Dataplane, Direction, IPPROTO_IPIP, IPPROTO_IPV6, InnerFamilies,
    IpPrefix, KeyMaterial, Lifetimes, LinkSpec, NAT_T_PORT, OWNED_REQIDS, PolicySpec, Replay,
    SaSpec, Selector, Template, UdpEncap,
};

pub const A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub const A6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
pub const B6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
pub const SPI_AB: u32 = 0xa01;
pub const SPI_BA: u32 = 0xb01;
pub const REQID: u32 = *OWNED_REQIDS.start() + 1;
pub const LINK: &str = "ipt0";

pub type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The address family of the tunnel endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The endpoints of namespaces `a` and `b` on the veth between them.
    pub fn endpoints(self) -> (IpAddr, IpAddr) {
        match self {
            Self::V4 => (A.into(), B.into()),
            Self::V6 => (A6.into(), B6.into()),
        }
    }

    /// The wildcard address to bind the ESP socket to.
    pub fn any(self) -> IpAddr {
        match self {
            Self::V4 => Ipv4Addr::UNSPECIFIED.into(),
            Self::V6 => Ipv6Addr::UNSPECIFIED.into(),
        }
    }
}

/// Whether `ip` is end `a`'s endpoint (in either family).
pub fn is_a(ip: IpAddr) -> bool {
    ip == IpAddr::V4(A) || ip == IpAddr::V6(A6)
}

pub fn ip(args: &[&str]) -> Res<()> {
    let st = Command::new("ip").args(args).status()?;
    if !st.success() {
        return Err(format!("ip {args:?} failed").into());
    }
    Ok(())
}

/// Two namespaces `a` and `b` joined by veth (A and B, A6 and B6), removed on drop.
pub struct Namespaces {
    pub a: String,
    pub b: String,
}

impl Namespaces {
    /// Namespaces `<prefix>a` and `<prefix>b`.
    pub fn new(prefix: &str) -> Res<Self> {
        let (a, b) = (format!("{prefix}a"), format!("{prefix}b"));
        for ns in [a.as_str(), b.as_str()] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        ip(&[
            "link", "add", "va", "netns", &a, "type", "veth", "peer", "name", "vb", "netns", &b,
        ])?;
        ip(&["-n", &a, "addr", "add", "192.0.2.1/24", "dev", "va"])?;
        ip(&["-n", &b, "addr", "add", "192.0.2.2/24", "dev", "vb"])?;
        // No duplicate address detection: the addresses are usable at once.
        ip(&[
            "-n",
            &a,
            "addr",
            "add",
            "2001:db8::1/64",
            "dev",
            "va",
            "nodad",
        ])?;
        ip(&[
            "-n",
            &b,
            "addr",
            "add",
            "2001:db8::2/64",
            "dev",
            "vb",
            "nodad",
        ])?;
        ip(&["-n", &a, "link", "set", "va", "up"])?;
        ip(&["-n", &b, "link", "set", "vb", "up"])?;
        Ok(Self { a, b })
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

pub fn keymat(alg: AeadAlg, seed: u8) -> Vec<u8> {
    (0..alg.key_len() + 4)
        .map(|i| seed.wrapping_add(i as u8))
        .collect()
}

/// A hand-keyed SA; the key is derived from the SPI so both ends agree.
pub fn sa(
    dir: Direction,
    src: IpAddr,
    dst: IpAddr,
    spi: u32,
    alg: AeadAlg,
    encap: bool,
) -> Res<SaSpec> {
    // Distinct for each of the SPIs used here, so no two SAs share a key.
    let seed = (spi ^ (spi >> 4)) as u8;
    let mut spec = sa_with_key(dir, src, dst, spi, alg, &keymat(alg, seed))?;
    spec.encap = encap.then_some(UdpEncap {
        src_port: NAT_T_PORT,
        dst_port: NAT_T_PORT,
    });
    Ok(spec)
}

/// An IIPtran SA (transport mode, protocol 4 between the endpoints) with the given key.
pub fn sa_with_key(
    dir: Direction,
    src: IpAddr,
    dst: IpAddr,
    spi: u32,
    alg: AeadAlg,
    keymat: &[u8],
) -> Res<SaSpec> {
    Ok(SaSpec {
        spi,
        direction: dir,
        src,
        dst,
        selector: Selector::tunnel(src, dst, IPPROTO_IPIP),
        key: KeyMaterial::from_keymat(alg, keymat)?,
        replay: Replay::default(),
        lifetimes: Lifetimes::default(),
        encap: None,
        reqid: REQID,
        mark: None,
    })
}

pub fn policy(dir: Direction, src: IpAddr, dst: IpAddr) -> PolicySpec {
    PolicySpec {
        direction: dir,
        selector: Selector::tunnel(src, dst, IPPROTO_IPIP),
        template: Template {
            src,
            dst,
            reqid: REQID,
        },
        priority: DEFAULT_PRIORITY,
        mark: None,
    }
}

/// How much the SPIs of the SAs for IPv6 inner packets exceed those for IPv4 ones.
pub const INNER6_SPI_OFFSET: u32 = 0x10;

/// The outer protocol of an inner address's packets (4 for IPv4, 41 for IPv6), and the
/// (outbound, inbound) SPIs of the SAs carrying them at the end at `local`.
pub fn carriage(local: IpAddr, inner: IpAddr) -> (u8, u32, u32) {
    let (out_spi, in_spi) = if is_a(local) {
        (SPI_AB, SPI_BA)
    } else {
        (SPI_BA, SPI_AB)
    };
    if inner.is_ipv4() {
        (IPPROTO_IPIP, out_spi, in_spi)
    } else {
        (
            IPPROTO_IPV6,
            out_spi + INNER6_SPI_OFFSET,
            in_spi + INNER6_SPI_OFFSET,
        )
    }
}

/// For the end at `local`: the virtual link with the `inners` addresses (IPv4 /30, IPv6
/// /64) and, for each, SAs both ways and policies for its outer protocol.
pub async fn configure(
    dp: &impl Dataplane,
    local: IpAddr,
    remote: IpAddr,
    inners: &[&str],
    alg: AeadAlg,
    encap: bool,
) -> Res<()> {
    let mut addresses = Vec::new();
    for inner in inners {
        let inner: IpAddr = inner.parse()?;
        let (proto, out_spi, in_spi) = carriage(local, inner);
        let for_proto = |mut sa: SaSpec| {
            sa.selector.proto = Some(proto);
            sa
        };
        let out = sa(Direction::Out, local, remote, out_spi, alg, encap)?;
        dp.install_sa(&for_proto(out)).await?;
        let inb = sa(Direction::In, remote, local, in_spi, alg, encap)?;
        dp.install_sa(&for_proto(inb)).await?;
        for (dir, src, dst) in [
            (Direction::Out, local, remote),
            (Direction::In, remote, local),
        ] {
            let mut p = policy(dir, src, dst);
            p.selector.proto = Some(proto);
            dp.install_policy(&p).await?;
        }
        addresses.push(IpPrefix::new(inner, if inner.is_ipv4() { 30 } else { 64 })?);
    }
    let link = LinkSpec {
        name: LINK.into(),
        local,
        remote,
        inner: InnerFamilies::of_protocols(addresses.iter().map(|p| carriage(local, p.addr()).0)),
        addresses,
        mtu: 1400,
    };
    dp.create_link(&link).await?;
    dp.set_link_up(LINK, true).await?;
    Ok(())
}

pub fn ns_path(ns: &str) -> PathBuf {
    PathBuf::from(format!("/run/netns/{ns}"))
}

pub fn ping(ns: &str, dst: &str) -> bool {
    Command::new("ip")
        .args([
            "netns", "exec", ns, "ping", "-q", "-c", "3", "-i", "0.3", "-W", "3", dst,
        ])
        .status()
        .is_ok_and(|s| s.success())
}

/// Tells a namespace thread to wind down.
pub type Stop = tokio::sync::oneshot::Sender<()>;
/// A namespace thread and what it reports when stopped.
pub type EndThread<T> = JoinHandle<std::io::Result<Res<T>>>;

/// Stops a namespace thread and collects its report.
pub fn finish<T>(stop: Stop, t: EndThread<T>) -> Res<T> {
    let _ = stop.send(());
    t.join().map_err(|_| "namespace thread panicked")??
}

/// Runs `setup` in namespace `ns` on its own thread, reports its outcome before
/// returning, then keeps what it built alive until stopped and hands it to `report`.
pub fn spawn_end<S, T, F1, Fut1, F2, Fut2>(
    ns: String,
    setup: F1,
    report: F2,
) -> Res<(Stop, EndThread<T>)>
where
    F1: FnOnce() -> Fut1 + Send + 'static,
    Fut1: std::future::Future<Output = Res<S>>,
    F2: FnOnce(S) -> Fut2 + Send + 'static,
    Fut2: std::future::Future<Output = Res<T>>,
    T: Send + 'static,
{
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let t = iiptran_xfrm::netns::spawn_in(&ns_path(&ns), move || async move {
        match setup().await {
            Ok(built) => {
                let _ = ready_tx.send(Ok(()));
                let _ = stop_rx.await;
                report(built).await
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e.to_string()));
                Err(e)
            }
        }
    })?;
    ready_rx.recv()?.map_err(|e| format!("{ns}: {e}"))?;
    Ok((stop_tx, t))
}

/// A configured userspace backend on UDP 4500 (of the endpoints' family) in `ns`, running
/// until stopped.
pub fn userspace_end(
    ns: String,
    local: IpAddr,
    remote: IpAddr,
    inners: &'static [&'static str],
    alg: AeadAlg,
) -> Res<(Stop, EndThread<()>)> {
    let any = if local.is_ipv4() {
        Family::V4
    } else {
        Family::V6
    }
    .any();
    let setup = move || async move {
        let sock = Arc::new(tokio::net::UdpSocket::bind((any, NAT_T_PORT)).await?);
        let (dp, ike) = UserspaceDataplane::new(sock)?;
        configure(&dp, local, remote, inners, alg, false).await?;
        Ok((dp, ike))
    };
    spawn_end(ns, setup, |_running| async { Ok(()) })
}
