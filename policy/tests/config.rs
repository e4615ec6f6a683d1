//! Loading, checking and diffing node configurations.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use iiptran_ike::iana::{DhId, EncrId, IpProtocol};
use iiptran_ike::identity::Identity;
use iiptran_policy::config::{
    Config, ConfigError, Credentials, Dataplane, NatTraversal, Prefix, diff,
};

/// A directory removed when the test ends, however it ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("iiptran-config-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const BASE: &str = r#"
[node]
name = "a"
identity = "a.vn.example"
endpoint = "192.0.2.1"

[auth]
ca = "ca.pem"
cert = "a.pem"
key = "a.key"

[[neighbor]]
name = "b"
identity = "b.vn.example"
endpoint = "192.0.2.2"
link = { name = "vn-b", address = "10.255.0.0/31", mtu = 1400 }

[[neighbor]]
name = "c"
identity = "c.vn.example"
endpoint = "192.0.2.3"
link = { name = "vn-c", address = "10.255.0.2/31" }
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "node.toml", Path::new("/etc/iiptran"))
}

fn error(text: &str) -> ConfigError {
    parse(text).expect_err("configuration must be refused")
}

/// The 1-based line of the first occurrence of `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text[..text.find(needle).expect(needle)]
        .matches('\n')
        .count()
        + 1
}

#[test]
fn base_config_with_defaults() {
    let c = parse(BASE).unwrap();
    assert_eq!(c.node.name, "a");
    assert_eq!(c.node.identity, Identity::Fqdn("a.vn.example".into()));
    assert_eq!(c.node.endpoint, "192.0.2.1".parse::<IpAddr>().unwrap());
    assert_eq!(c.node.dataplane, Dataplane::Auto);
    assert_eq!(c.node.state_dir, Path::new("/var/lib/iiptran"));
    let auth = c.auth.as_ref().unwrap();
    assert_eq!(
        auth.key,
        Path::new("/etc/iiptran/a.key"),
        "relative to the file"
    );
    assert_eq!(c.ike.proposals.len(), 2);
    assert_eq!(c.ike.proposals[0].encr[0].id, EncrId::CHACHA20_POLY1305);
    assert_eq!(c.ike.proposals[1].dh, [DhId::ECP_256]);
    assert_eq!(c.ike.esp_proposals.len(), 2);
    assert_eq!(c.ike.rekey_time, Duration::from_secs(4 * 3600));
    assert_eq!(c.ike.child_rekey_time, Duration::from_secs(3600));
    assert_eq!(c.ike.liveness, Duration::from_secs(10));
    assert_eq!(c.ike.nat_t, NatTraversal::Auto);
    assert!(c.ike.pfs);
    assert_eq!(c.neighbors.len(), 2);
    let b = c.neighbor("b").unwrap();
    assert_eq!(b.link.name.as_str(), "vn-b");
    assert_eq!(
        b.link.addresses,
        ["10.255.0.0/31".parse::<Prefix>().unwrap()]
    );
    assert_eq!(b.link.mtu, Some(1400));
    assert_eq!(b.credentials, Credentials::Certificates);
    assert!(!b.passive);
    assert_eq!(b.selectors.protocols(), [IpProtocol::IPIP]);
    assert_eq!(b.selectors.local(), c.node.endpoint);
    assert_eq!(b.selectors.remote(), b.endpoint);
    assert_eq!(b.ike, c.ike, "no overrides: the node's settings");
    assert!(c.enroll_server.is_none());
}

#[test]
fn invalid_endpoint_names_file_line_and_field() {
    let text = BASE.replace("\"192.0.2.3\"", "\"192.0.2.x\"");
    let e = error(&text);
    assert_eq!(
        e.to_string(),
        format!(
            "node.toml:{}: neighbor[1].endpoint: invalid IP address \"192.0.2.x\"",
            line_of(&text, "192.0.2.x")
        )
    );
}

