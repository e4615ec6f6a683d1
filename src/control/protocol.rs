//! The control protocol: one JSON request per line, one JSON response per line.
//!
//! The schema is documented in `docs/control.md`; `VERSION` changes whenever a change
//! would break a script that parses the responses.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The schema version every response carries.
pub const VERSION: u32 = 1;

/// Seconds since the Unix epoch, UTC.
pub type UnixTime = u64;

/// A request: `{"verb": "...", ...arguments}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "kebab-case")]
pub enum Request {
    Status,
    ListNeighbors,
    ListSas,
    ListCerts,
    /// Bring the adjacency with neighbor `name` up now.
    Initiate {
        name: String,
    },
    /// Delete the SAs with neighbor `name` and take its link down.
    Terminate {
        name: String,
    },
    /// Rekey the child SA with neighbor `name`, or its IKE SA when `ike` is set.
    Rekey {
        name: String,
        #[serde(default)]
        ike: bool,
    },
    /// Re-read the configuration and the certificates.
    Reload,
    /// The recent changes of state of the adjacency with neighbor `name`, oldest first.
    History {
        name: String,
    },
}

impl Request {
    /// Every verb, as it appears in the `verb` field.
    pub const VERBS: [&'static str; 9] = [
        "status",
        "list-neighbors",
        "list-sas",
        "list-certs",
        "initiate",
        "terminate",
        "rekey",
        "reload",
        "history",
    ];

    /// Parses one request line; every failure is an error the client can be sent.
    pub fn parse(line: &[u8]) -> Result<Self, ControlError> {
        let value: serde_json::Value = serde_json::from_slice(line)
            .map_err(|e| ControlError::new(ErrorKind::BadRequest, format!("not JSON: {e}")))?;
        let verb = value
            .get("verb")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| {
                ControlError::new(
                    ErrorKind::BadRequest,
                    "expected an object with a string \"verb\"",
                )
            })?;
        if !Self::VERBS.contains(&verb.as_str()) {
            return Err(ControlError::new(
                ErrorKind::UnknownVerb,
                format!("unknown verb {verb:?}; known: {}", Self::VERBS.join(", ")),
            ));
        }
        let given: Vec<String> = value
            .as_object()
            .map(|fields| fields.keys().cloned().collect())
            .unwrap_or_default();
        let request: Self = serde_json::from_value(value)
            .map_err(|e| ControlError::new(ErrorKind::BadRequest, e.to_string()))?;
        // serde ignores unknown fields of verbs without arguments even when told to deny
        // them, so compare with the fields the request has when written back.
        let known = serde_json::to_value(&request).unwrap_or_default();
        if let Some(field) = given
            .iter()
            .find(|field| known.get(field.as_str()).is_none())
        {
            return Err(ControlError::new(
                ErrorKind::BadRequest,
                format!("unknown field {field:?} for verb {verb:?}"),
            ));
        }
        Ok(request)
    }
}

/// A response: `{"version": 1, "<kind>": {...}}` with exactly one body key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub version: u32,
    #[serde(flatten)]
    pub body: Body,
}

impl From<Body> for Response {
    fn from(body: Body) -> Self {
        Self {
            version: VERSION,
            body,
        }
    }
}

impl From<ControlError> for Response {
    fn from(error: ControlError) -> Self {
        Body::Error(error).into()
    }
}

/// What a response carries; the variant name is the JSON key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Body {
    Status(StatusReport),
    Neighbors(Vec<NeighborReport>),
    Sas(Vec<IkeSaReport>),
    Certs(Vec<CertReport>),
    History(Vec<TransitionReport>),
    /// The answer to `initiate`, `terminate`, `rekey` and `reload`.
    Done(ActionReport),
    Error(ControlError),
}

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct ControlError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ControlError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The line is not JSON or does not match the request schema.
    BadRequest,
    UnknownVerb,
    /// The request line is longer than the server accepts; the connection is closed.
    TooLong,
    /// No complete request line arrived in time; the connection is closed.
    Timeout,
    /// The peer is not root.
    Forbidden,
    /// Too many clients are connected.
    Busy,
    /// The named neighbor or SA does not exist.
    NotFound,
    /// The request is valid but cannot be carried out now.
    Failed,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BadRequest => "bad-request",
            Self::UnknownVerb => "unknown-verb",
            Self::TooLong => "too-long",
            Self::Timeout => "timeout",
            Self::Forbidden => "forbidden",
            Self::Busy => "busy",
            Self::NotFound => "not-found",
            Self::Failed => "failed",
        })
    }
}

/// The answer to an action verb.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionReport {
    /// What the daemon did or started, for the operator.
    pub message: String,
}

/// `status`: this node and counts of what runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub node: String,
    pub identity: String,
    /// The local tunnel endpoint.
    pub endpoint: IpAddr,
    pub data_plane: DataPlaneKind,
    pub uptime_secs: u64,
    pub counts: Counts,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataPlaneKind {
    /// SAs and IPIP links in the kernel (XFRM netlink).
    Kernel,
    /// ESP and IPIP in the daemon over TUN devices.
    Userspace,
}

impl fmt::Display for DataPlaneKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Kernel => "kernel",
            Self::Userspace => "userspace",
        })
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub adjacencies_up: u32,
    pub adjacencies_down: u32,
    pub ike_sas: u32,
    pub child_sas: u32,
    /// IKE SAs whose IKE_SA_INIT or IKE_AUTH exchange has not finished.
    pub half_open: u32,
}

