//! The node's configuration file (TOML, `iiptrand --config FILE`), checked as a whole
//! when loaded: a [`Config`] that exists is one the daemon can run. Every error names the
//! file, the line and the field (`node.toml:14: neighbor[1].endpoint: ...`).
//!
//! Relative paths resolve against the configuration file's directory. Secret files (the
//! certificate `key` and any `psk_file`) must not be accessible to group or others: a
//! looser mode is an error, as ssh treats private keys, because a key that others could
//! read must be assumed compromised. A `key` that does not exist yet is accepted (the
//! daemon creates it when it enrolls); a `psk_file` must exist.

mod diff;
mod error;
mod link;
mod proposal;
mod raw;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use iiptran_certs::NodeId;
use iiptran_certs::duration::parse_duration;
use iiptran_ike::iana::IpProtocol;
use iiptran_ike::identity::Identity;
use iiptran_ike::secret::Secret;
use iiptran_ike::ts::IiptranSelectors;
use toml::Spanned;
use toml::de::DeTable;
use zeroize::Zeroizing;

pub use diff::{ConfigDiff, diff};
pub use error::ConfigError;
use error::{Locator, SpanError};
pub use link::{Link, LinkName, MAX_LINK_NAME, Prefix};
pub use proposal::{Encr, Proposal, ProposalError, Protocol};
use raw::S;

/// A checked node configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub node: Node,
    /// Certificate credentials; `None` when every neighbor uses a PSK.
    pub auth: Option<CertFiles>,
    /// The IKE settings neighbors inherit.
    pub ike: IkeSettings,
    pub enroll_server: Option<EnrollServer>,
    pub enroll_client: Option<EnrollClient>,
    /// Shared with the daemon's state of each neighbor, which would otherwise hold a copy.
    pub neighbors: Vec<Arc<Neighbor>>,
}

/// This node.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub name: String,
    pub identity: Identity,
    /// The local tunnel endpoint, also the address IKE uses.
    pub endpoint: IpAddr,
    pub dataplane: Dataplane,
    pub state_dir: PathBuf,
    pub control_socket: PathBuf,
}

/// Which ESP data plane carries the virtual links.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dataplane {
    Kernel,
    Userspace,
    /// The kernel when it has ESP and IPIP, the userspace one otherwise.
    Auto,
}

/// The node's certificate, key and trust anchor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// A CRL file (PEM or DER), re-read on reload and when it changes.
    pub crl: Option<PathBuf>,
    /// How often the CRLs are refreshed from the file, the hosted CA and the enrollment
    /// server.
    pub crl_refresh: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatTraversal {
    /// UDP encapsulation when NAT is detected.
    Auto,
    /// UDP encapsulation always.
    Force,
}

/// IKE and child SA parameters. A neighbor without proposals of its own shares the
/// node's lists rather than holding a copy: thousands of neighbors are configured alike.
#[derive(Clone, Debug, PartialEq)]
pub struct IkeSettings {
    pub proposals: Arc<[Proposal]>,
    pub esp_proposals: Arc<[Proposal]>,
    pub rekey_time: Duration,
    pub child_rekey_time: Duration,
    /// Idle time before a liveness check.
    pub liveness: Duration,
    pub retransmit_timeout: Duration,
    pub retransmit_base: f64,
    pub retransmit_tries: u32,
    pub fragment_size: u16,
    /// Child SA rekeys use a fresh DH exchange: the group of the ESP proposal, or the IKE
    /// SA's group when the ESP proposal names none.
    pub pfs: bool,
    pub nat_t: NatTraversal,
}

/// The EST enrollment service run inside the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnrollServer {
    pub listen: SocketAddr,
    pub ca_dir: PathBuf,
    /// Names clients reach the service by; the listen address when none are configured.
    pub names: Vec<NodeId>,
    pub cert_lifetime: Duration,
    pub read_timeout: Duration,
}