#[test]
fn unknown_fields_are_errors_with_a_suggestion() {
    let text = BASE.replace("endpoint = \"192.0.2.3\"", "endpiont = \"192.0.2.3\"");
    let e = error(&text);
    assert_eq!(e.line(), Some(line_of(&text, "endpiont")));
    assert_eq!(e.field(), Some("neighbor[1].endpiont"));
    assert!(e.message().contains("unknown field `endpiont`"), "{e}");
    assert!(e.message().ends_with("(did you mean `endpoint`?)"), "{e}");

    let text = format!("{BASE}\n[ike]\nrekey = \"1h\"\n");
    let e = error(&text);
    assert_eq!(e.field(), Some("ike.rekey"), "{e}");
    assert!(e.message().contains("unknown field `rekey`"), "{e}");

    let text = BASE.replace("mtu = 1400", "mtu = 1400, colour = \"red\"");
    assert_eq!(error(&text).field(), Some("neighbor[0].link.colour"));
}

#[test]
fn syntax_and_type_errors_have_lines() {
    let text = BASE.replace("name = \"b\"", "name = b");
    let e = error(&text);
    assert_eq!(e.line(), Some(line_of(&text, "name = b")), "{e}");
    assert_eq!(e.field(), Some("neighbor[0].name"), "{e}");

    let text = BASE.replace("mtu = 1400", "mtu = 70000");
    let e = error(&text);
    assert_eq!(e.field(), Some("neighbor[0].link.mtu"), "{e}");
    assert_eq!(e.line(), Some(line_of(&text, "70000")));

    let text = BASE.replace("name = \"a\"\n", "");
    let e = error(&text);
    assert!(e.message().contains("missing field `name`"), "{e}");
    assert_eq!(e.field(), Some("node"), "{e}");
}

#[test]
fn values_are_checked() {
    let cases: [(&str, &str, &str, &str); 14] = [
        (
            "dataplane",
            "endpoint = \"192.0.2.1\"",
            "endpoint = \"192.0.2.1\"\ndataplane = \"ebpf\"",
            "node.dataplane",
        ),
        (
            "identity",
            "identity = \"b.vn.example\"",
            "identity = \"CN=b, XX=y\"",
            "neighbor[0].identity",
        ),
        (
            "link name",
            "\"vn-b\"",
            "\"vn-b-is-far-too-long\"",
            "neighbor[0].link.name",
        ),
        (
            "prefix",
            "\"10.255.0.0/31\"",
            "\"10.255.0.0/33\"",
            "neighbor[0].link.address",
        ),
        (
            "family",
            "\"192.0.2.3\"",
            "\"2001:db8::3\"",
            "neighbor[1].endpoint",
        ),
        (
            "unicast",
            "\"192.0.2.3\"",
            "\"224.0.0.5\"",
            "neighbor[1].endpoint",
        ),
        (
            "own endpoint",
            "\"192.0.2.3\"",
            "\"192.0.2.1\"",
            "neighbor[1].endpoint",
        ),
        (
            "duplicate name",
            "name = \"c\"",
            "name = \"b\"",
            "neighbor[1].name",
        ),
        (
            "duplicate identity",
            "\"c.vn.example\"",
            "\"b.vn.example\"",
            "neighbor[1].identity",
        ),
        (
            "duplicate endpoint",
            "\"192.0.2.3\"",
            "\"192.0.2.2\"",
            "neighbor[1].endpoint",
        ),
        (
            "duplicate link",
            "\"vn-c\"",
            "\"vn-b\"",
            "neighbor[1].link.name",
        ),
        (
            "inner",
            "link = { name = \"vn-c\"",
            "inner = [\"ipv5\"]\nlink = { name = \"vn-c\"",
            "neighbor[1].inner[0]",
        ),
        (
            "inner misses the address family",
            "link = { name = \"vn-c\", address = \"10.255.0.2/31\" }",
            "link = { name = \"vn-c\", address = [\"10.255.0.2/31\", \"fd00::2/127\"] }\ninner = [\"ipv4\"]",
            "neighbor[1].inner",
        ),
        (
            "proposal",
            "[[neighbor]]\nname = \"b\"",
            "[ike]\nproposals = [\"aes256gcm16-prfsha256-x25519\", \"aes256gcm16-3des\"]\n\n[[neighbor]]\nname = \"b\"",
            "ike.proposals[1]",
        ),
    ];
    for (what, from, to, field) in cases {
        assert!(BASE.contains(from), "{what}: {from}");
        let text = BASE.replacen(from, to, 1);
        let e = error(&text);
        assert_eq!(e.field(), Some(field), "{what}: {e}");
        assert!(e.line().is_some(), "{what}: {e}");
    }
}