/// `list-neighbors`: one configured neighbor and its virtual link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeighborReport {
    pub name: String,
    /// The IPIP interface to this neighbor.
    pub link: String,
    pub link_state: LinkState,
    pub local_endpoint: IpAddr,
    pub remote_endpoint: IpAddr,
    pub identity: String,
    /// The adjacency's lifecycle state as the policy engine names it, e.g. `established`.
    pub adjacency: String,
    pub last_established: Option<UnixTime>,
    pub next_rekey: Option<UnixTime>,
    pub traffic: Traffic,
    pub last_error: Option<LastError>,
}

/// `history`: one change of an adjacency's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransitionReport {
    pub at: UnixTime,
    /// The states as `list-neighbors` names them.
    pub from: String,
    pub to: String,
    pub cause: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkState {
    Up,
    Down,
}

impl fmt::Display for LinkState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Up => "up",
            Self::Down => "down",
        })
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub packets_in: u64,
    pub packets_out: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    pub at: UnixTime,
    pub message: String,
}

/// `list-sas`: one IKE SA and the child SAs it negotiated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IkeSaReport {
    /// The neighbor this SA belongs to.
    pub name: String,
    /// A number unique among this daemon's IKE SAs.
    pub id: u32,
    pub state: String,
    pub spi_initiator: IkeSpi,
    pub spi_responder: IkeSpi,
    /// Whether this node is the initiator of this IKE SA.
    pub initiator: bool,
    pub suite: IkeSuite,
    pub local_identity: String,
    pub remote_identity: String,
    pub local_addr: SocketAddr,
    pub remote_addr: SocketAddr,
    pub established_at: Option<UnixTime>,
    pub rekey_at: Option<UnixTime>,
    pub expire_at: Option<UnixTime>,
    pub child_sas: Vec<ChildSaReport>,
}

/// Transform names as IANA's IKEv2 registries spell them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IkeSuite {
    pub encr: String,
    pub prf: String,
    pub dh: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildSaReport {
    /// The kernel's request id tying the SAs to their policies.
    pub reqid: u32,
    pub state: String,
    pub mode: Mode,
    pub encr: String,
    pub esn: bool,
    pub local_ts: Vec<TrafficSelector>,
    pub remote_ts: Vec<TrafficSelector>,
    pub inbound: SaTraffic,
    pub outbound: SaTraffic,
    pub installed_at: UnixTime,
    pub rekey_at: Option<UnixTime>,
    pub expire_at: Option<UnixTime>,
}

/// IIPtran negotiates transport mode only (RFC 3884); the field keeps responses
/// self-describing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Mode {
    Transport,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Transport => "TRANSPORT",
        })
    }
}

/// An address prefix and an IP protocol number (0 for any).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficSelector {
    pub addr: IpAddr,
    pub prefix_len: u8,
    pub protocol: u8,
}

/// One direction of a child SA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaTraffic {
    pub spi: EspSpi,
    pub bytes: u64,
    pub packets: u64,
    pub last_use: Option<UnixTime>,
}

/// `list-certs`: one certificate the daemon has loaded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertReport {
    pub file: PathBuf,
    pub subject: String,
    /// The identity subjectAltNames (DNS names, e-mail addresses, IP addresses).
    pub identities: Vec<String>,
    pub issuer: String,
    /// Hexadecimal, as `iiptranctl ca list` shows it.
    pub serial: String,
    pub not_before: UnixTime,
    pub not_after: UnixTime,
    /// SHA-256 of the DER certificate, hexadecimal.
    pub fingerprint: String,
    pub key_type: String,
    /// On the node's own certificate when the daemon renews it (`[enroll.client]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal: Option<RenewalReport>,
    /// On a CA certificate: the CRL peers' certificates from it are checked against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl: Option<CrlReport>,
}

/// Automatic renewal of the node's certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewalReport {
    /// The enrollment service renewals go to.
    pub server: String,
    pub next_attempt: Option<UnixTime>,
    pub last_renewed: Option<UnixTime>,
    /// Failed attempts since the last success.
    pub failures: u32,
    pub last_error: Option<String>,
}

/// A CRL in use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrlReport {
    /// Where it came from: a file path, `hosted CA` or the enrollment server's URL.
    pub source: String,
    pub this_update: UnixTime,
    /// Revoked serials, hexadecimal.
    pub revoked: Vec<String>,
}

/// SPIs travel as fixed-width hexadecimal strings: the form operators compare with
/// packet captures and `ip xfrm state`, and 64-bit values survive JSON parsers that
/// read numbers as doubles.
macro_rules! hex_spi {
    ($(#[$doc:meta])* $name:ident, $int:ty, $width:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub struct $name(pub $int);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:0width$x}", self.0, width = $width)
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                <$int>::from_str_radix(&text, 16)
                    .map(Self)
                    .map_err(serde::de::Error::custom)
            }
        }
    };
}

hex_spi!(
    /// An IKE SPI (8 bytes), serialized as 16 hex digits.
    IkeSpi,
    u64,
    16
);
hex_spi!(
    /// An ESP SPI (4 bytes), serialized as 8 hex digits.
    EspSpi,
    u32,
    8
);