/// The enrollment service this node enrolled with: the daemon renews the `[auth]`
/// certificate there and fetches the CA's CRL from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnrollClient {
    /// `https://HOST[:PORT]`.
    pub server: String,
}

/// How this node and a neighbor authenticate each other.
#[derive(Clone, Debug, PartialEq)]
pub enum Credentials {
    Psk(Secret),
    /// The certificates of the `[auth]` section.
    Certificates,
}

/// One VN neighbor: an adjacency over one virtual link.
#[derive(Clone, Debug, PartialEq)]
pub struct Neighbor {
    pub name: String,
    pub identity: Identity,
    pub endpoint: IpAddr,
    pub link: Link,
    pub credentials: Credentials,
    /// Only respond; never initiate.
    pub passive: bool,
    /// The only traffic selectors acceptable for this neighbor's child SAs.
    pub selectors: IiptranSelectors,
    /// The node's settings with this neighbor's proposal overrides applied.
    pub ike: IkeSettings,
}

const DEFAULT_IKE_PROPOSALS: [&str; 2] = [
    "chacha20poly1305-prfsha256-x25519",
    "aes256gcm16-prfsha384-ecp256",
];
const DEFAULT_ESP_PROPOSALS: [&str; 2] = ["chacha20poly1305", "aes256gcm16"];
const DEFAULT_STATE_DIR: &str = "/var/lib/iiptran";
const DEFAULT_CONTROL_SOCKET: &str = "/run/iiptran/iiptran.sock";
/// The smallest IKE fragment size RFC 7383 §2.5.1 lets an IPv4 sender use.
const MIN_FRAGMENT_SIZE: u16 = 576;

impl Config {
    /// Reads and checks the configuration at `path`, and the secret files it names.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map(Zeroizing::new)
            .map_err(|e| ConfigError::whole_file(&file, e))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, &file, base)
    }

    /// Checks configuration `text`; `file` names it in errors and relative paths resolve
    /// against `base_dir`, where secret files are read from.
    pub fn parse(text: &str, file: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        // The recovered table still places a syntax error in its field.
        let (table, syntax_errors) = DeTable::parse_recoverable(text);
        let locator = Locator {
            file,
            text,
            table: table.get_ref(),
        };
        if let Some(e) = syntax_errors.first() {
            return Err(locator.toml_error(e));
        }
        let raw: raw::File = toml::from_str(text).map_err(|e| locator.toml_error(&e))?;
        Checker { base: base_dir }
            .config(raw)
            .map_err(|e| locator.span_error(e))
    }

    pub fn neighbor(&self, name: &str) -> Option<&Neighbor> {
        self.neighbors
            .iter()
            .map(Arc::as_ref)
            .find(|n| n.name == name)
    }
}

type Checked<T> = Result<T, SpanError>;

struct Checker<'a> {
    base: &'a Path,
}

/// Tracks values that must be unique and reports the second use at its own span.
struct Unique<T> {
    what: &'static str,
    seen: HashMap<T, String>,
}

impl<T: std::hash::Hash + Eq> Unique<T> {
    fn new(what: &'static str) -> Self {
        Self {
            what,
            seen: HashMap::new(),
        }
    }

    fn claim(&mut self, value: T, owner: &str, at: &S) -> Checked<()> {
        if let Some(first) = self.seen.get(&value) {
            return Err(SpanError::new(
                at.span(),
                format!(
                    "{} {:?} is already used by {first}",
                    self.what,
                    at.get_ref()
                ),
            ));
        }
        self.seen.insert(value, owner.to_owned());
        Ok(())
    }
}

fn invalid(at: &S, what: &str, e: impl core::fmt::Display) -> SpanError {
    SpanError::new(at.span(), format!("invalid {what} {:?}: {e}", at.get_ref()))
}

fn ip(at: &S) -> Checked<IpAddr> {
    at.get_ref()
        .parse()
        .map_err(|_| SpanError::new(at.span(), format!("invalid IP address {:?}", at.get_ref())))
}

