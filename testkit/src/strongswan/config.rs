//! strongswan.conf and swanctl.conf for one charon instance.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use crate::pki::NodeCert;
use crate::process::DEFAULT_GRACE;

/// The plugins an instance loads unless its options say otherwise (`load_modular = no`,
/// so nothing under /etc matters). `curve25519` gives X25519 and Ed25519, `chapoly`
/// ChaCha20-Poly1305, `openssl` ECDSA.
pub const PLUGINS: &str = "random nonce drbg aes sha1 sha2 hmac kdf pem pkcs1 pkcs8 x509 pubkey \
                       constraints curve25519 chapoly openssl gcm kernel-netlink socket-default vici";

/// How charon itself runs.
#[derive(Clone, Debug)]
pub struct CharonOptions {
    /// Log level of the `ike` subsystem in the file log (-1..4; 4 logs keys).
    pub ike_log_level: i8,
    /// Use the load-tester plugin's fake kernel interface: child SAs are "installed"
    /// without touching XFRM, so transport mode works on a kernel without ESP.
    pub fake_kernel: bool,
    /// Further lines of the `charon` section, e.g. `retransmit_timeout = 1`.
    pub settings: String,
    /// The plugins to load (the load-tester is added with `fake_kernel`).
    pub plugins: String,
    /// Whether the file log is flushed after every line, so a test reads it up to date.
    pub flush_log: bool,
    /// How long charon may take to exit after SIGTERM before it gets SIGKILL.
    pub grace: Duration,
}

impl Default for CharonOptions {
    fn default() -> Self {
        Self {
            ike_log_level: 2,
            fake_kernel: true,
            settings: String::new(),
            plugins: PLUGINS.into(),
            flush_log: true,
            grace: DEFAULT_GRACE,
        }
    }
}

pub(super) fn strongswan_conf(dir: &Path, options: &CharonOptions) -> String {
    let dir = dir.display();
    let (first, load_tester) = if options.fake_kernel {
        (
            "load-tester ",
            "        load-tester {\n            enable = yes\n            fake_kernel = yes\n            initiators = 0\n        }\n",
        )
    } else {
        ("", "")
    };
    let flush = if options.flush_log {
        "            flush_line = yes\n"
    } else {
        ""
    };
    format!(
        "charon {{
    load_modular = no
    load = {first}{plugins}
    install_routes = no
    install_virtual_ip = no
{settings}
    plugins {{
        vici {{
            socket = unix://{dir}/run/charon.vici
        }}
{load_tester}    }}
    filelog {{
        main {{
            path = {dir}/charon.log
            time_format = %T
            default = 1
            ike = {ike}
{flush}        }}
    }}
}}
swanctl {{
    load = pem pkcs1 pkcs8 x509 pubkey curve25519 openssl sha1 sha2 random nonce
}}
",
        ike = options.ike_log_level,
        settings = options.settings,
        plugins = options.plugins,
    )
}

/// How a connection authenticates.
#[derive(Clone, Debug)]
pub enum Auth {
    /// A pre-shared key between the two identities.
    Psk(Vec<u8>),
    /// A certificate and its key, trusted through the CA in `NodeCert::ca`.
    Pubkey(NodeCert),
}

/// One IIPtran connection: an IKEv2 SA between two tunnel endpoints with a transport-mode
/// child whose selectors are the endpoints themselves, protocol 4 (IP-in-IP).
#[derive(Clone, Debug)]
pub struct Connection {
    pub name: String,
    pub child: String,
    pub local_addr: IpAddr,
    pub remote_addr: IpAddr,
    pub local_id: String,
    pub remote_id: String,
    pub auth: Auth,
    pub proposals: String,
    pub esp_proposals: String,
    /// `mode` of the child: `transport` for IIPtran.
    pub mode: String,
    /// Selectors of the child (`dynamic[ipencap]`: the endpoint address, protocol 4).
    pub local_ts: String,
    pub remote_ts: String,
    /// IKE SA / child SA `rekey_time` (swanctl syntax, e.g. `4h`, `30s`); `None` keeps
    /// charon's default.
    pub ike_rekey_time: Option<String>,
    pub child_rekey_time: Option<String>,
    pub dpd_delay: Option<String>,
}