#[test]
fn duplicate_reports_the_first_owner() {
    let text = BASE.replace("\"192.0.2.3\"", "\"192.0.2.2\"");
    let e = error(&text);
    assert_eq!(
        e.message(),
        "endpoint \"192.0.2.2\" is already used by neighbor \"b\""
    );
}

#[test]
fn ipv6_dual_stack_and_overrides() {
    let text = BASE.replace(
        "link = { name = \"vn-c\", address = \"10.255.0.2/31\" }",
        "link = { name = \"vn-c\", address = [\"10.255.0.2/31\", \"fd00::2/127\"] }\n\
         proposals = [\"aes128-sha256-ecp256\"]\nesp_proposals = [\"aes256gcm16-x25519-esn\"]\n\
         passive = true",
    );
    let c = parse(&text).unwrap();
    let n = c.neighbor("c").unwrap();
    assert_eq!(
        n.selectors.protocols(),
        [IpProtocol::IPIP, IpProtocol::IPV6]
    );
    assert_eq!(n.link.addresses.len(), 2);
    assert!(n.passive);
    assert_eq!(n.ike.proposals.len(), 1);
    assert_eq!(n.ike.esp_proposals[0].dh, [DhId::CURVE25519]);
    assert_eq!(n.ike.rekey_time, c.ike.rekey_time, "the rest is inherited");

    let v6 = text
        .replace("192.0.2.1", "2001:db8::1")
        .replace("192.0.2.2", "2001:db8::2")
        .replace("192.0.2.3", "2001:db8::3");
    let c = parse(&v6).unwrap();
    assert!(c.neighbors.iter().all(|n| n.endpoint.is_ipv6()));

    let reversed = text.replace(
        "passive = true",
        "passive = true\ninner = [\"ipv6\", \"ipv4\", \"ipv6\"]",
    );
    let r = parse(&reversed).unwrap();
    assert!(
        diff(&parse(&text).unwrap(), &r).is_empty(),
        "inner is a set"
    );
}

#[test]
fn psk_xor_certificates() {
    let no_auth = BASE.replace(
        "[auth]\nca = \"ca.pem\"\ncert = \"a.pem\"\nkey = \"a.key\"\n",
        "",
    );
    let e = error(&no_auth);
    assert_eq!(e.field(), Some("neighbor[0]"), "{e}");
    assert!(e.message().starts_with("no credentials"), "{e}");

    let psk = no_auth
        .replace(
            "link = { name = \"vn-b\"",
            "psk = \"correct horse battery staple\"\nlink = { name = \"vn-b\"",
        )
        .replace(
            "link = { name = \"vn-c\"",
            "psk = \"another long shared secret\"\nlink = { name = \"vn-c\"",
        );
    let c = parse(&psk).unwrap();
    let Credentials::Psk(secret) = &c.neighbor("b").unwrap().credentials else {
        panic!("PSK expected");
    };
    assert_eq!(secret.expose(), b"correct horse battery staple");
    let debug = format!("{c:?}");
    assert!(!debug.contains("horse"), "the PSK leaked into Debug");
    assert!(!debug.contains("another long"), "the PSK leaked into Debug");

    let both = psk.replace(
        "psk = \"correct horse battery staple\"",
        "psk = \"correct horse battery staple\"\npsk_file = \"b.psk\"",
    );
    assert!(
        error(&both)
            .message()
            .contains("give psk or psk_file, not both")
    );
    let empty = psk.replace("correct horse battery staple", "");
    assert_eq!(error(&empty).field(), Some("neighbor[0].psk"));
}