fn endpoint(at: &S) -> Checked<IpAddr> {
    let addr = ip(at)?;
    if addr.is_unspecified() || addr.is_multicast() {
        return Err(invalid(at, "tunnel endpoint", "not a unicast address"));
    }
    Ok(addr)
}

fn identity(at: &S) -> Checked<Identity> {
    at.get_ref().parse().map_err(|e| invalid(at, "identity", e))
}

fn duration(at: &S) -> Checked<Duration> {
    match parse_duration(at.get_ref()) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(SpanError::new(at.span(), "duration must not be zero")),
        Err(e) => Err(SpanError::new(at.span(), e)),
    }
}

fn duration_or(at: &Option<S>, default: Duration) -> Checked<Duration> {
    at.as_ref().map_or(Ok(default), duration)
}

fn from_str<T: core::str::FromStr<Err = String>>(at: &S) -> Checked<T> {
    at.get_ref()
        .parse()
        .map_err(|e| SpanError::new(at.span(), e))
}

/// Names inside the VN appear in logs, tables and link names: keep them plain.
fn vn_name(at: &S) -> Checked<String> {
    let name = at.get_ref();
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"._-".contains(&b);
    if name.is_empty() || name.len() > 64 || !name.bytes().all(plain) {
        return Err(invalid(
            at,
            "name",
            "use 1 to 64 letters, digits, '.', '_' or '-'",
        ));
    }
    Ok(name.clone())
}

fn proposals(
    list: &Option<Spanned<Vec<S>>>,
    default: &Arc<[Proposal]>,
    parse: fn(&str) -> Result<Proposal, ProposalError>,
) -> Checked<Arc<[Proposal]>> {
    let Some(list) = list else {
        return Ok(default.clone());
    };
    if list.get_ref().is_empty() {
        return Err(SpanError::new(list.span(), "empty proposal list"));
    }
    list.get_ref()
        .iter()
        .map(|s| parse(s.get_ref()).map_err(|e| SpanError::new(s.span(), e)))
        .collect()
}

fn enroll_client(r: &raw::EnrollClient, have_auth: bool) -> Checked<EnrollClient> {
    let server = r.server.get_ref();
    let authority = server.strip_prefix("https://").unwrap_or_default();
    if authority.is_empty() || authority.contains(['/', '?', '#', ' ']) {
        return Err(invalid(&r.server, "server", "expected https://HOST[:PORT]"));
    }
    if !have_auth {
        return Err(SpanError::new(
            r.server.span(),
            "[enroll.client] renews the [auth] certificate: configure [auth]",
        ));
    }
    Ok(EnrollClient {
        server: server.clone(),
    })
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

/// A secret file must be accessible to its owner only (see the module documentation).
fn check_secret_mode(path: &Path, at: &S) -> Checked<bool> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(meta) if meta.permissions().mode() & 0o077 != 0 => Err(SpanError::new(
            at.span(),
            format!(
                "{} is accessible to group or others (mode {:o}); chmod 600 it",
                path.display(),
                meta.permissions().mode() & 0o777
            ),
        )),
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(SpanError::new(
            at.span(),
            format!("{}: {e}", path.display()),
        )),
    }
}