impl Connection {
    /// An IIPtran connection named `iiptran` with child `ipip`, ChaCha20-Poly1305 for IKE
    /// (with X25519) and ESP.
    pub fn iiptran(
        local_addr: IpAddr,
        local_id: &str,
        remote_addr: IpAddr,
        remote_id: &str,
        auth: Auth,
    ) -> Self {
        Self {
            name: "iiptran".into(),
            child: "ipip".into(),
            local_addr,
            remote_addr,
            local_id: local_id.into(),
            remote_id: remote_id.into(),
            auth,
            proposals: "chacha20poly1305-prfsha256-x25519".into(),
            esp_proposals: "chacha20poly1305".into(),
            mode: "transport".into(),
            local_ts: "dynamic[ipencap]".into(),
            remote_ts: "dynamic[ipencap]".into(),
            ike_rekey_time: None,
            child_rekey_time: None,
            dpd_delay: None,
        }
    }

    pub fn proposals(mut self, ike: &str, esp: &str) -> Self {
        self.proposals = ike.into();
        self.esp_proposals = esp.into();
        self
    }

    pub fn rekey(mut self, ike: Option<&str>, child: Option<&str>) -> Self {
        self.ike_rekey_time = ike.map(Into::into);
        self.child_rekey_time = child.map(Into::into);
        self
    }

    pub fn dpd(mut self, delay: &str) -> Self {
        self.dpd_delay = Some(delay.into());
        self
    }

    /// The `connections` entry; `cert_file` is the certificate's name under `x509/`.
    pub(super) fn render(&self, out: &mut String, cert_file: Option<&str>) {
        let auth = match self.auth {
            Auth::Psk(_) => "psk",
            Auth::Pubkey(_) => "pubkey",
        };
        let _ = writeln!(out, "    {} {{", self.name);
        let _ = writeln!(out, "        version = 2");
        let _ = writeln!(out, "        local_addrs = {}", self.local_addr);
        let _ = writeln!(out, "        remote_addrs = {}", self.remote_addr);
        let _ = writeln!(out, "        proposals = {}", self.proposals);
        optional(out, "        ", "rekey_time", &self.ike_rekey_time);
        optional(out, "        ", "dpd_delay", &self.dpd_delay);
        let _ = writeln!(out, "        local {{");
        let _ = writeln!(out, "            auth = {auth}");
        let _ = writeln!(out, "            id = {}", self.local_id);
        if let Some(cert) = cert_file {
            let _ = writeln!(out, "            certs = {cert}");
        }
        let _ = writeln!(out, "        }}");
        let _ = writeln!(out, "        remote {{");
        let _ = writeln!(out, "            auth = {auth}");
        let _ = writeln!(out, "            id = {}", self.remote_id);
        let _ = writeln!(out, "        }}");
        let _ = writeln!(out, "        children {{");
        let _ = writeln!(out, "            {} {{", self.child);
        let _ = writeln!(out, "                mode = {}", self.mode);
        let _ = writeln!(out, "                local_ts = {}", self.local_ts);
        let _ = writeln!(out, "                remote_ts = {}", self.remote_ts);
        let _ = writeln!(
            out,
            "                esp_proposals = {}",
            self.esp_proposals
        );
        optional(
            out,
            "                ",
            "rekey_time",
            &self.child_rekey_time,
        );
        let _ = writeln!(out, "            }}");
        let _ = writeln!(out, "        }}");
        let _ = writeln!(out, "    }}");
    }

    /// The `secrets` entry for a PSK connection.
    pub(super) fn render_secret(&self, out: &mut String) {
        if let Auth::Psk(key) = &self.auth {
            let _ = writeln!(out, "    ike-{} {{", self.name);
            let _ = writeln!(out, "        id-local = {}", self.local_id);
            let _ = writeln!(out, "        id-remote = {}", self.remote_id);
            let _ = writeln!(out, "        secret = 0x{}", hex::encode(key));
            let _ = writeln!(out, "    }}");
        }
    }
}

fn optional(out: &mut String, indent: &str, key: &str, value: &Option<String>) {
    if let Some(value) = value {
        let _ = writeln!(out, "{indent}{key} = {value}");
    }
}