#[test]
fn secret_files_must_be_private() {
    let dir = TempDir::new();
    let text = BASE.replace(
        "link = { name = \"vn-b\"",
        "psk_file = \"b.psk\"\nlink = { name = \"vn-b\"",
    );
    let config = dir.write("node.toml", &text, 0o644);
    let load = || Config::load(&config);

    // The PSK file is missing.
    let e = load().unwrap_err();
    assert_eq!(e.field(), Some("neighbor[0].psk_file"), "{e}");
    assert!(e.to_string().starts_with(&config.display().to_string()));

    dir.write("b.psk", "a pre-shared key of some length\n", 0o644);
    let e = load().unwrap_err();
    assert!(e.message().contains("group or others"), "{e}");
    dir.write("b.psk", "a pre-shared key of some length\n", 0o600);
    let c = load().unwrap();
    let Credentials::Psk(secret) = &c.neighbor("b").unwrap().credentials else {
        panic!("PSK expected");
    };
    assert_eq!(
        secret.expose(),
        b"a pre-shared key of some length",
        "newline trimmed"
    );

    // A key that does not exist yet is fine; a readable one is not.
    dir.write("a.key", "KEY", 0o640);
    let e = load().unwrap_err();
    assert_eq!(e.field(), Some("auth.key"), "{e}");
    std::fs::set_permissions(dir.0.join("a.key"), std::fs::Permissions::from_mode(0o400)).unwrap();
    assert!(load().is_ok());
}

#[test]
fn enroll_server_section() {
    let text = format!("{BASE}\n[enroll.server]\nlisten = \"192.0.2.1:8443\"\nca_dir = \"ca\"\n");
    let c = parse(&text).unwrap();
    let s = c.enroll_server.unwrap();
    assert_eq!(s.listen.port(), 8443);
    assert_eq!(s.ca_dir, Path::new("/etc/iiptran/ca"));
    assert_eq!(s.names.len(), 1, "the listen address");
    assert_eq!(s.cert_lifetime, Duration::from_secs(30 * 86_400));

    let wildcard = text.replace("192.0.2.1:8443", "0.0.0.0:8443");
    assert_eq!(error(&wildcard).field(), Some("enroll.server.listen"));
}

#[test]
fn enroll_client_section_and_crl_refresh() {
    let c = parse(BASE).unwrap();
    assert!(c.enroll_client.is_none());
    assert_eq!(c.auth.unwrap().crl_refresh, Duration::from_secs(60));

    let text = BASE.replace(
        "key = \"a.key\"\n",
        "key = \"a.key\"\ncrl_refresh = \"5s\"\n",
    );
    let text = format!("{text}\n[enroll.client]\nserver = \"https://192.0.2.9:8443\"\n");
    let c = parse(&text).unwrap();
    assert_eq!(c.enroll_client.unwrap().server, "https://192.0.2.9:8443");
    assert_eq!(c.auth.unwrap().crl_refresh, Duration::from_secs(5));

    let plain_http = text.replace("https://", "http://");
    assert_eq!(error(&plain_http).field(), Some("enroll.client.server"));
    let with_path = text.replace("8443\"", "8443/est\"");
    assert_eq!(error(&with_path).field(), Some("enroll.client.server"));
}