impl Checker<'_> {
    fn path(&self, at: &S) -> PathBuf {
        self.base.join(at.get_ref())
    }

    fn path_or(&self, at: &Option<S>, default: &str) -> PathBuf {
        at.as_ref()
            .map_or_else(|| PathBuf::from(default), |s| self.path(s))
    }

    fn config(&self, raw: raw::File) -> Checked<Config> {
        let node = self.node(&raw.node)?;
        let auth = raw.auth.as_ref().map(|a| self.auth(a)).transpose()?;
        let ike = self.ike(&raw.ike)?;
        let (enroll_server, enroll_client) = match raw.enroll {
            Some(e) => (
                e.server.map(|s| self.enroll_server(&s)).transpose()?,
                e.client
                    .map(|c| enroll_client(&c, auth.is_some()))
                    .transpose()?,
            ),
            None => (None, None),
        };
        let mut names = Unique::new("name");
        let mut identities = Unique::new("identity");
        let mut endpoints = Unique::new("endpoint");
        let mut links = Unique::new("link name");
        names.claim(node.name.clone(), "this node", &raw.node.name)?;
        identities.claim(node.identity.clone(), "this node", &raw.node.identity)?;
        endpoints.claim(node.endpoint, "this node", &raw.node.endpoint)?;
        let mut neighbors = Vec::with_capacity(raw.neighbor.len());
        for mut spanned in raw.neighbor {
            let span = spanned.span();
            let r = spanned.get_mut();
            let n = self.neighbor(&node, &ike, auth.is_some(), span, r)?;
            let owner = format!("neighbor {:?}", n.name);
            names.claim(n.name.clone(), &owner, &r.name)?;
            identities.claim(n.identity.clone(), &owner, &r.identity)?;
            endpoints.claim(n.endpoint, &owner, &r.endpoint)?;
            links.claim(n.link.name.clone(), &owner, &r.link.get_ref().name)?;
            neighbors.push(Arc::new(n));
        }
        Ok(Config {
            node,
            auth,
            ike,
            enroll_server,
            enroll_client,
            neighbors,
        })
    }

    fn node(&self, r: &raw::Node) -> Checked<Node> {
        let dataplane = match r.dataplane.as_ref().map(|s| (s, s.get_ref().as_str())) {
            None | Some((_, "auto")) => Dataplane::Auto,
            Some((_, "kernel")) => Dataplane::Kernel,
            Some((_, "userspace")) => Dataplane::Userspace,
            Some((s, _)) => {
                return Err(invalid(
                    s,
                    "data plane",
                    "expected kernel, userspace or auto",
                ));
            }
        };
        Ok(Node {
            name: vn_name(&r.name)?,
            identity: identity(&r.identity)?,
            endpoint: endpoint(&r.endpoint)?,
            dataplane,
            state_dir: self.path_or(&r.state_dir, DEFAULT_STATE_DIR),
            control_socket: self.path_or(&r.control_socket, DEFAULT_CONTROL_SOCKET),
        })
    }

    fn auth(&self, r: &raw::Auth) -> Checked<CertFiles> {
        let key = self.path(&r.key);
        check_secret_mode(&key, &r.key)?;
        Ok(CertFiles {
            ca: self.path(&r.ca),
            cert: self.path(&r.cert),
            key,
            crl: r.crl.as_ref().map(|c| self.path(c)),
            crl_refresh: duration_or(&r.crl_refresh, Duration::from_secs(60))?,
        })
    }

    fn ike(&self, r: &raw::Ike) -> Checked<IkeSettings> {
        let parse_defaults = |list: &[&str], parse: fn(&str) -> Result<Proposal, ProposalError>| {
            list.iter()
                .map(|p| parse(p).map_err(|e| SpanError::new(0..0, e)))
                .collect::<Checked<Arc<[_]>>>()
        };
        let ike_defaults = parse_defaults(&DEFAULT_IKE_PROPOSALS, Proposal::ike)?;
        let esp_defaults = parse_defaults(&DEFAULT_ESP_PROPOSALS, Proposal::esp)?;
        let retransmit_base = r.retransmit_base.as_ref().map_or(Ok(1.8), |b| {
            let v = *b.get_ref();
            if v.is_finite() && (1.0..=10.0).contains(&v) {
                Ok(v)
            } else {
                Err(SpanError::new(
                    b.span(),
                    "retransmit_base must be between 1.0 and 10.0",
                ))
            }
        })?;
        let retransmit_tries =
            r.retransmit_tries
                .as_ref()
                .map_or(Ok(5), |t| match *t.get_ref() {
                    v @ 1..=20 => Ok(v),
                    _ => Err(SpanError::new(t.span(), "retransmit_tries must be 1 to 20")),
                })?;
        let fragment_size = r
            .fragment_size
            .as_ref()
            .map_or(Ok(1280), |f| match *f.get_ref() {
                v if v >= MIN_FRAGMENT_SIZE => Ok(v),
                _ => Err(SpanError::new(
                    f.span(),
                    format!("fragment_size must be at least {MIN_FRAGMENT_SIZE}"),
                )),
            })?;
        let nat_t = match r.nat_t.as_ref().map(|s| (s, s.get_ref().as_str())) {
            None | Some((_, "auto")) => NatTraversal::Auto,
            Some((_, "force")) => NatTraversal::Force,
            Some((s, _)) => return Err(invalid(s, "nat_t", "expected auto or force")),
        };
        Ok(IkeSettings {
            proposals: proposals(&r.proposals, &ike_defaults, Proposal::ike)?,
            esp_proposals: proposals(&r.esp_proposals, &esp_defaults, Proposal::esp)?,
            rekey_time: duration_or(&r.rekey_time, Duration::from_secs(4 * 3600))?,
            child_rekey_time: duration_or(&r.child_rekey_time, Duration::from_secs(3600))?,
            liveness: duration_or(&r.liveness, Duration::from_secs(10))?,
            retransmit_timeout: duration_or(&r.retransmit_timeout, Duration::from_secs(4))?,
            retransmit_base,
            retransmit_tries,
            fragment_size,
            pfs: r.pfs.unwrap_or(true),
            nat_t,
        })
    }

    fn enroll_server(&self, r: &raw::EnrollServer) -> Checked<EnrollServer> {
        let listen: SocketAddr = r
            .listen
            .get_ref()
            .parse()
            .map_err(|e| invalid(&r.listen, "listen address", e))?;
        let mut names = r
            .names
            .iter()
            .map(|n| n.get_ref().parse().map_err(|e| SpanError::new(n.span(), e)))
            .collect::<Checked<Vec<NodeId>>>()?;
        if names.is_empty() {
            if listen.ip().is_unspecified() {
                return Err(SpanError::new(
                    r.listen.span(),
                    "a wildcard listen address needs the server's names",
                ));
            }
            names.push(NodeId::Ip(listen.ip()));
        }
        Ok(EnrollServer {
            listen,
            ca_dir: self.path(&r.ca_dir),
            names,
            cert_lifetime: duration_or(&r.cert_lifetime, Duration::from_secs(30 * 86_400))?,
            read_timeout: duration_or(&r.read_timeout, Duration::from_secs(10))?,
        })
    }

    fn neighbor(
        &self,
        node: &Node,
        ike: &IkeSettings,
        have_certificates: bool,
        span: core::ops::Range<usize>,
        r: &mut raw::Neighbor,
    ) -> Checked<Neighbor> {
        let endpoint = endpoint(&r.endpoint)?;
        if !same_family(endpoint, node.endpoint) {
            return Err(SpanError::new(
                r.endpoint.span(),
                format!(
                    "endpoint {endpoint} is not of the same address family as this node's {}",
                    node.endpoint
                ),
            ));
        }
        let link = self.link(r.link.get_ref())?;
        let inner = self.inner(r, &link)?;
        let selectors = IiptranSelectors::new(node.endpoint, endpoint, &inner)
            .map_err(|e| SpanError::new(r.endpoint.span(), e))?;
        let credentials = self.credentials(r, have_certificates, span)?;
        Ok(Neighbor {
            name: vn_name(&r.name)?,
            identity: identity(&r.identity)?,
            endpoint,
            link,
            credentials,
            passive: r.passive,
            selectors,
            ike: IkeSettings {
                proposals: proposals(&r.proposals, &ike.proposals, Proposal::ike)?,
                esp_proposals: proposals(&r.esp_proposals, &ike.esp_proposals, Proposal::esp)?,
                ..ike.clone()
            },
        })
    }

    fn link(&self, r: &raw::Link) -> Checked<Link> {
        let addresses = match &r.address {
            None => Vec::new(),
            Some(a) => a
                .get_ref()
                .list()
                .iter()
                .map(|p| p.parse::<Prefix>().map_err(|e| SpanError::new(a.span(), e)))
                .collect::<Checked<_>>()?,
        };
        let mtu = r
            .mtu
            .as_ref()
            .map(|m| match *m.get_ref() {
                v if v >= 68 => Ok(v),
                _ => Err(SpanError::new(m.span(), "mtu must be at least 68")),
            })
            .transpose()?;
        Ok(Link {
            name: from_str(&r.name)?,
            addresses,
            mtu,
        })
    }

    /// The encapsulations the link carries: as configured, or those its addresses need
    /// (IPIP when it has none).
    fn inner(&self, r: &raw::Neighbor, link: &Link) -> Checked<Vec<IpProtocol>> {
        let mut needed: Vec<IpProtocol> = Vec::new();
        for p in &link.addresses {
            let proto = link::protocol_of(p.addr);
            if !needed.contains(&proto) {
                needed.push(proto);
            }
        }
        let Some(list) = &r.inner else {
            if needed.is_empty() {
                needed.push(IpProtocol::IPIP);
            }
            return Ok(needed);
        };
        if list.get_ref().is_empty() {
            return Err(SpanError::new(list.span(), "inner lists no family"));
        }
        let mut protocols = list
            .get_ref()
            .iter()
            .map(|f| {
                link::inner_protocol(f.get_ref())
                    .ok_or_else(|| invalid(f, "inner family", "expected ipv4 or ipv6"))
            })
            .collect::<Checked<Vec<_>>>()?;
        // A set: the order written must not make a reload see a change.
        protocols.sort();
        protocols.dedup();
        if let Some(&missing) = needed.iter().find(|p| !protocols.contains(p)) {
            let family = if missing == IpProtocol::IPIP {
                "ipv4"
            } else {
                "ipv6"
            };
            return Err(SpanError::new(
                list.span(),
                format!("the link has an {family} address: add {family:?} to inner"),
            ));
        }
        Ok(protocols)
    }

    fn credentials(
        &self,
        r: &mut raw::Neighbor,
        have_certificates: bool,
        span: core::ops::Range<usize>,
    ) -> Checked<Credentials> {
        let psk = match (r.psk.take(), &r.psk_file) {
            (Some(_), Some(file)) => {
                return Err(SpanError::new(
                    file.span(),
                    "give psk or psk_file, not both",
                ));
            }
            (Some(psk), None) => {
                let at = psk.span();
                Some((Secret::new(psk.into_inner().into_bytes()), at))
            }
            (None, Some(file)) => {
                let path = self.path(file);
                if !check_secret_mode(&path, file)? {
                    return Err(SpanError::new(
                        file.span(),
                        format!("{} does not exist", path.display()),
                    ));
                }
                let bytes = std::fs::read(&path)
                    .map(Zeroizing::new)
                    .map_err(|e| SpanError::new(file.span(), format!("{}: {e}", path.display())))?;
                let trimmed = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
                let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
                Some((Secret::from_slice(trimmed), file.span()))
            }
            (None, None) => None,
        };
        match psk {
            Some((secret, at)) if secret.is_empty() => {
                Err(SpanError::new(at, "the pre-shared key is empty"))
            }
            Some((secret, _)) => {
                if secret.len() < 16 {
                    tracing::warn!(
                        neighbor = r.name.get_ref().as_str(),
                        "pre-shared key shorter than 16 bytes: use a long random one"
                    );
                }
                Ok(Credentials::Psk(secret))
            }
            None if have_certificates => Ok(Credentials::Certificates),
            None => Err(SpanError::new(
                span,
                "no credentials: set psk or psk_file, or configure [auth] certificates",
            )),
        }
    }
}
