//! The configuration file as written: strings with their spans, checked and converted in
//! the parent module so that every error can point at the text it is about.

use serde::Deserialize;
use toml::Spanned;
use zeroize::Zeroize;

pub type S = Spanned<String>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub node: Node,
    pub auth: Option<Auth>,
    #[serde(default)]
    pub ike: Ike,
    pub enroll: Option<Enroll>,
    #[serde(default)]
    pub neighbor: Vec<Spanned<Neighbor>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub name: S,
    pub identity: S,
    pub endpoint: S,
    pub dataplane: Option<S>,
    pub state_dir: Option<S>,
    pub control_socket: Option<S>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    pub ca: S,
    pub cert: S,
    pub key: S,
    pub crl: Option<S>,
    pub crl_refresh: Option<S>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Ike {
    pub proposals: Option<Spanned<Vec<S>>>,
    pub esp_proposals: Option<Spanned<Vec<S>>>,
    pub rekey_time: Option<S>,
    pub child_rekey_time: Option<S>,
    pub liveness: Option<S>,
    pub retransmit_timeout: Option<S>,
    pub retransmit_base: Option<Spanned<f64>>,
    pub retransmit_tries: Option<Spanned<u32>>,
    pub fragment_size: Option<Spanned<u16>>,
    pub pfs: Option<bool>,
    pub nat_t: Option<S>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enroll {
    pub server: Option<EnrollServer>,
    pub client: Option<EnrollClient>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollClient {
    pub server: S,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollServer {
    pub listen: S,
    pub ca_dir: S,
    #[serde(default)]
    pub names: Vec<S>,
    pub cert_lifetime: Option<S>,
    pub read_timeout: Option<S>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Neighbor {
    pub name: S,
    pub identity: S,
    pub endpoint: S,
    pub link: Spanned<Link>,
    pub psk: Option<S>,
    pub psk_file: Option<S>,
    #[serde(default)]
    pub passive: bool,
    pub inner: Option<Spanned<Vec<S>>>,
    pub proposals: Option<Spanned<Vec<S>>>,
    pub esp_proposals: Option<Spanned<Vec<S>>>,
}

impl Drop for Neighbor {
    fn drop(&mut self) {
        if let Some(psk) = &mut self.psk {
            psk.get_mut().zeroize();
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    pub name: S,
    pub address: Option<Spanned<Addresses>>,
    pub mtu: Option<Spanned<u16>>,
}

/// `address = "10.0.0.0/31"` or `address = ["10.0.0.0/31", "fd00::/127"]`.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum Addresses {
    One(String),
    Many(Vec<String>),
}

impl Addresses {
    pub fn list(&self) -> &[String] {
        match self {
            Addresses::One(a) => core::slice::from_ref(a),
            Addresses::Many(list) => list,
        }
    }
}