#[test]
fn durations_and_ike_numbers() {
    let text = format!(
        "{BASE}\n[ike]\nrekey_time = \"30d\"\nchild_rekey_time = \"15m\"\nliveness = \"90s\"\n\
         retransmit_tries = 3\nfragment_size = 1400\npfs = false\nnat_t = \"force\"\n"
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.ike.rekey_time, Duration::from_secs(30 * 86_400));
    assert_eq!(c.ike.child_rekey_time, Duration::from_secs(900));
    assert_eq!(c.ike.liveness, Duration::from_secs(90));
    assert_eq!(c.ike.retransmit_tries, 3);
    assert_eq!(c.ike.fragment_size, 1400);
    assert!(!c.ike.pfs);
    assert_eq!(c.ike.nat_t, NatTraversal::Force);
    assert_eq!(c.neighbors[0].ike, c.ike);

    for (bad, field) in [
        ("liveness = \"10x\"", "ike.liveness"),
        ("rekey_time = \"0s\"", "ike.rekey_time"),
        ("fragment_size = 100", "ike.fragment_size"),
        ("retransmit_base = 0.5", "ike.retransmit_base"),
        ("nat_t = \"never\"", "ike.nat_t"),
        ("esp_proposals = []", "ike.esp_proposals"),
    ] {
        let e = error(&format!("{BASE}\n[ike]\n{bad}\n"));
        assert_eq!(e.field(), Some(field), "{bad}: {e}");
    }
}

#[test]
fn diff_names_what_changed() {
    let old = parse(BASE).unwrap();
    assert!(diff(&old, &old).is_empty());

    let text = BASE.replace("mtu = 1400", "mtu = 1380").replace(
        "[[neighbor]]\nname = \"c\"\nidentity = \"c.vn.example\"\nendpoint = \"192.0.2.3\"",
        "[[neighbor]]\nname = \"d\"\nidentity = \"d.vn.example\"\nendpoint = \"192.0.2.4\"",
    );
    let new = parse(&text).unwrap();
    let d = diff(&old, &new);
    assert_eq!(d.added, ["d"]);
    assert_eq!(d.removed, ["c"]);
    assert_eq!(d.changed, ["b"]);
    assert!(d.sections.is_empty());
    let back = diff(&new, &old);
    assert_eq!(
        (back.added, back.removed),
        (vec!["c".to_string()], vec!["d".to_string()])
    );

    // A node-wide IKE change reaches every neighbor that inherits it.
    let ike = parse(&format!("{BASE}\n[ike]\nliveness = \"30s\"\n")).unwrap();
    let d = diff(&old, &ike);
    assert_eq!(d.sections, ["ike"]);
    assert_eq!(d.changed, ["b", "c"]);
    assert!(d.added.is_empty() && d.removed.is_empty());

    // Reordering neighbors changes nothing; moving a name to other settings does.
    let (head, c_block) = BASE.rsplit_once("[[neighbor]]").unwrap();
    let (nodes, b_block) = head.split_once("[[neighbor]]").unwrap();
    let reordered = parse(&format!(
        "{nodes}[[neighbor]]{c_block}\n[[neighbor]]{b_block}"
    ))
    .unwrap();
    assert_eq!(reordered.neighbors[0].name, "c");
    assert!(diff(&old, &reordered).is_empty());
    let swapped = BASE
        .replace("name = \"b\"", "name = \"x\"")
        .replace("name = \"c\"", "name = \"b\"")
        .replace("name = \"x\"", "name = \"c\"");
    assert_eq!(diff(&old, &parse(&swapped).unwrap()).changed, ["c", "b"]);

    let node = parse(&BASE.replace(
        "endpoint = \"192.0.2.1\"",
        "endpoint = \"192.0.2.1\"\ndataplane = \"kernel\"",
    ))
    .unwrap();
    assert_eq!(diff(&old, &node).sections, ["node"]);
}

#[test]
fn documented_example_loads() {
    let dir = TempDir::new();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/node.toml");
    let text = std::fs::read_to_string(example).unwrap();
    let path = dir.write("node.toml", &text, 0o644);
    dir.write("c.psk", "the shared secret of a and c\n", 0o600);
    let c = Config::load(&path).unwrap();
    assert_eq!(c.neighbors.len(), 2);
    let n = c.neighbor("c").unwrap();
    assert!(n.passive);
    assert!(matches!(n.credentials, Credentials::Psk(_)));
    assert_eq!(
        n.selectors.protocols(),
        [IpProtocol::IPIP, IpProtocol::IPV6]
    );
    assert!(c.enroll_server.is_some());
    assert!(c.enroll_client.is_some());
}
